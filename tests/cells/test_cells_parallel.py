"""The parallel-in-time cells, minGRU and minLSTM (Feng et al. 2024).

Each cell's sequential step against an independent NumPy implementation of the paper's
equations; ``unroll``'s parallel path (one ``jax.lax.associative_scan`` in log space)
against the sequential step (``fused=False``) and against the paper's own parallel
algorithm (cumulative sum and log-cumsum-exp); no loop in its jaxpr; lengths, reverse,
gradients (finite through padding, ``check_grads`` in float64); then the registry's
views, layers, the Flax modules, training and bad input. Shapes are tiny.
"""

import re

import flax.linen as nn
import jax
import jax.extend
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
from rnncells._engine import choice
from rnncells.cells import mingru
from tests.conftest import assert_tree_allclose

KINDS = ["mingru", "minlstm"]


@pytest.fixture(autouse=True)
def parallel_by_default(monkeypatch):
    """``unroll``'s default runs the parallel unroll here (the choice with no measured
    figures), which these tests hold to the sequential step (``fused=False``); the
    measured choice itself is tested in test_the_default_between_parallel_and_sequential."""
    monkeypatch.setattr(choice, "PARALLEL_FIGURES", ())


PARAMS = {"mingru": rc.MinGRUParams, "minlstm": rc.MinLSTMParams}
STEPS = {"mingru": rc.mingru_step, "minlstm": rc.minlstm_step}
INITS = {"mingru": rc.mingru_init, "minlstm": rc.minlstm_init}
STATES = {"mingru": rc.GRUState, "minlstm": rc.MinLSTMState}
GATES = {"mingru": ("z", "h"), "minlstm": ("f", "i", "h")}
D, H, B, T = 3, 5, 2, 6  # D != H, batch >= 2
TIGHT = dict(rtol=1e-12, atol=1e-12)


# --- NumPy references: the paper's sequential equations, and its parallel algorithm ---------


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_g(v):
    return np.where(v >= 0, v + 0.5, np_sigmoid(v))


def ref_step(kind, W, b, h, x):
    """One step of the paper's log-space cell in sequential mode (its appendix code)."""
    a = x @ W + b
    if kind == "mingru":
        k, v = np.split(a, 2, axis=-1)
        z = np_sigmoid(k)
        h = (1 - z) * h + z * np_g(v)
    else:
        k_f, k_i, k_h = np.split(a, 3, axis=-1)
        f, i = np_sigmoid(k_f), np_sigmoid(k_i)
        h = f / (f + i) * h + i / (f + i) * np_g(k_h)
    return h, h


def ref_unroll(kind, W, b, h, xs, lengths=None, reverse=False):
    """Batch-first loop of ``ref_step`` with PyTorch packed-sequence semantics."""
    xs = np.asarray(xs)
    batch, steps = xs.shape[0], xs.shape[1]
    lengths = [steps] * batch if lengths is None else list(lengths)
    finals, ys = [], np.zeros(xs.shape[:2] + (h.shape[-1],))
    for n in range(batch):
        state = h[n]
        order = range(lengths[n])
        for t in reversed(order) if reverse else order:
            state, ys[n, t] = ref_step(kind, W, b, state, xs[n, t])
        finals.append(state)
    return np.stack(finals), ys


def np_log_g(v):
    return np.where(v >= 0, np.log(np.maximum(v, 0) + 0.5), -np.logaddexp(0, -v))


def paper_parallel(kind, W, b, h0, xs):
    """The paper's parallel log-space algorithm (its appendix): log g of the initial state
    h0, then h = exp(a* + logcumsumexp(log_values - a*)) with a* = cumsum(log coeffs)."""
    a = xs @ W + b
    if kind == "mingru":
        k, v = np.split(a, 2, axis=-1)
        log_coeffs, log_in = -np.logaddexp(0, k), -np.logaddexp(0, -k)
    else:
        k_f, k_i, v = np.split(a, 3, axis=-1)
        diff = np.logaddexp(0, -k_f) - np.logaddexp(0, -k_i)
        log_coeffs, log_in = -np.logaddexp(0, diff), -np.logaddexp(0, -diff)
    log_values = np.concatenate([np_log_g(h0)[:, None], log_in + np_log_g(v)], axis=1)
    a_star = np.pad(np.cumsum(log_coeffs, axis=1), ((0, 0), (1, 0), (0, 0)))
    log_h = a_star + np.logaddexp.accumulate(log_values - a_star, axis=1)
    return np.exp(log_h)[:, 1:]


