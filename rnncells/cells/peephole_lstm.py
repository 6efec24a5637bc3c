"""The peephole LSTM of Gers & Schmidhuber (2000), the "vanilla" LSTM of Greff et al. (2017).

The seed's LSTM with diagonal "peephole" weights p_i, p_f, p_o through which the gates
see the cell state: the input and forget gates the previous one, C_{t-1}, the output
gate the new one, C_t. One step, x_t input, h_{t-1} and C_{t-1} carried:

    i_t  = σ(W_i x_t + V_i h_{t-1} + p_i ⊙ C_{t-1} + b_i)    input gate
    f_t  = σ(W_f x_t + V_f h_{t-1} + p_f ⊙ C_{t-1} + b_f)    forget gate
    C~_t = tanh(W_g x_t + V_g h_{t-1} + b_g)                 candidate cell
    C_t  = f_t ⊙ C_{t-1} + i_t ⊙ C~_t
    o_t  = σ(W_o x_t + V_o h_{t-1} + p_o ⊙ C_t + b_o)        output gate
    h_t  = o_t ⊙ tanh(C_t)

W, V and b are stored as the LSTM's (``rnncells.cells.lstm``): fused over the gates in the
order (i, f, g, o), W (D, 4H), V (H, 4H), b (4H,); the peepholes are three vectors (H,).
With p_i = p_f = p_o = 0 it is the seed's LSTM. The carry is ``LSTMState(h, c)``.

Registered as the "peephole_lstm" cell; ``unroll`` runs it as the fused layer with its
hand-written unit (``peephole_fused``; ``fused=False``: the scan of this step).

References:
  Gers & Schmidhuber 2000, "Recurrent nets that time and count",
  https://doi.org/10.1109/IJCNN.2000.861302
  Greff, Srivastava, Koutník, Steunebrink & Schmidhuber 2017, "LSTM: A search space
  odyssey", https://arxiv.org/abs/1503.04069
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnncells import _checks
from rnncells._engine.unit import FusedCell, mm
from rnncells._gates import GateWeights, gate_slice
from rnncells._math import add_bias, row, sigmoid, tanh, tanh_sigmoid
from rnncells.cells._registry import standard_spec
from rnncells.cells.lstm import LSTMState, lstm_init

__all__ = [
    "PEEPHOLE_LSTM_FUSED",
    "PEEPHOLE_LSTM_GATES",
    "PeepholeLSTMParams",
    "SPEC",
    "peephole_fused",
    "peephole_lstm_gate",
    "peephole_lstm_init",
    "peephole_lstm_step",
]

PEEPHOLE_LSTM_GATES = ("i", "f", "g", "o")
_VECTORS = {"b": 4, "p_i": 1, "p_f": 1, "p_o": 1}  # lengths in units of H


class PeepholeLSTMParams(NamedTuple):
    """Peephole LSTM parameters: the LSTM's fused (i, f, g, o) blocks and three peepholes."""

    W: jax.Array  # (input_size, 4 * hidden_size)
    V: jax.Array  # (hidden_size, 4 * hidden_size)
    b: jax.Array  # (4 * hidden_size,)
    p_i: jax.Array  # (hidden_size,), C_{t-1} -> input gate
    p_f: jax.Array  # (hidden_size,), C_{t-1} -> forget gate
    p_o: jax.Array  # (hidden_size,), C_t -> output gate

    @property
    def input_size(self) -> int:
        return self.W.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.V.shape[0]


