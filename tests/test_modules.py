"""Flax NNX and linen modules: same outputs and gradients as the pure functions they wrap."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

import rnncells as rc
import rnncells.linen as rcl
import rnncells.nnx as rcn
from rnncells import _modules as common
from rnncells.cells._registry import option_error
from tests.conftest import assert_tree_allclose

B, T, D, H = 2, 4, 3, 5
F32 = jnp.float32


def _xs(rng, shape=(B, T, D)):
    return jnp.asarray(rng.normal(size=shape), F32)


def _nnx_cells():
    return {
        "lstm": lambda: rcn.LSTMCell(D, H, forget_bias=0.5, rngs=nnx.Rngs(0)),
        "gru": lambda: rcn.GRUCell(D, H, chrono_t_max=10.0, rngs=nnx.Rngs(0)),
        "gru_ra": lambda: rcn.GRUCell(D, H, reset_after=True, rngs=nnx.Rngs(0)),
        "rnn": lambda: rcn.RNNCell(D, H, rngs=nnx.Rngs(0)),
    }


def _from_pure_dict(params, tree):
    """The NamedTuple of ``params``' type from an nnx pure dict {field: array}."""
    return type(params)(**tree)


# --- NNX cells ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(_nnx_cells()))
def test_nnx_cell_equals_pure_step_with_same_gradients(kind, rng):
    cell = _nnx_cells()[kind]()
    params = cell.params
    assert (
        type(params)
        is {
            "lstm": rc.LSTMParams,
            "gru": rc.GRUParams,
            "gru_ra": rc.GRUResetAfterParams,
            "rnn": rc.RNNParams,
        }[kind]
    )
    x = _xs(rng, (B, D))
    carry = jax.tree.map(
        lambda z: jnp.asarray(rng.normal(size=z.shape), F32), cell.initialize_carry((B,))
    )
    step = rc.step_for(params)
    assert_tree_allclose(cell(carry, x), step(params, carry, x), rtol=0, atol=0)

    grads = nnx.grad(lambda m: jnp.sum(m(carry, x)[1] ** 2))(cell)
    expected = jax.grad(lambda p: jnp.sum(step(p, carry, x)[1] ** 2))(params)
    got = _from_pure_dict(params, nnx.to_pure_dict(grads)["weights"])
    assert_tree_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_nnx_cell_from_given_params_and_carry(key):
    params = rc.lstm_init(key, D, H)
    cell = rcn.Cell(params)
    assert_tree_allclose(cell.params, params, rtol=0, atol=0)
    carry = cell.initialize_carry((B, 2))
    assert isinstance(carry, rc.LSTMState) and carry.h.shape == (B, 2, H)
    assert cell.num_feature_axes == 1
    with pytest.raises(TypeError, match="params must be one of"):
        rcn.Cell({"W": params.W})


def test_nnx_cell_inside_nnx_rnn(key, rng):
    cell = rcn.Cell(rc.rnn_init(key, D, H))
    xs = _xs(rng)
    got = nnx.RNN(cell, return_carry=True)(xs, initial_carry=cell.initialize_carry((B,)))
    expected = rc.unroll(rc.rnn_step, cell.params, xs)
    assert_tree_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_nnx_cell_options_reach_init():
    lstm = rcn.LSTMCell(D, H, forget_bias=2.0, dtype=jnp.float64, rngs=nnx.Rngs(0))
    assert lstm.params.W.dtype == jnp.float64
    np.testing.assert_array_equal(rc.gate(lstm.params, "f").b, np.full(H, 2.0))
    chrono = rcn.LSTMCell(D, H, chrono_t_max=20.0, rngs=nnx.Rngs(0))
    b_f = rc.gate(chrono.params, "f").b
    np.testing.assert_allclose(rc.gate(chrono.params, "i").b, -b_f)
    b_f = np.asarray(b_f)
    assert np.all((b_f >= 0) & (b_f <= np.log(19.0) + 1e-6))


def test_nnx_cell_trains_under_jit_with_optax(rng):
    """A tiny regression (last h -> target) whose loss falls, through nnx.Optimizer."""
    model = rcn.GRUCell(D, H, rngs=nnx.Rngs(0))
    xs, target = _xs(rng), jnp.asarray(rng.uniform(-0.5, 0.5, size=(B, H)), F32)
    # plain SGD: optax.adam mixes int32 and float in its bias correction, which strict
    # dtype promotion (tests/conftest.py) rejects
    optimizer = nnx.Optimizer(model, optax.sgd(0.5), wrt=nnx.Param)

    def loss_fn(m):
        carry, ys = rc.unroll(lambda p, c, x: m(c, x), None, xs, m.initialize_carry((B,)))
        return jnp.mean((ys[:, -1] - target) ** 2)

    @nnx.jit
    def train_step(m, opt):
        loss, grads = nnx.value_and_grad(loss_fn)(m)
        opt.update(m, grads)
        return loss

    losses = [float(train_step(model, optimizer)) for _ in range(8)]
    assert losses[-1] < 0.5 * losses[0], losses


