"""Reliability of the core API: lengths of any integer dtype, inert padding, strict flag and
number types, errors that name the argument, and forward-mode autodiff of the fused layer."""

import re

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rnncells as rc
import rnncells.linen as rcl
import rnncells.nnx as rcn
from rnncells import _checks
from rnncells import _modules as modules_common
from rnncells.initializers import chrono_bias

KINDS = ("lstm", "gru", "gru_ra", "rnn")
B, D, H = 2, 3, 4


def lit(text):
    return re.escape(text)


def make_params(key, kind, dtype=jnp.float32):
    """Params with non-zero biases, so no gate sits at a special value."""
    k_init, k_noise = jax.random.split(key)
    init = {
        "lstm": rc.lstm_init,
        "gru": rc.gru_init,
        "gru_ra": lambda *a, **k: rc.gru_init(*a, reset_after=True, **k),
        "rnn": rc.rnn_init,
    }[kind]
    params = init(k_init, D, H, dtype=dtype)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(k_noise, len(leaves))
    return jax.tree.unflatten(
        tree,
        [x + 0.3 * jax.random.normal(k, x.shape, dtype) for x, k in zip(leaves, keys, strict=True)],
    )


def _primitive_names(fn, *args):
    names = set()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            names.add(eqn.primitive.name)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return names


# --- 1. lengths of a narrow integer dtype, traced ---------------------------------------


@pytest.mark.parametrize(
    "dtype, num_steps, values, expected",
    [
        (jnp.uint8, 300, [255, 200], [255, 200]),  # T does not fit in uint8
        (jnp.int8, 200, [127, 5], [127, 5]),  # T does not fit in int8
        (jnp.int8, 200, [-3, 100], [0, 100]),  # negative: clipped to 0
        (jnp.int16, 40, [300, 7], [40, 7]),  # beyond T: clipped to T
        (jnp.uint32, 6, [2**32 - 1, 2], [6, 2]),  # beyond int32: clipped to T, not wrapped
        (jnp.int64, 6, [2**40, -(2**40)], [6, 0]),
    ],
)
def test_traced_lengths_of_any_integer_dtype_are_clipped_exactly(
    key, dtype, num_steps, values, expected
):
    params = make_params(key, "lstm")
    xs = jax.random.normal(key, (B, num_steps, D), jnp.float32)
    lengths = jnp.array(values, dtype)
    for reverse in (False, True):
        run = jax.jit(
            lambda lengths, r=reverse: rc.unroll(
                rc.lstm_step, params, xs, lengths=lengths, reverse=r
            )
        )
        got = run(lengths)
        want = rc.unroll(
            rc.lstm_step, params, xs, lengths=jnp.array(expected, jnp.int32), reverse=reverse
        )
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_traced_uint8_lengths_in_layers(key):
    num_steps = 300
    layer = rc.Bidirectional(make_params(key, "gru"), make_params(jax.random.key(1), "gru"))
    xs = jax.random.normal(key, (B, num_steps, D), jnp.float32)
    narrow = jnp.array([255, 200], jnp.uint8)
    wide = narrow.astype(jnp.int32)

    def bidi(lengths):
        return rc.bidirectional_unroll(None, layer, xs, lengths=lengths)

    def stack(lengths):
        return rc.stack_unroll((layer,), xs, lengths=lengths)

    def reversed_layer(lengths):
        return modules_common.layer_apply((layer.forward,), xs, lengths=lengths, reverse=True)

    for fn in (bidi, stack, reversed_layer):
        got, want = jax.jit(fn)(narrow), fn(wide)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


# --- 2. padding is inert -----------------------------------------------------------------


def _padded(xs, lengths, value):
    t = jnp.arange(xs.shape[1], dtype=lengths.dtype)[None, :, None]
    return jnp.where(t < lengths[:, None, None], xs, jnp.asarray(value, xs.dtype))


def _generic(step):
    return lambda params, carry, x: step(params, carry, x)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("path", ["fused", "scan", "user_step", "remat"])
