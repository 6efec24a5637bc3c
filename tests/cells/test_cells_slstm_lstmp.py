"""The sLSTM (Beck et al. 2024, xLSTM) and the LSTMP (Sak et al. 2014, PyTorch's proj_size).

Each cell against an independent NumPy implementation of its paper's equations (for
the sLSTM the unstabilised ones, which its stabilised states must equal after scaling
by exp(m_t)), and against the other framework's own cell where one runs on a CPU: the
``xlstm`` package's pure-PyTorch sLSTM (``backend="vanilla"``) and ``torch.nn.LSTM(
proj_size=P)``. Then gradients, unroll, layers, the Flax modules, training and bad
input. Random non-zero weights, D != H != P, batch 2; shapes are tiny.
"""

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

import rnncells as rc
import rnncells.linen as rcl
import rnncells.nnx as rcn
from configs.adding import get_config
from rnncells import cells, training
from tests.conftest import assert_tree_allclose

KINDS = ["slstm", "lstmp"]
PARAMS = {"slstm": rc.SLSTMParams, "lstmp": rc.LSTMPParams}
STEPS = {"slstm": rc.slstm_step, "lstmp": rc.lstmp_step}
INITS = {"slstm": rc.slstm_init, "lstmp": rc.lstmp_init}
STATES = {"slstm": rc.SLSTMState, "lstmp": rc.LSTMState}
D, H, P, B, T = 3, 4, 2, 2, 5  # D != H != P, batch >= 2
HEADS = 2  # the sLSTM's heads in most tests: block-diagonal recurrent matrices
OPTIONS = {"slstm": {"num_heads": HEADS}, "lstmp": {"proj_size": P}}
OUT = {"slstm": H, "lstmp": P}  # output (and recurrent input) width
TIGHT = dict(rtol=1e-12, atol=1e-12)


# --- NumPy references -------------------------------------------------------------------------


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def dense_recurrent(V):
    """The sLSTM's (H, 4H) recurrent matrix in the (i, f, z, o) gate-major layout, from
    V (heads, head_dim, 4 * head_dim): block-diagonal per gate."""
    heads, dh = V.shape[0], V.shape[1]
    R = np.zeros((heads * dh, 4 * heads * dh))
    for k in range(heads):
        for gate in range(4):
            cols = slice(gate * heads * dh + k * dh, gate * heads * dh + (k + 1) * dh)
            R[k * dh : (k + 1) * dh, cols] = V[k][:, gate * dh : (gate + 1) * dh]
    return R


def slstm_raw_step(params, carry, x):
    """The paper's sLSTM without the stabiliser: i_t = exp(ĩ_t), f_t = σ(f̃_t),
    c_t = f_t c_{t-1} + i_t z_t, n_t = f_t n_{t-1} + i_t, h_t = o_t c_t / n_t."""
    W, V, b = params
    h, c, n = carry
    a = x @ W + b + h @ dense_recurrent(V)
    a_i, a_f, a_z, a_o = np.split(a, 4, axis=-1)
    c = np_sigmoid(a_f) * c + np.exp(a_i) * np.tanh(a_z)
    n = np_sigmoid(a_f) * n + np.exp(a_i)
    h = np_sigmoid(a_o) * c / n
    return (h, c, n), h


def lstmp_ref_step(params, carry, x):
    """Sak et al.'s LSTMP without peepholes: r_t = W_hr (o_t ⊙ tanh(C_t))."""
    W, V, b, W_hr = params
    r, c = carry
    a = x @ W + b + r @ V
    a_i, a_f, a_g, a_o = np.split(a, 4, axis=-1)
    c = np_sigmoid(a_f) * c + np_sigmoid(a_i) * np.tanh(a_g)
    r = (np_sigmoid(a_o) * np.tanh(c)) @ W_hr
    return (r, c), r


def to_raw(kind, carry):
    """The reference's carry: the sLSTM's stabilised c and n scaled back by exp(m)."""
    carry = [np.asarray(part, np.float64) for part in carry]
    if kind == "slstm":
        h, c, n, m = carry
        return h, c * np.exp(m), n * np.exp(m)
    return tuple(carry)


def ref_step(kind, params, carry, x):
    params = [np.asarray(a, np.float64) for a in params]
    return (slstm_raw_step if kind == "slstm" else lstmp_ref_step)(params, carry, x)


