"""The sLSTM of Beck et al. (2024, xLSTM): exponential gating with a normaliser and a stabiliser.

One step, x_t input, h_{t-1}, c_{t-1}, n_{t-1} and m_{t-1} carried (the paper's
Sec. 2.2, with its stabilised gates):

    ĩ_t = W_i x_t + R_i h_{t-1} + b_i           input gate pre-activation, i_t = exp(ĩ_t)
    f̃_t = W_f x_t + R_f h_{t-1} + b_f           forget gate, f_t = σ(f̃_t)
    z_t = tanh(W_z x_t + R_z h_{t-1} + b_z)     cell input
    o_t = σ(W_o x_t + R_o h_{t-1} + b_o)        output gate
    m_t = max(log f_t + m_{t-1}, ĩ_t)           stabiliser state
    i'_t = exp(ĩ_t - m_t),  f'_t = exp(log f_t + m_{t-1} - m_t)
    c_t = f'_t ⊙ c_{t-1} + i'_t ⊙ z_t           cell state
    n_t = f'_t ⊙ n_{t-1} + i'_t                 normaliser state
    h_t = o_t ⊙ c_t / n_t

The stabiliser only rescales: c_t and n_t are the unstabilised paper states (with i_t
and f_t in place of i'_t and f'_t) times exp(-m_t), and h_t is the same. Where a unit's
normaliser is still 0 (the zero carry: nothing has been written yet) m_t is ĩ_t, so that
i'_t = 1 and n_t = 1 after the first write; f'_t is then clipped to 1 (it multiplies
c_{t-1} = n_{t-1} = 0). This is the rule of the xLSTM authors' pure-PyTorch sLSTM
(PyPI ``xlstm``, ``backend="vanilla"``), taken per unit where theirs looks at the whole
batch at once; h is the same either way. The forget gate is the sigmoid (the paper's
other choice, f_t = exp(f̃_t), is not offered).

Heads: the recurrent matrices R are block-diagonal with ``num_heads`` blocks (the
paper's head-wise memory mixing); one head (the default) is a full H x H matrix per
gate. They are stored as V of shape (num_heads, head_dim, 4 * head_dim): V[k] maps head
k's slice of h_{t-1} onto that head's (i, f, z, o) columns. W (D, 4H) and b (4H,) are
fused over the gates in the order (i, f, z, o), each gate's H columns head by head:
the layout of ``xlstm``'s sLSTM cell, whose gate order and head order these are.
The carry is ``SLSTMState(h, c, n, m)``, all zeros initially (as ``xlstm``'s).

Registered as the "slstm" cell; ``unroll`` runs it as the fused layer with its
hand-written unit (``SLSTM_FUSED``: no exponential in the backward, dV per head after the
loop; ``fused=False``: the scan of this step). Its body ``slstm_cell`` is what a generic
fused layer would run.

References:
  Beck, Pöppel, Spanring, Auer, Prudnikova, Kopp, Klambauer, Brandstetter & Hochreiter
  2024, "xLSTM: Extended Long Short-Term Memory", https://arxiv.org/abs/2405.04517
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnncells import _checks
from rnncells._engine.unit import FusedCell, mm, split
from rnncells._gates import GateWeights
from rnncells._math import add_bias, sigmoid, tanh
from rnncells.cells._registry import CellSpec
from rnncells.initializers import glorot_uniform, orthogonal

__all__ = [
    "SLSTMParams",
    "SLSTMState",
    "SLSTM_FUSED",
    "SLSTM_GATES",
    "SPEC",
    "slstm_cell",
    "slstm_gate",
    "slstm_init",
    "slstm_step",
]

SLSTM_GATES = ("i", "f", "z", "o")


class SLSTMParams(NamedTuple):
    """sLSTM parameters: fused (i, f, z, o) blocks; V block-diagonal over heads."""

    W: jax.Array  # (input_size, 4 * hidden_size)
    V: jax.Array  # (num_heads, head_dim, 4 * head_dim), hidden_size = num_heads * head_dim
    b: jax.Array  # (4 * hidden_size,)

    @property
    def input_size(self) -> int:
        return self.W.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.V.shape[0] * self.V.shape[1]

    @property
    def num_heads(self) -> int:
        return self.V.shape[0]


class SLSTMState(NamedTuple):
    """sLSTM carry: hidden h, cell c, normaliser n and stabiliser m."""

    h: jax.Array  # (*batch, hidden_size)
    c: jax.Array  # (*batch, hidden_size)
    n: jax.Array  # (*batch, hidden_size)
    m: jax.Array  # (*batch, hidden_size)


def slstm_init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    num_heads: int = 1,
    forget_bias: float = 1.0,
    dtype=jnp.float32,
) -> SLSTMParams:
    """Initialises sLSTM parameters.

    W is Glorot-uniform per gate, each head's recurrent block orthogonal per gate, biases
    zero except the forget gate's, ``forget_bias`` (as ``lstm_init``'s).

    Args:
      key: PRNG key.
      input_size: D, the size of x_t.
      hidden_size: H, the size of h_t (and of c_t, n_t, m_t).
      num_heads: number of diagonal blocks of the recurrent matrices; must divide H.
      forget_bias: constant forget-gate bias b_f.
      dtype: floating dtype of all parameters.

    Returns:
      SLSTMParams with W (D, 4H), V (num_heads, H / num_heads, 4H / num_heads), b (4H,).

    Raises:
      ValueError: a size that is not a positive integer or too large, or num_heads
        that does not divide hidden_size.
      TypeError: forget_bias not a real number.

    Example:
      >>> params = slstm_init(jax.random.key(0), input_size=2, hidden_size=8, num_heads=2)
      >>> params.W.shape, params.V.shape, params.b.shape
      ((2, 32), (2, 4, 16), (32,))
    """
    input_size = _checks.check_positive_int("input_size", input_size)
    hidden_size = _checks.check_positive_int("hidden_size", hidden_size)
    num_heads = _checks.check_positive_int("num_heads", num_heads)
    if hidden_size % num_heads:
        raise ValueError(
            f"num_heads must divide hidden_size, got num_heads={num_heads} for "
            f"hidden_size={hidden_size}"
        )
    _checks.check_param_sizes(input_size, hidden_size, len(SLSTM_GATES), dtype)
    forget_bias = _checks.check_number("forget_bias", forget_bias, concrete=False)
    head_dim = hidden_size // num_heads
    k_w, k_v = jax.random.split(key)
    W = glorot_uniform(k_w, input_size, hidden_size, 4, dtype)
    V = jnp.stack([orthogonal(k, head_dim, 4, dtype) for k in jax.random.split(k_v, num_heads)])
    zeros = jnp.zeros((hidden_size,), dtype)
    b_f = jnp.full((hidden_size,), forget_bias, dtype)
    return SLSTMParams(W, V, jnp.concatenate([zeros, b_f, zeros, zeros]))


# -------------------------------------------------------------------------------- checks


def _check_params(params: SLSTMParams) -> None:
    """W (D, 4H), V (heads, H / heads, 4H / heads), b (4H,), one floating dtype."""
    for field, value in zip(params._fields, params, strict=True):
        _checks.check_array(f"params.{field}", value)
    W, V, b = params.W, params.V, params.b
    if V.ndim != 3 or V.shape[1] == 0 or V.shape[2] != 4 * V.shape[1]:
        raise ValueError(
            "params.V must have shape (num_heads, head_dim, 4 * head_dim) for SLSTMParams, "
            f"got shape {_checks.shape_str(V.shape)}"
        )
    width = 4 * V.shape[0] * V.shape[1]
    if W.ndim != 2 or W.shape[1] != width:
        raise ValueError(
            f"params.W must have shape (input_size, {width}) (4 gates of hidden_size "
            f"{width // 4} = num_heads * head_dim, from params.V), got shape "
            f"{_checks.shape_str(W.shape)}"
        )
    _checks.check_shape("params.b", b, (width,))
    _checks.check_floating("params.W", W)
    for field in ("V", "b"):
        value = getattr(params, field)
        if value.dtype != W.dtype:
            raise TypeError(
                f"params.{field} must have dtype {W.dtype} (params.W's dtype), got {value.dtype}"
            )


def _check_inputs(params: SLSTMParams, carry, x, x_name: str = "x") -> None:
    _check_params(params)
    _checks.check_array(x_name, x)
    _checks.check_floating(x_name, x, params.W.dtype)
    _checks.check_last_dim(x_name, x, params.W.shape[0], "input_size")
    if not isinstance(carry, SLSTMState):
        raise TypeError(f"carry must be SLSTMState (see init_carry), got {type(carry).__name__}")
    expected = tuple(x.shape[:-1]) + (params.hidden_size,)
    for field, value in zip(carry._fields, carry, strict=True):
        _checks.check_array(f"carry.{field}", value)
        if tuple(value.shape) != expected:
            raise ValueError(
                f"carry.{field} must have shape {_checks.shape_str(expected)} ({x_name}'s "
                f"batch dims + (hidden_size,)), got shape {_checks.shape_str(value.shape)}"
            )
        _checks.check_floating(f"carry.{field}", value, params.W.dtype)


def _zero_carry(params: SLSTMParams, batch_shape: tuple[int, ...]) -> SLSTMState:
    zeros = jnp.zeros(tuple(batch_shape) + (params.V.shape[0] * params.V.shape[1],), params.W.dtype)
    return SLSTMState(zeros, zeros, zeros, zeros)


# ---------------------------------------------------------------------------------- step


def _recurrent(V: jax.Array, h: jax.Array) -> jax.Array:
    """R h_{t-1} for the block-diagonal R held by V: (*batch, H) -> (*batch, 4H), in the
    (i, f, z, o) gate order, each gate's columns head by head."""
    heads, head_dim = V.shape[0], V.shape[1]
    if heads == 1:  # a plain matmul (XLA:CPU runs the one-head einsum far slower)
        return h @ V[0]
    batch = h.shape[:-1]
    per_head = jnp.einsum("...kd,kde->...ke", h.reshape(batch + (heads, head_dim)), V)
    per_gate = jnp.swapaxes(per_head.reshape(batch + (heads, 4, head_dim)), -3, -2)
    return per_gate.reshape(batch + (4 * heads * head_dim,))


