"""Training-step time of every registered cell, fused layer against its own scan, with
the seed's fused LSTM, PyTorch's projected LSTM and Keras beside them.

    python -m experiments.bench_cells            # T = 256, 1024, 4096; about 10 min on 2 cores
    python -m experiments.bench_cells --quick    # tiny sizes: checks that every row runs
    python -m experiments.bench_cells --cells=lstm,lstmp --ts=1024   # a subset

For each T (B = 8, H = 128, D = 8, float32, on JAX's default backend, normally the CPU):
the time of one training step, ``jax.jit(jax.value_and_grad(loss))`` of
loss = sum(outputs) with respect to the parameters and the inputs, as the median of
``--reps`` calls after a compile call and one warm-up call. Rows:

- ``NAME`` and ``NAME_scan`` for every registered cell with a fused layer (its
  hand-written fused unit, or the generic fused layer of its body) and for
  ``user_peephole``, a peephole LSTM registered from outside the package
  (``experiments/user_peephole.py``) with its body: ``rc.unroll`` as it runs the cell, and
  with ``fused=False`` (``lax.scan`` of the step and JAX's autodiff). The column
  "scan / fused" is the fused layer's speed-up over its own scan;
- ``NAME_parallel`` and ``NAME_sequential`` for minGRU and minLSTM: ``kernel="parallel"``
  (one ``jax.lax.associative_scan`` over time in log space) and ``kernel="sequential"``
  (the scan of the step); ``kernel=None`` takes the faster from these figures
  (``rnncells._engine.choice.PARALLEL_FIGURES``);
- ``torch_lstmp``: PyTorch's ``nn.LSTM(D, H, proj_size=H/2)`` forward + backward of the
  same loss, with ``torch.set_num_threads(os.cpu_count())`` (skipped without torch);
- ``keras_lstm``, ``keras_gru``: Keras 3's ``LSTM`` and ``GRU`` (reset after, its
  default) on the JAX backend, through ``stateless_call`` under ``jax.jit`` (skipped
  without Keras).

The column "vs lstm" is each row's time over the fused LSTM's at the same T. Each
implementation is compiled and timed in turn in one process; no other process should
use the CPU meanwhile. ``--json PATH`` also writes the rows. ``--saves`` times instead, for
each cell with a body (``CellSpec.cell``), the generic fused layer of that body with its
two ways of keeping the forward for the backward (``NAME_carries``, ``NAME_residuals``:
``CellSpec.cell_saves``), and the cell's hand-written unit where it has one (``NAME``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings

import jax
import jax.numpy as jnp

import rnncells as rc
from experiments import user_peephole

TS = (256, 1024, 4096)
B, D, H = 8, 8, 128
QUICK = dict(ts=(8, 16), B=2, D=3, H=8)  # --quick


def _time(call, reps: int) -> float:
    """Median seconds of ``call()`` over ``reps`` calls, after a compile and a warm-up call."""
    call()
    call()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _jax_step(step, params, xs, fused=True, kernel=None):
    """A timed call: one jitted value-and-grad of sum(unroll outputs) w.r.t. params and xs."""

    def loss(params, xs):
        _, ys = rc.unroll(step, params, xs, fused=fused, kernel=kernel)
        return jnp.sum(ys)

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))

    def call():
        jax.block_until_ready(grad(params, xs))

    return call


def _torch_step(batch, steps, inputs, hidden, proj):
    """A timed call: forward and backward of PyTorch's projected LSTM, or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    warnings.filterwarnings("ignore", message="LSTM with projections is not supported")
    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    module = torch.nn.LSTM(inputs, hidden, proj_size=proj)
    xs = torch.randn(steps, batch, inputs, requires_grad=True)

    def call():
        module.zero_grad(set_to_none=True)
        xs.grad = None
        module(xs)[0].sum().backward()

    return call


