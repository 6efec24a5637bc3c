"""Speed of LSTM and GRU layers on this machine: rnncells against PyTorch, Flax and Equinox.

    python -m experiments.bench                                  # all sizes, ~10 min on 2 cores
    python -m experiments.bench --sizes small --cells lstm --reps 5
    python -m experiments.bench --memory                          # XLA temp memory at T=10,000

Each size runs in its own process (the harness re-invokes itself), so one size's
allocations and compiled code do not affect the next. In that process, for each cell,
every implementation is compiled first (compile time reported apart), then timed
round-robin: each repetition times every implementation's forward and training step
once, in turn, and the table reports medians. The training step is forward + backward
of sum(outputs) w.r.t. the parameters and the inputs. A 1024x1024 fp32 matmul in JAX is
timed in the same process; every figure is also given as a fraction of that GEMM rate
for the training step's FLOP count: forward 2*B*T*(D+H)*G*H, backward 2x forward.
"faulted MB" is the memory a training step touched for the first time (minor page faults,
median), which the OS maps and zeroes at about 0.5 ms per MB on this machine.

Inputs: rnncells and Flax take batch-first (B, T, D) (their default); Equinox runs under
``lax.scan`` over time-major (T, B, D); PyTorch takes its default (T, B, D) with
``torch.set_num_threads(os.cpu_count())``. All fp32. The peers are imported only here.

Implementations (``--impls``): rnncells (``rc.unroll`` of the built-in step: the fused
layer), rnncells_generic (``rc.unroll`` of a wrapped step: plain ``lax.scan`` + autodiff),
torch, flax (``nn.RNN`` of ``OptimizedLSTMCell`` / ``GRUCell``), eqx (``LSTMCell`` /
``GRUCell`` under ``lax.scan``), cudnn (GPU only, LSTM only: ``jax.experimental.rnn.lstm``,
JAX's binding of cuDNN's fused LSTM); the fused layer with its options changed: rc_u2,
rc_u8 (unroll 2 and 8), rc_remat, rc_bf16 (``compute_dtype=bfloat16``). The layer's other
variants measured in bench.md (rc_nohoist, rc_logistic, rc_noblock, rc_concat) were not
kept, and their code is gone. Kernels (``rc.unroll(..., kernel=...)``, default unroll):
rc_xla (the fused layer's scans), rc_pallas (its Pallas kernels; interpreted on a CPU,
so slow there), rc_xla_bf16 and rc_pallas_bf16 (the same with
``compute_dtype=bfloat16``). ``--kernel`` sets the kernel of ``rnncells`` (default None:
the library's choice). An implementation that cannot run a size (the Pallas kernels
above H = 128 on a GPU, cuDNN on a CPU) is skipped with its reason under "skipped"; one
that fails to build is recorded under "errors" and the others still run.

``--quick`` shrinks every size to (B, T, D, H) <= (3, 4, 3, 16) with 2 repetitions: a
dry run of a command line (e.g. ``experiments/gpu_pallas.sh``) on a CPU in seconds.
``--targets JSON`` prints issue 14's targets, met or missed, from a GPU run's JSON, and
``--figures JSON`` the rows of the kernel table (``rnncells._engine.choice``) it measured.

On a GPU (``jax.default_backend() == "gpu"``) the same harness runs with: PyTorch on
CUDA (cuDNN's fused nn.LSTM / nn.GRU, synchronised after each call); every fp32 matmul
at full fp32 precision in all frameworks (JAX ``jax_default_matmul_precision=highest``,
PyTorch and cuDNN with TF32 off), so the comparison is fp32 against fp32; the GEMM rate
from an 8192x8192 fp32 matmul; and the extra size ``xl`` (256, 256, 1024, 1024), where
a GPU has enough work per step.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time

try:
    import resource
except ImportError:  # not on Windows
    resource = None

PAGE_BYTES = 0 if resource is None else resource.getpagesize()

SIZES = {  # (B, T, D, H)
    "small": (16, 128, 32, 64),
    "medium": (64, 256, 128, 256),
    "large": (128, 128, 512, 512),
    "long": (8, 2048, 8, 128),
    "xl": (256, 256, 1024, 1024),  # a GPU-sized layer
}
DEFAULT_REPS = {"small": 30, "medium": 8, "large": 5, "long": 8, "xl": 5}
GPU_REPS = {"small": 10, "medium": 5, "large": 5, "long": 5, "xl": 5}
GATES = {"lstm": 4, "gru": 3}
DEFAULT_IMPLS = ("rnncells", "torch", "flax", "eqx")
MEMORY_SIZE = (8, 10_000, 8, 128)  # (B, T, D, H) for --memory
QUICK_LIMIT = (3, 4, 3, 16)  # --quick: every size at most this (B, T, D, H)
RNNCELLS_KERNEL = None  # the ``rnncells`` impl's kernel (--kernel)


def flops(cell: str, B: int, T: int, D: int, H: int) -> tuple[float, float]:
    """(forward, training step) FLOP counts: 2*B*T*(D+H)*G*H forward, backward 2x forward."""
    fwd = 2.0 * B * T * (D + H) * GATES[cell] * H
    return fwd, 3.0 * fwd


# ----------------------------------------------------------------------------- builders


def on_gpu() -> bool:
    import jax

    return jax.default_backend() == "gpu"


def _setup_backend() -> None:
    """On a GPU: full fp32 matmuls in JAX (PyTorch is set likewise in ``build_torch``)."""
    if on_gpu():
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")


# Each builder returns (fwd, train, compile_s): fwd() and train() run one step and block.


def _jax_pair(loss_and_out, params, xs):
    import jax

    fwd = jax.jit(lambda p, x: loss_and_out(p, x)[1])
    train = jax.jit(jax.grad(lambda p, x: loss_and_out(p, x)[0], argnums=(0, 1)))
    t0 = time.perf_counter()
    compiled_train = train.lower(params, xs).compile()
    compile_s = time.perf_counter() - t0
    compiled_fwd = fwd.lower(params, xs).compile()
    jax.block_until_ready(compiled_fwd(params, xs))
    jax.block_until_ready(compiled_train(params, xs))

    def run_fwd():
        return jax.block_until_ready(compiled_fwd(params, xs))

    def run_train():
        return jax.block_until_ready(compiled_train(params, xs))

    run_fwd.compiled, run_train.compiled = compiled_fwd, compiled_train  # for their HLO
    return run_fwd, run_train, compile_s


def _rc_params(cell, key, D, H):
    import rnncells as rc

    return rc.lstm_init(key, D, H) if cell == "lstm" else rc.gru_init(key, D, H, reset_after=True)


def build_rnncells(cell, B, T, D, H, variant=None):
    import jax
    import jax.numpy as jnp

    import rnncells as rc

    params = _rc_params(cell, jax.random.key(0), D, H)
    xs = jax.random.normal(jax.random.key(1), (B, T, D), jnp.float32)
    step = rc.step_for(params)

    if variant is None:

        def run(p, x):
            return rc.unroll(step, p, x, kernel=RNNCELLS_KERNEL)[1]

    elif variant == "generic":
        wrapped = lambda p, c, x: step(p, c, x)  # a user step: plain lax.scan + autodiff

        def run(p, x):
            return rc.unroll(wrapped, p, x, rc.init_carry(p, (B,)))[1]

    elif isinstance(variant, dict):  # rc.unroll options: kernel, compute_dtype
        kwargs = dict(variant)
        if kwargs.get("kernel") == "pallas":
            reason = rc.kernel_support(params, kwargs.get("compute_dtype"))["pallas"]
            if reason is not None:
                return reason  # skipped, not timed as the XLA layer it would fall back to

        def run(p, x):
            return rc.unroll(step, p, x, **kwargs)[1]

    else:
        changes = {
            "u2": dict(unroll=2),
            "u8": dict(unroll=8),
            "remat": dict(remat=True),
            "bf16": dict(compute_dtype=jnp.dtype(jnp.bfloat16)),
        }[variant]

        def run(p, x):  # the fused layer's XLA loops with one choice changed
            return rc.unroll(step, p, x, kernel="xla", **changes)[1]

    return _jax_pair(lambda p, x: (jnp.sum(run(p, x)), run(p, x)), params, xs)


def build_flax(cell, B, T, D, H):
    import jax
    import jax.numpy as jnp
    from flax import linen as nn

    make = (lambda: nn.OptimizedLSTMCell(H)) if cell == "lstm" else (lambda: nn.GRUCell(H))
    model = nn.RNN(make())
    xs = jax.random.normal(jax.random.key(1), (B, T, D), jnp.float32)
    params = model.init(jax.random.key(0), xs)

    def loss_and_out(p, x):
        ys = model.apply(p, x)
        return jnp.sum(ys), ys

    return _jax_pair(loss_and_out, params, xs)


def build_eqx(cell, B, T, D, H):
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    key = jax.random.key(0)
    module = eqx.nn.LSTMCell(D, H, key=key) if cell == "lstm" else eqx.nn.GRUCell(D, H, key=key)
    params, static = eqx.partition(module, eqx.is_array)
    xs = jax.random.normal(jax.random.key(1), (T, B, D), jnp.float32)

    def loss_and_out(p, x):
        m = eqx.combine(p, static)
        batched = jax.vmap(m)
        h0 = jnp.zeros((B, H), jnp.float32)
        carry0 = (h0, h0) if cell == "lstm" else h0

        def body(carry, x_t):
            new = batched(x_t, carry)
            return new, (new[0] if cell == "lstm" else new)

        ys = jax.lax.scan(body, carry0, x)[1]
        return jnp.sum(ys), ys

    return _jax_pair(loss_and_out, params, xs)


def build_cudnn(cell, B, T, D, H):
    """cuDNN's fused LSTM through ``jax.experimental.rnn`` (GPU only, LSTM only)."""
    if cell != "lstm" or not on_gpu():
        return None  # jax.experimental.rnn has only an LSTM, and only a cuDNN lowering
    import jax
    import jax.numpy as jnp
    from jax.experimental import rnn

    weights = rnn.init_lstm_weight(jax.random.key(0), D, H, 1, False)
    xs = jax.random.normal(jax.random.key(1), (B, T, D), jnp.float32)
    zeros = jnp.zeros((1, B, H), jnp.float32)
    lengths = jnp.full((B,), T, jnp.int32)

    def loss_and_out(w, x):
        ys = rnn.lstm(x, zeros, zeros, w, lengths, D, H, 1, 0.0, False)[0]
        return jnp.sum(ys), ys

    return _jax_pair(loss_and_out, weights, xs)


