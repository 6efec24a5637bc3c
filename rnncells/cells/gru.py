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

from typing import Literal, NamedTuple, overload

import jax
import jax.numpy as jnp

from rnncells import _checks
from rnncells._engine.unit import BlockCell, FusedCell, block_dot, mm, split
from rnncells._gates import GateWeights, gate_slice
from rnncells._math import add_bias, row, sigmoid, tanh, tanh_sigmoid
from rnncells.cells._registry import standard_spec
from rnncells.initializers import chrono_bias, glorot_uniform, orthogonal

__all__ = [
    "GRUParams",
    "GRUResetAfterParams",
    "GRUState",
    "GRU_BLOCKS",
    "GRU_FUSED",
    "GRU_GATES",
    "GRU_RESET_AFTER_BLOCKS",
    "GRU_RESET_AFTER_FUSED",
    "RESET_AFTER_SPEC",
    "SPEC",
    "gru_cell",
    "gru_gate",
    "gru_init",
    "gru_step",
]

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


# The params type follows reset_after, so a checker knows which fields the result has.
@overload
def gru_init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    reset_after: Literal[False] = ...,
    chrono_t_max: float | None = ...,
    dtype=...,
) -> GRUParams: ...


@overload
def gru_init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    reset_after: Literal[True],
    chrono_t_max: float | None = ...,
    dtype=...,
) -> GRUResetAfterParams: ...


@overload
def gru_init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    reset_after: bool = ...,
    chrono_t_max: float | None = ...,
    dtype=...,
) -> GRUParams | GRUResetAfterParams: ...


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


# ----------------------------------------------------------------------------- fused units
# The GRUs' parts of the fused layer (rnncells._engine: unit.FusedCell). Both save the gate
# activations [r, z, h~] as one (B, 3H) array.


def _fused_update(acts, carry):
    (h,) = carry
    z, n = acts[1], acts[2]
    return (h + z * (n - h),)  # = (1 - z) h_{t-1} + z h~_t


def _fused_activations(params, h, gx, cd):
    """Reset-before (the seed's form): (r, z, h~); r multiplies h_{t-1} before V_h."""
    hidden = h.shape[-1]
    V = params.V
    rz = tanh_sigmoid(gx[:, : 2 * hidden] + mm(h, V[:, : 2 * hidden], cd, gx.dtype))
    r, z = rz[:, :hidden], rz[:, hidden:]
    n = jnp.tanh(gx[:, 2 * hidden :] + mm(r * h, V[:, 2 * hidden :], cd, gx.dtype))
    return r, z, n


def _fused_backward(VT, dcarry, acts, s, cd):
    """dh_{t-1} and dA_t = [da_r, da_z, da_h]; r_t is kept for dV_h = sum_t (r_t h_{t-1})^T da_h."""
    (dh,) = dcarry
    h_prev = s["h_prev"]
    hidden = dh.shape[-1]
    r, z, n = acts
    da_n = dh * z * (1 - n * n)
    drh = mm(da_n, VT[2 * hidden :], cd, dh.dtype)
    da_r = drh * h_prev * r * (1 - r)
    da_z = dh * (n - h_prev) * z * (1 - z)
    da_rz = jnp.concatenate([da_r, da_z], axis=-1)
    dh_prev = dh * (1 - z) + drh * r + mm(da_rz, VT[: 2 * hidden], cd, dh.dtype)
    return (dh_prev,), {"dA": jnp.concatenate([da_rz, da_n], axis=-1), "r": r}


def _fused_grads(dW, db, hp, outs, mm_tn):
    dA, r = outs["dA"], outs["r"]
    hidden = hp.shape[-1]
    dV = jnp.concatenate(
        [mm_tn(hp, dA[:, : 2 * hidden]), mm_tn(r * hp, dA[:, 2 * hidden :])], axis=-1
    )
    return GRUParams(dW, dV, db)


