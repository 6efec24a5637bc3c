"""The minGRU of Feng et al. (2024): a GRU whose gates see x_t only, parallel in time.

One step, x_t input, h_{t-1} carried, in the paper's log-space version (its Sec. 3 and
the log-space code of its appendix), whose candidate is kept positive by g:

    z_t  = σ(W_z x_t + b_z)                    update gate (no h_{t-1})
    h~_t = g(W_h x_t + b_h)                    candidate, g(v) = v + 1/2 if v >= 0, else σ(v)
    h_t  = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ h~_t

Neither z_t nor h~_t depends on h_{t-1}, so the recurrence is linear,
h_t = a_t ⊙ h_{t-1} + b_t with a_t = 1 - z_t and b_t = z_t ⊙ h~_t > 0, and a parallel
scan over time computes every h_t at once. ``unroll`` runs it that way (the cell's
``CellSpec.parallel_unroll``): one ``jax.lax.associative_scan`` in the paper's log
space, over the pairs (log a_t, log b_t), with k_t, v_t the two pre-activations,

    log a_t = -softplus(k_t)                   log(1 - z_t)
    log b_t = -softplus(-k_t) + log g(v_t)     log(z_t ⊙ h~_t)
    (A, B) then (A', B') = (A + A', logaddexp(A' + B, B'))    two affine maps composed

so that after the scan h_t = exp(A_t) ⊙ h_0 + exp(B_t), A_t = Σ_{s<=t} log a_s.
Composing the pairs, rather than the paper's cumulative sum and log-cumsum-exp of
log b_s - A_s, keeps the values small on long sequences (no large A_t to cancel).
``unroll(..., fused=False)`` runs the sequential step through ``jax.lax.scan``; it is
the reference the parallel form is tested against.

The carry, ``GRUState(h)``, is the state h itself, used as it is by both forms: the zero
carry is h_0 = 0, and a given carry may have any sign (its term exp(A_t) ⊙ h_0 is added
outside the log-space scan, which needs no log h_0). The paper's parallel code instead
takes log g(h_0) of the initial state it is given, i.e. it starts from g(h_0), while its
sequential code starts from h_0; to start where its parallel code starts, pass
``GRUState(g(h_0))`` (1/2 everywhere for its zeros). A final carry passed back in
continues the sequence exactly. Padding past a sequence's length enters the scan as the
identity map, a_t = 1 and b_t = 0 (log a_t = 0, log b_t = -inf); the log-space sum
(``_logaddexp``) has finite derivatives where both its terms are -inf, so gradients
stay finite.

Weights are fused over the two blocks in the order (z, h): W (D, 2H), b (2H,); there is
no recurrent weight V.

References:
  Feng, Tung, Ahmed, Bengio & Hajimirsadeghi 2024, "Were RNNs all we needed?",
  https://arxiv.org/abs/2410.01201
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnncells import _checks
from rnncells._gates import GateWeights
from rnncells._math import add_bias, sigmoid
from rnncells.cells._registry import CellSpec
from rnncells.cells.gru import GRUState
from rnncells.initializers import glorot_uniform

__all__ = [
    "MINGRU_GATES",
    "SPEC",
    "MinGRUParams",
    "g",
    "log_g",
    "log_space_unroll",
    "mingru_gate",
    "mingru_init",
    "mingru_parallel_unroll",
    "mingru_step",
]

MINGRU_GATES = ("z", "h")


class MinGRUParams(NamedTuple):
    """minGRU parameters; blocks in the order (z, h), both from x_t only."""

    W: jax.Array  # (input_size, 2 * hidden_size)
    b: jax.Array  # (2 * hidden_size,)

    @property
    def input_size(self) -> int:
        return self.W.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.W.shape[1] // len(MINGRU_GATES)


def g(v: jax.Array) -> jax.Array:
    """The paper's positive activation: v + 1/2 for v >= 0, σ(v) for v < 0 (continuous at 0)."""
    return jnp.where(v >= 0, jax.nn.relu(v) + 0.5, sigmoid(v))