def build(kind, rng, dtype=jnp.float64, input_size=D, hidden_size=H):
    """Random params (W and distinct non-zero b) of cell ``kind`` in ``dtype``."""
    width = len(GATES[kind]) * hidden_size
    W = rng.uniform(-1, 1, (input_size, width))
    b = rng.uniform(-1, 1, (width,))
    return PARAMS[kind](jnp.asarray(W, dtype), jnp.asarray(b, dtype))


def random_carry(kind, rng, batch_shape, dtype=jnp.float64, hidden_size=H):
    """A carry of either sign: the log-space form needs no positive h_0."""
    return STATES[kind](jnp.asarray(rng.uniform(-1, 1, tuple(batch_shape) + (hidden_size,)), dtype))


def xs_of(rng, shape=(B, T, D), dtype=jnp.float64, scale=2.0):
    return jnp.asarray(rng.uniform(-scale, scale, shape), dtype)


def as_np(params):
    return np.asarray(params.W, np.float64), np.asarray(params.b, np.float64)


# --- the step against the NumPy reference ---------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("kind", KINDS)
def test_step_matches_reference_over_several_steps(kind, dtype, rng):
    params = build(kind, rng, dtype)
    carry = random_carry(kind, rng, (B,), dtype)
    ref_h = np.asarray(carry.h, np.float64)
    tol = {jnp.float64: 1e-12, jnp.float32: 2e-6}[dtype]
    for x in rng.uniform(-2, 2, (4, B, D)):
        carry, y = STEPS[kind](params, carry, jnp.asarray(x, dtype))
        ref_h, ref_y = ref_step(kind, *as_np(params), ref_h, np.asarray(x, dtype))
        assert isinstance(carry, STATES[kind]) and y.dtype == dtype
        assert_tree_allclose((carry.h, y), (ref_h, ref_y), rtol=tol, atol=tol)


@pytest.mark.parametrize("batch_shape", [(), (2, 3)], ids=["unbatched", "batch2x3"])
@pytest.mark.parametrize("kind", KINDS)
def test_step_accepts_any_leading_batch_dims_and_vmap(kind, batch_shape, rng):
    params = build(kind, rng)
    carry = random_carry(kind, rng, batch_shape)
    x = xs_of(rng, batch_shape + (D,))
    new, y = STEPS[kind](params, carry, x)
    assert y.shape == batch_shape + (H,)
    ref = ref_step(kind, *as_np(params), np.asarray(carry.h), np.asarray(x))
    assert_tree_allclose((new.h, y), ref, **TIGHT)
    if batch_shape:
        mapped = jax.vmap(jax.vmap(lambda c, x: STEPS[kind](params, c, x)))(carry, x)
        assert_tree_allclose(mapped, (new, y), **TIGHT)


def test_g_and_log_g():
    v = jnp.asarray([-30.0, -2.0, -1e-9, 0.0, 1e-9, 0.7, 40.0], jnp.float64)
    np.testing.assert_allclose(mingru.g(v), np_g(np.asarray(v)), rtol=1e-14)
    np.testing.assert_allclose(mingru.log_g(v), np.log(np_g(np.asarray(v))), rtol=1e-13)
    assert float(mingru.g(jnp.zeros((), jnp.float64))) == 0.5  # continuous: σ(0) = 0 + 1/2
    grads = jax.vmap(jax.grad(mingru.log_g))(v)
    assert np.isfinite(np.asarray(grads)).all()


# --- the parallel unroll ----------------------------------------------------------------------


CASES = [(None, False, False), ((6, 2), True, True), ((0, 3), True, False)]


