"""The LSTM family (peephole, CIFG, layer-normalised LSTM and GRU, IRNN) and the registry.

Each cell against an independent NumPy implementation of its paper's equations
(``tests/reference.py``), with random non-zero weights, D != H and batch 2; then
gradients, unroll, layers, modules, training and bad input, through the registry the
generic parts share. Shapes are tiny: the whole file runs in seconds.
"""

import functools
import re
from typing import NamedTuple

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
from rnncells import _modules as common
from rnncells import cells, training
from rnncells._engine import fused as _fused
from rnncells.cells._registry import _unregister
from rnncells.training.validation import validate
from tests import reference
from tests.conftest import assert_tree_allclose

KINDS = ["peephole_lstm", "cifg_lstm", "ln_lstm", "ln_gru", "irnn"]
PARAMS = {
    "peephole_lstm": rc.PeepholeLSTMParams,
    "cifg_lstm": rc.CIFGLSTMParams,
    "ln_lstm": rc.LNLSTMParams,
    "ln_gru": rc.LNGRUParams,
    "irnn": rc.IRNNParams,
}
STEPS = {
    "peephole_lstm": rc.peephole_lstm_step,
    "cifg_lstm": rc.cifg_lstm_step,
    "ln_lstm": rc.ln_lstm_step,
    "ln_gru": rc.ln_gru_step,
    "irnn": rc.irnn_step,
}
INITS = {
    "peephole_lstm": rc.peephole_lstm_init,
    "cifg_lstm": rc.cifg_lstm_init,
    "ln_lstm": rc.ln_lstm_init,
    "ln_gru": rc.ln_gru_init,
    "irnn": rc.irnn_init,
}
STATES = {
    "peephole_lstm": rc.LSTMState,
    "cifg_lstm": rc.LSTMState,
    "ln_lstm": rc.LSTMState,
    "ln_gru": rc.GRUState,
    "irnn": rc.RNNState,
}
GATES = {
    "peephole_lstm": ("i", "f", "g", "o"),
    "cifg_lstm": ("f", "g", "o"),
    "ln_lstm": ("i", "f", "g", "o"),
    "ln_gru": ("r", "z", "h"),
    "irnn": ("h",),
}
D, H, B, T = 3, 5, 2, 4  # D != H, batch >= 2
TIGHT = dict(rtol=1e-12, atol=1e-12)


def build(kind, rng, dtype=jnp.float64, input_size=D, hidden_size=H):
    """(params, reference step) for random weights of cell ``kind`` in ``dtype``."""
    fields, ref_step = reference.make_family(kind, rng, input_size, hidden_size, dtype=dtype)
    return PARAMS[kind](*(jnp.asarray(a, dtype) for a in fields)), ref_step


def random_carry(kind, rng, batch_shape, dtype=jnp.float64, hidden_size=H):
    state = STATES[kind]
    parts = [rng.uniform(-0.8, 0.8, tuple(batch_shape) + (hidden_size,)) for _ in state._fields]
    if kind == "irnn":  # a ReLU state is non-negative
        parts = [np.abs(p) for p in parts]
    return state(*(jnp.asarray(p, dtype) for p in parts))


def xs_of(rng, shape=(B, T, D), dtype=jnp.float64):
    return jnp.asarray(rng.uniform(-1, 1, shape), dtype)


# --- the step against the NumPy reference ---------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("kind", KINDS)
def test_step_matches_reference_over_several_steps(kind, dtype, rng):
    params, ref_step = build(kind, rng, dtype)
    carry = random_carry(kind, rng, (B,), dtype)
    ref_carry = tuple(np.asarray(c, np.float64) for c in carry)
    tol = {jnp.float64: 1e-12, jnp.float32: 2e-5}[dtype]
    for x in rng.uniform(-1, 1, (3, B, D)):
        carry, y = STEPS[kind](params, carry, jnp.asarray(x, dtype))
        ref_carry, ref_y = ref_step(ref_carry, np.asarray(x, dtype))
        assert isinstance(carry, STATES[kind])
        assert y.dtype == dtype and all(c.dtype == dtype for c in carry)
        assert_tree_allclose((tuple(carry), y), (ref_carry, ref_y), rtol=tol, atol=tol)


