"""Stacks and bidirectional layers against manual unrolls; dropout between layers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnncells as rc
from tests.conftest import assert_tree_allclose

D, H, B, T = 3, 4, 3, 5
TIGHT = dict(rtol=1e-12, atol=1e-12)
LENGTHS = np.array([5, 0, 2])


def random_biases(params, rng):
    """The init's biases are mostly zero; random ones make a bias bug visible."""
    params = params._replace(b=jnp.asarray(rng.uniform(-1, 1, params.b.shape), params.b.dtype))
    if isinstance(params, rc.GRUResetAfterParams):
        params = params._replace(b_hn=jnp.asarray(rng.uniform(-1, 1, H), params.b.dtype))
    return params


def with_random_biases(layers, rng):
    out = []
    for layer in layers:
        if isinstance(layer, rc.Bidirectional):
            layer = rc.Bidirectional(*(random_biases(p, rng) for p in layer))
        else:
            layer = random_biases(layer, rng)
        out.append(layer)
    return tuple(out)


def flip_valid_prefix(a, lengths):
    """Reverses each example's first lengths[b] steps of a (B, T, ...) NumPy array."""
    a = np.array(a)
    for b, n in enumerate(lengths):
        a[b, :n] = a[b, :n][::-1].copy()
    return a


@pytest.mark.parametrize(
    "cell,step,lengths", [("lstm", rc.lstm_step, LENGTHS), ("gru", rc.gru_step, None)]
)
def test_stack_of_two_layers_equals_two_manual_unrolls(cell, step, lengths, key, rng):
    layers = with_random_biases(
        rc.stack_init(key, cell, D, H, num_layers=2, dtype=jnp.float64), rng
    )
    assert layers[0].W.shape[0] == D and layers[1].W.shape[0] == H
    xs = jnp.asarray(rng.uniform(-1, 1, (B, T, D)), jnp.float64)
    lengths = None if lengths is None else jnp.asarray(lengths, jnp.int32)

    @jax.jit  # one compilation for both sides
    def run(layers, xs, lengths):
        got = rc.stack_unroll(layers, xs, lengths=lengths)
        final0, ys0 = rc.unroll(step, layers[0], xs, lengths=lengths)
        final1, ys1 = rc.unroll(step, layers[1], ys0, lengths=lengths)
        return got, ((final0, final1), ys1)

    got, expected = run(layers, xs, lengths)
    assert_tree_allclose(got, expected, **TIGHT)


def test_stack_time_major_and_given_carries(key, rng):
    layers = with_random_biases(
        rc.stack_init(key, "rnn", D, H, num_layers=2, dtype=jnp.float64), rng
    )
    xs = jnp.asarray(rng.uniform(-1, 1, (T, B, D)), jnp.float64)
    carries = tuple(rc.RNNState(jnp.asarray(rng.uniform(-1, 1, (B, H)), jnp.float64)) for _ in "ab")

    @jax.jit
    def run(layers, xs, carries):
        got = rc.stack_unroll(layers, xs, carries, time_major=True)
        final0, ys0 = rc.unroll(rc.rnn_step, layers[0], xs, carries[0], time_major=True)
        final1, ys1 = rc.unroll(rc.rnn_step, layers[1], ys0, carries[1], time_major=True)
        return got, ((final0, final1), ys1)

    got, expected = run(layers, xs, carries)
    assert_tree_allclose(got, expected, **TIGHT)


@pytest.mark.parametrize("merge,lengths", [("concat", LENGTHS), ("sum", None)])
def test_bidirectional_equals_forward_and_flipped_unrolls(merge, lengths, key, rng):
    k_f, k_b = jax.random.split(key)
    params = rc.Bidirectional(
        random_biases(rc.lstm_init(k_f, D, H, dtype=jnp.float64), rng),
        random_biases(rc.lstm_init(k_b, D, H, dtype=jnp.float64), rng),
    )
    xs = rng.uniform(-1, 1, (B, T, D))
    lengths_j = None if lengths is None else jnp.asarray(lengths, jnp.int32)
    # The backward direction by hand: flip each valid prefix, run forward, flip back.
    flipped = flip_valid_prefix(xs, np.full(B, T) if lengths is None else lengths)

    @jax.jit
    def run(params, xs, flipped, lengths):
        got = rc.bidirectional_unroll(None, params, xs, lengths=lengths, merge=merge)
        fwd = rc.unroll(rc.lstm_step, params.forward, xs, lengths=lengths)
        bwd = rc.unroll(rc.lstm_step, params.backward, flipped, lengths=lengths)
        return got, fwd, bwd

    as64 = lambda a: jnp.asarray(a, jnp.float64)
    (carry, ys), (final_f, ys_f), (final_b, ys_b) = run(params, as64(xs), as64(flipped), lengths_j)
    ys_b = as64(flip_valid_prefix(ys_b, np.full(B, T) if lengths is None else lengths))
    expected = jnp.concatenate([ys_f, ys_b], axis=-1) if merge == "concat" else ys_f + ys_b
    assert ys.shape == (B, T, 2 * H if merge == "concat" else H)
    assert isinstance(carry, rc.Bidirectional)
    assert_tree_allclose((carry, ys), (rc.Bidirectional(final_f, final_b), expected), **TIGHT)
    if lengths is not None:
        assert not np.any(np.asarray(ys)[1]) and not np.any(np.asarray(ys)[2, 2:])


