"""The layer-normalised LSTM of Ba, Kiros & Hinton (2016).

Layer normalisation, LN(z; γ, β) = γ ⊙ (z - μ) / sqrt(σ² + ε) + β with μ and σ² the
mean and variance of z's entries, is applied separately to the input and to the
recurrent pre-activations, each with its own gain, and to the cell state before the
output nonlinearity. One step, x_t input, h_{t-1} and C_{t-1} carried:

    a_t  = LN(W x_t; γ_x) + LN(V h_{t-1}; γ_h) + b      a_t = (a_i, a_f, a_g, a_o), 4H
    i_t  = σ(a_i),  f_t = σ(a_f),  o_t = σ(a_o),  C~_t = tanh(a_g)
    C_t  = f_t ⊙ C_{t-1} + i_t ⊙ C~_t
    h_t  = o_t ⊙ tanh(LN(C_t; γ_c, β_c))

This is eqs. (20)-(22) of the paper's supplementary material, with its placement: each
LN normalises the whole 4H block of pre-activations (all four gates together: W x_t is
one vector, V h_{t-1} another), not each gate's H entries on its own; the cell state
C_t that is carried is the one before its LN. The paper's two LN biases β_1, β_2 enter
a_t only through their sum with b, so b holds all three (one bias of 4H, as the LSTM's).
ε = 1e-5 (``rnncells._math.LN_EPSILON``; the paper has none, but V h_0 = 0 at the first
step needs one).

Weights are fused over the gates in the LSTM's order (i, f, g, o): W (D, 4H), V (H, 4H),
b, γ_x, γ_h (4H,); γ_c, β_c (H,). The carry is ``LSTMState(h, c)``.

Registered as the "ln_lstm" cell; ``unroll`` runs it as the fused layer with its
hand-written unit (``LN_LSTM_FUSED``: LN(W x_t) and its backward for all steps at once
outside the loops when training at unroll 1 without remat, the CPU default; dV after
the loop; ``fused=False``: the scan of this step). Its body
``ln_lstm_cell`` is what a generic fused layer would run.

References:
  Ba, Kiros & Hinton 2016, "Layer normalization", https://arxiv.org/abs/1607.06450
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnncells import _checks
from rnncells._engine.unit import FusedCell, block_consts, mm, normalise, normalise_vjp
from rnncells._gates import GateWeights, gate_slice
from rnncells._math import add_bias, layer_norm, row, sigmoid, tanh
from rnncells.cells._registry import standard_spec
from rnncells.cells.lstm import LSTMState, lstm_init

__all__ = [
    "LNLSTMParams",
    "LN_LSTM_FUSED",
    "LN_LSTM_GATES",
    "SPEC",
    "ln_lstm_cell",
    "ln_lstm_gate",
    "ln_lstm_init",
    "ln_lstm_step",
]

LN_LSTM_GATES = ("i", "f", "g", "o")
_VECTORS = {"b": 4, "gamma_x": 4, "gamma_h": 4, "gamma_c": 1, "beta_c": 1}


class LNLSTMParams(NamedTuple):
    """Layer-normalised LSTM parameters; gate blocks in the order (i, f, g, o)."""

    W: jax.Array  # (input_size, 4 * hidden_size)
    V: jax.Array  # (hidden_size, 4 * hidden_size)
    b: jax.Array  # (4 * hidden_size,), the gates' bias (the LNs' β_1 + β_2 + b)
    gamma_x: jax.Array  # (4 * hidden_size,), gain of LN(W x_t)
    gamma_h: jax.Array  # (4 * hidden_size,), gain of LN(V h_{t-1})
    gamma_c: jax.Array  # (hidden_size,), gain of LN(C_t)
    beta_c: jax.Array  # (hidden_size,), bias of LN(C_t)

    @property
    def input_size(self) -> int:
        return self.W.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.V.shape[0]


def ln_lstm_init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    chrono_t_max: float | None = None,
    dtype=jnp.float32,
) -> LNLSTMParams:
    """Initialises layer-normalised LSTM parameters.

    W, V and b are exactly ``lstm_init``'s for the same arguments (Glorot-uniform W,
    orthogonal V, b_f = ``forget_bias`` or chrono initialisation); the LN gains are 1
    and β_c is 0, the usual start of layer normalisation.

    Args:
      key: PRNG key.
      input_size: D.
      hidden_size: H.
      forget_bias: constant forget-gate bias b_f (added after the LNs).
      chrono_t_max: if given, chrono initialisation of b_f and b_i instead.
      dtype: floating dtype of all parameters.

    Returns:
      LNLSTMParams with W (D, 4H), V (H, 4H), b, gamma_x, gamma_h (4H,), gamma_c,
      beta_c (H,).

    Raises:
      ValueError: a size that is not a positive integer or too large, or
        chrono_t_max <= 2.
      TypeError: forget_bias or chrono_t_max not a real number.

    Example:
      >>> params = ln_lstm_init(jax.random.key(0), input_size=2, hidden_size=8)
      >>> params.gamma_x.shape, params.gamma_c.shape
      ((32,), (8,))
    """
    base = lstm_init(
        key,
        input_size,
        hidden_size,
        forget_bias=forget_bias,
        chrono_t_max=chrono_t_max,
        dtype=dtype,
    )
    ones = jnp.ones((4 * hidden_size,), dtype)
    return LNLSTMParams(
        base.W,
        base.V,
        base.b,
        ones,
        ones,
        jnp.ones((hidden_size,), dtype),
        jnp.zeros((hidden_size,), dtype),
    )


def ln_lstm_step(
    params: LNLSTMParams, carry: LSTMState, x: jax.Array
) -> tuple[LSTMState, jax.Array]:
    """One layer-normalised LSTM step (equations in the module docstring).

    Args:
      params: LNLSTMParams.
      carry: LSTMState with h and c of shape (*batch, H); c is C_t before its LN.
      x: input x_t of shape (*batch, D), the parameters' dtype.

    Returns:
      (LSTMState(h_t, C_t), h_t), h_t of shape (*batch, H).

    Raises:
      TypeError: wrong params or carry type, or dtype.
      ValueError: params of wrong shapes, x's last dimension is not D, or carry shapes
        don't match x's batch dims.
    """
    _checks.check_params_type("params", params, (LNLSTMParams,))
    _checks.check_step_inputs(params, carry, x, LSTMState, 4, vectors=_VECTORS)
    with jax.named_scope("ln_lstm_step"):
        return _from_xw(params, carry, x @ params.W)


def _from_xw(params: LNLSTMParams, carry: LSTMState, xw: jax.Array) -> tuple[LSTMState, jax.Array]:
    """The step from x_t @ W (before its LN and the bias)."""
    a_x = layer_norm(xw, params.gamma_x)  # over all 4H entries
    a_h = layer_norm(carry.h @ params.V, params.gamma_h)
    a_i, a_f, a_g, a_o = jnp.split(add_bias(a_x + a_h, params.b), 4, axis=-1)
    c = sigmoid(a_f) * carry.c + sigmoid(a_i) * tanh(a_g)
    h = sigmoid(a_o) * tanh(layer_norm(c, params.gamma_c, params.beta_c))
    return LSTMState(h, c), h


def ln_lstm_cell(
    params: LNLSTMParams, carry: LSTMState, gx: jax.Array
) -> tuple[LSTMState, jax.Array]:
    """One step given gx = x_t @ W + b (*batch, 4H), the body the generic fused layer runs.

    The LN of x_t W comes before the bias here, so the body takes the bias off again:
    LN(gx - b) equals the step's LN(x_t W) up to rounding.
    """
    return _from_xw(params, carry, gx - row(params.b, gx.ndim))


# ----------------------------------------------------------------------------- fused unit
# The LN-LSTM's part of the fused layer (rnncells._engine: unit.FusedCell). LN(x_t W; γ_x)
# + b is the unit's ``inputs``: the layer forms it for all steps before the forward loop
# and takes its backward for all steps after the backward loop, so the loops hold only
# the recurrent LN and the cell's. The forward saves the gate block [i, f, g, o] (one
# tanh), the normalised V h_{t-1} and its 1/σ; the backward recomputes C_t and its LN
# from them and C_{t-1}, and emits the gradient of V h_{t-1} (for dV = sum_t h_{t-1}^T
# d(V h_{t-1}) after the loop) and the per-step products of the gains' gradients.


def _split(block):
    hidden = block.shape[-1] // 4
    return tuple(block[:, k * hidden : (k + 1) * hidden] for k in range(4))


def _fused_inputs(params, xw):
    """LN(x_t W; γ_x) + b, the gates' input term (any leading shape)."""
    return add_bias(layer_norm(xw, params.gamma_x), params.b)