@pytest.mark.parametrize("reverse", [False, True])
def test_nan_and_inf_in_padding_change_no_output_carry_or_gradient(key, kind, path, reverse):
    params = make_params(key, kind)
    lengths = jnp.array([2, 5], jnp.int32)
    xs = jax.random.normal(key, (B, 5, D), jnp.float32)
    clean = _padded(xs, lengths, 0.0)
    step = rc.step_for(params)
    kwargs = dict(lengths=lengths, reverse=reverse, fused=path != "scan", remat=path == "remat")
    if path == "user_step":
        step = _generic(step)
        kwargs["carry"] = rc.init_carry(params, (B,))
        del kwargs["fused"]

    def loss(params, xs):
        final, ys = rc.unroll(step, params, xs, **kwargs)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(jnp.cos(c)) for c in final), (final, ys)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))
    (g_params, g_xs), out = grad(params, clean)
    for value in (jnp.nan, jnp.inf, -jnp.inf):
        (g_params_bad, g_xs_bad), out_bad = grad(params, _padded(xs, lengths, value))
        for a, b in zip(jax.tree.leaves(out_bad), jax.tree.leaves(out), strict=True):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(jax.tree.leaves(g_params_bad), jax.tree.leaves(g_params), strict=True):
            assert np.all(np.isfinite(a))
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(g_xs_bad, g_xs)
        assert np.all(np.asarray(g_xs_bad)[0, 2:] == 0.0)


def test_nan_in_padding_is_inert_in_stacks(key):
    layers = rc.stack_init(key, "lstm", D, H, num_layers=2, bidirectional=True)
    lengths = jnp.array([3, 5], jnp.int32)
    xs = jax.random.normal(key, (B, 5, D), jnp.float32)

    def loss(layers, xs):
        return jnp.sum(jnp.sin(rc.stack_unroll(layers, xs, lengths=lengths)[1]))

    grad = jax.jit(jax.grad(loss))
    want = grad(layers, _padded(xs, lengths, 0.0))
    got = grad(layers, _padded(xs, lengths, jnp.nan))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert np.all(np.isfinite(a))
        np.testing.assert_array_equal(a, b)


# --- 3. booleans must be booleans --------------------------------------------------------


def test_check_bool_accepts_python_and_numpy_bools_only():
    assert _checks.check_bool("flag", True) is True
    assert _checks.check_bool("flag", np.bool_(False)) is False
    for value in ("False", "no", 0, 1, None, 1.0, jnp.array(True)):
        with pytest.raises(TypeError, match=r"flag must be a bool \(True or False\), got "):
            _checks.check_bool("flag", value)


def _bool_flag_calls():
    key = jax.random.key(0)
    lstm = rc.lstm_init(key, D, H)
    xs = jnp.ones((B, 3, D), jnp.float32)
    bidi = rc.Bidirectional(lstm, lstm)
    calls = {}
    for flag in ("reverse", "time_major", "remat", "fused"):
        calls[f"unroll-{flag}"] = (
            flag,
            lambda v, f=flag: rc.unroll(rc.lstm_step, lstm, xs, **{f: v}),
        )
    for flag in ("time_major", "remat"):
        calls[f"bidirectional_unroll-{flag}"] = (
            flag,
            lambda v, f=flag: rc.bidirectional_unroll(None, bidi, xs, **{f: v}),
        )
        calls[f"stack_unroll-{flag}"] = (
            flag,
            lambda v, f=flag: rc.stack_unroll((lstm,), xs, **{f: v}),
        )
    calls["stack_init-bidirectional"] = (
        "bidirectional",
        lambda v: rc.stack_init(key, "lstm", D, H, bidirectional=v),
    )
    calls["gru_init-reset_after"] = ("reset_after", lambda v: rc.gru_init(key, D, H, reset_after=v))
    calls["layer_apply-reverse"] = (
        "reverse",
        lambda v: modules_common.layer_apply((lstm,), xs, reverse=v),
    )
    calls["nnx.GRUCell-reset_after"] = (
        "reset_after",
        lambda v: rcn.GRUCell(D, H, reset_after=v, rngs=nnx.Rngs(0)),
    )
    for flag in ("bidirectional", "reverse", "deterministic", "remat"):
        calls[f"nnx.LSTM-{flag}"] = (
            flag,
            lambda v, f=flag: rcn.LSTM(D, H, rngs=nnx.Rngs(0), **{f: v}),
        )
        calls[f"linen.LSTM-{flag}"] = (
            flag,
            lambda v, f=flag: rcl.LSTM(H, **{f: v}).init(key, xs),
        )
    calls["nnx.GRU-reset_after"] = (
        "reset_after",
        lambda v: rcn.GRU(D, H, reset_after=v, rngs=nnx.Rngs(0)),
    )
    calls["nnx.Layer-call-time_major"] = (
        "time_major",
        lambda v: rcn.LSTM(D, H, rngs=nnx.Rngs(0))(xs, time_major=v),
    )
    calls["nnx.Layer-call-deterministic"] = (
        "deterministic",
        lambda v: rcn.LSTM(D, H, rngs=nnx.Rngs(0))(xs, deterministic=v),
    )
    calls["linen.GRU-reset_after"] = (
        "reset_after",
        lambda v: rcl.GRU(H, reset_after=v).init(key, xs),
    )
    calls["linen.GRUCell-reset_after"] = (
        "reset_after",
        lambda v: nn.RNN(rcl.GRUCell(H, reset_after=v)).init(key, xs),
    )
    calls["linen.LSTM-call-time_major"] = (
        "time_major",
        lambda v: rcl.LSTM(H).init(key, xs, time_major=v),
    )
    calls["linen.LSTM-call-deterministic"] = (
        "deterministic",
        lambda v: rcl.LSTM(H, dropout_rate=0.5).init(key, xs, deterministic=v),
    )
    return calls