@pytest.mark.parametrize("batch_shape", [(), (2, 3)], ids=["unbatched", "batch2x3"])
@pytest.mark.parametrize("kind", KINDS)
def test_step_accepts_any_leading_batch_dims_and_vmap(kind, batch_shape, rng):
    params, ref_step = build(kind, rng)
    carry = random_carry(kind, rng, batch_shape)
    x = xs_of(rng, batch_shape + (D,))
    new, y = STEPS[kind](params, carry, x)
    assert y.shape == batch_shape + (H,)
    ref = ref_step(tuple(np.asarray(c) for c in carry), np.asarray(x))
    assert_tree_allclose((tuple(new), y), ref, **TIGHT)
    if batch_shape:
        mapped = jax.vmap(jax.vmap(functools.partial(STEPS[kind], params)))(carry, x)
        assert_tree_allclose(mapped, (new, y), **TIGHT)


def test_peephole_lstm_with_zero_peepholes_is_the_lstm(key, rng):
    params = rc.peephole_lstm_init(key, D, H, dtype=jnp.float64)
    lstm = rc.lstm_init(key, D, H, dtype=jnp.float64)
    assert_tree_allclose(tuple(params[:3]), tuple(lstm), rtol=0, atol=0)  # lstm_init's W, V, b
    params = params._replace(b=xs_of(rng, (4 * H,)))
    lstm = lstm._replace(b=params.b)
    carry, x = random_carry("peephole_lstm", rng, (B,)), xs_of(rng, (B, D))
    got = rc.peephole_lstm_step(params, carry, x)
    assert_tree_allclose(got, rc.lstm_step(lstm, carry, x), **TIGHT)
    # The output gate sees the new C_t, not C_{t-1}: with a large p_o it opens where
    # C_t > 0 and shuts where C_t < 0. C_{t-1} is +2 and -2 in turn and the forget gate
    # nearly 1 (b_f = 5), so C_t takes both signs whatever the random draws.
    b = params.b.at[H : 2 * H].set(5.0)
    params = params._replace(b=b, p_o=jnp.full((H,), 1e3, jnp.float64))
    signs = jnp.where(jnp.arange(H) % 2 == 0, 2.0, -2.0).astype(jnp.float64)
    carry = rc.LSTMState(carry.h, jnp.broadcast_to(signs, (B, H)))
    new, h = rc.peephole_lstm_step(params, carry, x)
    c = np.asarray(new.c)
    clear = np.abs(c) > 0.05
    assert (c[clear] < 0).any() and (c[clear] > 0).any()
    np.testing.assert_allclose(h[clear], np.where(c > 0, np.tanh(c), 0.0)[clear], atol=1e-12)


def test_cifg_input_gate_is_one_minus_forget_gate(rng):
    # W = V = 0: f = σ(b_f). b_f = +40 keeps C_{t-1}; b_f = -40 writes C~ = tanh(b_g).
    b_g = rng.uniform(-1, 1, H)
    carry, x = random_carry("cifg_lstm", rng, (B,)), xs_of(rng, (B, D))
    zeros_w, zeros_v = jnp.zeros((D, 3 * H), jnp.float64), jnp.zeros((H, 3 * H), jnp.float64)
    for b_f, expected in [
        (40.0, np.asarray(carry.c)),
        (-40.0, np.tanh(b_g) + 0 * np.asarray(carry.c)),
    ]:
        b = jnp.asarray(np.concatenate([np.full(H, b_f), b_g, np.full(H, 40.0)]))
        new, h = rc.cifg_lstm_step(rc.CIFGLSTMParams(zeros_w, zeros_v, b), carry, x)
        np.testing.assert_allclose(new.c, expected, atol=1e-12)
        np.testing.assert_allclose(h, np.tanh(new.c), atol=1e-12)


def test_irnn_at_init_carries_a_nonnegative_state_unchanged(key, rng):
    params = rc.irnn_init(key, D, H, dtype=jnp.float64)
    carry = random_carry("irnn", rng, (B,))
    new, _ = rc.irnn_step(params, carry, jnp.zeros((B, D), jnp.float64))
    np.testing.assert_array_equal(new.h, carry.h)  # relu(I h + 0) = h for h >= 0


