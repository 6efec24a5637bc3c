"""Every fenced ``python`` block in README.md and docs/*.md runs on its own.

Each block runs in a fresh interpreter with nothing imported, so a snippet that leans on
names from an earlier block, or on an API that changed, fails here.
"""

from __future__ import annotations

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
