"""Every cell with a fused layer, found in the registry (no list here): its hand-written
fused unit, or the generic fused layer of its body. The layer equals the scan of its step
in fp64 to 1e-10, values and gradients, with lengths, reverse, remat or not, and NaN in
the padding; compute_dtype=bfloat16 runs its matmuls in bf16."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnncells as rc
from rnncells.cells._registry import _unregister
from tests.conftest import assert_tree_allclose

FUSED = [
    n
    for n in rc.cell_names()
    if rc.cell_spec_by_name(n).fused is not None or rc.cell_spec_by_name(n).cell is not None
]
B, T, D, H = 3, 5, 2, 4


def _case(name, key):
    spec = rc.cell_spec_by_name(name)
    params = spec.init(key, D, H, dtype=jnp.float64)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
    params = jax.tree.unflatten(
        tree,
        [
            x + 0.3 * jax.random.normal(k, x.shape, x.dtype)
            for x, k in zip(leaves, keys, strict=True)
        ],
    )
    xs = jax.random.normal(jax.random.fold_in(key, 2), (B, T, D), jnp.float64)
    lengths = jnp.array([T, 2, 0], jnp.int32)
    steps = jnp.arange(T, dtype=jnp.int32)[None, :, None]
    return spec, params, jnp.where(steps < lengths[:, None, None], xs, jnp.nan), lengths


def test_every_recurrent_family_cell_has_a_fused_layer():
    sequential = {n for n in rc.cell_names() if rc.cell_spec_by_name(n).parallel_unroll is None}
    assert sequential == set(FUSED)
    assert {"cifg_lstm", "irnn", "peephole_lstm", "lstm_noaf", "lstmp", "slstm"} <= set(FUSED)


def _keeps_more(name):
    """The generic layer (its two ways of keeping its forward), the LSTMP (carry fields
    of their own widths), the sLSTM (heads) and units with an input term (the LN cells)."""
    fused = rc.cell_spec_by_name(name).fused
    return fused is None or name in ("lstmp", "slstm") or fused.inputs is not None


# Every cell under remat; without remat, the cells whose layer keeps more than the
# seed's units; the property test of unroll draws remat or not over all of them.
CASES = [(name, True) for name in FUSED] + [(name, False) for name in FUSED if _keeps_more(name)]


@pytest.mark.parametrize(
    "name,remat", CASES, ids=[f"{n}-{'remat' if r else 'saved'}" for n, r in CASES]
)
def test_fused_equals_the_scan_in_float64_with_reverse_and_nan_padding(name, remat, key):
    spec, params, xs, lengths = _case(name, key)

    def loss(p, x, fused):
        carry, ys = rc.unroll(
            spec.step, p, x, lengths=lengths, reverse=True, remat=remat, fused=fused
        )
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(jnp.cos(c)) for c in jax.tree.leaves(carry))

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)
    fused, scan = grad(params, xs, True), grad(params, xs, False)
    assert np.isfinite(float(fused[0]))
    assert_tree_allclose(fused, scan, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", FUSED)
def test_bf16_compute_runs_the_matmuls_in_bf16(name, key):
    """Lowered only (no compile): the layer's matmuls take bf16 inputs, its outputs stay
    in the parameters' dtype."""
    spec, params, xs, lengths = _case(name, key)
    params = jax.tree.map(lambda x: x.astype(jnp.float32), params)

    def run(p, x):
        return rc.unroll(spec.step, p, x, lengths=lengths, compute_dtype=jnp.bfloat16)[1]

    text = (
        jax.jit(jax.grad(lambda p, x: jnp.sum(run(p, x))))
        .lower(params, xs.astype(jnp.float32))
        .as_text()
    )
    assert re.search(r"dot_general.*bf16", text)
    assert jax.eval_shape(run, params, xs.astype(jnp.float32)).dtype == jnp.float32


INPUT_TERM = [n for n in FUSED if getattr(rc.cell_spec_by_name(n).fused, "inputs", None)]


@pytest.mark.parametrize("name", INPUT_TERM)
def test_the_input_term_runs_on_whole_sequences_outside_the_loops(name, key):
    """A unit's ``inputs`` (the LN cells' LN(x W) + b) is called on all T steps at once
    before the forward loop and its product taken on all T * B rows after the backward
    loop, never per step; the layer's gradient still equals the scan's."""
    spec, params, xs, lengths = _case(name, key)
    shapes = []

    def spy(p, xw):
        shapes.append(xw.shape)
        return spec.fused.inputs(p, xw)

    variant = type(f"Spy{spec.params.__name__}", (spec.params,), {})
    rc.register_cell(
        spec._replace(name=f"spy_{name}", params=variant, fused=spec.fused._replace(inputs=spy))
    )
    try:
        p = variant(*params)

        def loss(p, x, fused):
            # unroll 1 (the CPU default): the layer hoists the term out of the loops
            ys = rc.unroll(spec.step, p, x, lengths=lengths, fused=fused, unroll=1)[1]
            return jnp.sum(jnp.sin(ys))

        fused, scan = jax.grad(loss)(p, xs, True), jax.grad(loss)(params, xs, False)
    finally:
        _unregister(f"spy_{name}")
    width = params.W.shape[1]
    assert shapes == [(T, B, width), (T * B, width)]
    assert type(fused) is variant  # the gradient has the params' own (sub)type
    assert_tree_allclose(tuple(fused), tuple(scan), rtol=1e-10, atol=1e-10)
