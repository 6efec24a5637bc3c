"""A layer-normalised GRU after Ba, Kiros & Hinton (2016), in the seed's reset-before form.

Layer normalisation, LN(z; γ) = γ ⊙ (z - μ) / sqrt(σ² + ε) with μ and σ² the mean and
variance of z's entries, is applied separately to the input and to the recurrent
pre-activations, each with its own gain, as the paper does for the LSTM (its eq. 20).
One step, x_t input, h_{t-1} carried:

    (u_r, u_z, u_h) = LN(W x_t; γ_x)                           3H, one LN
    (r_t, z_t) = σ((u_r, u_z) + LN(V_{rz} h_{t-1}; γ_{h,rz}) + (b_r, b_z))   2H, one LN
    h~_t = tanh(u_h + LN(V_h (r_t ⊙ h_{t-1}); γ_{h,h}) + b_h)              H, one LN
    h_t  = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ h~_t

Placement: the paper gives no GRU equations, so this follows its LSTM: one LN over the
whole input block W x_t (all three gates), and on the recurrent side one LN over the
(r, z) block V_{rz} h_{t-1} and one over the candidate's V_h (r_t ⊙ h_{t-1}), which the
reset-before form can only compute once r_t is known, so it is a vector of its own. No
LN on h_t: it is both the output and the state, a convex mix of h_{t-1} and h~_t. The
LN biases enter only through their sum with b, which holds them. ε = 1e-5
(``rnncells._math.LN_EPSILON``). z_t near 1 takes the candidate (the seed's convention).

Weights are fused over the gates in the GRU's order (r, z, h): W (D, 3H), V (H, 3H),
b, γ_x, γ_h (3H,) (γ_h's first 2H entries are γ_{h,rz}, its last H γ_{h,h}). The carry
is ``GRUState(h)``.

Registered as the "ln_gru" cell; ``unroll`` runs it as the fused layer with its
hand-written unit (``LN_GRU_FUSED``: LN(W x_t) and its backward for all steps at once
outside the loops when training at unroll 1 without remat, the CPU default; dV after
the loop; ``fused=False``: the scan of this step). Its body
``ln_gru_cell`` is what a generic fused layer would run.

References:
  Ba, Kiros & Hinton 2016, "Layer normalization", https://arxiv.org/abs/1607.06450
  Chung, Gulcehre, Cho & Bengio 2014, https://arxiv.org/abs/1412.3555
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnncells import _checks
from rnncells._engine.unit import FusedCell, mm, normalise, normalise_vjp
from rnncells._gates import GateWeights, gate_slice
from rnncells._math import add_bias, layer_norm, row, sigmoid, tanh, tanh_sigmoid
from rnncells.cells._registry import standard_spec
from rnncells.cells.gru import GRUState, gru_init

__all__ = [
    "LNGRUParams",
    "LN_GRU_FUSED",
    "LN_GRU_GATES",
    "SPEC",
    "ln_gru_cell",
    "ln_gru_gate",
    "ln_gru_init",
    "ln_gru_step",
]

LN_GRU_GATES = ("r", "z", "h")
_VECTORS = {"b": 3, "gamma_x": 3, "gamma_h": 3}


class LNGRUParams(NamedTuple):
    """Layer-normalised GRU parameters; gate blocks in the order (r, z, h)."""

    W: jax.Array  # (input_size, 3 * hidden_size)
    V: jax.Array  # (hidden_size, 3 * hidden_size)
    b: jax.Array  # (3 * hidden_size,)
    gamma_x: jax.Array  # (3 * hidden_size,), gain of LN(W x_t)
    gamma_h: jax.Array  # (3 * hidden_size,), gains of LN(V_rz h) (2H) and LN(V_h (r h)) (H)

    @property
    def input_size(self) -> int:
        return self.W.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.V.shape[0]


def ln_gru_init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    chrono_t_max: float | None = None,
    dtype=jnp.float32,
) -> LNGRUParams:
    """Initialises layer-normalised GRU parameters.

    W, V and b are exactly ``gru_init``'s (reset-before) for the same arguments
    (Glorot-uniform W, orthogonal V, zero b, or chrono initialisation of b_z); the LN
    gains are 1.

    Args:
      key: PRNG key.
      input_size: D.
      hidden_size: H.
      chrono_t_max: if given, chrono initialisation of the update-gate bias.
      dtype: floating dtype of all parameters.

    Returns:
      LNGRUParams with W (D, 3H), V (H, 3H), b, gamma_x, gamma_h (3H,).

    Raises:
      ValueError: a size that is not a positive integer or too large, or
        chrono_t_max <= 2.
      TypeError: chrono_t_max not a real number.

    Example:
      >>> params = ln_gru_init(jax.random.key(0), input_size=2, hidden_size=8)
      >>> params.W.shape, params.gamma_h.shape
      ((2, 24), (24,))
    """
    base = gru_init(key, input_size, hidden_size, chrono_t_max=chrono_t_max, dtype=dtype)
    ones = jnp.ones((3 * hidden_size,), dtype)
    return LNGRUParams(base.W, base.V, base.b, ones, ones)


def ln_gru_step(params: LNGRUParams, carry: GRUState, x: jax.Array) -> tuple[GRUState, jax.Array]:
    """One layer-normalised GRU step (equations in the module docstring).

    Args:
      params: LNGRUParams.
      carry: GRUState with h of shape (*batch, H).
      x: input x_t of shape (*batch, D), the parameters' dtype.

    Returns:
      (GRUState(h_t), h_t).

    Raises:
      TypeError: wrong params or carry type, or dtype.
      ValueError: params of wrong shapes, x's last dimension is not D, or carry shape
        doesn't match x's batch dims.
    """
    _checks.check_params_type("params", params, (LNGRUParams,))
    _checks.check_step_inputs(params, carry, x, GRUState, 3, vectors=_VECTORS)
    with jax.named_scope("ln_gru_step"):
        return _from_xw(params, carry, x @ params.W)


def _from_xw(params: LNGRUParams, carry: GRUState, xw: jax.Array) -> tuple[GRUState, jax.Array]:
    """The step from x_t @ W (before its LN and the bias)."""
    h_prev = carry.h
    hidden = params.V.shape[0]
    rz = 2 * hidden
    u = add_bias(layer_norm(xw, params.gamma_x), params.b)
    v_rz = layer_norm(h_prev @ params.V[:, :rz], params.gamma_h[:rz])
    r, z = jnp.split(sigmoid(u[..., :rz] + v_rz), 2, axis=-1)
    v_h = layer_norm((r * h_prev) @ params.V[:, rz:], params.gamma_h[rz:])
    candidate = tanh(u[..., rz:] + v_h)
    h = h_prev + z * (candidate - h_prev)  # = (1 - z) h_{t-1} + z h~_t
    return GRUState(h), h


def ln_gru_cell(params: LNGRUParams, carry: GRUState, gx: jax.Array) -> tuple[GRUState, jax.Array]:
    """One step given gx = x_t @ W + b (*batch, 3H), the body the generic fused layer runs.

    The LN of x_t W comes before the bias here, so the body takes the bias off again:
    LN(gx - b) equals the step's LN(x_t W) up to rounding.
    """
    return _from_xw(params, carry, gx - row(params.b, gx.ndim))


# ----------------------------------------------------------------------------- fused unit
# The LN-GRU's part of the fused layer (rnncells._engine: unit.FusedCell). LN(x_t W; γ_x)
# + b is the unit's ``inputs``, formed and differentiated for all steps outside the loops.
# The forward saves the gates [r, z, h~], the two normalised recurrent vectors
# [V_rz h_{t-1}, V_h (r_t h_{t-1})] and their 1/σ; the backward emits the gradients of
# those vectors (for dV after the loop) and r_t (for dV_h = sum_t (r_t h_{t-1})^T ...).


def _fused_inputs(params, xw):
    """LN(x_t W; γ_x) + b, the gates' input term (any leading shape)."""
    return add_bias(layer_norm(xw, params.gamma_x), params.b)