@pytest.mark.parametrize("lengths,reverse,time_major", CASES)
@pytest.mark.parametrize("kind", KINDS)
def test_parallel_unroll_matches_reference_and_sequential_float64(
    kind, lengths, reverse, time_major, rng
):
    params = build(kind, rng)
    carry = random_carry(kind, rng, (B,))
    xs = xs_of(rng)
    lens = None if lengths is None else jnp.asarray(lengths, jnp.int32)

    def run(fused):
        inputs = jnp.swapaxes(xs, 0, 1) if time_major else xs
        kwargs = dict(lengths=lens, reverse=reverse, time_major=time_major, fused=fused)
        final, ys = rc.unroll(STEPS[kind], params, inputs, carry, **kwargs)
        return final, jnp.swapaxes(ys, 0, 1) if time_major else ys

    parallel, sequential = run(True), run(False)
    expected = ref_unroll(kind, *as_np(params), np.asarray(carry.h), xs, lengths, reverse)
    assert isinstance(parallel[0], STATES[kind])
    assert_tree_allclose((parallel[0].h, parallel[1]), expected, **TIGHT)
    assert_tree_allclose(parallel, sequential, **TIGHT)


@pytest.mark.parametrize("kind", KINDS)
def test_parallel_unroll_matches_sequential_float32_on_a_long_sequence(kind, rng):
    # T = 300: the paper's cumulative sums reach |A_t| ~ 10^2 here, whose cancellation
    # costs float32 digits; composing the pairs does not.
    steps = 300
    params = build(kind, rng, jnp.float32, hidden_size=4)
    carry = random_carry(kind, rng, (3,), jnp.float32, hidden_size=4)
    xs = xs_of(rng, (3, steps, D), jnp.float32)
    lengths = (steps, 77, 0)
    kwargs = dict(lengths=jnp.asarray(lengths, jnp.int32), reverse=True)
    parallel = jax.jit(lambda p, c, x: rc.unroll(STEPS[kind], p, x, c, **kwargs))
    sequential = jax.jit(lambda p, c, x: rc.unroll(STEPS[kind], p, x, c, fused=False, **kwargs))
    got = parallel(params, carry, xs)
    assert_tree_allclose(got, sequential(params, carry, xs), rtol=1e-5, atol=1e-5)
    W, b = (np.asarray(leaf, np.float64) for leaf in params)
    h0, inputs = np.asarray(carry.h, np.float64), np.asarray(xs, np.float64)
    expected = ref_unroll(kind, W, b, h0, inputs, lengths, reverse=True)
    assert_tree_allclose((got[0].h, got[1]), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_paper_parallel_algorithm_starts_from_g_of_its_initial_state(kind, rng):
    # The paper's parallel code takes log g(h_0): it equals unroll from the carry g(h_0).
    params = build(kind, rng)
    h0 = rng.uniform(-1, 1, (B, H))
    xs = xs_of(rng)
    carry = STATES[kind](mingru.g(jnp.asarray(h0)))
    _, ys = rc.unroll(STEPS[kind], params, xs, carry)
    expected = paper_parallel(kind, *as_np(params), h0, np.asarray(xs))
    np.testing.assert_allclose(ys, expected, rtol=1e-12, atol=1e-12)
    # the zero carry is h_0 = 0; the paper's zeros would be the carry g(0) = 1/2
    _, from_zero = rc.unroll(STEPS[kind], params, xs)
    _, expected = ref_unroll(kind, *as_np(params), np.zeros((B, H)), xs)
    np.testing.assert_allclose(from_zero, expected, rtol=1e-12, atol=1e-12)
    assert np.abs(np.asarray(from_zero) - np.asarray(ys)).max() > 1e-3  # the two starts differ


def _primitives(jaxpr) -> set[str]:
    """Names of every primitive in a (closed) jaxpr, inner jaxprs included."""
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            names |= _primitives(sub)
    return names


@pytest.mark.parametrize("kind", KINDS)
def test_parallel_unroll_has_no_loop_in_its_jaxpr(kind, rng):
    params = build(kind, rng)
    xs, lengths = xs_of(rng), jnp.asarray([6, 2], jnp.int32)

    def loss(params, xs, fused):
        final, ys = rc.unroll(STEPS[kind], params, xs, lengths=lengths, reverse=True, fused=fused)
        return jnp.sum(ys**2) + jnp.sum(final.h)

    loops = {"scan", "while"}
    for fn in (lambda p, x: loss(p, x, True), jax.grad(lambda p, x: loss(p, x, True))):
        names = _primitives(jax.make_jaxpr(fn)(params, xs).jaxpr)
        assert not names & loops, sorted(names)
    sequential = _primitives(jax.make_jaxpr(lambda p, x: loss(p, x, False))(params, xs).jaxpr)
    assert "scan" in sequential  # the check can see a loop


@pytest.mark.parametrize("kind", KINDS)
def test_check_grads_float64_through_the_parallel_path(kind, rng):
    params = build(kind, rng, input_size=2, hidden_size=3)
    carry = random_carry(kind, rng, (3,), hidden_size=3)
    xs = xs_of(rng, (3, 4, 2))
    lengths = jnp.asarray([4, 1, 0], jnp.int32)  # full, partial and empty sequences

    @jax.jit
    def run(params, carry, xs):
        return rc.unroll(STEPS[kind], params, xs, carry, lengths=lengths, reverse=True)

    check_grads(run, (params, carry, xs), order=1, modes=["fwd", "rev"])


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_are_finite_and_equal_the_sequential_ones_with_nan_padding_and_remat(kind, rng):
    params = build(kind, rng)
    carry = random_carry(kind, rng, (B,))
    lengths = jnp.asarray([3, 0], jnp.int32)
    xs = xs_of(rng).at[0, 3:].set(jnp.nan).at[1].set(jnp.inf)  # padding is inert

    def loss(params, carry, xs, fused):
        final, ys = rc.unroll(
            STEPS[kind], params, xs, carry, lengths=lengths, fused=fused, remat=not fused
        )  # remat recomputes the sequential steps; the parallel path has none to recompute
        return jnp.sum(jnp.sin(ys)) + jnp.sum(final.h**2)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)), static_argnums=3)
    parallel, sequential = grad(params, carry, xs, True), grad(params, carry, xs, False)
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(parallel))
    assert_tree_allclose(parallel, sequential, rtol=1e-10, atol=1e-12)
    assert not np.asarray(parallel[2][1]).any() and not np.asarray(parallel[2][0, 3:]).any()