def peephole_lstm_init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    chrono_t_max: float | None = None,
    dtype=jnp.float32,
) -> PeepholeLSTMParams:
    """Initialises peephole LSTM parameters.

    W, V and b are exactly ``lstm_init``'s for the same arguments (Glorot-uniform W,
    orthogonal V, b_f = ``forget_bias`` or chrono initialisation); the peepholes start
    at 0, so the initial cell computes the seed's LSTM and the peepholes are learned.

    Args:
      key: PRNG key.
      input_size: D, the size of x_t.
      hidden_size: H, the size of h_t and C_t.
      forget_bias: constant forget-gate bias b_f.
      chrono_t_max: if given, chrono initialisation of b_f and b_i (Tallec & Ollivier
        2018) instead of ``forget_bias``.
      dtype: floating dtype of all parameters.

    Returns:
      PeepholeLSTMParams with W (D, 4H), V (H, 4H), b (4H,), p_i, p_f, p_o (H,).

    Raises:
      ValueError: a size that is not a positive integer or too large, or
        chrono_t_max <= 2.
      TypeError: forget_bias or chrono_t_max not a real number.

    Example:
      >>> params = peephole_lstm_init(jax.random.key(0), input_size=2, hidden_size=8)
      >>> params.W.shape, params.p_o.shape
      ((2, 32), (8,))
    """
    base = lstm_init(
        key,
        input_size,
        hidden_size,
        forget_bias=forget_bias,
        chrono_t_max=chrono_t_max,
        dtype=dtype,
    )
    zeros = jnp.zeros((hidden_size,), dtype)
    return PeepholeLSTMParams(base.W, base.V, base.b, zeros, zeros, zeros)


def peephole_lstm_step(
    params: PeepholeLSTMParams, carry: LSTMState, x: jax.Array
) -> tuple[LSTMState, jax.Array]:
    """One peephole LSTM step (equations in the module docstring).

    Args:
      params: PeepholeLSTMParams.
      carry: LSTMState with h and c of shape (*batch, H).
      x: input x_t of shape (*batch, D), the parameters' dtype.

    Returns:
      (LSTMState(h_t, C_t), h_t), h_t of shape (*batch, H).

    Raises:
      TypeError: wrong params or carry type, or dtype.
      ValueError: params of wrong shapes, x's last dimension is not D, or carry shapes
        don't match x's batch dims.
    """
    _checks.check_params_type("params", params, (PeepholeLSTMParams,))
    _checks.check_step_inputs(params, carry, x, LSTMState, 4, vectors=_VECTORS)
    with jax.named_scope("peephole_lstm_step"):
        a = add_bias(x @ params.W, params.b) + carry.h @ params.V
        a_i, a_f, a_g, a_o = jnp.split(a, 4, axis=-1)
        i = sigmoid(a_i + row(params.p_i, carry.c.ndim) * carry.c)
        f = sigmoid(a_f + row(params.p_f, carry.c.ndim) * carry.c)
        c = f * carry.c + i * tanh(a_g)
        o = sigmoid(a_o + row(params.p_o, c.ndim) * c)
        h = o * tanh(c)
        return LSTMState(h, c), h


def peephole_lstm_gate(params: PeepholeLSTMParams, name: str) -> GateWeights:
    """The seed's per-gate weights (W_name, V_name, b_name) for gate ``name`` in i, f, g, o
    (the peepholes are ``params.p_i``, ``params.p_f``, ``params.p_o``)."""
    return gate_slice(params, PEEPHOLE_LSTM_GATES, name)


# ----------------------------------------------------------------------------- fused unit
# The peephole LSTM's part of the fused layer (rnncells._engine: unit.FusedCell), and Greff
# et al.'s ablations' (rnncells.cells.lstm_ablations), which drop a gate (it is 1), an
# activation (it is the identity) or both. Its gates read the cell state, so its
# activations take the whole carry (reads_carry). The four gates are one (B, 4H) block
# [i, f, g, o] that the forward saves; the backward recomputes C_t from it and C_{t-1},
# and emits each step's peephole gradients, summed over time after the loop.


