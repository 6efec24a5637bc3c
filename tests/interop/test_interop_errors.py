"""Bad input to the converters raises an error naming the argument, what was expected and
what was given, before anything is built (no silent swap, truncation or deep error)."""

import warnings

import equinox as eqx
import flax.linen as nn
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rnncells as rc
from rnncells import interop

torch = pytest.importorskip("torch")

D, H = 3, 5  # D != H: a transposed or misplaced weight cannot fit
F32, F64, I32 = jnp.float32, jnp.float64, jnp.int32


def ones(*shape, dtype=F32):
    return jnp.ones(shape, dtype)


def params(kind, dtype=F32):
    """Valid params of one cell ("lstm", "gru", "gru_ra" reset-after, "rnn")."""
    key = jax.random.key(0)
    made = {
        "lstm": lambda: rc.lstm_init(key, D, H),
        "gru": lambda: rc.gru_init(key, D, H),
        "gru_ra": lambda: rc.gru_init(key, D, H, reset_after=True),
        "rnn": lambda: rc.rnn_init(key, D, H),
    }[kind]()
    return jax.tree.map(lambda x: x.astype(dtype), made)


def replace(kind, **fields):
    return params(kind)._replace(**fields)


def as_int(tree):
    return jax.tree.map(lambda x: jnp.asarray(x).astype(I32), tree)


@pytest.fixture
def x64_off():
    """Runs the test body with jax_enable_x64 off, and checks it is back on afterwards."""
    assert jax.config.jax_enable_x64
    with jax.enable_x64(False):
        yield
    assert jax.config.jax_enable_x64


