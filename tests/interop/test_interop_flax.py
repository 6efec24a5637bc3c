"""Converters to and from Flax linen and NNX cells, checked against Flax's own cells."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rnncells as rc
from rnncells import interop
from tests.conftest import assert_tree_allclose

B, T, D, H = 2, 3, 3, 5
TOL = dict(rtol=1e-5, atol=1e-5)

LINEN_CELLS = {
    "LSTMCell": nn.LSTMCell,
    "OptimizedLSTMCell": nn.OptimizedLSTMCell,
    "GRUCell": nn.GRUCell,
    "SimpleCell": nn.SimpleCell,
}
NNX_CELLS = {
    "LSTMCell": nnx.LSTMCell,
    "OptimizedLSTMCell": nnx.OptimizedLSTMCell,
    "GRUCell": nnx.GRUCell,
    "SimpleCell": nnx.SimpleCell,
}
# (params kind, optimized): `optimized` only picks between the two LSTM cells.
TO_CASES = [("lstm", False), ("lstm", True), ("gru_ra", False), ("rnn", False)]


def _randomise(tree, rng):
    """Every leaf replaced by distinct random float32 values (non-zero biases included)."""
    return jax.tree.map(
        lambda x: jnp.asarray(rng.normal(scale=0.5, size=x.shape), jnp.float32), tree
    )


def _xs(rng):
    return jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)


def _random_params(kind, rng):
    shapes = {
        "lstm": rc.lstm_init(jax.random.key(0), D, H),
        "gru": rc.gru_init(jax.random.key(0), D, H),
        "gru_ra": rc.gru_init(jax.random.key(0), D, H, reset_after=True),
        "rnn": rc.rnn_init(jax.random.key(0), D, H),
    }
    return _randomise(shapes[kind], rng)


def _ours(params, xs, flax_carry):
    carry = interop.from_flax_carry(flax_carry, params)
    final, ys = rc.unroll(rc.step_for(params), params, xs, carry)
    return interop.to_flax_carry(final), ys


# --- linen -----------------------------------------------------------------------------


def _linen_run(cell, variables, xs, carry):
    """Flax's own unroll: nn.RNN (a lifted scan) with an explicit initial carry."""
    rnn = nn.RNN(cell, return_carry=True)
    return rnn.apply({"params": {"cell": variables["params"]}}, xs, initial_carry=carry)


def _linen_setup(name, rng):
    cell = LINEN_CELLS[name](features=H)
    carry = _randomise(cell.initialize_carry(jax.random.key(0), (B, D)), rng)
    variables = _randomise(cell.init(jax.random.key(1), carry, _xs(rng)[:, 0]), rng)
    return cell, variables, carry


@pytest.mark.parametrize("name", list(LINEN_CELLS))
def test_from_flax_linen_matches_flax(name, rng):
    cell, variables, carry = _linen_setup(name, rng)
    xs = _xs(rng)
    params = interop.from_flax_linen(cell, variables)
    expected_carry, expected_ys = _linen_run(cell, variables, xs, carry)
    got_carry, got_ys = _ours(params, xs, carry)
    assert_tree_allclose(got_ys, expected_ys, **TOL)
    assert_tree_allclose(got_carry, expected_carry, **TOL)


@pytest.mark.parametrize("kind, optimized", TO_CASES)
def test_to_flax_linen_matches_ours_and_round_trips(kind, optimized, rng):
    params = _random_params(kind, rng)
    cell, variables = interop.to_flax_linen(params, optimized=optimized)
    if kind == "lstm":
        assert type(cell) is (nn.OptimizedLSTMCell if optimized else nn.LSTMCell)
    assert_tree_allclose(interop.from_flax_linen(cell, variables), params, rtol=0, atol=0)
    # With the exact round trip, test_from_flax_linen_matches_flax already shows Flax
    # computes what we do for every cell; one run here checks the GRU (z sign, b_hn) again.
    if kind == "gru_ra":
        xs = _xs(rng)
        carry = interop.to_flax_carry(_randomise(rc.init_carry(params, (B,)), rng))
        assert_tree_allclose(
            _linen_run(cell, variables, xs, carry), _ours(params, xs, carry), **TOL
        )