BOOL_CALLS = _bool_flag_calls()


@pytest.mark.parametrize("name", sorted(BOOL_CALLS))
@pytest.mark.parametrize("value", ["False", "no", 0])
def test_boolean_flags_reject_non_booleans(name, value):
    flag, call = BOOL_CALLS[name]
    expected = f"{flag} must be a bool (True or False), got {value!r}"
    with pytest.raises(TypeError, match=lit(expected)):
        call(value)


def test_boolean_flags_accept_numpy_bools(key):
    lstm = rc.lstm_init(key, D, H)
    xs = jnp.ones((B, 3, D), jnp.float32)
    want = rc.unroll(rc.lstm_step, lstm, xs, reverse=True)
    got = rc.unroll(rc.lstm_step, lstm, xs, reverse=np.bool_(True), time_major=np.bool_(False))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(a, b)
    assert isinstance(rc.gru_init(key, D, H, reset_after=np.bool_(True)), rc.GRUResetAfterParams)


# --- 3/4. numbers must be numbers, and errors name the argument -------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda key: rc.lstm_init(key, D, H, chrono_t_max="10"),
        lambda key: rc.gru_init(key, D, H, chrono_t_max="10"),
        lambda key: chrono_bias(key, H, "10", jnp.float32),
        lambda key: rcn.LSTM(D, H, chrono_t_max="10", rngs=nnx.Rngs(0)),
        lambda key: rcl.GRU(H, chrono_t_max="10").init(key, jnp.ones((B, 3, D), jnp.float32)),
    ],
    ids=["lstm_init", "gru_init", "chrono_bias", "nnx.LSTM", "linen.GRU"],
)
def test_chrono_t_max_of_the_wrong_type_is_named(call, key):
    with pytest.raises(TypeError, match=lit("chrono_t_max must be a real number, got '10'")):
        call(key)


def test_forget_bias_of_the_wrong_type_is_named(key):
    with pytest.raises(TypeError, match=lit("forget_bias must be a real number, got '1'")):
        rc.lstm_init(key, D, H, forget_bias="1")
    with pytest.raises(TypeError, match=lit("forget_bias must be a real number, got None")):
        rc.lstm_init(key, D, H, forget_bias=None)
    # An array scalar (e.g. vmapped over a sweep) is a number.
    params = jax.vmap(lambda fb: rc.lstm_init(key, D, H, forget_bias=fb))(jnp.array([0.0, 2.0]))
    np.testing.assert_array_equal(params.b[:, H], [0.0, 2.0])


@pytest.mark.parametrize(
    "init", [rc.lstm_init, rc.gru_init, rc.rnn_init], ids=["lstm", "gru", "rnn"]
)
def test_sizes_too_large_to_allocate_raise_before_allocating(init, key):
    with pytest.raises(ValueError, match=r"hidden_size=1000000000000 is too large: params\.V"):
        init(key, 2, hidden_size=10**12)
    with pytest.raises(ValueError, match=r"input_size=1000000000000 is too large: params\.W"):
        init(key, 10**12, 8)
    with pytest.raises(ValueError, match=r"2\*\*40 bytes"):
        init(key, 2, hidden_size=10**6)


def test_batch_shape_of_the_wrong_type_is_named(key):
    params = rc.lstm_init(key, D, H)
    for bad in (2.0, "3", None):
        expected = f"batch_shape must be an int or a tuple of non-negative ints, got {bad!r}"
        with pytest.raises(ValueError, match=lit(expected)):
            rc.init_carry(params, bad)
    for bad in ((2, 1.5), (True,), (2, -1)):
        expected = f"batch_shape must be a tuple of non-negative ints, got {bad!r}"
        with pytest.raises(ValueError, match=lit(expected)):
            rc.init_carry(params, bad)
    assert rc.init_carry(params, np.int64(2)).h.shape == (2, H)
    assert rc.init_carry(params, [2, np.int32(3)]).h.shape == (2, 3, H)