def log_g(v: jax.Array) -> jax.Array:
    """log g(v), computed without forming g(v): log(v + 1/2) for v >= 0, -softplus(-v) else.

    Each branch is finite for every v (relu and softplus keep the unused branch finite),
    so its gradient is too.
    """
    return jnp.where(v >= 0, jnp.log(jax.nn.relu(v) + 0.5), jax.nn.log_sigmoid(v))


def mingru_init(
    key: jax.Array, input_size: int, hidden_size: int, *, dtype=jnp.float32
) -> MinGRUParams:
    """Initialises minGRU parameters: W Glorot-uniform per block, b zero.

    Args:
      key: PRNG key.
      input_size: D, the size of x_t.
      hidden_size: H, the size of h_t.
      dtype: floating dtype of all parameters.

    Returns:
      MinGRUParams with W (D, 2H), b (2H,).

    Raises:
      ValueError: a size that is not a positive integer, or so large that W would
        exceed 2**40 bytes (1 TiB).

    Example:
      >>> params = mingru_init(jax.random.key(0), input_size=2, hidden_size=8)
      >>> params.W.shape, params.b.shape
      ((2, 16), (16,))
    """
    input_size = _checks.check_positive_int("input_size", input_size)
    hidden_size = _checks.check_positive_int("hidden_size", hidden_size)
    _checks.check_param_sizes(input_size, hidden_size, len(MINGRU_GATES), dtype)
    W = glorot_uniform(key, input_size, hidden_size, len(MINGRU_GATES), dtype)
    return MinGRUParams(W, jnp.zeros((len(MINGRU_GATES) * hidden_size,), dtype))


# ------------------------------------------------------------------ checks shared with minLSTM


def check_input_gated_params(params, num_gates: int) -> None:
    """Checks params W (D, G*H), b (G*H,) of one floating dtype (G = ``num_gates``)."""
    for field, value in zip(params._fields, params, strict=True):
        _checks.check_array(f"params.{field}", value)
    W, b = params.W, params.b
    if W.ndim != 2 or W.shape[1] == 0 or W.shape[1] % num_gates:
        raise ValueError(
            f"params.W must have shape (input_size, {num_gates} * hidden_size) for "
            f"{type(params).__name__}, got shape {_checks.shape_str(W.shape)}"
        )
    _checks.check_shape("params.b", b, (W.shape[1],))
    _checks.check_floating("params.W", W)
    if b.dtype != W.dtype:
        raise TypeError(f"params.b must have dtype {W.dtype} (params.W's dtype), got {b.dtype}")


