"""The adding problem, in the Arjovsky/Le form and in the original Hochreiter & Schmidhuber form.

Both losses read one step of the model's per-step outputs: the last step for ``"adding"``,
the last *valid* step (``lengths - 1``) for ``"adding_hs"``.

References:
    Arjovsky, Shah & Bengio 2016, "Unitary Evolution Recurrent Neural Networks",
    https://arxiv.org/abs/1511.06464 ; Le, Jaitly & Hinton 2015, "A Simple Way to Initialize
    Recurrent Networks of Rectified Linear Units", https://arxiv.org/abs/1504.00941 ;
    Hochreiter & Schmidhuber 1997, "Long Short-Term Memory", Neural Computation 9(8),
    Experiment 4.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ._common import Batch, Task, check_int, check_shape, last_step

__all__ = [
    "BASELINE_MSE",
    "HS_FIRST_WINDOW",
    "SUCCESS_TOLERANCE",
    "adding_hs_task",
    "adding_task",
    "hs_baseline_mse",
    "make_batch",
    "make_hs_batch",
    "mse",
    "success_rate",
]

BASELINE_MSE = 1.0 / 6.0
"""MSE of always predicting 1 on ``"adding"``: the variance of a sum of two U[0, 1]."""

SUCCESS_TOLERANCE = 0.04
"""Hochreiter & Schmidhuber's criterion: a sequence is correct if ``|error| < 0.04``."""

HS_FIRST_WINDOW = 10
"""The first marker of ``"adding_hs"`` is on one of the first 10 pairs."""


# Generators and losses are jitted (sizes static) so an eager call compiles once, not
# op by op; argument checks run at trace time.
@functools.partial(jax.jit, static_argnames=("batch_size", "T"))
def make_batch(key: jax.Array, batch_size: int, T: int) -> Batch:
    """A batch of the adding problem (Arjovsky et al. 2016; Le et al. 2015).

    Step t of an example is the pair ``(v_t, m_t)`` with ``v_t ~ U[0, 1)`` and a marker
    ``m_t`` that is 1 at exactly two steps, ``p1 ~ U{0, ..., T//2 - 1}`` (first half) and
    ``p2 ~ U{T//2, ..., T - 1}`` (second half), and 0 elsewhere. The target is
    ``v_{p1} + v_{p2}``, to be predicted at the last step.

    Args:
        key: a PRNG key.
        batch_size: B >= 1 (static under jit).
        T: sequence length >= 2 (static under jit).

    Returns:
        ``Batch(inputs, targets)``: inputs ``(B, T, 2)`` float32 with channel 0 the values
        and channel 1 the markers; targets ``(B, 1)`` float32.

    Raises:
        ValueError: if ``batch_size < 1`` or ``T < 2``.

    Example:
        >>> batch = make_batch(jax.random.key(0), 4, T=100)
        >>> batch.inputs.shape, batch.targets.shape
        ((4, 100, 2), (4, 1))
    """
    batch_size = check_int("batch_size", batch_size, 1)
    T = check_int("T", T, 2)
    k_values, k_first, k_second = jax.random.split(key, 3)
    half = T // 2
    values = jax.random.uniform(k_values, (batch_size, T), jnp.float32)
    p1 = jax.random.randint(k_first, (batch_size, 1), 0, half, jnp.int32)
    p2 = jax.random.randint(k_second, (batch_size, 1), half, T, jnp.int32)
    steps = jnp.arange(T, dtype=jnp.int32)[None, :]
    markers = ((steps == p1) | (steps == p2)).astype(jnp.float32)
    inputs = jnp.stack([values, markers], axis=-1)
    targets = jnp.sum(values * markers, axis=1, keepdims=True)
    return Batch(inputs=inputs, targets=targets)


