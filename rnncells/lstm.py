"""The LSTM of Hochreiter & Schmidhuber (1997) with the forget gate of Gers et al. (2000).

One step, x_t input, h_{t-1} and C_{t-1} carried:

    f_t  = σ(W_f x_t + V_f h_{t-1} + b_f)        forget gate
    i_t  = σ(W_i x_t + V_i h_{t-1} + b_i)        input gate
    C~_t = tanh(W_g x_t + V_g h_{t-1} + b_g)     candidate cell
    C_t  = f_t ⊙ C_{t-1} + i_t ⊙ C~_t
    o_t  = σ(W_o x_t + V_o h_{t-1} + b_o)        output gate
    h_t  = o_t ⊙ tanh(C_t)

Weights are stored fused over the four gates in the order (i, f, g, o), the order of
PyTorch's ``nn.LSTM``, Equinox's ``LSTMCell`` and Flax NNX's ``OptimizedLSTMCell``; W
is (input_size, 4H) so a row vector x multiplies it as ``x @ W``. One bias per gate
(PyTorch's b_ih + b_hh).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnncells import _checks
from rnncells._gates import GateWeights, add_bias, gate_slice
from rnncells._math import sigmoid, tanh
from rnncells.initializers import chrono_bias, glorot_uniform, orthogonal

LSTM_GATES = ("i", "f", "g", "o")


class LSTMParams(NamedTuple):
    """Fused LSTM parameters; gate blocks in the order (i, f, g, o)."""

    W: jax.Array  # (input_size, 4 * hidden_size)
    V: jax.Array  # (hidden_size, 4 * hidden_size)
    b: jax.Array  # (4 * hidden_size,)

    @property
    def input_size(self) -> int:
        return self.W.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.V.shape[0]


class LSTMState(NamedTuple):
    """LSTM carry: hidden state h and cell state c (PyTorch's order, not Flax's (c, h))."""

    h: jax.Array  # (*batch, hidden_size)
    c: jax.Array  # (*batch, hidden_size)


def lstm_init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    chrono_t_max: float | None = None,
    dtype=jnp.float32,
) -> LSTMParams:
    """Initialises LSTM parameters.

    W is Glorot-uniform per gate, V is orthogonal per gate, biases are zero except the
    forget gate's, which is ``forget_bias`` (1 by default, Jozefowicz et al. 2015; Keras's
    ``unit_forget_bias``). With ``chrono_t_max`` the chrono initialisation of Tallec &
    Ollivier (2018) is used instead: b_f ~ log(U[1, t_max - 1]), b_i = -b_f, and
    ``forget_bias`` is ignored.

    Args:
      key: PRNG key.
      input_size: D, the size of x_t.
      hidden_size: H, the size of h_t and C_t.
      forget_bias: constant forget-gate bias b_f.
      chrono_t_max: if given, the longest expected time dependency for chrono init.
      dtype: floating dtype of all parameters.

    Returns:
      LSTMParams with W (D, 4H), V (H, 4H), b (4H,).

    Raises:
      ValueError: if a size is not a positive integer, so large that a weight array would
        exceed 2**40 bytes (1 TiB), or chrono_t_max <= 2.
      TypeError: if forget_bias or chrono_t_max is not a real number.

    Example:
      >>> params = lstm_init(jax.random.key(0), input_size=2, hidden_size=8)
      >>> params.W.shape, params.V.shape, params.b.shape
      ((2, 32), (8, 32), (32,))

    References:
      Jozefowicz, Zaremba & Sutskever 2015, https://proceedings.mlr.press/v37/jozefowicz15.html
      Tallec & Ollivier 2018, https://arxiv.org/abs/1804.11188
    """
    input_size = _checks.check_positive_int("input_size", input_size)
    hidden_size = _checks.check_positive_int("hidden_size", hidden_size)
    _checks.check_param_sizes(input_size, hidden_size, len(LSTM_GATES), dtype)
    forget_bias = _checks.check_number("forget_bias", forget_bias, concrete=False)
    if chrono_t_max is not None:
        chrono_t_max = _checks.check_number("chrono_t_max", chrono_t_max)
    k_w, k_v, k_b = jax.random.split(key, 3)
    W = glorot_uniform(k_w, input_size, hidden_size, 4, dtype)
    V = orthogonal(k_v, hidden_size, 4, dtype)
    zeros = jnp.zeros((hidden_size,), dtype)
    if chrono_t_max is not None:
        b_f = chrono_bias(k_b, hidden_size, chrono_t_max, dtype)
        b_i = -b_f
    else:
        b_f = jnp.full((hidden_size,), forget_bias, dtype)
        b_i = zeros
    b = jnp.concatenate([b_i, b_f, zeros, zeros])
    return LSTMParams(W, V, b)


def lstm_cell(params: LSTMParams, carry: LSTMState, gx: jax.Array) -> tuple[LSTMState, jax.Array]:
    """One LSTM step given the input projection gx = x_t @ W + b of shape (*batch, 4H)."""
    gates = gx + carry.h @ params.V
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = sigmoid(f) * carry.c + sigmoid(i) * tanh(g)
    h = sigmoid(o) * tanh(c)
    return LSTMState(h, c), h


def lstm_step(params: LSTMParams, carry: LSTMState, x: jax.Array) -> tuple[LSTMState, jax.Array]:
    """One LSTM step (equations in the module docstring).

    Scan-shaped: ``jax.lax.scan(functools.partial(lstm_step, params), carry, xs)`` unrolls it.

    Args:
      params: LSTMParams.
      carry: LSTMState with h and c of shape (*batch, H).
      x: input x_t of shape (*batch, D), the parameters' dtype.

    Returns:
      (LSTMState(h_t, C_t), h_t), h_t of shape (*batch, H).

    Raises:
      TypeError: wrong carry type or dtype.
      ValueError: x's last dimension is not D, or carry shapes don't match x's batch dims.
    """
    _checks.check_params_type("params", params, (LSTMParams,))
    _checks.check_step_inputs(params, carry, x, LSTMState, len(LSTM_GATES))
    with jax.named_scope("lstm_step"):
        return lstm_cell(params, carry, add_bias(x @ params.W, params.b))


def lstm_gate(params: LSTMParams, name: str) -> GateWeights:
    """The seed's per-gate weights (W_name, V_name, b_name) for gate ``name`` in i, f, g, o."""
    return gate_slice(params, LSTM_GATES, name)