def test_log_space_sum_has_finite_derivatives_at_log_zero():
    # Padding is the identity map, log b = -inf, and jnp.logaddexp(-inf, -inf) has NaN
    # derivatives (forward mode would carry them into the final carry's tangent; the
    # forward-mode check_grads above runs through such padding). The rule used instead is
    # itself differentiable, so second derivatives are finite too.
    inf = jnp.asarray(-jnp.inf, jnp.float64)
    for x1, x2 in [(inf, inf), (inf, jnp.asarray(0.3, jnp.float64))]:
        first = jax.grad(mingru._logaddexp, argnums=(0, 1))(x1, x2)
        second = jax.hessian(mingru._logaddexp, argnums=(0, 1))(x1, x2)
        assert np.isfinite(np.asarray(jax.tree.leaves((first, second)))).all()
    np.testing.assert_allclose(jax.grad(mingru._logaddexp)(0.2, 0.5), 1 / (1 + np.exp(0.3)))


@pytest.mark.parametrize("kind", KINDS)
def test_unroll_equals_python_loop(kind, rng):
    params = build(kind, rng)
    xs = xs_of(rng)
    carry = rc.init_carry(params, (B,))
    c, ys = carry, []
    for t in range(T):  # the loop unroll documents
        c, y = STEPS[kind](params, c, xs[:, t])
        ys.append(y)
    expected = (c, jnp.stack(ys, axis=1))
    assert_tree_allclose(rc.unroll(STEPS[kind], params, xs), expected, **TIGHT)
    assert rc.default_unroll(STEPS[kind]) == 1
    spec = cells.cell_spec(params)
    assert not spec.fused and spec.parallel_unroll is not None


# --- registry views: init_carry, gate, step_for, init ------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_init_carry_gate_step_for_and_init(kind, key):
    params = INITS[kind](key, D, H)
    assert type(params) is PARAMS[kind] and rc.step_for(params) is STEPS[kind]
    assert params.input_size == D and params.hidden_size == H
    assert params.W.shape == (D, len(GATES[kind]) * H) and not params.b.any()
    assert all(leaf.dtype == jnp.float32 for leaf in params)
    spec = cells.cell_spec(params)
    assert spec.name == kind and rc.cell_spec_by_name(kind) is spec and kind in rc.cell_names()
    carry = rc.init_carry(params, (B, 2))
    assert isinstance(carry, STATES[kind]) and carry.h.shape == (B, 2, H) and not carry.h.any()
    for k, name in enumerate(GATES[kind]):
        view = rc.gate(params, name)
        assert isinstance(view, rc.GateWeights)
        np.testing.assert_array_equal(view.W, params.W[:, k * H : (k + 1) * H])
        np.testing.assert_array_equal(view.b, params.b[k * H : (k + 1) * H])
        assert view.V.shape == (H, H) and not view.V.any()  # the gates do not see h_{t-1}
    with pytest.raises(
        ValueError, match=f"gate name must be one of .* for {PARAMS[kind].__name__}"
    ):
        rc.gate(params, "o")
    assert all(leaf.dtype == jnp.float64 for leaf in INITS[kind](key, D, H, dtype=jnp.float64))


