"""The LSTM with coupled input and forget gates (CIFG) of Greff et al. (2017).

The input gate is not learned but tied to the forget gate, i_t = 1 - f_t: what the cell
forgets is exactly what it writes. One step, x_t input, h_{t-1} and C_{t-1} carried:

    f_t  = σ(W_f x_t + V_f h_{t-1} + b_f)        forget gate
    i_t  = 1 - f_t                              input gate, coupled
    C~_t = tanh(W_g x_t + V_g h_{t-1} + b_g)     candidate cell
    C_t  = f_t ⊙ C_{t-1} + (1 - f_t) ⊙ C~_t
    o_t  = σ(W_o x_t + V_o h_{t-1} + b_o)        output gate
    h_t  = o_t ⊙ tanh(C_t)

This is the seed's LSTM with the coupling and nothing else (Greff et al.'s CIFG variant
couples the gates of their peephole "vanilla" LSTM; here there are no peepholes). Three
gates' weights, fused in the order (f, g, o): W (D, 3H), V (H, 3H), b (3H,). Since
1 - σ(a) = σ(-a), the input gate's pre-activation is -(W_f x_t + V_f h_{t-1} + b_f),
so chrono initialisation's b_i = -b_f holds by construction. The carry is
``LSTMState(h, c)``.

Registered as the "cifg_lstm" cell; ``unroll`` runs it as the fused layer with its
hand-written unit (``CIFG_LSTM_FUSED``; ``fused=False``: the scan of this step).

References:
  Greff, Srivastava, Koutník, Steunebrink & Schmidhuber 2017, "LSTM: A search space
  odyssey", https://arxiv.org/abs/1503.04069
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnncells import _checks
from rnncells._engine.unit import FusedCell, block_consts, mm
from rnncells._gates import GateWeights, gate_slice
from rnncells._math import add_bias, sigmoid, tanh
from rnncells.cells._registry import standard_spec
from rnncells.cells.lstm import LSTMState
from rnncells.initializers import chrono_bias, glorot_uniform, orthogonal

__all__ = [
    "CIFGLSTMParams",
    "CIFG_LSTM_FUSED",
    "CIFG_LSTM_GATES",
    "SPEC",
    "cifg_lstm_cell",
    "cifg_lstm_gate",
    "cifg_lstm_init",
    "cifg_lstm_step",
]


CIFG_LSTM_GATES = ("f", "g", "o")


class CIFGLSTMParams(NamedTuple):
    """CIFG LSTM parameters, fused over the gates in the order (f, g, o)."""

    W: jax.Array  # (input_size, 3 * hidden_size)
    V: jax.Array  # (hidden_size, 3 * hidden_size)
    b: jax.Array  # (3 * hidden_size,)

    @property
    def input_size(self) -> int:
        return self.W.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.V.shape[0]


def cifg_lstm_init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    chrono_t_max: float | None = None,
    dtype=jnp.float32,
) -> CIFGLSTMParams:
    """Initialises CIFG LSTM parameters.

    W is Glorot-uniform per gate, V orthogonal per gate, b zero except b_f, which is
    ``forget_bias`` (1 by default, as the LSTM's), or with ``chrono_t_max`` the chrono
    initialisation b_f ~ log(U[1, t_max - 1]) (Tallec & Ollivier 2018; the coupled input
    gate then has bias -b_f, as chrono prescribes).

    Args:
      key: PRNG key.
      input_size: D.
      hidden_size: H.
      forget_bias: constant forget-gate bias b_f.
      chrono_t_max: if given, the longest expected time dependency for chrono init.
      dtype: floating dtype of all parameters.

    Returns:
      CIFGLSTMParams with W (D, 3H), V (H, 3H), b (3H,).

    Raises:
      ValueError: a size that is not a positive integer or too large, or
        chrono_t_max <= 2.
      TypeError: forget_bias or chrono_t_max not a real number.

    Example:
      >>> params = cifg_lstm_init(jax.random.key(0), input_size=2, hidden_size=8)
      >>> params.W.shape, params.V.shape, params.b.shape
      ((2, 24), (8, 24), (24,))
    """
    input_size = _checks.check_positive_int("input_size", input_size)
    hidden_size = _checks.check_positive_int("hidden_size", hidden_size)
    _checks.check_param_sizes(input_size, hidden_size, len(CIFG_LSTM_GATES), dtype)
    forget_bias = _checks.check_number("forget_bias", forget_bias, concrete=False)
    if chrono_t_max is not None:
        chrono_t_max = _checks.check_number("chrono_t_max", chrono_t_max)
    k_w, k_v, k_b = jax.random.split(key, 3)
    W = glorot_uniform(k_w, input_size, hidden_size, 3, dtype)
    V = orthogonal(k_v, hidden_size, 3, dtype)
    if chrono_t_max is not None:
        b_f = chrono_bias(k_b, hidden_size, chrono_t_max, dtype)
    else:
        b_f = jnp.full((hidden_size,), forget_bias, dtype)
    zeros = jnp.zeros((hidden_size,), dtype)
    return CIFGLSTMParams(W, V, jnp.concatenate([b_f, zeros, zeros]))


def cifg_lstm_step(
    params: CIFGLSTMParams, carry: LSTMState, x: jax.Array
) -> tuple[LSTMState, jax.Array]:
    """One CIFG LSTM step (equations in the module docstring).

    Args:
      params: CIFGLSTMParams.
      carry: LSTMState with h and c of shape (*batch, H).
      x: input x_t of shape (*batch, D), the parameters' dtype.

    Returns:
      (LSTMState(h_t, C_t), h_t), h_t of shape (*batch, H).

    Raises:
      TypeError: wrong params or carry type, or dtype.
      ValueError: params of wrong shapes, x's last dimension is not D, or carry shapes
        don't match x's batch dims.
    """
    _checks.check_params_type("params", params, (CIFGLSTMParams,))
    _checks.check_step_inputs(params, carry, x, LSTMState, len(CIFG_LSTM_GATES))
    with jax.named_scope("cifg_lstm_step"):
        return cifg_lstm_cell(params, carry, add_bias(x @ params.W, params.b))


def cifg_lstm_cell(
    params: CIFGLSTMParams, carry: LSTMState, gx: jax.Array
) -> tuple[LSTMState, jax.Array]:
    """One CIFG LSTM step given the input projection gx = x_t @ W + b (*batch, 3H)."""
    a = gx + carry.h @ params.V
    a_f, a_g, a_o = jnp.split(a, 3, axis=-1)
    candidate = tanh(a_g)
    c = candidate + sigmoid(a_f) * (carry.c - candidate)  # f C_{t-1} + (1 - f) C~
    h = sigmoid(a_o) * tanh(c)
    return LSTMState(h, c), h


def cifg_lstm_gate(params: CIFGLSTMParams, name: str) -> GateWeights:
    """The seed's per-gate weights (W_name, V_name, b_name) for gate ``name`` in f, g, o
    (the input gate has none: i_t = 1 - f_t)."""
    return gate_slice(params, CIFG_LSTM_GATES, name)


# ----------------------------------------------------------------------------- fused unit
# The CIFG LSTM's part of the fused layer (rnncells._engine: unit.FusedCell), the LSTM's
# with the input gate coupled, i_t = 1 - f_t: the three gates are one (B, 3H) block of
# activations [f, g, o], made by one tanh, which the forward saves; the backward
# recomputes tanh(C_t) from it and C_{t-1}.


def _fused_activations(params, h, gx, cd):
    """The (B, 3H) block [f, g, o] of the step's gates."""
    a = gx + mm(h, params.V, cd, gx.dtype)
    scale, offset, _ = block_consts("sts", h.shape[-1], a.dtype)
    return jnp.tanh(a * scale) * scale + offset


def _fused_update(acts, carry):
    h, c = carry
    hidden = h.shape[-1]
    f, g, o = (acts[:, k * hidden : (k + 1) * hidden] for k in range(3))
    c_new = g + f * (c - g)
    return o * jnp.tanh(c_new), c_new


def _fused_backward(VT, dcarry, acts, s, cd):
    """dh_{t-1}, dC_{t-1} and dA_t from the activation block, C_t recomputed."""
    dh, dc = dcarry
    c_prev = s["c_prev"]
    hidden = dh.shape[-1]
    f, g, o = (acts[:, k * hidden : (k + 1) * hidden] for k in range(3))
    th = jnp.tanh(g + f * (c_prev - g))
    dc_t = dc + dh * o * (1 - th * th)
    _, _, plus = block_consts("sts", hidden, acts.dtype)
    dact = jnp.concatenate([dc_t * (c_prev - g), dc_t * (1 - f), dh * th], axis=-1)
    dA = dact * (acts + plus) * (1 - acts)
    return (mm(dA, VT, cd, dh.dtype), dc_t * f), {"dA": dA}


CIFG_LSTM_FUSED = FusedCell(
    state=LSTMState,
    activations=_fused_activations,
    update=_fused_update,
    save=lambda acts: {"acts": acts},
    saved=("acts",),
    load=lambda s: s["acts"],
    backward=_fused_backward,
    grads=lambda dW, db, hp, outs, mm_tn: CIFGLSTMParams(dW, mm_tn(hp, outs["dA"]), db),
    overwrite=(("acts", "dA"),),  # dA_t over the activations of step t: both (B, 3H)
    tie=1,  # dc_{t-1} = dC_t f_t
)

SPEC = standard_spec(
    "cifg_lstm",
    CIFGLSTMParams,
    LSTMState,
    cifg_lstm_step,
    cifg_lstm_init,
    CIFG_LSTM_GATES,
    options=("forget_bias", "chrono_t_max"),
    cell=cifg_lstm_cell,
    fused=CIFG_LSTM_FUSED,
)