def slstm_step(
    params: SLSTMParams, carry: SLSTMState, x: jax.Array
) -> tuple[SLSTMState, jax.Array]:
    """One sLSTM step (equations in the module docstring).

    Scan-shaped: ``jax.lax.scan(functools.partial(slstm_step, params), carry, xs)``
    unrolls it.

    Args:
      params: SLSTMParams.
      carry: SLSTMState with h, c, n, m of shape (*batch, H).
      x: input x_t of shape (*batch, D), the parameters' dtype.

    Returns:
      (SLSTMState(h_t, c_t, n_t, m_t), h_t), h_t of shape (*batch, H).

    Raises:
      TypeError: wrong params or carry type, or dtype.
      ValueError: params of wrong shapes, x's last dimension is not D, or carry shapes
        don't match x's batch dims.
    """
    _checks.check_params_type("params", params, (SLSTMParams,))
    _check_inputs(params, carry, x)
    with jax.named_scope("slstm_step"):
        return slstm_cell(params, carry, add_bias(x @ params.W, params.b))


def slstm_cell(
    params: SLSTMParams, carry: SLSTMState, gx: jax.Array
) -> tuple[SLSTMState, jax.Array]:
    """One sLSTM step given the input projection gx = x_t @ W + b of shape (*batch, 4H).

    Its recurrent term ``_recurrent(V, h_{t-1})`` is linear in V and added to gx
    (``CellSpec.linear_v``), so the generic fused layer forms dV after its loop.
    """
    a = gx + _recurrent(params.V, carry.h)
    a_i, a_f, a_z, a_o = jnp.split(a, 4, axis=-1)
    log_f_plus_m = jax.nn.log_sigmoid(a_f) + carry.m
    m = jnp.where(carry.n == 0, a_i, jnp.maximum(log_f_plus_m, a_i))
    i = jnp.exp(a_i - m)
    # <= 1 by m's definition; the clip matters only where n_{t-1} = 0 (m = ĩ_t), and
    # is taken in the exponent so that no overflowing exp enters a gradient.
    f = jnp.exp(jnp.minimum(log_f_plus_m - m, 0.0))
    c = f * carry.c + i * tanh(a_z)
    n = f * carry.n + i
    h = sigmoid(a_o) * c / n
    return SLSTMState(h, c, n, m), h