# --- layers, modules, training -----------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_stack_init_and_stack_unroll_by_name(kind, key, rng):
    layers = rc.stack_init(key, kind, D, H, num_layers=2, bidirectional=True, dtype=jnp.float64)
    assert len(layers) == 2 and isinstance(layers[1], rc.Bidirectional)
    assert type(layers[0].forward) is PARAMS[kind] and layers[1].backward.input_size == 2 * H
    xs, lengths = xs_of(rng), jnp.asarray([6, 3], jnp.int32)
    finals, ys = rc.stack_unroll(layers, xs, lengths=lengths)
    assert ys.shape == (B, T, 2 * H) and isinstance(finals[1].backward, STATES[kind])
    carry_f, ys_f = rc.unroll(STEPS[kind], layers[0].forward, xs, lengths=lengths)
    carry_b, ys_b = rc.unroll(STEPS[kind], layers[0].backward, xs, lengths=lengths, reverse=True)
    _, ys2 = rc.bidirectional_unroll(
        None, layers[1], jnp.concatenate([ys_f, ys_b], -1), lengths=lengths
    )
    assert_tree_allclose(ys, ys2, **TIGHT)
    assert_tree_allclose(finals[0], rc.Bidirectional(carry_f, carry_b), **TIGHT)


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

    layer = rcn.make_layer(kind, D, H, num_layers=2, rngs=nnx.Rngs(1))
    xs = xs_of(rng, dtype=jnp.float32)
    assert_tree_allclose(layer(xs), rc.stack_unroll(layer.params, xs), rtol=0, atol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_linen_modules_by_name(kind, rng):
    xs = xs_of(rng, dtype=jnp.float32)
    rnn = nn.RNN(rcl.Cell(cell=kind, hidden_size=H), return_carry=True)
    variables = rnn.init(jax.random.key(0), xs)
    params = variables["params"]["cell"]["cell"]
    assert type(params) is PARAMS[kind]
    got = rnn.apply(variables, xs)  # flax's own loop of the sequential step
    assert_tree_allclose(got, rc.unroll(STEPS[kind], params, xs), rtol=1e-5, atol=1e-6)

    layer = rcl.Layer(cell=kind, hidden_size=H, num_layers=2, reverse=True)
    variables = layer.init(jax.random.key(1), xs)
    (first, second) = variables["params"]["layers"]
    assert type(first) is PARAMS[kind] and second.input_size == H
    final, ys = layer.apply(variables, xs)
    assert ys.shape == (B, T, H) and isinstance(final[0], STATES[kind])


@pytest.mark.parametrize("kind", KINDS)
def test_training_config_trains_a_chunk(kind):
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
    setup = training.build(config)
    state = setup.init_state()
    assert type(state.params.layers[0]) is PARAMS[kind]
    state, metrics = setup.train_chunk(state)
    assert np.isfinite(np.asarray(metrics["loss"])).all()
    assert int(state.step[0]) == 2


# --- bad input ----------------------------------------------------------------------------


def lit(text):
    return re.escape(text)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_inputs_name_the_argument(kind, rng):
    params = build(kind, rng)
    carry, xs = random_carry(kind, rng, (B,)), xs_of(rng)
    step, G = STEPS[kind], len(GATES[kind])
    name = PARAMS[kind].__name__
    with pytest.raises(
        ValueError, match=lit("xs must have last dimension 3 (input_size), got shape (2, 6, 7)")
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
    with pytest.raises(ValueError, match=lit("carry.h must have shape (2, 5) (xs's batch dims")):
        rc.unroll(step, params, xs, STATES[kind](jnp.zeros((3, H), jnp.float64)))
    with pytest.raises(TypeError, match=lit("carry.h must have dtype float64")):
        rc.unroll(step, params, xs, STATES[kind](jnp.zeros((B, H), jnp.float32)))
    with pytest.raises(TypeError, match=lit("carry must be " + STATES[kind].__name__)):
        step(params, rc.LSTMState(carry.h, carry.h), xs[:, 0])
    with pytest.raises(TypeError, match=f"params must be {name}, got LSTMParams"):
        step(rc.lstm_init(jax.random.key(0), D, H), carry, xs[:, 0])
    with pytest.raises(TypeError, match=f"lstm_step does not match params {name}"):
        rc.unroll(rc.lstm_step, params, xs)
    bad_w = params._replace(W=jnp.zeros((D, G * H + 1), jnp.float64))
    expected = f"params.W must have shape (input_size, {G} * hidden_size) for {name}, got shape"
    for call in (lambda: step(bad_w, carry, xs[:, 0]), lambda: rc.unroll(step, bad_w, xs)):
        with pytest.raises(ValueError, match=lit(expected)):
            call()
    with pytest.raises(
        ValueError, match=lit(f"params.b must have shape ({G * H},), got shape (4,)")
    ):
        rc.unroll(step, params._replace(b=jnp.zeros((4,), jnp.float64)), xs)
    with pytest.raises(TypeError, match=lit("params.b must have dtype float64 (params.W's dtype)")):
        rc.unroll(step, params._replace(b=params.b.astype(jnp.float32)), xs)
    with pytest.raises(ValueError, match=f"compute_dtype is only supported .* the '{kind}'"):
        rc.unroll(step, params, xs, compute_dtype=jnp.bfloat16)
    with pytest.raises(ValueError, match=lit("lengths must lie in [0, 6]")):
        rc.unroll(step, params, xs, lengths=jnp.asarray([7, 1]))
    with pytest.raises(ValueError, match=lit("input_size must be a positive integer, got 0")):
        INITS[kind](jax.random.key(0), 0, H)
    with pytest.raises(ValueError, match=lit("hidden_size=1099511627776 is too large")):
        INITS[kind](jax.random.key(0), D, 2**40)


# --- minLSTM's step where both gates saturate ---------------------------------------------------
# With both pre-activations far below zero both sigmoids underflow to 0 (fp32 and bf16 below
# about -89, fp16 below about -11), and f / (f + i) would be 0 / 0: the step takes the
# normalised gates as σ(∓d), d = log i - log f, the parallel path's identity.


def np_minlstm_stable_step(W, b, h, x):
    """The minLSTM step in float64, f' = σ(-d), i' = σ(d), d = softplus(-k_f) - softplus(-k_i)."""
    k_f, k_i, k_h = np.split(x @ W + b, 3, axis=-1)
    d = np.logaddexp(0, -k_f) - np.logaddexp(0, -k_i)
    return np_sigmoid(-d) * h + np_sigmoid(d) * np_g(k_h)


def saturated_minlstm(rng, dtype=jnp.float32):
    """minLSTM params whose f and i pre-activations are b_f = -120 and b_i = -120 + δ for any x
    (W's f and i blocks are zero), δ = 0 on the first two units; and a random carry and x."""
    W = rng.uniform(-1, 1, (D, 3 * H))
    W[:, : 2 * H] = 0.0
    delta = np.concatenate([np.zeros(2), rng.uniform(-3, 3, H - 2)])
    b = np.concatenate([np.full(H, -120.0), -120.0 + delta, rng.uniform(-1, 1, H)])
    params = rc.MinLSTMParams(jnp.asarray(W, dtype), jnp.asarray(b, dtype))
    return params, random_carry("minlstm", rng, (B,), dtype), xs_of(rng, (B, D), dtype)


def test_minlstm_step_is_finite_and_exact_when_both_gates_underflow(rng):
    params, carry, x = saturated_minlstm(rng)
    assert not np.asarray(jax.nn.sigmoid(params.b[: 2 * H])).any()  # σ underflows: f = i = 0
    new, y = rc.minlstm_step(params, carry, x)
    W, b = as_np(params)
    h0, x64 = np.asarray(carry.h, np.float64), np.asarray(x, np.float64)
    expected = np_minlstm_stable_step(W, b, h0, x64)
    assert np.isfinite(np.asarray(y)).all()
    assert_tree_allclose((new.h, y), (expected, expected), rtol=1e-5, atol=1e-6)
    # k_f = k_i on the first two units: f' = i' = 1/2
    half = 0.5 * h0[:, :2] + 0.5 * np_g((x64 @ W + b)[:, 2 * H : 2 * H + 2])
    np.testing.assert_allclose(np.asarray(y)[:, :2], half, rtol=1e-6, atol=1e-7)


def test_minlstm_step_gradient_is_finite_when_both_gates_underflow(rng):
    params, carry, x = saturated_minlstm(rng)

    def loss(params, carry, x):
        return jnp.sum(jnp.sin(rc.minlstm_step(params, carry, x)[1]))

    grads = jax.jit(jax.grad(loss))(params, carry, x)
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(grads))
    as64 = jax.tree.map(lambda leaf: leaf.astype(jnp.float64), (params, carry, x))
    expected = jax.grad(loss)(*as64)  # float64: σ(-120) ~ 8e-53 does not underflow there
    assert_tree_allclose(grads, expected, rtol=1e-4, atol=1e-5)


def test_minlstm_sequential_unroll_float16_is_finite_and_matches_the_parallel_one(rng):
    # Inputs of scale 30 put pre-activations below -11, where fp16's σ underflows to 0.
    params = build("minlstm", rng, jnp.float16)
    carry = random_carry("minlstm", rng, (B,), jnp.float16)
    xs = xs_of(rng, (B, 32, D), jnp.float16, scale=30.0)
    k = np.asarray(xs, np.float64) @ np.asarray(params.W, np.float64) + np.asarray(params.b)
    assert ((k[..., :H] < -12) & (k[..., H : 2 * H] < -12)).any()  # the case is hit
    sequential = rc.unroll(rc.minlstm_step, params, xs, carry, fused=False)
    parallel = rc.unroll(rc.minlstm_step, params, xs, carry)
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(sequential))
    assert_tree_allclose(sequential, parallel, rtol=1e-2, atol=1e-2)


