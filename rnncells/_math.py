"""The nonlinearities every cell uses, in one place so their form is chosen once."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def sigmoid(x: jax.Array) -> jax.Array:
    """Logistic sigmoid σ(x) = 1 / (1 + exp(-x))."""
    return jax.nn.sigmoid(x)


def tanh_sigmoid(x: jax.Array) -> jax.Array:
    """σ(x) as 0.5 * tanh(0.5 * x) + 0.5: the same function as ``sigmoid``, and on XLA:CPU
    one cheap tanh polynomial instead of exp and a divide (bench.md, "Tuning of the fused
    layer"). The fused units and the kernel blocks use it; the steps use ``sigmoid``."""
    return 0.5 * jnp.tanh(0.5 * x) + 0.5


def tanh(x: jax.Array) -> jax.Array:
    """Hyperbolic tangent."""
    return jnp.tanh(x)


def relu(x: jax.Array) -> jax.Array:
    """Rectified linear unit max(x, 0)."""
    return jax.nn.relu(x)


LN_EPSILON = 1e-5  # inside the square root, so that LN of a zero vector (V h_0) is finite


def layer_norm(z: jax.Array, gain: jax.Array, bias: jax.Array | None = None) -> jax.Array:
    """Layer normalisation (Ba, Kiros & Hinton 2016) over the last axis.

    LN(z; γ, β) = γ ⊙ (z - μ) / sqrt(σ² + ε) + β, with μ and σ² the mean and the
    (biased) variance of z's N entries and ε = ``LN_EPSILON``.

    Args:
      z: (*batch, N).
      gain: γ, (N,).
      bias: β, (N,), or None for none.

    Returns:
      (*batch, N).
    """
    mean = jnp.mean(z, axis=-1, keepdims=True)
    centred = z - mean
    variance = jnp.mean(centred * centred, axis=-1, keepdims=True)
    out = centred * jax.lax.rsqrt(variance + jnp.asarray(LN_EPSILON, z.dtype)) * row(gain, z.ndim)
    return out if bias is None else out + row(bias, z.ndim)


def add_bias(y: jax.Array, b: jax.Array) -> jax.Array:
    """y + b for y of shape (*batch, N) and b of shape (N,), without implicit rank promotion
    (so the sum also works under ``jax_numpy_rank_promotion="raise"``)."""
    return y + row(b, y.ndim)


def row(v: jax.Array, ndim: int) -> jax.Array:
    """v (N,) reshaped to (1, ..., 1, N), of rank ``ndim``, so that it broadcasts against a
    (..., N) array of that rank without implicit rank promotion."""
    return v.reshape((1,) * (ndim - 1) + v.shape)
