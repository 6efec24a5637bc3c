"""Initialisers: shapes, dtypes, forget bias, orthogonal V blocks, Glorot W, chrono biases."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnncells as rc

try:
    from scipy import stats
except ImportError:  # pragma: no cover - scipy is optional
    stats = None

D, H = 3, 5
INITS = {
    "lstm": (rc.lstm_init, {}, rc.LSTMParams, 4),
    "gru": (rc.gru_init, {}, rc.GRUParams, 3),
    "gru_reset_after": (rc.gru_init, {"reset_after": True}, rc.GRUResetAfterParams, 3),
    "rnn": (rc.rnn_init, {}, rc.RNNParams, 1),
}


def blocks(a, num_gates):
    """Splits the fused last axis into per-gate blocks."""
    return np.split(np.asarray(a, np.float64), num_gates, axis=-1)


def ks_uniform_pvalue_ok(samples, low, high, alpha=1e-3):
    """Kolmogorov–Smirnov test of samples against U[low, high]: True when not rejected."""
    samples = np.sort(np.asarray(samples, np.float64))
    if stats is not None:
        return stats.kstest(samples, "uniform", args=(low, high - low)).pvalue > alpha
    n = samples.size
    cdf = (samples - low) / (high - low)
    d = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
    # Asymptotic critical value: c(alpha) / sqrt(n), c = sqrt(-ln(alpha / 2) / 2).
    return d < math.sqrt(-math.log(alpha / 2) / 2) / math.sqrt(n)


def test_ks_helper_rejects_a_wrong_distribution(rng):
    # The helper must be able to fail: U[1, 10] samples are not U[1, 20].
    assert ks_uniform_pvalue_ok(rng.uniform(1, 10, 2000), 1, 10)
    assert not ks_uniform_pvalue_ok(rng.uniform(1, 10, 2000), 1, 20)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64, jnp.bfloat16])
@pytest.mark.parametrize("kind", INITS)
def test_shapes_and_dtypes(kind, dtype, key):
    init, kwargs, params_type, gates = INITS[kind]
    params = init(key, D, H, dtype=dtype, **kwargs)
    assert type(params) is params_type
    assert params.W.shape == (D, gates * H)
    assert params.V.shape == (H, gates * H)
    assert params.b.shape == (gates * H,)
    if kind == "gru_reset_after":
        assert params.b_hn.shape == (H,)
        np.testing.assert_array_equal(params.b_hn, 0)
    assert all(leaf.dtype == dtype for leaf in params)
    assert params.input_size == D and params.hidden_size == H
    assert all(np.all(np.isfinite(np.asarray(leaf, np.float64))) for leaf in params)


@pytest.mark.parametrize("kind", INITS)
def test_init_is_a_function_of_the_key(kind, key):
    init, kwargs, _, _ = INITS[kind]
    a, b = init(key, D, H, **kwargs), init(key, D, H, **kwargs)
    c = init(jax.random.split(key)[1], D, H, **kwargs)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.allclose(a.W, c.W) and not np.allclose(a.V, c.V)


def test_lstm_forget_bias_default_one_and_option(key):
    i, f, g, o = blocks(rc.lstm_init(key, D, H).b, 4)
    np.testing.assert_array_equal(f, 1.0)
    for other in (i, g, o):
        np.testing.assert_array_equal(other, 0.0)
    assert rc.gate(rc.lstm_init(key, D, H), "f").b.tolist() == [1.0] * H
    i, f, g, o = blocks(rc.lstm_init(key, D, H, forget_bias=0.25).b, 4)
    np.testing.assert_array_equal(f, 0.25)
    for other in (i, g, o):
        np.testing.assert_array_equal(other, 0.0)


@pytest.mark.parametrize("kind", ["gru", "gru_reset_after", "rnn"])
def test_gru_and_rnn_biases_zero_by_default(kind, key):
    init, kwargs, _, _ = INITS[kind]
    np.testing.assert_array_equal(init(key, D, H, **kwargs).b, 0.0)


@pytest.mark.parametrize("dtype,tol", [(jnp.float64, 1e-12), (jnp.float32, 1e-5)])
@pytest.mark.parametrize("kind", INITS)
def test_recurrent_blocks_are_orthogonal_and_independent(kind, dtype, tol, key):
    init, kwargs, _, gates = INITS[kind]
    hidden = 16
    V_blocks = blocks(init(key, D, hidden, dtype=dtype, **kwargs).V, gates)
    for V_g in V_blocks:
        np.testing.assert_allclose(V_g.T @ V_g, np.eye(hidden), atol=tol)
        np.testing.assert_allclose(V_g @ V_g.T, np.eye(hidden), atol=tol)
    for a, b in zip(V_blocks, V_blocks[1:], strict=False):
        assert not np.allclose(a, b)  # each gate draws its own block


@pytest.mark.parametrize("kind", INITS)
def test_input_weights_are_glorot_uniform_per_gate(kind, key):
    init, kwargs, _, gates = INITS[kind]
    fan_in, fan_out = 40, 60
    limit = math.sqrt(6.0 / (fan_in + fan_out))  # per gate block, not over the fused width
    W = np.asarray(init(key, fan_in, fan_out, dtype=jnp.float64, **kwargs).W)
    assert np.max(np.abs(W)) <= limit
    assert np.max(np.abs(W)) > 0.98 * limit  # the scale is the limit, not a smaller one
    for W_g in blocks(W, gates):
        assert ks_uniform_pvalue_ok(W_g.ravel(), -limit, limit)


T_MAX = 50.0
NUM_KEYS, SMALL_H = 400, 8  # 3200 chrono draws from many small inits: a big H costs big QRs


def many_biases(init, key, **kwargs):
    """(NUM_KEYS * SMALL_H, G) biases per gate from NUM_KEYS inits with independent keys."""
    keys = jax.random.split(key, NUM_KEYS)
    b = jax.jit(jax.vmap(lambda k: init(k, D, SMALL_H, dtype=jnp.float64, **kwargs).b))(keys)
    per_gate = np.asarray(b).reshape(NUM_KEYS, -1, SMALL_H)  # (keys, G, H)
    return [per_gate[:, g].ravel() for g in range(per_gate.shape[1])]


def test_lstm_chrono_bias_distribution(key):
    i, f, g, o = many_biases(rc.lstm_init, key, chrono_t_max=T_MAX)
    u = np.exp(f)
    assert u.min() >= 1.0 and u.max() <= T_MAX - 1.0
    assert ks_uniform_pvalue_ok(u, 1.0, T_MAX - 1.0)
    np.testing.assert_array_equal(i, -f)
    np.testing.assert_array_equal(g, 0.0)
    np.testing.assert_array_equal(o, 0.0)


def test_lstm_chrono_ignores_forget_bias_and_differs_per_key(key):
    k1, k2 = jax.random.split(key)
    a = rc.lstm_init(k1, D, H, chrono_t_max=T_MAX, forget_bias=7.0, dtype=jnp.float64)
    b = rc.lstm_init(k2, D, H, chrono_t_max=T_MAX, dtype=jnp.float64)
    f_a, f_b = blocks(a.b, 4)[1], blocks(b.b, 4)[1]
    assert np.all(f_a <= math.log(T_MAX - 1.0))
    assert not np.allclose(f_a, f_b)


@pytest.mark.parametrize("reset_after", [False, True])
def test_gru_chrono_update_bias_distribution(reset_after, key):
    r, z, h = many_biases(rc.gru_init, key, chrono_t_max=T_MAX, reset_after=reset_after)
    u = np.exp(-z)  # seed's z writes: b_z = -log(U[1, T_max - 1])
    assert u.min() >= 1.0 and u.max() <= T_MAX - 1.0
    assert ks_uniform_pvalue_ok(u, 1.0, T_MAX - 1.0)
    np.testing.assert_array_equal(r, 0.0)
    np.testing.assert_array_equal(h, 0.0)
    if reset_after:
        b_hn = rc.gru_init(key, D, H, chrono_t_max=T_MAX, reset_after=True).b_hn
        np.testing.assert_array_equal(b_hn, 0.0)


@pytest.mark.parametrize("t_max", [2, 2.0, 1.5, 0, -3, float("inf"), float("nan")])
@pytest.mark.parametrize("init", [rc.lstm_init, rc.gru_init], ids=["lstm", "gru"])
def test_chrono_t_max_at_most_two_or_not_finite_raises(init, t_max, key):
    with pytest.raises(
        ValueError, match=rf"chrono_t_max must be a finite number > 2.*got {t_max!r}"
    ):
        init(key, D, H, chrono_t_max=t_max)


@pytest.mark.parametrize("kind", INITS)
def test_init_carry_is_zeros_of_the_right_structure(kind, key):
    init, kwargs, _, _ = INITS[kind]
    params = init(key, D, H, dtype=jnp.float64, **kwargs)
    state = {"lstm": rc.LSTMState, "rnn": rc.RNNState}.get(kind, rc.GRUState)
    for batch_shape, full in [((), ()), (4, (4,)), (np.int64(4), (4,)), ((2, np.int32(3)), (2, 3))]:
        carry = rc.init_carry(params, batch_shape)
        assert type(carry) is state
        for leaf in carry:
            assert leaf.shape == full + (H,) and leaf.dtype == jnp.float64
            np.testing.assert_array_equal(leaf, 0.0)
    assert rc.step_for(params) is {"lstm": rc.lstm_step, "rnn": rc.rnn_step}.get(kind, rc.gru_step)
