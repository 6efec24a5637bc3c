"""Sequential digits: scikit-learn's 8x8 handwritten digits read one pixel per step.

A small real-data sequence classification task that trains on a CPU: each 8x8 image
(1797 in all, pixel values 0..16) becomes a sequence of 64 steps of one value in [0, 1],
read row by row (or in a fixed random pixel order with ``permute=True``, as in permuted
sequential MNIST). The model classifies from its output at the last step.

Split (fixed, documented so results are comparable): the 1797 images are shuffled with
``numpy.random.RandomState(0).permutation(1797)``; the first 1500 are the training set,
the remaining 297 the test set. The pixel permutation is
``numpy.random.RandomState(permutation_seed).permutation(64)``. NumPy's legacy
``RandomState`` stream is frozen by NumPy's compatibility policy (NEP 19), so both stay
the same across NumPy and JAX versions. Batches are then sampled with ``jax.random``.

scikit-learn is imported only when the data is first loaded (``pip install
rnncells[tasks]``).

References:
    Alpaydin & Kaynak 1995, "Optical Recognition of Handwritten Digits", UCI Machine
    Learning Repository, https://doi.org/10.24432/C50P49 (the data behind
    ``sklearn.datasets.load_digits``); Le, Jaitly & Hinton 2015,
    https://arxiv.org/abs/1504.00941 (pixel-by-pixel and permuted MNIST).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from ._common import Batch, Task, check_int, check_shape, cross_entropy, last_step, predicted_class

__all__ = [
    "BASELINE_LOSS",
    "CHANCE_ACCURACY",
    "NUM_CLASSES",
    "NUM_EXAMPLES",
    "NUM_TEST",
    "NUM_TRAIN",
    "SEQ_LEN",
    "SPLIT_SEED",
    "accuracy",
    "digits_task",
    "loss",
    "make_batch",
    "pixel_permutation",
    "test_set",
    "train_set",
]

NUM_CLASSES = 10
SEQ_LEN = 64
NUM_EXAMPLES = 1797
NUM_TRAIN = 1500
NUM_TEST = NUM_EXAMPLES - NUM_TRAIN
SPLIT_SEED = 0
BASELINE_LOSS = math.log(NUM_CLASSES)
"""Cross-entropy of the uniform predictor, ``ln 10`` (about 2.303 nats)."""
CHANCE_ACCURACY = 1.0 / NUM_CLASSES


def pixel_permutation(permutation_seed: int = 0) -> np.ndarray:
    """The fixed pixel order ``(64,)`` int used by ``permute=True`` for this seed."""
    return np.random.RandomState(permutation_seed).permutation(SEQ_LEN)


def _arrays(permute: bool, permutation_seed: int) -> tuple[np.ndarray, ...]:
    """``(train_x, train_y, test_x, test_y)`` as read-only NumPy arrays (loaded once)."""
    seed = check_int("permutation_seed", permutation_seed, 0, 2**32 - 1)
    return _load(_check_permute(permute), seed)


def _check_permute(permute) -> bool:
    if not isinstance(permute, bool | np.bool_):  # bool("False") would be True
        raise TypeError(f"permute must be a bool, got {permute!r}")
    return bool(permute)


@functools.lru_cache(maxsize=8)
def _load(permute: bool, permutation_seed: int) -> tuple[np.ndarray, ...]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the digits task needs scikit-learn: pip install 'rnncells[tasks]'"
        ) from error
    digits = load_digits()
    # Row-major pixel order: step 8 * row + col is pixel (row, col); 16 is the max value.
    inputs = (digits.images.reshape(-1, SEQ_LEN) / 16.0).astype(np.float32)
    if permute:
        inputs = inputs[:, pixel_permutation(permutation_seed)]
    inputs = inputs[:, :, None]
    labels = digits.target.astype(np.int32)
    order = np.random.RandomState(SPLIT_SEED).permutation(NUM_EXAMPLES)
    train, test = order[:NUM_TRAIN], order[NUM_TRAIN:]
    arrays = (inputs[train], labels[train], inputs[test], labels[test])
    for array in arrays:
        array.setflags(write=False)
    return arrays


def train_set(permute: bool = False, permutation_seed: int = 0) -> Batch:
    """The whole training set: ``Batch(inputs (1500, 64, 1) float32, targets (1500,) int32)``."""
    train_x, train_y, _, _ = _arrays(permute, permutation_seed)
    return Batch(inputs=jnp.asarray(train_x), targets=jnp.asarray(train_y))


def test_set(permute: bool = False, permutation_seed: int = 0) -> Batch:
    """The whole test set: ``Batch(inputs (297, 64, 1) float32, targets (297,) int32)``."""
    _, _, test_x, test_y = _arrays(permute, permutation_seed)
    return Batch(inputs=jnp.asarray(test_x), targets=jnp.asarray(test_y))


# Generators and losses are jitted (sizes static) so an eager call compiles once, not
# op by op; argument checks run at trace time.
@functools.partial(jax.jit, static_argnames=("batch_size", "permute", "permutation_seed"))
def make_batch(
    key: jax.Array, batch_size: int, *, permute: bool = False, permutation_seed: int = 0
) -> Batch:
    """A batch of ``batch_size`` distinct training images drawn uniformly with ``key``.

    Args:
        key: a PRNG key.
        batch_size: B in ``[1, 1500]`` (static under jit); sampled without replacement.
        permute: read the pixels in the fixed order `pixel_permutation` (static).
        permutation_seed: seed of that order (static).

    Returns:
        ``Batch(inputs, targets)``: inputs ``(B, 64, 1)`` float32 in [0, 1], targets
        ``(B,)`` int32 labels in 0..9.

    Raises:
        ValueError: if ``batch_size`` is not in ``[1, 1500]``.

    Example:
        >>> batch = make_batch(jax.random.key(0), 32)
        >>> batch.inputs.shape, batch.targets.dtype
        ((32, 64, 1), dtype('int32'))
    """
    batch_size = check_int("batch_size", batch_size, 1, NUM_TRAIN)
    train_x, train_y, _, _ = _arrays(permute, permutation_seed)
    index = jax.random.choice(key, NUM_TRAIN, (batch_size,), replace=False)
    return Batch(inputs=jnp.asarray(train_x)[index], targets=jnp.asarray(train_y)[index])


@jax.jit
def loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy (nats) of ``logits (B, 10)`` against ``labels (B,)``."""
    check_shape("logits", logits, (*labels.shape, NUM_CLASSES))
    return jnp.mean(cross_entropy(logits, labels))