def build_torch(cell, B, T, D, H):
    import torch

    torch.manual_seed(0)
    if on_gpu() and torch.cuda.is_available():
        device = torch.device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 against fp32
        torch.backends.cudnn.allow_tf32 = False
        sync = torch.cuda.synchronize
    else:
        device = torch.device("cpu")
        torch.set_num_threads(os.cpu_count())
        sync = lambda: None
    module = (torch.nn.LSTM(D, H) if cell == "lstm" else torch.nn.GRU(D, H)).to(device)
    xs = torch.randn(T, B, D, device=device, requires_grad=True)

    def fwd():
        with torch.no_grad():
            module(xs)
        sync()

    def train():
        module.zero_grad(set_to_none=True)
        xs.grad = None
        ys, _ = module(xs)
        ys.sum().backward()
        sync()

    fwd()
    train()
    return fwd, train, None


BUILDERS = {
    "rnncells": lambda *a: build_rnncells(*a),
    "rnncells_generic": lambda *a: build_rnncells(*a, variant="generic"),
    "rc_u2": lambda *a: build_rnncells(*a, variant="u2"),
    "rc_u8": lambda *a: build_rnncells(*a, variant="u8"),
    "rc_remat": lambda *a: build_rnncells(*a, variant="remat"),
    "rc_bf16": lambda *a: build_rnncells(*a, variant="bf16"),
    "rc_xla": lambda *a: build_rnncells(*a, variant={"kernel": "xla"}),
    "rc_pallas": lambda *a: build_rnncells(*a, variant={"kernel": "pallas"}),
    "rc_xla_bf16": lambda *a: build_rnncells(
        *a, variant={"kernel": "xla", "compute_dtype": "bfloat16"}
    ),
    "rc_pallas_bf16": lambda *a: build_rnncells(
        *a, variant={"kernel": "pallas", "compute_dtype": "bfloat16"}
    ),
    "torch": build_torch,
    "cudnn": build_cudnn,
    "flax": build_flax,
    "eqx": build_eqx,
}


