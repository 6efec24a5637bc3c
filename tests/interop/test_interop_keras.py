"""Converters to and from Keras 3's LSTM, GRU (both reset placements) and SimpleRNN,
checked against Keras's own forward pass on its JAX backend."""

import contextlib
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnncells as rc
from rnncells import interop
from tests.conftest import assert_tree_allclose

# Keras reads its backend once, at its first import (nothing else in the suite imports
# it). The variable is put back afterwards, so that the subprocesses of other tests (the
# docs' snippets) see the environment they were given.
_backend = os.environ.get("KERAS_BACKEND")
os.environ["KERAS_BACKEND"] = "jax"
import keras  # noqa: E402

if _backend is None:
    del os.environ["KERAS_BACKEND"]
else:
    os.environ["KERAS_BACKEND"] = _backend

B, T, D, H = 2, 3, 3, 5  # D != H: a transposed or misplaced weight cannot fit
F32 = jnp.float32
TOL = dict(rtol=1e-5, atol=1e-5)
EXACT = dict(rtol=0, atol=0)

# kind -> (Keras layer, its options, the params type it converts to)
KINDS = {
    "lstm": (keras.layers.LSTM, {}, rc.LSTMParams),
    "gru": (keras.layers.GRU, {"reset_after": True}, rc.GRUResetAfterParams),
    "gru_reset_before": (keras.layers.GRU, {"reset_after": False}, rc.GRUParams),
    "rnn": (keras.layers.SimpleRNN, {}, rc.RNNParams),
}


@contextlib.contextmanager
def keras_defaults():
    """JAX's default settings around Keras calls, which Keras is written for: its code
    broadcasts ranks and mixes dtypes, which conftest's strict settings refuse, and some
    of its zeros are float64 under x64 (a use_bias=False GRU's scan carry then changes
    dtype)."""
    with (
        jax.numpy_rank_promotion("allow"),
        jax.numpy_dtype_promotion("standard"),
        jax.enable_x64(False),
    ):
        yield


def make_layer(kind, *, built=True, **options):
    cls, kind_options, _ = KINDS[kind]
    with keras_defaults():
        layer = cls(H, return_sequences=True, **kind_options, **options)
        if built:
            layer.build((None, None, D))
    return layer


def randomise_layer(layer, rng):
    """Distinct non-zero values in every weight (biases included)."""
    for variable in layer.weights:
        variable.assign(rng.normal(scale=0.5, size=variable.shape).astype("float32"))
    return layer


def random_params(kind, rng, dtype=jnp.float32):
    """Params of ``kind`` with distinct non-zero values everywhere (b_hn included)."""
    params_type = KINDS[kind][2]
    G = {rc.LSTMParams: 4, rc.RNNParams: 1}.get(params_type, 3)
    shapes = {"W": (D, G * H), "V": (H, G * H), "b": (G * H,), "b_hn": (H,)}
    return params_type(
        *(jnp.asarray(rng.normal(scale=0.5, size=shapes[f]), dtype) for f in params_type._fields)
    )


def random_states(kind, rng):
    """Keras's initial states: [h, c] for an LSTM, [h] otherwise."""
    count = 2 if kind == "lstm" else 1
    return [jnp.asarray(rng.normal(size=(B, H)), jnp.float32) for _ in range(count)]


def keras_run(layer, xs, states):
    """Keras's forward pass: (outputs, final states), for a return_state=True layer."""
    with keras_defaults():
        ys, *final = layer(xs, initial_state=states)
    return ys, final


@jax.jit  # one compilation per cell, shared by the tests (Keras's own call compiles anew)
def _unroll(params, xs, carry):
    return rc.unroll(rc.step_for(params), params, xs, carry)


def ours(params, xs, states):
    """rnncells' unroll from Keras's states to (outputs, Keras's final states)."""
    final, ys = _unroll(params, xs, interop.from_keras_carry(states, params))
    return ys, interop.to_keras_carry(final)


def inputs(rng):
    return jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("kind", list(KINDS))
def test_from_keras_matches_keras(kind, use_bias, rng):
    layer = randomise_layer(make_layer(kind, return_state=True, use_bias=use_bias), rng)
    xs, states = inputs(rng), random_states(kind, rng)
    params = interop.from_keras(layer)
    assert type(params) is KINDS[kind][2]
    assert_tree_allclose(ours(params, xs, states), keras_run(layer, xs, states), **TOL)


