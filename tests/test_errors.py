"""Bad input raises ValueError / TypeError naming the argument, the expected and the given value."""

import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import pytest

import rnncells as rc
from rnncells.cells._registry import _unregister

D, H, B, T = 3, 4, 2, 5


@pytest.fixture
def lstm(key):
    return rc.lstm_init(key, D, H)


def ones(*shape, dtype=jnp.float32):
    return jnp.ones(shape, dtype)


def lit(text):
    """A regex that matches ``text`` literally."""
    return re.escape(text)


def test_wrong_input_size(lstm):
    carry = rc.init_carry(lstm, (B,))
    with pytest.raises(
        ValueError, match=lit("x must have last dimension 3 (input_size), got shape (2, 7)")
    ):
        rc.lstm_step(lstm, carry, ones(B, 7))
    with pytest.raises(
        ValueError, match=lit("xs must have last dimension 3 (input_size), got shape (2, 5, 7)")
    ):
        rc.unroll(rc.lstm_step, lstm, ones(B, T, 7))


@pytest.mark.parametrize("time_major", [False, True])
def test_xs_of_rank_one(lstm, time_major):
    layout = "(T, *batch, input_size)" if time_major else "(*batch, T, input_size)"
    expected = f"xs must have at least 2 dimensions {layout}, got shape (5,)"
    with pytest.raises(ValueError, match=lit(expected)):
        rc.unroll(rc.lstm_step, lstm, ones(T), time_major=time_major)


def test_mismatched_carry_shape(lstm):
    with pytest.raises(ValueError, match=r"carry\.h must have shape \(2, 4\).*got shape \(3, 4\)"):
        rc.lstm_step(lstm, rc.init_carry(lstm, (3,)), ones(B, D))
    with pytest.raises(ValueError, match=r"carry\.h must have shape \(2, 4\).*got shape \(3, 4\)"):
        rc.unroll(rc.lstm_step, lstm, ones(B, T, D), rc.init_carry(lstm, (3,)))
    bad_c = rc.LSTMState(jnp.zeros((B, H), jnp.float32), jnp.zeros((B, H + 1), jnp.float32))
    with pytest.raises(ValueError, match=r"carry\.c must have shape \(2, 4\).*got shape \(2, 5\)"):
        rc.lstm_step(lstm, bad_c, ones(B, D))


def test_carry_of_the_wrong_type(lstm, key):
    carry = rc.init_carry(lstm, (B,))
    with pytest.raises(TypeError, match=lit("carry must be LSTMState (see init_carry), got tuple")):
        rc.lstm_step(lstm, (carry.h, carry.c), ones(B, D))
    with pytest.raises(
        TypeError, match=lit("carry must be LSTMState (see init_carry), got GRUState")
    ):
        rc.unroll(rc.lstm_step, lstm, ones(B, T, D), rc.GRUState(carry.h))
    gru = rc.gru_init(key, D, H)
    with pytest.raises(
        TypeError, match=lit("carry must be GRUState (see init_carry), got LSTMState")
    ):
        rc.gru_step(gru, carry, ones(B, D))


def test_wrong_dtype(lstm):
    carry = rc.init_carry(lstm, (B,))
    expected = "must have dtype float32 (the parameters' dtype), got float64"
    with pytest.raises(TypeError, match=lit("x " + expected)):
        rc.lstm_step(lstm, carry, ones(B, D, dtype=jnp.float64))
    with pytest.raises(TypeError, match=lit("xs " + expected)):
        rc.unroll(rc.lstm_step, lstm, ones(B, T, D, dtype=jnp.float64))
    carry64 = jax.tree.map(lambda a: a.astype(jnp.float64), carry)
    with pytest.raises(TypeError, match=lit("carry.h " + expected)):
        rc.lstm_step(lstm, carry64, ones(B, D))
    with pytest.raises(TypeError, match=lit("xs must have a floating dtype, got int32")):
        rc.unroll(rc.lstm_step, lstm, ones(B, T, D, dtype=jnp.int32))
    with pytest.raises(TypeError, match=lit("x must be an array, got list")):
        rc.lstm_step(lstm, carry, [[1.0, 2.0, 3.0]] * B)


