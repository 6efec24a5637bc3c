"""The fused layer of the built-in cells equals the plain scan of the public step.

Reference: ``unroll`` of a wrapped built-in step, which the library treats as a user's
step and runs through ``jax.lax.scan`` + autodiff (the generic path).
"""

import re
from typing import NamedTuple

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnncells as rc
from rnncells._engine import fused as _fused
from rnncells._engine.unit import FusedCell, mm
from rnncells._math import tanh_sigmoid as sigmoid
from rnncells.cells._registry import _unregister
from tests.conftest import assert_tree_allclose

KINDS = ("lstm", "gru", "gru_ra", "rnn")
D, H = 3, 5  # D != H so a transposed weight cannot pass


def make_params(key, kind, dtype=jnp.float32, input_size=D):
    """Random params with distinct non-zero biases (the inits' zero biases hide bugs)."""
    k_init, k_noise = jax.random.split(key)
    if kind == "lstm":
        params = rc.lstm_init(k_init, input_size, H, dtype=dtype)
    elif kind == "gru":
        params = rc.gru_init(k_init, input_size, H, dtype=dtype)
    elif kind == "gru_ra":
        params = rc.gru_init(k_init, input_size, H, reset_after=True, dtype=dtype)
    else:
        params = rc.rnn_init(k_init, input_size, H, dtype=dtype)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(k_noise, len(leaves))
    leaves = [
        x + 0.5 * jax.random.normal(k, x.shape, dtype) for x, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree.unflatten(tree, leaves)


def generic(step):
    """The same step, not recognised as built-in: unroll takes the plain lax.scan path."""
    return lambda params, carry, x: step(params, carry, x)


def random_carry(key, params, batch_shape, dtype=jnp.float32):
    zero = rc.init_carry(params, batch_shape)
    keys = jax.random.split(key, len(zero))
    return type(zero)(
        *(0.5 * jax.random.normal(k, z.shape, dtype) for k, z in zip(keys, zero, strict=True))
    )


def loss_fn(step, **kwargs):
    """A scalar of outputs and final carry with distinct weights on every element."""

    def loss(params, xs, carry):
        final, ys = rc.unroll(step, params, xs, carry, **kwargs)
        total = jnp.sum(
            jnp.sin(ys) * jnp.arange(ys.size, dtype=ys.dtype).reshape(ys.shape) / ys.size
        )
        return total + sum(jnp.sum(jnp.cos(leaf)) for leaf in final), (final, ys)

    return loss


def values_and_grads(step, params, xs, carry, **kwargs):
    grad = jax.jit(jax.value_and_grad(loss_fn(step, **kwargs), argnums=(0, 1, 2), has_aux=True))
    (_, aux), grads = grad(params, xs, carry)
    return aux, grads


# Every branch of the layer (masked or not, reverse, remat) in four runs per cell.
SETTINGS = [
    dict(with_lengths=False, reverse=False, remat=False),
    dict(with_lengths=True, reverse=False, remat=False),
    dict(with_lengths=False, reverse=True, remat=True),
    dict(with_lengths=True, reverse=True, remat=True),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "-".join(k for k, v in s.items() if v))
def test_fused_equals_generic_scan(key, kind, setting):
    with_lengths, reverse, remat = setting["with_lengths"], setting["reverse"], setting["remat"]
    k_p, k_x, k_c = jax.random.split(key, 3)
    params = make_params(k_p, kind)
    xs = jax.random.normal(k_x, (3, 6, D), jnp.float32)
    carry = random_carry(k_c, params, (3,))
    lengths = jnp.array([6, 0, 4], jnp.int32) if with_lengths else None
    step = rc.step_for(params)
    kwargs = dict(lengths=lengths, reverse=reverse, remat=remat)
    fused = values_and_grads(step, params, xs, carry, **kwargs)
    plain = values_and_grads(generic(step), params, xs, carry, **kwargs)
    assert_tree_allclose(fused, plain, rtol=1e-5, atol=1e-5)


def test_layouts_time_major_unbatched_and_leading_batch_dims(key):
    k_p, k_x, k_c = jax.random.split(key, 3)
    params = make_params(k_p, "lstm")
    step = rc.step_for(params)
    cases = [
        (jax.random.normal(k_x, (7, D), jnp.float32), (), {}),  # unbatched (T, D)
        (jax.random.normal(k_x, (7, 2, 3, D), jnp.float32), (2, 3), {"time_major": True}),
    ]
    for xs, batch_shape, kwargs in cases:
        carry = random_carry(k_c, params, batch_shape)
        lengths = jnp.full(batch_shape, 5, jnp.int32)
        extra = {"lengths": lengths, "reverse": True}
        fused = values_and_grads(step, params, xs, carry, **kwargs, **extra)
        plain = values_and_grads(generic(step), params, xs, carry, **kwargs, **extra)
        assert_tree_allclose(fused, plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_check_grads_float64(key, kind):
    k_p, k_x, k_c = jax.random.split(key, 3)
    params = make_params(k_p, kind, jnp.float64)
    xs = jax.random.normal(k_x, (2, 4, D), jnp.float64)
    carry = random_carry(k_c, params, (2,), jnp.float64)
    lengths = jnp.array([4, 2], jnp.int32)
    step = rc.step_for(params)
    loss = jax.jit(lambda p, x, c: loss_fn(step, lengths=lengths, reverse=True)(p, x, c)[0])
    check_grads(loss, (params, xs, carry), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("kind", ["lstm", "gru", "gru_ra"])
def test_bfloat16_compute_close_to_float32(key, kind):
    k_p, k_x, k_c = jax.random.split(key, 3)
    params = make_params(k_p, kind)
    xs = jax.random.normal(k_x, (2, 6, D), jnp.float32)
    carry = random_carry(k_c, params, (2,))
    step = rc.step_for(params)
    low = values_and_grads(step, params, xs, carry, compute_dtype=jnp.bfloat16)
    full = values_and_grads(step, params, xs, carry)
    assert jax.tree.map(lambda x: x.dtype, low) == jax.tree.map(lambda x: x.dtype, full)
    assert_tree_allclose(low, full, rtol=5e-2, atol=5e-2)
    # ... and not equal: the matmuls did run in bfloat16 (8 mantissa bits).
    diffs = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), low, full)
    assert max(jax.tree.leaves(diffs)) > 1e-4
    loss = loss_fn(step, compute_dtype=jnp.bfloat16)
    hlo = jax.jit(jax.grad(lambda *a: loss(*a)[0], argnums=(0, 1, 2))).lower(params, xs, carry)
    assert re.search(r"dot_general.*bf16", hlo.as_text())


def test_jit_and_vmap_agree_with_batched_call(key):
    k_p, k_x, k_c = jax.random.split(key, 3)
    params = make_params(k_p, "lstm")
    xs = jax.random.normal(k_x, (4, 6, D), jnp.float32)
    carry = random_carry(k_c, params, (4,))
    lengths = jnp.array([6, 1, 3, 0], jnp.int32)
    step = rc.step_for(params)

    def one(x, h, c, n):
        final, ys = rc.unroll(step, params, x, rc.LSTMState(h, c), lengths=n, reverse=True)
        return final, ys

    batched = rc.unroll(step, params, xs, carry, lengths=lengths, reverse=True)
    mapped = jax.jit(jax.vmap(one))(xs, carry.h, carry.c, lengths)
    assert_tree_allclose(mapped, batched, rtol=1e-6, atol=1e-6)

    def loss(p, one_fn):
        final, ys = jax.vmap(one_fn, in_axes=(0, 0, 0, 0, None))(xs, carry.h, carry.c, lengths, p)
        return jnp.sum(ys**2) + jnp.sum(final.c)

    def one_p(x, h, c, n, p, s=step):
        return rc.unroll(s, p, x, rc.LSTMState(h, c), lengths=n, reverse=True)

    def one_p_plain(x, h, c, n, p):
        return rc.unroll(generic(step), p, x, rc.LSTMState(h, c), lengths=n, reverse=True)

    assert_tree_allclose(
        jax.jit(jax.grad(loss), static_argnums=1)(params, one_p),
        jax.jit(jax.grad(loss), static_argnums=1)(params, one_p_plain),
        rtol=1e-5,
        atol=1e-5,
    )


def _primitive_names(fn, *args):
    jaxpr = jax.make_jaxpr(fn)(*args)
    names = set()

    def walk(jp):
        for eqn in jp.eqns:
            names.add(eqn.primitive.name)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jaxpr.jaxpr)
    return names


