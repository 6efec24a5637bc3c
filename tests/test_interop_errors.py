"""Bad input to the converters raises an error naming the argument, what was expected and
what was given, before anything is built (no silent swap, truncation or deep error)."""

import warnings

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
