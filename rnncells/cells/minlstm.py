"""The minLSTM of Feng et al. (2024): an LSTM whose gates see x_t only, parallel in time.

One step, x_t input, h_{t-1} carried, in the paper's log-space version (its Sec. 3 and
the log-space code of its appendix): the gates are normalised so that the state's scale
does not depend on the sequence length, and the candidate is kept positive by g
(``rnncells.cells.mingru.g``):

    f_t  = σ(W_f x_t + b_f)                    forget gate (no h_{t-1})
    i_t  = σ(W_i x_t + b_i)                    input gate (no h_{t-1})
    f'_t = f_t / (f_t + i_t),  i'_t = i_t / (f_t + i_t)
    h~_t = g(W_h x_t + b_h)                    candidate, g(v) = v + 1/2 if v >= 0, else σ(v)
    h_t  = f'_t ⊙ h_{t-1} + i'_t ⊙ h~_t

The step takes f'_t = σ(-d_t), i'_t = σ(d_t) (d_t below): no 0/0 where both σ underflow.

There is no cell state and no output gate: the carry is h alone
(``MinLSTMState(h)``). The recurrence is linear, h_t = a_t ⊙ h_{t-1} + b_t with
a_t = f'_t and b_t = i'_t ⊙ h~_t > 0, and ``unroll`` computes it with one
``jax.lax.associative_scan`` in log space (``rnncells.cells.mingru.log_space_unroll``), with
the paper's log gates

    d_t = softplus(-k^f_t) - softplus(-k^i_t)      (= log i_t - log f_t)
    log f'_t = -softplus(d_t),   log i'_t = -softplus(-d_t),
    log b_t = log i'_t + log g(k^h_t)

(k^f, k^i, k^h the pre-activations). ``unroll(..., fused=False)`` runs the sequential
step above through ``jax.lax.scan``; it is the reference the parallel form is tested
against. The carry convention (h_0 used as it is, zero carry h_0 = 0, padding as the
identity map) is the minGRU's: see ``rnncells.cells.mingru``.

Weights are fused over the three blocks in the order (f, i, h): W (D, 3H), b (3H,); there
is no recurrent weight V.

References:
  Feng, Tung, Ahmed, Bengio & Hajimirsadeghi 2024, "Were RNNs all we needed?",
  https://arxiv.org/abs/2410.01201
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnncells import _checks
from rnncells._gates import GateWeights
from rnncells._math import add_bias, sigmoid
from rnncells.cells._registry import CellSpec
from rnncells.cells.mingru import (
    check_h_carry_inputs,
    check_input_gated_params,
    g,
    input_gate_slice,
    log_g,
    log_space_unroll,
    zero_h_carry,
)
from rnncells.initializers import glorot_uniform

__all__ = [
    "MINLSTM_GATES",
    "MinLSTMParams",
    "MinLSTMState",
    "SPEC",
    "minlstm_gate",
    "minlstm_init",
    "minlstm_parallel_unroll",
    "minlstm_step",
]

MINLSTM_GATES = ("f", "i", "h")


class MinLSTMParams(NamedTuple):
    """minLSTM parameters; blocks in the order (f, i, h), all from x_t only."""

    W: jax.Array  # (input_size, 3 * hidden_size)
    b: jax.Array  # (3 * hidden_size,)

    @property
    def input_size(self) -> int:
        return self.W.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.W.shape[1] // len(MINLSTM_GATES)


class MinLSTMState(NamedTuple):
    """minLSTM carry: the hidden state h (there is no cell state)."""

    h: jax.Array  # (*batch, hidden_size)


def minlstm_init(
    key: jax.Array, input_size: int, hidden_size: int, *, dtype=jnp.float32
) -> MinLSTMParams:
    """Initialises minLSTM parameters: W Glorot-uniform per block, b zero.

    Args:
      key: PRNG key.
      input_size: D, the size of x_t.
      hidden_size: H, the size of h_t.
      dtype: floating dtype of all parameters.

    Returns:
      MinLSTMParams with W (D, 3H), b (3H,).

    Raises:
      ValueError: a size that is not a positive integer, or so large that W would
        exceed 2**40 bytes (1 TiB).

    Example:
      >>> params = minlstm_init(jax.random.key(0), input_size=2, hidden_size=8)
      >>> params.W.shape, params.b.shape
      ((2, 24), (24,))
    """
    input_size = _checks.check_positive_int("input_size", input_size)
    hidden_size = _checks.check_positive_int("hidden_size", hidden_size)
    _checks.check_param_sizes(input_size, hidden_size, len(MINLSTM_GATES), dtype)
    W = glorot_uniform(key, input_size, hidden_size, len(MINLSTM_GATES), dtype)
    return MinLSTMParams(W, jnp.zeros((len(MINLSTM_GATES) * hidden_size,), dtype))


def _check_inputs(params, carry, x, x_name: str = "x") -> None:
    check_h_carry_inputs(params, carry, x, MinLSTMState, len(MINLSTM_GATES), x_name)


def minlstm_step(
    params: MinLSTMParams, carry: MinLSTMState, x: jax.Array
) -> tuple[MinLSTMState, jax.Array]:
    """One minLSTM step (equations in the module docstring), f' and i' as σ(-d_t), σ(d_t).

    Scan-shaped: ``jax.lax.scan(functools.partial(minlstm_step, params), carry, xs)``
    unrolls it; it is the reference of the parallel ``unroll``.

    Args:
      params: MinLSTMParams.
      carry: MinLSTMState with h of shape (*batch, H).
      x: input x_t of shape (*batch, D), the parameters' dtype.

    Returns:
      (MinLSTMState(h_t), h_t), h_t of shape (*batch, H).

    Raises:
      TypeError: wrong params or carry type, or dtype.
      ValueError: params of wrong shapes, x's last dimension is not D, or the carry's
        shape does not match x's batch dims.
    """
    _checks.check_params_type("params", params, (MinLSTMParams,))
    _check_inputs(params, carry, x)
    with jax.named_scope("minlstm_step"):
        k_f, k_i, k_h = jnp.split(add_bias(x @ params.W, params.b), 3, axis=-1)
        # f / (f + i) and i / (f + i) as σ(-d), σ(d): no 0/0 where both σ underflow to 0
        d = jax.nn.softplus(-k_f) - jax.nn.softplus(-k_i)  # log i_t - log f_t
        h = sigmoid(-d) * carry.h + sigmoid(d) * g(k_h)
        return MinLSTMState(h), h


def minlstm_gate(params: MinLSTMParams, name: str) -> GateWeights:
    """The per-block weights (W_name, V_name, b_name) for ``name`` in f, i, h.

    V_name is a zero (H, H) array: minLSTM's blocks do not see h_{t-1}.
    """
    return input_gate_slice(params, MINLSTM_GATES, name)


def minlstm_parallel_unroll(
    params: MinLSTMParams, carry: MinLSTMState, xs: jax.Array, lengths: jax.Array | None
) -> tuple[MinLSTMState, jax.Array]:
    """The minLSTM over all of ``xs`` at once (the cell's ``CellSpec.parallel_unroll``).

    ``unroll`` calls it after its checks, with padding zeroed and each valid prefix
    reversed for ``reverse=True``; call ``unroll`` rather than this.

    Args:
      params: MinLSTMParams.
      carry: MinLSTMState, h (*batch, H).
      xs: (T, *batch, D), time-major.
      lengths: None or int32 (*batch,).

    Returns:
      (MinLSTMState(h_final), hs), hs (T, *batch, H) zero past each length.
    """
    with jax.named_scope("minlstm_parallel"):
        k_f, k_i, k_h = jnp.split(add_bias(xs @ params.W, params.b), 3, axis=-1)
        d = jax.nn.softplus(-k_f) - jax.nn.softplus(-k_i)  # log i_t - log f_t
        log_a = -jax.nn.softplus(d)  # log f'_t
        log_b = -jax.nn.softplus(-d) + log_g(k_h)  # log (i'_t ⊙ h~_t)
        final, hs = log_space_unroll(log_a, log_b, carry.h, lengths)
        return MinLSTMState(final), hs


SPEC = CellSpec(
    name="minlstm",
    params=MinLSTMParams,
    state=MinLSTMState,
    step=minlstm_step,
    init=minlstm_init,
    gates=MINLSTM_GATES,
    check_params=lambda params: check_input_gated_params(params, len(MINLSTM_GATES)),
    check_inputs=_check_inputs,
    zero_carry=zero_h_carry(MinLSTMState, len(MINLSTM_GATES)),
    output_size=lambda params: params.W.shape[1] // len(MINLSTM_GATES),
    gate=minlstm_gate,
    parallel_unroll=minlstm_parallel_unroll,
)