@pytest.mark.parametrize("kind", KINDS)
def test_builtin_steps_take_the_fused_path(key, kind):
    params = make_params(key, kind)
    xs = jnp.ones((2, 3, D), jnp.float32)
    step = rc.step_for(params)
    fused = _primitive_names(lambda p, x: rc.unroll(step, p, x), params, xs)
    plain = _primitive_names(
        lambda p, x: rc.unroll(generic(step), p, x, rc.init_carry(p, (2,))), params, xs
    )
    assert any("custom_vjp" in name for name in fused), fused
    assert not any("custom_vjp" in name for name in plain), plain


def test_stack_and_bidirectional_gradients_equal_generic(key):
    k_p, k_x = jax.random.split(key)
    for cell, extra in (("lstm", {}), ("gru", {"reset_after": True})):
        layers = rc.stack_init(k_p, cell, D, H, num_layers=2, bidirectional=True, **extra)
        xs = jax.random.normal(k_x, (2, 5, D), jnp.float32)
        lengths = jnp.array([5, 3], jnp.int32)
        step = rc.step_for(layers[0].forward)
        carries = tuple(
            rc.Bidirectional(
                rc.init_carry(layer.forward, (2,)), rc.init_carry(layer.backward, (2,))
            )
            for layer in layers
        )

        def loss(layers, xs, step, lengths=lengths, carries=carries):
            finals, ys = rc.stack_unroll(layers, xs, carries, step=step, lengths=lengths)
            return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(leaf) for leaf in jax.tree.leaves(finals))

        grad = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)
        assert_tree_allclose(
            grad(layers, xs, None), grad(layers, xs, generic(step)), rtol=1e-5, atol=1e-5
        )