def _keras_step(layer_name, batch, steps, inputs, hidden):
    """A timed call: value-and-grad of sum(outputs) of a Keras 3 layer on its JAX backend
    (``stateless_call`` under ``jax.jit``), or None without Keras or on another backend."""
    os.environ.setdefault("KERAS_BACKEND", "jax")  # only read when Keras is first imported
    try:
        import keras
    except ImportError:
        return None
    if keras.backend.backend() != "jax":
        return None
    layer = getattr(keras.layers, layer_name)(hidden, return_sequences=True)
    layer.build((batch, steps, inputs))
    trainable = [v.value for v in layer.trainable_variables]
    fixed = [v.value for v in layer.non_trainable_variables]
    xs = jax.random.normal(jax.random.key(steps), (batch, steps, inputs), jnp.float32)

    def loss(trainable, xs):
        ys, _ = layer.stateless_call(trainable, fixed, xs)
        return jnp.sum(ys)

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))

    def call():
        jax.block_until_ready(grad(trainable, xs))

    return call


def _cells(only):
    """The registered cells to time (user_peephole registered first), in registry order."""
    user_peephole.register()
    names = [n for n in rc.cell_names() if only is None or n in only]
    if only is not None and set(only) - set(names):
        raise SystemExit(
            f"error: --cells names no registered cell: {sorted(set(only) - set(names))}"
        )
    return names


