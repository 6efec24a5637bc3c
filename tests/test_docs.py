"""The documentation runs: every snippet alone, and the site with its tutorial.

Each fenced ``python`` block in README.md and docs/*.md runs in a fresh interpreter with
nothing imported, so a snippet that leans on names from an earlier block, or on an API
that changed, fails here. The site (mkdocs.yml) builds in strict mode, so a broken
reference or docstring fails, and the build executes the tutorial notebook.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

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


@pytest.mark.parametrize("code", _blocks())
def test_snippet_runs_alone(code, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,  # a snippet that writes files writes them here
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"snippet failed:\n{code}\n--- stderr ---\n{result.stderr}"


def test_site_builds_strict_and_runs_the_tutorial(tmp_path):
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")  # Material's banner about MkDocs 2
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    tutorial = (site / "tutorial" / "index.html").read_text(encoding="utf-8")
    # The notebook ran: its checks printed True and its four figures are in the page.
    assert "by hand == lstm_step: True True" in tutorial
    assert "same outputs as torch.nn.GRU: True" in tutorial
    assert "torch.nn.LSTM == stack_unroll: True" in tutorial
    assert tutorial.count('src="data:image/png;base64,') == 4
    for page in ("api/cells", "api/unrolling", "api/interop", "api/training"):
        assert (site / page / "index.html").exists(), page