def test_ln_lstm_normalises_each_whole_block_not_each_gate(rng):
    # x's last entry is 1, so W's last row adds a constant to x @ W. The same constant on
    # all 4H columns is removed by an LN over the whole block; on the i block alone it
    # would be removed by a per-gate LN, but not by the whole-block LN used here.
    params, _ = build("ln_lstm", rng)
    carry = random_carry("ln_lstm", rng, (B,))
    x = xs_of(rng, (B, D)).at[:, -1].set(1.0)
    base = rc.ln_lstm_step(params, carry, x)

    def shifted(columns):
        return params._replace(W=params.W.at[-1, columns].add(0.7))

    assert_tree_allclose(rc.ln_lstm_step(shifted(slice(None)), carry, x), base, **TIGHT)
    moved = rc.ln_lstm_step(shifted(slice(0, H)), carry, x)
    assert np.max(np.abs(np.asarray(moved[1] - base[1]))) > 1e-3


# --- gradients, unroll, lengths, reverse, remat ----------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_check_grads_float64(kind, rng):
    params, _ = build(kind, rng, input_size=2, hidden_size=3)
    carry = random_carry(kind, rng, (2,), hidden_size=3)
    xs = xs_of(rng, (2, 3, 2))
    lengths = jnp.asarray([3, 1], jnp.int32)

    @jax.jit  # one compilation for the many evaluations check_grads makes
    def run(params, carry, xs):
        return rc.unroll(STEPS[kind], params, xs, carry, lengths=lengths, reverse=True)

    check_grads(run, (params, carry, xs), order=1, modes=["rev"])


@pytest.mark.parametrize(
    "lengths,reverse,remat,time_major",
    [(None, False, False, False), ((4, 2), True, False, True), ((3, 0), False, True, False)],
)
@pytest.mark.parametrize("kind", KINDS)
def test_unroll_matches_reference_loop(kind, lengths, reverse, remat, time_major, rng):
    params, ref_step = build(kind, rng)
    carry = random_carry(kind, rng, (B,))
    xs = xs_of(rng)
    lens = None if lengths is None else jnp.asarray(lengths, jnp.int32)
    final, ys = jax.jit(
        lambda p, c, x: rc.unroll(
            STEPS[kind], p, x, c, lengths=lens, reverse=reverse, remat=remat, time_major=time_major
        )
    )(params, carry, jnp.swapaxes(xs, 0, 1) if time_major else xs)
    if time_major:
        ys = jnp.swapaxes(ys, 0, 1)
    expected = reference.unroll(
        ref_step, tuple(np.asarray(c) for c in carry), xs, lengths=lengths, reverse=reverse
    )
    assert isinstance(final, STATES[kind])
    assert_tree_allclose((tuple(final), ys), expected, **TIGHT)


@pytest.mark.parametrize("kind", KINDS)
def test_unroll_equals_python_loop_on_the_cells_own_path(kind, rng, monkeypatch):
    """The cells with a fused unit (cifg_lstm, irnn, peephole_lstm, ln_lstm, ln_gru) run
    the fused layer, the others the scan of their step; both equal the documented loop."""
    calls = []
    fused_scan = _fused.fused_scan
    monkeypatch.setattr(
        _fused, "fused_scan", lambda *a, **k: calls.append(1) or fused_scan(*a, **k)
    )
    params, _ = build(kind, rng)
    xs = xs_of(rng)
    carry = rc.init_carry(params, (B,))
    c, ys = carry, []
    for t in range(T):  # the loop unroll documents
        c, y = STEPS[kind](params, c, xs[:, t])
        ys.append(y)
    expected = (c, jnp.stack(ys, axis=1))
    got = rc.unroll(STEPS[kind], params, xs)  # carry=None: init_carry's zeros
    assert_tree_allclose(got, expected, **TIGHT)
    assert rc.default_unroll(STEPS[kind]) == 1
    fused = cells.cell_spec(params).fused is not None
    assert fused == (kind in ("cifg_lstm", "irnn", "peephole_lstm", "ln_lstm", "ln_gru"))
    assert len(calls) == int(fused)