@pytest.mark.parametrize("name", list(LINEN_CELLS))
def test_flax_linen_variables_round_trip(name, rng):
    cell, variables, _ = _linen_setup(name, rng)
    params = interop.from_flax_linen(cell, variables)
    _, back = interop.to_flax_linen(params, optimized=name == "OptimizedLSTMCell")
    assert_tree_allclose(back, jax.tree.map(jnp.asarray, dict(variables)), rtol=0, atol=0)


def test_flax_linen_residual_simple_cell_folds_into_v(rng):
    cell = nn.SimpleCell(features=H, residual=True)
    carry = _randomise(cell.initialize_carry(jax.random.key(0), (B, D)), rng)
    variables = _randomise(cell.init(jax.random.key(1), carry, _xs(rng)[:, 0]), rng)
    xs = _xs(rng)
    expected = _linen_run(cell, variables, xs, carry)
    assert_tree_allclose(
        _ours(interop.from_flax_linen(cell, variables), xs, carry), expected, **TOL
    )


def test_flax_linen_inner_params_dict_is_accepted(rng):
    cell, variables, _ = _linen_setup("GRUCell", rng)
    assert_tree_allclose(
        interop.from_flax_linen(cell, variables["params"]),
        interop.from_flax_linen(cell, variables),
    )


def test_to_flax_linen_refuses_reset_before_gru(rng):
    with pytest.raises(ValueError, match="reset-before.*different functions"):
        interop.to_flax_linen(_random_params("gru", rng))


@pytest.mark.parametrize(
    "cell, match",
    [
        (nn.LSTMCell(features=H, gate_fn=jax.nn.hard_sigmoid), "gate_fn must be sigmoid"),
        (nn.GRUCell(features=H, activation_fn=jax.nn.relu), "activation_fn must be tanh"),
        (nn.SimpleCell(features=H, activation_fn=jax.nn.relu), "activation_fn must be tanh"),
    ],
)
def test_from_flax_linen_refuses_other_functions(cell, match, rng):
    carry = cell.initialize_carry(jax.random.key(0), (B, D))
    variables = cell.init(jax.random.key(1), carry, _xs(rng)[:, 0])
    with pytest.raises(ValueError, match=match):
        interop.from_flax_linen(cell, variables)


def test_from_flax_linen_refuses_bad_inputs(rng):
    with pytest.raises(TypeError, match="cell must be flax.linen LSTMCell.*got MGUCell"):
        interop.from_flax_linen(nn.MGUCell(features=H), {"params": {}})
    with pytest.raises(ValueError, match=r"must hold params\['ir'\]\['kernel'\]"):
        interop.from_flax_linen(nn.GRUCell(features=H), {"params": {}})
    with pytest.raises(TypeError, match="variables must be a mapping"):
        interop.from_flax_linen(nn.GRUCell(features=H), [1, 2])
    with pytest.raises(TypeError, match="params must be one of"):
        interop.to_flax_linen({"W": 1})


def test_flax_carry_converters(rng):
    params = _random_params("lstm", rng)
    carry = _randomise(rc.init_carry(params, (B,)), rng)
    c, h = interop.to_flax_carry(carry)
    assert c is carry.c and h is carry.h
    assert interop.from_flax_carry((c, h), params) == carry
    gru = _random_params("gru", rng)
    assert interop.from_flax_carry(h, gru) == rc.GRUState(h)
    assert interop.to_flax_carry(rc.GRUState(h)) is h
    with pytest.raises(TypeError, match=r"must be Flax's LSTM carry, a \(c, h\) tuple"):
        interop.from_flax_carry(h, params)


# --- NNX -------------------------------------------------------------------------------


def _nnx_run(module, xs, carry):
    """Flax's own NNX unroll: nnx.RNN over the cell with an explicit initial carry."""
    return nnx.RNN(module, return_carry=True)(xs, initial_carry=carry)


def _nnx_setup(name, rng):
    module = NNX_CELLS[name](D, H, rngs=nnx.Rngs(0))
    state = nnx.state(module, nnx.Param)
    nnx.update(module, _randomise(state, rng))
    carry = _randomise(module.initialize_carry((B, D), rngs=nnx.Rngs(0)), rng)
    return module, carry


@pytest.mark.parametrize("name", list(NNX_CELLS))
def test_from_flax_nnx_matches_flax(name, rng):
    module, carry = _nnx_setup(name, rng)
    xs = _xs(rng)
    params = interop.from_flax_nnx(module)
    if name == "GRUCell":
        assert not np.any(np.asarray(params.b_hn))
    expected = _nnx_run(module, xs, carry)
    assert_tree_allclose(_ours(params, xs, carry), expected, **TOL)