GRU_FUSED = FusedCell(
    state=GRUState,
    activations=_fused_activations,
    update=_fused_update,
    save=lambda acts: {"acts": jnp.concatenate(acts, -1)},
    saved=("acts",),
    load=lambda s: split(s["acts"], (s["acts"].shape[-1] // 3,) * 3),
    backward=_fused_backward,
    grads=_fused_grads,
    reads=("h_prev",),
)


def _fused_activations_ra(params, h, gx, cd):
    """Reset-after: (r, z, h~, V_h h_{t-1} + b_hn), the last kept for the backward."""
    hidden = h.shape[-1]
    gh = mm(h, params.V, cd, gx.dtype)
    rz = tanh_sigmoid(gx[:, : 2 * hidden] + gh[:, : 2 * hidden])
    r, z = rz[:, :hidden], rz[:, hidden:]
    ghn = gh[:, 2 * hidden :] + row(params.b_hn, 2)
    n = jnp.tanh(gx[:, 2 * hidden :] + r * ghn)
    return r, z, n, ghn


def _fused_backward_ra(VT, dcarry, acts, s, cd):
    """dh_{t-1}, dA_t = [da_r, da_z, da_h] and dghn_t = da_h r_t (the gradient of b_hn)."""
    (dh,) = dcarry
    r, z, n, ghn = acts
    da_n = dh * z * (1 - n * n)
    da_r = da_n * ghn * r * (1 - r)
    da_z = dh * (n - s["h_prev"]) * z * (1 - z)
    dghn = da_n * r
    dgh = jnp.concatenate([da_r, da_z, dghn], axis=-1)
    dh_prev = dh * (1 - z) + mm(dgh, VT, cd, dh.dtype)
    return (dh_prev,), {"dA": jnp.concatenate([da_r, da_z, da_n], axis=-1), "dghn": dghn}


def _fused_grads_ra(dW, db, hp, outs, mm_tn):
    dA, dghn = outs["dA"], outs["dghn"]
    hidden = hp.shape[-1]
    dgh = jnp.concatenate([dA[:, : 2 * hidden], dghn], axis=-1)
    return GRUResetAfterParams(dW, mm_tn(hp, dgh), db, jnp.sum(dghn, axis=0))


GRU_RESET_AFTER_FUSED = FusedCell(
    state=GRUState,
    activations=_fused_activations_ra,
    update=_fused_update,
    save=lambda acts: {"acts": jnp.concatenate(acts[:3], -1), "ghn": acts[3]},
    saved=("acts", "ghn"),
    load=lambda s: split(s["acts"], (s["ghn"].shape[-1],) * 3) + (s["ghn"],),
    backward=_fused_backward_ra,
    grads=_fused_grads_ra,
    reads=("h_prev",),
    overwrite=(("acts", "dA"), ("ghn", "dghn")),  # [da_r, da_z, da_h] and dghn_t, as wide
    tie=0,  # dh_{t-1} = dh_t (1 - z_t) + ...
)


# ----------------------------------------------------------------------------- kernel blocks
# The fused units restated on per-gate (B, H) blocks for the Pallas kernels
# (rnncells._engine: unit.BlockCell).


def _block_forward(V, consts, carry, gx, cd):
    """Reset-before (the seed's form): r multiplies h_{t-1} before V_h."""
    (h,) = carry
    r = tanh_sigmoid(gx[0] + block_dot(h, V[0], cd))
    z = tanh_sigmoid(gx[1] + block_dot(h, V[1], cd))
    n = jnp.tanh(gx[2] + block_dot(r * h, V[2], cd))
    return (h + z * (n - h),), {"acts": [r, z, n]}


def _block_backward(V, consts, dcarry, saved, reads, cd):
    """dh_{t-1}, dA_t = [da_r, da_z, da_h], and r_t for dV_h = sum_t (r_t h_{t-1})^T da_h."""
    (dh,) = dcarry
    r, z, n = saved["acts"]
    h_prev = reads["h_prev"]
    da_n = dh * z * (1 - n * n)
    drh = block_dot(da_n, V[2], cd, transpose_b=True)
    da_r = drh * h_prev * r * (1 - r)
    da_z = dh * (n - h_prev) * z * (1 - z)
    dh_prev = (
        dh * (1 - z)
        + drh * r
        + block_dot(da_r, V[0], cd, transpose_b=True)
        + block_dot(da_z, V[1], cd, transpose_b=True)
    )
    return (dh_prev,), {"dA": [da_r, da_z, da_n], "r": [r]}


GRU_BLOCKS = BlockCell(
    gates=3,
    forward=_block_forward,
    backward=_block_backward,
    saved=(("acts", 3),),
    outs=(("r", 1),),
    reads=("h_prev",),
)


def _block_forward_ra(V, consts, carry, gx, cd):
    """Reset-after: h~ = tanh(x W_h + b_h + r (h V_h + b_hn)); V_h h + b_hn is saved."""
    (h,) = carry
    (b_hn,) = consts
    r = tanh_sigmoid(gx[0] + block_dot(h, V[0], cd))
    z = tanh_sigmoid(gx[1] + block_dot(h, V[1], cd))
    ghn = block_dot(h, V[2], cd) + b_hn
    n = jnp.tanh(gx[2] + r * ghn)
    return (h + z * (n - h),), {"acts": [r, z, n], "ghn": [ghn]}


def _block_backward_ra(V, consts, dcarry, saved, reads, cd):
    """dh_{t-1}, dA_t = [da_r, da_z, da_h] and dghn_t = da_h r_t (the gradient of b_hn)."""
    (dh,) = dcarry
    r, z, n = saved["acts"]
    (ghn,) = saved["ghn"]
    da_n = dh * z * (1 - n * n)
    da_r = da_n * ghn * r * (1 - r)
    da_z = dh * (n - reads["h_prev"]) * z * (1 - z)
    dghn = da_n * r
    dh_prev = dh * (1 - z) + sum(
        block_dot(d, V[k], cd, transpose_b=True) for k, d in enumerate((da_r, da_z, dghn))
    )
    return (dh_prev,), {"dA": [da_r, da_z, da_n], "dghn": [dghn]}


GRU_RESET_AFTER_BLOCKS = BlockCell(
    gates=3,
    forward=_block_forward_ra,
    backward=_block_backward_ra,
    saved=(("acts", 3), ("ghn", 1)),
    outs=(("dghn", 1),),
    reads=("h_prev",),
    consts=lambda params: (params.b_hn.reshape((1, -1)),),
)


def _gru_reset_after_init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    chrono_t_max: float | None = None,
    dtype=jnp.float32,
) -> GRUResetAfterParams:
    """``gru_init(..., reset_after=True)``: the init of the "gru_reset_after" cell."""
    return gru_init(
        key, input_size, hidden_size, reset_after=True, chrono_t_max=chrono_t_max, dtype=dtype
    )


SPEC = standard_spec(
    "gru",
    GRUParams,
    GRUState,
    gru_step,
    gru_init,
    GRU_GATES,
    options=("reset_after", "chrono_t_max"),
    cell=gru_cell,
    fused=GRU_FUSED,
    blocks=GRU_BLOCKS,
)

RESET_AFTER_SPEC = standard_spec(
    "gru_reset_after",
    GRUResetAfterParams,
    GRUState,
    gru_step,
    _gru_reset_after_init,
    GRU_GATES,
    vectors={"b": 3, "b_hn": 1},  # the reset-after GRU's b (3H,) and b_hn (H,)
    options=("chrono_t_max",),
    cell=gru_cell,
    fused=GRU_RESET_AFTER_FUSED,
    blocks=GRU_RESET_AFTER_BLOCKS,
)
