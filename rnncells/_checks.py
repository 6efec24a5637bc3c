"""Input checks run at trace time, before XLA sees the arrays.

Each helper raises ``ValueError`` (shape, value) or ``TypeError`` (dtype) with a
message that names the argument, what was expected and what was given.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def shape_str(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def check_array(name: str, x) -> jax.Array:
    """Returns ``x`` as an array-like with ``shape`` and ``dtype``, or raises TypeError."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be an array, got {type(x).__name__}")
    return x


def check_floating(name: str, x, dtype=None) -> None:
    """Raises TypeError unless ``x`` is floating point (and of ``dtype`` when given)."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(
            f"{name} must have dtype {jnp.dtype(dtype)} (the parameters' dtype), got {x.dtype}"
        )


def check_last_dim(name: str, x, size: int, what: str) -> None:
    if x.ndim < 1 or x.shape[-1] != size:
        raise ValueError(
            f"{name} must have last dimension {size} ({what}), got shape {shape_str(x.shape)}"
        )


def check_shape(name: str, x, expected: Sequence[int]) -> None:
    if tuple(x.shape) != tuple(expected):
        raise ValueError(
            f"{name} must have shape {shape_str(expected)}, got shape {shape_str(x.shape)}"
        )


def check_min_rank(name: str, x, rank: int, layout: str) -> None:
    if x.ndim < rank:
        raise ValueError(
            f"{name} must have at least {rank} dimensions {layout}, got shape {shape_str(x.shape)}"
        )


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def is_concrete(x) -> bool:
    """True when ``x`` holds values known at trace time (not a tracer)."""
    return not isinstance(x, jax.core.Tracer)


def check_lengths(lengths, batch_shape: Sequence[int], num_steps: int) -> jax.Array:
    """Checks a ``lengths`` array: integer dtype, shape ``batch_shape``, values in [0, T]."""
    check_array("lengths", lengths)
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"lengths must have an integer dtype, got {lengths.dtype}")
    check_shape("lengths", lengths, batch_shape)
    if is_concrete(lengths):
        values = np.asarray(lengths)
        if values.size and (values.min() < 0 or values.max() > num_steps):
            raise ValueError(
                f"lengths must lie in [0, {num_steps}] (the number of time steps), "
                f"got values in [{values.min()}, {values.max()}]"
            )
    # A JAX array in JAX's integer width: a NumPy int64 array would otherwise request
    # int64 explicitly later (jnp.arange(..., dtype=lengths.dtype)) and warn without x64.
    return jnp.asarray(lengths)


def check_params_type(name: str, params, expected_types: tuple[type, ...]) -> None:
    if not isinstance(params, expected_types):
        names = " or ".join(t.__name__ for t in expected_types)
        raise TypeError(f"{name} must be {names}, got {type(params).__name__}")


def check_step_inputs(params, carry, x, state_type: type, x_name: str = "x") -> None:
    """Checks one step's ``carry`` and ``x`` against ``params`` (fused W (D, G*H), V (H, G*H))."""
    input_size, hidden_size = params.W.shape[0], params.V.shape[0]
    check_array(x_name, x)
    check_floating(x_name, x, params.W.dtype)
    check_last_dim(x_name, x, input_size, "input_size")
    if not isinstance(carry, state_type):
        raise TypeError(
            f"carry must be {state_type.__name__} (see init_carry), got {type(carry).__name__}"
        )
    expected = tuple(x.shape[:-1]) + (hidden_size,)
    for field, value in zip(carry._fields, carry, strict=True):
        check_array(f"carry.{field}", value)
        if tuple(value.shape) != expected:
            raise ValueError(
                f"carry.{field} must have shape {shape_str(expected)} ({x_name}'s batch dims + "
                f"(hidden_size,)), got shape {shape_str(value.shape)}"
            )
        check_floating(f"carry.{field}", value, params.W.dtype)