# ----------------------------------------------------------------------------- one size


def minor_faults() -> int | None:
    """Minor page faults of this process so far (None where the OS does not count them).

    A minor fault maps a page of fresh memory the first time it is touched: the kernel
    zeroes it. On the 2-core machine of bench.md it cost 2.0 us per 4 KiB page (a
    128 MiB malloc written twice: 71.9 ms, then 5.8 ms), so every MiB a step touches
    for the first time costs about 0.5 ms.
    """
    return None if resource is None else resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def gemm_rate(reps: int = 20) -> float:
    """GFLOP/s of an NxN fp32 matmul in JAX (median of ``reps`` calls); N = 1024 on a
    CPU, 8192 on a GPU."""
    import jax
    import jax.numpy as jnp

    n = 8192 if on_gpu() else 1024
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    jax.block_until_ready(f(a))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(f(a))
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def run_size(size: str, cells, impls, reps: int) -> dict:
    B, T, D, H = SIZES[size]
    _setup_backend()
    import jax

    result = {"size": size, "B": B, "T": T, "D": D, "H": H, "reps": reps, "cells": {}}
    result["device"] = str(jax.devices()[0].device_kind)
    result["backend"] = jax.default_backend()
    result["gemm_gflops_before"] = gemm_rate()
    result["skipped"], result["errors"] = {}, {}
    for cell in cells:
        built, compile_s = {}, {}
        for impl in impls:
            try:
                made = BUILDERS[impl](cell, B, T, D, H)
            except Exception as error:  # e.g. a kernel the GPU's compiler refuses
                result["errors"].setdefault(cell, {})[impl] = f"{type(error).__name__}: {error}"
                print(f"{size} {cell} {impl} failed: {error}", file=sys.stderr)
                continue
            if made is None or isinstance(made, str):  # not for this cell, size or backend
                if made is not None:
                    result["skipped"].setdefault(cell, {})[impl] = made
                continue
            fwd, train, comp = made
            built[impl] = (fwd, train)
            compile_s[impl] = comp
        times = {impl: {"fwd": [], "train": [], "faults": []} for impl in built}
        for _ in range(reps):
            for impl in built:  # round-robin, so load changes hit every impl alike
                for mode, fn in zip(("fwd", "train"), built[impl], strict=True):
                    faults0 = minor_faults()
                    t0 = time.perf_counter()
                    fn()
                    times[impl][mode].append(time.perf_counter() - t0)
                    if mode == "train" and faults0 is not None:
                        times[impl]["faults"].append(minor_faults() - faults0)
        result["cells"][cell] = {
            impl: {
                "fwd_s": statistics.median(t["fwd"]),
                "train_s": statistics.median(t["train"]),
                "train_spread": (max(t["train"]) - min(t["train"])) / statistics.median(t["train"]),
                # memory first touched during a training step: pages the OS had to map
                "train_faulted_MB": (
                    statistics.median(t["faults"]) * PAGE_BYTES / 2**20 if t["faults"] else None
                ),
                "compile_s": compile_s[impl],
            }
            for impl, t in times.items()
        }
        del built
    result["gemm_gflops_after"] = gemm_rate()
    result["gemm_gflops"] = max(result["gemm_gflops_before"], result["gemm_gflops_after"])
    return result