def ref_unroll(kind, params, carry, xs, lengths=None, reverse=False):
    """Batch-first loop of the reference step with packed-sequence semantics."""
    xs = np.asarray(xs, np.float64)
    carry = [np.array(part) for part in to_raw(kind, carry)]
    lengths = [xs.shape[1]] * xs.shape[0] if lengths is None else lengths
    ys = np.zeros(xs.shape[:2] + (OUT[kind],))
    for n in range(xs.shape[0]):
        state = tuple(part[n] for part in carry)
        steps = range(lengths[n])
        for t in reversed(steps) if reverse else steps:
            state, ys[n, t] = ref_step(kind, params, state, xs[n, t])
        for part, value in zip(carry, state, strict=True):
            part[n] = value
    return tuple(carry), ys


def build(kind, rng, dtype=jnp.float64, heads=HEADS):
    """Random params with distinct non-zero biases (recurrent weights kept small enough
    that the sLSTM's exp gates stay in range)."""
    if kind == "slstm":
        dh = H // heads
        fields = [
            rng.uniform(-1, 1, (D, 4 * H)),
            rng.uniform(-0.8, 0.8, (heads, dh, 4 * dh)),
            rng.uniform(-1, 1, (4 * H,)),
        ]
    else:
        fields = [
            rng.uniform(-1, 1, (D, 4 * H)),
            rng.uniform(-1, 1, (P, 4 * H)),
            rng.uniform(-1, 1, (4 * H,)),
            rng.uniform(-1, 1, (H, P)),
        ]
    return PARAMS[kind](*(jnp.asarray(a, dtype) for a in fields))


def random_carry(kind, rng, batch_shape, dtype=jnp.float64):
    batch = tuple(batch_shape)
    if kind == "slstm":  # a normaliser > 0: some input has been written already
        parts = [
            rng.uniform(-0.8, 0.8, batch + (H,)),
            rng.uniform(-0.8, 0.8, batch + (H,)),
            rng.uniform(0.5, 2.0, batch + (H,)),
            rng.uniform(-1.0, 1.0, batch + (H,)),
        ]
    else:
        parts = [rng.uniform(-0.8, 0.8, batch + (P,)), rng.uniform(-0.8, 0.8, batch + (H,))]
    return STATES[kind](*(jnp.asarray(p, dtype) for p in parts))


def xs_of(rng, shape=(B, T, D), dtype=jnp.float64):
    return jnp.asarray(rng.uniform(-1, 1, shape), dtype)


def compare(kind, carry, y, ref_carry, ref_y, tol):
    """The cell's carry and output against the reference's (raw for the sLSTM)."""
    assert_tree_allclose((to_raw(kind, carry), y), (tuple(ref_carry), ref_y), rtol=tol, atol=tol)


# --- the step against the NumPy reference ---------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("kind", KINDS)
def test_step_matches_reference_over_several_steps(kind, dtype, rng):
    params = build(kind, rng, dtype)
    carry = random_carry(kind, rng, (B,), dtype)
    ref_carry = to_raw(kind, carry)
    tol = {jnp.float64: 1e-12, jnp.float32: 2e-5}[dtype]
    for x in rng.uniform(-1, 1, (4, B, D)):
        carry, y = STEPS[kind](params, carry, jnp.asarray(x, dtype))
        ref_carry, ref_y = ref_step(kind, params, ref_carry, x)
        assert isinstance(carry, STATES[kind]) and y.shape == (B, OUT[kind])
        assert y.dtype == dtype and all(c.dtype == dtype for c in carry)
        compare(kind, carry, y, ref_carry, ref_y, tol)


@pytest.mark.parametrize("batch_shape", [(), (2, 3)], ids=["unbatched", "batch2x3"])
@pytest.mark.parametrize("kind", KINDS)
def test_step_accepts_any_leading_batch_dims_and_vmap(kind, batch_shape, rng):
    params = build(kind, rng)
    carry = random_carry(kind, rng, batch_shape)
    x = xs_of(rng, batch_shape + (D,))
    new, y = STEPS[kind](params, carry, x)
    assert y.shape == batch_shape + (OUT[kind],)
    compare(kind, new, y, *ref_step(kind, params, to_raw(kind, carry), np.asarray(x)), 1e-12)
    if batch_shape:
        mapped = jax.vmap(jax.vmap(lambda c, x: STEPS[kind](params, c, x)))(carry, x)
        assert_tree_allclose(mapped, (new, y), **TIGHT)


