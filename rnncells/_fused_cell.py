"""What a cell gives the fused layer (``rnncells._fused``), and the helpers its parts use.

A cell's ``FusedCell`` lives beside its equations (``lstm.py``, ``gru.py``, ``rnn.py``)
and is registered by params type in ``rnncells._fused.FUSED_CELLS``. The layer calls its
parts on one time step of a flattened batch: every array is (B, width), x_t @ W + b
arrives as ``gx`` (B, G*H), and matmuls go through ``mm`` so that ``compute_dtype``
applies to them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


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
    # (N, ...) of all steps; mm_tn(a, b) = a^T b in the compute dtype.
    grads: Callable
    reads: tuple[str, ...] = ()  # "h_prev", "h_t": carries the backward step reads
    # At unroll 1 the backward writes outs[new] over slot t of saved[old], for each
    # (old, new), instead of stacking a new array: they must be as wide.
    overwrite: tuple[tuple[str, str], ...] = ()
    # With overwrite: the carry gradient that reads the activations without passing
    # through dA_t (the LSTM's dc_{t-1} = dc_t f_t). The layer orders it before the write,
    # so that XLA need not copy the activations every step.
    tie: int = 0


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


def row(v, ndim):
    """(N,) -> (1, ..., 1, N) so it adds to a (..., N) array without rank promotion."""
    return v.reshape((1,) * (ndim - 1) + v.shape)


def sigmoid(a):
    """σ(a) as 0.5 * tanh(0.5 * a) + 0.5: the same function, and on XLA:CPU one cheap
    tanh polynomial instead of exp and a divide (bench.md, "Tuning of the fused layer")."""
    return 0.5 * jnp.tanh(0.5 * a) + 0.5


def split(a, sizes):
    """The column blocks of ``a`` (B, sum(sizes)), in order."""
    out, start = [], 0
    for size in sizes:
        out.append(a[:, start : start + size])
        start += size
    return tuple(out)