def _figure(cell, parallel_ms, sequential_ms, steps=256):
    return choice.ParallelFigure("cpu", "cpu", cell, 8, steps, 128, parallel_ms, sequential_ms)


@pytest.mark.parametrize("kind", KINDS)
def test_the_default_between_parallel_and_sequential(kind, rng, monkeypatch):
    """kernel=None takes the one measured faster at the nearest shape of this backend's
    figures; "parallel" and "sequential" choose by name; "parallel" with fused=False, and
    the two names for another cell, are refused."""
    params, xs = build(kind, rng), xs_of(rng)
    loops = []
    run = choice.parallel_for
    spec = cells.cell_spec(params)
    figures = (_figure(kind, 10.0, 3.0), _figure(kind, 1.0, 3.0, steps=4096))
    monkeypatch.setattr(choice, "PARALLEL_FIGURES", figures)
    assert run(spec, 8, 300, 128, "cpu") == "sequential"  # nearest: T = 256
    assert run(spec, 8, 3000, 128, "cpu") == "parallel"  # nearest: T = 4096
    assert run(spec, 8, 300, 128, "gpu") == "parallel"  # no figure on this backend
    assert rc.default_kernel(params, 8, 300, backend="cpu") == "sequential"

    def has_loop(**kwargs):
        jaxpr = jax.make_jaxpr(lambda x: rc.unroll(STEPS[kind], params, x, **kwargs))(xs)
        loops.append("scan" in _primitives(jaxpr.jaxpr))
        return loops[-1]

    monkeypatch.setattr(choice, "PARALLEL_FIGURES", (_figure(kind, 10.0, 3.0),))
    assert has_loop() and has_loop(kernel="sequential") and has_loop(fused=False)
    assert not has_loop(kernel="parallel")
    monkeypatch.setattr(choice, "PARALLEL_FIGURES", (_figure(kind, 1.0, 3.0),))
    assert not has_loop() and has_loop(kernel="sequential")
    with pytest.raises(ValueError, match=r"kernel='parallel' runs the parallel unroll, and"):
        rc.unroll(STEPS[kind], params, xs, kernel="parallel", fused=False)
    with pytest.raises(ValueError, match=r"kernel='sequential' chooses how a parallel-in-time"):
        rc.unroll(
            rc.lstm_step,
            rc.lstm_init(jax.random.key(0), D, H, dtype=xs.dtype),
            xs,
            kernel="sequential",
        )
