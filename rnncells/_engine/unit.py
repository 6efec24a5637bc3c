"""What a cell gives the engines: its fused unit and its kernel blocks, and their helpers.

A cell's ``FusedCell`` (for the fused layer, ``rnncells._engine.fused``) and its
``BlockCell`` (for the Pallas kernels, ``rnncells._engine.pallas``) live in the cell's own
file beside its equations (``rnncells/cells/lstm.py``, ...) and reach the engines through
its ``CellSpec`` (``fused`` and ``blocks``). The layer calls a unit's parts on one time
step of a flattened batch: every array is (B, width), x_t @ W + b arrives as ``gx``
(B, G*H), and matmuls go through ``mm`` so that ``compute_dtype`` applies to them. A
kernel calls a block cell's parts on per-gate (B, H) blocks, with matmuls through
``block_dot``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnncells._math import LN_EPSILON


class FusedCell(NamedTuple):
    """One cell's fused forward step, its backward from saved activations, and what they need.

    The layer's forward step is ``carry = update(activations(params, h, gx, cd), carry)``.
    It stacks ``save(acts)`` for the backward, which reads it back with ``load``; under
    remat nothing is saved and the backward calls ``activations`` again. The backward step
    gets the carry gradients (dh_t, ...) with dy_t already added, and returns those of
    the previous step and the gate pre-activation gradients dA_t (B, G*H), from which the
    layer forms dW = sum_t x_t^T dA_t, db = sum_t dA_t and dx_t = dA_t W^T; ``grads``
    forms the rest (dV, and any other parameter's gradient).

    Per-step slices the backward may read, besides the saved arrays: ``dy`` and ``valid``
    (the layer's), ``h_prev`` (h_{t-1}) and ``h_t`` when named in ``reads``, and
    ``<field>_prev`` for every carry field after h (the state each step started from).
    """

    state: type[Any]  # the carry NamedTuple; its first field is h, the output
    # (params, h_{t-1}, gx, cd) -> acts, the step's gate activations. params.V is cast to
    # cd already; gx = x_t @ W + b (B, G*H).
    activations: Callable
    # (acts, carry) -> the new carry, a tuple in the order of state's fields.
    update: Callable
    # acts -> {name: (B, width) array}: what the backward needs, stacked over time.
    save: Callable
    # The names save returns. The first, if any, is as wide as gx: at unroll 1 the forward
    # writes it over x @ W. A cell that saves nothing reads its activations from the
    # carries (``load``), also under remat.
    saved: tuple[str, ...]
    # step slices -> acts, from the saved arrays (or the carries, when saved is empty).
    load: Callable
    # (V^T, dcarry, acts, slices, cd) -> (dcarry_prev, outs), outs = {"dA": dA_t, ...};
    # every other entry of outs is (B, H), stacked over time for ``grads``.
    backward: Callable
    # (dW, db, h_prev, outs, mm_tn) -> the params-typed gradient. h_prev and outs are rows
    # (N, ...) of all steps, outs with ``consts(params)`` beside them; mm_tn(a, b) = a^T b
    # in the compute dtype.
    grads: Callable
    reads: tuple[str, ...] = ()  # "h_prev", "h_t": carries the backward step reads
    # At unroll 1 the backward writes outs[new] over slot t of saved[old], for each
    # (old, new), instead of stacking a new array: they must be as wide.
    overwrite: tuple[tuple[str, str], ...] = ()
    # With overwrite: the carry gradient that reads the activations without passing
    # through dA_t (the LSTM's dc_{t-1} = dc_t f_t). The layer orders it before the write,
    # so that XLA need not copy the activations every step.
    tie: int = 0
    # Whether ``activations`` takes the whole carry tuple (h_{t-1}, C_{t-1}, ...) in place
    # of h_{t-1}: for gates that read the cell state (the peephole LSTMs).
    reads_carry: bool = False
    # params -> {name: array}: parameters the backward step reads besides V^T (the
    # peepholes), added to its slices under those names, each as it is (not per step).
    consts: Callable | None = None
    # (params, xw) -> gx: the gates' input term from xw = x_t @ W, row-wise over any
    # leading shape; None: xw + b. The layer applies it to all steps at once before the
    # forward loop (per step at unroll > 1, under remat or forward only), and after the
    # backward loop takes its vector-Jacobian product for all steps at once (per step
    # under remat): dA_t is then the gradient
    # of gx, and the product gives dW's and dx's rows and the gradients of the parameters
    # it reads (added to ``grads``'s, which leaves them, b included, at zero). For gates
    # that normalise x_t @ W (the layer-normalised cells).
    inputs: Callable | None = None


def mm(a, b, cd, out_dtype):
    """a @ b with inputs cast to the compute dtype ``cd`` and the result in ``out_dtype``."""
    if cd is None:
        return a @ b
    return jnp.matmul(a.astype(cd), b.astype(cd), preferred_element_type=out_dtype)


def mm_tn(a, b, cd, out_dtype):
    """a^T @ b over the leading axis: (N, P), (N, Q) -> (P, Q), one large matmul."""
    if cd is not None:
        a, b = a.astype(cd), b.astype(cd)
    dims = (((0,), (0,)), ((), ()))
    return jax.lax.dot_general(a, b, dims, preferred_element_type=out_dtype)


def normalise(z):
    """(z - mean) / sqrt(variance + ε) over the last axis, and 1 / sqrt(variance + ε)
    (B, 1): a layer norm without its gain and bias (``rnncells._math.layer_norm``)."""
    mean = jnp.mean(z, axis=-1, keepdims=True)
    centred = z - mean
    variance = jnp.mean(centred * centred, axis=-1, keepdims=True)
    rstd = jax.lax.rsqrt(variance + jnp.asarray(LN_EPSILON, z.dtype))
    return centred * rstd, rstd


def normalise_vjp(g, zhat, rstd):
    """The gradient of z from the gradient g of zhat = ``normalise(z)[0]``:
    rstd (g - mean(g) - zhat mean(g zhat)), means over the last axis."""
    mean_g = jnp.mean(g, axis=-1, keepdims=True)
    mean_gz = jnp.mean(g * zhat, axis=-1, keepdims=True)
    return rstd * (g - mean_g - zhat * mean_gz)


def block_consts(kinds: str, hidden: int, dtype):
    """Per-column constants of a block of gate activations made by one tanh, one letter
    of ``kinds`` per gate of H columns: "s" a sigmoid, "t" a tanh. The block is
    act = tanh(scale a) scale + offset, and its derivative (act + plus)(1 - act): scale =
    offset = 1/2, plus = 0 for a sigmoid (act (1 - act)); scale = 1, offset = 0, plus = 1
    for a tanh ((1 + act)(1 - act)). Fewer kernels per step than a function per gate
    (bench.md, "Tuning of the fused layer")."""
    ones = np.ones((hidden,), np.float64)

    def columns(sigmoid: float, tanh: float):
        return np.concatenate([ones * (sigmoid if kind == "s" else tanh) for kind in kinds])

    scale, offset, plus = columns(0.5, 1.0), columns(0.5, 0.0), columns(0.0, 1.0)
    return tuple(jnp.asarray(v[None], dtype) for v in (scale, offset, plus))


def split(a, sizes):
    """The column blocks of ``a`` (B, sum(sizes)), in order."""
    out, start = [], 0
    for size in sizes:
        out.append(a[:, start : start + size])
        start += size
    return tuple(out)


class BlockCell(NamedTuple):
    """One cell's forward step and backward step on per-gate (B, H) blocks, for the Pallas
    kernels (``rnncells._engine.pallas``).

    Triton's tensors cannot be sliced or concatenated in registers, and the GRU's 3H-wide
    gate block is not a power of two, so a kernel cannot call the cell's ``FusedCell``
    parts, which work on (B, G*H) blocks. A ``BlockCell`` restates them on per-gate blocks
    with the same names and formulas (σ as 0.5 tanh(a/2) + 0.5); it reads and writes the
    arrays that the ``FusedCell`` names, so the fused layer's code around the loops,
    ``FusedCell.grads`` included, is shared.

    ``forward(V, consts, carry, gx, cd) -> (new carry tuple, saved)``: V is the list of
    the G gate blocks V_g (H, H) of V (compute dtype), consts the (1, H) rows of
    ``consts(params)``, carry the tuple of (B, H) carry fields, gx the G blocks of
    x_t W + b; saved maps each name of ``saved`` to its list of (B, H) blocks.

    ``backward(V, consts, dcarry, saved, reads, cd) -> (dcarry_prev, outs)``: dcarry
    holds the carry gradients with dy_t added, saved the step's saved blocks, reads the
    (B, H) slices named in ``reads``; outs maps "dA" to the G blocks of dA_t and each
    name of ``outs`` to its blocks.
    """

    gates: int  # G: V is (H, G*H)
    forward: Callable
    backward: Callable
    # (name, width in H blocks) of the FusedCell's saved arrays, in its order.
    saved: tuple[tuple[str, int], ...]
    # (name, width in H blocks) of the backward's outputs besides dA, which the cell's
    # FusedCell.grads reads.
    outs: tuple[tuple[str, int], ...]
    # Per-step slices the backward reads: "h_prev" (h_{t-1}) or "<field>_prev".
    reads: tuple[str, ...]
    # params -> (1, H) rows held on chip beside V (the reset-after GRU's b_hn).
    consts: Callable = lambda params: ()


def block_dot(a, b, cd, transpose_b=False):
    """a @ b (or a @ b^T) of (B, H) blocks in a kernel, inputs in the compute dtype ``cd``
    (b is already), accumulated and returned in a's dtype; fp32 at full precision
    (Triton's "ieee")."""
    out_dtype = a.dtype
    if cd is not None:
        a = a.astype(cd)
    full = cd is None and out_dtype == jnp.float32
    dims = (((1,), (1 if transpose_b else 0,)), ((), ()))
    return jax.lax.dot_general(
        a,
        b,
        dims,
        precision=jax.lax.Precision.HIGHEST if full else None,
        preferred_element_type=out_dtype,
    )
