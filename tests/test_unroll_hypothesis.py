"""Property test of ``unroll`` over every registered cell with a fused layer (its
hand-written unit or the generic layer of its body, found in the registry), shapes, dtypes,
lengths of every integer dtype (traced and concrete), reverse, remat and layout.

Each example checks, in one compiled function, the fused layer against the plain scan
(``fused=False``, with int32 lengths clipped to [0, T] by NumPy) in values and gradients,
then runs it again with NaN in every padding position: outputs, carries and gradients stay
identical and finite, and the inputs' gradient at the padding is 0. Shapes are small and
examples few: every example compiles once.
"""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

import rnncells as rc

CELLS = tuple(
    name
    for name in rc.cell_names()
    if rc.cell_spec_by_name(name).fused is not None or rc.cell_spec_by_name(name).cell is not None
)
DTYPES = {"float32": (jnp.float32, 2e-5), "float64": (jnp.float64, 1e-10)}
# Each example compiles once; XLA's backend optimisations cost more time than they save
# on these few-step runs (values are compared with tolerances, NaN runs with themselves).
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
LENGTH_DTYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64")


@st.composite
def cases(draw):
    batch = draw(st.integers(1, 3))
    num_steps = draw(st.integers(1, 6))
    traced = draw(st.booleans())
    length_dtype = np.dtype(draw(st.sampled_from(LENGTH_DTYPES)))
    info = np.iinfo(length_dtype)
    in_range = st.integers(0, num_steps)
    if traced:  # clipped to [0, T] under jit, the extremes of the dtype included
        extremes = [v for v in (info.min, -1, num_steps + 1, info.max) if info.min <= v <= info.max]
        in_range = in_range | st.sampled_from(extremes)
    lengths = draw(st.none() | st.lists(in_range, min_size=batch, max_size=batch))
    return dict(
        kind=draw(st.sampled_from(CELLS)),
        batch=batch,
        num_steps=num_steps,
        input_size=draw(st.integers(1, 5)),
        hidden_size=draw(st.integers(1, 5)),
        dtype=draw(st.sampled_from(sorted(DTYPES))),
        lengths=None if lengths is None else np.array(lengths, length_dtype),
        traced=traced,
        reverse=draw(st.booleans()),
        remat=draw(st.booleans()),
        time_major=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def setup(case):
    """Random params, batch-first xs and a random carry, drawn in NumPy in the shapes that
    ``jax.eval_shape`` of the cell's init and zero carry give: no small JAX computation to
    compile for every new shape. Matrices are scaled by 1/sqrt(rows), vectors by 0.5; the
    carry is drawn in [0.2, 1] (positive, as the sLSTM's normaliser and stabiliser are)."""
    dtype, _ = DTYPES[case["dtype"]]
    rng = np.random.default_rng(case["seed"])
    spec = rc.cell_spec_by_name(case["kind"])
    D, H, B = case["input_size"], case["hidden_size"], case["batch"]
    shapes = jax.eval_shape(lambda: spec.init(jax.random.key(0), D, H, dtype=dtype))

    def draw(leaf):
        scale = 1 / np.sqrt(leaf.shape[-2]) if leaf.ndim >= 2 else 0.5
        return jnp.asarray(scale * rng.normal(size=leaf.shape), dtype)

    params = jax.tree.map(draw, shapes)
    xs = jnp.asarray(rng.normal(size=(B, case["num_steps"], D)), dtype)
    carry = jax.tree.map(
        lambda leaf: jnp.asarray(rng.uniform(0.2, 1.0, size=leaf.shape), dtype),
        jax.eval_shape(lambda p: spec.zero_carry(p, (B,)), params),
    )
    return params, xs, carry


def clipped(lengths, num_steps):
    """Lengths clipped to [0, T] as Python integers (a uint64 above 2**63 cast to int64
    would wrap to a negative length)."""
    return np.array([min(max(int(v), 0), num_steps) for v in lengths], np.int64)


def make_run(case):
    """One jitted function: (value, grads) of the fused unroll and of the plain scan."""
    drawn = case["lengths"]
    reference = None if drawn is None else clipped(drawn, case["num_steps"])
    reference = None if reference is None else jnp.asarray(reference, jnp.int32)
    options = dict(reverse=case["reverse"], time_major=case["time_major"], remat=case["remat"])

    def loss(params, xs, carry, lengths, fused):
        if case["time_major"]:
            xs = jnp.swapaxes(xs, 0, 1)
        final, ys = rc.unroll(
            rc.step_for(params), params, xs, carry, lengths=lengths, fused=fused, **options
        )
        value = jnp.sum(jnp.sin(ys)) + sum(jnp.sum(jnp.cos(c)) for c in final)
        return value, (final, ys)

    grad = jax.grad(loss, argnums=(0, 1, 2), has_aux=True)

    def run(params, xs, carry, lengths):
        lengths = drawn if lengths is None else lengths  # concrete: a NumPy constant
        return grad(params, xs, carry, lengths, True), grad(params, xs, carry, reference, False)

    traced = case["traced"] and drawn is not None
    jitted = jax.jit(run, compiler_options=FAST_COMPILE)
    return lambda params, xs, carry: jitted(params, xs, carry, drawn if traced else None)


def assert_trees(a, b, tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


# The largest uint64 length, traced: unroll clips it to T (a reference that cast it to
# int64 first took it for -1, i.e. 0).
UINT64_MAX_TRACED = dict(
    kind="lstm",
    batch=1,
    num_steps=1,
    input_size=1,
    hidden_size=1,
    dtype="float32",
    lengths=np.array([2**64 - 1], np.uint64),
    traced=True,
    reverse=False,
    remat=False,
    time_major=False,
    seed=0,
)


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(cases())
@example(UINT64_MAX_TRACED)
def test_fused_unroll_matches_the_scan_and_padding_is_inert(case):
    params, xs, carry = setup(case)
    _, tol = DTYPES[case["dtype"]]
    run = make_run(case)
    fused, plain = run(params, xs, carry)
    assert_trees(fused, plain, tol)
    if case["lengths"] is None:
        return
    lengths = clipped(case["lengths"], case["num_steps"])
    padding = np.arange(case["num_steps"])[None, :] >= lengths[:, None]
    if not padding.any():
        return
    poisoned = jnp.where(jnp.asarray(padding)[..., None], jnp.nan, xs)
    fused_nan, plain_nan = run(params, poisoned, carry)
    for clean, nan in ((fused, fused_nan), (plain, plain_nan)):
        (g_params, g_xs, g_carry), out = clean
        (g_params_nan, g_xs_nan, g_carry_nan), out_nan = nan
        for x, y in zip(
            jax.tree.leaves((g_params_nan, g_xs_nan, g_carry_nan, out_nan)),
            jax.tree.leaves((g_params, g_xs, g_carry, out)),
            strict=True,
        ):
            assert np.all(np.isfinite(x))
            np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(np.asarray(g_xs_nan)[padding], 0.0)