def test_fused_layer_is_cached_per_config(key):
    params = make_params(key, "gru")
    config = _fused.default_config(
        params, rc.cell_spec(params).fused, masked=False, unroll=1, remat=False, compute_dtype=None
    )
    assert _fused._layer(config) is _fused._layer(config._replace())


def test_compute_dtype_errors(key):
    params = make_params(key, "lstm")
    xs = jnp.ones((2, 3, D), jnp.float32)
    step = rc.step_for(params)
    with pytest.raises(ValueError, match="compute_dtype"):
        rc.unroll(
            generic(step), params, xs, rc.init_carry(params, (2,)), compute_dtype=jnp.bfloat16
        )
    with pytest.raises(TypeError, match="compute_dtype"):
        rc.unroll(step, params, xs, compute_dtype=jnp.int32)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("variant", ["unroll", "remat"])
def test_layer_choices_agree(key, kind, variant):
    """The layer's loop choices (plain scans at unroll > 1, recomputed gates under remat,
    against the hoisted x @ W and in-place loops at unroll 1) never change the result."""
    params = make_params(key, kind)
    xs_tm = jax.random.normal(key, (5, 2, D), jnp.float32)
    carry = random_carry(key, params, (2,))
    lengths = jnp.array([5, 3], jnp.int32)
    base = _fused.default_config(
        params, rc.cell_spec(params).fused, masked=True, unroll=1, remat=False, compute_dtype=None
    )
    changes = {"unroll": dict(unroll=3), "remat": dict(remat=True)}

    def loss(p, x, c, cfg):
        final, ys = _fused.fused_scan(cfg.cell, p, c, x, lengths, config=cfg)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(jnp.cos(leaf)) for leaf in final)

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)), static_argnums=3)
    assert_tree_allclose(
        grad(params, xs_tm, carry, base._replace(**changes[variant])),
        grad(params, xs_tm, carry, base),
        rtol=1e-5,
        atol=1e-5,
    )