def _fused_activations(params, carry, gx, cd):
    h, c = carry
    hhat, rstd = normalise(mm(h, params.V, cd, gx.dtype))
    a = gx + hhat * row(params.gamma_h, 2)
    scale, offset, _ = block_consts("ssts", c.shape[-1], a.dtype)
    acts = jnp.tanh(a * scale) * scale + offset
    i, f, g, o = _split(acts)
    c_new = f * c + i * g
    h_new = o * jnp.tanh(layer_norm(c_new, params.gamma_c, params.beta_c))
    return {"acts": acts, "hhat": hhat, "rstd": rstd, "h": h_new, "c": c_new}


def _fused_backward(VT, dcarry, acts, s, cd):
    """dh_{t-1}, dC_{t-1} and dA_t (the gradient of the input term) from the gate block,
    with C_t and its LN recomputed (saving them measured no faster)."""
    dh, dc = dcarry
    c_prev = s["c_prev"]
    block = acts["acts"]
    i, f, g, o = _split(block)
    chat, rstd_c = normalise(f * c_prev + i * g)
    th = jnp.tanh(chat * s["gamma_c"] + s["beta_c"])
    dln = dh * o * (1 - th * th)  # the gradient of LN(C_t)
    dc_t = dc + normalise_vjp(dln * s["gamma_c"], chat, rstd_c)
    _, _, plus = block_consts("ssts", c_prev.shape[-1], block.dtype)
    dact = jnp.concatenate([dc_t * g, dc_t * c_prev, dc_t * i, dh * th], axis=-1)
    dA = dact * (block + plus) * (1 - block)
    hhat = acts["hhat"]
    dhv = normalise_vjp(dA * s["gamma_h"], hhat, acts["rstd"])  # of V h_{t-1}
    outs = {"dA": dA, "dhv": dhv, "dgamma_h": dA * hhat, "dgamma_c": dln * chat, "dbeta_c": dln}
    return (mm(dhv, VT, cd, dh.dtype), dc_t * f), outs


