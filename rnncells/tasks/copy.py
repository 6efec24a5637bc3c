"""The copy memory task (Arjovsky et al. 2016) and its variable-length form (Henaff et al. 2016).

Vocabulary of 10 tokens: 0 blank, 1..8 data, 9 delimiter. Inputs and targets are int32
token ids; the model embeds or one-hots the inputs and emits logits ``(B, L, 10)`` at every
step. The copy loss reads all L steps; the variable-copy loss reads only the ten recall
steps (``batch.mask``).

References:
    Arjovsky, Shah & Bengio 2016, "Unitary Evolution Recurrent Neural Networks",
    https://arxiv.org/abs/1511.06464 ; Henaff, Szlam & LeCun 2016, "Recurrent Orthogonal
    Networks and Long-Memory Tasks", https://arxiv.org/abs/1602.06662 ; Tallec & Ollivier
    2018, "Can recurrent neural networks warp time?", https://arxiv.org/abs/1804.11188 .
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from ._common import Batch, Task, check_int, check_shape, cross_entropy, predicted_class

__all__ = [
    "BLANK",
    "DELIMITER",
    "NUM_DATA_TOKENS",
    "NUM_SYMBOLS",
    "VOCAB_SIZE",
    "accuracy",
    "baseline_loss",
    "copy_task",
    "loss",
    "make_batch",
    "make_variable_batch",
    "masked_accuracy",
    "masked_loss",
    "memoryless_logits",
    "variable_baseline_loss",
    "variable_copy_task",
    "variable_memoryless_logits",
]

VOCAB_SIZE = 10
BLANK = 0
DELIMITER = 9
NUM_SYMBOLS = 10
"""How many data symbols are shown and recalled."""
NUM_DATA_TOKENS = 8
"""Data symbols are drawn uniformly from 1..8."""


# Generators and losses are jitted (sizes static) so an eager call compiles once, not
# op by op; argument checks run at trace time.
@functools.partial(jax.jit, static_argnames=("batch_size", "T"))
def make_batch(key: jax.Array, batch_size: int, T: int) -> Batch:
    """A batch of the copy memory task (Arjovsky et al. 2016), length ``L = T + 20``.

    Layout of one example (positions 0-based)::

        inputs : d_0 .. d_9 | 0 x (T - 1) | 9 | 0 x 10
        targets: 0 x (T + 10)                 | d_0 .. d_9

    with ``d_i ~ U{1, ..., 8}``: the delimiter is at position ``T + 9`` and the data must
    be emitted at positions ``T + 10 .. T + 19``.

    Args:
        key: a PRNG key.
        batch_size: B >= 1 (static under jit).
        T: delay, >= 1 (static under jit).

    Returns:
        ``Batch(inputs, targets)``, both ``(B, T + 20)`` int32.

    Raises:
        ValueError: if ``batch_size < 1`` or ``T < 1``.

    Example:
        >>> batch = make_batch(jax.random.key(0), 2, T=100)
        >>> batch.inputs.shape, int(batch.inputs[0, 109])
        ((2, 120), 9)
    """
    batch_size = check_int("batch_size", batch_size, 1)
    T = check_int("T", T, 1)
    data = _data(key, batch_size)
    blanks = jnp.zeros((batch_size, T - 1), jnp.int32)
    tail = jnp.zeros((batch_size, NUM_SYMBOLS), jnp.int32)
    delimiter = jnp.full((batch_size, 1), DELIMITER, jnp.int32)
    inputs = jnp.concatenate([data, blanks, delimiter, tail], axis=1)
    targets = jnp.concatenate([jnp.zeros((batch_size, T + 10), jnp.int32), data], axis=1)
    return Batch(inputs=inputs, targets=targets)


@jax.jit
def loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean categorical cross-entropy (nats) over all ``B * (T + 20)`` steps.

    Args:
        logits: ``(B, L, 10)``.
        targets: ``(B, L)`` int token ids.
    """
    check_shape("logits", logits, (*targets.shape, VOCAB_SIZE))
    return jnp.mean(cross_entropy(logits, targets))


