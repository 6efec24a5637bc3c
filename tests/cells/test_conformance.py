"""The cell contract, run over every registered cell and a user's own.

The list of cells is ``rnncells.cell_names()`` at collection, so a cell added to the
registry is covered without editing a list here; "user_leaky" is a cell registered by this
module (``register_cell`` of a ``standard_spec``), as a user registers one. What the
contract holds, for each cell:

- its init gives its params type, which its own checks accept, in the dtype asked for;
- its zero carry is its state type, every leaf (*batch, width) in the params' dtype;
- one step returns a carry of the same structure, shapes and dtypes and an output of
  ``output_size``; its body given ``x @ W + b`` (``CellSpec.cell``) equals the step;
- each of its gates slices to (W, V, b) of one width;
- ``unroll`` (its default path: the fused layer, the parallel unroll or the scan) equals
  the Python loop of its step in values and gradients, with lengths (carry frozen and
  outputs zero past each length, padding inert even when it is NaN) and with reverse;
- ``stack_init`` by its name and ``stack_unroll`` run it in a stack of two layers;
- a wrong input size and a wrong carry type are refused with errors that name them.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnncells as rc
from rnncells.cells._registry import _unregister
from tests.conftest import assert_tree_allclose

B, T, D, H = 3, 4, 2, 4
LENGTHS = (4, 2, 0)
USER = "user_leaky"


class LeakyParams(NamedTuple):
    W: jax.Array  # (D, H)
    V: jax.Array  # (H, H)
    b: jax.Array  # (H,)


def leaky_step(params, carry, x):
    """h_t = h_{t-1} / 2 + tanh(x W + h V + b) / 2."""
    a = jnp.tanh(x @ params.W + carry.h @ params.V + params.b.reshape((1,) * (x.ndim - 1) + (-1,)))
    h = 0.5 * carry.h + 0.5 * a
    return rc.RNNState(h), h


def leaky_init(key, input_size, hidden_size, *, dtype=jnp.float32):
    return LeakyParams(*rc.rnn_init(key, input_size, hidden_size, dtype=dtype))


@pytest.fixture
def cell(request):
    """The spec of the cell named by the test's parameter; the user's cell is registered
    for the test and removed after it."""
    name = request.param
    if name != USER:
        yield rc.cell_spec_by_name(name)
        return
    spec = rc.register_cell(
        rc.standard_spec(USER, LeakyParams, rc.RNNState, leaky_step, leaky_init, ("h",))
    )
    try:
        yield spec
    finally:
        _unregister(USER)


NAMES = [*rc.cell_names(), USER]
each_cell = pytest.mark.parametrize("cell", NAMES, indirect=True)


def _params(spec, key, dtype=jnp.float32):
    """Initial params with every leaf moved off its initial value, so that zero biases or
    peepholes do not hide a term."""
    params = spec.init(key, D, H, dtype=dtype)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
    noisy = [
        x + 0.3 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree.unflatten(tree, noisy)


def _carry(spec, params, key):
    zero = rc.init_carry(params, (B,))
    leaves, tree = jax.tree.flatten(zero)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        tree,
        [0.5 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys, strict=True)],
    )


@each_cell
def test_init_carry_step_and_gates_keep_the_contract(cell, key):
    for dtype in (jnp.float32, jnp.float64):
        params = cell.init(key, D, H, dtype=dtype)
        assert type(params) is cell.params
        assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(dtype)}
        cell.check_params(params)
        assert rc.cell_spec(params) is cell and rc.step_for(params) is cell.step
        assert cell.input_size(params) == D
    params = _params(cell, key)
    carry = rc.init_carry(params, (B,))
    assert type(carry) is cell.state
    for leaf in jax.tree.leaves(carry):
        assert leaf.shape[:-1] == (B,) and leaf.dtype == jnp.float32
        assert not np.any(np.asarray(leaf))
    x = jax.random.normal(key, (B, D), jnp.float32)
    carry = _carry(cell, params, key)
    new, y = cell.step(params, carry, x)
    assert jax.tree.structure(new) == jax.tree.structure(carry)
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(carry), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
    assert y.shape == (B, cell.output_size(params)) and y.dtype == jnp.float32
    if cell.cell is not None:
        gx = x @ params.W + params.b[None]
        assert_tree_allclose(cell.cell(params, carry, gx), (new, y), rtol=1e-6, atol=1e-6)
    for name in cell.gates:
        weights = rc.gate(params, name)
        assert weights.W.shape[0] == D
        assert weights.W.shape[-1] == weights.V.shape[-1] == weights.b.shape[-1]
    with pytest.raises(ValueError, match="gate"):
        rc.gate(params, "no_such_gate")


def _loop(step, params, carry, xs, lengths, reverse, width):
    """The reference: a Python loop of the step over time, each sequence's carry frozen and
    its outputs zero past its length; with reverse, each sequence's valid prefix is read
    backwards and its outputs written back in input order."""
    lengths = np.asarray(lengths)
    order = np.arange(T)[None, :].repeat(B, 0)  # order[i, k]: the step read k-th
    if reverse:
        order = np.where(order < lengths[:, None], lengths[:, None] - 1 - order, order)
    ys = [None] * T
    for k in range(T):
        x = xs[np.arange(B), order[:, k]]
        new, y = step(params, carry, x)
        valid = jnp.asarray(k < lengths)[:, None]
        carry = jax.tree.map(lambda n, o, v=valid: jnp.where(v, n, o), new, carry)
        ys[k] = jnp.where(valid, y, jnp.zeros((), y.dtype))
    by_k = jnp.stack(ys, axis=1)  # (B, T, width) in reading order
    inverse = np.argsort(order, axis=1)
    return carry, by_k[np.arange(B)[:, None], inverse]


@each_cell
@pytest.mark.parametrize("reverse", [False, True])
def test_unroll_equals_the_loop_of_the_step_in_values_and_gradients(cell, key, reverse):
    params = _params(cell, key)
    carry = _carry(cell, params, jax.random.fold_in(key, 2))
    xs = jax.random.normal(jax.random.fold_in(key, 3), (B, T, D), jnp.float32)
    lengths = jnp.array(LENGTHS, jnp.int32)
    steps = jnp.arange(T, dtype=jnp.int32)[None, :, None]
    padded = jnp.where(steps < lengths[:, None, None], xs, jnp.nan)
    weights = jax.random.normal(
        jax.random.fold_in(key, 4), (B, T, cell.output_size(params)), jnp.float32
    )

    def loss(run, p, c, x):
        final, ys = run(p, c, x)
        leaves = jax.tree.leaves(final)
        return jnp.sum(jnp.sin(ys) * weights) + sum(jnp.sum(jnp.cos(v)) for v in leaves)

    def unrolled(p, c, x):
        return rc.unroll(cell.step, p, x, c, lengths=lengths, reverse=reverse)

    def looped(p, c, x):
        return _loop(cell.step, p, c, x, LENGTHS, reverse, cell.output_size(params))

    got = jax.jit(jax.value_and_grad(lambda *a: loss(unrolled, *a), argnums=(0, 1, 2)))
    want = jax.value_and_grad(lambda *a: loss(looped, *a), argnums=(0, 1, 2))
    value, (g_params, g_carry, g_xs) = got(params, carry, padded)
    want_value, (w_params, w_carry, w_xs) = want(params, carry, xs)
    assert np.isfinite(float(value))  # NaN padding is inert
    np.testing.assert_allclose(float(value), float(want_value), rtol=1e-5)
    assert_tree_allclose(g_params, w_params, rtol=1e-4, atol=1e-5)
    assert_tree_allclose(g_carry, w_carry, rtol=1e-4, atol=1e-5)
    valid = np.arange(T)[None, :, None] < np.asarray(LENGTHS)[:, None, None]
    np.testing.assert_allclose(np.where(valid, g_xs, 0.0), w_xs, rtol=1e-4, atol=1e-5)
    assert not np.any(np.where(valid, 0.0, g_xs))  # the padding's own gradient is 0
    final, ys = unrolled(params, carry, padded)
    assert_tree_allclose((final, ys), looped(params, carry, xs), rtol=1e-5, atol=1e-5)


@each_cell
def test_a_stack_of_the_cell_runs_by_its_name(cell, key):
    layers = rc.stack_init(key, cell.name, D, H, num_layers=2)
    assert all(type(layer) is cell.params for layer in layers)
    xs = jax.random.normal(key, (B, T, D), jnp.float32)
    finals, ys = jax.jit(rc.stack_unroll)(layers, xs)
    assert len(finals) == 2 and ys.shape == (B, T, cell.output_size(layers[-1]))
    _, first = rc.unroll(cell.step, layers[0], xs)
    _, second = rc.unroll(cell.step, layers[1], first)
    np.testing.assert_allclose(ys, second, rtol=1e-5, atol=1e-6)


@each_cell
def test_wrong_inputs_are_refused_by_name(cell, key):
    params = cell.init(key, D, H)
    with pytest.raises(ValueError, match="xs"):
        rc.unroll(cell.step, params, jnp.ones((B, T, D + 1), jnp.float32))
    with pytest.raises(TypeError):
        rc.unroll(cell.step, params, jnp.ones((B, T, D), jnp.float32), carry=(jnp.zeros((B, H)),))