def test_dropout_rate_must_be_a_concrete_number(key):
    layers = rc.stack_init(key, "lstm", D, H, num_layers=2)
    xs = jnp.ones((B, 3, D), jnp.float32)
    dk = jax.random.key(1)
    with pytest.raises(TypeError, match=lit("dropout_rate must be a real number, got '0.5'")):
        rc.stack_unroll(layers, xs, dropout_rate="0.5", dropout_key=dk)
    with pytest.raises(TypeError, match=r"dropout_rate must be a Python float known at trace time"):
        jax.jit(lambda r: rc.stack_unroll(layers, xs, dropout_rate=r, dropout_key=dk))(0.5)
    with pytest.raises(ValueError, match=lit("dropout_rate must be in [0, 1), got nan")):
        rc.stack_unroll(layers, xs, dropout_rate=float("nan"), dropout_key=dk)
    with pytest.raises(TypeError, match=lit("dropout_rate must be a real number, got '0.5'")):
        rcn.LSTM(D, H, dropout_rate="0.5", rngs=nnx.Rngs(0))


# --- 5. forward-mode autodiff through the default (fused) unroll ------------------------


def _run(kind, key, **kwargs):
    params = make_params(key, kind)
    step = rc.step_for(params)
    return params, lambda p, x, fused=True: rc.unroll(step, p, x, fused=fused, **kwargs)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"reverse": True, "lengths": jnp.array([1, 3], jnp.int32)}],
    ids=["plain", "reverse_lengths"],
)
def test_jvp_and_jacfwd_through_the_default_unroll(key, kind, kwargs):
    params, run = _run(kind, key, **kwargs)
    xs = jax.random.normal(key, (B, 3, D), jnp.float32)
    tangents = (jax.tree.map(jnp.ones_like, params), jnp.ones_like(xs))
    want = jax.jvp(lambda p, x: run(p, x, fused=False), (params, xs), tangents)
    for transform in (lambda f: f, jax.jit):
        got = transform(lambda p, x, t: jax.jvp(run, (p, x), t))(params, xs, tangents)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)
    jac_want = jax.jacfwd(lambda x: run(params, x, fused=False)[1])(xs)
    jac_got = jax.jacfwd(lambda x: run(params, x)[1])(xs)
    np.testing.assert_allclose(jac_got, jac_want, rtol=2e-5, atol=2e-5)


def test_jacfwd_over_params_equals_jacrev(key):
    params, run = _run("lstm", key, lengths=jnp.array([2, 3], jnp.int32))
    xs = jax.random.normal(key, (B, 3, D), jnp.float32)
    jac_fwd = jax.jacfwd(lambda p: run(p, xs)[0].h)(params)
    jac_rev = jax.jacrev(lambda p: run(p, xs)[0].h)(params)
    for a, b in zip(jax.tree.leaves(jac_fwd), jax.tree.leaves(jac_rev), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)


def test_forward_over_reverse_and_reverse_over_forward(key):
    params, run = _run("lstm", key)
    xs = jax.random.normal(key, (B, 3, D), jnp.float32)

    def loss(p, fused=True):
        return jnp.sum(jnp.sin(run(p, xs, fused=fused)[1]))

    t = jax.tree.map(jnp.ones_like, params)
    hvp = jax.jvp(jax.grad(loss), (params,), (t,))[1]
    hvp_want = jax.jvp(jax.grad(lambda p: loss(p, False)), (params,), (t,))[1]
    rof = jax.grad(lambda p: jax.jvp(loss, (p,), (t,))[1])(params)
    for got in (hvp, rof):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(hvp_want), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_reverse_mode_still_takes_the_fused_layer(key, monkeypatch):
    from rnncells._engine import fused as _fused

    calls = []
    fused_scan = _fused.fused_scan

    def counted(*args, **kwargs):
        calls.append(1)
        return fused_scan(*args, **kwargs)

    monkeypatch.setattr(_fused, "fused_scan", counted)
    params, run = _run("lstm", key)
    xs = jax.random.normal(key, (B, 3, D), jnp.float32)
    jax.grad(lambda p: jnp.sum(run(p, xs)[1]))(params)
    jax.vmap(jax.grad(lambda p, x: jnp.sum(run(p, x)[1])), (None, 0))(params, xs[None])
    jax.jacrev(lambda x: run(params, x)[1])(xs)
    assert len(calls) == 3


def test_forward_mode_the_fused_layer_cannot_serve_names_fused_false(key, monkeypatch):
    """Where unroll cannot see the forward-mode trace (here: detection switched off), the
    fused layer's error says what to do."""
    from rnncells import unrolling

    monkeypatch.setattr(unrolling, "_under_forward_mode", lambda *trees: False)
    params, run = _run("gru", key)
    xs = jax.random.normal(key, (B, 3, D), jnp.float32)
    with pytest.raises(TypeError, match=lit("unroll(..., fused=False)")):
        jax.jvp(lambda x: run(params, x)[1], (xs,), (xs,))
