"""PyTorch interop: from_torch, to_torch and the carry converters against torch's own RNNs."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnncells as rc

torch = pytest.importorskip("torch")

from rnncells.interop import (  # noqa: E402
    from_torch,
    from_torch_carries,
    to_torch,
    to_torch_carries,
)
from tests.conftest import assert_tree_allclose  # noqa: E402

D, H = 3, 5  # D != H so that a transposed or misplaced weight cannot fit
MODULES = {
    "lstm": torch.nn.LSTM,
    "gru": torch.nn.GRU,
    "rnn": torch.nn.RNN,
    "irnn": functools.partial(torch.nn.RNN, nonlinearity="relu"),  # rnncells' IRNN
}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_module(cell, *, seed=0, dtype=torch.float32, **kwargs):
    """A torch module with every parameter (biases too) random, distinct and non-zero."""
    torch.manual_seed(seed)
    module = MODULES[cell](D, H, **kwargs).to(dtype)
    with torch.no_grad():
        for param in module.parameters():
            torch.nn.init.uniform_(param, 0.1, 0.9)
            param.mul_(torch.where(torch.rand_like(param) < 0.5, -1.0, 1.0).to(dtype))
    return module


def initial_states(module, batch, seed=1):
    """Random non-zero torch initial state: h0, or (h0, c0) for an LSTM."""
    generator = torch.Generator().manual_seed(seed)
    rows = module.num_layers * (2 if module.bidirectional else 1)
    dtype = module.weight_ih_l0.dtype
    states = [
        torch.rand(rows, batch, H, generator=generator, dtype=dtype) - 0.5
        for _ in range(2 if isinstance(module, torch.nn.LSTM) else 1)
    ]
    return tuple(states) if len(states) == 2 else states[0]


def split_states(state):
    """(h0, c0) from a torch state, c0 None for GRU/RNN."""
    return state if isinstance(state, tuple) else (state, None)


def to_numpy(tree):
    return jax.tree.map(lambda t: t.detach().numpy(), tree)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "irnn"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
# bias and layout vary together: each value of each still meets every cell, depth and direction
@pytest.mark.parametrize(("bias", "batch_first"), [(True, False), (False, True)])
def test_from_torch_matches_module(cell, num_layers, bidirectional, bias, batch_first):
    module = make_module(
        cell, num_layers=num_layers, bidirectional=bidirectional, bias=bias, batch_first=batch_first
    )
    batch, steps = 3, 4
    torch.manual_seed(2)
    xs = torch.randn((batch, steps, D) if batch_first else (steps, batch, D))
    state0 = initial_states(module, batch)
    with torch.no_grad():
        ys_torch, state_n = module(xs, state0)

    layers = from_torch(module)
    kwargs = {"reset_after": True} if cell == "gru" else {}
    expected = random_stack(
        np.random.default_rng(0), cell, num_layers=num_layers, bidirectional=bidirectional, **kwargs
    )
    assert jax.tree.structure(layers) == jax.tree.structure(expected)  # stack_init's structure
    assert [x.shape for x in jax.tree.leaves(layers)] == [
        x.shape for x in jax.tree.leaves(expected)
    ]
    carries0 = from_torch_carries(module, *split_states(state0))
    carries, ys = rc.stack_unroll(
        layers, jnp.asarray(xs.numpy()), carries0, time_major=not batch_first
    )
    assert ys.dtype == jnp.float32
    np.testing.assert_allclose(ys, ys_torch.numpy(), rtol=1e-5, atol=1e-5)
    assert_tree_allclose(
        to_numpy(to_torch_carries(carries, module)), to_numpy(state_n), rtol=1e-5, atol=1e-5
    )


# Under jit the lengths are traced, so examples of one shape compile once.
jitted_stack_unroll = jax.jit(rc.stack_unroll)


def check_packed(module, lengths, steps=5):
    """stack_unroll with lengths equals the module on a pack_padded_sequence batch."""
    batch = len(lengths)
    lengths = torch.tensor(lengths)
    xs = torch.randn(batch, steps, D, generator=torch.Generator().manual_seed(3))
    state0 = initial_states(module, batch)
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        xs, lengths, batch_first=True, enforce_sorted=False
    )
    with torch.no_grad():
        ys_packed, state_n = module(packed, state0)
    ys_torch, _ = torch.nn.utils.rnn.pad_packed_sequence(
        ys_packed, batch_first=True, total_length=steps
    )

    carries, ys = jitted_stack_unroll(
        from_torch(module),
        jnp.asarray(xs.numpy()),
        from_torch_carries(module, *split_states(state0)),
        lengths=jnp.asarray(lengths.numpy(), jnp.int32),
    )
    np.testing.assert_allclose(ys, ys_torch.numpy(), rtol=1e-5, atol=1e-5)  # zeros past lengths
    assert_tree_allclose(
        to_numpy(to_torch_carries(carries, module)), to_numpy(state_n), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_lengths_match_packed_sequence(cell):
    module = make_module(cell, num_layers=2, bidirectional=True, batch_first=True)
    check_packed(module, [3, 5, 1])  # unsorted, a full one and a length-1 one


@settings(max_examples=10, deadline=None)
@given(lengths=st.lists(st.integers(1, 5), min_size=2, max_size=2))
def test_any_lengths_match_packed_sequence(lengths):
    """Same shapes for every example, so JAX compiles once and only the lengths vary."""
    check_packed(make_module("gru", num_layers=2, bidirectional=True, batch_first=True), lengths)


def test_reads_half_precision_modules_exactly():
    module = make_module("lstm", dtype=torch.bfloat16)
    (params,) = from_torch(module)
    np.testing.assert_array_equal(params.W, module.weight_ih_l0.float().detach().numpy().T)
    np.testing.assert_array_equal(params.V, module.weight_hh_l0.float().detach().numpy().T)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_float64_agrees_to_1e10(cell):
    module = make_module(cell, num_layers=2, bidirectional=True, dtype=torch.float64)
    xs = torch.randn(4, 2, D, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    state0 = initial_states(module, 2)
    with torch.no_grad():
        ys_torch, state_n = module(xs, state0)
    layers = from_torch(module, dtype=jnp.float64)
    assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves(layers))
    carries0 = from_torch_carries(module, *split_states(state0), dtype=jnp.float64)
    carries, ys = rc.stack_unroll(layers, jnp.asarray(xs.numpy()), carries0, time_major=True)
    np.testing.assert_allclose(ys, ys_torch.numpy(), rtol=1e-10, atol=1e-10)
    assert_tree_allclose(
        to_numpy(to_torch_carries(carries, module)), to_numpy(state_n), rtol=1e-10, atol=1e-10
    )


def test_gru_conversion_formulas():
    """The documented GRU mapping, entry by entry: z blocks negated, b_hn from bias_hh."""
    module = make_module("gru")
    (params,) = from_torch(module)
    assert isinstance(params, rc.GRUResetAfterParams)
    w_ih, w_hh = module.weight_ih_l0.detach().numpy(), module.weight_hh_l0.detach().numpy()
    b_ih, b_hh = module.bias_ih_l0.detach().numpy(), module.bias_hh_l0.detach().numpy()
    sign = np.concatenate([np.ones(H), -np.ones(H), np.ones(H)]).astype(np.float32)
    np.testing.assert_array_equal(params.W, w_ih.T * sign)
    np.testing.assert_array_equal(params.V, w_hh.T * sign)
    expected_b = np.concatenate([b_ih[: 2 * H] + b_hh[: 2 * H], b_ih[2 * H :]]) * sign
    np.testing.assert_allclose(params.b, expected_b, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(params.b_hn, b_hh[2 * H :])


def random_stack(rng, cell, **kwargs):
    """Our params in stack_init's structure, every leaf random, distinct and non-zero.

    ``jax.eval_shape`` gives stack_init's structure and shapes without running (or
    compiling) its initialisers; stack_init's own biases would be mostly zero anyway.
    """
    shapes = jax.eval_shape(lambda k: rc.stack_init(k, cell, D, H, **kwargs), jax.random.key(0))

    def fill(leaf):
        values = rng.uniform(0.1, 0.9, leaf.shape) * rng.choice([-1.0, 1.0], leaf.shape)
        return jnp.asarray(values, leaf.dtype)

    return jax.tree.map(fill, shapes)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "irnn"])
@pytest.mark.parametrize(("num_layers", "bidirectional"), [(1, False), (2, True)])
def test_ours_to_torch_to_ours_is_exact(rng, cell, num_layers, bidirectional):
    kwargs = {"reset_after": True} if cell == "gru" else {}
    layers = random_stack(rng, cell, num_layers=num_layers, bidirectional=bidirectional, **kwargs)
    module = make_module(cell, seed=7, num_layers=num_layers, bidirectional=bidirectional)
    assert to_torch(layers, module) is module
    assert all(p.requires_grad for p in module.parameters())
    back = from_torch(module)
    assert jax.tree.structure(back) == jax.tree.structure(layers)
    for ours, theirs in zip(jax.tree.leaves(layers), jax.tree.leaves(back), strict=True):
        assert theirs.dtype == ours.dtype
        np.testing.assert_array_equal(theirs, ours)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "irnn"])
def test_torch_to_ours_to_torch_same_outputs(cell):
    source = make_module(cell, seed=0, num_layers=2, bidirectional=True)
    target = to_torch(
        from_torch(source), make_module(cell, seed=9, num_layers=2, bidirectional=True)
    )
    xs = torch.randn(4, 3, D, generator=torch.Generator().manual_seed(5))
    state0 = initial_states(source, 3)
    with torch.no_grad():
        expected, target_out = source(xs, state0), target(xs, state0)
    assert_tree_allclose(to_numpy(target_out), to_numpy(expected), rtol=1e-6, atol=1e-6)


def test_bias_false_module_takes_zero_biases_only(rng):
    layers = random_stack(rng, "gru", reset_after=True)
    zero = jax.tree.map(jnp.zeros_like, layers[0])
    zero_bias = (layers[0]._replace(b=zero.b, b_hn=zero.b_hn),)
    module = to_torch(zero_bias, make_module("gru", bias=False))
    for ours, theirs in zip(
        jax.tree.leaves(zero_bias), jax.tree.leaves(from_torch(module)), strict=True
    ):
        np.testing.assert_array_equal(theirs, ours)
    with pytest.raises(
        ValueError, match=r"bias=False, so params\[0\]\.b and b_hn must be all zeros"
    ):
        to_torch(layers, make_module("gru", bias=False))
    only_b_hn = (zero_bias[0]._replace(b_hn=layers[0].b_hn),)
    with pytest.raises(ValueError, match="bias=False"):
        to_torch(only_b_hn, make_module("gru", bias=False))


def test_unbatched_states_round_trip():
    module = make_module("lstm", num_layers=2, bidirectional=True)
    h0, c0 = (torch.rand(4, H) for _ in range(2))
    carries = from_torch_carries(module, h0, c0)
    assert carries[1].backward.h.shape == (H,)
    np.testing.assert_array_equal(carries[1].backward.c, c0[3].numpy())
    h, c = to_torch_carries(carries, module)
    assert torch.equal(h, h0) and torch.equal(c, c0)


# --- refusals -------------------------------------------------------------------------


def test_reset_before_gru_refused(rng):
    layers = random_stack(rng, "gru")  # reset-before GRUParams, the default
    with pytest.raises(
        ValueError, match=r"reset gate after the recurrent matmul.*reset_after=True"
    ):
        to_torch(layers, torch.nn.GRU(D, H))


def test_relu_rnn_is_the_irnn_and_the_other_activation_is_refused(rng):
    relu, tanh = torch.nn.RNN(D, H, nonlinearity="relu"), torch.nn.RNN(D, H)
    (params,) = from_torch(relu)
    assert isinstance(params, rc.IRNNParams) and rc.step_for(params) is rc.irnn_step
    assert isinstance(from_torch_carries(relu, torch.zeros(1, 2, H))[0], rc.RNNState)
    with pytest.raises(
        ValueError, match=r"params\[0\] is RNNParams, h = tanh.*nonlinearity='relu'"
    ):
        to_torch(random_stack(rng, "rnn"), relu)
    with pytest.raises(
        ValueError, match=r"params\[0\] is IRNNParams, h = relu.*nonlinearity='tanh'"
    ):
        to_torch(random_stack(rng, "irnn"), tanh)
    with pytest.raises(
        TypeError, match="params\\[0\\] must be LSTMParams for a torch.nn.LSTM, got"
    ):
        to_torch(random_stack(rng, "peephole_lstm"), torch.nn.LSTM(D, H))


@pytest.mark.parametrize("module", [torch.nn.Linear(D, H), torch.nn.LSTMCell(D, H), "lstm"])
def test_not_a_recurrent_module_refused(rng, module):
    with pytest.raises(TypeError, match="must be a torch.nn.LSTM, torch.nn.GRU or torch.nn.RNN"):
        from_torch(module)
    with pytest.raises(TypeError, match="must be a torch.nn.LSTM, torch.nn.GRU or torch.nn.RNN"):
        to_torch(random_stack(rng, "lstm"), module)


def test_bad_dtype_refused():
    with pytest.raises(TypeError, match="dtype must be a floating dtype, got int32"):
        from_torch(torch.nn.GRU(D, H), dtype=jnp.int32)


def test_to_torch_mismatches_refused(rng):
    lstm2 = random_stack(rng, "lstm", num_layers=2)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "params is one layer's LSTMParams (a 1-layer stack), but the module has "
            "num_layers=2: pass a tuple with one entry per layer"
        ),
    ):
        to_torch(lstm2[0], torch.nn.LSTM(D, H, num_layers=2))
    with pytest.raises(TypeError, match="params must be a tuple with one entry per layer"):
        to_torch(3, torch.nn.LSTM(D, H))
    with pytest.raises(ValueError, match="params has 2 layers but the module has num_layers=1"):
        to_torch(lstm2, torch.nn.LSTM(D, H))
    with pytest.raises(ValueError, match=r"module is bidirectional, so params\[0\] must be Bidir"):
        to_torch(lstm2, torch.nn.LSTM(D, H, num_layers=2, bidirectional=True))
    bi = random_stack(rng, "lstm", bidirectional=True)
    with pytest.raises(ValueError, match=r"not bidirectional.*params\[0\] is Bidirectional"):
        to_torch(bi, torch.nn.LSTM(D, H))
    with pytest.raises(TypeError, match=r"params\[0\] must be GRUResetAfterParams.*got LSTMParams"):
        to_torch(lstm2[:1], torch.nn.GRU(D, H))
    with pytest.raises(TypeError, match=r"params\[0\] must be LSTMParams.*got RNNParams"):
        to_torch(random_stack(rng, "rnn"), torch.nn.LSTM(D, H))
    with pytest.raises(ValueError, match=r"params\[0\]\.W must have shape \(4, 20\).*got shape"):
        to_torch(lstm2[:1], torch.nn.LSTM(D + 1, H))
    with pytest.raises(ValueError, match=r"params\[0\]\.W must have shape \(3, 24\)"):
        to_torch(lstm2[:1], torch.nn.LSTM(D, H + 1))
    bi2 = random_stack(rng, "gru", num_layers=2, bidirectional=True, reset_after=True)
    bad = (bi2[0], bi2[1]._replace(backward=bi2[1].backward._replace(b_hn=jnp.zeros(H + 1))))
    with pytest.raises(ValueError, match=r"params\[1\]\.backward\.b_hn must have shape \(5,\)"):
        to_torch(bad, torch.nn.GRU(D, H, num_layers=2, bidirectional=True))
    int_w = (lstm2[0]._replace(W=jnp.zeros((D, 4 * H), jnp.int32)),)
    with pytest.raises(TypeError, match=r"params\[0\]\.W must have a floating dtype, got int32"):
        to_torch(int_w, torch.nn.LSTM(D, H))


def test_failed_to_torch_leaves_module_untouched(rng):
    """Every layer is checked before any is written."""
    module = make_module("gru", num_layers=2)
    before = [p.detach().clone() for p in module.parameters()]
    good = random_stack(rng, "gru", num_layers=2, reset_after=True)
    with pytest.raises(ValueError, match=r"params\[1\]\.V must have shape"):
        to_torch((good[0], good[1]._replace(V=jnp.zeros((H, H), jnp.float32))), module)
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))


def test_carries_mismatches_refused():
    lstm = torch.nn.LSTM(D, H, num_layers=2)
    with pytest.raises(ValueError, match="c0 is required for an nn.LSTM"):
        from_torch_carries(lstm, torch.zeros(2, 3, H))
    with pytest.raises(ValueError, match="c0 must be None for a torch.nn.GRU"):
        from_torch_carries(torch.nn.GRU(D, H), torch.zeros(1, 3, H), torch.zeros(1, 3, H))
    with pytest.raises(ValueError, match=r"h0 must have shape \(num_layers \* num_directions = 2"):
        from_torch_carries(lstm, torch.zeros(1, 3, H), torch.zeros(1, 3, H))
    with pytest.raises(ValueError, match=r"h0 and c0 must have the same shape"):
        from_torch_carries(lstm, torch.zeros(2, 3, H), torch.zeros(2, 4, H))
    with pytest.raises(TypeError, match="h0 must have a floating dtype"):
        from_torch_carries(torch.nn.GRU(D, H), np.zeros((1, 3, H), np.int32))
    carries = from_torch_carries(lstm, torch.zeros(2, 3, H), torch.zeros(2, 3, H))
    with pytest.raises(ValueError, match="carries has 2 layers but the module has num_layers=1"):
        to_torch_carries(carries, torch.nn.LSTM(D, H))
    with pytest.raises(TypeError, match=r"carries\[0\] must be GRUState.*got LSTMState"):
        to_torch_carries(carries, torch.nn.GRU(D, H, num_layers=2))
    short = (carries[0], rc.LSTMState(carries[1].h[:2], carries[1].c[:2]))
    with pytest.raises(ValueError, match=r"carries\[1\]\.h must have shape \(\*batch, hidden_size"):
        to_torch_carries(short, lstm)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_to_torch_takes_one_layers_params_as_a_one_layer_stack(rng, bidirectional):
    (layer,) = random_stack(rng, "lstm", bidirectional=bidirectional)
    module = torch.nn.LSTM(D, H, bidirectional=bidirectional)
    assert to_torch(layer, module) is module
    (back,) = from_torch(module)
    assert_tree_allclose(back, layer, rtol=0, atol=0)
