"""Tests of rnncells.tasks: layouts recomputed independently in NumPy, baselines, errors.

Compiling a PRNG batch generator dominates the run time, so the tests share a few
``(batch_size, T)`` shapes through cached helpers (one compile each).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnncells.tasks import TASK_NAMES, Batch, Task, adding, copy, digits, get_task


@pytest.fixture(autouse=True, scope="module")
def strict_numpy():
    """Every test runs with implicit rank promotion and implicit dtype promotion forbidden."""
    with jax.numpy_rank_promotion("raise"), jax.numpy_dtype_promotion("strict"):
        yield


def key(seed: int = 0) -> jax.Array:
    return jax.random.key(seed)


def as_np(batch: Batch) -> Batch:
    return jax.tree.map(np.asarray, batch)


def one_hot(labels, scale: float = 1.0) -> jax.Array:
    """NumPy one-hot logits (cheaper than compiling jax.nn.one_hot for each shape)."""
    return jnp.asarray(np.eye(10, dtype=np.float32)[np.asarray(labels)] * scale)


def normal(seed: int, shape: tuple[int, ...]) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def assert_batches_equal(a: Batch, b: Batch) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def assert_batches_differ(a: Batch, b: Batch) -> None:
    assert not np.array_equal(np.asarray(a.inputs), np.asarray(b.inputs))


# Shared shapes: (batch_size, T) per generator, each compiled once.
ADDING = (512, 9)
ADDING_HS = (1000, 31)
COPY = (200, 30)
VARIABLE_COPY = (400, 6)


@functools.cache
def adding_batch(seed: int, batch_size: int, T: int) -> Batch:
    return as_np(adding.make_batch(key(seed), batch_size, T))


@functools.cache
def hs_batch(seed: int, batch_size: int, T: int) -> Batch:
    return as_np(adding.make_hs_batch(key(seed), batch_size, T))


@functools.cache
def copy_batch(seed: int, batch_size: int, T: int) -> Batch:
    return as_np(copy.make_batch(key(seed), batch_size, T))


@functools.cache
def variable_batch(seed: int, batch_size: int, T: int) -> Batch:
    return as_np(copy.make_variable_batch(key(seed), batch_size, T))


# --------------------------------------------------------------------------- adding


@pytest.mark.parametrize("T", [2, 9])
def test_adding_shapes_markers_and_targets(T):
    n = ADDING[0]
    b = adding_batch(1, n, T)
    assert b.inputs.shape == (n, T, 2) and b.inputs.dtype == np.float32
    assert b.targets.shape == (n, 1) and b.targets.dtype == np.float32
    assert b.lengths is None and b.mask is None
    values, markers = b.inputs[..., 0], b.inputs[..., 1]
    assert values.min() >= 0.0 and values.max() < 1.0
    assert set(np.unique(markers)) <= {0.0, 1.0}
    half = T // 2
    np.testing.assert_array_equal(markers[:, :half].sum(1), 1.0)
    np.testing.assert_array_equal(markers[:, half:].sum(1), 1.0)
    p1 = np.argmax(markers[:, :half], axis=1)
    p2 = half + np.argmax(markers[:, half:], axis=1)
    rows = np.arange(n)
    np.testing.assert_allclose(b.targets[:, 0], values[rows, p1] + values[rows, p2], rtol=1e-6)
    # Every position of each half is used (catches off-by-one ranges).
    assert set(p1) == set(range(half)) and set(p2) == set(range(half, T))


def test_adding_deterministic_per_key():
    a = adding_batch(3, *ADDING)
    assert_batches_equal(a, adding.make_batch(key(3), *ADDING))
    assert_batches_differ(a, adding_batch(4, *ADDING))


def test_adding_predicting_one_reaches_one_sixth():
    """MSE of predicting 1 is the mean of (S - 1)^2, S a sum of two U[0, 1].

    (S - 1) is triangular on [-1, 1]: E[(S-1)^2] = 1/6, E[(S-1)^4] = 1/15, so one squared
    error has variance 1/15 - 1/36 = 7/180 and the batch mean has standard deviation
    sqrt(7/180/N); 5 of them (false alarm ~6e-7) is ~0.007 at N = 40 * 512, below the
    0.01 that e.g. predicting 0.9 would add. Forty keys reuse one compiled shape.
    """
    targets = np.concatenate([adding_batch(100 + i, *ADDING).targets for i in range(40)])
    n = targets.shape[0]
    loss = float(adding.mse(jnp.ones((n, 1), jnp.float32), jnp.asarray(targets)))
    tolerance = 5 * math.sqrt(7 / 180 / n)
    assert abs(loss - 1 / 6) < tolerance
    assert adding.BASELINE_MSE == pytest.approx(1 / 6)


def test_success_rate_uses_strict_threshold():
    targets = jnp.full((4, 1), 0.5, jnp.float32)
    predictions = jnp.asarray([[0.53], [0.55], [0.465], [0.44]], jnp.float32)
    assert float(adding.success_rate(predictions, targets)) == 0.5


# --------------------------------------------------------------------------- adding_hs


def test_adding_hs_layout():
    n, T = ADDING_HS
    b = hs_batch(6, n, T)
    padded = T + T // 10
    assert b.inputs.shape == (n, padded, 2) and b.inputs.dtype == np.float32
    assert b.targets.shape == (n, 1) and b.targets.dtype == np.float32
    assert b.lengths.shape == (n,) and b.lengths.dtype == np.int32
    assert set(b.lengths) == set(range(T, padded + 1))
    positions, zero_marked = set(), 0
    for row in range(n):
        values, markers, length = b.inputs[row, :, 0], b.inputs[row, :, 1], b.lengths[row]
        assert not values[length:].any() and not markers[length:].any()  # padding is (0, 0)
        assert values.min() >= -1.0 and values.max() < 1.0
        marked = np.flatnonzero(markers == 1.0)
        assert len(marked) == 2
        # p1 is among the first ten pairs, so the smaller mark is; p2 is among the first
        # T//2 - 1 still-unmarked pairs, which reach pair T//2 - 1.
        assert marked[0] < 10 and marked[1] <= T // 2 - 1
        positions.update(marked)
        # -1 at the first pair (unless marked) and at the final valid pair, 0 elsewhere.
        expected = np.zeros(padded, np.float32)
        expected[[0, length - 1]] = -1.0
        expected[marked] = 1.0
        np.testing.assert_array_equal(markers, expected)
        if marked[0] == 0:
            assert values[0] == 0.0  # the paper's "X1 is set to zero"
            zero_marked += 1
        target = 0.5 + values[marked].sum() / 4.0
        np.testing.assert_allclose(b.targets[row, 0], target, rtol=1e-6, atol=1e-7)
    assert positions == set(range(T // 2))
    assert zero_marked > 0  # the pair-0 rule was exercised


def test_adding_hs_deterministic_per_key():
    a = hs_batch(8, *ADDING_HS)
    assert_batches_equal(a, adding.make_hs_batch(key(8), *ADDING_HS))
    assert_batches_differ(a, hs_batch(9, *ADDING_HS))


def test_adding_hs_constant_half_reaches_closed_form():
    """Predicting 0.5 gives hs_baseline_mse(T) within 5 standard errors.

    The standard error comes from the sample variance of the squared errors (CLT,
    N = 50 * 1000, about 2.3e-4); at T = 31 the pair-0 zeroing lowers the baseline from
    1/24 = 0.0417 to 0.0382, a gap of about 15 standard errors, so the test sees it.
    """
    n, T = ADDING_HS
    targets = np.concatenate([hs_batch(200 + i, n, T).targets for i in range(50)])
    squared = np.square(targets.astype(np.float64) - 0.5)
    tolerance = 5 * squared.std() / math.sqrt(squared.size)
    assert abs(squared.mean() - adding.hs_baseline_mse(T)) < tolerance
    assert abs(squared.mean() - 1 / 24) > tolerance
    assert adding.hs_baseline_mse(T) == pytest.approx((2 - 0.1 - 0.9 / 14) / 48)


# --------------------------------------------------------------------------- copy


def numpy_copy_layout(data: np.ndarray, T: int) -> tuple[np.ndarray, np.ndarray]:
    n = data.shape[0]
    inputs = np.zeros((n, T + 20), np.int32)
    targets = np.zeros((n, T + 20), np.int32)
    inputs[:, :10] = data
    inputs[:, T + 9] = 9
    targets[:, T + 10 :] = data
    return inputs, targets


@pytest.mark.parametrize("T", [1, 30])
def test_copy_layout(T):
    n = COPY[0]
    b = copy_batch(11, n, T)
    assert b.inputs.shape == b.targets.shape == (n, T + 20)
    assert b.inputs.dtype == b.targets.dtype == np.int32
    data = b.inputs[:, :10]
    assert set(np.unique(data)) == set(range(1, 9))
    inputs, targets = numpy_copy_layout(data, T)
    np.testing.assert_array_equal(b.inputs, inputs)
    np.testing.assert_array_equal(b.targets, targets)


def test_copy_deterministic_per_key():
    a = copy_batch(12, *COPY)
    assert_batches_equal(a, copy.make_batch(key(12), *COPY))
    assert_batches_differ(a, copy_batch(13, *COPY))


@pytest.mark.parametrize("T", [1, 30])
def test_copy_memoryless_predictor_equals_baseline(T):
    n = COPY[0]
    logits = copy.memoryless_logits(n, T)
    assert logits.shape == (n, T + 20, 10) and logits.dtype == jnp.float32
    loss = float(copy.loss(logits, jnp.asarray(copy_batch(11, n, T).targets)))
    # Equal up to float32 rounding of a mean of B * (T + 20) terms.
    np.testing.assert_allclose(loss, 10 * math.log(8) / (T + 20), rtol=2e-6)
    assert copy.baseline_loss(T) == pytest.approx(10 * math.log(8) / (T + 20), rel=1e-12)


def test_copy_baseline_matches_published_values():
    published = {100: 0.1733, 200: 0.0945, 500: 0.0400, 1000: 0.0204, 2000: 0.0103}
    for T, value in published.items():
        assert round(copy.baseline_loss(T), 4) == value


def test_copy_loss_and_accuracy_against_numpy():
    n, T = COPY
    targets = copy_batch(11, n, T).targets
    logits = normal(16, (n, T + 20, 10))
    x = np.asarray(logits, np.float64)
    log_probs = x - x.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    expected = -np.take_along_axis(log_probs, targets[..., None], -1).mean()
    np.testing.assert_allclose(float(copy.loss(logits, jnp.asarray(targets))), expected, rtol=1e-5)
    # Accuracy: perfect logits recall all; corrupting 3 of 10 * n recall steps costs 3.
    perfect = np.asarray(one_hot(targets))
    assert float(copy.accuracy(jnp.asarray(perfect), jnp.asarray(targets))) == 1.0
    assert float(copy.loss(jnp.asarray(perfect * 100.0), jnp.asarray(targets))) < 1e-6
    wrong = perfect.copy()
    for row, step in [(0, -1), (2, -10), (5, -4)]:
        wrong[row, step] = np.roll(wrong[row, step], 1)
    wrong[1, 0] = np.roll(wrong[1, 0], 1)  # errors outside the recall window do not count
    accuracy = float(copy.accuracy(jnp.asarray(wrong), jnp.asarray(targets)))
    assert accuracy == pytest.approx(1 - 3 / (10 * n))


# --------------------------------------------------------------------------- variable copy


@pytest.mark.parametrize("T", [1, 6])
def test_variable_copy_layout(T):
    n = VARIABLE_COPY[0]
    b = variable_batch(17, n, T)
    length = T + 21
    for name in ("inputs", "targets"):
        array = getattr(b, name)
        assert array.shape == (n, length) and array.dtype == np.int32
    assert b.mask.shape == (n, length) and b.mask.dtype == np.float32
    assert b.lengths.shape == (n,) and b.lengths.dtype == np.int32
    gaps = []
    for row in range(n):
        data = b.inputs[row, :10]
        assert data.min() >= 1 and data.max() <= 8
        (delimiter,) = np.flatnonzero(b.inputs[row] == 9)
        gap = delimiter - 10
        assert 1 <= gap <= T
        gaps.append(gap)
        inputs = np.zeros(length, np.int32)
        inputs[:10] = data
        inputs[delimiter] = 9
        targets = np.zeros(length, np.int32)
        targets[delimiter + 1 : delimiter + 11] = data
        mask = np.zeros(length, np.float32)
        mask[delimiter + 1 : delimiter + 11] = 1.0
        np.testing.assert_array_equal(b.inputs[row], inputs)
        np.testing.assert_array_equal(b.targets[row], targets)
        np.testing.assert_array_equal(b.mask[row], mask)
        assert b.lengths[row] == delimiter + 11
    assert set(gaps) == set(range(1, T + 1))


def test_variable_copy_memoryless_predictor_equals_baseline_and_mask_is_used():
    batch = jax.tree.map(jnp.asarray, variable_batch(17, *VARIABLE_COPY))
    logits = copy.variable_memoryless_logits(batch.inputs)
    loss = float(copy.masked_loss(logits, batch.targets, batch.mask))
    np.testing.assert_allclose(loss, math.log(8), rtol=1e-6)
    assert copy.variable_baseline_loss() == pytest.approx(math.log(8))
    # Changing logits off the mask changes nothing; on the mask it does.
    noise = normal(19, logits.shape)
    off = jnp.where(batch.mask[..., None] > 0, logits, noise)
    assert float(copy.masked_loss(off, batch.targets, batch.mask)) == pytest.approx(loss)
    perfect = one_hot(batch.targets, 50.0)
    assert float(copy.masked_loss(perfect, batch.targets, batch.mask)) < 1e-6
    assert float(copy.masked_accuracy(perfect, batch.targets, batch.mask)) == 1.0
    on = jnp.where(batch.mask[..., None] > 0, noise, logits)
    assert float(copy.masked_accuracy(on, batch.targets, batch.mask)) < 0.5


def test_variable_copy_deterministic_per_key():
    a = variable_batch(20, *VARIABLE_COPY)
    assert_batches_equal(a, copy.make_variable_batch(key(20), *VARIABLE_COPY))
    assert_batches_differ(a, variable_batch(21, *VARIABLE_COPY))


# --------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def raw_digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.reshape(-1, 64) / 16.0, d.target


def test_digits_split_shapes_and_values(raw_digits):
    train, test = as_np(digits.train_set()), as_np(digits.test_set())
    assert train.inputs.shape == (1500, 64, 1) and test.inputs.shape == (297, 64, 1)
    assert train.inputs.dtype == np.float32 and train.targets.dtype == np.int32
    assert train.targets.shape == (1500,) and test.targets.shape == (297,)
    for split in (train, test):
        assert split.inputs.min() == 0.0 and split.inputs.max() == 1.0
        assert set(np.unique(split.targets)) == set(range(10))
    # Train and test together are the 1797 raw images, row-major, each exactly once.
    images, _ = raw_digits
    ours = [x.tobytes() for split in (train, test) for x in split.inputs[..., 0]]
    assert sorted(ours) == sorted(img.astype(np.float32).tobytes() for img in images)


def test_digits_split_is_the_documented_shuffle(raw_digits):
    images, labels = raw_digits
    order = np.random.RandomState(0).permutation(1797)
    np.testing.assert_array_equal(digits.test_set().targets, labels[order[1500:]])
    np.testing.assert_array_equal(
        digits.train_set().inputs[..., 0], images[order[:1500]].astype(np.float32)
    )


def test_digits_permutation_is_fixed_and_applied_everywhere():
    perm = digits.pixel_permutation(3)
    assert sorted(perm) == list(range(64)) and not np.array_equal(perm, np.arange(64))
    np.testing.assert_array_equal(perm, digits.pixel_permutation(3))
    assert not np.array_equal(perm, digits.pixel_permutation(4))
    plain, permuted = digits.test_set(), digits.test_set(permute=True, permutation_seed=3)
    np.testing.assert_array_equal(permuted.inputs, np.asarray(plain.inputs)[:, perm])
    np.testing.assert_array_equal(permuted.targets, plain.targets)
    batch = digits.make_batch(key(22), 16, permute=True, permutation_seed=3)
    same = digits.make_batch(key(22), 16)
    np.testing.assert_array_equal(batch.inputs, np.asarray(same.inputs)[:, perm])


@pytest.mark.parametrize("permute", ["False", 1, None])
def test_digits_permute_must_be_a_bool(permute):
    with pytest.raises(TypeError, match=f"permute must be a bool, got {permute!r}"):
        get_task("digits", permute=permute)
    with pytest.raises(TypeError, match="permute must be a bool"):
        digits.test_set(permute=permute)


def test_digits_make_batch_samples_training_set_without_replacement():
    b = digits.make_batch(key(23), 16)
    assert b.inputs.shape == (16, 64, 1) and b.targets.shape == (16,)
    assert_batches_equal(b, digits.make_batch(key(23), 16))
    assert_batches_differ(b, digits.make_batch(key(24), 16))
    everything = as_np(digits.make_batch(key(25), 1500))
    train = as_np(digits.train_set())
    assert sorted(map(bytes, everything.inputs)) == sorted(map(bytes, train.inputs))
    np.testing.assert_array_equal(np.sort(everything.targets), np.sort(train.targets))


def test_digits_loss_and_accuracy():
    labels = jnp.asarray([0, 3, 9, 3], jnp.int32)
    uniform = jnp.zeros((4, 10), jnp.float32)
    assert float(digits.loss(uniform, labels)) == pytest.approx(math.log(10), rel=1e-6)
    assert digits.BASELINE_LOSS == pytest.approx(math.log(10))
    assert digits.CHANCE_ACCURACY == 0.1
    logits = one_hot([0, 3, 1, 2])
    assert float(digits.accuracy(logits, labels)) == 0.5


# --------------------------------------------------------------------------- Task registry


# Per task: get_task kwargs and a batch size that reuse the shapes compiled above.
TASK_SETTINGS = {
    "adding": ({"T": ADDING[1]}, ADDING[0]),
    "adding_hs": ({"T": ADDING_HS[1]}, ADDING_HS[0]),
    "copy": ({"T": COPY[1]}, COPY[0]),
    "variable_copy": ({"T": VARIABLE_COPY[1]}, VARIABLE_COPY[0]),
    "digits": ({}, 16),
}


@pytest.mark.parametrize("name", TASK_NAMES)
def test_task_interface(name):
    kwargs, n = TASK_SETTINGS[name]
    task = get_task(name, **kwargs)
    assert isinstance(task, Task) and task.name == name
    batch = task.make_batch(key(26), n)
    if task.vocab_size is None:
        assert batch.inputs.shape == (n, task.seq_len, task.input_size)
    else:
        assert batch.inputs.shape == (n, task.seq_len) and batch.inputs.dtype == jnp.int32
        assert int(batch.inputs.max()) < task.vocab_size == task.input_size
    ys = normal(27, (n, task.seq_len, task.output_size))
    loss = task.loss(ys, batch)
    assert loss.shape == () and np.isfinite(float(loss))
    metrics = task.metric(ys, batch)
    assert float(metrics["loss"]) == pytest.approx(float(loss), rel=1e-6)
    assert set(metrics) in ({"loss", "accuracy"}, {"loss", "success_rate"})
    assert task.solved(metrics) is False
    assert task.baseline_loss > 0
    with pytest.raises(ValueError, match=r"ys must have shape"):
        task.loss(ys[:, :-1], batch)


def test_task_make_batch_inside_jit():
    """A training step jits make_batch with a static batch size (digits embeds its data)."""
    kwargs, n = TASK_SETTINGS["digits"]
    task = get_task("digits", **kwargs)
    jitted = jax.jit(task.make_batch, static_argnums=1)(key(31), n)
    assert_batches_equal(jitted, task.make_batch(key(31), n))


def test_adding_tasks_read_the_last_valid_step():
    """The right value at the read step and garbage elsewhere gives loss 0."""
    for name in ("adding", "adding_hs"):
        kwargs, n = TASK_SETTINGS[name]
        task = get_task(name, **kwargs)
        batch = task.make_batch(key(28), n)
        lengths = np.full(n, task.seq_len) if batch.lengths is None else np.asarray(batch.lengths)
        ys = np.full((n, task.seq_len, 1), 7.0, np.float32)
        ys[np.arange(n), lengths - 1, 0] = np.asarray(batch.targets)[:, 0]
        assert float(task.loss(jnp.asarray(ys), batch)) == 0.0
        metrics = task.metric(jnp.asarray(ys), batch)
        assert task.solved(metrics)
        assert not task.solved(task.metric(jnp.zeros_like(ys), batch))
    assert get_task("adding_hs", T=31).seq_len == 34


def test_copy_tasks_baseline_through_the_interface():
    n, T = COPY
    task = get_task("copy", T=T)
    batch = task.make_batch(key(29), n)
    ys = copy.memoryless_logits(n, T)
    np.testing.assert_allclose(float(task.loss(ys, batch)), task.baseline_loss, rtol=2e-6)
    assert not task.solved(task.metric(ys, batch))
    n, T = VARIABLE_COPY
    vtask = get_task("variable_copy", T=T)
    vbatch = vtask.make_batch(key(30), n)
    vys = copy.variable_memoryless_logits(vbatch.inputs)
    np.testing.assert_allclose(float(vtask.loss(vys, vbatch)), vtask.baseline_loss, rtol=1e-6)
    perfect = one_hot(vbatch.targets)
    assert vtask.solved(vtask.metric(perfect, vbatch))


def test_digits_task_reads_last_step_and_has_test_batch():
    task = get_task("digits", permute=True, permutation_seed=1)
    test = task.test_batch()
    assert test.inputs.shape == (297, 64, 1)
    ys = np.zeros((297, 64, 10), np.float32)
    ys[:, -1] = np.asarray(one_hot(test.targets))
    ys[:, :-1, 0] = 100.0  # earlier steps are ignored
    metrics = task.metric(jnp.asarray(ys), test)
    assert float(metrics["accuracy"]) == 1.0 and task.solved(metrics)


# --------------------------------------------------------------------------- errors


def test_unknown_task_name():
    with pytest.raises(ValueError, match=r"name must be one of .*'adding'.*got 'addition'"):
        get_task("addition")


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: adding.make_batch(key(), 4, 1), r"T must be an integer >= 2, got 1"),
        (lambda: adding.make_batch(key(), 0, 10), r"batch_size must be an integer >= 1, got 0"),
        (lambda: adding.make_hs_batch(key(), 4, 21), r"T must be an integer >= 22, got 21"),
        (lambda: copy.make_batch(key(), 4, 0), r"T must be an integer >= 1, got 0"),
        (lambda: copy.make_variable_batch(key(), -1, 5), r"batch_size .* >= 1, got -1"),
        (lambda: copy.memoryless_logits(2, 0), r"T must be an integer >= 1, got 0"),
        (lambda: digits.make_batch(key(), 1501), r"batch_size .* in \[1, 1500\], got 1501"),
        (lambda: digits.make_batch(key(), 0), r"batch_size .* in \[1, 1500\], got 0"),
        (lambda: get_task("copy", T=0), r"T must be an integer >= 1, got 0"),
        (lambda: get_task("adding_hs", T=10), r"T must be an integer >= 22, got 10"),
        (lambda: get_task("digits", permutation_seed=-1), r"permutation_seed .* got -1"),
        (lambda: adding.make_batch(key(), 2.5, 10), r"batch_size must be a static .* got 2.5"),
        (
            lambda: copy.loss(jnp.zeros((2, 21, 9)), jnp.zeros((2, 21), jnp.int32)),
            r"logits must have shape \(2, 21, 10\), got \(2, 21, 9\)",
        ),
        (
            lambda: adding.mse(jnp.zeros((3,)), jnp.zeros((3, 1))),
            r"predictions must have shape \(3, 1\), got \(3,\)",
        ),
    ],
)
def test_bad_arguments_raise(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()
