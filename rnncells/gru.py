"""The GRU of Cho et al. (2014) in the form of Chung et al. (2014), and the reset-after form.

Default (the seed's form): reset applied *before* the recurrent matmul, and z_t near 1
means "take the new candidate":

    z_t  = σ(W_z x_t + V_z h_{t-1} + b_z)        update gate
    r_t  = σ(W_r x_t + V_r h_{t-1} + b_r)        reset gate
    h~_t = tanh(W_h x_t + V_h (r_t ⊙ h_{t-1}) + b_h)
    h_t  = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ h~_t

Reset-after (``gru_init(..., reset_after=True)``), the cuDNN / PyTorch / Flax / Keras
placement of the reset gate, with its extra recurrent bias b_hn:

    h~_t = tanh(W_h x_t + b_h + r_t ⊙ (V_h h_{t-1} + b_hn))

The two placements are different function families; neither converts into the other.
Both forms here use the seed's update convention (z writes). PyTorch, Flax, Equinox and
Keras use z' = 1 - z ("z keeps"); since 1 - σ(a) = σ(-a) the converters in
``rnncells.interop`` map them exactly by negating the update gate's W, V and b.

Weights are fused over gates in the order (r, z, h), PyTorch's (r, z, n) row order; W
is (input_size, 3H).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnncells import _checks
from rnncells._gates import GateWeights, add_bias, gate_slice
from rnncells._math import sigmoid, tanh
from rnncells.initializers import chrono_bias, glorot_uniform, orthogonal

GRU_GATES = ("r", "z", "h")


class GRUParams(NamedTuple):
    """Fused reset-before GRU parameters (the seed's form); gate blocks in order (r, z, h)."""

    W: jax.Array  # (input_size, 3 * hidden_size)
    V: jax.Array  # (hidden_size, 3 * hidden_size)
    b: jax.Array  # (3 * hidden_size,)

    @property
    def input_size(self) -> int:
        return self.W.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.V.shape[0]


class GRUResetAfterParams(NamedTuple):
    """Fused reset-after GRU parameters; gate blocks in order (r, z, h), plus b_hn."""

    W: jax.Array  # (input_size, 3 * hidden_size)
    V: jax.Array  # (hidden_size, 3 * hidden_size)
    b: jax.Array  # (3 * hidden_size,)
    b_hn: jax.Array  # (hidden_size,), added to V_h h_{t-1} inside the reset product

    @property
    def input_size(self) -> int:
        return self.W.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.V.shape[0]


class GRUState(NamedTuple):
    """GRU carry: the hidden state h."""

    h: jax.Array  # (*batch, hidden_size)


def gru_init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    reset_after: bool = False,
    chrono_t_max: float | None = None,
    dtype=jnp.float32,
) -> GRUParams | GRUResetAfterParams:
    """Initialises GRU parameters.

    W is Glorot-uniform per gate, V orthogonal per gate, biases zero. With
    ``chrono_t_max`` the update-gate bias follows chrono initialisation (Tallec & Ollivier
    2018) in the z-writes convention: b_z = -log(U[1, t_max - 1]), so that 1 - z_t, the
    gate that keeps the old state, has characteristic times spread over [1, t_max].

    Args:
      key: PRNG key.
      input_size: D.
      hidden_size: H.
      reset_after: False for the seed's reset-before form (GRUParams), True for the
        cuDNN/PyTorch reset-after form (GRUResetAfterParams, with b_hn = 0).
      chrono_t_max: if given, the longest expected time dependency for chrono init.
      dtype: floating dtype of all parameters.

    Returns:
      GRUParams or GRUResetAfterParams with W (D, 3H), V (H, 3H), b (3H,).

    Raises:
      ValueError: if a size is not a positive integer, so large that a weight array would
        exceed 2**40 bytes (1 TiB), or chrono_t_max <= 2.
      TypeError: if reset_after is not a bool or chrono_t_max not a real number.

    References:
      Cho et al. 2014, https://arxiv.org/abs/1406.1078
      Chung et al. 2014, https://arxiv.org/abs/1412.3555
      Tallec & Ollivier 2018, https://arxiv.org/abs/1804.11188
    """
    input_size = _checks.check_positive_int("input_size", input_size)
    hidden_size = _checks.check_positive_int("hidden_size", hidden_size)
    _checks.check_param_sizes(input_size, hidden_size, len(GRU_GATES), dtype)
    reset_after = _checks.check_bool("reset_after", reset_after)
    if chrono_t_max is not None:
        chrono_t_max = _checks.check_number("chrono_t_max", chrono_t_max)
    k_w, k_v, k_b = jax.random.split(key, 3)
    W = glorot_uniform(k_w, input_size, hidden_size, 3, dtype)
    V = orthogonal(k_v, hidden_size, 3, dtype)
    zeros = jnp.zeros((hidden_size,), dtype)
    b_z = -chrono_bias(k_b, hidden_size, chrono_t_max, dtype) if chrono_t_max is not None else zeros
    b = jnp.concatenate([zeros, b_z, zeros])
    if reset_after:
        return GRUResetAfterParams(W, V, b, zeros)
    return GRUParams(W, V, b)


def gru_cell(
    params: GRUParams | GRUResetAfterParams, carry: GRUState, gx: jax.Array
) -> tuple[GRUState, jax.Array]:
    """One GRU step given the input projection gx = x_t @ W + b of shape (*batch, 3H)."""
    h_prev = carry.h
    hidden = params.V.shape[0]
    gx_rz, gx_h = gx[..., : 2 * hidden], gx[..., 2 * hidden :]
    if isinstance(params, GRUResetAfterParams):
        gh = h_prev @ params.V
        r, z = jnp.split(sigmoid(gx_rz + gh[..., : 2 * hidden]), 2, axis=-1)
        candidate = tanh(gx_h + r * add_bias(gh[..., 2 * hidden :], params.b_hn))
    else:
        r, z = jnp.split(sigmoid(gx_rz + h_prev @ params.V[:, : 2 * hidden]), 2, axis=-1)
        candidate = tanh(gx_h + (r * h_prev) @ params.V[:, 2 * hidden :])
    h = h_prev + z * (candidate - h_prev)  # = (1 - z) h_{t-1} + z h~_t
    return GRUState(h), h


def gru_step(
    params: GRUParams | GRUResetAfterParams, carry: GRUState, x: jax.Array
) -> tuple[GRUState, jax.Array]:
    """One GRU step, reset-before or reset-after as ``params``' type says.

    Args:
      params: GRUParams (seed's reset-before form) or GRUResetAfterParams.
      carry: GRUState with h of shape (*batch, H).
      x: input x_t of shape (*batch, D), the parameters' dtype.

    Returns:
      (GRUState(h_t), h_t).

    Raises:
      TypeError: wrong params or carry type, or dtype.
      ValueError: x's last dimension is not D, or carry shape doesn't match x's batch dims.
    """
    _checks.check_params_type("params", params, (GRUParams, GRUResetAfterParams))
    _checks.check_step_inputs(params, carry, x, GRUState, len(GRU_GATES))
    with jax.named_scope("gru_step"):
        return gru_cell(params, carry, add_bias(x @ params.W, params.b))


def gru_gate(params: GRUParams | GRUResetAfterParams, name: str) -> GateWeights:
    """The seed's per-gate weights (W_name, V_name, b_name) for gate ``name`` in r, z, h.

    For reset-after params the candidate's recurrent bias b_hn is ``params.b_hn``.
    """
    return gate_slice(params, GRU_GATES, name)
