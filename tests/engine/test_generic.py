"""The generic fused layer (``rnncells._engine.generic``) on a user's own cell, registered
from outside the package (``experiments/user_peephole.py``) with its body and
``linear_v``: it equals the scan in fp64 to 1e-10, values and gradients, with lengths,
reverse, remat, stacks and NaN in the padding; it is the layer ``unroll`` runs; its
matmuls outside the body take bf16 under ``compute_dtype``; bad declarations are refused
at registration."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnncells as rc
from experiments import user_peephole
from rnncells._engine import generic
from rnncells.cells._registry import _unregister
from tests.conftest import assert_tree_allclose

B, T, D, H = 3, 6, 2, 4


@pytest.fixture(scope="module")
def spec():
    spec = user_peephole.register()
    yield spec
    _unregister(spec.name)


def _inputs(key, dtype=jnp.float64):
    params = user_peephole.init(key, D, H, dtype)
    params = params._replace(
        b=0.5 * jax.random.normal(jax.random.fold_in(key, 3), params.b.shape, dtype)
    )
    xs = jax.random.normal(jax.random.fold_in(key, 1), (B, T, D), dtype)
    lengths = jnp.array([T, 2, 0], jnp.int32)
    steps = jnp.arange(T, dtype=jnp.int32)[None, :, None]
    return params, jnp.where(steps < lengths[:, None, None], xs, jnp.nan), lengths


@pytest.mark.parametrize("remat", [False, True], ids=["saved", "remat"])
@pytest.mark.parametrize("unroll", [1, 2])
def test_a_users_cell_equals_its_scan_in_float64(spec, key, remat, unroll):
    params, xs, lengths = _inputs(key)
    carry = rc.LSTMState(
        *(0.3 * jax.random.normal(k, (B, H), jnp.float64) for k in jax.random.split(key))
    )

    def loss(p, x, c, fused):
        final, ys = rc.unroll(
            spec.step,
            p,
            x,
            c,
            lengths=lengths,
            reverse=True,
            remat=remat,
            unroll=unroll,
            fused=fused,
        )
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(jnp.cos(f)) for f in final)

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)), static_argnums=3)
    fused, scan = grad(params, xs, carry, True), grad(params, xs, carry, False)
    assert np.isfinite(float(fused[0]))
    assert_tree_allclose(fused, scan, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(np.asarray(fused[1][1])[2], 0.0)  # padding's gradient


class _ScanParams(user_peephole.UserPeepholeParams):
    """The same cell registered without its body: it runs the scan of its step."""


def test_a_stack_of_a_users_cell_equals_its_scan(spec, key):
    scan_spec = rc.register_cell(
        spec._replace(name="user_peephole_scan", params=_ScanParams, cell=None, linear_v=False)
    )
    try:
        layers = rc.stack_init(
            key, spec.name, D, H, num_layers=2, bidirectional=True, dtype=jnp.float64
        )
        as_scan = jax.tree.map(
            lambda p: _ScanParams(*p),
            layers,
            is_leaf=lambda p: isinstance(p, user_peephole.UserPeepholeParams),
        )
        _, xs, lengths = _inputs(key)

        def loss(layers, x):
            _, ys = rc.stack_unroll(layers, x, lengths=lengths)
            return jnp.sum(jnp.sin(ys))

        grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        fused, scan = grad(layers, xs), grad(as_scan, xs)
        assert_tree_allclose(jax.tree.leaves(fused), jax.tree.leaves(scan), rtol=1e-10, atol=1e-10)
        assert rc.kernel_support(as_scan[0][0])["xla"] is not None  # it ran the scan
    finally:
        _unregister(scan_spec.name)


def test_unroll_runs_the_generic_layer_and_forms_dV_after_the_loop(spec, key, monkeypatch):
    params, xs, lengths = _inputs(key, jnp.float32)
    held = []
    original = generic._hoisted_grads

    def spy(*args):
        grads = original(*args)
        held.append({name: g.shape for name, g in grads.items()})
        return grads

    monkeypatch.setattr(generic, "_hoisted_grads", spy)
    generic._layer.cache_clear()

    def loss(p):
        return jnp.sum(rc.unroll(spec.step, p, xs, lengths=lengths)[1])

    assert "custom_vjp_call" in str(jax.make_jaxpr(loss)(params))
    jax.make_jaxpr(jax.grad(loss))(params)
    generic._layer.cache_clear()
    # One call, after the loop: dV, dW and db over all steps at once.
    assert held == [{"W": params.W.shape, "b": params.b.shape, "V": params.V.shape}]
    assert rc.kernel_support(params) == {
        "xla": None,
        "pallas": "UserPeepholeParams has no Pallas kernel",
    }


def test_bf16_compute_runs_the_hoisted_matmuls_in_bf16(spec, key):
    params, xs, lengths = _inputs(key, jnp.float32)

    def run(p, x):
        return rc.unroll(spec.step, p, x, lengths=lengths, compute_dtype=jnp.bfloat16)[1]

    text = jax.jit(jax.grad(lambda p, x: jnp.sum(run(p, x)))).lower(params, xs).as_text()
    assert re.search(r"dot_general.*bf16", text)
    assert jax.eval_shape(run, params, xs).dtype == jnp.float32


def test_a_declaration_without_a_body_is_refused():
    base = rc.cell_spec_by_name("rnn")
    with pytest.raises(ValueError, match=r"spec.linear_v declares how the body .* \(cell=None\)"):
        rc.register_cell(base._replace(name="x_rnn", cell=None, linear_v=True))
    with pytest.raises(
        TypeError, match=r"spec.linear_v must be a bool or a callable linear_v\(V, h\), got 'yes'"
    ):
        rc.register_cell(base._replace(name="x_rnn", linear_v="yes"))


def test_supports_needs_a_2d_W_and_a_matching_b():
    assert generic.supports(rc.lstm_init(jax.random.key(0), 2, 3))
    assert not generic.supports(rc.lstm_init(jax.random.key(0), 2, 3)._replace(b=jnp.zeros(5)))
    assert not generic.supports(rc.lstm_init(jax.random.key(0), 2, 3)._replace(W=jnp.zeros(5)))