def check(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --- carries: each framework's carry read as that framework's, never ours -----------------


def test_from_flax_carry_refuses_an_rnncells_lstm_state():
    # LSTMState(h, c) is a tuple too: read as Flax's (c, h) it came back with h and c swapped.
    state = rc.LSTMState(h=ones(2, H), c=2 * ones(2, H))
    with pytest.raises(TypeError, match=r"Flax's carry \(a \(c, h\) tuple\).*got rnncells' LS"):
        interop.from_flax_carry(state, params("lstm"))


def test_from_flax_carry_refuses_other_named_tuples():
    # hk.LSTMState(hidden, cell) is a pair too, in the opposite order to Flax's (c, h).
    state = hk.LSTMState(hidden=ones(2, H), cell=2 * ones(2, H))
    with pytest.raises(TypeError, match=r"Flax's LSTM carry, a \(c, h\) tuple.*got haiku"):
        interop.from_flax_carry(state, params("lstm"))


def test_from_equinox_carry_refuses_rnncells_states():
    with pytest.raises(TypeError, match=r"Equinox's carry \(an \(h, c\) tuple\).*rnncells' LSTMS"):
        interop.from_equinox_carry(rc.LSTMState(ones(H), ones(H)), params("lstm"))
    with pytest.raises(TypeError, match=r"the array h for GRUResetAfterParams.*rnncells' GRUState"):
        interop.from_equinox_carry(rc.GRUState(ones(H)), params("gru_ra"))


CARRY_MISMATCHES = [
    # An rnncells GRUState read as an array came back nested: GRUState(GRUState(h)).
    pytest.param(
        lambda: interop.from_flax_carry(rc.GRUState(ones(2, H)), params("gru_ra")),
        TypeError,
        r"the array h for GRUResetAfterParams.*got rnncells' GRUState.*use it directly",
        id="flax-core-gru-state",
    ),
    pytest.param(
        lambda: interop.from_haiku_carry(rc.GRUState(ones(2, H)), params("gru")),
        TypeError,
        r"Haiku's carry \(the array h for GRUParams\), got rnncells' GRUState",
        id="haiku-core-gru-state",
    ),
    # An LSTM carry given with GRU params came back as GRUState(h=<a pair>).
    pytest.param(
        lambda: interop.from_flax_carry((ones(2, H), ones(2, H)), params("gru_ra")),
        TypeError,
        r"carry for GRUResetAfterParams, the array h, got tuple \(an LSTM carry\?\)",
        id="flax-lstm-carry-gru-params",
    ),
    pytest.param(
        lambda: interop.from_equinox_carry((ones(H), ones(H)), params("gru_ra")),
        TypeError,
        r"Equinox's carry for GRUResetAfterParams, the array h, got tuple \(an LSTM carry\?\)",
        id="equinox-lstm-carry-gru-params",
    ),
    pytest.param(
        lambda: interop.from_haiku_carry(hk.LSTMState(ones(2, H), ones(2, H)), params("gru")),
        TypeError,
        r"Haiku's carry for GRUParams, the array h, got haiku.*LSTMState",
        id="haiku-lstm-carry-gru-params",
    ),
    # Wrong hidden size, dtype or h/c shapes came back unchecked.
    pytest.param(
        lambda: interop.from_flax_carry(ones(2, H + 1), params("gru_ra")),
        ValueError,
        r"carry must have shape \(\*batch, hidden_size = 5\), got shape \(2, 6\)",
        id="flax-hidden-size",
    ),
    pytest.param(
        lambda: interop.from_flax_carry((ones(2, H), ones(3, H)), params("lstm")),
        ValueError,
        r"carry\[1\] \(h\) and carry\[0\] \(c\) must have the same shape, got carry\[1\]",
        id="flax-h-c-shapes",
    ),
    pytest.param(
        lambda: interop.from_flax_carry((ones(2, H), ones(2, H, dtype=I32)), params("lstm")),
        TypeError,
        r"carry\[1\] \(h\) must have a floating dtype, got int32",
        id="flax-int",
    ),
    pytest.param(
        lambda: interop.from_flax_carry(ones(2, H), params("rnn", F64)),
        TypeError,
        r"carry must have dtype float64 \(the params' dtype\), got float32",
        id="flax-dtype",
    ),
    pytest.param(
        lambda: interop.from_equinox_carry((ones(H), ones(H + 1)), params("lstm")),
        ValueError,
        r"carry\[1\] \(c\) must have shape \(\*batch, hidden_size = 5\), got shape \(6,\)",
        id="equinox-hidden-size",
    ),
    pytest.param(
        lambda: interop.from_equinox_carry(ones(H, dtype=I32), params("gru_ra")),
        TypeError,
        r"carry must have a floating dtype, got int32",
        id="equinox-int",
    ),
    pytest.param(
        lambda: interop.from_haiku_carry(ones(2, H + 1), params("gru")),
        ValueError,
        r"carry must have shape \(\*batch, hidden_size = 5\), got shape \(2, 6\)",
        id="haiku-hidden-size",
    ),
    pytest.param(
        lambda: interop.from_haiku_carry(
            hk.LSTMState(ones(2, H, dtype=I32), ones(2, H, dtype=I32)), params("lstm")
        ),
        TypeError,
        r"carry.hidden must have a floating dtype, got int32",
        id="haiku-int",
    ),
    pytest.param(
        lambda: interop.from_haiku_carry(hk.LSTMState(ones(2, H), ones(2, H + 1)), params("lstm")),
        ValueError,
        r"carry.cell must have shape \(\*batch, hidden_size = 5\), got shape \(2, 6\)",
        id="haiku-cell-hidden-size",
    ),
    pytest.param(
        lambda: interop.from_haiku_carry(ones(2, H), replace("gru", V=ones(H, 2 * H))),
        ValueError,
        r"params.V must have shape \(hidden_size, 3 \* hidden_size\)",
        id="haiku-bad-params",
    ),
]


@pytest.mark.parametrize("call, error, match", CARRY_MISMATCHES)
def test_from_carry_mismatches_refused(call, error, match):
    check(call, error, match)


@pytest.mark.parametrize(
    "to_carry", [interop.to_flax_carry, interop.to_equinox_carry, interop.to_haiku_carry]
)
def test_to_carry_checks_the_core_carry(to_carry):
    with pytest.raises(TypeError, match=r"carry.c must have a floating dtype, got int32"):
        to_carry(rc.LSTMState(ones(2, H), ones(2, H, dtype=I32)))
    with pytest.raises(ValueError, match=r"carry.c must have carry.h's shape \(2, 5\), got shape"):
        to_carry(rc.LSTMState(ones(2, H), ones(3, H)))
    with pytest.raises(TypeError, match=r"carry.h must be an array, got list"):
        to_carry(rc.GRUState([0.0] * H))


def test_to_haiku_carry_names_haikus_own_state():
    # The message read "must be LSTMState or GRUState, got LSTMState".
    with pytest.raises(TypeError, match=r"rnncells' LSTMState.*got haiku\._src.*LSTMState"):
        interop.to_haiku_carry(hk.LSTMState(ones(2, H), ones(2, H)))


# --- PyTorch dtypes JAX cannot hold ---------------------------------------------------------


def test_from_torch_float64_with_x64_off_refused(x64_off):
    # It returned float32 params, silently.
    module = torch.nn.LSTM(D, H).double()
    with pytest.raises(TypeError, match=r"dtype is float64, but jax_enable_x64 is off.*float32"):
        interop.from_torch(module, dtype=jnp.float64)
    with pytest.raises(TypeError, match=r"dtype is float64, but jax_enable_x64 is off"):
        interop.from_torch(module, dtype="float64")
    h0 = torch.zeros(1, 2, H, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"dtype is float64, but jax_enable_x64 is off"):
        interop.from_torch_carries(module, h0, h0, dtype=np.float64)
    assert interop.from_torch(module)[0].W.dtype == jnp.float32  # the default still works


def test_from_torch_dtype_none_refused():
    # None meant float64 (NumPy's default), not the documented float32 default.
    with pytest.raises(TypeError, match="dtype must be a floating dtype.*got None"):
        interop.from_torch(torch.nn.GRU(D, H), dtype=None)


# --- PyTorch -------------------------------------------------------------------------------


def _complex_gru():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that complex modules are experimental
        return torch.nn.GRU(D, H).to(torch.complex64)


def _reshaped_gru():
    module = torch.nn.GRU(D, H)
    module.weight_ih_l0 = torch.nn.Parameter(torch.zeros(3 * H, D + 1))
    return module


def _torch_lstm_params(dtype=F32):
    return interop.from_torch(torch.nn.LSTM(D, H), dtype=dtype)


TORCH_CASES = [
    # Integer and bool states were cast to float silently.
    pytest.param(
        lambda: interop.from_torch_carries(
            torch.nn.GRU(D, H), torch.zeros(1, 2, H, dtype=torch.int64)
        ),
        TypeError,
        r"h0 must have a floating dtype, got torch.int64",
        id="carries-int",
    ),
    pytest.param(
        lambda: interop.from_torch_carries(
            torch.nn.LSTM(D, H), torch.zeros(1, 2, H), torch.zeros(1, 2, H, dtype=torch.bool)
        ),
        TypeError,
        r"c0 must have a floating dtype, got torch.bool",
        id="carries-bool",
    ),
    # Complex values lost their imaginary part (torch warns only once per process).
    pytest.param(
        lambda: interop.from_torch(_complex_gru()),
        TypeError,
        r"module.weight_ih_l0 must have a floating dtype, got torch.complex64",
        id="complex-module",
    ),
    # A weight replaced by one of another shape went through to the params.
    pytest.param(
        lambda: interop.from_torch(_reshaped_gru()),
        ValueError,
        r"module.weight_ih_l0 must have shape \(15, 3\) \(3 gate blocks \* hidden_size 5, "
        r"input_size 3\), got shape \(15, 4\)",
        id="reshaped-weight",
    ),
    pytest.param(
        lambda: interop.from_torch_carries(
            torch.nn.LSTM(D, H), (torch.zeros(1, 2, H), torch.zeros(1, 2, H))
        ),
        ValueError,
        r"h0 is a tuple.*from_torch_carries\(module, \*state\)",
        id="carries-state-pair-as-h0",
    ),
    pytest.param(
        lambda: interop.to_torch(
            (_torch_lstm_params()[0]._replace(b=ones(4 * H, dtype=F64)),), torch.nn.LSTM(D, H)
        ),
        TypeError,
        r"params\[0\]\.b must have dtype float32 \(params\[0\]\.W's dtype\), got float64",
        id="to-torch-mixed-dtypes",
    ),
    pytest.param(
        lambda: interop.to_torch(
            jax.tree.map(lambda x: torch.tensor(np.asarray(x)), _torch_lstm_params()),
            torch.nn.LSTM(D, H),
        ),
        TypeError,
        r"params\[0\]\.W must be a JAX or NumPy array, got torch.Tensor",
        id="to-torch-tensors",
    ),
]


@pytest.mark.parametrize("call, error, match", TORCH_CASES)
def test_torch_bad_input_refused(call, error, match):
    check(call, error, match)


def test_to_torch_float64_params_write_without_warnings():
    # float64 arrays were handed to torch as read-only NumPy views, which torch warns about.
    layers = _torch_lstm_params(F64)
    module = interop.to_torch(layers, torch.nn.LSTM(D, H, dtype=torch.float64))
    np.testing.assert_array_equal(module.weight_ih_l0.detach().numpy(), np.asarray(layers[0].W).T)


# --- Flax linen ----------------------------------------------------------------------------


def _linen(kind, **changes):
    """(cell, variables) for valid params of ``kind``, with leaves replaced by ``changes``
    ({"gate/leaf": value})."""
    cell, variables = interop.to_flax_linen(params(kind))
    tree = {name: dict(leaves) for name, leaves in variables["params"].items()}
    for path, value in changes.items():
        name, leaf = path.split("/")
        tree[name][leaf] = value
    return cell, {"params": tree}


LINEN_CASES = [
    # cell.features was ignored: the variables' own width was taken.
    pytest.param(
        lambda: interop.from_flax_linen(nn.LSTMCell(features=H + 1), _linen("lstm")[1]),
        ValueError,
        r"variables\['params'\]\['ii'\]\['kernel'\] must have shape \(input_size, 6\) "
        r"\(LSTMCell with features=6\), got shape \(3, 5\)",
        id="lstm-features",
    ),
    pytest.param(
        lambda: interop.from_flax_linen(nn.GRUCell(features=4), _linen("gru_ra")[1]),
        ValueError,
        r"\['ir'\]\['kernel'\] must have shape \(input_size, 4\)",
        id="gru-features",
    ),
    # Per-gate kernels of different widths were concatenated into a W of the wrong width.
    pytest.param(
        lambda: interop.from_flax_linen(*_linen("lstm", **{"if/kernel": ones(D, H + 1)})),
        ValueError,
        r"\['if'\]\['kernel'\] must have shape \(3, 5\) \(LSTMCell with features=5\), got shape",
        id="gate-width",
    ),
    pytest.param(
        lambda: interop.from_flax_linen(*_linen("lstm", **{"hf/bias": ones(H + 1)})),
        ValueError,
        r"\['hf'\]\['bias'\] must have shape \(5,\)",
        id="bias-width",
    ),
    pytest.param(
        lambda: interop.from_flax_linen(*_linen("gru_ra", **{"hn/bias": ones(H + 1)})),
        ValueError,
        r"\['hn'\]\['bias'\] must have shape \(5,\)",
        id="gru-b_hn-width",
    ),
    pytest.param(
        lambda: interop.from_flax_linen(*_linen("lstm", **{"ii/kernel": ones(D + 1, H)})),
        ValueError,
        r"\['if'\]\['kernel'\] must have shape \(4, 5\).*got shape \(3, 5\)",
        id="input-sizes-differ",
    ),
    pytest.param(
        lambda: interop.from_flax_linen(*_linen("lstm", **{"hi/kernel": ones(H)})),
        ValueError,
        r"\['hi'\]\['kernel'\] must have shape \(5, 5\).*got shape \(5,\)",
        id="rank",
    ),
    pytest.param(
        lambda: interop.from_flax_linen(
            nn.SimpleCell(features=H, residual=True),
            _linen("rnn", **{"h/kernel": ones(H, H + 1)})[1],
        ),
        ValueError,
        r"\['h'\]\['kernel'\] must have shape \(5, 5\)",
        id="residual-not-square",
    ),
    # Integer weights came back as integer params.
    pytest.param(
        lambda: interop.from_flax_linen(nn.LSTMCell(features=H), as_int(_linen("lstm")[1])),
        TypeError,
        r"\['ii'\]\['kernel'\] must have a floating dtype, got int32",
        id="int",
    ),
    pytest.param(
        lambda: interop.from_flax_linen(*_linen("lstm", **{"ig/kernel": ones(D, H, dtype=F64)})),
        TypeError,
        r"\['ig'\]\['kernel'\] must have dtype float32 \(variables\['params'\]\['ii'\]\['ke",
        id="mixed-dtypes",
    ),
    pytest.param(
        lambda: interop.from_flax_linen(*_linen("lstm", **{"hi/kernel": "weights"})),
        TypeError,
        r"\['hi'\]\['kernel'\] must be an array, got str",
        id="not-an-array",
    ),
    pytest.param(
        lambda: interop.from_flax_linen(nn.LSTMCell(features=H), {"params": [1, 2]}),
        TypeError,
        r"variables\['params'\] must be a mapping of the cell's Dense layers, got list",
        id="params-not-a-mapping",
    ),
    pytest.param(
        lambda: interop.from_flax_linen(
            nn.LSTMCell(features=H), {"params": {**_linen("lstm")[1]["params"], "hi": "x"}}
        ),
        TypeError,
        r"variables\['params'\]\['hi'\] must be a mapping \(a Dense layer's kernel and bias\)",
        id="layer-not-a-mapping",
    ),
    # to_flax_linen split inconsistent params into per-gate kernels of any width.
    pytest.param(
        lambda: interop.to_flax_linen(replace("lstm", W=ones(D, 4 * H + 4))),
        ValueError,
        r"params.W must have shape \(input_size, 20\)",
        id="to-W",
    ),
    pytest.param(
        lambda: interop.to_flax_linen(replace("lstm", V=ones(H, 3 * H))),
        ValueError,
        r"params.V must have shape \(hidden_size, 4 \* hidden_size\)",
        id="to-V",
    ),
    pytest.param(
        lambda: interop.to_flax_linen(replace("gru_ra", b_hn=ones(H + 1))),
        ValueError,
        r"params.b_hn must have shape \(5,\)",
        id="to-b_hn",
    ),
    pytest.param(
        lambda: interop.to_flax_linen(as_int(params("lstm"))),
        TypeError,
        r"params.W must have a floating dtype, got int32",
        id="to-int",
    ),
    pytest.param(
        lambda: interop.to_flax_linen(replace("lstm", b=ones(4 * H, dtype=F64))),
        TypeError,
        r"params.b must have dtype float32 \(params.W's dtype\), got float64",
        id="to-mixed",
    ),
    pytest.param(
        lambda: interop.to_flax_linen(replace("lstm", W=[[0.0] * 4 * H] * D)),
        TypeError,
        r"params.W must be an array, got list",
        id="to-list",
    ),
    # Any truthy value picked the optimized cell.
    pytest.param(
        lambda: interop.to_flax_linen(params("lstm"), optimized="no"),
        TypeError,
        r"optimized must be True or False, got 'no'",
        id="to-optimized",
    ),
]


@pytest.mark.parametrize("call, error, match", LINEN_CASES)
def test_flax_linen_bad_input_refused(call, error, match):
    check(call, error, match)


# --- Flax NNX ------------------------------------------------------------------------------


def _nnx(cls, replace_leaf=None, value=None, **kwargs):
    """An NNX cell whose Param at ``replace_leaf`` ("dense_h.kernel") is replaced."""
    module = cls(D, H, rngs=nnx.Rngs(0), **kwargs)
    if replace_leaf is not None:
        layer, leaf = replace_leaf.split(".")
        setattr(getattr(module, layer), leaf, nnx.Param(value))
    return module


NNX_CASES = [
    pytest.param(
        lambda: interop.from_flax_nnx(
            _nnx(nnx.OptimizedLSTMCell, "dense_h.kernel", ones(H, 4 * H + 4))
        ),
        ValueError,
        r"module.dense_h.kernel must have shape \(5, 20\) \(OptimizedLSTMCell with "
        r"in_features=3, hidden_features=5\), got shape \(5, 24\)",
        id="fused-kernel",
    ),
    pytest.param(
        lambda: interop.from_flax_nnx(_nnx(nnx.LSTMCell, "hf.kernel", ones(H, H + 1))),
        ValueError,
        r"module.hf.kernel must have shape \(5, 5\)",
        id="gate-kernel",
    ),
    pytest.param(
        lambda: interop.from_flax_nnx(_nnx(nnx.GRUCell, "dense_i.bias", ones(3 * H + 3))),
        ValueError,
        r"module.dense_i.bias must have shape \(15,\)",
        id="gru-bias",
    ),
    pytest.param(
        lambda: interop.from_flax_nnx(
            _nnx(nnx.SimpleCell, "dense_h.kernel", ones(H, H + 1), residual=True)
        ),
        ValueError,
        r"module.dense_h.kernel must have shape \(5, 5\)",
        id="residual",
    ),
    pytest.param(
        lambda: interop.from_flax_nnx(
            _nnx(nnx.OptimizedLSTMCell, "dense_i.kernel", ones(D, 4 * H, dtype=I32))
        ),
        TypeError,
        r"module.dense_i.kernel must have a floating dtype, got int32",
        id="int",
    ),
    pytest.param(
        lambda: interop.from_flax_nnx(
            _nnx(nnx.OptimizedLSTMCell, "dense_h.bias", ones(4 * H, dtype=F64))
        ),
        TypeError,
        r"module.dense_h.bias must have dtype float32 \(module.dense_i.kernel's dtype",
        id="mixed",
    ),
    # to_flax_nnx failed inside Flax ("Incompatible types for broadcasting") or promotion.
    pytest.param(
        lambda: interop.to_flax_nnx(replace("lstm", W=ones(D, 4 * H + 4))),
        ValueError,
        r"params.W must have shape \(input_size, 20\)",
        id="to-W",
    ),
    pytest.param(
        lambda: interop.to_flax_nnx(replace("lstm", b=ones(3)), optimized=False),
        ValueError,
        r"params.b must have shape \(20,\)",
        id="to-b",
    ),
    pytest.param(
        lambda: interop.to_flax_nnx(as_int(params("rnn"))),
        TypeError,
        r"params.W must have a floating dtype, got int32",
        id="to-int",
    ),
    pytest.param(
        lambda: interop.to_flax_nnx(replace("gru_ra", V=ones(H, 3 * H, dtype=F64))),
        TypeError,
        r"params.V must have dtype float32 \(params.W's dtype\), got float64",
        id="to-mixed",
    ),
    # A zero b_hn of the wrong shape was accepted (and dropped).
    pytest.param(
        lambda: interop.to_flax_nnx(replace("gru_ra", b_hn=jnp.zeros(H + 1, F32))),
        ValueError,
        r"params.b_hn must have shape \(5,\)",
        id="to-b_hn-shape",
    ),
    pytest.param(
        lambda: interop.to_flax_nnx(params("rnn"), rngs=3),
        TypeError,
        r"rngs must be a flax.nnx.Rngs or None, got int",
        id="to-rngs",
    ),
    pytest.param(
        lambda: interop.to_flax_nnx(params("lstm"), optimized="no"),
        TypeError,
        r"optimized must be True or False, got 'no'",
        id="to-optimized",
    ),
]


@pytest.mark.parametrize("call, error, match", NNX_CASES)
def test_flax_nnx_bad_input_refused(call, error, match):
    check(call, error, match)


# --- Equinox -------------------------------------------------------------------------------


def _eqx(cls, where, value):
    module = cls(D, H, key=jax.random.key(0), dtype=F32)
    return eqx.tree_at(lambda m: getattr(m, where), module, value)


EQUINOX_CASES = [
    pytest.param(
        lambda: interop.from_equinox(_eqx(eqx.nn.LSTMCell, "weight_hh", ones(4 * H, H + 1))),
        ValueError,
        r"module.weight_hh must have shape \(20, 5\) \(LSTMCell with input_size=3, "
        r"hidden_size=5\), got shape \(20, 6\)",
        id="weight_hh",
    ),
    pytest.param(
        lambda: interop.from_equinox(_eqx(eqx.nn.LSTMCell, "weight_ih", ones(4 * H + 4, D))),
        ValueError,
        r"module.weight_ih must have shape \(20, 3\)",
        id="weight_ih",
    ),
    pytest.param(
        lambda: interop.from_equinox(_eqx(eqx.nn.LSTMCell, "bias", ones(4 * H + 1))),
        ValueError,
        r"module.bias must have shape \(20,\)",
        id="bias",
    ),
    pytest.param(
        lambda: interop.from_equinox(_eqx(eqx.nn.GRUCell, "bias_n", ones(H + 1))),
        ValueError,
        r"module.bias_n must have shape \(5,\)",
        id="bias_n",
    ),
    pytest.param(
        lambda: interop.from_equinox(as_int(eqx.nn.GRUCell(D, H, key=jax.random.key(0)))),
        TypeError,
        r"module.weight_ih must have a floating dtype, got int32",
        id="int",
    ),
    pytest.param(
        lambda: interop.from_equinox(_eqx(eqx.nn.GRUCell, "bias", ones(3 * H, dtype=F64))),
        TypeError,
        r"module.bias must have dtype float32 \(module.weight_ih's dtype",
        id="mixed",
    ),
    # to_equinox built cells of any shape from inconsistent params.
    pytest.param(
        lambda: interop.to_equinox(replace("lstm", V=ones(H, 4 * H + 4))),
        ValueError,
        r"params.V must have shape \(hidden_size, 4 \* hidden_size\)",
        id="to-V",
    ),
    pytest.param(
        lambda: interop.to_equinox(replace("lstm", W=ones(4 * H))),
        ValueError,
        r"params.W must have shape \(input_size, 20\)",
        id="to-W-rank",
    ),
    pytest.param(
        lambda: interop.to_equinox(replace("gru_ra", b_hn=ones(H + 1))),
        ValueError,
        r"params.b_hn must have shape \(5,\)",
        id="to-b_hn",
    ),
    pytest.param(
        lambda: interop.to_equinox(as_int(params("lstm"))),
        TypeError,
        r"params.W must have a floating dtype, got int32",
        id="to-int",
    ),
    pytest.param(
        lambda: interop.to_equinox(replace("lstm", b=ones(4 * H, dtype=F64))),
        TypeError,
        r"params.b must have dtype float32 \(params.W's dtype\), got float64",
        id="to-mixed",
    ),
]


@pytest.mark.parametrize("call, error, match", EQUINOX_CASES)
def test_equinox_bad_input_refused(call, error, match):
    check(call, error, match)


# --- Haiku ---------------------------------------------------------------------------------


def _hk(kind, leaf=None, value=None):
    """Valid Haiku params of hk.LSTM ("lstm") or hk.GRU ("gru"), one leaf replaced."""
    tree = interop.to_haiku(params(kind))
    tree = {module: dict(leaves) for module, leaves in tree.items()}
    if leaf is not None:
        (module,) = tree
        tree[module][leaf] = value
    return tree


HAIKU_CASES = [
    # Widths not a multiple of the gate count failed in jnp.split.
    pytest.param(
        lambda: interop.from_haiku(_hk("lstm", "w", ones(D + H, 21)), "lstm"),
        ValueError,
        r"params\['lstm/linear'\]\['w'\] must have shape \(input_size \+ hidden_size, "
        r"4 \* hidden_size\) \(hk.LSTM's gates\), got shape \(8, 21\): 21 is not a multiple of 4",
        id="lstm-width",
    ),
    pytest.param(
        lambda: interop.from_haiku(_hk("gru", "w_h", ones(H, 16)), "gru"),
        ValueError,
        r"params\['gru'\]\['w_h'\] must have shape \(hidden_size, 3 \* hidden_size\).*\(5, 16\)",
        id="gru-width",
    ),
    # A mismatched b failed in an add, or came through.
    pytest.param(
        lambda: interop.from_haiku(_hk("lstm", "b", ones(4 * H + 4)), "lstm"),
        ValueError,
        r"params\['lstm/linear'\]\['b'\] must have shape \(20,\) \(hk.LSTM with hidden_size 5",
        id="lstm-b",
    ),
    pytest.param(
        lambda: interop.from_haiku(_hk("gru", "b", ones(3 * H + 3)), "gru"),
        ValueError,
        r"params\['gru'\]\['b'\] must have shape \(15,\)",
        id="gru-b",
    ),
    pytest.param(
        lambda: interop.from_haiku(_hk("gru", "w_i", ones(D, 3 * H + 3)), "gru"),
        ValueError,
        r"params\['gru'\]\['w_i'\] must have shape \(input_size, 15\)",
        id="gru-w_i",
    ),
    pytest.param(
        lambda: interop.from_haiku(_hk("gru", "w_h", ones(H + 3, 3 * H)), "gru"),
        ValueError,
        r"params\['gru'\]\['w_h'\] must have shape \(hidden_size, 3 \* hidden_size\)",
        id="gru-w_h-not-square",
    ),
    pytest.param(
        lambda: interop.from_haiku(_hk("lstm", "w", ones(H - 1, 4 * H)), "lstm"),
        ValueError,
        r"\['w'\] must have shape \(input_size \+ hidden_size, 4 \* hidden_size\).*at least 5 "
        r"rows",
        id="lstm-w-rows",
    ),
    pytest.param(
        lambda: interop.from_haiku(_hk("lstm", "w", ones(4 * H)), "lstm"),
        ValueError,
        r"\['w'\] must have shape \(input_size \+ hidden_size, 4 \* hidden_size\).*\(20,\)",
        id="lstm-w-rank",
    ),
    # Integer weights came back as integer params.
    pytest.param(
        lambda: interop.from_haiku(as_int(_hk("lstm")), "lstm"),
        TypeError,
        r"params\['lstm/linear'\]\['w'\] must have a floating dtype, got int32",
        id="lstm-int",
    ),
    pytest.param(
        lambda: interop.from_haiku(as_int(_hk("gru")), "gru"),
        TypeError,
        r"params\['gru'\]\['w_i'\] must have a floating dtype, got int32",
        id="gru-int",
    ),
    pytest.param(
        lambda: interop.from_haiku(_hk("lstm", "b", ones(4 * H, dtype=F64)), "lstm"),
        TypeError,
        r"params\['lstm/linear'\]\['b'\] must have dtype float32",
        id="mixed",
    ),
    pytest.param(
        lambda: interop.from_haiku(_hk("gru", "b", [0.0] * 3 * H), "gru"),
        TypeError,
        r"params\['gru'\]\['b'\] must be an array, got list",
        id="list",
    ),
    pytest.param(
        lambda: interop.from_haiku({"gru": [1, 2]}, "gru"),
        TypeError,
        r"params\['gru'\] must be a mapping of parameter names to arrays, got list",
        id="module-not-a-mapping",
    ),
    pytest.param(
        lambda: interop.from_haiku(_hk("lstm"), "lstm", name=3),
        TypeError,
        r"name must be a string \(the module path\) or None, got int",
        id="name",
    ),
    # to_haiku failed in a concatenate or subtraction, or wrote any shape.
    pytest.param(
        lambda: interop.to_haiku(replace("lstm", V=ones(H, 4 * H + 4))),
        ValueError,
        r"params.V must have shape \(hidden_size, 4 \* hidden_size\)",
        id="to-V",
    ),
    pytest.param(
        lambda: interop.to_haiku(replace("gru", W=ones(D, 3 * H + 3))),
        ValueError,
        r"params.W must have shape \(input_size, 15\)",
        id="to-W",
    ),
    pytest.param(
        lambda: interop.to_haiku(replace("gru", b=ones(3))),
        ValueError,
        r"params.b must have shape \(15,\)",
        id="to-b",
    ),
    pytest.param(
        lambda: interop.to_haiku(as_int(params("lstm"))),
        TypeError,
        r"params.W must have a floating dtype, got int32",
        id="to-int",
    ),
    pytest.param(
        lambda: interop.to_haiku(replace("lstm", b=ones(4 * H, dtype=F64))),
        TypeError,
        r"params.b must have dtype float32 \(params.W's dtype\), got float64",
        id="to-mixed",
    ),
    pytest.param(
        lambda: interop.to_haiku(params("gru"), name=3),
        TypeError,
        r"name must be a string \(the module path\) or None, got int",
        id="to-name",
    ),
]


@pytest.mark.parametrize("call, error, match", HAIKU_CASES)
def test_haiku_bad_input_refused(call, error, match):
    check(call, error, match)


# --- dtypes JAX cannot hold with x64 off, in every framework -------------------------------


@pytest.mark.parametrize(
    "convert", [interop.to_flax_linen, interop.to_flax_nnx, interop.to_equinox, interop.to_haiku]
)
def test_to_framework_float64_numpy_params_with_x64_off_refused(convert, x64_off):
    # NumPy float64 params went into float32 (or float64-declared, float32-computing) cells.
    lstm = jax.tree.map(lambda x: np.asarray(x, np.float64), params("lstm"))
    with pytest.raises(TypeError, match=r"params' dtype is float64, but jax_enable_x64 is off"):
        convert(lstm)


def test_from_framework_float64_numpy_weights_with_x64_off_refused(x64_off):
    hk_params = jax.tree.map(lambda x: np.asarray(x, np.float64), interop.to_haiku(params("gru")))
    with pytest.raises(TypeError, match=r"params\['gru'\]\['w_i'\]'s dtype is float64, but jax_e"):
        interop.from_haiku(hk_params, "gru")
    _, variables = interop.to_flax_linen(params("rnn"))
    variables = jax.tree.map(lambda x: np.asarray(x, np.float64), variables)
    with pytest.raises(TypeError, match=r"\['i'\]\['kernel'\]'s dtype is float64, but jax_enable"):
        interop.from_flax_linen(nn.SimpleCell(features=H), variables)


# --- cells of the LSTM family that a framework has no counterpart for ----------------------

FAMILY = {
    "peephole_lstm": rc.peephole_lstm_init,
    "cifg_lstm": rc.cifg_lstm_init,
    "ln_lstm": rc.ln_lstm_init,
    "ln_gru": rc.ln_gru_init,
    "irnn": rc.irnn_init,
}


@pytest.mark.parametrize(
    "kind, convert",
    [
        (kind, convert)
        for kind in FAMILY
        for convert in (
            interop.to_flax_linen,
            interop.to_flax_nnx,
            interop.to_equinox,
            interop.to_haiku,
        )
        if (kind, convert) != ("irnn", interop.to_haiku)  # hk.VanillaRNN is the IRNN
    ],
)
def test_family_params_without_a_counterpart_refused(kind, convert):
    # The IRNN has the tanh RNN's layout, the peephole and LN LSTMs the LSTM's W, V, b:
    # read as those cells they would convert silently into another function.
    made = FAMILY[kind](jax.random.key(0), D, H)
    name = type(made).__name__
    with pytest.raises(ValueError, match=rf"params is {name} \(rnncells' '{kind}' cell\)"):
        convert(made)


def test_family_carries_refused_by_other_frameworks_carry_converters():
    irnn = rc.irnn_init(jax.random.key(0), D, H)
    for convert in (interop.from_flax_carry, interop.from_equinox_carry):
        with pytest.raises(ValueError, match=r"params is IRNNParams \(rnncells' 'irnn' cell\)"):
            convert(ones(2, H), irnn)


# --- subclasses whose forward pass is not the framework's ----------------------------------
# The converters read only the weights: a subclass that overrides the forward pass (here
# one that doubles the outputs) converted as the plain cell, into params computing another
# function. A subclass that keeps the forward (extra attributes, its own __init__) converts.


class _DoubledTorchLSTM(torch.nn.LSTM):
    def forward(self, x, hx=None):
        ys, state = super().forward(x, hx)
        return 2 * ys, state


class _ForwardMixin:
    def forward(self, x, hx=None):
        return torch.nn.GRU.forward(self, 2 * x, hx)


class _MixedTorchGRU(_ForwardMixin, torch.nn.GRU):
    pass


class _TaggedTorchGRU(torch.nn.GRU):
    def __init__(self, *args, tag="", **kwargs):
        super().__init__(*args, **kwargs)
        self.tag = tag


class _DoubledLinenGRU(nn.GRUCell):
    def __call__(self, carry, inputs):
        carry, y = super().__call__(carry, inputs)
        return carry, 2 * y


class _TaggedLinenLSTM(nn.LSTMCell):
    tag: str = ""


class _DoubledNNXSimpleCell(nnx.SimpleCell):
    def __call__(self, carry, inputs):
        carry, y = super().__call__(carry, inputs)
        return carry, 2 * y


class _TaggedNNXLSTM(nnx.OptimizedLSTMCell):
    def __init__(self, *args, tag="", **kwargs):
        super().__init__(*args, **kwargs)
        self.tag = tag


class _DoubledEqxGRU(eqx.nn.GRUCell):
    def __call__(self, input, hidden, *, key=None):
        return 2 * super().__call__(input, hidden, key=key)


class _EqxLSTMWithHelper(eqx.nn.LSTMCell):
    def describe(self):
        return f"LSTMCell({self.input_size}, {self.hidden_size})"


def _patched_torch_lstm():
    module = torch.nn.LSTM(D, H)
    module.forward = lambda x, hx=None: (2 * torch.nn.LSTM.forward(module, x, hx)[0], hx)
    return module


_TORCH_OVERRIDE = r"module is .*_DoubledTorchLSTM, a subclass of torch\.nn\.LSTM, whose forward "
_TORCH_OVERRIDE += r"is not torch\.nn\.LSTM's own \(_DoubledTorchLSTM\.forward\)"

OVERRIDDEN_FORWARD_CASES = [
    pytest.param(
        lambda: interop.from_torch(_DoubledTorchLSTM(D, H)), _TORCH_OVERRIDE, id="from-torch"
    ),
    pytest.param(
        lambda: interop.to_torch(_torch_lstm_params(), _DoubledTorchLSTM(D, H)),
        _TORCH_OVERRIDE,
        id="to-torch",
    ),
    pytest.param(
        lambda: interop.from_torch_carries(
            _DoubledTorchLSTM(D, H), torch.zeros(1, 2, H), torch.zeros(1, 2, H)
        ),
        _TORCH_OVERRIDE,
        id="from-torch-carries",
    ),
    pytest.param(
        lambda: interop.to_torch_carries(
            (rc.LSTMState(ones(2, H), ones(2, H)),), _DoubledTorchLSTM(D, H)
        ),
        _TORCH_OVERRIDE,
        id="to-torch-carries",
    ),
    # A mixin ahead of the framework's class in the MRO overrides it too.
    pytest.param(
        lambda: interop.from_torch(_MixedTorchGRU(D, H)),
        r"module is .*_MixedTorchGRU, a subclass of torch\.nn\.GRU, whose forward is not "
        r"torch\.nn\.GRU's own \(_ForwardMixin\.forward\)",
        id="torch-mixin",
    ),
    # So does a forward set on the instance (nn.Module calls self.forward).
    pytest.param(
        lambda: interop.from_torch(_patched_torch_lstm()),
        r"module is a torch\.nn\.LSTM whose forward is not torch\.nn\.LSTM's own "
        r"\(set on the instance: module\.forward = \.\.\.\)",
        id="torch-instance",
    ),
    pytest.param(
        lambda: interop.from_flax_linen(
            _DoubledLinenGRU(features=H), interop.to_flax_linen(params("gru_ra"))[1]
        ),
        r"cell is .*_DoubledLinenGRU, a subclass of flax\.linen\.GRUCell, whose __call__ is "
        r"not flax\.linen\.GRUCell's own \(_DoubledLinenGRU\.__call__\)",
        id="flax-linen",
    ),
    # Flax's lifted transforms wrap the class they are given, its override included.
    pytest.param(
        lambda: interop.from_flax_linen(
            nn.remat(_DoubledLinenGRU)(features=H), interop.to_flax_linen(params("gru_ra"))[1]
        ),
        r"cell is .*Checkpoint_DoubledLinenGRU, a subclass of flax\.linen\.GRUCell, whose "
        r"__call__ is not flax\.linen\.GRUCell's own \(_DoubledLinenGRU\.__call__\)",
        id="flax-linen-remat",
    ),
    pytest.param(
        lambda: interop.from_flax_nnx(_DoubledNNXSimpleCell(D, H, rngs=nnx.Rngs(0))),
        r"module is .*_DoubledNNXSimpleCell, a subclass of flax\.nnx\.SimpleCell, whose "
        r"__call__ is not flax\.nnx\.SimpleCell's own \(_DoubledNNXSimpleCell\.__call__\)",
        id="flax-nnx",
    ),
    pytest.param(
        lambda: interop.from_equinox(_DoubledEqxGRU(D, H, key=jax.random.key(0))),
        r"module is .*_DoubledEqxGRU, a subclass of equinox\.nn\.GRUCell, whose __call__ is "
        r"not equinox\.nn\.GRUCell's own \(_DoubledEqxGRU\.__call__\)",
        id="equinox",
    ),
]


@pytest.mark.parametrize("call, match", OVERRIDDEN_FORWARD_CASES)
def test_subclass_overriding_the_forward_refused(call, match):
    check(call, TypeError, match + r".*the converter reads only the weights")


def test_torch_subclass_keeping_the_forward_converts_exactly():
    plain = torch.nn.GRU(D, H, num_layers=2, bidirectional=True)
    tagged = _TaggedTorchGRU(D, H, num_layers=2, bidirectional=True, tag="mine")
    tagged.load_state_dict(plain.state_dict())
    layers = interop.from_torch(tagged)
    assert_exact(layers, interop.from_torch(plain))
    target = interop.to_torch(layers, _TaggedTorchGRU(D, H, num_layers=2, bidirectional=True))
    assert_exact(interop.from_torch(target), layers)
    xs = torch.randn(3, 2, D)
    ys, h_n = tagged(xs)
    carries, ys_ours = rc.stack_unroll(layers, jnp.asarray(xs.numpy()), time_major=True)
    np.testing.assert_allclose(np.asarray(ys_ours), ys.detach().numpy(), rtol=1e-5, atol=1e-5)
    h_ours = interop.to_torch_carries(carries, tagged)
    np.testing.assert_allclose(h_ours.numpy(), h_n.detach().numpy(), rtol=1e-5, atol=1e-5)


def test_flax_subclasses_keeping_the_forward_convert_exactly():
    lstm = params("lstm")
    cell, variables = interop.to_flax_linen(lstm)
    assert_exact(interop.from_flax_linen(_TaggedLinenLSTM(features=H, tag="mine"), variables), lstm)
    # The lifted transforms' classes wrap __call__ without changing the step: they convert.
    gru = params("gru_ra")
    _, variables = interop.to_flax_linen(gru)
    for transform in (nn.remat, nn.jit):
        assert_exact(interop.from_flax_linen(transform(nn.GRUCell)(features=H), variables), gru)
    scanned = nn.scan(
        nn.GRUCell, variable_broadcast="params", split_rngs={"params": False}, in_axes=1
    )
    assert_exact(interop.from_flax_linen(scanned(features=H), variables), gru)
    tagged = _TaggedNNXLSTM(D, H, tag="mine", rngs=nnx.Rngs(0))
    plain = nnx.OptimizedLSTMCell(D, H, rngs=nnx.Rngs(0))
    assert_exact(interop.from_flax_nnx(tagged), interop.from_flax_nnx(plain))


def test_equinox_subclass_keeping_the_forward_converts_exactly():
    module = _EqxLSTMWithHelper(D, H, dtype=F32, key=jax.random.key(0))
    plain = eqx.nn.LSTMCell(D, H, dtype=F32, key=jax.random.key(0))
    assert_exact(interop.from_equinox(module), interop.from_equinox(plain))
    x, carry = jnp.arange(D, dtype=F32), (jnp.ones(H, F32), 2 * jnp.ones(H, F32))
    lstm = interop.from_equinox(module)
    state, h = rc.lstm_step(lstm, interop.from_equinox_carry(carry, lstm), x)
    h_eqx, c_eqx = module(x, carry)
    np.testing.assert_allclose(np.asarray(h), np.asarray(h_eqx), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(state.c), np.asarray(c_eqx), rtol=1e-6, atol=1e-6)


def assert_exact(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