def check_h_carry_inputs(params, carry, x, state: type[Any], num_gates: int, x_name: str) -> None:
    """Checks params, then a carry of ``state`` whose field h is (*batch, H) and x (*batch, D)."""
    check_input_gated_params(params, num_gates)
    _checks.check_array(x_name, x)
    _checks.check_floating(x_name, x, params.W.dtype)
    _checks.check_last_dim(x_name, x, params.W.shape[0], "input_size")
    if not isinstance(carry, state):
        raise TypeError(
            f"carry must be {state.__name__} (see init_carry), got {type(carry).__name__}"
        )
    _checks.check_array("carry.h", carry.h)
    expected = tuple(x.shape[:-1]) + (params.W.shape[1] // num_gates,)
    if tuple(carry.h.shape) != expected:
        raise ValueError(
            f"carry.h must have shape {_checks.shape_str(expected)} ({x_name}'s batch dims + "
            f"(hidden_size,)), got shape {_checks.shape_str(carry.h.shape)}"
        )
    _checks.check_floating("carry.h", carry.h, params.W.dtype)


def _check_inputs(params, carry, x, x_name: str = "x") -> None:
    check_h_carry_inputs(params, carry, x, GRUState, len(MINGRU_GATES), x_name)


# ------------------------------------------------------------------------- sequential step


def mingru_step(params: MinGRUParams, carry: GRUState, x: jax.Array) -> tuple[GRUState, jax.Array]:
    """One minGRU step (equations in the module docstring), 1 - z_t computed as σ(-k_t).

    Scan-shaped: ``jax.lax.scan(functools.partial(mingru_step, params), carry, xs)``
    unrolls it; it is the reference of the parallel ``unroll``.

    Args:
      params: MinGRUParams.
      carry: GRUState with h of shape (*batch, H).
      x: input x_t of shape (*batch, D), the parameters' dtype.

    Returns:
      (GRUState(h_t), h_t), h_t of shape (*batch, H).

    Raises:
      TypeError: wrong params or carry type, or dtype.
      ValueError: params of wrong shapes, x's last dimension is not D, or the carry's
        shape does not match x's batch dims.
    """
    _checks.check_params_type("params", params, (MinGRUParams,))
    _check_inputs(params, carry, x)
    with jax.named_scope("mingru_step"):
        k, v = jnp.split(add_bias(x @ params.W, params.b), 2, axis=-1)
        h = sigmoid(-k) * carry.h + sigmoid(k) * g(v)
        return GRUState(h), h


def mingru_gate(params: MinGRUParams, name: str) -> GateWeights:
    """The per-block weights (W_name, V_name, b_name) for ``name`` in z, h.

    V_name is a zero (H, H) array: minGRU's blocks do not see h_{t-1}.
    """
    return input_gate_slice(params, MINGRU_GATES, name)


def input_gate_slice(params, gate_names: tuple[str, ...], name: str) -> GateWeights:
    """One block of fused W (D, G*H), b (G*H,), with a zero V (the gates see x_t only)."""
    if name not in gate_names:
        raise ValueError(
            f"gate name must be one of {list(gate_names)} for {type(params).__name__}, got {name!r}"
        )
    hidden = params.W.shape[1] // len(gate_names)
    k = gate_names.index(name)
    sl = slice(k * hidden, (k + 1) * hidden)
    V = jnp.zeros((hidden, hidden), params.W.dtype)
    return GateWeights(params.W[:, sl], V, params.b[sl])


# ------------------------------------------------------------------- parallel-in-time unroll


@jax.custom_jvp
def _logaddexp(x1: jax.Array, x2: jax.Array) -> jax.Array:
    """``jnp.logaddexp`` whose derivatives stay finite where both arguments are -inf.

    Padding enters the scan with log b = -inf (b = 0). ``jnp.logaddexp(-inf, -inf)`` is
    -inf, but its derivative is NaN (it differentiates -inf - (-inf)), which would
    reach every gradient through 0 * NaN. Here the weight of each argument is
    exp(x_i - out), taken as 0 where out = -inf (then x_i = -inf too).
    """
    return jnp.logaddexp(x1, x2)


@_logaddexp.defjvp
def _logaddexp_jvp(primals, tangents):
    x1, x2 = primals
    t1, t2 = tangents
    out = _logaddexp(x1, x2)  # itself, so that higher derivatives are finite too
    shift = jnp.where(jnp.isneginf(out), jnp.zeros_like(out), out)
    return out, t1 * jnp.exp(x1 - shift) + t2 * jnp.exp(x2 - shift)


def _compose(earlier, later):
    """Composes two affine maps h -> exp(A) h + exp(B), given in log space; ``earlier`` first."""
    a1, b1 = earlier
    a2, b2 = later
    return a1 + a2, _logaddexp(a2 + b1, b2)


def valid_steps(lengths: jax.Array, num_steps: int) -> jax.Array:
    """(T, *batch, 1) bool: whether step t lies within each sequence's length."""
    t = jnp.arange(num_steps, dtype=lengths.dtype).reshape((num_steps,) + (1,) * lengths.ndim)
    return (t < lengths.reshape((1,) + lengths.shape))[..., None]


def log_space_unroll(
    log_a: jax.Array, log_b: jax.Array, h0: jax.Array, lengths: jax.Array | None
) -> tuple[jax.Array, jax.Array]:
    """h_t = a_t ⊙ h_{t-1} + b_t for all t at once, from log a_t and log b_t (b_t > 0).

    One ``jax.lax.associative_scan`` over time of the pairs (log a_t, log b_t) (see the
    module docstring); h_0's term exp(A_t) ⊙ h_0 is added after it, so h_0 may have any
    sign. Past each length a step is the identity map (log a = 0, log b = -inf): the
    carry stays frozen and the output is 0.

    Args:
      log_a: (T, *batch, H), time-major: log a_t.
      log_b: (T, *batch, H), time-major: log b_t.
      h0: (*batch, H), the initial state.
      lengths: None, or int32 (*batch,) valid lengths.

    Returns:
      (h_final, hs): h_final (*batch, H) the state after each sequence's last valid step;
      hs (T, *batch, H), zero past each length.
    """
    valid = None
    if lengths is not None:
        valid = valid_steps(lengths, log_a.shape[0])
        log_a = jnp.where(valid, log_a, jnp.zeros((), log_a.dtype))
        log_b = jnp.where(valid, log_b, jnp.full((), -jnp.inf, log_b.dtype))
    log_A, log_B = jax.lax.associative_scan(_compose, (log_a, log_b), axis=0)
    hs = jnp.exp(log_A) * h0[None] + jnp.exp(log_B)
    final = hs[-1]  # padding is the identity map: the last state is the frozen one
    if valid is not None:
        hs = jnp.where(valid, hs, jnp.zeros((), hs.dtype))
    return final, hs


def mingru_parallel_unroll(
    params: MinGRUParams, carry: GRUState, xs: jax.Array, lengths: jax.Array | None
) -> tuple[GRUState, jax.Array]:
    """The minGRU over all of ``xs`` at once (the cell's ``CellSpec.parallel_unroll``).

    ``unroll`` calls it after its checks, with padding zeroed and each valid prefix
    reversed for ``reverse=True``; call ``unroll`` rather than this.

    Args:
      params: MinGRUParams.
      carry: GRUState, h (*batch, H).
      xs: (T, *batch, D), time-major.
      lengths: None or int32 (*batch,).

    Returns:
      (GRUState(h_final), hs), hs (T, *batch, H) zero past each length.
    """
    with jax.named_scope("mingru_parallel"):
        k, v = jnp.split(add_bias(xs @ params.W, params.b), 2, axis=-1)
        log_a = jax.nn.log_sigmoid(-k)  # log(1 - z_t)
        log_b = jax.nn.log_sigmoid(k) + log_g(v)  # log(z_t ⊙ h~_t)
        final, hs = log_space_unroll(log_a, log_b, carry.h, lengths)
        return GRUState(final), hs


def zero_h_carry(state: type[Any], num_gates: int):
    """A ``zero_carry`` for a carry ``state(h)`` with h (*batch, H), H = W's width / G."""

    def zero_carry(params, batch_shape):
        hidden = params.W.shape[1] // num_gates
        return state(jnp.zeros(tuple(batch_shape) + (hidden,), params.W.dtype))

    return zero_carry


SPEC = CellSpec(
    name="mingru",
    params=MinGRUParams,
    state=GRUState,
    step=mingru_step,
    init=mingru_init,
    gates=MINGRU_GATES,
    check_params=lambda params: check_input_gated_params(params, len(MINGRU_GATES)),
    check_inputs=_check_inputs,
    zero_carry=zero_h_carry(GRUState, len(MINGRU_GATES)),
    output_size=lambda params: params.W.shape[1] // len(MINGRU_GATES),
    gate=mingru_gate,
    parallel_unroll=mingru_parallel_unroll,
)