# --- NNX layers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls, options",
    [
        (rcn.LSTM, dict()),
        (rcn.GRU, dict(reset_after=True, merge="sum", bidirectional=True)),
        (rcn.RNN, dict(num_layers=2, bidirectional=True)),
    ],
)
def test_nnx_layer_equals_stack_unroll(cls, options, rng):
    layer = cls(D, H, rngs=nnx.Rngs(1), **options)
    xs = _xs(rng)
    lengths = jnp.asarray([T, 2], jnp.int32)
    merge = options.get("merge", "concat")
    expected = rc.stack_unroll(layer.params, xs, lengths=lengths, merge=merge)
    assert_tree_allclose(layer(xs, lengths=lengths), expected, rtol=0, atol=0)
    carries = layer.initialize_carry((B,))
    assert jax.tree.structure(carries) == jax.tree.structure(expected[0])


def test_nnx_layer_params_are_what_stack_init_gives():
    layer = rcn.LSTM(D, H, num_layers=2, bidirectional=True, forget_bias=0.0, rngs=nnx.Rngs(3))
    expected = rc.stack_init(
        nnx.Rngs(3).params(), "lstm", D, H, num_layers=2, bidirectional=True, forget_bias=0.0
    )
    assert_tree_allclose(layer.params, expected, rtol=0, atol=0)


def test_nnx_layer_reverse_runs_every_layer_backwards(rng):
    layer = rcn.RNN(D, H, num_layers=2, reverse=True, rngs=nnx.Rngs(0))
    xs, lengths = _xs(rng), jnp.asarray([T, 2], jnp.int32)
    ys, finals = xs, []
    for params in layer.params:  # the loop the reversed stack stands for
        final, ys = rc.unroll(rc.rnn_step, params, ys, lengths=lengths, reverse=True)
        finals.append(final)
    assert_tree_allclose(layer(xs, lengths=lengths), (tuple(finals), ys), rtol=1e-6, atol=1e-6)


def test_nnx_layer_dropout(rng):
    layer = rcn.RNN(D, H, num_layers=2, dropout_rate=0.5, rngs=nnx.Rngs(0))
    xs, key = _xs(rng), jax.random.key(7)
    expected = rc.stack_unroll(layer.params, xs, dropout_rate=0.5, dropout_key=key)
    assert_tree_allclose(layer(xs, rngs=key), expected, rtol=0, atol=0)
    first, second = layer(xs)[1], layer(xs)[1]  # the kept stream advances
    assert not np.allclose(first, second)
    eval_layer = nnx.view(layer, deterministic=True)
    assert_tree_allclose(eval_layer(xs), rc.stack_unroll(layer.params, xs), rtol=0, atol=0)
    no_rngs = rcn.Layer(layer.params, dropout_rate=0.5)
    with pytest.raises(ValueError, match="rngs is required for dropout"):
        no_rngs(xs)
    with pytest.raises(TypeError, match="rngs must be nnx.Rngs"):
        no_rngs(xs, rngs=3)


def test_layers_refuse_reverse_bidirectional(rng):
    with pytest.raises(ValueError, match="reverse=True does not apply to bidirectional"):
        rcn.RNN(D, H, bidirectional=True, reverse=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="reverse=True does not apply to bidirectional"):
        rcl.RNN(H, bidirectional=True, reverse=True).init(jax.random.key(0), _xs(rng))


def test_nnx_layer_checks_its_options_when_built(key):
    params = rc.lstm_init(key, D, H)
    with pytest.raises(
        TypeError, match=re.escape("layers must be a tuple of layer params (one layer: (LSTMP")
    ):
        rcn.Layer(params)
    with pytest.raises(ValueError, match=re.escape("merge must be one of ['concat', 'sum']")):
        rcn.Layer((params,), merge="avg")
    with pytest.raises(ValueError, match=re.escape("dropout_rate must be in [0, 1), got 1.5")):
        rcn.Layer((params,), dropout_rate=1.5, deterministic=True)


