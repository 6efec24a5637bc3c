"""PyTorch interop for the projected LSTM: nn.LSTM(proj_size=P) <-> LSTMPParams stacks.

``from_torch`` / ``to_torch`` and the carry converters against torch's own forward pass,
with every parameter random, distinct and non-zero (both biases), D != H != P, batch 2,
T 3, two layers, one and two directions, packed sequences, float64, round trips and
refusals.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnncells as rc

torch = pytest.importorskip("torch")

from rnncells.interop import (  # noqa: E402
    from_torch,
    from_torch_carries,
    to_torch,
    to_torch_carries,
)
from tests.conftest import assert_tree_allclose  # noqa: E402

D, H, P, B, T = 3, 5, 2, 2, 3  # D != H != P
# torch's float32 CPU LSTM says once that it runs projections without oneDNN
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported:UserWarning")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_module(*, seed=0, dtype=torch.float32, **kwargs):
    """nn.LSTM(D, H, proj_size=P) with every parameter random, distinct and non-zero."""
    torch.manual_seed(seed)
    module = torch.nn.LSTM(D, H, proj_size=P, **kwargs).to(dtype)
    with torch.no_grad():
        for param in module.parameters():
            torch.nn.init.uniform_(param, 0.1, 0.9)
            param.mul_(torch.where(torch.rand_like(param) < 0.5, -1.0, 1.0).to(dtype))
    return module


def initial_states(module, batch, seed=1):
    """Random non-zero (h0 (rows, batch, P), c0 (rows, batch, H))."""
    generator = torch.Generator().manual_seed(seed)
    rows = module.num_layers * (2 if module.bidirectional else 1)
    dtype = module.weight_ih_l0.dtype
    h0 = torch.rand(rows, batch, P, generator=generator, dtype=dtype) - 0.5
    c0 = torch.rand(rows, batch, H, generator=generator, dtype=dtype) - 0.5
    return h0, c0


def to_numpy(tree):
    return jax.tree.map(lambda t: t.detach().numpy(), tree)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize(("bias", "batch_first"), [(True, False), (False, True)])
def test_from_torch_matches_module(bidirectional, bias, batch_first):
    module = make_module(
        num_layers=2, bidirectional=bidirectional, bias=bias, batch_first=batch_first
    )
    torch.manual_seed(2)
    xs = torch.randn((B, T, D) if batch_first else (T, B, D))
    state0 = initial_states(module, B)
    with torch.no_grad():
        ys_torch, state_n = module(xs, state0)

    layers = from_torch(module)
    expected = rc.stack_init(
        jax.random.key(0), "lstmp", D, H, num_layers=2, bidirectional=bidirectional, proj_size=P
    )
    assert jax.tree.structure(layers) == jax.tree.structure(expected)  # stack_init's structure
    assert [x.shape for x in jax.tree.leaves(layers)] == [
        x.shape for x in jax.tree.leaves(expected)
    ]
    first = layers[0].forward if bidirectional else layers[0]
    assert type(first) is rc.LSTMPParams and first.W_hr.shape == (H, P)
    carries0 = from_torch_carries(module, *state0)
    assert (
        carries0[0].h.shape[-1] == P if not bidirectional else carries0[0].forward.h.shape[-1] == P
    )
    carries, ys = rc.stack_unroll(
        layers, jnp.asarray(xs.numpy()), carries0, time_major=not batch_first
    )
    assert ys.shape[-1] == P * (2 if bidirectional else 1)
    np.testing.assert_allclose(ys, ys_torch.numpy(), rtol=1e-5, atol=1e-5)
    assert_tree_allclose(
        to_numpy(to_torch_carries(carries, module)), to_numpy(state_n), rtol=1e-5, atol=1e-5
    )


def test_conversion_formulas():
    module = make_module()
    (params,) = from_torch(module)
    w = {name: value.detach().numpy() for name, value in module.named_parameters()}
    np.testing.assert_array_equal(params.W, w["weight_ih_l0"].T)
    np.testing.assert_array_equal(params.V, w["weight_hh_l0"].T)  # (P, 4H): acts on h (P)
    np.testing.assert_array_equal(params.W_hr, w["weight_hr_l0"].T)
    np.testing.assert_allclose(params.b, w["bias_ih_l0"] + w["bias_hh_l0"], rtol=1e-7)


def test_lengths_match_packed_sequence():
    module = make_module(num_layers=2, bidirectional=True, batch_first=True)
    steps, lengths = 4, torch.tensor([2, 4])  # unsorted: a short one first
    xs = torch.randn(B, steps, D, generator=torch.Generator().manual_seed(3))
    state0 = initial_states(module, B)
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        xs, lengths, batch_first=True, enforce_sorted=False
    )
    with torch.no_grad():
        ys_packed, state_n = module(packed, state0)
    ys_torch, _ = torch.nn.utils.rnn.pad_packed_sequence(
        ys_packed, batch_first=True, total_length=steps
    )
    carries, ys = rc.stack_unroll(
        from_torch(module),
        jnp.asarray(xs.numpy()),
        from_torch_carries(module, *state0),
        lengths=jnp.asarray(lengths.numpy(), jnp.int32),
    )
    np.testing.assert_allclose(ys, ys_torch.numpy(), rtol=1e-5, atol=1e-5)  # zeros past lengths
    assert_tree_allclose(
        to_numpy(to_torch_carries(carries, module)), to_numpy(state_n), rtol=1e-5, atol=1e-5
    )


def test_float64_agrees_to_1e10():
    module = make_module(num_layers=2, bidirectional=True, dtype=torch.float64)
    xs = torch.randn(T, B, D, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    state0 = initial_states(module, B)
    with torch.no_grad():
        ys_torch, state_n = module(xs, state0)
    layers = from_torch(module, dtype=jnp.float64)
    assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves(layers))
    carries0 = from_torch_carries(module, *state0, dtype=jnp.float64)
    carries, ys = rc.stack_unroll(layers, jnp.asarray(xs.numpy()), carries0, time_major=True)
    np.testing.assert_allclose(ys, ys_torch.numpy(), rtol=1e-10, atol=1e-10)
    assert_tree_allclose(
        to_numpy(to_torch_carries(carries, module)), to_numpy(state_n), rtol=1e-10, atol=1e-10
    )


@pytest.mark.parametrize("bidirectional", [False, True])
def test_to_torch_matches_stack_unroll_and_round_trips(bidirectional):
    layers = rc.stack_init(
        jax.random.key(5), "lstmp", D, H, num_layers=2, bidirectional=bidirectional, proj_size=P
    )
    layers = jax.tree.map(  # non-zero biases
        lambda leaf: leaf + 0.1 * jax.random.normal(jax.random.key(6), leaf.shape, leaf.dtype),
        layers,
    )
    module = torch.nn.LSTM(D, H, proj_size=P, num_layers=2, bidirectional=bidirectional)
    assert to_torch(layers, module) is module
    assert_tree_allclose(from_torch(module), layers, rtol=0, atol=0)  # exact both ways
    assert not module.bias_hh_l0.detach().numpy().any()  # b went to bias_ih
    xs = np.random.default_rng(7).uniform(-1, 1, (T, B, D)).astype(np.float32)
    with torch.no_grad():
        ys_torch, state_n = module(torch.from_numpy(xs))
    carries, ys = rc.stack_unroll(layers, jnp.asarray(xs), time_major=True)
    np.testing.assert_allclose(ys, ys_torch.numpy(), rtol=1e-5, atol=1e-5)
    assert_tree_allclose(
        to_numpy(to_torch_carries(carries, module)), to_numpy(state_n), rtol=1e-5, atol=1e-5
    )


def test_refusals_name_the_argument():
    (lstmp,) = rc.stack_init(jax.random.key(0), "lstmp", D, H, proj_size=P)
    (lstm,) = rc.stack_init(jax.random.key(0), "lstm", D, H)
    with pytest.raises(
        ValueError, match=r"params\[0\] is LSTMParams, but the module is nn.LSTM\(proj_size=2\)"
    ):
        to_torch((lstm,), torch.nn.LSTM(D, H, proj_size=P))
    with pytest.raises(
        ValueError, match=r"params\[0\] is LSTMPParams, but the module is nn.LSTM\(proj_size=0\)"
    ):
        to_torch((lstmp,), torch.nn.LSTM(D, H))
    with pytest.raises(TypeError, match=r"params\[0\] must be LSTMPParams for a torch.nn.LSTM"):
        to_torch((rc.rnn_init(jax.random.key(0), D, H),), torch.nn.LSTM(D, H, proj_size=P))
    wide = rc.lstmp_init(jax.random.key(0), D, H, proj_size=P + 1)
    with pytest.raises(ValueError, match=r"params\[0\]\.V must have shape \(2, 20\).*proj_size 2"):
        to_torch((wide,), torch.nn.LSTM(D, H, proj_size=P))
    bad_hr = lstmp._replace(W_hr=jnp.zeros((P, H), jnp.float32))
    with pytest.raises(ValueError, match=r"params\[0\]\.W_hr must have shape \(5, 2\)"):
        to_torch((bad_hr,), torch.nn.LSTM(D, H, proj_size=P))
    module = torch.nn.LSTM(D, H, proj_size=P, num_layers=2)
    with torch.no_grad():
        module.weight_hr_l1 = torch.nn.Parameter(torch.zeros(P, H + 1))
    with pytest.raises(ValueError, match=r"module.weight_hr_l1 must have shape \(2, 5\)"):
        from_torch(module)
    module = torch.nn.LSTM(D, H, proj_size=P)
    with pytest.raises(
        ValueError,
        match=r"h0 must have shape \(num_layers \* num_directions = 1, \*batch, proj_size = 2\)",
    ):
        from_torch_carries(module, torch.zeros(1, B, H), torch.zeros(1, B, H))
    with pytest.raises(
        ValueError, match=r"c0 must have shape .*hidden_size = 5\), got shape \(1, 2, 2\)"
    ):
        from_torch_carries(module, torch.zeros(1, B, P), torch.zeros(1, B, P))
    with pytest.raises(
        ValueError, match=r"h0 and c0 must have the same shape but for the last axis"
    ):
        from_torch_carries(module, torch.zeros(1, B, P), torch.zeros(1, B + 1, H))
    square = rc.LSTMState(jnp.zeros((B, H)), jnp.zeros((B, H)))
    with pytest.raises(
        ValueError, match=r"carries\[0\]\.h must have shape \(\*batch, proj_size = 2\)"
    ):
        to_torch_carries((square,), module)