# ----------------------------------------------------------------------------- memory


def run_memory(cells) -> dict:
    """XLA temp bytes of the compiled training step at T = 10,000, with and without remat."""
    import jax
    import jax.numpy as jnp

    import rnncells as rc

    B, T, D, H = MEMORY_SIZE
    out = {"B": B, "T": T, "D": D, "H": H, "what": "XLA compiled temp_size_in_bytes", "rows": []}
    xs = jax.ShapeDtypeStruct((B, T, D), jnp.float32)
    for cell in cells:
        params = _rc_params(cell, jax.random.key(0), D, H)
        step = rc.step_for(params)
        wrapped = lambda p, c, x, step=step: step(p, c, x)
        for name, s in (("rnncells", step), ("rnncells_generic", wrapped)):
            for remat in (False, True):

                def loss(p, x, s=s, remat=remat):
                    carry = rc.init_carry(p, (B,))
                    return jnp.sum(rc.unroll(s, p, x, carry, remat=remat)[1])

                compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, xs).compile()
                mem = compiled.memory_analysis()
                out["rows"].append(
                    {
                        "cell": cell,
                        "impl": name,
                        "remat": remat,
                        "temp_MB": mem.temp_size_in_bytes / 2**20,
                        "output_MB": mem.output_size_in_bytes / 2**20,
                    }
                )
    return out