@pytest.mark.parametrize("rate,deterministic", [(-0.1, False), (1.0, True), (1.5, True)])
def test_linen_layer_checks_dropout_rate(rng, rate, deterministic):
    layer = rcl.GRU(H, num_layers=2, dropout_rate=rate)
    with pytest.raises(ValueError, match=re.escape(f"dropout_rate must be in [0, 1), got {rate}")):
        layer.init(
            {"params": jax.random.key(0), "dropout": jax.random.key(1)},
            _xs(rng),
            deterministic=deterministic,
        )


def test_carry_batch_shapes_are_checked(key):
    for batch in [(2.7,), (-2,)]:
        expected = re.escape(f"batch_shape must be a tuple of non-negative ints, got {batch!r}")
        with pytest.raises(ValueError, match=expected):
            rcl.LSTMCell(H).initialize_carry(key, batch + (D,))
        with pytest.raises(ValueError, match=expected):
            rcn.Cell(rc.lstm_init(key, D, H)).initialize_carry(batch)


# --- linen -------------------------------------------------------------------------------

LINEN_CELLS = {
    "lstm": lambda: rcl.LSTMCell(H, chrono_t_max=8.0),
    "gru": lambda: rcl.GRUCell(H),
    "gru_ra": lambda: rcl.GRUCell(H, reset_after=True),
    "rnn": lambda: rcl.RNNCell(H),
}


@pytest.mark.parametrize("kind", list(LINEN_CELLS))
def test_linen_cell_in_nn_rnn_equals_unroll_with_same_gradients(kind, rng):
    rnn = nn.RNN(LINEN_CELLS[kind](), return_carry=True)
    xs = _xs(rng)
    variables = rnn.init(jax.random.key(0), xs)
    params = variables["params"]["cell"]["cell"]
    step = rc.step_for(params)
    assert_tree_allclose(
        rnn.apply(variables, xs), rc.unroll(step, params, xs), rtol=1e-6, atol=1e-6
    )
    if kind not in ("lstm", "gru_ra"):
        return  # the gradient path is the same for every cell: two kinds keep the test fast

    def loss_linen(v):
        return jnp.sum(rnn.apply(v, xs)[1] ** 2)

    grads = jax.grad(loss_linen)(variables)["params"]["cell"]["cell"]
    expected = jax.grad(lambda p: jnp.sum(rc.unroll(step, p, xs)[1] ** 2))(params)
    assert_tree_allclose(grads, expected, rtol=1e-5, atol=1e-6)


def test_linen_cell_in_nn_bidirectional(rng):
    bi = nn.Bidirectional(nn.RNN(rcl.RNNCell(H)), nn.RNN(rcl.RNNCell(H)))
    # int64: Flax's flip_sequences compares lengths with a default-int arange (x64 is on)
    xs, lengths = _xs(rng), jnp.asarray([T, 2], jnp.int64)
    variables = bi.init(jax.random.key(0), xs, seq_lengths=lengths)
    p = variables["params"]
    params = rc.Bidirectional(p["forward_rnn"]["cell"]["cell"], p["backward_rnn"]["cell"]["cell"])
    ys = bi.apply(variables, xs, seq_lengths=lengths)
    _, expected = rc.bidirectional_unroll(None, params, xs, lengths=lengths)
    # Flax leaves its outputs past each length as they are; ours are zeros
    valid = (jnp.arange(T, dtype=jnp.int64)[None, :] < lengths[:, None])[..., None]
    assert_tree_allclose(jnp.where(valid, ys, 0.0), expected, rtol=1e-6, atol=1e-6)


def test_linen_cell_initialize_carry():
    cell = rcl.LSTMCell(H, dtype=jnp.float64)
    carry = cell.initialize_carry(jax.random.key(0), (B, 7, D))
    assert isinstance(carry, rc.LSTMState)
    assert carry.h.shape == (B, 7, H) and carry.c.dtype == jnp.float64
    assert isinstance(rcl.GRUCell(H).initialize_carry(jax.random.key(0), (D,)), rc.GRUState)
    assert rcl.RNNCell(H).num_feature_axes == 1


def test_linen_layer_equals_stack_unroll(rng):
    layer = rcl.RNN(H, num_layers=2, bidirectional=True)
    xs, lengths = _xs(rng), jnp.asarray([1, T], jnp.int32)
    variables = layer.init(jax.random.key(0), xs, lengths=lengths)
    params = variables["params"]["layers"]
    expected = rc.stack_unroll(params, xs, lengths=lengths)
    assert_tree_allclose(layer.apply(variables, xs, lengths=lengths), expected, rtol=0, atol=0)