def test_lengths_of_wrong_shape(lstm):
    with pytest.raises(ValueError, match=lit("lengths must have shape (2,), got shape (3,)")):
        rc.unroll(rc.lstm_step, lstm, ones(B, T, D), lengths=jnp.array([1, 2, 3], jnp.int32))
    with pytest.raises(ValueError, match=lit("lengths must have shape (2,), got shape (2, 1)")):
        rc.unroll(rc.lstm_step, lstm, ones(B, T, D), lengths=jnp.ones((2, 1), jnp.int32))


def test_lengths_of_float_dtype(lstm):
    with pytest.raises(TypeError, match=lit("lengths must have an integer dtype, got float32")):
        rc.unroll(rc.lstm_step, lstm, ones(B, T, D), lengths=jnp.array([1.0, 2.0], jnp.float32))
    with pytest.raises(TypeError, match=lit("lengths must be an array, got list")):
        rc.unroll(rc.lstm_step, lstm, ones(B, T, D), lengths=[1, 2])


@pytest.mark.parametrize("values,low,high", [((-1, 2), -1, 2), ((1, 6), 1, 6)])
def test_lengths_outside_zero_to_t(lstm, values, low, high):
    expected = (
        f"lengths must lie in [0, 5] (the number of time steps), got values in [{low}, {high}]"
    )
    with pytest.raises(ValueError, match=lit(expected)):
        rc.unroll(rc.lstm_step, lstm, ones(B, T, D), lengths=jnp.array(values, jnp.int32))
    with pytest.raises(ValueError, match=lit(expected)):
        rc.bidirectional_unroll(
            None, rc.Bidirectional(lstm, lstm), ones(B, T, D), lengths=jnp.array(values, jnp.int32)
        )


def test_unknown_gate_name(lstm, key):
    with pytest.raises(
        ValueError, match=lit("must be one of ['i', 'f', 'g', 'o'] for LSTMParams, got 'z'")
    ):
        rc.gate(lstm, "z")
    gru = rc.gru_init(key, D, H, reset_after=True)
    with pytest.raises(
        ValueError, match=lit("must be one of ['r', 'z', 'h'] for GRUResetAfterParams, got 'n'")
    ):
        rc.gate(gru, "n")
    with pytest.raises(ValueError, match=lit("must be one of ['h'] for RNNParams, got 'i'")):
        rc.rnn_gate(rc.rnn_init(key, D, H), "i")


def test_step_and_params_mismatch(lstm):
    carry = rc.init_carry(lstm, (B,))
    with pytest.raises(
        TypeError, match=lit("params must be GRUParams or GRUResetAfterParams, got LSTMParams")
    ):
        rc.gru_step(lstm, carry, ones(B, D))
    with pytest.raises(TypeError, match=lit("params must be RNNParams, got LSTMParams")):
        rc.rnn_step(lstm, carry, ones(B, D))
    expected = "gru_step does not match params LSTMParams: expected lstm_step"
    with pytest.raises(TypeError, match=expected):
        rc.unroll(rc.gru_step, lstm, ones(B, T, D))
    with pytest.raises(
        TypeError, match=r"params must be one of LSTMParams, .*RNNParams.* got dict"
    ):
        rc.init_carry({"W": ones(D, H)}, (B,))


@pytest.mark.parametrize("init", [rc.lstm_init, rc.gru_init, rc.rnn_init])
@pytest.mark.parametrize(
    "argument,value",
    [("input_size", 0), ("hidden_size", -2), ("hidden_size", 4.0), ("input_size", True)],
)
def test_non_positive_or_non_integer_sizes(init, argument, value, key):
    sizes = {"input_size": D, "hidden_size": H, argument: value}
    with pytest.raises(
        ValueError, match=lit(f"{argument} must be a positive integer, got {value!r}")
    ):
        init(key, **sizes)