# ----------------------------------------------------------------------------- report


def table(result: dict) -> str:
    size, B, T, D, H = (result[k] for k in ("size", "B", "T", "D", "H"))
    gemm = result["gemm_gflops"]
    lines = []
    for cell, rows in result["cells"].items():
        fwd_flop, train_flop = flops(cell, B, T, D, H)
        lines.append(
            f"\n### {size} {cell.upper()}  (B={B}, T={T}, D={D}, H={H}; "
            f"{train_flop / 1e9:.2f} GFLOP per training step; GEMM {gemm:.1f} GFLOP/s; "
            f"{result.get('device', 'cpu')})\n"
        )
        refs = [ref for ref in ("torch", "cudnn", "flax", "eqx") if ref in rows]
        lines.append(
            "| impl | fwd | train | train tokens/s | "
            + "".join(f"vs {ref} | " for ref in refs)
            + "train GFLOP/s | % GEMM | fwd % GEMM | compile s | spread | faulted MB |"
        )
        lines.append("|---" * (10 + len(refs)) + "|")
        for impl, r in rows.items():
            rate = train_flop / r["train_s"] / 1e9
            comp = "-" if r["compile_s"] is None else f"{r['compile_s']:.2f}"
            faulted = r.get("train_faulted_MB")  # absent from older runs' JSON
            faulted = "-" if faulted is None else f"{faulted:.0f}"
            ratios = "".join(f"{rows[ref]['train_s'] / r['train_s']:.2f}x | " for ref in refs)
            lines.append(
                f"| {impl} | {r['fwd_s'] * 1e3:.2f} ms | {r['train_s'] * 1e3:.2f} ms | "
                f"{B * T / r['train_s']:,.0f} | {ratios}{rate:.1f} | {100 * rate / gemm:.0f}% | "
                f"{100 * fwd_flop / r['fwd_s'] / 1e9 / gemm:.0f}% | {comp} | "
                f"{100 * r['train_spread']:.0f}% | {faulted} |"
            )
        for what in ("skipped", "errors"):
            for impl, reason in result.get(what, {}).get(cell, {}).items():
                lines.append(f"\n{what}: {impl}: {reason[:300]}")
    return "\n".join(lines)