@pytest.mark.parametrize("kind, optimized", TO_CASES)
def test_to_flax_nnx_matches_ours_and_round_trips(kind, optimized, rng):
    params = _random_params(kind, rng)
    if kind == "gru_ra":
        params = params._replace(b_hn=jnp.zeros_like(params.b_hn))
    module = interop.to_flax_nnx(params, optimized=optimized)
    if kind == "lstm":
        assert type(module) is (nnx.OptimizedLSTMCell if optimized else nnx.LSTMCell)
    assert_tree_allclose(interop.from_flax_nnx(module), params, rtol=0, atol=0)
    if kind == "lstm" and not optimized:  # the per-gate layout, run once through nnx.RNN
        xs = _xs(rng)
        carry = interop.to_flax_carry(_randomise(rc.init_carry(params, (B,)), rng))
        assert_tree_allclose(_nnx_run(module, xs, carry), _ours(params, xs, carry), **TOL)


@pytest.mark.parametrize("name", list(NNX_CELLS))
def test_flax_nnx_module_round_trips(name, rng):
    module, _ = _nnx_setup(name, rng)
    back = interop.to_flax_nnx(interop.from_flax_nnx(module), optimized=name != "LSTMCell")
    assert type(back) is type(module)
    assert_tree_allclose(nnx.state(back, nnx.Param), nnx.state(module, nnx.Param), rtol=0, atol=0)


def test_flax_nnx_residual_simple_cell_folds_into_v(rng):
    module = nnx.SimpleCell(D, H, residual=True, rngs=nnx.Rngs(0))
    nnx.update(module, _randomise(nnx.state(module, nnx.Param), rng))
    carry = jnp.asarray(rng.normal(size=(B, H)), jnp.float32)
    xs = _xs(rng)
    expected = _nnx_run(module, xs, carry)
    assert_tree_allclose(_ours(interop.from_flax_nnx(module), xs, carry), expected, **TOL)


def test_to_flax_nnx_refusals(rng):
    with pytest.raises(ValueError, match="b_hn must be zero: Flax NNX's GRUCell has no b_hn"):
        interop.to_flax_nnx(_random_params("gru_ra", rng))
    with pytest.raises(ValueError, match="reset-before.*different functions"):
        interop.to_flax_nnx(_random_params("gru", rng))
    params = _random_params("gru_ra", rng)
    with pytest.raises(ValueError, match="b_hn must be concrete"):
        jax.jit(lambda p: interop.to_flax_nnx(p).dense_i.kernel[...])(params)


def test_from_flax_nnx_refusals():
    with pytest.raises(ValueError, match="gate_fn must be sigmoid"):
        interop.from_flax_nnx(nnx.GRUCell(D, H, gate_fn=jax.nn.hard_sigmoid, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="activation_fn must be tanh"):
        interop.from_flax_nnx(nnx.SimpleCell(D, H, activation_fn=jax.nn.relu, rngs=nnx.Rngs(0)))
    with pytest.raises(TypeError, match="module must be flax.nnx LSTMCell.*got Linear"):
        interop.from_flax_nnx(nnx.Linear(D, H, rngs=nnx.Rngs(0)))


def test_a_lower_precision_flax_dtype_is_warned(rng):
    cell = nn.LSTMCell(features=H, dtype=jnp.bfloat16, param_dtype=jnp.float32)
    with jax.numpy_dtype_promotion("standard"):  # Flax mixes bfloat16 and float32
        carry = (jnp.zeros((B, H), jnp.float32),) * 2
        variables = cell.init(jax.random.key(0), carry, jnp.zeros((B, D), jnp.float32))
    with pytest.warns(
        interop.InexactConversionWarning,
        match=(
            r"cell\.dtype=bfloat16 is the Flax cell's computation dtype, lower than its "
            r"params' float32: .* run the Flax cell with dtype=None \(or float32\)"
        ),
    ):
        params = interop.from_flax_linen(cell, variables)
    assert params.W.dtype == jnp.float32
    module = nnx.GRUCell(D, H, dtype=jnp.bfloat16, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
    with pytest.warns(interop.InexactConversionWarning, match=r"module\.dtype=bfloat16"):
        interop.from_flax_nnx(module)
    interop.from_flax_linen(nn.LSTMCell(features=H, dtype=jnp.float32), variables)  # no warning
