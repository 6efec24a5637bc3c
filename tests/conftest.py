"""Test-wide JAX settings: float64 available, no silent rank or dtype promotion, full fp32
matmuls."""

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)  # check_grads and the NumPy references run in fp64
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")
# fp32 comparisons mean fp32 on every backend: a GPU's default fp32 matmul is TF32, whose
# rounding differs between two correct formulations by ~1e-3 (seen on an H100).
jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture
def key(request):
    """A PRNG key that differs per test, fixed across runs."""
    seed = sum(map(ord, request.node.nodeid)) % (2**31)
    return jax.random.key(seed)


@pytest.fixture
def rng(request):
    """A NumPy generator that differs per test, fixed across runs."""
    return np.random.default_rng(sum(map(ord, request.node.nodeid)))


def tree_allclose(a, b, *, rtol=1e-6, atol=1e-6) -> bool:
    """True when two pytrees have the same structure and allclose leaves."""
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    if tree_a != tree_b:
        return False
    return all(
        np.allclose(x, y, rtol=rtol, atol=atol) for x, y in zip(leaves_a, leaves_b, strict=True)
    )


def assert_tree_allclose(a, b, *, rtol=1e-6, atol=1e-6) -> None:
    """Asserts equal structure and allclose leaves, naming the first leaf that differs."""
    leaves_a, tree_a = jax.tree.flatten_with_path(a)[0], jax.tree.structure(a)
    leaves_b, tree_b = jax.tree.flatten_with_path(b)[0], jax.tree.structure(b)
    assert tree_a == tree_b, f"tree structures differ: {tree_a} vs {tree_b}"
    for (path, x), (_, y) in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_allclose(
            np.asarray(x), np.asarray(y), rtol=rtol, atol=atol, err_msg=jax.tree_util.keystr(path)
        )


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory):
    """A persistent compilation cache for one module, for modules that call `train` many
    times: each call builds its own jitted functions, so without it every call compiles
    the same programs again (seconds each). A program that differs is still compiled."""
    from jax.experimental.compilation_cache import compilation_cache as cc

    keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    saved = {key: jax.config.values[key] for key in keys}
    cc.reset_cache()  # the cache is set up once, at the first compile: set it up again
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    yield
    for key, value in saved.items():
        jax.config.update(key, value)
    cc.reset_cache()