def test_other_positive_integers(lstm, key):
    with pytest.raises(ValueError, match=lit("num_layers must be a positive integer, got 0")):
        rc.stack_init(key, "lstm", D, H, num_layers=0)
    with pytest.raises(ValueError, match=lit("unroll must be a positive integer, got 0")):
        rc.unroll(rc.lstm_step, lstm, ones(B, T, D), unroll=0)
    with pytest.raises(
        ValueError, match=lit("batch_shape must be a tuple of non-negative ints, got (-1,)")
    ):
        rc.init_carry(lstm, (-1,))


def test_dropout_without_a_key_and_rate_out_of_range(lstm):
    layers = (lstm, rc.lstm_init(jax.random.key(1), H, H))
    with pytest.raises(
        ValueError,
        match=lit("dropout_key is required when dropout_rate > 0 (dropout_key=None given)"),
    ):
        rc.stack_unroll(layers, ones(B, T, D), dropout_rate=0.5)
    with pytest.raises(ValueError, match=lit("dropout_rate must be in [0, 1), got 1.0")):
        rc.stack_unroll(layers, ones(B, T, D), dropout_rate=1.0, dropout_key=jax.random.key(0))


def test_unknown_merge(lstm, key):
    expected = "merge must be one of ['concat', 'sum'], got 'mean'"
    with pytest.raises(ValueError, match=lit(expected)):
        rc.bidirectional_unroll(None, rc.Bidirectional(lstm, lstm), ones(B, T, D), merge="mean")
    with pytest.raises(ValueError, match=lit(expected)):
        rc.stack_unroll((lstm,), ones(B, T, D), merge="mean")
    with pytest.raises(ValueError, match=lit(expected)):
        rc.stack_init(key, "lstm", D, H, bidirectional=True, merge="mean")


def test_layer_and_stack_structure_errors(lstm, key):
    with pytest.raises(
        TypeError, match=lit("params must be Bidirectional(forward, backward), got LSTMParams")
    ):
        rc.bidirectional_unroll(None, lstm, ones(B, T, D))
    with pytest.raises(
        TypeError,
        match=lit("carry must be Bidirectional(forward_carry, backward_carry) or None, got tuple"),
    ):
        carry = rc.init_carry(lstm, (B,))
        rc.bidirectional_unroll(None, rc.Bidirectional(lstm, lstm), ones(B, T, D), (carry, carry))
    with pytest.raises(
        ValueError,
        # every registered cell is listed, the seed's four first
        match=lit(f"cell must be one of {list(rc.cell_names())} or an init function, got 'lsmt'"),
    ):
        rc.stack_init(key, "lsmt", D, H)
    with pytest.raises(ValueError, match=lit("carries must have one entry per layer (2), got 1")):
        rc.stack_unroll((lstm, rc.lstm_init(key, H, H)), ones(B, T, D), (None,))
    with pytest.raises(
        ValueError, match=lit("layers must hold at least one layer, got an empty tuple")
    ):
        rc.stack_unroll((), ones(B, T, D))


def test_user_step_errors():
    with pytest.raises(
        ValueError,
        match=lit("carry is required when step is not a built-in step (carry=None given)"),
    ):
        rc.unroll(lambda p, c, x: (c, x), None, ones(B, T, D))
    with pytest.raises(TypeError, match=lit("step must be callable, got int")):
        rc.unroll(3, None, ones(B, T, D), 0.0)