def _fused_grads(dW, db, hp, outs, mm_tn):
    """dV after the loop; b and γ_x come from the input term's product (zero here)."""
    return LNLSTMParams(
        dW,
        mm_tn(hp, outs["dhv"]),
        db,
        jnp.zeros_like(db),
        jnp.sum(outs["dgamma_h"], axis=0),
        jnp.sum(outs["dgamma_c"], axis=0),
        jnp.sum(outs["dbeta_c"], axis=0),
    )


LN_LSTM_FUSED = FusedCell(
    state=LSTMState,
    activations=_fused_activations,
    update=lambda acts, carry: (acts["h"], acts["c"]),
    save=lambda acts: {k: acts[k] for k in ("acts", "hhat", "rstd")},
    saved=("acts", "hhat", "rstd"),
    load=lambda s: {k: s[k] for k in ("acts", "hhat", "rstd")},
    backward=_fused_backward,
    grads=_fused_grads,
    overwrite=(("acts", "dA"),),  # dA_t over the gate block of step t: both (B, 4H)
    tie=1,  # dC_{t-1} = dC_t f_t
    reads_carry=True,
    consts=lambda params: {
        "gamma_h": row(params.gamma_h, 2),
        "gamma_c": row(params.gamma_c, 2),
        "beta_c": row(params.beta_c, 2),
    },
    inputs=_fused_inputs,
)


def ln_lstm_gate(params: LNLSTMParams, name: str) -> GateWeights:
    """The per-gate weights (W_name, V_name, b_name) for gate ``name`` in i, f, g, o.

    The LNs mix the gates (each normalises all four blocks together), so a gate's
    pre-activation is not x W_name + h V_name + b_name here; its LN gains are the
    ``name`` blocks of ``params.gamma_x`` and ``params.gamma_h``.
    """
    return gate_slice(params, LN_LSTM_GATES, name)


SPEC = standard_spec(
    "ln_lstm",
    LNLSTMParams,
    LSTMState,
    ln_lstm_step,
    ln_lstm_init,
    LN_LSTM_GATES,
    vectors=_VECTORS,
    options=("forget_bias", "chrono_t_max"),
    cell=ln_lstm_cell,
    fused=LN_LSTM_FUSED,
)
