"""Greff et al.'s LSTM ablations against an independent NumPy version of their equations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnncells as rc
from rnncells.cells import lstm_ablations as la
from tests import reference

D, H, B, T = 3, 4, 2, 5


def numpy_step(variant, gates, peepholes, carry, x):
    """The vanilla (peephole) LSTM with the part ``variant`` names removed."""
    h_prev, c_prev = carry
    pre = {n: x @ gates[n][0] + h_prev @ gates[n][1] + gates[n][2] for n in "ifgo"}
    one = np.ones_like(c_prev)
    i = one if variant == "lstm_nig" else reference.sigmoid(pre["i"] + peepholes["i"] * c_prev)
    f = one if variant == "lstm_nfg" else reference.sigmoid(pre["f"] + peepholes["f"] * c_prev)
    g = pre["g"] if variant == "lstm_niaf" else np.tanh(pre["g"])
    c = f * c_prev + i * g
    o = one if variant == "lstm_nog" else reference.sigmoid(pre["o"] + peepholes["o"] * c)
    h = o * (c if variant == "lstm_noaf" else np.tanh(c))
    return (h, c), h


def random_params(variant, seed=0):
    rng = np.random.default_rng(seed)
    gates = reference.random_gates(rng, "ifgo", D, H)
    peepholes = {n: rng.uniform(-0.5, 0.5, H) for n in "ifo"}
    W, V, b = reference.fuse(gates, "ifgo")
    kind = la._TYPES[variant]
    params = kind(
        *(jnp.asarray(a) for a in (W, V, b, peepholes["i"], peepholes["f"], peepholes["o"]))
    )
    return gates, peepholes, params


@pytest.mark.parametrize("variant", sorted(la.ABLATIONS))
def test_unroll_equals_the_numpy_equations(variant):  # float64: tests/conftest.py
    gates, peepholes, params = random_params(variant)
    xs = np.random.default_rng(1).normal(size=(B, T, D))
    h0 = np.random.default_rng(2).normal(size=(B, H)) * 0.5
    c0 = np.random.default_rng(3).normal(size=(B, H)) * 0.5
    carry = (h0, c0)
    expected = []
    for t in range(T):
        carry, y = numpy_step(variant, gates, peepholes, carry, xs[:, t])
        expected.append(y)
    final, ys = rc.unroll(
        la.ablated_lstm_step,
        params,
        jnp.asarray(xs),
        carry=rc.LSTMState(*map(jnp.asarray, (h0, c0))),
    )
    np.testing.assert_allclose(ys, np.stack(expected, 1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(final.c, carry[1], rtol=1e-12, atol=1e-12)


REMOVED = {"lstm_nig": ("i", "p_i"), "lstm_nfg": ("f", "p_f"), "lstm_nog": ("o", "p_o")}


@pytest.mark.parametrize("variant", sorted(la.ABLATIONS))
def test_removed_parts_get_exactly_zero_gradient_and_the_rest_does_not(variant):
    _, _, params = random_params(variant)
    xs = jax.random.normal(jax.random.PRNGKey(0), (B, T, D))
    grads = jax.grad(lambda p: jnp.sum(rc.unroll(la.ablated_lstm_step, p, xs)[1] ** 2))(params)
    blocks = dict(zip("ifgo", jnp.split(grads.W, 4, axis=1), strict=True))
    gate, peephole = REMOVED.get(variant, (None, None))
    for name, block in blocks.items():
        assert (float(jnp.abs(block).max()) == 0.0) == (name == gate), name
    for name in ("p_i", "p_f", "p_o"):
        assert (float(jnp.abs(getattr(grads, name)).max()) == 0.0) == (name == peephole), name


def test_registered_with_the_vanilla_init_and_trainable_from_a_config():
    from configs.adding import get_config
    from rnncells.training.validation import validate

    key = jax.random.PRNGKey(4)
    vanilla = rc.peephole_lstm_init(key, D, H, forget_bias=0.5)
    for name in la.ABLATIONS:
        spec = rc.cell_spec_by_name(name)
        params = spec.init(key, D, H, forget_bias=0.5)
        assert type(params) is la._TYPES[name] and spec.params is la._TYPES[name]
        for got, want in zip(params, vanilla, strict=True):
            np.testing.assert_array_equal(got, want)
        assert rc.gate(params, "f").b.shape == (H,)
        config = get_config()
        config.model.cell = name
        validate(config)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="variant must be one of"):
        la.ablated_lstm_init(jax.random.PRNGKey(0), D, H, variant="lstm_nxx")
    vanilla = rc.peephole_lstm_init(jax.random.PRNGKey(0), D, H)
    carry = rc.LSTMState(jnp.zeros((1, H)), jnp.zeros((1, H)))
    with pytest.raises(TypeError, match="params"):
        la.ablated_lstm_step(vanilla, carry, jnp.zeros((1, D)))
