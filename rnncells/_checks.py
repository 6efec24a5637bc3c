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


def check_batch_shape(batch_shape) -> tuple[int, ...]:
    """``batch_shape`` (an int is one dimension) as a tuple of non-negative ints."""
    if isinstance(batch_shape, int | np.integer):
        batch_shape = (batch_shape,)
    batch_shape = tuple(batch_shape)
    if any(
        isinstance(d, bool) or not isinstance(d, int | np.integer) or d < 0 for d in batch_shape
    ):
        raise ValueError(f"batch_shape must be a tuple of non-negative ints, got {batch_shape!r}")
    return tuple(int(d) for d in batch_shape)


def is_concrete(x) -> bool:
    """True when ``x`` holds values known at trace time (not a tracer)."""
    return not isinstance(x, jax.core.Tracer)


def check_lengths(lengths, batch_shape: Sequence[int], num_steps: int) -> jax.Array:
    """Checks a ``lengths`` array: integer dtype, shape ``batch_shape``, values in [0, T].

    Returns the lengths as int32: the time indices compared with them are built in their
    dtype, and a narrow one (uint8, int8) would wrap around past its range. Values known
    at trace time outside [0, T] raise; traced ones (under ``jit``) are clipped to [0, T].
    """
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
        return jnp.asarray(values.astype(np.int32))
    return jnp.clip(lengths, 0, num_steps).astype(jnp.int32)


def check_params_type(name: str, params, expected_types: tuple[type, ...]) -> None:
    if not isinstance(params, expected_types):
        names = " or ".join(t.__name__ for t in expected_types)
        raise TypeError(f"{name} must be {names}, got {type(params).__name__}")


def check_params(params, num_gates: int) -> None:
    """Checks a built-in cell's params: W (D, G*H), V (H, G*H), b (G*H,) and, for the
    reset-after GRU, b_hn (H,), all of one floating dtype (G = ``num_gates``)."""
    for field, value in zip(params._fields, params, strict=True):
        check_array(f"params.{field}", value)
    W, V = params.W, params.V
    if V.ndim != 2 or V.shape[1] != num_gates * V.shape[0]:
        raise ValueError(
            f"params.V must have shape (hidden_size, {num_gates} * hidden_size) for "
            f"{type(params).__name__}, got shape {shape_str(V.shape)}"
        )
    hidden_size = V.shape[0]
    width = num_gates * hidden_size
    if W.ndim != 2 or W.shape[1] != width:
        raise ValueError(
            f"params.W must have shape (input_size, {width}) ({num_gates} gates of "
            f"hidden_size {hidden_size}, from params.V), got shape {shape_str(W.shape)}"
        )
    expected = {"b": (width,), "b_hn": (hidden_size,)}
    for field in params._fields[2:]:
        check_shape(f"params.{field}", getattr(params, field), expected[field])
    check_floating("params.W", W)
    for field, value in zip(params._fields[1:], params[1:], strict=True):
        if value.dtype != W.dtype:
            raise TypeError(
                f"params.{field} must have dtype {W.dtype} (params.W's dtype), got {value.dtype}"
            )


def check_step_inputs(
    params, carry, x, state_type: type, num_gates: int, x_name: str = "x"
) -> None:
    """Checks ``params`` (see ``check_params``), then one step's ``carry`` and ``x``."""
    check_params(params, num_gates)
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
