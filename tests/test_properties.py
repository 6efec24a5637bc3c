"""Property tests over batch shapes, T, D, H, lengths, reverse, layout and dtype.

Shapes are drawn from small sets and examples are few: every new shape compiles.
"""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import rnncells as rc
from tests import reference
from tests.cells.test_cells import KINDS, PARAMS, STATES, STEPS
from tests.conftest import assert_tree_allclose

SETTINGS = settings(max_examples=15, deadline=None, derandomize=True, database=None)
DTYPES = {"float32": (jnp.float32, np.float32, 1e-5), "float64": (jnp.float64, np.float64, 1e-12)}


@st.composite
def cases(draw, batch_shapes=((), (1,), (3,), (2, 2))):
    batch_shape = draw(st.sampled_from(batch_shapes))
    num_steps = draw(st.integers(1, 4))
    size = int(np.prod(batch_shape, dtype=int))
    lengths = draw(
        st.none()
        | st.lists(st.integers(0, num_steps), min_size=size, max_size=size).map(
            lambda v: np.array(v, np.int32).reshape(batch_shape)
        )
    )
    return dict(
        kind=draw(st.sampled_from(KINDS)),
        batch_shape=batch_shape,
        num_steps=num_steps,
        input_size=draw(st.integers(1, 3)),
        hidden_size=draw(st.integers(1, 3)),
        dtype=draw(st.sampled_from(sorted(DTYPES))),
        lengths=lengths,
        reverse=draw(st.booleans()),
        time_major=draw(st.booleans()),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def setup(case):
    """Params, reference step, batch-first NumPy xs and an initial carry for ``case``."""
    jdtype, ndtype, tol = DTYPES[case["dtype"]]
    rng = np.random.default_rng(case["seed"])
    D, H = case["input_size"], case["hidden_size"]
    _, fused, ref_step = reference.make(case["kind"], rng, D, H, dtype=ndtype)
    params = PARAMS[case["kind"]](*(jnp.asarray(a, jdtype) for a in fused))
    shape = case["batch_shape"]
    xs = rng.uniform(-1, 1, shape + (case["num_steps"], D)).astype(ndtype)
    carry = tuple(
        rng.uniform(-1, 1, shape + (H,)).astype(ndtype) for _ in STATES[case["kind"]]._fields
    )
    return params, ref_step, xs, carry, jdtype, tol


@SETTINGS
@given(cases())
def test_unroll_matches_packed_reference_loop(case):
    params, ref_step, xs, carry, jdtype, tol = setup(case)
    shape, T, H = case["batch_shape"], case["num_steps"], case["hidden_size"]
    lengths = case["lengths"]
    xs_in = np.moveaxis(xs, -2, 0) if case["time_major"] else xs
    run = jax.jit(  # lengths traced: the eager checks are tested elsewhere
        lambda params, xs, carry, lengths: rc.unroll(
            STEPS[case["kind"]],
            params,
            xs,
            carry,
            lengths=lengths,
            reverse=case["reverse"],
            time_major=case["time_major"],
        )
    )
    final, ys = run(
        params,
        jnp.asarray(xs_in, jdtype),
        STATES[case["kind"]](*(jnp.asarray(c, jdtype) for c in carry)),
        None if lengths is None else jnp.asarray(lengths),
    )
    assert ys.shape == ((T,) + shape + (H,) if case["time_major"] else shape + (T, H))
    assert ys.dtype == jdtype and all(c.dtype == jdtype and c.shape == shape + (H,) for c in final)
    ys = np.moveaxis(np.asarray(ys), 0, -2) if case["time_major"] else np.asarray(ys)
    if lengths is not None:  # exactly zero past each length
        past = np.arange(T) >= lengths[..., None]
        assert not np.any(ys[past])
    # The reference runs only over each sequence's valid prefix, one example at a time.
    ref_final, ref_ys = reference.unroll(
        ref_step, carry, xs, lengths=lengths, reverse=case["reverse"]
    )
    assert_tree_allclose((tuple(final), ys), (ref_final, ref_ys), rtol=tol, atol=tol)


@settings(max_examples=8, deadline=None, derandomize=True, database=None)
@given(cases(batch_shapes=((1,), (3,))))
def test_vmap_of_unbatched_unroll_equals_batched(case):
    params, _, xs, carry, jdtype, tol = setup(case)
    step, state = STEPS[case["kind"]], STATES[case["kind"]]
    carry = state(*(jnp.asarray(c, jdtype) for c in carry))
    xs = jnp.asarray(xs, jdtype)
    lengths = case["lengths"]
    kwargs = dict(reverse=case["reverse"])

    def one(x, c, n):  # x (T, D): a single unbatched sequence
        return rc.unroll(step, params, x, c, lengths=n, **kwargs)

    @jax.jit
    def both(xs, carry, lengths):
        if lengths is None:
            mapped = jax.vmap(lambda x, c: one(x, c, None))(xs, carry)
        else:
            mapped = jax.vmap(one)(xs, carry, lengths)
        return mapped, rc.unroll(step, params, xs, carry, lengths=lengths, **kwargs)

    mapped, batched = both(xs, carry, None if lengths is None else jnp.asarray(lengths))
    assert_tree_allclose(mapped, batched, rtol=tol, atol=tol)