def _init(name, key, inputs, hidden):
    spec = rc.cell_spec_by_name(name)
    if "proj_size" in spec.options:
        return spec, spec.init(key, inputs, hidden, proj_size=max(hidden // 2, 1))
    return spec, spec.init(key, inputs, hidden)


def _saves_variant(spec, params, saves):
    """The cell registered again as "NAME_SAVES" with ``cell_saves=saves`` and no fused
    unit (so that its body runs as the generic layer; a params subclass of its own, as the
    registry keys cells by params type), and its params."""
    name = f"{spec.name}_{saves}"
    if name not in rc.cell_names():
        variant = type(f"{spec.params.__name__}_{saves}", (spec.params,), {})
        rc.register_cell(
            spec._replace(name=name, params=variant, cell_saves=saves, fused=None, blocks=None)
        )
    variant_spec = rc.cell_spec_by_name(name)
    return variant_spec, variant_spec.params(*params)


def _generic_step(spec, params, xs, saves):
    """A timed call: the generic fused layer of the cell's body keeping ``saves``
    ("carries" or "residuals"), the choice ``CellSpec.cell_saves`` makes per cell."""
    variant, variant_params = _saves_variant(spec, params, saves)
    return _jax_step(variant.step, variant_params, xs)


def run(ts, batch, inputs, hidden, reps, only=None, saves=False):
    """Rows (T, name, seconds) for every T in ``ts``; with ``saves``, only the cells with a
    body, as the generic fused layer keeping each of "carries" and "residuals", and their
    hand-written unit where they have one."""
    key = jax.random.key(0)
    proj = max(hidden // 2, 1)
    rows = []
    for steps in ts:
        xs = jax.random.normal(jax.random.key(steps), (batch, steps, inputs), jnp.float32)
        calls = {}
        for name in _cells(only):
            spec, params = _init(name, key, inputs, hidden)
            if saves:
                if spec.cell is not None:
                    for kept in ("carries", "residuals"):
                        calls[f"{name}_{kept}"] = _generic_step(spec, params, xs, kept)
                    if spec.fused is not None:  # its hand-written unit, beside
                        calls[name] = _jax_step(spec.step, params, xs)
                continue
            if rc.kernel_support(params)["xla"] is None:  # a fused layer
                calls[name] = _jax_step(spec.step, params, xs)
                calls[f"{name}_scan"] = _jax_step(spec.step, params, xs, fused=False)
            elif spec.parallel_unroll is not None:
                for kernel in ("parallel", "sequential"):
                    calls[f"{name}_{kernel}"] = _jax_step(spec.step, params, xs, kernel=kernel)
        if only is None and not saves:
            for name, call in (
                ("torch_lstmp", _torch_step(batch, steps, inputs, hidden, proj)),
                ("keras_lstm", _keras_step("LSTM", batch, steps, inputs, hidden)),
                ("keras_gru", _keras_step("GRU", batch, steps, inputs, hidden)),  # reset after
            ):
                if call is not None:
                    calls[name] = call
        for name, call in calls.items():
            rows.append((steps, name, _time(call, reps)))
            print(f"  T={steps} {name}: {rows[-1][2] * 1e3:.2f} ms", flush=True)
    return rows


def table(rows) -> str:
    """A markdown table of the rows, each time also as a multiple of the fused LSTM's, and
    each fused layer's speed-up over its own scan."""
    times = {(steps, name): seconds for steps, name, seconds in rows}
    lines = [
        "| T | implementation | train step (ms) | vs lstm | scan / fused |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    for steps, name, seconds in rows:
        lstm = times.get((steps, "lstm"))
        vs = f"{seconds / lstm:.2f}x" if lstm else ""
        scan = times.get((steps, f"{name}_scan"))
        speedup = f"{scan / seconds:.2f}x" if scan else ""
        lines.append(f"| {steps} | {name} | {seconds * 1e3:.2f} | {vs} | {speedup} |")
    return "\n".join(lines)


def figures(path: str) -> str:
    """The ``rnncells._engine.choice.PARALLEL_FIGURES`` rows (``ParallelFigure(...)``,
    milliseconds) of a ``--json`` file's minGRU/minLSTM rows, one per cell and T that has
    both its parallel and its sequential time."""
    with open(path, encoding="utf-8") as file:
        data = json.load(file)
    times = {(r["steps"], r["name"]): r["seconds"] for r in data["rows"]}
    lines = []
    for (steps, name), seconds in times.items():
        if not name.endswith("_parallel"):
            continue
        cell = name.removesuffix("_parallel")
        sequential = times.get((steps, f"{cell}_sequential"))
        if sequential is None:
            continue
        lines.append(
            f'    ParallelFigure("{data["backend"]}", "{data["device"]}", "{cell}", '
            f"{data['batch']}, {steps}, {data['hidden']}, {seconds * 1e3:.2f}, "
            f"{sequential * 1e3:.2f}),"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 2 repetitions")
    parser.add_argument("--reps", type=int, default=7, help="timed calls per row (median)")
    parser.add_argument("--cells", help="comma-separated cell names (default: every cell)")
    parser.add_argument("--ts", help="comma-separated sequence lengths (default: 256,1024,4096)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument(
        "--saves",
        action="store_true",
        help="time the generic fused layer's two ways of keeping its forward (CellSpec.cell_saves)",
    )
    parser.add_argument(
        "--figures",
        metavar="JSON",
        help="print the PARALLEL_FIGURES rows of a --json file's minGRU/minLSTM rows and stop",
    )
    args = parser.parse_args(argv)
    if args.figures:
        print(figures(args.figures))
        return
    if args.quick:
        ts, batch, inputs, hidden, reps = QUICK["ts"], QUICK["B"], QUICK["D"], QUICK["H"], 2
    else:
        ts, batch, inputs, hidden, reps = TS, B, D, H, args.reps
    if args.ts:
        ts = tuple(int(t) for t in args.ts.split(","))
    only = None if not args.cells else args.cells.split(",")
    print(
        f"backend {jax.default_backend()}, {os.cpu_count()} CPUs; B={batch}, D={inputs}, "
        f"H={hidden}, P={max(hidden // 2, 1)}, float32, median of {reps}"
    )
    rows = run(ts, batch, inputs, hidden, reps, only, args.saves)
    print(table(rows))
    if args.json:
        setting = dict(backend=jax.default_backend(), device=jax.devices()[0].device_kind)
        setting.update(batch=batch, inputs=inputs, hidden=hidden, reps=reps)
        records = [dict(steps=t, name=n, seconds=sec) for t, n, sec in rows]
        with open(args.json, "w") as f:
            json.dump(dict(setting, rows=records), f, indent=1)
        print("wrote", args.json)


if __name__ == "__main__":
    main()