def test_linen_layer_dropout_and_reverse(rng):
    layer = rcl.RNN(H, num_layers=2, dropout_rate=0.5)
    xs = _xs(rng)
    variables = layer.init(jax.random.key(0), xs, deterministic=True)
    params = variables["params"]["layers"]
    expected = rc.stack_unroll(params, xs)
    assert_tree_allclose(layer.apply(variables, xs, deterministic=True), expected, rtol=0, atol=0)
    dropped = layer.apply(variables, xs, deterministic=False, rngs={"dropout": jax.random.key(1)})
    assert not np.allclose(dropped[1], expected[1])
    with pytest.raises(ValueError, match='"deterministic" must be passed'):
        layer.apply(variables, xs)

    backwards = rcl.RNN(H, reverse=True)
    variables = backwards.init(jax.random.key(0), xs)
    (params,) = variables["params"]["layers"]
    expected = rc.unroll(rc.rnn_step, params, xs, reverse=True)
    final, ys = backwards.apply(variables, xs)
    assert_tree_allclose((final[0], ys), expected, rtol=1e-6, atol=1e-6)


# --- shared logic ------------------------------------------------------------------------


def test_common_option_errors(key):
    with pytest.raises(ValueError, match="cell must be one of"):
        common.cell_init(key, "lstmcell", D, H, common.CellOptions())
    with pytest.raises(ValueError, match="chrono_t_max applies to gated cells"):
        common.cell_init(key, "rnn", D, H, common.CellOptions(chrono_t_max=5.0))
    with pytest.raises(ValueError, match="reset_after applies to the GRU only"):
        common.cell_init(key, "lstm", D, H, common.CellOptions(reset_after=True))
    with pytest.raises(TypeError, match="dtype must be a floating dtype"):
        common.cell_init(key, "gru", D, H, common.CellOptions(dtype=jnp.int32))


def test_reverse_valid_is_an_involution(rng):
    xs, lengths = _xs(rng), jnp.asarray([T, 2], jnp.int32)
    once = common.reverse_valid(xs, lengths, time_major=False)
    np.testing.assert_array_equal(once[1, :2], xs[1, 1::-1])
    np.testing.assert_array_equal(once[1, 2:], xs[1, 2:])
    np.testing.assert_array_equal(common.reverse_valid(once, lengths, time_major=False), xs)
    tm = common.reverse_valid(jnp.moveaxis(xs, 0, 1), lengths, time_major=True)
    np.testing.assert_array_equal(jnp.moveaxis(tm, 0, 1), once)
    with pytest.raises(ValueError, match="lengths must lie in"):
        common.layer_apply(
            rc.stack_init(jax.random.key(0), "rnn", D, H),
            xs,
            lengths=jnp.asarray([9, 1], jnp.int32),
            reverse=True,
        )


@settings(max_examples=10, deadline=None)
@given(
    batch=st.integers(1, 2),
    steps=st.integers(1, 4),
    time_major=st.booleans(),
    data=st.data(),
)
def test_reverse_valid_matches_python_reversal(batch, steps, time_major, data):
    lengths = np.asarray(data.draw(st.lists(st.integers(0, steps), min_size=batch, max_size=batch)))
    xs = np.arange(batch * steps * 2, dtype=np.float32).reshape(batch, steps, 2)
    expected = xs.copy()
    for i, n in enumerate(lengths):
        expected[i, :n] = xs[i, :n][::-1]
    arg = np.moveaxis(xs, 0, 1) if time_major else xs
    got = common.reverse_valid(jnp.asarray(arg), jnp.asarray(lengths), time_major=time_major)
    got = np.moveaxis(np.asarray(got), 0, 1) if time_major else np.asarray(got)
    np.testing.assert_array_equal(got, expected)


# --- options a cell does not take, and dropout without a dropout rng ---------------------


_XS = jnp.ones((B, T, D), F32)