def test_fused_false_takes_the_scan_path_and_supports_forward_mode(key):
    params = make_params(key, "gru")
    xs = jax.random.normal(key, (2, 4, D), jnp.float32)
    step = rc.step_for(params)

    def run(x, fused):
        return rc.unroll(step, params, x, fused=fused)[1]

    names = _primitive_names(lambda x: run(x, False), xs)
    assert not any("custom_vjp" in name for name in names), names
    tangent = jnp.ones_like(xs)
    _, jvp_out = jax.jvp(lambda x: run(x, False), (xs,), (tangent,))
    _, vjp_fn = jax.vjp(lambda x: run(x, True), xs)
    # <J t, 1> computed forward (scan path) equals <t, J^T 1> computed backward (fused path).
    (ct,) = vjp_fn(jnp.ones_like(jvp_out))
    np.testing.assert_allclose(float(jnp.sum(jvp_out)), float(jnp.sum(ct * tangent)), rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("masked", [False, True])
def test_unrolled_backward_loop_agrees(key, kind, masked):
    """unroll > 1 runs the backward as a plain scan with stacked outputs; unroll = 1 runs
    the prefetching loop that overwrites the saved activations. Both give the same
    gradients."""
    params = make_params(key, kind)
    xs_tm = jax.random.normal(key, (7, 2, D), jnp.float32)
    carry = random_carry(key, params, (2,))
    lengths = jnp.array([7, 4], jnp.int32) if masked else None
    unit = rc.cell_spec(params).fused
    base = _fused.default_config(
        params, unit, masked=masked, unroll=1, remat=False, compute_dtype=None
    )

    def loss(p, x, cfg):
        final, ys = _fused.fused_scan(cfg.cell, p, carry, x, lengths, config=cfg)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(jnp.cos(c)) for c in final)

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)
    assert_tree_allclose(
        grad(params, xs_tm, base._replace(unroll=3)),
        grad(params, xs_tm, base),
        rtol=1e-5,
        atol=1e-5,
    )


def _while_body_copies(hlo_text):
    """The copy instructions inside the while-loop bodies of a compiled HLO module."""
    bodies = set(re.findall(r"body=%([\w.\-]+)", hlo_text))
    copies, current = [], None
    for line in hlo_text.splitlines():
        header = re.match(r"^%([\w.\-]+) \(", line)
        if header:
            current = header.group(1)
        elif line.startswith("}"):
            current = None
        elif current in bodies and " copy(" in line:
            copies.append(line.strip())
    return copies


@pytest.mark.parametrize("kind", ["lstm", "gru", "gru_ra"])
@pytest.mark.parametrize("masked", [False, True])
def test_loops_overwrite_saved_arrays_in_place(key, kind, masked):
    """The forward loop writes each step's activations over its slot of x @ W, and the
    backward loop its gradients over the activations, without XLA copying a whole
    (T, B, ...) array in either loop (a copy per step made the layer 40x slower). Shapes
    are chosen so that no other array has a leading T axis of this size."""
    T, B = 11, 2
    params = make_params(key, kind)
    xs = jax.random.normal(key, (B, T, D), jnp.float32)
    lengths = jnp.array([T, 6], jnp.int32) if masked else None
    step = rc.step_for(params)

    def loss(p, x):
        return jnp.sum(rc.unroll(step, p, x, lengths=lengths, unroll=1)[1])

    text = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, xs).compile().as_text()
    assert "while" in text
    big = [line for line in _while_body_copies(text) if f"[{T},{B}," in line]
    assert not big, big


@pytest.mark.parametrize("kind", KINDS)
def test_every_builtin_cell_has_a_fused_unit_with_its_carry(key, kind):
    params = make_params(key, kind)
    assert rc.cell_spec(params).fused.state is type(rc.init_carry(params))
    with pytest.raises(TypeError, match=f"cell must be a FusedCell, got {type(params).__name__}"):
        _fused.default_config(
            params, params, masked=False, unroll=1, remat=False, compute_dtype=None
        )


# A cell the library does not have, registered with its fused unit in its spec:
# a = σ(x W + h V + b), m_t = m_{t-1} / 2 + a, h_t = a tanh(m_t). Its carry has a second
# field that is not called c, and it saves activations, so every generic path of the
# driver runs it (hoisted x @ W, in-place loops, the tie, "<field>_prev", remat).
class ToyParams(NamedTuple):
    W: jax.Array  # (D, H)
    V: jax.Array  # (H, H)
    b: jax.Array  # (H,)


class ToyState(NamedTuple):
    h: jax.Array
    m: jax.Array


