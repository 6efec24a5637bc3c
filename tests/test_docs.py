"""The documentation runs: every snippet alone, and the site with its tutorial.

Each fenced ``python`` block in README.md and docs/*.md runs alone: in a fresh namespace,
a fresh working directory and the environment the interpreter started with, so a snippet
that leans on names from an earlier block, or on an API that changed, fails here. (One
interpreter runs them all, one after the other: an interpreter start costs seconds.)
The site (mkdocs.yml) builds in strict mode, so a broken reference or docstring fails,
and the build executes the tutorial notebook. The built pages are then checked: maths as
MathML (also as a headless Chromium renders the tutorial), signatures formatted, the
Tasks table, every page linked, nothing loaded from the network.
"""

from __future__ import annotations

import fcntl
import html
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks() -> list:
    params = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            name = f"{path.relative_to(ROOT)}:{line}"
            params.append(pytest.param(match.group(1), id=name))
    return params


def test_docs_have_python_blocks():
    assert len(_blocks()) >= 6, [p.id for p in _blocks()]


# Runs each snippet of the JSON file argv[1] alone, writing each outcome to argv[2] as it
# ends: a fresh namespace, its own empty working directory, os.environ and sys.argv as
# they were, and JAX's configuration put back, so nothing one snippet sets reaches the next.
_RUNNER = """
import builtins, json, os, sys, traceback

import jax

snippets = json.load(open(sys.argv[1]))
results = sys.argv[2]
environ = dict(os.environ)
for i, (name, code) in enumerate(snippets):
    cwd = os.path.join(os.path.dirname(results), str(i))
    os.mkdir(cwd)
    os.chdir(cwd)
    sys.argv = ["-c"]
    jax_config = dict(jax.config.values)
    try:
        exec(compile(code, name, "exec"), {"__name__": "__main__", "__builtins__": builtins})
        error = None
    except SystemExit as exit:
        error = None if exit.code in (None, 0) else traceback.format_exc()
    except BaseException:
        error = traceback.format_exc()
    os.environ.clear()
    os.environ.update(environ)
    for key, value in jax_config.items():
        if jax.config.values.get(key) != value:
            jax.config.update(key, value)
    with open(results, "a") as file:
        file.write(json.dumps([name, error]) + "\\n")
"""


def test_every_snippet_runs_alone(tmp_path):
    snippets = [(p.id, p.values[0]) for p in _blocks()]
    (tmp_path / "snippets.json").write_text(json.dumps(snippets))
    results = tmp_path / "results.jsonl"
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER, str(tmp_path / "snippets.json"), str(results)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"the snippet runner failed:\n{proc.stderr[-5000:]}"
    outcomes = [json.loads(line) for line in results.read_text().splitlines()]
    assert [name for name, _ in outcomes] == [name for name, _ in snippets]
    failed = {name: error for name, error in outcomes if error is not None}
    code = dict(snippets)
    assert not failed, "\n".join(
        f"snippet {name} failed:\n{code[name]}\n--- traceback ---\n{error}"
        for name, error in failed.items()
    )