def test_bidirectional_stack_equals_chained_bidirectional_unrolls(key, rng):
    merge = "concat"  # the next layer's input is 2H
    layers = rc.stack_init(
        key, "gru", D, H, num_layers=2, bidirectional=True, merge=merge, dtype=jnp.float64
    )
    layers = with_random_biases(layers, rng)
    assert layers[1].forward.W.shape[0] == (2 * H if merge == "concat" else H)
    xs = jnp.asarray(rng.uniform(-1, 1, (B, T, D)), jnp.float64)
    lengths = jnp.asarray(LENGTHS, jnp.int32)

    @jax.jit
    def run(layers, xs, lengths):
        got = rc.stack_unroll(layers, xs, lengths=lengths, merge=merge)
        final0, ys0 = rc.bidirectional_unroll(None, layers[0], xs, lengths=lengths, merge=merge)
        final1, ys1 = rc.bidirectional_unroll(None, layers[1], ys0, lengths=lengths, merge=merge)
        return got, ((final0, final1), ys1)

    got, expected = run(layers, xs, lengths)
    assert_tree_allclose(got, expected, **TIGHT)


def identity_step(p, c, x):
    """Outputs its input times p, so the stack's output shows what dropout did."""
    return c, x * p


def identity_stack(xs, num_layers, **kwargs):
    one = jnp.asarray(1.0, jnp.float32)
    carries = (jnp.zeros((), jnp.float32),) * num_layers
    return rc.stack_unroll((one,) * num_layers, xs, carries, step=identity_step, **kwargs)[1]


def test_dropout_rate_zero_is_identity(key, rng):
    layers = rc.stack_init(key, "rnn", D, H, num_layers=2)
    xs = jnp.asarray(rng.uniform(-1, 1, (B, T, D)), jnp.float32)

    @jax.jit
    def run(layers, xs, key):
        plain = rc.stack_unroll(layers, xs)
        return plain, rc.stack_unroll(layers, xs, dropout_rate=0.0, dropout_key=key)

    plain, keyed = run(layers, xs, key)
    assert_tree_allclose(keyed, plain, rtol=0, atol=0)
    unkeyed = rc.stack_unroll(layers, xs, dropout_rate=0.0)  # no key needed at rate 0
    assert_tree_allclose(unkeyed, plain, rtol=1e-6, atol=1e-6)


def test_dropout_is_deterministic_per_key_and_differs_across_keys(key, rng):
    layers = rc.stack_init(key, "gru", D, H, num_layers=2)
    xs = jnp.asarray(rng.uniform(-1, 1, (B, T, D)), jnp.float32)
    k1, k2 = jax.random.split(key)
    run = jax.jit(lambda k: rc.stack_unroll(layers, xs, dropout_rate=0.5, dropout_key=k)[1])
    first, again, other = run(k1), run(k1), run(k2)
    plain = rc.stack_unroll(layers, xs)[1]
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    assert not np.allclose(first, plain)


@pytest.mark.parametrize("rate", [0.25, 0.6])
def test_dropout_zeroes_a_rate_fraction_between_layers_and_rescales(rate, key):
    xs = jnp.ones((4, 50, 20), jnp.float32)  # 4000 values: the fraction's std is < 0.008
    # One layer: nothing lies between layers, so nothing is dropped (not the input either).
    np.testing.assert_array_equal(identity_stack(xs, 1, dropout_rate=rate, dropout_key=key), xs)
    ys = np.asarray(identity_stack(xs, 2, dropout_rate=rate, dropout_key=key))
    zero = ys == 0
    assert abs(zero.mean() - rate) < 0.04
    np.testing.assert_allclose(ys[~zero], 1.0 / (1.0 - rate), rtol=1e-6)


def test_dropout_requires_a_key(key):
    layers = rc.stack_init(key, "rnn", D, H, num_layers=2)
    with pytest.raises(ValueError, match=r"dropout_key is required when dropout_rate > 0"):
        rc.stack_unroll(layers, jnp.ones((B, T, D), jnp.float32), dropout_rate=0.1)
