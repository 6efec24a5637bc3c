"""Training-step time of the newer cells against the seed's fused LSTM and GRU, and of the LSTMP
against PyTorch's ``nn.LSTM(proj_size=P)``.

    python -m experiments.bench_cells            # T = 256, 1024, 4096; a few minutes on 2 cores
    python -m experiments.bench_cells --quick    # tiny sizes: checks that every row runs

For each T (B = 8, H = 128, D = 8, float32, on JAX's default backend, normally the CPU):
the time of one training step, ``jax.jit(jax.value_and_grad(loss))`` of
loss = sum(outputs) with respect to the parameters and the inputs, as the median of
``--reps`` calls after a compile call and one warm-up call. Rows:

- ``mingru``, ``minlstm``: ``rc.unroll`` of the cell, i.e. its parallel path (one
  ``jax.lax.associative_scan`` over time in log space);
- ``mingru_scan``, ``minlstm_scan``: the same cells with ``fused=False`` (``lax.scan`` of
  the sequential step), to show what the parallel path changes;
- ``lstm``, ``gru``: the seed's fused layers (``rc.unroll`` of ``lstm_step`` /
  ``gru_step``);
- ``lstmp``: ``rc.unroll`` of ``lstmp_step`` (projection P = H / 2, ``lax.scan`` of the
  step), and ``torch_lstmp``: PyTorch's ``nn.LSTM(D, H, proj_size=P)`` forward + backward
  of the same loss, with ``torch.set_num_threads(os.cpu_count())`` (skipped when torch is
  not installed);
- ``gru_reset_after``: the seed's fused reset-after GRU; ``keras_lstm``, ``keras_gru``:
  Keras 3's ``LSTM`` and ``GRU`` (reset after, its default) on the JAX backend, the same
  loss through ``stateless_call`` under ``jax.jit`` (skipped without Keras).

The column "vs lstm" is each row's time over the fused LSTM's at the same T. Each
implementation is compiled and timed in turn in one process; no other process should
use the CPU meanwhile.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import jax
import jax.numpy as jnp

import rnncells as rc

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


def _jax_step(step, params, xs, fused=True):
    """A timed call: one jitted value-and-grad of sum(unroll outputs) w.r.t. params and xs."""

    def loss(params, xs):
        _, ys = rc.unroll(step, params, xs, fused=fused)
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


def run(ts, batch, inputs, hidden, reps):
    """Rows (T, name, seconds) for every T in ``ts``."""
    key = jax.random.key(0)
    proj = max(hidden // 2, 1)
    rows = []
    for steps in ts:
        xs = jax.random.normal(jax.random.key(steps), (batch, steps, inputs), jnp.float32)
        calls = {}
        for name, init, step in [
            ("mingru", rc.mingru_init, rc.mingru_step),
            ("minlstm", rc.minlstm_init, rc.minlstm_step),
        ]:
            params = init(key, inputs, hidden)
            calls[name] = _jax_step(step, params, xs)
            calls[f"{name}_scan"] = _jax_step(step, params, xs, fused=False)
        calls["lstm"] = _jax_step(rc.lstm_step, rc.lstm_init(key, inputs, hidden), xs)
        calls["gru"] = _jax_step(rc.gru_step, rc.gru_init(key, inputs, hidden), xs)
        lstmp = rc.lstmp_init(key, inputs, hidden, proj_size=proj)
        calls["lstmp"] = _jax_step(rc.lstmp_step, lstmp, xs)
        reset_after = rc.gru_init(key, inputs, hidden, reset_after=True)
        calls["gru_reset_after"] = _jax_step(rc.gru_step, reset_after, xs)
        for name, call in (
            ("torch_lstmp", _torch_step(batch, steps, inputs, hidden, proj)),
            ("keras_lstm", _keras_step("LSTM", batch, steps, inputs, hidden)),
            ("keras_gru", _keras_step("GRU", batch, steps, inputs, hidden)),  # reset after
        ):
            if call is not None:
                calls[name] = call
        for name, call in calls.items():
            rows.append((steps, name, _time(call, reps)))
    return rows


def table(rows) -> str:
    """A markdown table of the rows, each time also as a multiple of the fused LSTM's."""
    lstm = {steps: seconds for steps, name, seconds in rows if name == "lstm"}
    lines = ["| T | implementation | train step (ms) | vs lstm |", "| ---: | --- | ---: | ---: |"]
    for steps, name, seconds in rows:
        lines.append(f"| {steps} | {name} | {seconds * 1e3:.2f} | {seconds / lstm[steps]:.2f}x |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 2 repetitions")
    parser.add_argument("--reps", type=int, default=7, help="timed calls per row (median)")
    args = parser.parse_args(argv)
    if args.quick:
        ts, batch, inputs, hidden, reps = QUICK["ts"], QUICK["B"], QUICK["D"], QUICK["H"], 2
    else:
        ts, batch, inputs, hidden, reps = TS, B, D, H, args.reps
    print(
        f"backend {jax.default_backend()}, {os.cpu_count()} CPUs; B={batch}, D={inputs}, "
        f"H={hidden}, P={max(hidden // 2, 1)}, float32, median of {reps}"
    )
    print(table(run(ts, batch, inputs, hidden, reps)))


if __name__ == "__main__":
    main()