@pytest.mark.parametrize(
    "field,bad,expected",
    [
        ("b", jnp.zeros(4), "params.b must have shape (16,), got shape (4,)"),
        ("b", jnp.zeros(1), "params.b must have shape (16,), got shape (1,)"),
        (
            "V",
            jnp.zeros((4, 12)),
            "params.V must have shape (hidden_size, 4 * hidden_size) for LSTMParams, "
            "got shape (4, 12)",
        ),
        (
            "W",
            jnp.zeros((3, 12)),
            "params.W must have shape (input_size, 16) (4 gates of hidden_size 4, from "
            "params.V), got shape (3, 12)",
        ),
    ],
)
def test_params_of_wrong_shape(lstm, field, bad, expected):
    params = lstm._replace(**{field: bad})
    with pytest.raises(ValueError, match=lit(expected)):
        rc.unroll(rc.lstm_step, params, ones(B, T, D))
    with pytest.raises(ValueError, match=lit(expected)):
        rc.lstm_step(params, rc.init_carry(lstm, (B,)), ones(B, D))


def test_gru_params_of_wrong_shape_or_dtype(key):
    gru = rc.gru_init(key, D, H, reset_after=True)
    with pytest.raises(ValueError, match=lit("params.b_hn must have shape (4,), got shape (12,)")):
        rc.unroll(rc.gru_step, gru._replace(b_hn=jnp.zeros(12)), ones(B, T, D))
    expected = "params.V must have dtype float32 (params.W's dtype), got bfloat16"
    with pytest.raises(TypeError, match=lit(expected)):
        rc.unroll(rc.gru_step, gru._replace(V=gru.V.astype(jnp.bfloat16)), ones(B, T, D))
    rnn = rc.rnn_init(key, D, H)
    with pytest.raises(TypeError, match=lit("params.W must have a floating dtype, got int32")):
        rc.rnn_step(rnn._replace(W=rnn.W.astype(jnp.int32)), rc.init_carry(rnn, (B,)), ones(B, D))


def test_stack_errors_name_the_layer(lstm, key):
    with pytest.raises(
        TypeError,
        match=lit(
            "layers must be a tuple of layer params (one layer: (LSTMParams(...),)), got LSTMParams"
        ),
    ):
        rc.stack_unroll(lstm, ones(B, T, D))
    layers = (lstm, rc.lstm_init(key, 2 * H, H))
    with pytest.raises(
        ValueError,
        match=lit("layers[1] takes inputs of size 8, but layers[0] gives outputs of size 4"),
    ):
        rc.stack_unroll(layers, ones(B, T, D))
    two_sizes = rc.Bidirectional(lstm, rc.lstm_init(key, D, H + 1))
    with pytest.raises(
        ValueError,
        match=lit(
            "merge='sum' needs outputs of one size from both directions, got 4 from "
            "params.forward and 5 from params.backward"
        ),
    ):
        rc.bidirectional_unroll(None, two_sizes, ones(B, T, D), merge="sum")


class _ToyParams(NamedTuple):
    W: jax.Array
    V: jax.Array
    b: jax.Array


def _toy_step(params, carry, x):
    a = x @ params.W + carry.h @ params.V
    h = jnp.tanh(a + params.b.reshape((1,) * (a.ndim - 1) + (-1,)))
    return rc.RNNState(h), h


def _toy_init(key, input_size, hidden_size, *, dtype=jnp.float32):
    return _ToyParams(*rc.rnn_init(key, input_size, hidden_size, dtype=dtype))


def test_register_cell_refuses_a_fused_flag_and_blocks_without_a_unit():
    spec = rc.standard_spec("toy_fused", _ToyParams, rc.RNNState, _toy_step, _toy_init, ("h",))
    with pytest.raises(
        TypeError,
        match=lit("spec.fused must be a FusedCell (the cell's fused unit) or None, got True"),
    ):
        rc.register_cell(spec._replace(fused=True))
    lstm = rc.cell_spec_by_name("lstm")
    with pytest.raises(
        ValueError,
        match=lit(
            "spec.blocks needs spec.fused: the kernels run the fused layer's loops, and the "
            "'toy_fused' cell has no fused unit (fused=None)"
        ),
    ):
        rc.register_cell(spec._replace(blocks=lstm.blocks))
    with pytest.raises(
        ValueError,
        match=lit("spec.fused.state must be the cell's carry type RNNState, got LSTMState"),
    ):
        rc.register_cell(spec._replace(fused=lstm.fused))
    with pytest.raises(
        TypeError, match=lit("spec.blocks must be a BlockCell (the cell's kernel blocks) or None")
    ):
        rc.register_cell(spec._replace(fused=rc.cell_spec_by_name("rnn").fused, blocks=1))
    assert "toy_fused" not in rc.cell_names()