@pytest.mark.parametrize("kind", list(KINDS))
def test_to_keras_builds_the_cells_layer(kind, rng):
    """A new layer: the cell's class and options, units H, the whole sequence returned,
    Keras's default activations; its weights are the params (the round trips below)."""
    params = random_params(kind, rng)
    layer = interop.to_keras(params)
    cls, options, _ = KINDS[kind]
    assert type(layer) is cls and layer.built
    assert layer.units == H and layer.return_sequences and not layer.return_state
    assert layer.cell.kernel.shape == (D, params.W.shape[1])
    assert layer.activation is keras.activations.tanh
    for name, value in options.items():
        assert getattr(layer, name) == value


# Built for lstm and rnn, built by to_keras for the two GRUs.
@pytest.mark.parametrize(("kind", "built"), [(k, k in ("lstm", "rnn")) for k in KINDS])
def test_to_keras_matches_keras(kind, built, rng):
    params = random_params(kind, rng)
    layer = make_layer(kind, built=built, return_state=True)
    assert interop.to_keras(params, layer) is layer
    xs, states = inputs(rng), random_states(kind, rng)
    assert_tree_allclose(keras_run(layer, xs, states), ours(params, xs, states), **TOL)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("kind", list(KINDS))
def test_params_keras_params_round_trip_is_exact(kind, dtype, rng):
    params = random_params(kind, rng, dtype)
    layer = interop.to_keras(params)
    assert np.dtype(layer.cell.kernel.dtype) == dtype
    assert_tree_allclose(interop.from_keras(layer), params, **EXACT)


@pytest.mark.parametrize("kind", list(KINDS))
def test_keras_params_keras_round_trip(kind, rng):
    """Exact for every weight, but for the reset-after GRU's r and z biases, which Keras
    keeps as two summands: their sum, and so the params, come back exactly."""
    layer = randomise_layer(make_layer(kind), rng)
    params = interop.from_keras(layer)
    back = interop.to_keras(params)
    assert_tree_allclose(interop.from_keras(back), params, **EXACT)
    names = ["kernel", "recurrent_kernel"] + ([] if kind == "gru" else ["bias"])
    for name in names:
        np.testing.assert_array_equal(
            getattr(back.cell, name).value, getattr(layer.cell, name).value, err_msg=name
        )
    if kind == "gru":
        bias, original = back.cell.bias.value, layer.cell.bias.value
        np.testing.assert_array_equal(bias[1, : 2 * H], 0)  # r and z biases all in bias[0]
        np.testing.assert_array_equal(bias[:, 2 * H :], original[:, 2 * H :])


def test_unit_forget_bias_is_read_as_stored():
    """unit_forget_bias=True sets b_f to 1 at initialisation; Keras's forward pass adds
    nothing (unlike Haiku's), so the converted b is the stored bias as it stands."""
    layer = make_layer("lstm", unit_forget_bias=True)
    gate_b = rc.lstm_gate(interop.from_keras(layer), "f").b
    np.testing.assert_array_equal(gate_b, np.ones(H))
    for name in ("i", "g", "o"):
        np.testing.assert_array_equal(rc.lstm_gate(interop.from_keras(layer), name).b, 0)


def test_cells_and_rnn_wrapper_convert(rng):
    """keras.layers.RNN of a cell runs the cell's own step (the GRU layer has a faster
    path of its own on JAX): the same params, the same function."""
    layer = randomise_layer(make_layer("gru", return_state=True), rng)
    wrapped = keras.layers.RNN(layer.cell, return_sequences=True, return_state=True)
    params = interop.from_keras(wrapped)
    assert_tree_allclose(params, interop.from_keras(layer), **EXACT)
    assert_tree_allclose(interop.from_keras(layer.cell), params, **EXACT)
    xs, states = inputs(rng), random_states("gru", rng)
    assert_tree_allclose(keras_run(wrapped, xs, states), ours(params, xs, states), **TOL)
    # Writing into a bare cell (built by to_keras): the same weights, exactly.
    params = random_params("lstm", rng)
    cell = interop.to_keras(params, keras.layers.LSTMCell(H))
    assert_tree_allclose(interop.from_keras(cell), params, **EXACT)