def test_remat_gives_same_gradients(rng):
    params, _ = build("cifg_lstm", rng)
    xs, lengths = xs_of(rng), jnp.asarray([4, 2], jnp.int32)

    def loss(params, remat):
        final, ys = rc.unroll(rc.cifg_lstm_step, params, xs, lengths=lengths, remat=remat)
        return jnp.sum(ys**2) + jnp.sum(jnp.sin(final.c))

    grad = jax.jit(jax.grad(loss), static_argnums=1)
    assert_tree_allclose(grad(params, True), grad(params, False), rtol=1e-10, atol=1e-12)


# --- registry views: init_carry, gate, step_for, init ------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_init_carry_gate_step_for_and_init(kind, key, rng):
    params = INITS[kind](key, D, H)
    assert type(params) is PARAMS[kind] and rc.step_for(params) is STEPS[kind]
    assert params.input_size == D and params.hidden_size == H
    assert all(leaf.dtype == jnp.float32 for leaf in params)
    spec = cells.cell_spec(params)
    assert spec.name == kind and rc.cell_spec_by_name(kind) is spec and kind in rc.cell_names()
    carry = rc.init_carry(params, (B, 2))
    assert isinstance(carry, STATES[kind])
    assert all(c.shape == (B, 2, H) and not c.any() for c in carry)
    for k, name in enumerate(GATES[kind]):
        view = rc.gate(params, name)
        assert isinstance(view, rc.GateWeights)
        np.testing.assert_array_equal(view.W, params.W[:, k * H : (k + 1) * H])
        np.testing.assert_array_equal(view.V, params.V[:, k * H : (k + 1) * H])
        np.testing.assert_array_equal(view.b, params.b[k * H : (k + 1) * H])
    with pytest.raises(
        ValueError, match=f"gate name must be one of .* for {PARAMS[kind].__name__}"
    ):
        rc.gate(params, "q")
    params64 = INITS[kind](key, D, H, dtype=jnp.float64)
    assert all(leaf.dtype == jnp.float64 for leaf in params64)


def test_init_values(key):
    irnn = rc.irnn_init(key, 40, 50, dtype=jnp.float64)
    np.testing.assert_array_equal(irnn.V, np.eye(50))
    assert not irnn.b.any() and 0.0008 < float(jnp.std(irnn.W)) < 0.0012  # std 0.001
    ln = rc.ln_lstm_init(key, D, H)
    assert (ln.gamma_x == 1).all() and (ln.gamma_h == 1).all() and (ln.gamma_c == 1).all()
    assert not ln.beta_c.any()
    assert_tree_allclose(tuple(ln[:3]), tuple(rc.lstm_init(key, D, H)), rtol=0, atol=0)
    assert_tree_allclose(
        tuple(rc.ln_gru_init(key, D, H, chrono_t_max=8.0)[:3]),
        tuple(rc.gru_init(key, D, H, chrono_t_max=8.0)),
        rtol=0,
        atol=0,
    )
    cifg = rc.cifg_lstm_init(key, D, H, forget_bias=2.0)
    np.testing.assert_array_equal(cifg.b, np.concatenate([np.full(H, 2.0), np.zeros(2 * H)]))
    chrono = rc.cifg_lstm_init(key, D, H, chrono_t_max=10.0)
    b_f = np.asarray(chrono.b[:H])
    assert (b_f >= 0).all() and (b_f <= np.log(9.0) + 1e-6).all()
    peep = rc.peephole_lstm_init(key, D, H, chrono_t_max=10.0)
    np.testing.assert_array_equal(peep.b[:H], -peep.b[H : 2 * H])  # chrono: b_i = -b_f


