"""The LSTM with a recurrent projection layer (LSTMP) of Sak, Senior & Beaufays (2014).

The seed's LSTM whose output o_t ⊙ tanh(C_t) is projected to P < H units; the
projection r_t is both the cell's output and its recurrent input. One step, x_t input,
r_{t-1} (P wide) and C_{t-1} (H wide) carried:

    i_t  = σ(W_i x_t + V_i r_{t-1} + b_i)        input gate
    f_t  = σ(W_f x_t + V_f r_{t-1} + b_f)        forget gate
    C~_t = tanh(W_g x_t + V_g r_{t-1} + b_g)     candidate cell
    C_t  = f_t ⊙ C_{t-1} + i_t ⊙ C~_t
    o_t  = σ(W_o x_t + V_o r_{t-1} + b_o)        output gate
    r_t  = (o_t ⊙ tanh(C_t)) @ W_hr               projection, (H,) -> (P,)

This is exactly PyTorch's ``nn.LSTM(proj_size=P)`` (whose h_t is r_t here), and
``rnncells.interop.from_torch`` / ``to_torch`` convert it both ways: W = weight_ih.T
(D, 4H), V = weight_hh.T (P, 4H), W_hr = weight_hr.T (H, P), b = bias_ih + bias_hh,
gates in PyTorch's order (i, f, g, o). The carry is ``LSTMState(h, c)`` with h = r_t of
shape (*batch, P) and c = C_t of shape (*batch, H), PyTorch's (h_n, c_n) per layer; the
output is r_t, P wide (the next layer's input size in a stack). Sak et al.'s peepholes
and non-recurrent projection units are not included (PyTorch has neither).

Registered as the "lstmp" cell, with the init option ``proj_size``; ``unroll`` runs it as
the fused layer with its hand-written unit (``LSTMP_FUSED``: dV and dW_hr after the loop;
``fused=False``: the scan of this step). Its body ``lstmp_cell`` is what a generic fused
layer would run.

References:
  Sak, Senior & Beaufays 2014, "Long short-term memory recurrent neural network
  architectures for large scale acoustic modeling", Interspeech 2014; the arXiv
  version, "Long short-term memory based recurrent neural network architectures for
  large vocabulary speech recognition": https://arxiv.org/abs/1402.1128
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnncells import _checks
from rnncells._engine.unit import FusedCell, block_consts, mm
from rnncells._gates import GateWeights
from rnncells._math import add_bias, sigmoid, tanh
from rnncells.cells._registry import CellSpec
from rnncells.cells.lstm import LSTMState
from rnncells.initializers import chrono_bias, glorot_uniform

__all__ = [
    "LSTMPParams",
    "LSTMP_FUSED",
    "LSTMP_GATES",
    "SPEC",
    "lstmp_cell",
    "lstmp_gate",
    "lstmp_init",
    "lstmp_step",
]

LSTMP_GATES = ("i", "f", "g", "o")


class LSTMPParams(NamedTuple):
    """LSTMP parameters: the LSTM's fused (i, f, g, o) blocks, V on the projection, W_hr."""

    W: jax.Array  # (input_size, 4 * hidden_size)
    V: jax.Array  # (proj_size, 4 * hidden_size)
    b: jax.Array  # (4 * hidden_size,)
    W_hr: jax.Array  # (hidden_size, proj_size), PyTorch's weight_hr.T

    @property
    def input_size(self) -> int:
        return self.W.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.W_hr.shape[0]

    @property
    def proj_size(self) -> int:
        return self.W_hr.shape[1]