@pytest.mark.parametrize(
    "cell,option,value,build",
    [
        (
            "mingru",
            "forget_bias",
            2.0,
            lambda: rc.stack_init(jax.random.key(0), "mingru", D, H, forget_bias=2.0),
        ),
        (
            "gru",
            "forget_bias",
            2.0,
            lambda: rc.stack_init(jax.random.key(0), "gru", D, H, forget_bias=2.0),
        ),
        (
            "gru",
            "forget_bias",
            2.0,
            lambda: rcn.make_layer("gru", D, H, forget_bias=2.0, rngs=nnx.Rngs(0)),
        ),
        (
            "gru",
            "forget_bias",
            1.0,
            lambda: rcn.make_cell("gru", D, H, forget_bias=1.0, rngs=nnx.Rngs(0)),
        ),
        (
            "rnn",
            "chrono_t_max",
            5.0,
            lambda: rcn.make_layer("rnn", D, H, chrono_t_max=5.0, rngs=nnx.Rngs(0)),
        ),
        (
            "rnn",
            "chrono_t_max",
            5.0,
            lambda: rc.stack_init(jax.random.key(0), "rnn", D, H, chrono_t_max=5.0),
        ),
        (
            "mingru",
            "forget_bias",
            2.0,
            lambda: rcl.Layer(cell="mingru", hidden_size=H, forget_bias=2.0).init(
                jax.random.key(0), _XS
            ),
        ),
        (
            "gru",
            "forget_bias",
            2.0,
            lambda: nn.RNN(rcl.Cell(cell="gru", hidden_size=H, forget_bias=2.0)).init(
                jax.random.key(0), _XS
            ),
        ),
        (
            "lstm",
            "proj_size",
            2,
            lambda: rcn.make_layer("lstm", D, H, proj_size=2, rngs=nnx.Rngs(0)),
        ),
        (
            "lstm",
            "proj_size",
            2,
            lambda: rc.stack_init(jax.random.key(0), "lstm", D, H, proj_size=2),
        ),
    ],
)
def test_every_entry_point_refuses_an_option_the_cell_does_not_take_alike(
    cell, option, value, build
):
    expected = option_error(cell, option, value)
    assert expected.startswith(
        f"option {option!r} does not apply to the {cell!r} cell, whose init takes "
    )
    with pytest.raises(ValueError, match=re.escape(expected)):
        build()


def test_the_option_message_names_the_options_the_cell_takes():
    assert option_error("gru", "forget_bias", 2.0).startswith(
        "option 'forget_bias' does not apply to the 'gru' cell, whose init takes reset_after, "
        "chrono_t_max, dtype: forget_bias applies to cells with a forget gate (lstm, "
    )
    assert option_error("lstm", "reset_after", True) == (
        "option 'reset_after' does not apply to the 'lstm' cell, whose init takes forget_bias, "
        "chrono_t_max, dtype: reset_after applies to the GRU only, got True for 'lstm'"
    )


def test_options_the_cell_takes_still_reach_its_init():
    (gru,) = rc.stack_init(jax.random.key(0), "gru", D, H, chrono_t_max=5.0, reset_after=True)
    assert type(gru) is rc.GRUResetAfterParams
    layer = rcn.make_layer("lstm", D, H, forget_bias=3.0, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(layer.params[0].b[H : 2 * H], np.full(H, 3.0))
    rcn.GRU(D, H, rngs=nnx.Rngs(0))  # the GRU's classes pass no forget_bias
    rcl.GRU(hidden_size=H).init(jax.random.key(0), _XS)


DROPOUT_RNGS = "draws its masks from rngs['dropout']"


def test_nnx_dropout_without_a_dropout_stream_names_it():
    layer = rcn.make_layer("lstm", D, H, num_layers=2, dropout_rate=0.5, rngs=nnx.Rngs(params=0))
    with pytest.raises(ValueError, match=re.escape(DROPOUT_RNGS) + ".*got streams \\['params'\\]"):
        layer(_XS)
    layer(_XS, deterministic=True)
    layer(_XS, rngs=nnx.Rngs(dropout=1))
    with pytest.raises(ValueError, match=re.escape(DROPOUT_RNGS)):
        layer(_XS, rngs=nnx.Rngs(params=1))
    no_rngs = rcn.Layer(layer.params, dropout_rate=0.5)
    with pytest.raises(ValueError, match=re.escape("rngs['dropout']")):
        no_rngs(_XS)


def test_linen_dropout_without_a_dropout_rng_names_it():
    layer = rcl.Layer(cell="lstm", hidden_size=H, num_layers=2, dropout_rate=0.5)
    variables = layer.init(jax.random.key(0), _XS, deterministic=True)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "dropout (dropout_rate=0.5, deterministic=False) draws its masks from "
            "rngs['dropout'], and none was given: pass rngs={'dropout': key} to apply, or "
            "deterministic=True"
        ),
    ):
        layer.apply(variables, _XS, deterministic=False)
    layer.apply(variables, _XS, deterministic=False, rngs={"dropout": jax.random.key(1)})
