"""Each cell's step against the independent NumPy reference, and the step contract.

Weights are random per-gate blocks with distinct non-zero biases, fused by the test in
the documented gate order, so a wrong fused layout, gate order or equation fails here.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnncells as rc
from tests import reference
from tests.conftest import assert_tree_allclose

KINDS = ["lstm", "gru", "gru_reset_after", "rnn"]
PARAMS = {
    "lstm": rc.LSTMParams,
    "gru": rc.GRUParams,
    "gru_reset_after": rc.GRUResetAfterParams,
    "rnn": rc.RNNParams,
}
STEPS = {
    "lstm": rc.lstm_step,
    "gru": rc.gru_step,
    "gru_reset_after": rc.gru_step,
    "rnn": rc.rnn_step,
}
CELLS = {
    "lstm": rc.lstm_cell,
    "gru": rc.gru_cell,
    "gru_reset_after": rc.gru_cell,
    "rnn": rc.rnn_cell,
}
STATES = {
    "lstm": rc.LSTMState,
    "gru": rc.GRUState,
    "gru_reset_after": rc.GRUState,
    "rnn": rc.RNNState,
}
TOL = {jnp.float64: 1e-12, jnp.float32: 1e-5}
D, H, B = 3, 5, 2  # D != H, batch >= 2


def build(kind, rng, dtype=jnp.float64, input_size=D, hidden_size=H):
    """(params, gates, reference step) for random weights of cell ``kind`` in ``dtype``."""
    gates, fused, ref_step = reference.make(kind, rng, input_size, hidden_size, dtype=dtype)
    params = PARAMS[kind](*(jnp.asarray(a, dtype) for a in fused))
    return params, gates, ref_step


def random_carry(kind, rng, batch_shape, dtype=jnp.float64, hidden_size=H):
    """A non-zero carry, so a step that ignores its carry fails."""
    state = STATES[kind]
    parts = [rng.uniform(-0.8, 0.8, tuple(batch_shape) + (hidden_size,)) for _ in state._fields]
    return state(*(jnp.asarray(p, dtype) for p in parts))


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("kind", KINDS)
def test_step_matches_reference_over_several_steps(kind, dtype, rng):
    params, _, ref_step = build(kind, rng, dtype)
    carry = random_carry(kind, rng, (B,), dtype)
    ref_carry = tuple(np.asarray(c, np.float64) for c in carry)
    xs = rng.uniform(-1, 1, (5, B, D))
    for x in xs:
        carry, y = STEPS[kind](params, carry, jnp.asarray(x, dtype))
        ref_carry, ref_y = ref_step(ref_carry, np.asarray(x, dtype))
        assert isinstance(carry, STATES[kind])
        assert y.dtype == dtype and all(c.dtype == dtype for c in carry)
        tol = TOL[dtype]
        assert_tree_allclose(tuple(carry), ref_carry, rtol=tol, atol=tol)
        assert_tree_allclose(y, ref_y, rtol=tol, atol=tol)


@pytest.mark.parametrize("kind", KINDS)
def test_gate_views_are_the_seed_per_gate_weights(kind, rng):
    params, gates, _ = build(kind, rng)
    alias = {"lstm": rc.lstm_gate, "rnn": rc.rnn_gate}.get(kind, rc.gru_gate)
    for name, (W, V, b) in gates.items():
        for view in (rc.gate(params, name), alias(params, name)):
            assert isinstance(view, rc.GateWeights)
            assert view.W.shape == (D, H) and view.V.shape == (H, H) and view.b.shape == (H,)
            assert_tree_allclose(tuple(view), (W, V, b), rtol=0, atol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_initialised_params_through_gate_views_match_reference(kind, key, rng):
    # The reference is fed rc.gate's per-gate views of params made by the library's init
    # (biases replaced by random ones, the init's are mostly zero).
    init = {"lstm": rc.lstm_init, "rnn": rc.rnn_init}.get(kind, rc.gru_init)
    kwargs = {"reset_after": True} if kind == "gru_reset_after" else {}
    params = init(key, D, H, dtype=jnp.float64, **kwargs)
    params = params._replace(b=jnp.asarray(rng.uniform(-1, 1, params.b.shape), jnp.float64))
    b_hn = None
    if kind == "gru_reset_after":
        b_hn = rng.uniform(-1, 1, H)
        params = params._replace(b_hn=jnp.asarray(b_hn, jnp.float64))
    names = {"lstm": "ifgo", "rnn": "h"}.get(kind, "rzh")
    gates = {n: tuple(np.asarray(a) for a in rc.gate(params, n)) for n in names}
    ref = {"lstm": reference.lstm_step, "rnn": reference.rnn_step}.get(kind, reference.gru_step)
    ref_kwargs = {"b_hn": b_hn} if b_hn is not None else {}
    carry = random_carry(kind, rng, (B,))
    x = rng.uniform(-1, 1, (B, D))
    new_carry, y = STEPS[kind](params, carry, jnp.asarray(x, jnp.float64))
    ref_carry, ref_y = ref(gates, tuple(np.asarray(c) for c in carry), x, **ref_kwargs)
    assert_tree_allclose((tuple(new_carry), y), (ref_carry, ref_y), rtol=1e-12, atol=1e-12)


def test_lstm_carry_fields_mean_hidden_and_cell_state(rng):
    # Input gate shut, forget and output gates open: C_t = C_{t-1} and h_t = tanh(C_{t-1}).
    big = 40.0
    b = np.concatenate([np.full(H, -big), np.full(H, big), rng.uniform(-1, 1, H), np.full(H, big)])
    params = rc.LSTMParams(
        jnp.zeros((D, 4 * H), jnp.float64), jnp.zeros((H, 4 * H), jnp.float64), jnp.asarray(b)
    )
    carry = random_carry("lstm", rng, (B,))
    new, y = rc.lstm_step(params, carry, jnp.asarray(rng.uniform(-1, 1, (B, D)), jnp.float64))
    np.testing.assert_allclose(new.c, carry.c, atol=1e-12)
    np.testing.assert_allclose(new.h, np.tanh(carry.c), atol=1e-12)
    np.testing.assert_array_equal(y, new.h)


@pytest.mark.parametrize("kind", ["gru", "gru_reset_after"])
def test_gru_update_gate_writes_the_candidate(kind, rng):
    # W = V = 0: r and z are σ(b_r), σ(b_z); the candidate is tanh(b_h) (b_hn is scaled by r
    # in the reset-after form). z ≈ 1 must take the candidate, z ≈ 0 keep h_{t-1}.
    b_r, b_h = rng.uniform(-1, 1, H), rng.uniform(-1, 1, H)
    b_hn = rng.uniform(-1, 1, H)
    carry = random_carry(kind, rng, (B,))
    x = jnp.asarray(rng.uniform(-1, 1, (B, D)), jnp.float64)
    W, V = jnp.zeros((D, 3 * H), jnp.float64), jnp.zeros((H, 3 * H), jnp.float64)
    for b_z, expected in [
        (40.0, np.tanh(b_h + (reference.sigmoid(b_r) * b_hn if kind != "gru" else 0.0))),
        (-40.0, np.asarray(carry.h)),
    ]:
        b = jnp.asarray(np.concatenate([b_r, np.full(H, b_z), b_h]))
        params = rc.GRUParams(W, V, b) if kind == "gru" else rc.GRUResetAfterParams(W, V, b, b_hn)
        new, _ = rc.gru_step(params, carry, x)
        np.testing.assert_allclose(new.h, np.broadcast_to(expected, (B, H)), atol=1e-12)


def test_reset_before_and_reset_after_are_different_functions(rng):
    params, _, _ = build("gru", rng)
    after = rc.GRUResetAfterParams(*params, jnp.zeros((H,), jnp.float64))
    carry = random_carry("gru", rng, (B,))
    x = jnp.asarray(rng.uniform(-1, 1, (B, D)), jnp.float64)
    h_before = rc.gru_step(params, carry, x)[0].h
    h_after = rc.gru_step(after, carry, x)[0].h
    assert np.max(np.abs(h_before - h_after)) > 1e-3


@pytest.mark.parametrize("kind", KINDS)
def test_cell_with_precomputed_input_projection_matches_reference(kind, rng):
    params, _, ref_step = build(kind, rng)
    carry = random_carry(kind, rng, (B,))
    x = rng.uniform(-1, 1, (B, D))
    gx = jnp.asarray(x @ np.asarray(params.W) + np.asarray(params.b), jnp.float64)
    new, y = CELLS[kind](params, carry, gx)
    ref_carry, ref_y = ref_step(tuple(np.asarray(c) for c in carry), x)
    assert_tree_allclose((tuple(new), y), (ref_carry, ref_y), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_lax_scan_of_partial_step_works_as_is(kind, rng):
    params, _, ref_step = build(kind, rng)
    carry = random_carry(kind, rng, (B,))
    xs_tm = rng.uniform(-1, 1, (4, B, D))
    final, ys = jax.lax.scan(
        functools.partial(STEPS[kind], params), carry, jnp.asarray(xs_tm, jnp.float64)
    )
    ref_final, ref_ys = reference.unroll(ref_step, tuple(carry), np.swapaxes(xs_tm, 0, 1))
    assert isinstance(final, STATES[kind])
    assert_tree_allclose(tuple(final), ref_final, rtol=1e-12, atol=1e-12)
    assert_tree_allclose(ys, np.swapaxes(ref_ys, 0, 1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("batch_shape", [(), (2, 3)], ids=["unbatched", "batch2x3"])
@pytest.mark.parametrize("kind", KINDS)
def test_step_accepts_any_leading_batch_dims(kind, batch_shape, rng):
    params, _, ref_step = build(kind, rng)
    carry = random_carry(kind, rng, batch_shape)
    x = rng.uniform(-1, 1, batch_shape + (D,))
    new, y = STEPS[kind](params, carry, jnp.asarray(x, jnp.float64))
    assert y.shape == batch_shape + (H,)
    ref_carry, ref_y = ref_step(tuple(np.asarray(c) for c in carry), x)
    assert_tree_allclose((tuple(new), y), (ref_carry, ref_y), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_vmap_of_unbatched_step_equals_batched_call(kind, rng):
    params, _, _ = build(kind, rng, jnp.float32)
    carry = random_carry(kind, rng, (B,), jnp.float32)
    x = jnp.asarray(rng.uniform(-1, 1, (B, D)), jnp.float32)
    mapped = jax.vmap(functools.partial(STEPS[kind], params))(carry, x)
    batched = STEPS[kind](params, carry, x)
    assert_tree_allclose(mapped, batched, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_jit_equals_eager(kind, rng):
    params, _, _ = build(kind, rng, jnp.float32)
    carry = random_carry(kind, rng, (B,), jnp.float32)
    x = jnp.asarray(rng.uniform(-1, 1, (B, D)), jnp.float32)
    jitted = jax.jit(STEPS[kind])(params, carry, x)
    eager = STEPS[kind](params, carry, x)
    assert_tree_allclose(jitted, eager, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["lstm", "gru_reset_after"])
def test_bfloat16_step_runs_in_bfloat16_close_to_reference(kind, rng):
    params, _, _ = build(kind, rng, jnp.float64)
    params_bf16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    gates_names = {"lstm": "ifgo", "rnn": "h"}.get(kind, "rzh")
    gates = {
        n: tuple(np.asarray(a.astype(jnp.float64)) for a in rc.gate(params_bf16, n))
        for n in gates_names
    }
    carry = random_carry(kind, rng, (B,), jnp.bfloat16)
    x = jnp.asarray(rng.uniform(-1, 1, (B, D)), jnp.bfloat16)
    new, y = STEPS[kind](params_bf16, carry, x)
    assert y.dtype == jnp.bfloat16 and all(c.dtype == jnp.bfloat16 for c in new)
    ref = {"lstm": reference.lstm_step, "rnn": reference.rnn_step}.get(kind, reference.gru_step)
    kwargs = {}
    if kind == "gru_reset_after":
        kwargs["b_hn"] = np.asarray(params_bf16.b_hn.astype(jnp.float64))
    as64 = lambda a: np.asarray(a.astype(jnp.float64))
    _, ref_y = ref(gates, tuple(as64(c) for c in carry), as64(x), **kwargs)
    np.testing.assert_allclose(as64(y), ref_y, atol=5e-2)
