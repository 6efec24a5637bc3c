"""Fingerprints of the compiled HLO of every registered cell's training step under ``unroll``.

A refactoring that must not change what runs is proven by running this before and after
it and comparing the two files: each entry is the SHA-256 of the optimised HLO module
(XLA's ``as_text()``, less the ``metadata={...}`` and the tables that name source files,
functions and lines) of
``jax.jit(jax.grad(loss))`` through ``rnncells.unroll``, for

- each cell with a fused layer: unroll 1 and 8 x lengths or none x remat or none x
  compute dtype fp32 or bf16 x kernel "xla", and kernel "pallas" (interpreted on a CPU,
  without remat) for the cells that have Pallas kernels;
- every other registered cell: its default unroll (the scan of its step, or its
  ``parallel_unroll``) with lengths or none, and with ``fused=False`` (the plain scan).

Only the public API is used, so the script runs on any version of the package.

    python -m experiments.hlo_fingerprint OUT.json [--dump DIR]
    python -m experiments.hlo_fingerprint --compare BEFORE.json AFTER.json
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import re
import sys
import warnings

import jax
import jax.numpy as jnp

import rnncells as rc

B, T, D, H = 3, 5, 2, 4
_METADATA = re.compile(r",? metadata=\{[^{}]*\}")
# The module's tables of source files, functions, lines and stack frames that metadata
# points into: each a header line, its rows, and a blank line.
_SOURCE_TABLES = re.compile(
    r"^(FileNames|FunctionNames|FileLocations|StackFrames)\n(?:.+\n)*\n", re.MULTILINE
)


def _hlo(name: str, **options) -> str:
    """The optimised HLO text of the gradient of one unroll of cell ``name``."""
    spec = rc.cell_spec_by_name(name)
    params = spec.init(jax.random.key(0), D, H)
    xs = jax.random.normal(jax.random.key(1), (B, T, D), jnp.float32)
    lengths = options.pop("lengths")
    lens = jnp.array([5, 2, 0], jnp.int32) if lengths else None

    def loss(p, x):
        carry, ys = rc.unroll(spec.step, p, x, lengths=lens, **options)
        return jnp.sum(ys**2) + sum(jnp.sum(leaf) for leaf in jax.tree.leaves(carry))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, xs).compile()
    return strip_sources(compiled.as_text())


def strip_sources(text: str) -> str:
    """HLO text less what names source files, functions and lines."""
    return _METADATA.sub("", _SOURCE_TABLES.sub("", text))


def _cases():
    """(key, cell name, unroll options) of every case."""
    for name in rc.cell_names():
        spec = rc.cell_spec_by_name(name)
        fused = getattr(spec, "fused", None)
        if fused is not None and fused is not False:
            grid = itertools.product((1, 8), (False, True), (False, True), (None, "bfloat16"))
            for unroll, lengths, remat, cd in grid:
                options = dict(unroll=unroll, lengths=lengths, remat=remat, kernel="xla")
                options["compute_dtype"] = None if cd is None else jnp.dtype(cd)
                key = f"{name}/u{unroll}/len{int(lengths)}/remat{int(remat)}/{cd}/xla"
                yield key, name, options
            for unroll, lengths, cd in itertools.product((1, 8), (False, True), (None, "bfloat16")):
                options = dict(unroll=unroll, lengths=lengths, kernel="pallas")
                options["compute_dtype"] = None if cd is None else jnp.dtype(cd)
                yield f"{name}/u{unroll}/len{int(lengths)}/{cd}/pallas", name, options
        else:
            for lengths, plain in itertools.product((False, True), (False, True)):
                options = dict(lengths=lengths, fused=not plain)
                yield f"{name}/len{int(lengths)}/plain{int(plain)}", name, options


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", help="write the fingerprints (JSON) here")
    parser.add_argument("--dump", help="also write each case's HLO text into this folder")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args(argv)
    if args.compare:
        before, after = (json.load(open(path)) for path in args.compare)
        same = [k for k in before if after.get(k) == before[k]]
        differ = [k for k in before if k in after and after[k] != before[k]]
        only = sorted(set(before) ^ set(after))
        print(f"{len(same)} identical, {len(differ)} different, {len(only)} in one file only")
        for key in differ + only:
            print(("differs: " if key in differ else "one file only: ") + key)
        return 0 if not differ and not only else 1
    if not args.out:
        parser.error("give OUT.json, or --compare BEFORE AFTER")
    prints = {}
    for key, name, options in _cases():
        try:
            text = _hlo(name, **options)
        except ValueError:
            if options.get("kernel") != "pallas":
                raise
            continue  # the cell has no Pallas kernels
        prints[key] = hashlib.sha256(text.encode()).hexdigest()
        if args.dump:
            os.makedirs(args.dump, exist_ok=True)
            with open(os.path.join(args.dump, key.replace("/", "_") + ".hlo"), "w") as f:
                f.write(text)
        print(key, prints[key][:12], flush=True)
    with open(args.out, "w") as f:
        json.dump(prints, f, indent=1, sort_keys=True)
    print(f"{len(prints)} cases written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