# --- layers: stack_init / stack_unroll / bidirectional -----------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_stack_init_and_stack_unroll_by_name(kind, key, rng):
    layers = rc.stack_init(key, kind, D, H, num_layers=2, bidirectional=True, dtype=jnp.float64)
    assert len(layers) == 2 and isinstance(layers[1], rc.Bidirectional)
    assert type(layers[0].forward) is PARAMS[kind]
    assert layers[0].forward.input_size == D and layers[1].backward.input_size == 2 * H
    xs, lengths = xs_of(rng), jnp.asarray([4, 3], jnp.int32)

    @jax.jit  # one compilation for the stack and its layer-by-layer equivalent
    def run(layers, xs):
        stacked = rc.stack_unroll(layers, xs, lengths=lengths)
        carry_f, ys_f = rc.unroll(STEPS[kind], layers[0].forward, xs, lengths=lengths)
        carry_b, ys_b = rc.unroll(
            STEPS[kind], layers[0].backward, xs, lengths=lengths, reverse=True
        )
        top, ys = rc.bidirectional_unroll(
            None, layers[1], jnp.concatenate([ys_f, ys_b], -1), lengths=lengths
        )
        return stacked, ((rc.Bidirectional(carry_f, carry_b), top), ys)

    (finals, ys), expected = run(layers, xs)
    assert ys.shape == (B, T, 2 * H) and isinstance(finals[1].backward, STATES[kind])
    assert_tree_allclose((finals, ys), expected, **TIGHT)