def _step_adds_a_dim(params, carry, x):
    _, h = _toy_step(params, carry, x)
    return rc.RNNState(jnp.stack([h, h], axis=-1)), h


def _step_returns_a_pair(params, carry, x):
    new, h = _toy_step(params, carry, x)
    return (new, new), h


def _step_in_bfloat16(params, carry, x):
    new, h = _toy_step(params, carry, x)
    return rc.RNNState(new.h.astype(jnp.bfloat16)), h


@pytest.mark.parametrize("lengths", [None, (5, 2)])
@pytest.mark.parametrize(
    "step,error,got",
    [
        (_step_adds_a_dim, ValueError, "RNNState(h=float32(2, 4, 2))"),
        (_step_returns_a_pair, TypeError, "(RNNState(h=float32(2, 4)), RNNState(h=float32(2, 4)))"),
        (_step_in_bfloat16, TypeError, "RNNState(h=bfloat16(2, 4))"),
    ],
)
def test_a_users_step_returning_another_carry_is_named(step, error, got, lengths, key):
    params = _toy_init(key, D, H)
    carry = rc.RNNState(jnp.zeros((B, H), jnp.float32))
    lens = None if lengths is None else jnp.asarray(lengths)
    expected = (
        f"step {step.__qualname__} must return a carry of the structure, shapes and dtypes "
        f"of the carry it is given: expected RNNState(h=float32(2, 4)), got {got}"
    )
    with pytest.raises(error, match=lit(expected)):
        rc.unroll(step, params, ones(B, T, D), carry, lengths=lens)
    with pytest.raises(error, match=lit(expected)):
        jax.jit(lambda p, xs: rc.unroll(step, p, xs, carry, lengths=lens))(params, ones(B, T, D))


def test_a_registered_cells_step_returning_another_carry_names_the_cell(key):
    spec = rc.standard_spec(
        "toy_bad_carry", _ToyParams, rc.RNNState, _step_adds_a_dim, _toy_init, ("h",)
    )
    rc.register_cell(spec)
    try:
        params = _toy_init(key, D, H)
        with pytest.raises(
            ValueError,
            match=lit(
                "step _step_adds_a_dim (of the registered cell 'toy_bad_carry') must return a "
                "carry of the structure, shapes and dtypes of the carry it is given: expected "
                "RNNState(h=float32(2, 4)), got RNNState(h=float32(2, 4, 2))"
            ),
        ):
            rc.unroll(_step_adds_a_dim, params, ones(B, T, D))
    finally:
        _unregister("toy_bad_carry")


def test_a_step_not_returning_a_pair(key):
    with pytest.raises(
        TypeError,
        match=lit(
            "step test_a_step_not_returning_a_pair.<locals>.<lambda> must return a pair "
            "(carry, y), got RNNState"
        ),
    ):
        rc.unroll(
            lambda p, c, x: c, None, ones(B, T, D), rc.RNNState(jnp.zeros((B, H), jnp.float32))
        )


def test_a_weakly_typed_carry_takes_the_steps_dtype():
    def step(params, carry, x):
        new = carry + x.sum()
        return new, new

    carry, _ = rc.unroll(step, None, ones(B, T, D), 0.0)
    assert carry.dtype == jnp.float32 and float(carry) == B * T * D


def test_a_users_params_may_hold_leaves_that_are_not_arrays():
    def step(params, carry, x):
        new = carry + params["scale"] * x.sum(-1)
        return new, new

    params = {"scale": 2.0, "name": "sum"}
    carry, _ = rc.unroll(step, params, ones(B, T, D), jnp.zeros((B,), jnp.float32))
    assert carry.tolist() == [2.0 * T * D] * B