def toy_step(params, carry, x):
    a = jax.nn.sigmoid(x @ params.W + carry.h @ params.V + params.b[None])
    m = 0.5 * carry.m + a
    h = a * jnp.tanh(m)
    return ToyState(h, m), h


def _toy_backward(VT, dcarry, a, s, cd):
    dh, dm = dcarry
    th = jnp.tanh(0.5 * s["m_prev"] + a)
    dm_t = dm + dh * a * (1 - th * th)
    dA = (dh * th + dm_t) * a * (1 - a)
    return (mm(dA, VT, cd, dh.dtype), 0.5 * dm_t), {"dA": dA}


def _toy_update(a, carry):
    m = 0.5 * carry[1] + a
    return a * jnp.tanh(m), m


TOY_FUSED = FusedCell(
    state=ToyState,
    activations=lambda params, h, gx, cd: sigmoid(gx + mm(h, params.V, cd, gx.dtype)),
    update=_toy_update,
    save=lambda a: {"acts": a},
    saved=("acts",),
    load=lambda s: s["acts"],
    backward=_toy_backward,
    grads=lambda dW, db, hp, outs, mm_tn: ToyParams(dW, mm_tn(hp, outs["dA"]), db),
    overwrite=(("acts", "dA"),),
    tie=1,
)


def _toy_scan(params, carry, xs_tm, lengths):
    """The reference: lax.scan of toy_step, carries frozen and outputs zero past lengths."""

    def body(carry, inp):
        t, x = inp
        new, y = toy_step(params, carry, x)
        valid = (t < lengths)[:, None]
        new = ToyState(*(jnp.where(valid, n, o) for n, o in zip(new, carry, strict=True)))
        return new, jnp.where(valid, y, 0.0)

    return jax.lax.scan(body, carry, (jnp.arange(xs_tm.shape[0], dtype=lengths.dtype), xs_tm))


@pytest.fixture
def toy_cell():
    """The toy cell registered with its fused unit, for one test."""
    spec = rc.register_cell(
        rc.standard_spec(
            "toy_fused",
            ToyParams,
            ToyState,
            toy_step,
            lambda key, d, h, *, dtype=jnp.float32: ToyParams(*rc.rnn_init(key, d, h, dtype=dtype)),
            ("a",),
            fused=TOY_FUSED,
        )
    )
    try:
        yield spec
    finally:
        _unregister("toy_fused")


@pytest.mark.parametrize("unroll", [1, 3])
@pytest.mark.parametrize("remat", [False, True])
def test_a_new_cell_is_one_spec_with_its_fused_unit(key, toy_cell, monkeypatch, unroll, remat):
    calls = []
    fused_scan = _fused.fused_scan
    monkeypatch.setattr(
        _fused, "fused_scan", lambda *a, **k: calls.append(1) or fused_scan(*a, **k)
    )
    k_w, k_v, k_b, k_x, k_h, k_m = jax.random.split(key, 6)
    params = ToyParams(
        jax.random.normal(k_w, (D, H)),
        0.5 * jax.random.normal(k_v, (H, H)),
        jax.random.normal(k_b, (H,)),
    )
    xs_tm = jax.random.normal(k_x, (6, 3, D))
    carry = ToyState(jax.random.normal(k_h, (3, H)), jax.random.normal(k_m, (3, H)))
    lengths = jnp.array([6, 0, 4], jnp.int32)

    def loss(run):
        def f(p, x, c):
            final, ys = run(p, c, x)
            w = jnp.arange(ys.size, dtype=ys.dtype).reshape(ys.shape) / ys.size
            return jnp.sum(jnp.sin(ys) * w) + sum(jnp.sum(jnp.cos(leaf)) for leaf in final)

        return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))(params, xs_tm, carry)

    kw = dict(unroll=unroll, remat=remat, time_major=True)
    for lens in (None, lengths):
        fused = loss(lambda p, c, x, n=lens: rc.unroll(toy_step, p, x, c, lengths=n, **kw))
        full = jnp.full((3,), 6, jnp.int32) if lens is None else lens
        plain = loss(lambda p, c, x, n=full: _toy_scan(p, c, x, n))
        assert_tree_allclose(fused, plain, rtol=1e-5, atol=1e-5)
    assert len(calls) == 2  # the fused layer ran, once per lengths
