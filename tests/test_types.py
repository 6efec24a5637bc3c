"""rnncells/ type-checks clean under mypy, with the configuration in pyproject.toml.

The package ships ``py.typed``, so its annotations are part of its API: a user's type
checker reads them. mypy's cache lives in pytest's cache directory (``.pytest_cache``,
git-ignored): a cold run (a fresh checkout, as in CI) is 17-25 s on one core, most of it
reading JAX's, Flax's and PyTorch's annotations; a warm one about 3 s.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_mypy_is_clean(request, tmp_path):
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    cache_dir = cache.mkdir("mypy") if cache is not None else tmp_path / "mypy"
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(cache_dir)],  # files: pyproject
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"mypy found errors:\n{result.stdout}{result.stderr}"