def lstmp_init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    proj_size: int | None = None,
    forget_bias: float = 1.0,
    chrono_t_max: float | None = None,
    dtype=jnp.float32,
) -> LSTMPParams:
    """Initialises LSTMP parameters.

    W and W_hr are Glorot-uniform (W per gate), V is Glorot-uniform per gate over its
    (P, H) blocks (a P x H block has no orthogonal square form), biases are zero except
    the forget gate's: ``forget_bias``, or chrono initialisation with ``chrono_t_max``
    (as ``lstm_init``).

    Args:
      key: PRNG key.
      input_size: D, the size of x_t.
      hidden_size: H, the size of C_t and of the gates.
      proj_size: P, the size of the projection r_t (the output and the recurrent input).
        None: P = H (a square projection; PyTorch's ``proj_size`` must be < H, so
        ``to_torch`` needs P < H). The training model's readout takes H-wide outputs,
        so ``model.cell="lstmp"`` uses this default.
      forget_bias: constant forget-gate bias b_f.
      chrono_t_max: if given, chrono initialisation of b_f and b_i (Tallec & Ollivier
        2018) instead of ``forget_bias``.
      dtype: floating dtype of all parameters.

    Returns:
      LSTMPParams with W (D, 4H), V (P, 4H), b (4H,), W_hr (H, P).

    Raises:
      ValueError: a size that is not a positive integer or too large, or
        chrono_t_max <= 2.
      TypeError: forget_bias or chrono_t_max not a real number.

    Example:
      >>> params = lstmp_init(jax.random.key(0), input_size=2, hidden_size=8, proj_size=3)
      >>> params.V.shape, params.W_hr.shape
      ((3, 32), (8, 3))
    """
    input_size = _checks.check_positive_int("input_size", input_size)
    hidden_size = _checks.check_positive_int("hidden_size", hidden_size)
    proj = hidden_size if proj_size is None else _checks.check_positive_int("proj_size", proj_size)
    _checks.check_param_sizes(input_size, hidden_size, len(LSTMP_GATES), dtype)
    forget_bias = _checks.check_number("forget_bias", forget_bias, concrete=False)
    if chrono_t_max is not None:
        chrono_t_max = _checks.check_number("chrono_t_max", chrono_t_max)
    k_w, k_v, k_r, k_b = jax.random.split(key, 4)
    W = glorot_uniform(k_w, input_size, hidden_size, 4, dtype)
    V = glorot_uniform(k_v, proj, hidden_size, 4, dtype)
    W_hr = glorot_uniform(k_r, hidden_size, proj, 1, dtype)
    zeros = jnp.zeros((hidden_size,), dtype)
    if chrono_t_max is not None:
        b_f = chrono_bias(k_b, hidden_size, chrono_t_max, dtype)
        b_i = -b_f
    else:
        b_f = jnp.full((hidden_size,), forget_bias, dtype)
        b_i = zeros
    return LSTMPParams(W, V, jnp.concatenate([b_i, b_f, zeros, zeros]), W_hr)


# -------------------------------------------------------------------------------- checks


def _check_params(params: LSTMPParams) -> None:
    """W (D, 4H), V (P, 4H), b (4H,), W_hr (H, P), one floating dtype."""
    for field, value in zip(params._fields, params, strict=True):
        _checks.check_array(f"params.{field}", value)
    W, V, b, W_hr = params
    if W_hr.ndim != 2 or 0 in W_hr.shape:
        raise ValueError(
            "params.W_hr must have shape (hidden_size, proj_size), got shape "
            f"{_checks.shape_str(W_hr.shape)}"
        )
    hidden, proj = W_hr.shape
    what = f"hidden_size {hidden} and proj_size {proj}, from params.W_hr"
    if W.ndim != 2 or W.shape[1] != 4 * hidden:
        raise ValueError(
            f"params.W must have shape (input_size, {4 * hidden}) (4 gates of {what}), "
            f"got shape {_checks.shape_str(W.shape)}"
        )
    if tuple(V.shape) != (proj, 4 * hidden):
        raise ValueError(
            f"params.V must have shape {_checks.shape_str((proj, 4 * hidden))} ((proj_size, "
            f"4 * hidden_size), {what}), got shape {_checks.shape_str(V.shape)}"
        )
    _checks.check_shape("params.b", b, (4 * hidden,))
    _checks.check_floating("params.W", W)
    for field in ("V", "b", "W_hr"):
        value = getattr(params, field)
        if value.dtype != W.dtype:
            raise TypeError(
                f"params.{field} must have dtype {W.dtype} (params.W's dtype), got {value.dtype}"
            )