# ----------------------------------------------------------------------------- fused unit
# The sLSTM's part of the fused layer (rnncells._engine: unit.FusedCell). The forward
# saves the gate block [i'_t, f'_t, z_t, o_t] and the weights of the stabiliser's
# branches [w_u, w_m, σ(-f̃_t)], so the backward runs no exponential: w_u is the slope of
# min(u, 0) at u = log f_t + m_{t-1} - m_t, w_m the share of m_t's gradient that goes to
# log f_t + m_{t-1} (0 where n_{t-1} = 0), each 1, 1/2 at a tie (JAX's rule for max and
# min) or 0. dV = per head sum_t h_{t-1}^T dA_t leaves the loop.


def _per_head(a, heads):
    """(B, 4H) in the gates' layout -> (B, heads, 4 * head_dim), each head's (i, f, z, o)."""
    batch, width = a.shape
    per_gate = a.reshape((batch, 4, heads, width // (4 * heads)))
    return jnp.swapaxes(per_gate, 1, 2).reshape((batch, heads, -1))


def _from_heads(a):
    """(B, heads, 4 * head_dim) -> (B, 4H), the inverse of ``_per_head``."""
    batch, heads, width = a.shape
    per_head = a.reshape((batch, heads, 4, width // 4))
    return jnp.swapaxes(per_head, 1, 2).reshape((batch, -1))


def _head_mm(spec, a, b, cd, out_dtype):
    """einsum(spec, a, b) with inputs in the compute dtype ``cd``."""
    if cd is None:
        return jnp.einsum(spec, a, b)
    return jnp.einsum(spec, a.astype(cd), b.astype(cd), preferred_element_type=out_dtype)


def _recurrent_mm(V, h, cd, out_dtype):
    """R h_{t-1} (B, 4H) in the gates' layout; one head is a plain matmul."""
    heads, head_dim = V.shape[0], V.shape[1]
    if heads == 1:
        return mm(h, V[0], cd, out_dtype)
    rec = _head_mm("bkd,kde->bke", h.reshape((h.shape[0], heads, head_dim)), V, cd, out_dtype)
    return _from_heads(rec)


def _recurrent_mm_t(VT, dA, cd, out_dtype):
    """R^T dA_t (B, H) from V^T (4 head_dim, head_dim, heads)."""
    heads = VT.shape[-1]
    if heads == 1:
        return mm(dA, VT[:, :, 0], cd, out_dtype)
    dh = _head_mm("bke,edk->bkd", _per_head(dA, heads), VT, cd, out_dtype)
    return dh.reshape((dA.shape[0], -1))


def _weight(greater, equal):
    return jnp.where(greater, 1.0, jnp.where(equal, 0.5, 0.0))


def _fused_activations(params, carry, gx, cd):
    h, c, n, m = carry
    rec = _recurrent_mm(params.V, h, cd, gx.dtype)
    a_i, a_f, a_z, a_o = split(gx + rec, (h.shape[-1],) * 4)
    log_f_plus_m = jax.nn.log_sigmoid(a_f) + m
    empty = n == 0
    m_new = jnp.where(empty, a_i, jnp.maximum(log_f_plus_m, a_i))
    u = log_f_plus_m - m_new
    i = jnp.exp(a_i - m_new)
    f = jnp.exp(jnp.minimum(u, 0.0))
    z = jnp.tanh(a_z)
    o = jax.nn.sigmoid(a_o)
    c_new = f * c + i * z
    n_new = f * n + i
    w_u = _weight(u < 0, u == 0).astype(u.dtype)
    w_m = jnp.where(empty, 0.0, _weight(log_f_plus_m > a_i, log_f_plus_m == a_i)).astype(u.dtype)
    return {
        "acts": jnp.concatenate([i, f, z, o], axis=-1),
        "aux": jnp.concatenate([w_u, w_m, jax.nn.sigmoid(-a_f)], axis=-1),
        "carry": (o * c_new / n_new, c_new, n_new, m_new),
    }


def _fused_backward(VT, dcarry, acts, s, cd):
    """The carries' gradients and dA_t from the saved gates and weights."""
    dh, dc, dn, dm = dcarry
    c_prev, n_prev = s["c_prev"], s["n_prev"]
    i, f, z, o = split(acts["acts"], (dh.shape[-1],) * 4)
    w_u, w_m, sig_neg_f = split(acts["aux"], (dh.shape[-1],) * 3)
    c = f * c_prev + i * z
    n = f * n_prev + i
    do = dh * c / n
    dc = dc + dh * o / n
    dn = dn - dh * o * c / (n * n)
    di = dc * z + dn
    du = (dc * c_prev + dn * n_prev) * f * w_u  # through f = exp(min(u, 0))
    dm_t = dm - di * i - du  # m_t's gradient: the carry's, i's and u's
    dlfm = du + dm_t * w_m  # log f_t + m_{t-1}'s
    dA = jnp.concatenate(
        [
            di * i + dm_t * (1 - w_m),
            dlfm * sig_neg_f,
            dc * i * (1 - z * z),
            do * o * (1 - o),
        ],
        axis=-1,
    )
    dh_prev = _recurrent_mm_t(VT, dA, cd, dh.dtype)
    return (dh_prev, dc * f, dn * f, dlfm), {"dA": dA}


def _fused_grads(dW, db, hp, outs, mm_tn):
    """dV[k] = sum_t h_{t-1}[head k]^T dA_t[head k], one matmul per head after the loop."""
    heads, head_dim = outs["V"].shape[0], outs["V"].shape[1]
    dA = _per_head(outs["dA"], heads)
    dV = [mm_tn(hp[:, k * head_dim : (k + 1) * head_dim], dA[:, k]) for k in range(heads)]
    return SLSTMParams(dW, jnp.stack(dV), db)


SLSTM_FUSED = FusedCell(
    state=SLSTMState,
    activations=_fused_activations,
    update=lambda acts, carry: acts["carry"],
    save=lambda acts: {"acts": acts["acts"], "aux": acts["aux"]},
    saved=("acts", "aux"),
    load=lambda s: {"acts": s["acts"], "aux": s["aux"]},
    backward=_fused_backward,
    grads=_fused_grads,
    overwrite=(("acts", "dA"),),  # dA_t over the gate block of step t: both (B, 4H)
    tie=1,  # dc_{t-1} = dc_t f'_t
    reads_carry=True,
    consts=lambda params: {"V": params.V},
)


def slstm_gate(params: SLSTMParams, name: str) -> GateWeights:
    """The per-gate weights (W_name, V_name, b_name) for ``name`` in i, f, z, o.

    V_name is the gate's dense (H, H) recurrent matrix R_name, block-diagonal with one
    (head_dim, head_dim) block per head (``h_{t-1} @ V_name`` is R_name h_{t-1}).
    """
    if name not in SLSTM_GATES:
        raise ValueError(
            f"gate name must be one of {list(SLSTM_GATES)} for SLSTMParams, got {name!r}"
        )
    k = SLSTM_GATES.index(name)
    heads, head_dim = params.V.shape[0], params.V.shape[1]
    hidden = heads * head_dim
    blocks = params.V[:, :, k * head_dim : (k + 1) * head_dim]  # (heads, head_dim, head_dim)
    V = jax.scipy.linalg.block_diag(*[blocks[j] for j in range(heads)])
    sl = slice(k * hidden, (k + 1) * hidden)
    return GateWeights(params.W[:, sl], V, params.b[sl])


SPEC = CellSpec(
    name="slstm",
    params=SLSTMParams,
    state=SLSTMState,
    step=slstm_step,
    init=slstm_init,
    gates=SLSTM_GATES,
    check_params=_check_params,
    check_inputs=_check_inputs,
    zero_carry=_zero_carry,
    options=("num_heads", "forget_bias"),
    output_size=lambda params: params.V.shape[0] * params.V.shape[1],
    gate=slstm_gate,
    cell=slstm_cell,
    linear_v=_recurrent,
    cell_saves="residuals",  # its exponentials are dear to run twice: bench_cells.md
    fused=SLSTM_FUSED,
)
