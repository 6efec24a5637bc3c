"""Converters to and from Haiku's hk.LSTM / hk.GRU / hk.VanillaRNN params, checked against
Haiku's cores."""

import haiku as hk
import jax
import jax.numpy as jnp
import pytest

import rnncells as rc
from rnncells import interop
from tests.conftest import assert_tree_allclose

B, T, D, H = 2, 3, 3, 5
TOL = dict(rtol=1e-5, atol=1e-5)
CORES = {"lstm": hk.LSTM, "gru": hk.GRU, "vanilla_rnn": hk.VanillaRNN}
PARAMS = {"lstm": rc.LSTMParams, "gru": rc.GRUParams, "vanilla_rnn": rc.IRNNParams}


def _randomise(tree, rng):
    return jax.tree.map(
        lambda x: jnp.asarray(rng.normal(scale=0.5, size=x.shape), jnp.float32), tree
    )


def _transformed(kind, name=None, **options):
    """Haiku's own unroll: hk.dynamic_unroll (a scan) of the core, batch-first."""

    def fn(xs, state):
        core = CORES[kind](H, name=name, **options)
        return hk.dynamic_unroll(core, xs, state, time_major=False)

    return hk.without_apply_rng(hk.transform(fn))


def _setup(kind, rng, name=None, **options):
    xs = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
    h = jnp.asarray(rng.normal(size=(B, H)), jnp.float32)
    state = (
        hk.LSTMState(h, jnp.asarray(rng.normal(size=(B, H)), jnp.float32)) if kind == "lstm" else h
    )
    f = _transformed(kind, name, **options)
    params = _randomise(f.init(jax.random.key(0), xs, state), rng)
    return f, params, xs, state


def _ours(params, xs, hk_state):
    carry = interop.from_haiku_carry(hk_state, params)
    final, ys = rc.unroll(rc.step_for(params), params, xs, carry)
    return ys, interop.to_haiku_carry(final)


@pytest.mark.parametrize("kind", list(CORES))
def test_from_haiku_matches_haiku(kind, rng):
    f, hk_params, xs, state = _setup(kind, rng)
    params = interop.from_haiku(hk_params, kind)
    assert type(params) is PARAMS[kind]
    assert_tree_allclose(_ours(params, xs, state), f.apply(hk_params, xs, state), **TOL)


def test_vanilla_rnn_is_the_irnn_with_either_double_bias(rng):
    for double_bias in (True, False):
        f, hk_params, xs, state = _setup("vanilla_rnn", rng, double_bias=double_bias)
        linear, linear_1 = hk_params["vanilla_rnn/linear"], hk_params["vanilla_rnn/linear_1"]
        assert ("b" in linear_1) == double_bias
        params = interop.from_haiku(hk_params, "vanilla_rnn")
        b = linear["b"] + linear_1["b"] if double_bias else linear["b"]  # only the sum enters
        expected = rc.IRNNParams(jnp.asarray(linear["w"]), jnp.asarray(linear_1["w"]), b)
        assert_tree_allclose(params, expected, rtol=0, atol=0)
        ys, final = _ours(params, xs, state)
        assert_tree_allclose((ys, final), f.apply(hk_params, xs, state), **TOL)
        assert (ys == 0).any() and (ys > 0).any()  # the relu acts
        back = interop.to_haiku(params, double_bias=double_bias)
        assert ("b" in back["vanilla_rnn/linear_1"]) == double_bias
        assert_tree_allclose(f.apply(back, xs, state), f.apply(hk_params, xs, state), **TOL)
        assert_tree_allclose(interop.from_haiku(back, "vanilla_rnn"), params, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_haiku_round_trips_and_named_modules(kind, rng):
    _, hk_params, _, _ = _setup(kind, rng, name="core")
    params = interop.from_haiku(hk_params, kind, name="core")
    back = interop.to_haiku(params, name="core")
    # exact but for the float32 rounding of Haiku's forget offset (b_f + 1 - 1)
    atol = 0 if kind == "gru" else 1e-6
    assert_tree_allclose(back, jax.tree.map(jnp.asarray, dict(hk_params)), rtol=0, atol=atol)
    assert_tree_allclose(interop.from_haiku(back, kind, name="core"), params, rtol=0, atol=atol)


def test_to_haiku_matches_ours(rng):
    key = jax.random.key(0)
    for params in (rc.lstm_init(key, D, H), rc.gru_init(key, D, H), rc.irnn_init(key, D, H)):
        params = _randomise(params, rng)
        kind = {rc.LSTMParams: "lstm", rc.GRUParams: "gru", rc.IRNNParams: "vanilla_rnn"}[
            type(params)
        ]
        f, _, xs, state = _setup(kind, rng)
        assert_tree_allclose(
            f.apply(interop.to_haiku(params), xs, state), _ours(params, xs, state), **TOL
        )


def test_haiku_forget_gate_offset():
    """Haiku adds 1 to f inside its forward pass: our b_f is Haiku's b_f + 1."""
    params = rc.lstm_init(jax.random.key(0), D, H, forget_bias=1.0)
    b = interop.to_haiku(params)["lstm/linear"]["b"]
    assert not jnp.any(b)  # our b_f = 1 is exactly Haiku's default (zero bias, +1 built in)


def test_haiku_refusals():
    vanilla = {"vanilla_rnn/linear": {}, "vanilla_rnn/linear_1": {}}  # hk.VanillaRNN's modules
    with pytest.raises(ValueError, match=r"params\['vanilla_rnn/linear_1'\]\['w'\]"):
        interop.from_haiku(vanilla, "vanilla_rnn")
    with pytest.raises(ValueError, match="cannot convert RNNParams to Haiku.*relu.*IRNNParams"):
        interop.to_haiku(rc.rnn_init(jax.random.key(0), D, H))
    with pytest.raises(ValueError, match="PeepholeLSTMParams .*'peephole_lstm' cell.*cannot"):
        interop.to_haiku(rc.peephole_lstm_init(jax.random.key(0), D, H))
    with pytest.raises(TypeError, match="double_bias must be True or False"):
        interop.to_haiku(rc.irnn_init(jax.random.key(0), D, H), double_bias="no")
    with pytest.raises(ValueError, match="hk.GRU is reset-before"):
        interop.to_haiku(rc.gru_init(jax.random.key(0), D, H, reset_after=True))
    with pytest.raises(ValueError, match="kind must be one of"):
        interop.from_haiku({}, "lstm_cell")
    with pytest.raises(ValueError, match=r"params\['lstm/linear'\]\['w'\].*pass name="):
        interop.from_haiku({"core/linear": {}}, "lstm")
    with pytest.raises(TypeError, match="params must be a Haiku params mapping"):
        interop.from_haiku([1], "gru")


def test_haiku_carry_converters(rng):
    params = rc.lstm_init(jax.random.key(0), D, H)
    carry = _randomise(rc.init_carry(params, (B,)), rng)
    state = interop.to_haiku_carry(carry)
    assert isinstance(state, hk.LSTMState)
    assert state.hidden is carry.h and state.cell is carry.c
    assert interop.from_haiku_carry(state, params) == carry
    with pytest.raises(TypeError, match=r"hk.LSTMState\(hidden, cell\)"):
        interop.from_haiku_carry((carry.h, carry.c), params)
    irnn = rc.irnn_init(jax.random.key(0), D, H)
    h = jnp.ones((B, H), jnp.float32)
    assert interop.from_haiku_carry(h, irnn) == rc.RNNState(h)
    assert interop.to_haiku_carry(rc.RNNState(h)) is h