def _fused_activations(params, h, gx, cd):
    rz_width = 2 * h.shape[-1]
    V, gamma_h = params.V, row(params.gamma_h, 2)
    hhat, rstd_rz = normalise(mm(h, V[:, :rz_width], cd, gx.dtype))
    rz = tanh_sigmoid(gx[:, :rz_width] + hhat * gamma_h[:, :rz_width])
    r = rz[:, : h.shape[-1]]
    qhat, rstd_q = normalise(mm(r * h, V[:, rz_width:], cd, gx.dtype))
    n = jnp.tanh(gx[:, rz_width:] + qhat * gamma_h[:, rz_width:])
    return {
        "acts": jnp.concatenate([rz, n], axis=-1),
        "hat": jnp.concatenate([hhat, qhat], axis=-1),
        "rstd": jnp.concatenate([rstd_rz, rstd_q], axis=-1),
    }


def _fused_update(acts, carry):
    (h,) = carry
    hidden = h.shape[-1]
    z, n = acts["acts"][:, hidden : 2 * hidden], acts["acts"][:, 2 * hidden :]
    return (h + z * (n - h),)  # = (1 - z) h_{t-1} + z h~_t


def _fused_backward(VT, dcarry, acts, s, cd):
    """dh_{t-1} and dA_t = [da_r, da_z, da_h], the gradient of the input term."""
    (dh,) = dcarry
    h_prev = s["h_prev"]
    hidden = dh.shape[-1]
    rz_width = 2 * hidden
    block, hat, rstd = acts["acts"], acts["hat"], acts["rstd"]
    r, z, n = block[:, :hidden], block[:, hidden:rz_width], block[:, rz_width:]
    hhat, qhat = hat[:, :rz_width], hat[:, rz_width:]
    gamma_h = s["gamma_h"]
    da_n = dh * z * (1 - n * n)
    dq = normalise_vjp(da_n * gamma_h[:, rz_width:], qhat, rstd[:, 1:])
    drh = mm(dq, VT[rz_width:], cd, dh.dtype)
    da_rz = jnp.concatenate([drh * h_prev, dh * (n - h_prev)], axis=-1)
    da_rz = da_rz * block[:, :rz_width] * (1 - block[:, :rz_width])
    dv_rz = normalise_vjp(da_rz * gamma_h[:, :rz_width], hhat, rstd[:, :1])
    dh_prev = dh * (1 - z) + drh * r + mm(dv_rz, VT[:rz_width], cd, dh.dtype)
    dA = jnp.concatenate([da_rz, da_n], axis=-1)
    outs = {"dA": dA, "dv": jnp.concatenate([dv_rz, dq], axis=-1), "dgamma_h": dA * hat, "r": r}
    return (dh_prev,), outs