def _check_inputs(params: LSTMPParams, carry, x, x_name: str = "x") -> None:
    _check_params(params)
    _checks.check_array(x_name, x)
    _checks.check_floating(x_name, x, params.W.dtype)
    _checks.check_last_dim(x_name, x, params.W.shape[0], "input_size")
    if not isinstance(carry, LSTMState):
        raise TypeError(f"carry must be LSTMState (see init_carry), got {type(carry).__name__}")
    batch = tuple(x.shape[:-1])
    sizes = {"h": (params.W_hr.shape[1], "proj_size"), "c": (params.W_hr.shape[0], "hidden_size")}
    for field, value in zip(carry._fields, carry, strict=True):
        _checks.check_array(f"carry.{field}", value)
        size, what = sizes[field]
        if tuple(value.shape) != batch + (size,):
            raise ValueError(
                f"carry.{field} must have shape {_checks.shape_str(batch + (size,))} "
                f"({x_name}'s batch dims + ({what},)), got shape "
                f"{_checks.shape_str(value.shape)}"
            )
        _checks.check_floating(f"carry.{field}", value, params.W.dtype)


def _zero_carry(params: LSTMPParams, batch_shape: tuple[int, ...]) -> LSTMState:
    hidden, proj = params.W_hr.shape
    batch = tuple(batch_shape)
    dtype = params.W.dtype
    return LSTMState(jnp.zeros(batch + (proj,), dtype), jnp.zeros(batch + (hidden,), dtype))


# ---------------------------------------------------------------------------------- step


def lstmp_step(params: LSTMPParams, carry: LSTMState, x: jax.Array) -> tuple[LSTMState, jax.Array]:
    """One LSTMP step (equations in the module docstring).

    Args:
      params: LSTMPParams.
      carry: LSTMState with h = r_{t-1} of shape (*batch, P) and c of shape (*batch, H).
      x: input x_t of shape (*batch, D), the parameters' dtype.

    Returns:
      (LSTMState(r_t, C_t), r_t), r_t of shape (*batch, P).

    Raises:
      TypeError: wrong params or carry type, or dtype.
      ValueError: params of wrong shapes, x's last dimension is not D, or carry shapes
        don't match x's batch dims.
    """
    _checks.check_params_type("params", params, (LSTMPParams,))
    _check_inputs(params, carry, x)
    with jax.named_scope("lstmp_step"):
        return lstmp_cell(params, carry, add_bias(x @ params.W, params.b))


def lstmp_cell(params: LSTMPParams, carry: LSTMState, gx: jax.Array) -> tuple[LSTMState, jax.Array]:
    """One LSTMP step given the input projection gx = x_t @ W + b of shape (*batch, 4H).

    Its recurrent term is r_{t-1} @ V added to gx (``CellSpec.linear_v``), so the generic
    fused layer forms dV after its loop; dW_hr is summed in the loop.
    """
    a = gx + carry.h @ params.V
    a_i, a_f, a_g, a_o = jnp.split(a, 4, axis=-1)
    c = sigmoid(a_f) * carry.c + sigmoid(a_i) * tanh(a_g)
    r = (sigmoid(a_o) * tanh(c)) @ params.W_hr
    return LSTMState(r, c), r


# ----------------------------------------------------------------------------- fused unit
# The LSTMP's part of the fused layer (rnncells._engine: unit.FusedCell). Its carry is
# (r, C): r (B, P) the projection, which the gates read through V (P, 4H), and C (B, H).
# The four gates are one (B, 4H) block [i, f, g, o] made by one tanh, the one array the
# forward saves; the backward recomputes C_t, tanh(C_t) and h_t from it and C_{t-1}, and
# emits h_t and dr_t, whose products dW_hr = sum_t h_t^T dr_t leave the loop as one matmul.