def test_slstm_stabiliser_starts_at_the_first_input_gate_and_bounds_the_gates(rng):
    params = build("slstm", rng)
    carry = rc.init_carry(params, (B,))  # n = 0: nothing written yet
    x = xs_of(rng, (B, D))
    new, _ = rc.slstm_step(params, carry, x)
    a_i = (np.asarray(x) @ np.asarray(params.W) + np.asarray(params.b))[:, :H]  # h_0 = 0
    np.testing.assert_allclose(new.m, a_i, **TIGHT)  # m_1 = ĩ_1, so i'_1 = 1 and n_1 = 1
    np.testing.assert_allclose(new.n, np.ones((B, H)), **TIGHT)
    # A huge input gate later: the stabiliser follows it, the states stay finite.
    big = params._replace(b=params.b.at[:H].set(500.0))
    state = new
    for _ in range(3):
        state, h = rc.slstm_step(big, state, x)
    assert np.isfinite(np.asarray(jax.tree.leaves((state, h)))).all()
    assert (np.asarray(state.m) > 400).all() and (np.asarray(state.n) <= 3 + 1e-12).all()


def test_slstm_one_head_is_a_full_recurrent_matrix_and_gate_views(rng):
    params = build("slstm", rng, heads=1)
    carry, x = random_carry("slstm", rng, (B,)), xs_of(rng, (B, D))
    compare(
        "slstm",
        *rc.slstm_step(params, carry, x),
        *ref_step("slstm", params, to_raw("slstm", carry), np.asarray(x)),
        1e-12,
    )
    two = build("slstm", rng)
    dense = dense_recurrent(np.asarray(two.V))
    for k, name in enumerate(("i", "f", "z", "o")):
        view = rc.gate(two, name)
        np.testing.assert_array_equal(view.V, dense[:, k * H : (k + 1) * H])
        np.testing.assert_array_equal(view.W, two.W[:, k * H : (k + 1) * H])
        np.testing.assert_array_equal(view.b, two.b[k * H : (k + 1) * H])
    assert np.count_nonzero(rc.gate(two, "i").V) == HEADS * (H // HEADS) ** 2  # block-diagonal


def test_lstmp_with_identity_projection_is_the_lstm(rng):
    params = build("lstmp", rng)
    lstm = rc.LSTMParams(params.W, jnp.asarray(rng.uniform(-1, 1, (H, 4 * H))), params.b)
    square = rc.LSTMPParams(lstm.W, lstm.V, lstm.b, jnp.eye(H, dtype=jnp.float64))
    carry = rc.LSTMState(*(xs_of(rng, (B, H)) for _ in range(2)))
    x = xs_of(rng, (B, D))
    assert_tree_allclose(rc.lstmp_step(square, carry, x), rc.lstm_step(lstm, carry, x), **TIGHT)


# --- the frameworks' own cells ----------------------------------------------------------------


def test_slstm_matches_the_xlstm_package_vanilla_backend(rng):
    torch = pytest.importorskip("torch")
    xlstm_cell = pytest.importorskip("xlstm.blocks.slstm.cell")
    config = xlstm_cell.sLSTMCellConfig(
        hidden_size=H,
        num_heads=HEADS,
        backend="vanilla",  # pure PyTorch, runs on a CPU
        dtype="float32",
        dtype_b="float32",
        enable_automatic_mixed_precision=False,
    )
    cell = xlstm_cell.sLSTMCell(config).double()
    with torch.no_grad():  # random non-zero recurrent weights and biases
        cell._recurrent_kernel_.copy_(
            torch.from_numpy(rng.uniform(-0.8, 0.8, (HEADS, 4 * H // HEADS, H // HEADS)))
        )
        cell._bias_.copy_(torch.from_numpy(rng.uniform(-1, 1, (4 * H,))))
    R = cell.recurrent_kernel.clone().detach().numpy()  # (heads, dh_in, gate, dh_out)
    bias = cell.bias.clone().detach().numpy()  # (heads, gate, dh)
    dh = H // HEADS
    W = rng.uniform(-1, 1, (D, 4 * H))
    params = rc.SLSTMParams(
        jnp.asarray(W),
        jnp.asarray(R.reshape(HEADS, dh, 4 * dh)),
        jnp.asarray(bias.transpose(1, 0, 2).reshape(-1)),
    )
    xs = rng.uniform(-1, 1, (B, T, D))
    final, ys = rc.unroll(rc.slstm_step, params, jnp.asarray(xs))
    # xlstm's cell takes the input projection W x_t, gate-major then head-major like W's
    y_t, state_t = cell(torch.from_numpy(xs @ W))
    y_t = y_t.detach().numpy().transpose(0, 2, 1, 3).reshape(B, T, H)  # (B, heads, T, dh)
    np.testing.assert_allclose(ys, y_t, rtol=1e-12, atol=1e-12)
    assert_tree_allclose(tuple(final), tuple(state_t.detach().numpy()), **TIGHT)


def test_lstmp_step_matches_torch_lstm_with_proj_size(rng):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.LSTM(D, H, proj_size=P, batch_first=True).double()
    with torch.no_grad():
        for value in module.parameters():
            value.uniform_(-1, 1)  # non-zero biases, both of them
    w = {name: value.detach().numpy() for name, value in module.named_parameters()}
    params = rc.LSTMPParams(
        jnp.asarray(w["weight_ih_l0"].T),
        jnp.asarray(w["weight_hh_l0"].T),
        jnp.asarray(w["bias_ih_l0"] + w["bias_hh_l0"]),
        jnp.asarray(w["weight_hr_l0"].T),
    )
    xs = rng.uniform(-1, 1, (B, T, D))
    h0, c0 = rng.uniform(-1, 1, (1, B, P)), rng.uniform(-1, 1, (1, B, H))
    final, ys = rc.unroll(
        rc.lstmp_step, params, jnp.asarray(xs), rc.LSTMState(jnp.asarray(h0[0]), jnp.asarray(c0[0]))
    )
    y_t, (h_n, c_n) = module(torch.from_numpy(xs), (torch.from_numpy(h0), torch.from_numpy(c0)))
    np.testing.assert_allclose(ys, y_t.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(final.h, h_n[0].detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(final.c, c_n[0].detach().numpy(), rtol=1e-12, atol=1e-12)


# --- gradients, unroll, lengths, reverse, remat ----------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_check_grads_float64(kind, rng):
    params = build(kind, rng)
    carry = random_carry(kind, rng, (2,))  # n > 0: the stabiliser's n = 0 branch is exact
    xs = xs_of(rng, (2, 3, D))
    lengths = jnp.asarray([3, 1], jnp.int32)

    @functools.partial(jax.jit, static_argnums=3)
    def run(params, carry, xs, fused):
        return rc.unroll(STEPS[kind], params, xs, carry, lengths=lengths, reverse=True, fused=fused)

    # Forward mode inside jit reaches the scan only (the fused layer is a custom_vjp).
    check_grads(lambda *a: run(*a, False), (params, carry, xs), order=1, modes=["fwd"])
    check_grads(lambda *a: run(*a, True), (params, carry, xs), order=1, modes=["rev"])


@pytest.mark.parametrize(
    "lengths,reverse,remat,time_major",
    [(None, False, False, False), ((5, 2), True, True, True), ((3, 0), False, False, False)],
)
@pytest.mark.parametrize("kind", KINDS)
def test_unroll_matches_reference_loop(kind, lengths, reverse, remat, time_major, rng):
    params = build(kind, rng)
    carry = random_carry(kind, rng, (B,))
    xs = xs_of(rng)
    lens = None if lengths is None else jnp.asarray(lengths, jnp.int32)
    kwargs = dict(lengths=lens, reverse=reverse, remat=remat, time_major=time_major)
    final, ys = jax.jit(lambda p, c, x: rc.unroll(STEPS[kind], p, x, c, **kwargs))(
        params, carry, jnp.swapaxes(xs, 0, 1) if time_major else xs
    )
    if time_major:
        ys = jnp.swapaxes(ys, 0, 1)
    expected = ref_unroll(kind, params, carry, xs, lengths, reverse)
    assert isinstance(final, STATES[kind])
    compare(kind, final, ys, *expected, 1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_unroll_equals_python_loop_from_the_zero_carry(kind, rng):
    params = build(kind, rng)
    xs = xs_of(rng)
    c, ys = rc.init_carry(params, (B,)), []
    for t in range(T):  # the loop unroll documents
        c, y = STEPS[kind](params, c, xs[:, t])
        ys.append(y)
    got = rc.unroll(STEPS[kind], params, xs)  # carry=None: init_carry's zeros
    assert_tree_allclose(got, (c, jnp.stack(ys, axis=1)), **TIGHT)
    spec = cells.cell_spec(params)
    # Both run hand-written units (and keep a body for a generic layer); neither is
    # parallel in time.
    assert spec.fused is not None and spec.cell is not None
    assert spec.parallel_unroll is None and rc.kernel_support(params)["xla"] is None


# --- registry views, init ---------------------------------------------------------------------


def test_init_carry_gate_step_for_and_init(key):
    for kind in KINDS:
        params = INITS[kind](key, D, H, **OPTIONS[kind])
        assert type(params) is PARAMS[kind] and rc.step_for(params) is STEPS[kind]
        assert params.input_size == D and params.hidden_size == H
        spec = cells.cell_spec(params)
        assert spec.name == kind and rc.cell_spec_by_name(kind) is spec
        carry = rc.init_carry(params, (B, 2))
        assert isinstance(carry, STATES[kind]) and not any(c.any() for c in carry)
        assert carry.h.shape == (B, 2, OUT[kind]) and carry.c.shape == (B, 2, H)
        assert all(leaf.dtype == jnp.float64 for leaf in INITS[kind](key, D, H, dtype=jnp.float64))
        with pytest.raises(
            ValueError, match=f"gate name must be one of .* for {PARAMS[kind].__name__}"
        ):
            rc.gate(params, "q")
    slstm = rc.slstm_init(key, D, H, num_heads=HEADS, forget_bias=2.0)
    assert slstm.V.shape == (HEADS, H // HEADS, 4 * H // HEADS) and slstm.num_heads == HEADS
    np.testing.assert_array_equal(
        slstm.b, np.concatenate([np.zeros(H), np.full(H, 2.0), np.zeros(2 * H)])
    )
    for k in range(HEADS):  # each head's gate blocks orthogonal
        block = np.asarray(slstm.V[k][:, : H // HEADS])
        np.testing.assert_allclose(block @ block.T, np.eye(H // HEADS), atol=1e-6)
    assert rc.slstm_init(key, D, H).V.shape == (1, H, 4 * H)  # one head by default
    lstmp = rc.lstmp_init(key, D, H, proj_size=P)
    assert lstmp.V.shape == (P, 4 * H) and lstmp.W_hr.shape == (H, P) and lstmp.proj_size == P
    np.testing.assert_array_equal(lstmp.b[H : 2 * H], np.ones(H))  # forget_bias 1
    assert rc.lstmp_init(key, D, H).W_hr.shape == (H, H)  # proj_size None: P = H
    chrono = rc.lstmp_init(key, D, H, proj_size=P, chrono_t_max=10.0)
    np.testing.assert_array_equal(chrono.b[:H], -chrono.b[H : 2 * H])
    view = rc.gate(lstmp, "o")
    np.testing.assert_array_equal(view.V, lstmp.V[:, 3 * H :])
    assert view.W.shape == (D, H) and view.V.shape == (P, H)


# --- layers, modules, training ----------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_stack_init_and_stack_unroll_by_name(kind, key, rng):
    layers = rc.stack_init(
        key, kind, D, H, num_layers=2, bidirectional=True, dtype=jnp.float64, **OPTIONS[kind]
    )
    assert isinstance(layers[1], rc.Bidirectional) and type(layers[0].forward) is PARAMS[kind]
    assert layers[1].backward.input_size == 2 * OUT[kind]  # the projection feeds the next layer
    xs, lengths = xs_of(rng), jnp.asarray([5, 3], jnp.int32)
    finals, ys = rc.stack_unroll(layers, xs, lengths=lengths)
    assert ys.shape == (B, T, 2 * OUT[kind]) and isinstance(finals[1].backward, STATES[kind])
    carry_f, ys_f = rc.unroll(STEPS[kind], layers[0].forward, xs, lengths=lengths)
    carry_b, ys_b = rc.unroll(STEPS[kind], layers[0].backward, xs, lengths=lengths, reverse=True)
    _, ys2 = rc.bidirectional_unroll(
        None, layers[1], jnp.concatenate([ys_f, ys_b], -1), lengths=lengths
    )
    assert_tree_allclose(ys, ys2, **TIGHT)
    assert_tree_allclose(finals[0], rc.Bidirectional(carry_f, carry_b), **TIGHT)


@pytest.mark.parametrize("kind", KINDS)
def test_nnx_modules_by_name_with_the_cells_options(kind, rng):
    cell = rcn.make_cell(kind, D, H, rngs=nnx.Rngs(0), **OPTIONS[kind])
    params = cell.params
    assert type(params) is PARAMS[kind] and params.hidden_size == H
    carry, x = random_carry(kind, rng, (B,), jnp.float32), xs_of(rng, (B, D), jnp.float32)
    assert_tree_allclose(cell(carry, x), STEPS[kind](params, carry, x), rtol=0, atol=0)
    assert jax.tree.map(jnp.shape, cell.initialize_carry((B,))) == jax.tree.map(jnp.shape, carry)

    layer = rcn.make_layer(kind, D, H, num_layers=2, rngs=nnx.Rngs(1), **OPTIONS[kind])
    xs = xs_of(rng, dtype=jnp.float32)
    finals, ys = layer(xs)
    assert ys.shape == (B, T, OUT[kind])
    assert_tree_allclose((finals, ys), rc.stack_unroll(layer.params, xs), rtol=0, atol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_linen_modules_by_name_with_the_cells_options(kind, rng):
    xs = xs_of(rng, dtype=jnp.float32)
    rnn = nn.RNN(rcl.Cell(cell=kind, hidden_size=H, cell_options=OPTIONS[kind]), return_carry=True)
    variables = rnn.init(jax.random.key(0), xs)  # its carry from initialize_carry's shapes
    params = variables["params"]["cell"]["cell"]
    assert type(params) is PARAMS[kind] and params.hidden_size == H
    got = rnn.apply(variables, xs)
    assert_tree_allclose(got, rc.unroll(STEPS[kind], params, xs), rtol=1e-6, atol=1e-6)

    layer = rcl.Layer(cell=kind, hidden_size=H, num_layers=2, cell_options=OPTIONS[kind])
    variables = layer.init(jax.random.key(1), xs)
    first, second = variables["params"]["layers"]
    assert type(first) is PARAMS[kind] and second.input_size == OUT[kind]
    final, ys = layer.apply(variables, xs)
    assert ys.shape == (B, T, OUT[kind]) and isinstance(final[1], STATES[kind])


@pytest.mark.parametrize("kind", KINDS)
def test_training_config_trains_a_chunk(kind):
    config = get_config("smoke")
    config.model.cell = kind  # the cell's default options: one head; P = H
    config.model.hidden_size = 4
    config.task.kwargs.T = 6
    config.batch_size = 4
    config.num_seeds = 1
    config.log_every = 2
    config.num_steps = 2
    config.eval_every = 2
    config.checkpoint_every = 2
    config.model.init = "forget_bias"
    setup = training.build(config)
    state = setup.init_state()
    assert type(state.params.layers[0]) is PARAMS[kind]
    state, metrics = setup.train_chunk(state)
    assert np.isfinite(np.asarray(metrics["loss"])).all()
    assert int(state.step[0]) == 2


# --- bad input ----------------------------------------------------------------------------


def lit(text):
    return re.escape(text)


@pytest.mark.parametrize(
    "kind,field,bad,message",
    [
        ("slstm", "V", (2, 2, 4), "params.V must have shape (num_heads, head_dim, 4 * head_dim)"),
        ("slstm", "W", (3, 12), "params.W must have shape (input_size, 16) (4 gates of"),
        ("slstm", "b", (12,), "params.b must have shape (16,), got shape (12,)"),
        ("lstmp", "V", (4, 16), "params.V must have shape (2, 16) ((proj_size, 4 * hidden_size)"),
        ("lstmp", "W_hr", (4,), "params.W_hr must have shape (hidden_size, proj_size)"),
        ("lstmp", "b", (4,), "params.b must have shape (16,), got shape (4,)"),
    ],
)
def test_bad_params_name_the_field(kind, field, bad, message, rng):
    params = build(kind, rng)
    params = params._replace(**{field: jnp.zeros(bad, jnp.float64)})
    carry, xs = random_carry(kind, rng, (B,)), xs_of(rng)
    with pytest.raises(ValueError, match=lit(message)):
        STEPS[kind](params, carry, xs[:, 0])
    with pytest.raises(ValueError, match=lit(message)):
        rc.unroll(STEPS[kind], params, xs)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_inputs_name_the_argument(kind, rng):
    params = build(kind, rng)
    carry, xs = random_carry(kind, rng, (B,)), xs_of(rng)
    step, name = STEPS[kind], PARAMS[kind].__name__
    with pytest.raises(
        ValueError, match=lit("xs must have last dimension 3 (input_size), got shape (2, 5, 7)")
    ):
        rc.unroll(step, params, xs_of(rng, (B, T, 7)))
    with pytest.raises(
        ValueError, match=lit("x must have last dimension 3 (input_size), got shape (2, 7)")
    ):
        step(params, carry, xs_of(rng, (B, 7)))
    with pytest.raises(
        TypeError, match=lit("xs must have dtype float64 (the parameters' dtype), got float32")
    ):
        rc.unroll(step, params, xs.astype(jnp.float32))
    wrong = carry._replace(c=jnp.zeros((B, H + 1), jnp.float64))
    with pytest.raises(ValueError, match=lit(f"carry.c must have shape (2, {H}) (xs's batch dims")):
        rc.unroll(step, params, xs, wrong)
    wrong = carry._replace(h=jnp.zeros((3, OUT[kind]), jnp.float64))
    what = "proj_size" if kind == "lstmp" else "hidden_size"
    with pytest.raises(
        ValueError,
        match=lit(f"carry.h must have shape (2, {OUT[kind]}) (x's batch dims + ({what},))"),
    ):
        step(params, wrong, xs[:, 0])
    with pytest.raises(TypeError, match=lit("carry.h must have dtype float64")):
        rc.unroll(step, params, xs, carry._replace(h=carry.h.astype(jnp.float32)))
    other = rc.GRUState(carry.h)
    with pytest.raises(
        TypeError, match=lit(f"carry must be {STATES[kind].__name__} (see init_carry)")
    ):
        step(params, other, xs[:, 0])
    with pytest.raises(TypeError, match=f"params must be {name}, got LSTMParams"):
        step(rc.lstm_init(jax.random.key(0), D, H), carry, xs[:, 0])
    with pytest.raises(TypeError, match=f"lstm_step does not match params {name}"):
        rc.unroll(rc.lstm_step, params, xs)
    with pytest.raises(TypeError, match=lit("params.V must have dtype float64 (params.W's dtype)")):
        step(params._replace(V=params.V.astype(jnp.float32)), carry, xs[:, 0])
    # The fused layer runs its matmuls in bf16, the rest in the params' dtype.
    bf16 = jax.eval_shape(lambda x: rc.unroll(step, params, x, compute_dtype=jnp.bfloat16), xs)
    assert all(a.dtype == jnp.float64 for a in jax.tree.leaves(bf16))
    with pytest.raises(ValueError, match=lit("lengths must lie in [0, 5]")):
        rc.unroll(step, params, xs, lengths=jnp.asarray([6, 1]))
    with pytest.raises(ValueError, match=lit("input_size must be a positive integer, got 0")):
        INITS[kind](jax.random.key(0), 0, H)
    with pytest.raises(ValueError, match=lit("hidden_size=1099511627776 is too large")):
        INITS[kind](jax.random.key(0), D, 2**40)


def test_bad_init_options_name_the_option():
    with pytest.raises(ValueError, match=lit("num_heads must divide hidden_size, got num_heads=3")):
        rc.slstm_init(jax.random.key(0), D, H, num_heads=3)
    with pytest.raises(ValueError, match=lit("num_heads must be a positive integer, got 0")):
        rc.stack_init(jax.random.key(0), "slstm", D, H, num_heads=0)
    with pytest.raises(ValueError, match=lit("proj_size must be a positive integer, got 0")):
        rcn.make_layer("lstmp", D, H, proj_size=0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"option 'proj_size' does not apply to the 'slstm' cell"):
        rcn.make_cell("slstm", D, H, proj_size=2, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match=lit("forget_bias must be a real number, got 'one'")):
        rc.slstm_init(jax.random.key(0), D, H, forget_bias="one")
