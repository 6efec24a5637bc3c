"""Converters to and from Equinox's LSTMCell / GRUCell, checked against Equinox's cells."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnncells as rc
from rnncells import interop
from tests.conftest import assert_tree_allclose

B, T, D, H = 2, 3, 3, 5
TOL = dict(rtol=1e-5, atol=1e-5)
CELLS = {"LSTMCell": eqx.nn.LSTMCell, "GRUCell": eqx.nn.GRUCell}


def _randomise(tree, rng):
    return jax.tree.map(
        lambda x: jnp.asarray(rng.normal(scale=0.5, size=x.shape), jnp.float32), tree
    )


def _eqx_run(module, xs, carry):
    """Equinox's idiom: jax.lax.scan of the cell over time, vmapped over the batch."""

    def one(xs_1, carry_1):
        def body(state, x):
            state = module(x, state)
            h = state[0] if isinstance(state, tuple) else state
            return state, h

        return jax.lax.scan(body, carry_1, xs_1)

    return jax.vmap(one)(xs, carry)


def _ours(params, xs, eqx_carry):
    carry = interop.from_equinox_carry(eqx_carry, params)
    final, ys = rc.unroll(rc.step_for(params), params, xs, carry)
    return interop.to_equinox_carry(final), ys


def _setup(name, rng, use_bias=True):
    module = CELLS[name](D, H, use_bias=use_bias, dtype=jnp.float32, key=jax.random.key(0))
    params, static = eqx.partition(module, eqx.is_array)
    module = eqx.combine(_randomise(params, rng), static)
    xs = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
    h = jnp.asarray(rng.normal(size=(B, H)), jnp.float32)
    carry = (h, jnp.asarray(rng.normal(size=(B, H)), jnp.float32)) if name == "LSTMCell" else h
    return module, xs, carry


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("use_bias", [True, False])
def test_from_equinox_matches_equinox(name, use_bias, rng):
    module, xs, carry = _setup(name, rng, use_bias)
    params = interop.from_equinox(module)
    assert_tree_allclose(_ours(params, xs, carry), _eqx_run(module, xs, carry), **TOL)


@pytest.mark.parametrize("name", list(CELLS))
def test_equinox_round_trips(name, rng):
    module, _, _ = _setup(name, rng)
    params = interop.from_equinox(module)
    back = interop.to_equinox(params)
    assert type(back) is type(module)
    assert_tree_allclose(
        eqx.filter(back, eqx.is_array), eqx.filter(module, eqx.is_array), rtol=0, atol=0
    )
    assert_tree_allclose(interop.from_equinox(back), params, rtol=0, atol=0)


def test_to_equinox_matches_ours(rng):
    for params in (
        rc.lstm_init(jax.random.key(0), D, H),
        rc.gru_init(jax.random.key(0), D, H, reset_after=True),
    ):
        params = _randomise(params, rng)
        module = interop.to_equinox(params)
        _, xs, _ = _setup("GRUCell", rng)
        carry = interop.to_equinox_carry(_randomise(rc.init_carry(params, (B,)), rng))
        assert_tree_allclose(_eqx_run(module, xs, carry), _ours(params, xs, carry), **TOL)


def test_to_equinox_refusals():
    with pytest.raises(ValueError, match="reset-before.*different functions"):
        interop.to_equinox(rc.gru_init(jax.random.key(0), D, H))
    with pytest.raises(ValueError, match="Equinox has no plain RNN cell"):
        interop.to_equinox(rc.rnn_init(jax.random.key(0), D, H))
    with pytest.raises(TypeError, match="params must be one of"):
        interop.to_equinox((1, 2, 3))


def test_from_equinox_refuses_other_modules():
    with pytest.raises(TypeError, match="module must be equinox.nn.LSTMCell.*got Linear"):
        interop.from_equinox(eqx.nn.Linear(D, H, key=jax.random.key(0)))


def test_equinox_carry_converters(rng):
    params = rc.lstm_init(jax.random.key(0), D, H)
    carry = _randomise(rc.init_carry(params, (B,)), rng)
    h, c = interop.to_equinox_carry(carry)
    assert h is carry.h and c is carry.c
    assert interop.from_equinox_carry((h, c), params) == carry
    gru = rc.gru_init(jax.random.key(0), D, H)
    assert interop.from_equinox_carry(h, gru) == rc.GRUState(h)
    with pytest.raises(TypeError, match=r"must be Equinox's LSTM carry, an \(h, c\) tuple"):
        interop.from_equinox_carry(np.zeros(3), params)
