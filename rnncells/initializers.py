"""Weight and bias initialisers shared by the cells.

- Input weights W: Glorot (Xavier) uniform, drawn per gate.
- Recurrent weights V: orthogonal, drawn per gate (each H x H block is orthogonal).
- Chrono initialisation (Tallec & Ollivier 2018): gate biases that give the cell
  characteristic forgetting times spread over [1, T_max].

References:
  Glorot & Bengio 2010, http://proceedings.mlr.press/v9/glorot10a.html
  Saxe, McClelland & Ganguli 2013, https://arxiv.org/abs/1312.6120
  Tallec & Ollivier 2018, https://arxiv.org/abs/1804.11188
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from rnncells import _checks

__all__ = [
    "chrono_bias",
    "glorot_uniform",
    "orthogonal",
]


def glorot_uniform(key: jax.Array, fan_in: int, fan_out: int, num_gates: int, dtype) -> jax.Array:
    """Glorot-uniform weights, one (fan_in, fan_out) block per gate, fused on the last axis.

    Returns:
      Array of shape (fan_in, num_gates * fan_out), each block ~ U[-a, a] with
      a = sqrt(6 / (fan_in + fan_out)).
    """
    limit = (6.0 / (fan_in + fan_out)) ** 0.5
    return jax.random.uniform(
        key, (fan_in, num_gates * fan_out), dtype=dtype, minval=-limit, maxval=limit
    )


def orthogonal(key: jax.Array, size: int, num_gates: int, dtype) -> jax.Array:
    """Recurrent weights: ``num_gates`` independent orthogonal (size, size) blocks, fused.

    Returns:
      Array of shape (size, num_gates * size).
    """
    # The QR behind orthogonal() has no half-precision kernels (bfloat16 fails on CPU):
    # draw in at least float32, then cast.
    work_dtype = dtype if jnp.finfo(dtype).bits >= 32 else jnp.float32
    init = jax.nn.initializers.orthogonal()
    keys = jax.random.split(key, num_gates)
    blocks = [init(k, (size, size), work_dtype) for k in keys]
    return jnp.concatenate(blocks, axis=-1).astype(dtype)


def chrono_bias(key: jax.Array, size: int, t_max: float, dtype) -> jax.Array:
    """Chrono forget-gate bias: log(U[1, t_max - 1]) per unit (Tallec & Ollivier 2018).

    Args:
      key: PRNG key.
      size: number of hidden units.
      t_max: the longest time dependency expected; must be > 2.
      dtype: dtype of the result.

    Returns:
      Array (size,) of values in [0, log(t_max - 1)].

    Raises:
      TypeError: if t_max is not a real number known at trace time (a string, a bool, a
        traced value).
      ValueError: if t_max <= 2 (U[1, t_max - 1] would be empty or a point) or is not
        finite.
    """
    t_max = float(_checks.check_number("chrono_t_max", t_max))
    if not (t_max > 2 and math.isfinite(t_max)):
        raise ValueError(
            f"chrono_t_max must be a finite number > 2 (bias ~ log U[1, t_max - 1]), got {t_max!r}"
        )
    u = jax.random.uniform(key, (size,), dtype=dtype, minval=1.0, maxval=t_max - 1.0)
    return jnp.log(u)
