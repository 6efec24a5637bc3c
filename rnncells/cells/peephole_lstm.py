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

Registered as the "peephole_lstm" cell; ``unroll`` runs it through ``jax.lax.scan`` of
this step (it has no fused layer).

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
from rnncells._gates import GateWeights, gate_slice
from rnncells._math import add_bias, row, sigmoid, tanh
from rnncells.cells._registry import standard_spec
from rnncells.cells.lstm import LSTMState, lstm_init

__all__ = [
    "PEEPHOLE_LSTM_GATES",
    "PeepholeLSTMParams",
    "SPEC",
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


SPEC = standard_spec(
    "peephole_lstm",
    PeepholeLSTMParams,
    LSTMState,
    peephole_lstm_step,
    peephole_lstm_init,
    PEEPHOLE_LSTM_GATES,
    vectors=_VECTORS,
    options=("forget_bias", "chrono_t_max"),
)