def test_go_backwards_is_a_reversed_unroll(rng):
    """Keras runs a go_backwards layer over the reversed sequence and returns its outputs
    in the order it produced them: rc.unroll(reverse=True)'s, reversed in time."""
    layer = randomise_layer(make_layer("gru", return_state=True, go_backwards=True), rng)
    xs, states = inputs(rng), random_states("gru", rng)
    ys, final = keras_run(layer, xs, states)
    with pytest.warns(interop.InexactConversionWarning, match="go_backwards=True"):
        params = interop.from_keras(layer)
    carry, ys_ours = rc.unroll(
        rc.gru_step, params, xs, interop.from_keras_carry(states, params), reverse=True
    )
    assert_tree_allclose((ys, final), (ys_ours[:, ::-1], interop.to_keras_carry(carry)), **TOL)


def test_carry_converters(rng):
    h, c = (jnp.asarray(rng.normal(size=(B, H)), jnp.float32) for _ in range(2))
    lstm, gru = random_params("lstm", rng), random_params("gru", rng)
    state = interop.from_keras_carry([h, c], lstm)
    assert type(state) is rc.LSTMState
    assert_tree_allclose(state, rc.LSTMState(h=h, c=c), **EXACT)
    assert_tree_allclose(interop.from_keras_carry((h, c), lstm), state, **EXACT)
    assert_tree_allclose(interop.to_keras_carry(state), [h, c], **EXACT)
    for given in ([h], (h,), h):  # a GRU's state list, or its one array
        assert_tree_allclose(interop.from_keras_carry(given, gru), rc.GRUState(h), **EXACT)
    assert_tree_allclose(interop.to_keras_carry(rc.GRUState(h)), [h], **EXACT)
    assert_tree_allclose(interop.to_keras_carry(rc.RNNState(h)), [h], **EXACT)


def _params(kind, dtype=jnp.float32, **fields):
    return random_params(kind, np.random.default_rng(0), dtype)._replace(**fields)


ONES_H = np.ones((B, H), np.float32)