def combined_table(runs: list[dict], impl: str = "rnncells") -> str:
    """``impl`` against every peer over several runs of the harness (their JSON results):
    the median ratio of training-step times with its range, and the median % of GEMM."""
    by_size: dict[str, list[dict]] = {}
    for run in runs:
        for result in run["results"]:
            by_size.setdefault(result["size"], []).append(result)
    peers = ("torch", "cudnn", "flax", "eqx", "rnncells_generic")
    present = {ref for r in by_size.values() for x in r for c in x["cells"].values() for ref in c}
    refs = [ref for ref in peers if ref in present and ref != impl]
    lines = [
        f"| size | cell | {impl} train (median) | "
        + "".join(f"vs {ref} | " for ref in refs)
        + "% GEMM | runs |",
        "|---" * (5 + len(refs)) + "|",
    ]
    for size, results in by_size.items():
        for cell in results[0]["cells"]:
            pairs = [(r, r["cells"][cell]) for r in results if impl in r["cells"].get(cell, {})]
            if not pairs:
                continue
            train_flop = flops(cell, *(results[0][k] for k in ("B", "T", "D", "H")))[1]
            mine = [rows[impl]["train_s"] for _, rows in pairs]
            gemm = [
                train_flop / rows[impl]["train_s"] / 1e9 / r["gemm_gflops"] for r, rows in pairs
            ]
            cols = []
            for ref in refs:
                ratios = [
                    rows[ref]["train_s"] / rows[impl]["train_s"] for _, rows in pairs if ref in rows
                ]
                cols.append(
                    f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
                    if ratios
                    else "-"
                )
            lines.append(
                f"| {size} | {cell.upper()} | {statistics.median(mine) * 1e3:.1f} ms | "
                + "".join(f"{c} | " for c in cols)
                + f"{100 * statistics.median(gemm):.0f}% | {len(pairs)} |"
            )
    return "\n".join(lines)


FP32_IMPLS = ("rnncells", "rc_xla", "rc_pallas", "rc_u8")  # the library in fp32
BF16_IMPLS = ("rc_xla_bf16", "rc_pallas_bf16", "rc_bf16")
BENCH_CELL_NAMES = {"lstm": "lstm", "gru": "gru_reset_after"}  # the bench's GRU is reset-after


def _best(rows: dict, impls, key: str):
    """(seconds, impl) of the fastest of ``impls`` in ``rows`` by ``key``; None if none ran."""
    found = [(rows[i][key], i) for i in impls if i in rows]
    return min(found) if found else None


def targets_table(run: dict) -> str:
    """Issue 14's targets from one run's JSON (fp32 against PyTorch's cuDNN, TF32 off):
    training step >= 1.0x torch at every size (>= 1.5x at medium), forward >= 1.0x,
    bf16 compute >= 1.5x over fp32 at large and xl, training-step compile < 5 s. The
    library's entry is its fastest fp32 implementation measured (``FP32_IMPLS``)."""
    lines = [
        "| size | cell | train: best fp32 (impl) | torch | speed-up | target | met | "
        "fwd: best fp32 (impl) | torch | speed-up | met | bf16 / fp32 train | met | "
        "compile s | met |",
        "|---" * 15 + "|",
    ]

    def ms(x):
        return f"{x * 1e3:.2f} ms"

    for result in run["results"]:
        size = result["size"]
        for cell, rows in result["cells"].items():
            train, fwd = _best(rows, FP32_IMPLS, "train_s"), _best(rows, FP32_IMPLS, "fwd_s")
            torch = rows.get("torch")
            if train is None or torch is None:
                continue
            goal = 1.5 if size == "medium" else 1.0
            up, up_fwd = torch["train_s"] / train[0], torch["fwd_s"] / fwd[0]
            low = _best(rows, BF16_IMPLS, "train_s")
            bf16, bf16_met = "-", "-"
            if low is not None:
                gain = train[0] / low[0]
                bf16 = f"{gain:.2f}x ({low[1]})"
                if size in ("large", "xl"):
                    bf16_met = "yes" if gain >= 1.5 else "no"
            comp = rows[train[1]]["compile_s"]
            lines.append(
                f"| {size} | {cell.upper()} | {ms(train[0])} ({train[1]}) | "
                f"{ms(torch['train_s'])} | {up:.2f}x | >= {goal}x | "
                f"{'yes' if up >= goal else 'no'} | {ms(fwd[0])} ({fwd[1]}) | "
                f"{ms(torch['fwd_s'])} | {up_fwd:.2f}x | {'yes' if up_fwd >= 1.0 else 'no'} | "
                f"{bf16} | {bf16_met} | {comp:.1f} | {'yes' if comp < 5 else 'no'} |"
            )
    return "\n".join(lines)


