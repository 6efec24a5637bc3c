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
from rnncells._engine.unit import BlockCell, FusedCell, block_consts, block_dot, mm
from rnncells._gates import GateWeights, gate_slice
from rnncells._math import add_bias, sigmoid, tanh, tanh_sigmoid
from rnncells.cells._registry import standard_spec
from rnncells.initializers import chrono_bias, glorot_uniform, orthogonal

__all__ = [
    "LSTMParams",
    "LSTMState",
    "LSTM_BLOCKS",
    "LSTM_FUSED",
    "LSTM_GATES",
    "SPEC",
    "lstm_cell",
    "lstm_gate",
    "lstm_init",
    "lstm_step",
]

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


# ----------------------------------------------------------------------------- fused unit
# The LSTM's part of the fused layer (rnncells._engine: unit.FusedCell). The four gates are one
# (B, 4H) block of activations [i, f, g, o], made by one tanh (fewer kernels per step than
# four gates: bench.md, "Tuning of the fused layer"); it is what the forward saves, and
# the backward recomputes tanh(C_t) from it and C_{t-1}.


def _fused_activations(params, h, gx, cd):
    """The (B, 4H) block [i, f, g, o] of the step's gates."""
    a = gx + mm(h, params.V, cd, gx.dtype)
    scale, offset, _ = block_consts("ssts", h.shape[-1], a.dtype)
    return jnp.tanh(a * scale) * scale + offset


def _fused_update(acts, carry):
    h, c = carry
    hidden = h.shape[-1]
    i, f, g, o = (acts[:, k * hidden : (k + 1) * hidden] for k in range(4))
    c_new = f * c + i * g
    return o * jnp.tanh(c_new), c_new


def _fused_backward(VT, dcarry, acts, s, cd):
    """dh_{t-1}, dC_{t-1} and dA_t from the activation block, C_t recomputed."""
    dh, dc = dcarry
    c_prev = s["c_prev"]
    hidden = dh.shape[-1]
    i, f, g, o = (acts[:, k * hidden : (k + 1) * hidden] for k in range(4))
    th = jnp.tanh(f * c_prev + i * g)
    dc_t = dc + dh * o * (1 - th * th)
    _, _, plus = block_consts("ssts", hidden, acts.dtype)
    dact = jnp.concatenate([dc_t * g, dc_t * c_prev, dc_t * i, dh * th], axis=-1)
    dA = dact * (acts + plus) * (1 - acts)
    return (mm(dA, VT, cd, dh.dtype), dc_t * f), {"dA": dA}


LSTM_FUSED = FusedCell(
    state=LSTMState,
    activations=_fused_activations,
    update=_fused_update,
    save=lambda acts: {"acts": acts},
    saved=("acts",),
    load=lambda s: s["acts"],
    backward=_fused_backward,
    grads=lambda dW, db, hp, outs, mm_tn: LSTMParams(dW, mm_tn(hp, outs["dA"]), db),
    overwrite=(("acts", "dA"),),  # dA_t over the activations of step t: both (B, 4H)
    tie=1,  # dc_{t-1} = dC_t f_t
)


# ----------------------------------------------------------------------------- kernel blocks
# The fused unit restated on per-gate (B, H) blocks for the Pallas kernels
# (rnncells._engine: unit.BlockCell).


def _block_forward(V, consts, carry, gx, cd):
    """The LSTM's step: gates (i, f, g, o), C_t = f C_{t-1} + i g, h_t = o tanh(C_t)."""
    h, c = carry
    a = [gx[k] + block_dot(h, V[k], cd) for k in range(4)]
    i, f, o = tanh_sigmoid(a[0]), tanh_sigmoid(a[1]), tanh_sigmoid(a[3])
    g = jnp.tanh(a[2])
    c_new = f * c + i * g
    return (o * jnp.tanh(c_new), c_new), {"acts": [i, f, g, o]}


def _block_backward(V, consts, dcarry, saved, reads, cd):
    """dh_{t-1}, dC_{t-1} and dA_t from the activations, tanh(C_t) recomputed."""
    dh, dc = dcarry
    i, f, g, o = saved["acts"]
    c_prev = reads["c_prev"]
    th = jnp.tanh(f * c_prev + i * g)
    dc_t = dc + dh * o * (1 - th * th)
    dA = [
        dc_t * g * i * (1 - i),
        dc_t * c_prev * f * (1 - f),
        dc_t * i * (1 - g * g),
        dh * th * o * (1 - o),
    ]
    dh_prev = sum(block_dot(dA[k], V[k], cd, transpose_b=True) for k in range(4))
    return (dh_prev, dc_t * f), {"dA": dA}


LSTM_BLOCKS = BlockCell(
    gates=4,
    forward=_block_forward,
    backward=_block_backward,
    saved=(("acts", 4),),
    outs=(),
    reads=("c_prev",),
)

SPEC = standard_spec(
    "lstm",
    LSTMParams,
    LSTMState,
    lstm_step,
    lstm_init,
    LSTM_GATES,
    options=("forget_bias", "chrono_t_max"),
    cell=lstm_cell,
    fused=LSTM_FUSED,
    blocks=LSTM_BLOCKS,
)
