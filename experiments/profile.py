"""Where one layer's step spends its time: XLA's kernels, from a profiler trace.

    python -m experiments.profile --size medium --cell lstm
    python -m experiments.profile --size large --cell gru --impl rnncells_generic --mode fwd

Builds an implementation as ``experiments.bench`` does (same sizes, same training step),
runs it a few times, traces ``--calls`` calls with ``jax.profiler`` and prints the
kernels of the compiled step by total time per call, with how many times each ran per
call. Kernel names are those of the compiled HLO: ``--hlo FILE`` writes it, so a name
such as ``ynn_fusion.2`` can be looked up (a ``ynn_fusion`` is a matmul, a
``*dynamic-update-slice*`` writes one step into a (T, ...) array, a ``wrapped_broadcast``
fills a new array). The process sets ``XLA_FLAGS=--xla_cpu_enable_xprof_traceme=true``
before JAX starts, which makes XLA:CPU record each kernel. Kernels of one call can run
concurrently, and a matmul that XLA runs on its thread pool may be missing from the trace,
so the kernels need not add up to the time per call, which is printed first.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import tempfile
import time

_FLAG = "--xla_cpu_enable_xprof_traceme=true"


def kernel_times(fn, calls: int) -> tuple[float, list[tuple[str, float, int]]]:
    """Seconds per call (traced) and (name, seconds per call, runs per call) of every
    event that is not a Python frame, over ``calls`` calls."""
    import jax

    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            wall = (time.perf_counter() - t0) / calls
        (path,) = glob.glob(os.path.join(tmp, "**", "*.trace.json.gz"), recursive=True)
        with gzip.open(path) as f:
            events = json.load(f)["traceEvents"]
    total, count = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") == "X" and not e["name"].startswith("$"):  # "$file:line" = Python
            total[e["name"]] += e["dur"]
            count[e["name"]] += 1
    return wall, [(n, t / calls / 1e6, count[n] // calls) for n, t in total.most_common()]


def main(argv=None) -> None:
    from experiments import bench

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="medium", choices=list(bench.SIZES))
    parser.add_argument("--cell", default="lstm", choices=list(bench.GATES))
    parser.add_argument("--impl", default="rnncells", choices=list(bench.BUILDERS))
    parser.add_argument("--mode", default="train", choices=["train", "fwd"])
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--hlo", default=None, help="write the compiled step's HLO here")
    args = parser.parse_args(argv)
    if args.calls < 1:
        parser.error(f"--calls must be at least 1, got {args.calls}")
    if _FLAG not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

    size = bench.SIZES[args.size]
    made = bench.BUILDERS[args.impl](args.cell, *size)
    if made is None:
        raise SystemExit(f"{args.impl} does not run {args.cell} on this backend")
    fwd, train, _ = made
    fn = train if args.mode == "train" else fwd
    for _ in range(3):
        fn()
    if args.hlo:
        if not hasattr(fn, "compiled"):
            raise SystemExit(f"--hlo: {args.impl} is not a compiled JAX step")
        with open(args.hlo, "w") as f:
            f.write(fn.compiled.as_text())
    wall, rows = kernel_times(fn, args.calls)
    print(f"{args.impl} {args.cell} {args.size} {args.mode} (B, T, D, H) = {size}")
    print(f"{wall * 1e3:.2f} ms per call while traced")
    print(f"{'ms/call':>10} {'runs':>6}  kernel")
    for name, sec, runs in rows[: args.top]:
        print(f"{sec * 1e3:10.2f} {runs:6d}  {name}")


if __name__ == "__main__":
    main()
