"""``unroll`` against plain Python loops, closed forms and hand-made length cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnncells as rc
from rnncells import _modules as common
from tests import reference
from tests.cells.test_cells import KINDS, STATES, STEPS, build, random_carry
from tests.conftest import assert_tree_allclose

D, H, B, T = 3, 4, 3, 5
TIGHT = dict(rtol=1e-12, atol=1e-12)


def loop_of_step(step, params, carry, xs, *, reverse=False):
    """The documented equivalent loop, batch-first xs (*batch, T, D)."""
    ys = [None] * xs.shape[-2]
    order = range(xs.shape[-2])
    for t in reversed(order) if reverse else order:
        carry, ys[t] = step(params, carry, xs[..., t, :])
    return carry, jnp.stack(ys, axis=-2)


def toy_step(p, c, x):
    """c_t = c_{t-1} + x_t, y_t = p c_{t-1}."""
    return c + x, c * p


@pytest.mark.parametrize(
    "kind,time_major,reverse",
    [(kind, False, False) for kind in KINDS]
    + [(kind, True, True) for kind in KINDS]
    + [("lstm", True, False), ("gru", False, True)],
)
def test_unroll_equals_python_loop_of_step(kind, time_major, reverse, rng):
    params, _, _ = build(kind, rng, input_size=D, hidden_size=H)
    carry = random_carry(kind, rng, (B,), hidden_size=H)
    xs = jnp.asarray(rng.uniform(-1, 1, (B, T, D)), jnp.float64)

    @jax.jit  # one compilation for both sides (eager unrolls are tested elsewhere)
    def run(params, carry, xs):
        expected = loop_of_step(STEPS[kind], params, carry, xs, reverse=reverse)
        xs_in = jnp.swapaxes(xs, 0, 1) if time_major else xs
        got = rc.unroll(STEPS[kind], params, xs_in, carry, reverse=reverse, time_major=time_major)
        return got, expected

    (final, ys), expected = run(params, carry, xs)
    if time_major:
        ys = jnp.swapaxes(ys, 0, 1)
    assert isinstance(final, STATES[kind])
    assert_tree_allclose((final, ys), expected, **TIGHT)


@pytest.mark.parametrize("kind", KINDS)
def test_unroll_matches_numpy_reference_with_default_zero_carry(kind, rng):
    params, _, ref_step = build(kind, rng, input_size=D, hidden_size=H)
    xs = rng.uniform(-1, 1, (B, T, D))
    final, ys = rc.unroll(STEPS[kind], params, jnp.asarray(xs, jnp.float64))
    zeros = tuple(np.zeros((B, H)) for _ in STATES[kind]._fields)
    ref_final, ref_ys = reference.unroll(ref_step, zeros, xs)
    assert_tree_allclose((tuple(final), ys), (ref_final, ref_ys), **TIGHT)


@pytest.mark.parametrize("reverse", [False, True])
def test_toy_step_unroll_has_the_closed_form(reverse, rng):
    xs = rng.uniform(-1, 1, (2, T, 3))
    c0 = rng.uniform(-1, 1, (2, 3))
    p = 1.5
    final, ys = rc.unroll(
        toy_step,
        jnp.asarray(p, jnp.float64),
        jnp.asarray(xs, jnp.float64),
        jnp.asarray(c0, jnp.float64),
        reverse=reverse,
    )
    # Forward: y_t = p (c0 + sum_{s<t} x_s); reverse: y_t = p (c0 + sum_{s>t} x_s).
    seen = xs[:, ::-1] if reverse else xs
    before = np.cumsum(seen, axis=1) - seen
    before = before[:, ::-1] if reverse else before
    np.testing.assert_allclose(final, c0 + xs.sum(axis=1), **TIGHT)
    np.testing.assert_allclose(ys, p * (c0[:, None, :] + before), **TIGHT)


# Toy step with p = 1, c0 = 100 and x_t = t + 1, lengths (0, 2, 4) and T = 4, worked by hand.
HAND_LENGTHS = np.array([0, 2, 4])
HAND_FORWARD = ([100, 103, 110], [[0, 0, 0, 0], [100, 101, 0, 0], [100, 101, 103, 106]])
HAND_REVERSE = ([100, 103, 110], [[0, 0, 0, 0], [102, 100, 0, 0], [109, 107, 104, 100]])


@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_lengths_and_reverse_on_hand_made_case(reverse, time_major):
    xs = np.broadcast_to(np.arange(1.0, 5.0)[None, :, None], (3, 4, 1))
    xs = jnp.asarray(np.swapaxes(xs, 0, 1) if time_major else xs, jnp.float64)
    c0 = jnp.full((3, 1), 100.0, jnp.float64)
    lengths = jnp.asarray(HAND_LENGTHS, jnp.int32)
    final, ys = rc.unroll(
        toy_step,
        jnp.asarray(1.0, jnp.float64),
        xs,
        c0,
        lengths=lengths,
        reverse=reverse,
        time_major=time_major,
    )
    final_expected, ys_expected = HAND_REVERSE if reverse else HAND_FORWARD
    ys = np.swapaxes(np.asarray(ys), 0, 1) if time_major else np.asarray(ys)
    np.testing.assert_array_equal(np.asarray(final)[:, 0], final_expected)
    np.testing.assert_array_equal(ys[..., 0], ys_expected)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_cell_lengths_match_reference_packed_loop(kind, reverse, rng):
    params, _, ref_step = build(kind, rng, input_size=D, hidden_size=H)
    carry = random_carry(kind, rng, (B,), hidden_size=H)
    xs = rng.uniform(-1, 1, (B, T, D))
    lengths = np.array([0, 3, T])
    run = jax.jit(lambda *args: rc.unroll(STEPS[kind], *args[:3], lengths=args[3], reverse=reverse))
    final, ys = run(params, jnp.asarray(xs, jnp.float64), carry, jnp.asarray(lengths, jnp.int32))
    ref_final, ref_ys = reference.unroll(
        ref_step, tuple(carry), xs, lengths=lengths, reverse=reverse
    )
    assert_tree_allclose((tuple(final), ys), (ref_final, ref_ys), **TIGHT)
    # Length 0: the carry comes back untouched and every output is exactly zero.
    assert_tree_allclose(tuple(c[0] for c in final), tuple(c[0] for c in carry), rtol=0, atol=0)
    assert not np.any(np.asarray(ys)[0])
    assert not np.any(np.asarray(ys)[1, 3:])


@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_lengths_with_two_leading_batch_dims(reverse, time_major, rng):
    params, _, ref_step = build("lstm", rng, input_size=D, hidden_size=H)
    xs = rng.uniform(-1, 1, (2, 3, T, D))
    lengths = np.array([[0, 1, 5], [4, 2, 3]])
    xs_in = np.moveaxis(xs, -2, 0) if time_major else xs
    run = jax.jit(
        lambda params, xs, lengths: rc.unroll(
            rc.lstm_step, params, xs, lengths=lengths, reverse=reverse, time_major=time_major
        )
    )
    final, ys = run(params, jnp.asarray(xs_in, jnp.float64), jnp.asarray(lengths, jnp.int32))
    assert ys.shape == ((T, 2, 3, H) if time_major else (2, 3, T, H))
    ys = np.moveaxis(np.asarray(ys), 0, -2) if time_major else ys
    zeros = (np.zeros((2, 3, H)), np.zeros((2, 3, H)))
    expected = reference.unroll(ref_step, zeros, xs, lengths=lengths, reverse=reverse)
    assert_tree_allclose((tuple(final), ys), expected, **TIGHT)


def test_traced_lengths_under_jit_equal_eager(rng):
    params, _, _ = build("gru", rng, input_size=D, hidden_size=H)
    xs = jnp.asarray(rng.uniform(-1, 1, (B, T, D)), jnp.float64)
    lengths = jnp.asarray([1, 5, 2], jnp.int32)
    run = lambda lengths: rc.unroll(rc.gru_step, params, xs, lengths=lengths)
    assert_tree_allclose(jax.jit(run)(lengths), run(lengths), **TIGHT)


@pytest.mark.parametrize(
    "kind,lengths,reverse",
    [(kind, (1, 3), True) for kind in KINDS] + [("lstm", None, False)],
)
def test_check_grads_float64(kind, lengths, reverse, rng):
    params, _, _ = build(kind, rng, input_size=2, hidden_size=3)
    xs = jnp.asarray(rng.uniform(-1, 1, (2, 3, 2)), jnp.float64)
    lengths = None if lengths is None else jnp.asarray(lengths, jnp.int32)

    @jax.jit  # one compilation for the many evaluations check_grads makes
    def run(params, xs):
        return rc.unroll(STEPS[kind], params, xs, lengths=lengths, reverse=reverse)

    check_grads(run, (params, xs), order=1, modes=["rev"])


@pytest.mark.parametrize(
    "kind,lengths,reverse", [("lstm", None, False), ("gru_reset_after", (2, 4, 1), True)]
)
def test_remat_gives_same_values_and_gradients(kind, lengths, reverse, rng):
    params, _, _ = build(kind, rng, input_size=D, hidden_size=H)
    xs = jnp.asarray(rng.uniform(-1, 1, (B, 4, D)), jnp.float64)
    lengths = None if lengths is None else jnp.asarray(lengths, jnp.int32)

    def loss(params, xs, remat):
        final, ys = rc.unroll(
            STEPS[kind], params, xs, lengths=lengths, reverse=reverse, remat=remat
        )
        return jnp.sum(ys**2) + jnp.sum(jnp.sin(final.h)), (final, ys)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True), static_argnums=2)
    plain = grad(params, xs, False)
    remat = grad(params, xs, True)
    assert_tree_allclose(remat, plain, rtol=1e-10, atol=1e-12)
    assert np.max(np.abs(np.asarray(plain[0][0].W))) > 0  # the gradient is not trivially zero


@pytest.mark.parametrize("lengths", [None, (5, 0, 3)])
def test_unroll_factor_two_gives_same_values(lengths, rng):
    params, _, _ = build("lstm", rng, input_size=D, hidden_size=H)
    xs = jnp.asarray(rng.uniform(-1, 1, (B, T, D)), jnp.float64)  # T = 5: odd, a remainder
    lengths = None if lengths is None else jnp.asarray(lengths, jnp.int32)

    @jax.jit
    def both(params, xs, lengths):
        one = rc.unroll(rc.lstm_step, params, xs, lengths=lengths)
        return one, rc.unroll(rc.lstm_step, params, xs, lengths=lengths, unroll=2)

    one, two = both(params, xs, lengths)
    assert_tree_allclose(two, one, **TIGHT)


def test_default_unroll_is_8_for_builtin_steps_on_gpu_and_1_otherwise(monkeypatch, rng):
    assert jax.default_backend() == "cpu"  # the suite runs on a CPU
    assert rc.default_unroll(rc.lstm_step) == 1
    params, _, _ = build("gru_reset_after", rng, input_size=D, hidden_size=H)
    xs = jnp.asarray(rng.uniform(-1, 1, (B, 11, D)), jnp.float64)  # 11 = 8 + a remainder
    lengths = jnp.asarray([11, 0, 6], jnp.int32)
    expected = rc.unroll(rc.gru_step, params, xs, lengths=lengths, unroll=1)

    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    for step in (rc.lstm_step, rc.gru_step, rc.rnn_step):
        assert rc.default_unroll(step) == 8
    assert rc.default_unroll(lambda p, c, x: rc.gru_step(p, c, x)) == 1  # a user's step
    # The GPU default (8) runs here on the CPU: same values as unroll=1.
    got = rc.unroll(rc.gru_step, params, xs, lengths=lengths)
    assert_tree_allclose(got, expected, **TIGHT)


def test_forward_mode_jvp_equals_jvp_of_loop_with_fused_false(rng):
    # The fused layer is a jax.custom_vjp (reverse mode only); fused=False gives forward-mode
    # autodiff (jax.jvp, jax.jacfwd) of a built-in cell's unroll, and the default takes it
    # by itself when it sees the jvp around it (tests/test_reliability_core.py).
    params, _, _ = build("rnn", rng, input_size=2, hidden_size=3)
    xs = jnp.asarray(rng.uniform(-1, 1, (2, 3, 2)), jnp.float64)
    dxs = jnp.asarray(rng.uniform(-1, 1, (2, 3, 2)), jnp.float64)
    carry = rc.init_carry(params, (2,))
    expected = jax.jvp(lambda x: loop_of_step(rc.rnn_step, params, carry, x)[1], (xs,), (dxs,))
    got = jax.jvp(lambda x: rc.unroll(rc.rnn_step, params, x, fused=False)[1], (xs,), (dxs,))
    assert_tree_allclose(got, expected, **TIGHT)
    got = jax.jvp(lambda x: rc.unroll(rc.rnn_step, params, x)[1], (xs,), (dxs,))
    assert_tree_allclose(got, expected, **TIGHT)


@pytest.mark.parametrize("reverse", [False, True])
def test_numpy_int64_lengths_without_x64_give_no_warning(reverse):
    # JAX's default mode (x64 off) with NumPy's default int64 lengths: warnings are errors here.
    with jax.enable_x64(False):
        params = rc.rnn_init(jax.random.key(0), D, H)
        xs = jnp.ones((2, T, D), jnp.float32)
        lengths = np.array([3, 5])
        _, ys = rc.unroll(rc.rnn_step, params, xs, lengths=lengths, reverse=reverse)
        assert not np.any(np.asarray(ys)[0, 3:]) and np.all(np.asarray(ys)[1] != 0)


@pytest.mark.parametrize("dtype", [jnp.uint8, jnp.int8, jnp.int16])
@pytest.mark.parametrize("fused,reverse", [(True, False), (True, True), (False, True)])
def test_narrow_integer_lengths_equal_int32_lengths(dtype, fused, reverse):
    # T = 300 is past uint8's and int8's range: time indices in the lengths' own dtype
    # would wrap around and count steps 256.. as valid again.
    params = rc.rnn_init(jax.random.key(0), 2, 3)
    xs = jax.random.normal(jax.random.key(1), (2, 300, 2), jnp.float32)
    lengths = np.array([10, 100])
    run = lambda lens: rc.unroll(
        rc.rnn_step, params, xs, lengths=lens, reverse=reverse, fused=fused
    )
    expected = run(jnp.asarray(lengths, jnp.int32))
    assert_tree_allclose(run(jnp.asarray(lengths, dtype)), expected, rtol=0, atol=0)
    ys = np.asarray(expected[1])
    assert not ys[0, 10:].any() and not ys[1, 100:].any() and ys[1, :100].all()


def test_narrow_integer_lengths_in_reversed_stacks():
    layers = rc.stack_init(jax.random.key(0), "gru", 2, 3)
    xs = jax.random.normal(jax.random.key(1), (2, 300, 2), jnp.float32)
    run = lambda lens: common.layer_apply(layers, xs, lengths=lens, reverse=True)
    expected = run(jnp.asarray([10, 100], jnp.int32))
    assert_tree_allclose(run(jnp.asarray([10, 100], jnp.uint8)), expected, rtol=0, atol=0)
    assert not np.asarray(expected[1])[0, 10:].any()


@pytest.mark.parametrize("reverse", [False, True])
def test_traced_lengths_outside_zero_to_t_are_clipped(reverse):
    # Under jit the values are unknown at trace time, so they cannot raise (eager ones do,
    # test_errors.py): past T means the whole sequence, below 0 means none of it.
    params = rc.lstm_init(jax.random.key(0), D, H)
    xs = jax.random.normal(jax.random.key(1), (2, T, D), jnp.float32)
    run = lambda lens: rc.unroll(rc.lstm_step, params, xs, lengths=lens, reverse=reverse)
    got = jax.jit(run)(jnp.asarray([T + 2, -1], jnp.int32))
    expected = run(jnp.asarray([T, 0], jnp.int32))
    assert_tree_allclose(got, expected, rtol=0, atol=0)
    assert np.isfinite(np.asarray(got[1])).all()
