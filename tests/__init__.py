"""The tests, laid out as the package: ``cells/``, ``engine/`` (the fused layer and the
Pallas kernels), ``interop/``, ``tasks/``, ``training/`` and ``experiments/``; the
public modules' own tests (unroll, layers, modules, errors, ...) at the top."""

import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent  # the repository
