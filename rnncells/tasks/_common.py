"""Shared pieces of the tasks: the `Batch` and `Task` records and small checked helpers.

Output convention used by every `Task.loss`: the model produces per-step outputs
``ys`` of shape ``(B, seq_len, output_size)``; each task says which steps its loss reads.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp


class Batch(NamedTuple):
    """One batch of a task (a pytree, so it passes through `jax.jit`).

    Attributes:
        inputs: model inputs, ``(B, T, D)`` float32 or ``(B, T)`` int32 token ids.
        targets: what the loss compares against; the shape is task-specific.
        lengths: ``(B,)`` int32 number of valid steps, or None when every step is valid.
        mask: ``(B, T)`` float32 loss weights per step, or None when the task does not
            need one.
    """

    inputs: jax.Array
    targets: jax.Array
    lengths: jax.Array | None = None
    mask: jax.Array | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Task:
    """A task as a training loop sees it; build one with `rnncells.tasks.get_task`.

    Attributes:
        name: registry name, e.g. ``"copy"``.
        input_size: width D of one input step; for token inputs the vocabulary size
            (the width of a one-hot encoding).
        output_size: width of one model output step (1 for regression, classes otherwise).
        seq_len: number of steps in ``batch.inputs`` (padded length where lengths vary).
        make_batch: ``(key, batch_size) -> Batch``; pure, jit-able with a static
            ``batch_size``.
        loss: ``(ys, batch) -> scalar`` with ``ys`` of shape ``(B, seq_len, output_size)``.
        metric: ``(ys, batch) -> dict`` of scalars, always with a ``"loss"`` entry.
        baseline_loss: closed-form loss of the best predictor without memory.
        solved: ``(metrics) -> bool``, the task's success criterion on a metric dict.
        vocab_size: None for real-valued inputs; else inputs are int32 ids in
            ``[0, vocab_size)``.
        test_batch: ``() -> Batch`` for a fixed held-out set (digits), else None.
    """

    name: str
    input_size: int
    output_size: int
    seq_len: int
    make_batch: Callable[[jax.Array, int], Batch]
    loss: Callable[[jax.Array, Batch], jax.Array]
    metric: Callable[[jax.Array, Batch], dict[str, jax.Array]]
    baseline_loss: float
    solved: Callable[[Mapping[str, float]], bool]
    vocab_size: int | None = None
    test_batch: Callable[[], Batch] | None = None


def check_int(name: str, value: int, minimum: int, maximum: int | None = None) -> int:
    """Returns ``value`` as an int after checking ``minimum <= value (<= maximum)``.

    Raises:
        ValueError: naming the argument, the expected range and the actual value.
    """
    try:
        if isinstance(value, bool):
            raise TypeError
        result = operator.index(value)
    except TypeError:
        raise ValueError(
            f"{name} must be a static Python integer >= {minimum}, got {value!r}"
        ) from None
    if result < minimum or (maximum is not None and result > maximum):
        expected = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an integer {expected}, got {result}")
    return result


def check_shape(name: str, array: jax.Array, expected: tuple[int | None, ...]) -> None:
    """Raises ValueError unless ``array.shape`` matches ``expected`` (None = any size)."""
    shape = tuple(array.shape)
    ok = len(shape) == len(expected) and all(
        e is None or s == e for s, e in zip(shape, expected, strict=True)
    )
    if not ok:
        pretty = tuple("*" if e is None else e for e in expected)
        raise ValueError(f"{name} must have shape {pretty}, got {shape}")


def last_step(ys: jax.Array, lengths: jax.Array | None = None) -> jax.Array:
    """The output at the last valid step of each sequence.

    Args:
        ys: ``(B, T, F)`` per-step outputs.
        lengths: optional ``(B,)`` int valid lengths; None means every step is valid.

    Returns:
        ``(B, F)``: ``ys[:, -1]``, or ``ys[b, lengths[b] - 1]`` for each ``b``.
    """
    if lengths is None:
        return ys[:, -1, :]
    rows = jnp.arange(ys.shape[0], dtype=jnp.int32)
    return ys[rows, lengths.astype(jnp.int32) - 1, :]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-element softmax cross-entropy ``-log softmax(logits)[label]`` in nats.

    Gathers the label's log-probability instead of multiplying by a one-hot, so logits of
    ``-inf`` (probability exactly 0) on other classes stay finite.

    Args:
        logits: ``(..., C)`` floats.
        labels: ``(...)`` integer class ids.

    Returns:
        ``(...)`` float32 losses.
    """
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(log_probs, labels.astype(jnp.int32)[..., None], axis=-1)
    return -picked[..., 0]


def predicted_class(logits: jax.Array, like: jax.Array) -> jax.Array:
    """``argmax(logits, -1)`` in the integer dtype of ``like`` (strict-promotion safe)."""
    return jnp.argmax(logits, axis=-1).astype(like.dtype)