def _build_site(site: pathlib.Path) -> dict:
    env = dict(
        os.environ,
        NO_MKDOCS_2_WARNING="1",  # Material's banner about MkDocs 2
        DOCS_NOTEBOOK_CACHE="false",  # run the tutorial on this code, not a cached run
    )
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return {
        "returncode": result.returncode,
        "stderr": result.stderr[-5000:],
        "seconds": time.monotonic() - start,
    }


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> pathlib.Path:
    """The site, built once for the whole run: pytest-xdist's workers share one build
    (the first to take the lock builds, the others read its result)."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the run's folder, above every worker's own
    site = shared / "docs-site"
    result_file = shared / "docs-site.json"
    with open(shared / "docs-site.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not result_file.exists():
            result_file.write_text(json.dumps(_build_site(site)))
        result = json.loads(result_file.read_text())
    assert result["returncode"] == 0, result["stderr"]
    return site


def _page(site: pathlib.Path, name: str) -> str:
    return (site / name / "index.html").read_text(encoding="utf-8")


def test_site_builds_strict_and_runs_the_tutorial(site):
    tutorial = _page(site, "tutorial")
    # The notebook ran: its checks printed True and its four figures are in the page.
    assert "by hand == lstm_step: True True" in tutorial
    assert "same outputs as torch.nn.GRU: True" in tutorial
    assert "torch.nn.LSTM == stack_unroll: True" in tutorial
    assert tutorial.count('src="data:image/png;base64,') == 4
    for page in ("api/cells", "api/unrolling", "api/interop", "api/training"):
        assert (site / page / "index.html").exists(), page


# The tutorial's displayed equations: the plain RNN, the LSTM (aligned) and the GRU.
DISPLAYED = 3


def _markdown_cells(page: str) -> str:
    cells = re.findall(r'<div class="[^"]*jp-RenderedMarkdown[^"]*"[^>]*>(.*?)</div>', page, re.S)
    assert len(cells) >= 8, len(cells)
    return "\n".join(cells)


def test_tutorial_maths_are_mathml_in_the_built_page(site):
    tutorial = _page(site, "tutorial")
    # nbconvert's MathJax loader (its address empty here) and configuration are gone.
    assert '<script src="">' not in tutorial
    assert "mathjax" not in tutorial.lower()
    text = _markdown_cells(tutorial)
    assert text.count('<math xmlns="http://www.w3.org/1998/Math/MathML" display="block">') == (
        DISPLAYED
    )
    assert text.count('display="inline">') >= 15
    assert "$" not in re.sub(r"<code>.*?</code>", "", text), "LaTeX left as text"
    assert "\\sigma" not in text and "\\begin" not in text
    assert "<mtable" in text  # the aligned equations are tables, one row per equation


def test_markdown_page_maths_are_mathml(site):
    faq = _page(site, "faq")
    assert 'class="arithmatex"' not in faq
    assert faq.count('<math xmlns="http://www.w3.org/1998/Math/MathML"') >= 3
    assert '<math xmlns="http://www.w3.org/1998/Math/MathML" display="block">' in faq
    assert "\\odot" not in faq and "\\(" not in faq


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="no chromium (.ci/run installs Debian's)")
def test_tutorial_maths_render_in_a_headless_browser(site, tmp_path):
    """Chromium loads the built tutorial from disk, runs its scripts, and the DOM it
    renders holds the equations as MathML and no LaTeX."""
    result = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",  # let the page's scripts run
            "--dump-dom",
            (site / "tutorial" / "index.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    dom = result.stdout
    assert "by hand == lstm_step: True True" in dom, dom[:2000]  # the page itself
    text = _markdown_cells(dom)
    assert "\\sigma" not in text and "$$" not in text and "\\begin{aligned}" not in text
    assert text.count("<math") >= DISPLAYED + 15
    assert text.count('display="block"') == DISPLAYED
    assert "<mtable" in text


def test_signatures_are_formatted_over_lines(site):
    """mkdocstrings formats each signature with ruff (separate_signature, line_length):
    without a formatter every signature is one line."""
    cells = _page(site, "api/cells")
    signatures = re.findall(r'<div class="doc-signature highlight">(.*?)</div>', cells, re.S)
    assert len(signatures) > 20
    text = [html.unescape(re.sub(r"<[^>]+>", "", s)) for s in signatures]
    lstm_init = next(s for s in text if s.startswith("lstm_init("))
    assert lstm_init.startswith("lstm_init(\n    key: Array,\n"), lstm_init
    assert max(len(line) for s in text for line in s.splitlines()) <= 88


def test_tasks_page_shows_its_table(site):
    tasks = _page(site, "api/tasks")
    assert "by name::" not in tasks and "=====" not in tasks
    table = re.search(r"<table>(.*?)</table>", tasks, re.S)
    assert table, "no table on the Tasks page"
    rows = re.findall(r"<tr>", table.group(1))
    assert len(rows) == 6, rows  # the header and the five tasks
    assert "<code>variable_copy</code>" in table.group(1)


def test_pages_link_from_home_and_load_nothing_from_the_network(site):
    home = _page(site, "")
    for page in ("install/", "tutorial/", "training/", "distributed/", "faq/", "changelog/"):
        assert f'href="{page}"' in home, page
        assert (site / page / "index.html").exists(), page
    changelog = _page(site, "changelog")
    assert "0.2.0 (unreleased)" in changelog and "RunInterrupted" in changelog
    for path in site.glob("**/*.html"):
        text = path.read_text(encoding="utf-8")
        loads = re.findall(r'<(?:script|img|iframe)\b[^>]*\bsrc="(https?:[^"]*)"', text)
        loads += re.findall(r'<link\b[^>]*\bhref="(https?:[^"]*)"', text)
        assert not loads, (path.relative_to(site), loads)