@functools.partial(jax.jit, static_argnames=("batch_size", "T"))
def make_hs_batch(key: jax.Array, batch_size: int, T: int) -> Batch:
    """A batch of the original adding problem (Hochreiter & Schmidhuber 1997, Exp. 4).

    Each example has a random length ``L ~ U{T, ..., T + T//10}`` and is zero-padded to
    ``T + T//10`` steps. Step t is the pair ``(x_t, m_t)`` with ``x_t ~ U[-1, 1)``. Two
    pairs are marked with ``m = 1``: first ``p1 ~ U{0, ..., 9}`` (one of the first ten
    pairs), then p2 uniform over the first ``T//2 - 1`` pairs that are still unmarked,
    i.e. over ``{0, ..., T//2 - 1} \\ {p1}``. The first pair (t = 0) and the final pair
    (t = L - 1) carry ``m = -1`` unless marked; all other markers are 0. The target is
    ``0.5 + (X1 + X2) / 4`` with ``X1 = x_{p1}``, ``X2 = x_{p2}``; a prediction at step
    ``L - 1`` counts as correct if its absolute error is below 0.04.

    Choices where the paper is terse: the paper sets X1 to zero "in the rare case where
    the first pair got marked"; here the value of pair 0 is set to 0 whenever either marker
    lands on it (p2 can land there too), so the marker reads 1 there and the target is
    always ``0.5 + sum(x_t for m_t = 1) / 4``. "T/2" is ``T // 2`` and "T/10" is ``T // 10``.
    Padding steps (t >= L) are ``(0, 0)``.

    Args:
        key: a PRNG key.
        batch_size: B >= 1 (static under jit).
        T: minimal sequence length, >= 22 so that the window of the second marker
            (``T//2 - 1 >= 10`` pairs) holds the first ten pairs (static under jit).

    Returns:
        ``Batch(inputs, targets, lengths)``: inputs ``(B, T + T//10, 2)`` float32 with
        channel 0 the values and channel 1 the markers; targets ``(B, 1)`` float32 in
        ``[0, 1]``; lengths ``(B,)`` int32 in ``[T, T + T//10]``.

    Raises:
        ValueError: if ``batch_size < 1`` or ``T < 22``.
    """
    batch_size = check_int("batch_size", batch_size, 1)
    T = check_int("T", T, 2 * (HS_FIRST_WINDOW + 1))
    padded = T + T // 10
    k_len, k_values, k_first, k_second = jax.random.split(key, 4)
    lengths = jax.random.randint(k_len, (batch_size,), T, padded + 1, jnp.int32)
    values = jax.random.uniform(k_values, (batch_size, padded), jnp.float32, -1.0, 1.0)
    p1 = jax.random.randint(k_first, (batch_size, 1), 0, HS_FIRST_WINDOW, jnp.int32)
    # Index among the still-unmarked pairs of the first T//2 - 1: skip over p1.
    rank = jax.random.randint(k_second, (batch_size, 1), 0, T // 2 - 1, jnp.int32)
    p2 = rank + (rank >= p1).astype(jnp.int32)

    steps = jnp.arange(padded, dtype=jnp.int32)[None, :]
    marked = (steps == p1) | (steps == p2)
    ends = (steps == 0) | (steps == lengths[:, None] - 1)
    valid = steps < lengths[:, None]
    markers = jnp.where(marked, 1.0, jnp.where(ends, -1.0, 0.0)).astype(jnp.float32)
    keep_value = valid & ~(marked & (steps == 0))
    values = jnp.where(keep_value, values, 0.0).astype(jnp.float32)
    inputs = jnp.stack([values, markers], axis=-1)
    marked_sum = jnp.sum(jnp.where(marked, values, 0.0), axis=1, keepdims=True)
    targets = (0.5 + marked_sum / 4.0).astype(jnp.float32)
    return Batch(inputs=inputs, targets=targets, lengths=lengths)


@jax.jit
def mse(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean squared error ``mean((predictions - targets)**2)``, both ``(B, 1)``."""
    check_shape("predictions", predictions, tuple(targets.shape))
    error = predictions.astype(jnp.float32) - targets.astype(jnp.float32)
    return jnp.mean(jnp.square(error))


@jax.jit
def success_rate(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """Fraction of sequences with ``|prediction - target| < 0.04`` (Hochreiter & Schmidhuber)."""
    check_shape("predictions", predictions, tuple(targets.shape))
    error = predictions.astype(jnp.float32) - targets.astype(jnp.float32)
    return jnp.mean((jnp.abs(error) < SUCCESS_TOLERANCE).astype(jnp.float32))


def hs_baseline_mse(T: int) -> float:
    """MSE of always predicting 0.5 (the target's mean) on ``"adding_hs"``.

    ``E[(X1 + X2)^2] / 16`` with ``E[X^2] = 1/3`` for a value that was not zeroed:
    X1 is zeroed with probability 1/10 (p1 = 0) and X2 with probability
    ``(9/10) / (T//2 - 1)`` (p1 != 0 and p2 = 0), so the baseline is
    ``(2 - 1/10 - (9/10) / (T//2 - 1)) / 48`` (0.0392 at T = 100; 1/24 = 0.0417 without
    the zeroing).
    """
    T = check_int("T", T, 2 * (HS_FIRST_WINDOW + 1))
    kept = (1.0 - 0.1) + (1.0 - 0.9 / (T // 2 - 1))
    return kept / 3.0 / 16.0


def _metrics(prediction: jax.Array, batch: Batch) -> dict[str, jax.Array]:
    return {
        "loss": mse(prediction, batch.targets),
        "success_rate": success_rate(prediction, batch.targets),
    }


def _checked_ys(ys: jax.Array, seq_len: int) -> jax.Array:
    check_shape("ys", ys, (None, seq_len, 1))
    return ys


def adding_task(T: int = 100) -> Task:
    """The adding problem as a `Task`: loss = MSE of the last step ``ys[:, -1]``.

    ``solved``: MSE below 0.01 (project choice; the baseline is 1/6, and the papers only
    compare against the baseline).
    """
    T = check_int("T", T, 2)

    def loss(ys: jax.Array, batch: Batch) -> jax.Array:
        return mse(last_step(_checked_ys(ys, T)), batch.targets)

    def metric(ys: jax.Array, batch: Batch) -> dict[str, jax.Array]:
        return _metrics(last_step(_checked_ys(ys, T)), batch)

    return Task(
        name="adding",
        input_size=2,
        output_size=1,
        seq_len=T,
        make_batch=lambda key, batch_size: make_batch(key, batch_size, T),
        loss=jax.jit(loss),
        metric=jax.jit(metric),
        baseline_loss=BASELINE_MSE,
        solved=lambda metrics: bool(metrics["loss"] < 0.01),
    )


def adding_hs_task(T: int = 100) -> Task:
    """The original adding problem as a `Task`: loss = MSE at step ``lengths - 1``.

    ``seq_len`` is the padded length ``T + T//10``. ``solved``: every sequence of the
    evaluated batch within 0.04 (H&S stop training once the 2000 most recent sequences are
    all correct, so evaluate on a batch of 2000).
    """
    T = check_int("T", T, 2 * (HS_FIRST_WINDOW + 1))
    padded = T + T // 10

    def loss(ys: jax.Array, batch: Batch) -> jax.Array:
        return mse(last_step(_checked_ys(ys, padded), batch.lengths), batch.targets)

    def metric(ys: jax.Array, batch: Batch) -> dict[str, jax.Array]:
        return _metrics(last_step(_checked_ys(ys, padded), batch.lengths), batch)

    return Task(
        name="adding_hs",
        input_size=2,
        output_size=1,
        seq_len=padded,
        make_batch=lambda key, batch_size: make_hs_batch(key, batch_size, T),
        loss=jax.jit(loss),
        metric=jax.jit(metric),
        baseline_loss=hs_baseline_mse(T),
        solved=lambda metrics: bool(metrics["success_rate"] >= 1.0),
    )
