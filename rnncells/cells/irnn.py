"""The IRNN of Le, Jaitly & Hinton (2015): a ReLU RNN whose recurrent weights start as I.

    h_t = relu(W x_t + V h_{t-1} + b)

with V initialised to the identity, b to zero and W to small Gaussian values (standard
deviation 0.001, the paper's), so that at the start the hidden state is carried on
unchanged and gradients through time neither vanish nor explode. Same layout as the tanh
RNN (``rnncells.cells.rnn``): W (D, H), V (H, H), b (H,); the carry is ``RNNState(h)``.
Haiku's ``hk.VanillaRNN`` and PyTorch's ``nn.RNN(nonlinearity="relu")`` compute this
cell; ``rnncells.interop`` converts both exactly.

Registered as the "irnn" cell; ``unroll`` runs it as the fused layer with its hand-written
unit (``IRNN_FUSED``; ``fused=False``: the scan of this step).

References:
  Le, Jaitly & Hinton 2015, "A simple way to initialize recurrent networks of rectified
  linear units", https://arxiv.org/abs/1504.00941
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnncells import _checks
from rnncells._engine.unit import FusedCell, mm
from rnncells._gates import GateWeights, gate_slice
from rnncells._math import add_bias, relu
from rnncells.cells._registry import standard_spec
from rnncells.cells.rnn import RNNState

__all__ = [
    "IRNNParams",
    "IRNN_FUSED",
    "IRNN_GATES",
    "IRNN_INPUT_STD",
    "SPEC",
    "irnn_cell",
    "irnn_gate",
    "irnn_init",
    "irnn_step",
]


IRNN_GATES = ("h",)
IRNN_INPUT_STD = 0.001  # Le et al.'s standard deviation of W's initial values


class IRNNParams(NamedTuple):
    """IRNN parameters."""

    W: jax.Array  # (input_size, hidden_size)
    V: jax.Array  # (hidden_size, hidden_size)
    b: jax.Array  # (hidden_size,)

    @property
    def input_size(self) -> int:
        return self.W.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.V.shape[0]


def irnn_init(
    key: jax.Array, input_size: int, hidden_size: int, *, dtype=jnp.float32
) -> IRNNParams:
    """Initialises an IRNN: V = I, b = 0, W ~ N(0, 0.001²) (Le et al. 2015).

    Args:
      key: PRNG key (only W is random).
      input_size: D.
      hidden_size: H.
      dtype: floating dtype of all parameters.

    Returns:
      IRNNParams with W (D, H), V (H, H), b (H,).

    Raises:
      ValueError: a size that is not a positive integer, or so large that a weight
        array would exceed 2**40 bytes (1 TiB).

    Example:
      >>> params = irnn_init(jax.random.key(0), input_size=2, hidden_size=8)
      >>> bool((params.V == jnp.eye(8)).all())
      True
    """
    input_size = _checks.check_positive_int("input_size", input_size)
    hidden_size = _checks.check_positive_int("hidden_size", hidden_size)
    _checks.check_param_sizes(input_size, hidden_size, len(IRNN_GATES), dtype)
    W = IRNN_INPUT_STD * jax.random.normal(key, (input_size, hidden_size), dtype)
    return IRNNParams(W, jnp.eye(hidden_size, dtype=dtype), jnp.zeros((hidden_size,), dtype))


def irnn_step(params: IRNNParams, carry: RNNState, x: jax.Array) -> tuple[RNNState, jax.Array]:
    """One IRNN step: h_t = relu(W x_t + V h_{t-1} + b).

    Args:
      params: IRNNParams.
      carry: RNNState with h of shape (*batch, H).
      x: input x_t of shape (*batch, D), the parameters' dtype.

    Returns:
      (RNNState(h_t), h_t).

    Raises:
      TypeError: wrong params or carry type, or dtype.
      ValueError: params of wrong shapes, x's last dimension is not D, or carry shape
        doesn't match x's batch dims.
    """
    _checks.check_params_type("params", params, (IRNNParams,))
    _checks.check_step_inputs(params, carry, x, RNNState, len(IRNN_GATES))
    with jax.named_scope("irnn_step"):
        return irnn_cell(params, carry, add_bias(x @ params.W, params.b))


def irnn_cell(params: IRNNParams, carry: RNNState, gx: jax.Array) -> tuple[RNNState, jax.Array]:
    """One IRNN step given the input projection gx = x_t @ W + b of shape (*batch, H)."""
    h = relu(gx + carry.h @ params.V)
    return RNNState(h), h


def irnn_gate(params: IRNNParams, name: str) -> GateWeights:
    """The IRNN's single 'gate' h: (W, V, b)."""
    return gate_slice(params, IRNN_GATES, name)


# ----------------------------------------------------------------------------- fused unit
# The IRNN's part of the fused layer (rnncells._engine: unit.FusedCell), the tanh RNN's
# with relu: its only activation is h_t itself, which the layer keeps as the outputs, and
# relu'(a_t) is 1 where h_t > 0, else 0 (JAX's relu has derivative 0 at 0).


def _fused_backward(VT, dcarry, h_t, s, cd):
    (dh,) = dcarry
    dA = jnp.where(h_t > 0, dh, jnp.zeros_like(dh))
    return (mm(dA, VT, cd, dh.dtype),), {"dA": dA}


IRNN_FUSED = FusedCell(
    state=RNNState,
    activations=lambda params, h, gx, cd: relu(gx + mm(h, params.V, cd, gx.dtype)),
    update=lambda h_new, carry: (h_new,),
    save=lambda h_new: {},
    saved=(),
    load=lambda s: s["h_t"],
    backward=_fused_backward,
    grads=lambda dW, db, hp, outs, mm_tn: IRNNParams(dW, mm_tn(hp, outs["dA"]), db),
    reads=("h_t",),
)

SPEC = standard_spec(
    "irnn",
    IRNNParams,
    RNNState,
    irnn_step,
    irnn_init,
    IRNN_GATES,
    cell=irnn_cell,
    fused=IRNN_FUSED,
)