def _fused_grads(dW, db, hp, outs, mm_tn):
    """dV after the loop; b and γ_x come from the input term's product (zero here)."""
    dv, r = outs["dv"], outs["r"]
    rz_width = 2 * hp.shape[-1]
    dV = jnp.concatenate([mm_tn(hp, dv[:, :rz_width]), mm_tn(r * hp, dv[:, rz_width:])], axis=-1)
    return LNGRUParams(dW, dV, db, jnp.zeros_like(db), jnp.sum(outs["dgamma_h"], axis=0))


LN_GRU_FUSED = FusedCell(
    state=GRUState,
    activations=_fused_activations,
    update=_fused_update,
    save=lambda acts: acts,
    saved=("acts", "hat", "rstd"),
    load=lambda s: {k: s[k] for k in ("acts", "hat", "rstd")},
    backward=_fused_backward,
    grads=_fused_grads,
    reads=("h_prev",),
    consts=lambda params: {"gamma_h": row(params.gamma_h, 2)},
    inputs=_fused_inputs,
)


def ln_gru_gate(params: LNGRUParams, name: str) -> GateWeights:
    """The per-gate weights (W_name, V_name, b_name) for gate ``name`` in r, z, h.

    The LNs mix the gates (LN(W x_t) normalises all three blocks together, LN(V_rz h) the
    r and z blocks), so a gate's pre-activation is not x W_name + h V_name + b_name here.
    """
    return gate_slice(params, LN_GRU_GATES, name)


SPEC = standard_spec(
    "ln_gru",
    LNGRUParams,
    GRUState,
    ln_gru_step,
    ln_gru_init,
    LN_GRU_GATES,
    vectors=_VECTORS,
    options=("chrono_t_max",),
    cell=ln_gru_cell,
    fused=LN_GRU_FUSED,
)
