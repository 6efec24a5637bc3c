"""The plain tanh RNN (Elman 1990), the baseline the LSTM was invented to beat.

h_t = tanh(W x_t + V h_{t-1} + b)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnncells import _checks
from rnncells._engine.unit import FusedCell, mm
from rnncells._gates import GateWeights, gate_slice
from rnncells._math import add_bias, tanh
from rnncells.cells._registry import standard_spec
from rnncells.initializers import glorot_uniform, orthogonal

__all__ = [
    "RNNParams",
    "RNNState",
    "RNN_FUSED",
    "RNN_GATES",
    "SPEC",
    "rnn_cell",
    "rnn_gate",
    "rnn_init",
    "rnn_step",
]

RNN_GATES = ("h",)


class RNNParams(NamedTuple):
    """Plain RNN parameters."""

    W: jax.Array  # (input_size, hidden_size)
    V: jax.Array  # (hidden_size, hidden_size)
    b: jax.Array  # (hidden_size,)

    @property
    def input_size(self) -> int:
        return self.W.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.V.shape[0]


class RNNState(NamedTuple):
    """RNN carry: the hidden state h."""

    h: jax.Array  # (*batch, hidden_size)


def rnn_init(key: jax.Array, input_size: int, hidden_size: int, *, dtype=jnp.float32) -> RNNParams:
    """Initialises a tanh RNN: W Glorot-uniform, V orthogonal, b zero.

    Returns:
      RNNParams with W (D, H), V (H, H), b (H,).

    Raises:
      ValueError: if a size is not a positive integer, or so large that a weight array
        would exceed 2**40 bytes (1 TiB).
    """
    input_size = _checks.check_positive_int("input_size", input_size)
    hidden_size = _checks.check_positive_int("hidden_size", hidden_size)
    _checks.check_param_sizes(input_size, hidden_size, len(RNN_GATES), dtype)
    k_w, k_v = jax.random.split(key)
    W = glorot_uniform(k_w, input_size, hidden_size, 1, dtype)
    V = orthogonal(k_v, hidden_size, 1, dtype)
    return RNNParams(W, V, jnp.zeros((hidden_size,), dtype))


def rnn_cell(params: RNNParams, carry: RNNState, gx: jax.Array) -> tuple[RNNState, jax.Array]:
    """One RNN step given the input projection gx = x_t @ W + b of shape (*batch, H)."""
    h = tanh(gx + carry.h @ params.V)
    return RNNState(h), h


def rnn_step(params: RNNParams, carry: RNNState, x: jax.Array) -> tuple[RNNState, jax.Array]:
    """One tanh RNN step: h_t = tanh(W x_t + V h_{t-1} + b).

    Args:
      params: RNNParams.
      carry: RNNState with h of shape (*batch, H).
      x: input x_t of shape (*batch, D), the parameters' dtype.

    Returns:
      (RNNState(h_t), h_t).
    """
    _checks.check_params_type("params", params, (RNNParams,))
    _checks.check_step_inputs(params, carry, x, RNNState, len(RNN_GATES))
    with jax.named_scope("rnn_step"):
        return rnn_cell(params, carry, add_bias(x @ params.W, params.b))


def rnn_gate(params: RNNParams, name: str) -> GateWeights:
    """The RNN's single 'gate' h: (W, V, b)."""
    return gate_slice(params, RNN_GATES, name)


# ----------------------------------------------------------------------------- fused unit
# The RNN's part of the fused layer (rnncells._engine: unit.FusedCell). Its only activation is
# h_t itself, which the layer keeps as the outputs: nothing else is saved, and nothing is
# recomputed under remat.


def _fused_backward(VT, dcarry, h_t, s, cd):
    (dh,) = dcarry
    dA = dh * (1 - h_t * h_t)
    return (mm(dA, VT, cd, dh.dtype),), {"dA": dA}


RNN_FUSED = FusedCell(
    state=RNNState,
    activations=lambda params, h, gx, cd: jnp.tanh(gx + mm(h, params.V, cd, gx.dtype)),
    update=lambda h_new, carry: (h_new,),
    save=lambda h_new: {},
    saved=(),
    load=lambda s: s["h_t"],
    backward=_fused_backward,
    grads=lambda dW, db, hp, outs, mm_tn: RNNParams(dW, mm_tn(hp, outs["dA"]), db),
    reads=("h_t",),
)

SPEC = standard_spec(
    "rnn", RNNParams, RNNState, rnn_step, rnn_init, RNN_GATES, cell=rnn_cell, fused=RNN_FUSED
)