# --- Flax modules --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_nnx_modules_by_name(kind, rng):
    cell = rcn.make_cell(kind, D, H, rngs=nnx.Rngs(0))
    params = cell.params
    assert type(params) is PARAMS[kind]
    carry, x = random_carry(kind, rng, (B,), jnp.float32), xs_of(rng, (B, D), jnp.float32)
    assert_tree_allclose(cell(carry, x), STEPS[kind](params, carry, x), rtol=0, atol=0)
    grads = nnx.grad(lambda m: jnp.sum(m(carry, x)[1] ** 2))(cell)
    expected = jax.grad(lambda p: jnp.sum(STEPS[kind](p, carry, x)[1] ** 2))(params)
    got = PARAMS[kind](**nnx.to_pure_dict(grads)["weights"])
    assert_tree_allclose(got, expected, rtol=1e-6, atol=1e-7)

    layer = rcn.make_layer(kind, D, H, rngs=nnx.Rngs(1))
    assert type(layer.params[0]) is PARAMS[kind]
    xs = xs_of(rng, dtype=jnp.float32)
    run = jax.jit(lambda layers, xs: rc.stack_unroll(layers, xs))
    assert_tree_allclose(layer(xs), run(layer.params, xs), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_linen_modules_by_name(kind, rng):
    xs = xs_of(rng, dtype=jnp.float32)
    rnn = nn.RNN(rcl.Cell(cell=kind, hidden_size=H), return_carry=True)
    variables = rnn.init(jax.random.key(0), xs)
    params = variables["params"]["cell"]["cell"]
    assert type(params) is PARAMS[kind]
    got = rnn.apply(variables, xs)
    assert_tree_allclose(got, rc.unroll(STEPS[kind], params, xs), rtol=1e-6, atol=1e-6)

    layer = rcl.Layer(cell=kind, hidden_size=H, reverse=True)
    variables = jax.eval_shape(layer.init, jax.random.key(1), xs)  # shapes: nothing runs
    (first,) = variables["params"]["layers"]
    assert type(first) is PARAMS[kind] and first.input_size == D
    variables = {"params": {"layers": (INITS[kind](jax.random.key(1), D, H),)}}
    final, ys = jax.jit(layer.apply)(variables, xs)
    expected = rc.unroll(STEPS[kind], variables["params"]["layers"][0], xs, reverse=True)
    assert_tree_allclose((final[0], ys), expected, rtol=1e-6, atol=1e-6)


def test_module_options_reach_the_init_and_are_refused_where_they_do_not_apply(key):
    params = rcn.make_cell("cifg_lstm", D, H, forget_bias=3.0, rngs=nnx.Rngs(0)).params
    np.testing.assert_array_equal(params.b[:H], np.full(H, 3.0))
    with pytest.raises(
        ValueError, match=r"chrono_t_max applies to gated cells \(.*ln_gru.*\), got 5.0 for 'irnn'"
    ):
        common.cell_init(key, "irnn", D, H, common.CellOptions(chrono_t_max=5.0))
    with pytest.raises(ValueError, match="reset_after applies to the GRU only, .* for 'ln_gru'"):
        rcn.make_cell("ln_gru", D, H, reset_after=True, rngs=nnx.Rngs(0))
    with pytest.raises(
        ValueError, match=r"option 'proj_size' does not apply to the 'ln_lstm' cell"
    ):
        rcn.make_layer("ln_lstm", D, H, proj_size=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"cell must be one of \[.*'irnn'.*\], got 'gru2'"):
        nn.RNN(rcl.Cell(cell="gru2", hidden_size=H)).init(key, jnp.ones((B, T, D)))


# --- training -------------------------------------------------------------------------------


def tiny_training_config(kind):
    """The adding smoke config with ``model.cell=kind``, shrunk to one seed and 2 steps."""
    config = get_config("smoke")
    config.model.cell = kind
    config.model.hidden_size = 4
    config.task.kwargs.T = 6
    config.batch_size = 4
    config.num_seeds = 1
    config.log_every = 2
    config.num_steps = 2
    config.eval_every = 2
    config.checkpoint_every = 2
    if kind != "irnn":
        config.model.init = "chrono"
    return config


@pytest.mark.parametrize("kind", KINDS)
def test_training_config_builds_the_whole_training_step(kind):
    # Traced, not compiled (compiling one chunk per cell would cost seconds each): the
    # config, the model's cell and the jitted chunk of steps, with its gradients and
    # optimiser, all shape- and dtype-check for every cell.
    setup = training.build(tiny_training_config(kind))
    state = jax.eval_shape(setup.init_state)
    assert type(state.params.layers[0]) is PARAMS[kind]
    state, metrics = jax.eval_shape(setup.train_chunk, state)
    assert metrics["loss"].shape == (2, 1) and state.step.shape == (1,)


def test_training_config_trains_a_chunk():
    setup = training.build(tiny_training_config("ln_lstm"))
    state, metrics = setup.train_chunk(setup.init_state())
    assert np.isfinite(np.asarray(metrics["loss"])).all() and int(state.step[0]) == 2
    assert type(state.params.layers[0]) is rc.LNLSTMParams


def test_training_config_names_cells_that_lack_an_init():
    config = get_config("smoke")
    config.model.cell, config.model.init = "ln_gru", "forget_bias"
    expected = r"init='forget_bias' needs cell='lstm', .*'ln_lstm'.*got cell='ln_gru'"
    with pytest.raises(training.ConfigError, match=expected):
        validate(config)
    config.model.cell, config.model.init = "irnn", "chrono"
    expected = r"init='chrono' needs a gated cell \(.*cifg_lstm.*\), got cell='irnn'"
    with pytest.raises(training.ConfigError, match=expected):
        validate(config)
    kwargs = training.cell_init_kwargs("peephole_lstm", "forget_bias", forget_bias=0.0)
    assert kwargs == {"forget_bias": 0.0}


# --- bad input ----------------------------------------------------------------------------


def lit(text):
    return re.escape(text)


@pytest.mark.parametrize(
    "kind,field,bad,message",
    [
        ("peephole_lstm", "p_f", (4,), "params.p_f must have shape (5,), got shape (4,)"),
        ("ln_lstm", "gamma_x", (5,), "params.gamma_x must have shape (20,), got shape (5,)"),
        ("ln_lstm", "beta_c", (20,), "params.beta_c must have shape (5,), got shape (20,)"),
        ("ln_gru", "gamma_h", (10,), "params.gamma_h must have shape (15,), got shape (10,)"),
        ("cifg_lstm", "b", (20,), "params.b must have shape (15,), got shape (20,)"),
        ("irnn", "V", (5, 10), "params.V must have shape (hidden_size, 1 * hidden_size)"),
    ],
)
def test_bad_params_name_the_field(kind, field, bad, message, rng):
    params, _ = build(kind, rng)
    params = params._replace(**{field: jnp.zeros(bad, jnp.float64)})
    carry, xs = random_carry(kind, rng, (B,)), xs_of(rng)
    with pytest.raises(ValueError, match=lit(message)):
        STEPS[kind](params, carry, xs[:, 0])
    with pytest.raises(ValueError, match=lit(message)):
        rc.unroll(STEPS[kind], params, xs)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_inputs_name_the_argument(kind, rng):
    params, _ = build(kind, rng)
    carry, xs = random_carry(kind, rng, (B,)), xs_of(rng)
    step = STEPS[kind]
    with pytest.raises(
        ValueError, match=lit("xs must have last dimension 3 (input_size), got shape (2, 4, 7)")
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
    with pytest.raises(ValueError, match=r"carry\.h must have shape \(2, 5\).*got shape \(3, 5\)"):
        rc.unroll(step, params, xs, jax.tree.map(lambda c: jnp.zeros((3, H), c.dtype), carry))
    other = rc.RNNState if STATES[kind] is not rc.RNNState else rc.LSTMState
    with pytest.raises(
        TypeError, match=f"carry must be {STATES[kind].__name__} \\(see init_carry\\)"
    ):
        step(params, other(*[jnp.zeros((B, H), jnp.float64)] * len(other._fields)), xs[:, 0])
    with pytest.raises(TypeError, match=f"params must be {PARAMS[kind].__name__}, got LSTMParams"):
        step(rc.lstm_init(jax.random.key(0), D, H), carry, xs[:, 0])
    with pytest.raises(TypeError, match=f"lstm_step does not match params {PARAMS[kind].__name__}"):
        rc.unroll(rc.lstm_step, params, xs)
    if rc.kernel_support(params)["xla"] is not None:  # no fused layer
        with pytest.raises(
            ValueError,
            match=f"compute_dtype is only supported for cells with a fused layer, and the '{kind}'",
        ):
            rc.unroll(step, params, xs, compute_dtype=jnp.bfloat16)
    else:  # the fused layer runs its matmuls in bf16, its carries in the params' dtype
        bf16 = rc.unroll(step, params, xs, compute_dtype=jnp.bfloat16)
        full = rc.unroll(step, params, xs)
        assert all(a.dtype == jnp.float64 for a in jax.tree.leaves(bf16))
        diff = max(
            float(jnp.max(jnp.abs(a - b)))
            for a, b in zip(jax.tree.leaves(bf16), jax.tree.leaves(full), strict=True)
        )
        assert 0 < diff < 0.1  # the matmuls did run in bfloat16
    with pytest.raises(ValueError, match=lit("lengths must lie in [0, 4]")):
        rc.unroll(step, params, xs, lengths=jnp.asarray([5, 1]))
    with pytest.raises(ValueError, match=lit("input_size must be a positive integer, got 0")):
        INITS[kind](jax.random.key(0), 0, H)
    with pytest.raises(ValueError, match=lit("hidden_size=1099511627776 is too large")):
        INITS[kind](jax.random.key(0), D, 2**40)


# --- the registry itself ------------------------------------------------------------------


class DecayParams(NamedTuple):
    """A toy parallel-in-time cell: h_t = σ(a) ⊙ h_{t-1} + x_t @ W."""

    W: jax.Array  # (D, H)
    a: jax.Array  # (H,)


def decay_step(params, carry, x):
    decay = jax.nn.sigmoid(params.a).reshape((1,) * (x.ndim - 1) + (-1,))
    h = decay * carry.h + x @ params.W
    return rc.RNNState(h), h


def decay_parallel(params, carry, xs, lengths):
    """The same recurrence by jax.lax.associative_scan over time (xs time-major)."""
    inputs = xs @ params.W  # (T, *batch, H)
    decay = jnp.broadcast_to(jax.nn.sigmoid(params.a), inputs.shape)
    steps = jnp.arange(xs.shape[0], dtype=jnp.int32).reshape((-1,) + (1,) * (xs.ndim - 1))
    if lengths is None:
        valid = jnp.ones(inputs.shape, bool)
    else:
        valid = jnp.broadcast_to(steps < lengths.reshape((1,) + lengths.shape + (1,)), inputs.shape)
    a = jnp.where(valid, decay, 1.0)  # past a length: h_t = 1 * h_{t-1} + 0, frozen
    b = jnp.where(valid, inputs, 0.0)
    b = b.at[0].add(a[0] * carry.h)

    def combine(left, right):
        return left[0] * right[0], right[0] * left[1] + right[1]

    _, hs = jax.lax.associative_scan(combine, (a, b))
    return rc.RNNState(hs[-1]), jnp.where(valid, hs, 0.0)


def decay_init(key, input_size, hidden_size, *, dtype=jnp.float32):
    return DecayParams(
        jax.random.normal(key, (input_size, hidden_size), dtype), jnp.zeros((hidden_size,), dtype)
    )


def _decay_check(params):
    if params.a.shape != (params.W.shape[1],):
        raise ValueError(f"params.a must have shape ({params.W.shape[1]},), got {params.a.shape}")


def _decay_inputs(params, carry, x, x_name="x"):
    _decay_check(params)
    if not isinstance(carry, rc.RNNState):
        raise TypeError(f"carry must be RNNState, got {type(carry).__name__}")


@pytest.fixture
def decay_cell():
    calls = []

    def counted_parallel(*args):
        calls.append(args)
        return decay_parallel(*args)

    spec = rc.CellSpec(
        name="toy_decay",
        params=DecayParams,
        state=rc.RNNState,
        step=decay_step,
        init=decay_init,
        gates=(),
        check_params=_decay_check,
        check_inputs=_decay_inputs,
        zero_carry=lambda p, batch: rc.RNNState(jnp.zeros(batch + (p.W.shape[1],), p.W.dtype)),
        output_size=lambda p: p.W.shape[1],
        parallel_unroll=counted_parallel,
    )
    rc.register_cell(spec)
    yield spec, calls
    _unregister("toy_decay")


@pytest.mark.parametrize(
    "lengths,reverse", [(None, False), (None, True), ((4, 2), True), ((0, 3), False)]
)
def test_registered_parallel_cell_runs_its_parallel_unroll(decay_cell, lengths, reverse, rng):
    _, calls = decay_cell
    params = DecayParams(xs_of(rng, (D, H)), xs_of(rng, (H,)))
    carry, xs = rc.RNNState(xs_of(rng, (B, H))), xs_of(rng)
    lens = None if lengths is None else jnp.asarray(lengths, jnp.int32)
    got = rc.unroll(decay_step, params, xs, carry, lengths=lens, reverse=reverse)
    assert len(calls) == 1  # the parallel unroll ran
    scan = rc.unroll(decay_step, params, xs, carry, lengths=lens, reverse=reverse, fused=False)
    assert len(calls) == 1  # fused=False ran the scan of the sequential step
    assert_tree_allclose(got, scan, **TIGHT)


def test_registered_cell_works_everywhere(decay_cell, key, rng):
    decay_cell, _ = decay_cell
    assert "toy_decay" in rc.cell_names()
    layers = rc.stack_init(key, "toy_decay", D, H, num_layers=2)
    assert type(layers[1]) is DecayParams and layers[1].W.shape == (H, H)
    finals, ys = rc.stack_unroll(layers, xs_of(rng, dtype=jnp.float32))
    assert ys.shape == (B, T, H) and finals[0].h.shape == (B, H)
    assert rc.init_carry(layers[0], 3).h.shape == (3, H)
    with pytest.raises(ValueError, match="a cell named 'toy_decay' is registered already"):
        rc.register_cell(decay_cell._replace(params=rc.RNNState))
    with pytest.raises(ValueError, match="DecayParams is registered already, as the 'toy_decay'"):
        rc.register_cell(decay_cell._replace(name="other"))
    with pytest.raises(TypeError, match="spec must be a CellSpec, got dict"):
        rc.register_cell({})
    with pytest.raises(TypeError, match="spec.state must be a NamedTuple type, got <class 'dict'>"):
        rc.register_cell(decay_cell._replace(name="other", state=dict))
    with pytest.raises(TypeError, match="spec.zero_carry must be callable, got None"):
        rc.register_cell(decay_cell._replace(name="other", zero_carry=None))