@jax.jit
def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of ``argmax(logits, -1) == labels``."""
    check_shape("logits", logits, (*labels.shape, NUM_CLASSES))
    return jnp.mean((predicted_class(logits, labels) == labels).astype(jnp.float32))


def digits_task(permute: bool = False, permutation_seed: int = 0) -> Task:
    """Sequential digits as a `Task`: the loss reads the last step ``ys[:, -1]`` (logits).

    ``make_batch`` samples the training set; ``test_batch()`` is the whole test set.
    ``solved``: accuracy at least 0.9 (project choice; evaluate on ``test_batch()``).
    Chance is ``ln 10`` loss and 10% accuracy.
    """
    check_int("permutation_seed", permutation_seed, 0, 2**32 - 1)
    _check_permute(permute)

    def task_loss(ys: jax.Array, batch: Batch) -> jax.Array:
        check_shape("ys", ys, (None, SEQ_LEN, NUM_CLASSES))
        return loss(last_step(ys), batch.targets)

    def metric(ys: jax.Array, batch: Batch) -> dict[str, jax.Array]:
        check_shape("ys", ys, (None, SEQ_LEN, NUM_CLASSES))
        logits = last_step(ys)
        return {"loss": loss(logits, batch.targets), "accuracy": accuracy(logits, batch.targets)}

    def sample(key: jax.Array, batch_size: int) -> Batch:
        return make_batch(key, batch_size, permute=permute, permutation_seed=permutation_seed)

    return Task(
        name="digits",
        input_size=1,
        output_size=NUM_CLASSES,
        seq_len=SEQ_LEN,
        make_batch=sample,
        loss=jax.jit(task_loss),
        metric=jax.jit(metric),
        baseline_loss=BASELINE_LOSS,
        solved=lambda metrics: bool(metrics["accuracy"] >= 0.9),
        test_batch=lambda: test_set(permute, permutation_seed),
    )