def _split(block):
    hidden = block.shape[-1] // 4
    return tuple(block[:, k * hidden : (k + 1) * hidden] for k in range(4))


def _fused_activations(params, carry, gx, cd):
    """The gate block, and the step's r_t and C_t (for ``update``)."""
    r, c = carry
    a = gx + mm(r, params.V, cd, gx.dtype)
    scale, offset, _ = block_consts("ssts", c.shape[-1], a.dtype)
    acts = jnp.tanh(a * scale) * scale + offset
    i, f, g, o = _split(acts)
    c_new = f * c + i * g
    r_new = mm(o * jnp.tanh(c_new), params.W_hr, cd, c.dtype)
    return {"acts": acts, "r": r_new, "c": c_new}


def _fused_backward(VT, dcarry, acts, s, cd):
    """dr_{t-1}, dC_{t-1} and dA_t from the gate block, C_t and h_t recomputed; h_t and
    dr_t leave the loop for dW_hr."""
    dr, dc = dcarry
    c_prev = s["c_prev"]
    block = acts["acts"]
    i, f, g, o = _split(block)
    th = jnp.tanh(f * c_prev + i * g)
    dh = mm(dr, s["W_hrT"], cd, dr.dtype)
    dc_t = dc + dh * o * (1 - th * th)
    _, _, plus = block_consts("ssts", c_prev.shape[-1], block.dtype)
    dact = jnp.concatenate([dc_t * g, dc_t * c_prev, dc_t * i, dh * th], axis=-1)
    dA = dact * (block + plus) * (1 - block)
    outs = {"dA": dA, "h": o * th, "dr": dr}
    return (mm(dA, VT, cd, dr.dtype), dc_t * f), outs


def _fused_grads(dW, db, hp, outs, mm_tn):
    return LSTMPParams(dW, mm_tn(hp, outs["dA"]), db, mm_tn(outs["h"], outs["dr"]))


LSTMP_FUSED = FusedCell(
    state=LSTMState,
    activations=_fused_activations,
    update=lambda acts, carry: (acts["r"], acts["c"]),
    save=lambda acts: {"acts": acts["acts"]},
    saved=("acts",),
    load=lambda s: {"acts": s["acts"]},
    backward=_fused_backward,
    grads=_fused_grads,
    overwrite=(("acts", "dA"),),  # dA_t over the gate block of step t: both (B, 4H)
    tie=1,  # dC_{t-1} = dC_t f_t
    reads_carry=True,
    consts=lambda params: {"W_hrT": params.W_hr.T},
)


def lstmp_gate(params: LSTMPParams, name: str) -> GateWeights:
    """The per-gate weights (W_name, V_name, b_name) for ``name`` in i, f, g, o.

    V_name is (P, H): the gate reads the projection r_{t-1}. The projection itself is
    ``params.W_hr``.
    """
    if name not in LSTMP_GATES:
        raise ValueError(
            f"gate name must be one of {list(LSTMP_GATES)} for LSTMPParams, got {name!r}"
        )
    hidden = params.W_hr.shape[0]
    k = LSTMP_GATES.index(name)
    sl = slice(k * hidden, (k + 1) * hidden)
    return GateWeights(params.W[:, sl], params.V[:, sl], params.b[sl])


SPEC = CellSpec(
    name="lstmp",
    params=LSTMPParams,
    state=LSTMState,
    step=lstmp_step,
    init=lstmp_init,
    gates=LSTMP_GATES,
    check_params=_check_params,
    check_inputs=_check_inputs,
    zero_carry=_zero_carry,
    options=("proj_size", "forget_bias", "chrono_t_max"),
    output_size=lambda params: params.W_hr.shape[1],
    gate=lstmp_gate,
    cell=lstmp_cell,
    linear_v=True,
    fused=LSTMP_FUSED,
)
