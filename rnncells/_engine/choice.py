"""Which kernel and which scan unroll a fused layer runs with, and the measured table they
read.

``rnncells.unrolling.default_kernel`` and ``default_unroll`` (public) ask here. The table
holds benchmark figures, not definitions: a cell's fused unit and kernel blocks are its
``CellSpec``'s.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnncells._engine import pallas

GPU_UNROLL = 8  # measured on an H100: experiments/results/gpu/README.md


class KernelFigure(NamedTuple):
    """One benchmark measurement of a training step: the fused layer's loops as XLA scans
    against the Pallas kernels, same process, same card."""

    backend: str  # jax.default_backend(): "gpu"
    device: str  # jax.devices()[0].device_kind, e.g. "NVIDIA H100 80GB HBM3"
    cell: str  # registered cell name: "lstm", "gru", "gru_reset_after"
    batch: int
    steps: int  # T
    hidden: int  # H
    compute_dtype: str | None  # None: the parameters' (fp32)
    xla_ms: float  # median training step (forward + backward), kernel="xla"
    pallas_ms: float  # the same with kernel="pallas"


# What kernel=None chooses from: training-step times measured by ``bash
# experiments/gpu_pallas.sh OUTDIR`` (experiments.bench, impls rc_u8 and rc_pallas, sizes
# small, medium, large, long, xl; results in experiments/results/gpu/). No GPU has run it
# yet, so the table is empty and kernel=None chooses "xla" on every backend and shape.
KERNEL_FIGURES: tuple[KernelFigure, ...] = ()


class ParallelFigure(NamedTuple):
    """One benchmark measurement of a parallel-in-time cell's training step: its parallel
    unroll (one associative scan over time) against the scan of its sequential step."""

    backend: str
    device: str
    cell: str  # "mingru", "minlstm"
    batch: int
    steps: int
    hidden: int
    parallel_ms: float  # median training step, kernel="parallel"
    sequential_ms: float  # the same with kernel="sequential"


# What kernel=None chooses from for minGRU and minLSTM: ``python -m experiments.bench_cells``
# (rows NAME_parallel and NAME_sequential; experiments/results/bench_cells.md, a 2-core
# CPU, B = 8, D = 8, H = 128, float32, median of 7). On that CPU the sequential scan is
# 3.0-4.2x (minGRU) and 3.1-3.9x (minLSTM) faster. A backend with no row runs the parallel
# unroll, the form the cells were designed for (no GPU has measured them yet).
PARALLEL_FIGURES: tuple[ParallelFigure, ...] = (
    ParallelFigure("cpu", "cpu", "mingru", 8, 256, 128, 11.45, 3.63),
    ParallelFigure("cpu", "cpu", "mingru", 8, 1024, 128, 74.29, 17.74),
    ParallelFigure("cpu", "cpu", "mingru", 8, 4096, 128, 299.07, 99.50),
    ParallelFigure("cpu", "cpu", "minlstm", 8, 256, 128, 26.96, 6.91),
    ParallelFigure("cpu", "cpu", "minlstm", 8, 1024, 128, 117.88, 37.74),
    ParallelFigure("cpu", "cpu", "minlstm", 8, 4096, 128, 501.59, 151.93),
)


def parallel_for(
    spec: Any, batch: int, num_steps: int, hidden: int, backend: str | None = None
) -> str:
    """ "parallel" or "sequential" for a parallel-in-time cell: the one measured faster in
    the ``PARALLEL_FIGURES`` row of ``backend`` and cell nearest in shape (log-distance in
    B, T and H); "parallel" with no such row."""
    backend = jax.default_backend() if backend is None else backend
    rows = [r for r in PARALLEL_FIGURES if r.backend == backend and r.cell == spec.name]
    if not rows:
        return "parallel"
    shape = (batch, num_steps, hidden)

    def distance(r: ParallelFigure) -> float:
        measured = (r.batch, r.steps, r.hidden)
        return sum(abs(math.log2(a / b)) for a, b in zip(measured, shape, strict=True))

    nearest = min(rows, key=distance)
    return "parallel" if nearest.parallel_ms < nearest.sequential_ms else "sequential"


def unroll_for(fused: bool, backend: str | None = None) -> int:
    """The scan unroll factor for a step with (``fused``) or without a fused layer."""
    backend = jax.default_backend() if backend is None else backend
    return GPU_UNROLL if fused and backend == "gpu" else 1


def kernel_for(
    spec: Any,
    params: Any,
    batch: int,
    num_steps: int,
    compute_dtype: Any = None,
    backend: str | None = None,
) -> str:
    """The kernel for the fused layer of ``params`` (of the cell ``spec``): among the
    ``KERNEL_FIGURES`` rows of ``backend`` (JAX's default when None), cell and compute
    dtype, the one nearest in shape (log-distance in B, T and H) decides: "pallas" where it
    measured faster and the kernels can run this layer, else "xla". With no such row:
    "xla"."""
    backend = jax.default_backend() if backend is None else backend
    cd = None if compute_dtype is None else jnp.dtype(compute_dtype).name
    rows = [
        r
        for r in KERNEL_FIGURES
        if r.backend == backend and r.cell == spec.name and r.compute_dtype == cd
    ]
    if not rows or pallas.unsupported(spec.blocks, params, compute_dtype, backend) is not None:
        return "xla"
    shape = (batch, num_steps, params.V.shape[0])

    def distance(r: KernelFigure) -> float:
        measured = (r.batch, r.steps, r.hidden)
        return sum(abs(math.log2(a / b)) for a, b in zip(measured, shape, strict=True))

    nearest = min(rows, key=distance)
    return "pallas" if nearest.pallas_ms < nearest.xla_ms else "xla"