@jax.jit
def accuracy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Fraction of the 10 data symbols recalled exactly (argmax over the last 10 steps)."""
    check_shape("logits", logits, (*targets.shape, VOCAB_SIZE))
    recalled = predicted_class(logits[:, -NUM_SYMBOLS:, :], targets)
    return jnp.mean((recalled == targets[:, -NUM_SYMBOLS:]).astype(jnp.float32))


def baseline_loss(T: int) -> float:
    """Memoryless baseline ``10 ln(8) / (T + 20)`` nats (T=100: 0.1733).

    A model without memory predicts blank with probability 1 everywhere except at the last
    10 steps, where it can only guess uniformly over the 8 data symbols (``ln 8`` each).
    """
    T = check_int("T", T, 1)
    return NUM_SYMBOLS * math.log(NUM_DATA_TOKENS) / (T + 20)


@functools.partial(jax.jit, static_argnames=("batch_size", "T"))
def memoryless_logits(batch_size: int, T: int) -> jax.Array:
    """Logits ``(B, T + 20, 10)`` float32 of the memoryless predictor of `baseline_loss`.

    Blank with probability exactly 1 (other logits ``-inf``) at the first ``T + 10`` steps;
    uniform over 1..8 (logit 0, blank and delimiter ``-inf``) at the last 10 steps.
    """
    batch_size = check_int("batch_size", batch_size, 1)
    T = check_int("T", T, 1)
    recall = jnp.arange(T + 20, dtype=jnp.int32) >= T + 10
    return jnp.broadcast_to(_memoryless_rows(recall), (batch_size, T + 20, VOCAB_SIZE))


@functools.partial(jax.jit, static_argnames=("batch_size", "T"))
def make_variable_batch(key: jax.Array, batch_size: int, T: int) -> Batch:
    """A batch of the variable-length copy task (Henaff et al. 2016), length ``L = T + 21``.

    As `make_batch`, but the number of blanks between the data and the delimiter is
    ``n ~ U{1, ..., T}`` per example; blanks pad the sequence after the recall window so
    the batch is rectangular::

        inputs : d_0 .. d_9 | 0 x n | 9 | 0 x 10 | 0 x (T - n)
        targets: 0 x (n + 11)            | d_0 .. d_9 | 0 x (T - n)

    The delimiter is at ``10 + n`` and the data is recalled at ``11 + n .. 20 + n``
    (``n = T - 1`` is the fixed copy layout plus one padding blank). L is ``T + 21``, not
    ``T + 20``, so that ``n = T`` fits.

    Returns:
        ``Batch(inputs, targets, lengths, mask)``: inputs and targets ``(B, T + 21)``
        int32; lengths ``(B,)`` int32 ``= n + 21``, the steps up to the last recall step;
        mask ``(B, T + 21)`` float32, 1 at the ten recall steps and 0 elsewhere.

    Raises:
        ValueError: if ``batch_size < 1`` or ``T < 1``.
    """
    batch_size = check_int("batch_size", batch_size, 1)
    T = check_int("T", T, 1)
    k_data, k_gap = jax.random.split(key)
    data = _data(k_data, batch_size)
    gap = jax.random.randint(k_gap, (batch_size, 1), 1, T + 1, jnp.int32)
    length = T + 21
    steps = jnp.arange(length, dtype=jnp.int32)[None, :]
    first_recall = gap + 11
    recall = (steps >= first_recall) & (steps < first_recall + NUM_SYMBOLS)
    # Data token for position p (input at p < 10, recall at first_recall + i): gather index.
    data_at_input = _spread(data, jnp.broadcast_to(steps, (batch_size, length)))
    data_at_recall = _spread(data, steps - first_recall)
    inputs = jnp.where(steps < NUM_SYMBOLS, data_at_input, 0)
    inputs = jnp.where(steps == gap + NUM_SYMBOLS, DELIMITER, inputs).astype(jnp.int32)
    targets = jnp.where(recall, data_at_recall, 0).astype(jnp.int32)
    return Batch(
        inputs=inputs,
        targets=targets,
        lengths=(gap[:, 0] + 21).astype(jnp.int32),
        mask=recall.astype(jnp.float32),
    )


@jax.jit
def masked_loss(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
    """Cross-entropy averaged over the steps where ``mask`` is nonzero (mask-weighted mean).

    For variable copy the mask marks the ten recall steps, so blanks elsewhere are not
    scored: a model is judged only on the data it must remember.
    """
    check_shape("logits", logits, (*targets.shape, VOCAB_SIZE))
    check_shape("mask", mask, tuple(targets.shape))
    weights = mask.astype(jnp.float32)
    return jnp.sum(cross_entropy(logits, targets) * weights) / jnp.sum(weights)


@jax.jit
def masked_accuracy(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
    """Fraction of the masked steps (the recalled symbols) whose argmax equals the target."""
    check_shape("logits", logits, (*targets.shape, VOCAB_SIZE))
    check_shape("mask", mask, tuple(targets.shape))
    weights = mask.astype(jnp.float32)
    hits = (predicted_class(logits, targets) == targets).astype(jnp.float32)
    return jnp.sum(hits * weights) / jnp.sum(weights)


def variable_baseline_loss() -> float:
    """Memoryless baseline of `masked_loss` on variable copy: ``ln 8`` per recalled symbol.

    A model without memory still sees the delimiter, so it knows when to recall, but it
    can only guess uniformly over the 8 data symbols.
    """
    return math.log(NUM_DATA_TOKENS)


@jax.jit
def variable_memoryless_logits(inputs: jax.Array) -> jax.Array:
    """Logits ``(B, L, 10)`` of the memoryless predictor for variable-copy ``inputs (B, L)``.

    Uniform over 1..8 at the ten steps after the delimiter, blank with probability 1
    elsewhere; its `masked_loss` is exactly `variable_baseline_loss`.
    """
    check_shape("inputs", inputs, (None, None))
    delimiter_at = jnp.argmax(inputs == DELIMITER, axis=1).astype(jnp.int32)[:, None]
    steps = jnp.arange(inputs.shape[1], dtype=jnp.int32)[None, :]
    recall = (steps > delimiter_at) & (steps <= delimiter_at + NUM_SYMBOLS)
    return _memoryless_rows(recall)


def copy_task(T: int = 100) -> Task:
    """Copy memory as a `Task`: loss over all ``T + 20`` steps of ``ys`` (logits).

    ``solved``: at least 99% of the data symbols recalled (project choice).
    """
    T = check_int("T", T, 1)

    def task_loss(ys: jax.Array, batch: Batch) -> jax.Array:
        check_shape("ys", ys, (None, T + 20, VOCAB_SIZE))
        return loss(ys, batch.targets)

    def metric(ys: jax.Array, batch: Batch) -> dict[str, jax.Array]:
        check_shape("ys", ys, (None, T + 20, VOCAB_SIZE))
        return {"loss": loss(ys, batch.targets), "accuracy": accuracy(ys, batch.targets)}

    return Task(
        name="copy",
        input_size=VOCAB_SIZE,
        output_size=VOCAB_SIZE,
        seq_len=T + 20,
        make_batch=lambda key, batch_size: make_batch(key, batch_size, T),
        loss=jax.jit(task_loss),
        metric=jax.jit(metric),
        baseline_loss=baseline_loss(T),
        solved=lambda metrics: bool(metrics["accuracy"] >= 0.99),
        vocab_size=VOCAB_SIZE,
    )


def variable_copy_task(T: int = 100) -> Task:
    """Variable-length copy as a `Task`: loss over the ten recall steps (``batch.mask``).

    ``solved``: at least 99% of the data symbols recalled (project choice).
    """
    T = check_int("T", T, 1)

    def task_loss(ys: jax.Array, batch: Batch) -> jax.Array:
        check_shape("ys", ys, (None, T + 21, VOCAB_SIZE))
        return masked_loss(ys, batch.targets, batch.mask)

    def metric(ys: jax.Array, batch: Batch) -> dict[str, jax.Array]:
        check_shape("ys", ys, (None, T + 21, VOCAB_SIZE))
        return {
            "loss": masked_loss(ys, batch.targets, batch.mask),
            "accuracy": masked_accuracy(ys, batch.targets, batch.mask),
        }

    return Task(
        name="variable_copy",
        input_size=VOCAB_SIZE,
        output_size=VOCAB_SIZE,
        seq_len=T + 21,
        make_batch=lambda key, batch_size: make_variable_batch(key, batch_size, T),
        loss=jax.jit(task_loss),
        metric=jax.jit(metric),
        baseline_loss=variable_baseline_loss(),
        solved=lambda metrics: bool(metrics["accuracy"] >= 0.99),
        vocab_size=VOCAB_SIZE,
    )


def _data(key: jax.Array, batch_size: int) -> jax.Array:
    """``(B, 10)`` int32 data symbols uniform in 1..8."""
    return jax.random.randint(key, (batch_size, NUM_SYMBOLS), 1, NUM_DATA_TOKENS + 1, jnp.int32)


def _spread(data: jax.Array, index: jax.Array) -> jax.Array:
    """``data[b, index[b, p]]`` with out-of-range indices clipped (callers mask them)."""
    clipped = jnp.clip(index, 0, NUM_SYMBOLS - 1)
    return jnp.take_along_axis(data, clipped, axis=1)


def _memoryless_rows(recall: jax.Array) -> jax.Array:
    """Logits ``(*recall.shape, 10)``: uniform over 1..8 where ``recall``, blank elsewhere."""
    # Shaped (1, ..., 1, 10) so the where below broadcasts without rank promotion.
    token = jnp.arange(VOCAB_SIZE, dtype=jnp.int32).reshape((1,) * recall.ndim + (VOCAB_SIZE,))
    is_data = (token >= 1) & (token <= NUM_DATA_TOKENS)
    guess = jnp.where(is_data, 0.0, -jnp.inf).astype(jnp.float32)
    blank = jnp.where(token == BLANK, 0.0, -jnp.inf).astype(jnp.float32)
    return jnp.where(recall[..., None], guess, blank)