def kernel_figures(run: dict) -> str:
    """``rnncells.unrolling.KernelFigure`` rows for every size and cell of one run's JSON
    where both kernels were measured (rc_xla against rc_pallas, and in bf16)."""
    out = []
    for result in run["results"]:
        for cell, rows in result["cells"].items():
            for xla, pallas, cd in (
                ("rc_xla", "rc_pallas", None),
                ("rc_xla_bf16", "rc_pallas_bf16", "bfloat16"),
            ):
                if xla in rows and pallas in rows:
                    out.append(
                        f"    KernelFigure({result.get('backend', 'gpu')!r}, "
                        f"{result['device']!r}, {BENCH_CELL_NAMES[cell]!r}, {result['B']}, "
                        f"{result['T']}, {result['H']}, {cd!r}, "
                        f"{rows[xla]['train_s'] * 1e3:.3f}, {rows[pallas]['train_s'] * 1e3:.3f}),"
                    )
    return "\n".join(out)


def memory_table(mem: dict) -> str:
    lines = [
        f"\n### Memory of the training step at B={mem['B']}, T={mem['T']}, D={mem['D']}, "
        f"H={mem['H']} ({mem['what']})\n",
        "| cell | impl | remat | temp MB | output MB |",
        "|---|---|---|---|---|",
    ]
    for r in mem["rows"]:
        lines.append(
            f"| {r['cell']} | {r['impl']} | {r['remat']} | {r['temp_MB']:.1f} | "
            f"{r['output_MB']:.1f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="small,medium,large,long")
    parser.add_argument("--cells", default="lstm,gru")
    parser.add_argument("--impls", default=",".join(DEFAULT_IMPLS))
    parser.add_argument("--reps", type=int, default=None, help="default: per size")
    parser.add_argument("--out", default="experiments/results/bench.json")
    parser.add_argument("--memory", action="store_true", help="memory mode instead of speed")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--kernel",
        default=None,
        choices=("xla", "pallas"),
        help="the rnncells impl's kernel (default: the library's choice)",
    )
    parser.add_argument(
        "--size-timeout",
        type=float,
        default=None,
        help="stop a size's process after this many seconds and go on to the next",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, 2 reps: a dry run of a command line"
    )
    parser.add_argument(
        "--ynn-arms",
        action="store_true",
        help="run every size twice in turn, XLA:CPU's YNN fusion on (the default) and off "
        "(rnncells.training.stall.YNN_OFF_FLAG), and print the two side by side",
    )
    parser.add_argument(
        "--targets", default=None, metavar="JSON", help="print issue 14's targets from a run"
    )
    parser.add_argument(
        "--figures", default=None, metavar="JSON", help="print KERNEL_FIGURES rows of a run"
    )
    parser.add_argument(
        "--combine",
        nargs="+",
        default=None,
        metavar="JSON",
        help="print median ratios over these earlier runs' JSON files, run nothing",
    )
    args = parser.parse_args(argv)
    if args.combine:
        runs = []
        for path in args.combine:
            with open(path) as f:
                runs.append(json.load(f))
        print(combined_table(runs))
        return
    for path, report in ((args.targets, targets_table), (args.figures, kernel_figures)):
        if path:
            with open(path) as f:
                print(report(json.load(f)))
            return
    global RNNCELLS_KERNEL
    RNNCELLS_KERNEL = args.kernel
    if args.quick:
        for name, shape in SIZES.items():
            SIZES[name] = tuple(min(a, b) for a, b in zip(shape, QUICK_LIMIT, strict=True))
        args.reps = args.reps or 2
    cells = [c for c in args.cells.split(",") if c]
    impls = [i for i in args.impls.split(",") if i]
    for name, given, known in (("cells", cells, GATES), ("impls", impls, BUILDERS)):
        unknown = [x for x in given if x not in known]
        if unknown:
            parser.error(f"unknown {name} {unknown}; choose from {list(known)}")

    if args.child is not None:  # one size, in this process; JSON on the last stdout line
        import jax

        reps_table = GPU_REPS if jax.default_backend() == "gpu" else DEFAULT_REPS
        result = run_size(args.child, cells, impls, args.reps or reps_table[args.child])
        print(json.dumps(result))
        return

    if args.memory:
        mem = run_memory(cells)
        print(memory_table(mem))
        with open(args.out, "w") as f:
            json.dump({"memory": mem}, f, indent=1)
        return

    sizes = [s for s in args.sizes.split(",") if s]
    results, failed = [], {}
    from rnncells.training.stall import YNN_OFF_FLAG

    arms = [("ynn on", None), ("ynn off", YNN_OFF_FLAG)] if args.ynn_arms else [(None, None)]
    for size, (arm, flag) in itertools.product(sizes, arms):
        if size not in SIZES:
            parser.error(f"unknown size {size!r}; choose from {list(SIZES)}")
        env = dict(os.environ)
        if flag is not None:
            env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flag}".strip()
        cmd = [sys.executable, "-m", "experiments.bench", "--child", size]
        cmd += ["--cells", ",".join(cells), "--impls", ",".join(impls)]
        if args.reps:
            cmd += ["--reps", str(args.reps)]
        if args.kernel:
            cmd += ["--kernel", args.kernel]
        if args.quick:
            cmd += ["--quick"]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, check=False, timeout=args.size_timeout, env=env
            )
        except subprocess.TimeoutExpired:
            failed[size] = f"stopped after --size-timeout {args.size_timeout} s"
        else:
            if proc.returncode == 0:
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                if arm is not None:
                    result["arm"] = arm
                    print(f"\n## {arm}", end="")
                results.append(result)
                print(table(result), flush=True)
            else:
                sys.stderr.write(proc.stderr)
                failed[size] = f"exit {proc.returncode}: {proc.stderr.strip()[-2000:]}"
        if size in failed:  # the next sizes still run
            print(f"\nsize {size} failed: {failed[size][:300]}", flush=True)
        meta = {  # written after every size, so a stopped run keeps what it measured
            "command": " ".join(["python -m experiments.bench"] + (argv or sys.argv[1:])),
            "cpu_count": os.cpu_count(),
            "ld_preload": os.environ.get("LD_PRELOAD", ""),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "loadavg_end": os.getloadavg(),
            "failed_sizes": failed,
        }
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)
    if args.ynn_arms:
        print(ynn_table(results))
    if failed:
        raise SystemExit(f"sizes failed: {', '.join(failed)}")


def ynn_table(results: list[dict]) -> str:
    """rnncells' training step with XLA:CPU's YNN fusion on and off, each against PyTorch
    measured in the same process, per size and cell (``--ynn-arms``)."""
    by = {(r["size"], r["arm"]): r for r in results if "arm" in r}
    lines = [
        "| size | cell | train on | train off | off / on | vs torch, on | vs torch, off |",
        "|---|---|---|---|---|---|---|",
    ]
    for size in dict.fromkeys(r["size"] for r in results):
        on, off = by.get((size, "ynn on")), by.get((size, "ynn off"))
        if on is None or off is None:
            continue
        for cell in on["cells"]:
            a, b = on["cells"][cell], off["cells"][cell]
            ta, tb = a["rnncells"]["train_s"], b["rnncells"]["train_s"]
            vs = [
                f"{arm['torch']['train_s'] / arm['rnncells']['train_s']:.2f}x"
                if "torch" in arm
                else "-"
                for arm in (a, b)
            ]
            lines.append(
                f"| {size} | {cell} | {ta * 1e3:.2f} ms | {tb * 1e3:.2f} ms | {tb / ta:.2f} | "
                f"{vs[0]} | {vs[1]} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