# (id, call, error, message pattern): every refusal names the argument and says why.
REFUSALS = [
    ("not a layer", lambda: interop.from_keras("lstm"), TypeError, "layer must be keras"),
    ("dense", lambda: interop.from_keras(keras.layers.Dense(3)), TypeError, "got .*Dense"),
    (
        "bidirectional",
        lambda: interop.from_keras(keras.layers.Bidirectional(keras.layers.LSTM(H))),
        TypeError,
        "forward_layer and layer.backward_layer",
    ),
    (
        "stacked cells",
        lambda: interop.from_keras(
            keras.layers.RNN([keras.layers.LSTMCell(H), keras.layers.LSTMCell(H)])
        ),
        TypeError,
        "StackedRNNCells",
    ),
    ("unbuilt", lambda: interop.from_keras(keras.layers.LSTM(H)), ValueError, "not built"),
    (
        "relu lstm",
        lambda: interop.from_keras(keras.layers.LSTM(H, activation="relu")),
        ValueError,
        r"layer.cell.activation must be tanh .*got 'relu'",
    ),
    (
        "hard sigmoid gru",
        lambda: interop.from_keras(keras.layers.GRU(H, recurrent_activation="hard_sigmoid")),
        ValueError,
        r"layer.cell.recurrent_activation must be sigmoid .*got 'hard_sigmoid'",
    ),
    (
        "linear simple rnn",
        lambda: interop.from_keras(keras.layers.SimpleRNN(H, activation=None)),
        ValueError,
        r"activation must be tanh .*got 'linear'",
    ),
    (
        "relu into existing",
        lambda: interop.to_keras(_params("rnn"), keras.layers.SimpleRNN(H, activation="relu")),
        ValueError,
        r"layer.cell.activation must be tanh",
    ),
    (
        "reset-before into reset-after",
        lambda: interop.to_keras(_params("gru_reset_before"), keras.layers.GRU(H)),
        ValueError,
        r"params is GRUParams, but layer is keras.layers.GRU\(reset_after=True\)",
    ),
    (
        "reset-after into reset-before",
        lambda: interop.to_keras(_params("gru"), keras.layers.GRU(H, reset_after=False)),
        ValueError,
        r"GRUResetAfterParams.*reset_after=False.*different functions",
    ),
    (
        "lstm into gru",
        lambda: interop.to_keras(_params("lstm"), keras.layers.GRU(H)),
        TypeError,
        r"layer must be the Keras layer of params' cell \(LSTMParams\)",
    ),
    (
        "units",
        lambda: interop.to_keras(_params("lstm"), keras.layers.LSTM(H + 1)),
        ValueError,
        rf"layer has units={H + 1}, but params have hidden_size {H}",
    ),
    (
        "built for another input",
        lambda: interop.to_keras(
            _params("lstm", W=jnp.ones((D + 1, 4 * H), F32)), make_layer("lstm")
        ),
        ValueError,
        rf"built for input size {D} .*params have input_size {D + 1}",
    ),
    (
        "bias into use_bias=False",
        lambda: interop.to_keras(
            _params("lstm", b=jnp.ones(4 * H, F32)), keras.layers.LSTM(H, use_bias=False)
        ),
        ValueError,
        r"use_bias=False, so params.b must be all zeros",
    ),
    (
        "b_hn into use_bias=False",
        lambda: interop.to_keras(
            _params("gru", b=jnp.zeros(3 * H, F32), b_hn=jnp.ones(H, F32)),
            keras.layers.GRU(H, use_bias=False),
        ),
        ValueError,
        r"use_bias=False, so params.b_hn must be all zeros",
    ),
    (
        "dtype",
        lambda: interop.to_keras(_params("lstm", jnp.float64), keras.layers.LSTM(H)),
        TypeError,
        r"layer's weights are float32, but params are float64",
    ),
    (
        "params shape",
        lambda: interop.to_keras(_params("gru", V=jnp.ones((H, 2 * H), F32))),
        ValueError,
        r"params.V",
    ),
    ("params type", lambda: interop.to_keras({"W": 1}), TypeError, "params"),
    (
        "relu IRNN for SimpleRNN (tanh)",
        lambda: interop.to_keras(rc.irnn_init(jax.random.key(0), D, H)),
        ValueError,
        r"params is IRNNParams \(rnncells' 'irnn' cell\), which this converter cannot",
    ),
    (
        "peephole LSTM for LSTM",
        lambda: interop.to_keras(rc.peephole_lstm_init(jax.random.key(0), D, H)),
        ValueError,
        r"params is PeepholeLSTMParams",
    ),
    ("layer type", lambda: interop.to_keras(_params("rnn"), "rnn"), TypeError, "layer must be"),
    (
        "rnncells carry",
        lambda: interop.from_keras_carry(rc.LSTMState(ONES_H, ONES_H), _params("lstm")),
        TypeError,
        r"already the core's carry",
    ),
    (
        "gru state for lstm",
        lambda: interop.from_keras_carry([ONES_H], _params("lstm")),
        TypeError,
        r"Keras's LSTM carry, an \[h, c\] list",
    ),
    (
        "lstm states for gru",
        lambda: interop.from_keras_carry([ONES_H, ONES_H], _params("gru")),
        TypeError,
        r"an LSTM carry\?",
    ),
    (
        "carry width",
        lambda: interop.from_keras_carry([np.ones((B, H + 1), np.float32)], _params("gru")),
        ValueError,
        rf"hidden_size = {H}",
    ),
    (
        "carry dtype",
        lambda: interop.from_keras_carry(np.ones((B, H), np.float64), _params("rnn")),
        TypeError,
        r"must have dtype float32 \(the params' dtype\)",
    ),
    (
        "to carry of a tuple",
        lambda: interop.to_keras_carry((ONES_H, ONES_H)),
        TypeError,
        r"carry must be rnncells' LSTMState",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "match"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_bad_input_is_refused(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_float64_with_x64_off_is_refused(rng):
    params = jax.tree.map(np.asarray, random_params("lstm", rng, jnp.float64))
    with jax.enable_x64(False), pytest.raises(TypeError, match="jax_enable_x64 is off"):
        interop.to_keras(params)


def test_refused_write_changes_nothing(rng):
    layer = randomise_layer(make_layer("lstm", use_bias=False), rng)
    before = [np.array(w.value) for w in layer.weights]
    with pytest.raises(ValueError, match="use_bias=False"):
        interop.to_keras(_params("lstm", b=jnp.ones(4 * H, F32)), layer)
    for w, value in zip(layer.weights, before, strict=True):
        np.testing.assert_array_equal(w.value, value)


def test_keras_must_run_on_jax(monkeypatch):
    layer = make_layer("rnn")
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    for call in (lambda: interop.from_keras(layer), lambda: interop.to_keras(_params("rnn"))):
        with pytest.raises(RuntimeError, match=r"'torch' backend.*KERAS_BACKEND=jax"):
            call()


def test_missing_keras_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras", None)  # what an absent package raises
    with pytest.raises(ImportError, match=r"pip install 'rnncells\[interop\]'.*KERAS_BACKEND"):
        interop.to_keras(_params("rnn"))


def test_keras_leaves_jax_settings_alone():
    """Importing and running Keras keeps conftest's settings for the rest of the suite."""
    assert keras.backend.backend() == "jax"
    assert jax.config.jax_enable_x64
    assert jax.config.jax_numpy_rank_promotion == "raise"
    assert jax.config.jax_numpy_dtype_promotion == "strict"
    assert jax.config.jax_default_matmul_precision == "highest"


# --- subclasses: the converters read only the weights, so a layer or cell whose forward
# pass (call, or the RNN layer's inner_loop) is not Keras's converted into params computing
# another function; one that keeps Keras's forward converts.


@keras.saving.register_keras_serializable("rnncells_tests")  # Bidirectional copies it
class _DoubledLSTM(keras.layers.LSTM):
    def call(self, sequences, initial_state=None, mask=None, training=False):
        return 2 * super().call(sequences, initial_state, mask, training)


class _DoubledGRUCell(keras.layers.GRUCell):
    def call(self, inputs, states, training=False):
        h, new_states = super().call(inputs, states, training)
        return 2 * h, new_states


class _DoubledInputSimpleRNN(keras.layers.SimpleRNN):
    def inner_loop(self, sequences, initial_state, mask, training=False):
        return super().inner_loop(2 * sequences, initial_state, mask, training)


class _TaggedSimpleRNN(keras.layers.SimpleRNN):
    def __init__(self, *args, tag="", **kwargs):
        super().__init__(*args, **kwargs)
        self.tag = tag


class _TaggedLSTMCell(keras.layers.LSTMCell):
    def __init__(self, *args, tag="", **kwargs):
        super().__init__(*args, **kwargs)
        self.tag = tag


def _built(layer, input_shape=(None, None, D)):
    with keras_defaults():
        layer.build(input_shape)
    return layer


def _bidirectional_forward_layer():
    forward = _DoubledLSTM(H, return_sequences=True)
    backward = _DoubledLSTM(H, return_sequences=True, go_backwards=True)
    return keras.layers.Bidirectional(forward, backward_layer=backward).forward_layer


def _overrides(path, cls, base, method, where=None):
    return (
        rf"{path} is .*\.{cls}, a subclass of keras\.layers\.{base}, whose {method} is not "
        rf"keras\.layers\.{base}'s own \({where or cls}\.{method}\): the converter reads only"
    )


OVERRIDDEN_FORWARD = [
    (
        "from layer call",
        lambda: interop.from_keras(_built(_DoubledLSTM(H, return_sequences=True))),
        _overrides("layer", "_DoubledLSTM", "LSTM", "call"),
    ),
    (
        "to layer call",
        lambda: interop.to_keras(_params("lstm"), _DoubledLSTM(H, return_sequences=True)),
        _overrides("layer", "_DoubledLSTM", "LSTM", "call"),
    ),
    (
        "from layer inner_loop",
        lambda: interop.from_keras(_built(_DoubledInputSimpleRNN(H))),
        _overrides("layer", "_DoubledInputSimpleRNN", "SimpleRNN", "inner_loop"),
    ),
    (
        "from rnn of cell",
        lambda: interop.from_keras(_built(keras.layers.RNN(_DoubledGRUCell(H)))),
        _overrides("layer.cell", "_DoubledGRUCell", "GRUCell", "call"),
    ),
    (
        "to rnn of cell",
        lambda: interop.to_keras(_params("gru"), keras.layers.RNN(_DoubledGRUCell(H))),
        _overrides("layer.cell", "_DoubledGRUCell", "GRUCell", "call"),
    ),
    (
        "from cell",
        lambda: interop.from_keras(_built(_DoubledGRUCell(H), (None, D))),
        _overrides("layer", "_DoubledGRUCell", "GRUCell", "call"),
    ),
    (
        "bidirectional's forward layer",
        lambda: interop.from_keras(_built(_bidirectional_forward_layer())),
        _overrides("layer", "_DoubledLSTM", "LSTM", "call"),
    ),
]


@pytest.mark.parametrize(
    ("call", "match"), [r[1:] for r in OVERRIDDEN_FORWARD], ids=[r[0] for r in OVERRIDDEN_FORWARD]
)
def test_subclass_overriding_the_forward_is_refused(call, match):
    with pytest.raises(TypeError, match=match):
        call()


def test_subclasses_keeping_the_forward_convert_exactly(rng):
    layer = _TaggedSimpleRNN(H, return_sequences=True, return_state=True, tag="mine")
    layer = randomise_layer(_built(layer), rng)
    plain = make_layer("rnn", return_state=True)
    for target, source in zip(plain.weights, layer.weights, strict=True):
        target.assign(source.value)
    params = interop.from_keras(layer)
    assert_tree_allclose(params, interop.from_keras(plain), **EXACT)
    xs, states = inputs(rng), random_states("rnn", rng)
    assert_tree_allclose(ours(params, xs, states), keras_run(layer, xs, states), **TOL)
    written = interop.to_keras(params, _TaggedSimpleRNN(H, tag="other"))
    assert_tree_allclose(interop.from_keras(written), params, **EXACT)
    # A cell that keeps LSTMCell's call, inside keras.layers.RNN.
    lstm = random_params("lstm", rng)
    wrapped = keras.layers.RNN(_TaggedLSTMCell(H, tag="mine"), return_sequences=True)
    assert_tree_allclose(interop.from_keras(interop.to_keras(lstm, wrapped)), lstm, **EXACT)


# --- exact weights, another function: warned (docs/interop.md) ---------------------------


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_go_backwards_is_warned_both_ways_and_the_warning_says_what_matches(kind, rng):
    layer = randomise_layer(make_layer(kind, go_backwards=True, return_state=True), rng)
    with pytest.warns(interop.InexactConversionWarning, match="layer has go_backwards=True"):
        params = interop.from_keras(layer)
    xs, states = inputs(rng), random_states(kind, rng)
    keras_ys, keras_final = keras_run(layer, xs, states)
    plain, _ = ours(params, xs, states)
    assert float(jnp.max(jnp.abs(plain - keras_ys))) > 1e-2  # what the warning is for
    final, ys = rc.unroll(
        rc.step_for(params), params, xs, interop.from_keras_carry(states, params), reverse=True
    )
    assert_tree_allclose(ys[:, ::-1], keras_ys, **TOL)  # what the warning says to compare
    assert_tree_allclose(interop.to_keras_carry(final), keras_final, **TOL)
    target = make_layer(kind, go_backwards=True)
    with pytest.warns(interop.InexactConversionWarning, match=r"reverse=True\)'s reversed"):
        interop.to_keras(params, target)


@pytest.mark.parametrize("kind", ["lstm", "rnn"])
def test_a_mixed_precision_policy_is_warned_both_ways(kind, rng):
    layer = randomise_layer(make_layer(kind, dtype="mixed_bfloat16"), rng)
    expected = (
        "layer's dtype policy 'mixed_bfloat16' computes in bfloat16 where its weights are "
        "float32: Keras rounds its matmuls and gates to bfloat16"
    )
    with pytest.warns(interop.InexactConversionWarning, match=expected):
        params = interop.from_keras(layer)
    with pytest.warns(
        interop.InexactConversionWarning, match="build the layer with dtype='float32'"
    ):
        interop.to_keras(params, make_layer(kind, dtype="mixed_bfloat16"))
    interop.to_keras(params, make_layer(kind))  # float32: no warning (warnings are errors)