def peephole_fused(
    params_type: type,
    *,
    no_input_gate: bool = False,
    no_forget_gate: bool = False,
    no_output_gate: bool = False,
    linear_candidate: bool = False,
    linear_output: bool = False,
) -> FusedCell:
    """The fused unit of the peephole LSTM whose params are ``params_type``, with the
    ablations' switches: a gate that is 1, the candidate's or the output's activation
    the identity (NIG, NFG, NOG, NIAF, NOAF)."""

    def split(block):
        hidden = block.shape[-1] // 4
        return tuple(block[:, k * hidden : (k + 1) * hidden] for k in range(4))

    def activations(params, carry, gx, cd):
        h, c = carry
        a_i, a_f, a_g, a_o = split(gx + mm(h, params.V, cd, gx.dtype))
        one = jnp.ones_like(c)
        i = one if no_input_gate else tanh_sigmoid(a_i + row(params.p_i, 2) * c)
        f = one if no_forget_gate else tanh_sigmoid(a_f + row(params.p_f, 2) * c)
        g = a_g if linear_candidate else jnp.tanh(a_g)
        c_new = f * c + i * g
        o = one if no_output_gate else tanh_sigmoid(a_o + row(params.p_o, 2) * c_new)
        return jnp.concatenate([i, f, g, o], axis=-1)

    def update(acts, carry):
        i, f, g, o = split(acts)
        c_new = f * carry[1] + i * g
        return o * (c_new if linear_output else jnp.tanh(c_new)), c_new

    def backward(VT, dcarry, acts, s, cd):
        """dh_{t-1}, dC_{t-1}, dA_t and the step's peephole gradients, C_t recomputed."""
        dh, dc = dcarry
        c_prev = s["c_prev"]
        i, f, g, o = split(acts)
        c_t = f * c_prev + i * g
        th = c_t if linear_output else jnp.tanh(c_t)
        zero = jnp.zeros_like(dh)
        da_o = zero if no_output_gate else dh * th * o * (1 - o)
        dth = dh * o if linear_output else dh * o * (1 - th * th)
        dc_t = dc + dth + da_o * row(s["p_o"], 2)
        da_i = zero if no_input_gate else dc_t * g * i * (1 - i)
        da_f = zero if no_forget_gate else dc_t * c_prev * f * (1 - f)
        da_g = dc_t * i if linear_candidate else dc_t * i * (1 - g * g)
        dA = jnp.concatenate([da_i, da_f, da_g, da_o], axis=-1)
        dc_prev = dc_t * f + da_i * row(s["p_i"], 2) + da_f * row(s["p_f"], 2)
        outs = {"dA": dA, "dp_i": da_i * c_prev, "dp_f": da_f * c_prev, "dp_o": da_o * c_t}
        return (mm(dA, VT, cd, dh.dtype), dc_prev), outs

    def grads(dW, db, hp, outs, mm_tn):
        dV = mm_tn(hp, outs["dA"])
        dp = [jnp.sum(outs[name], axis=0) for name in ("dp_i", "dp_f", "dp_o")]
        return params_type(dW, dV, db, *dp)

    return FusedCell(
        state=LSTMState,
        activations=activations,
        update=update,
        save=lambda acts: {"acts": acts},
        saved=("acts",),
        load=lambda s: s["acts"],
        backward=backward,
        grads=grads,
        overwrite=(("acts", "dA"),),  # dA_t over the gate block of step t: both (B, 4H)
        tie=1,  # dC_{t-1} reads f_t of the block
        reads_carry=True,
        consts=lambda params: {"p_i": params.p_i, "p_f": params.p_f, "p_o": params.p_o},
    )


PEEPHOLE_LSTM_FUSED = peephole_fused(PeepholeLSTMParams)

SPEC = standard_spec(
    "peephole_lstm",
    PeepholeLSTMParams,
    LSTMState,
    peephole_lstm_step,
    peephole_lstm_init,
    PEEPHOLE_LSTM_GATES,
    vectors=_VECTORS,
    options=("forget_bias", "chrono_t_max"),
    fused=PEEPHOLE_LSTM_FUSED,
)
