"""Input checks run at trace time, before XLA sees the arrays.

Each helper raises ``ValueError`` (shape, value) or ``TypeError`` (dtype) with a
message that names the argument, what was expected and what was given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

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


def check_bool(name: str, value) -> bool:
    """Returns ``value`` as a Python bool; TypeError unless it is a bool or ``np.bool_``.

    A flag is never taken by truthiness: ``"False"``, ``"no"``, 0, 1 and None raise
    (``bool("False")`` is True).
    """
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be a bool (True or False), got {value!r}")
    return bool(value)


def check_number(name: str, value, *, concrete: bool = True):
    """Returns ``value`` if it is a real number, else raises TypeError naming ``name``.

    Accepted: Python and NumPy ints and floats (not bools) and, unless ``concrete``, a
    0-d integer or floating array, traced or not (e.g. a value vmapped over a sweep).
    With ``concrete`` a traced value raises too: the caller needs its value in Python.
    """
    if isinstance(value, bool | np.bool_ | str) or value is None:
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if isinstance(value, int | float | np.integer | np.floating):
        return value
    if isinstance(value, jax.core.Tracer) and concrete:
        raise TypeError(
            f"{name} must be a Python float known at trace time, got a traced value "
            f"{value!r} (pass it as a static argument, not through jit or vmap)"
        )
    dtype = getattr(value, "dtype", None)
    numeric = dtype is not None and (
        jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)
    )
    if not numeric or getattr(value, "ndim", None) != 0:
        raise TypeError(f"{name} must be a real number, got {value!r}")
    return value.item() if concrete else value


MAX_PARAM_BYTES = 2**40  # 1 TiB: more than any accelerator or common host holds in one array


def check_param_sizes(input_size: int, hidden_size: int, num_gates: int, dtype) -> None:
    """Raises ValueError when a weight array would exceed ``MAX_PARAM_BYTES``.

    Checked before anything is allocated, so that a mistyped size (``hidden_size=10**12``)
    is named here rather than failing in XLA's allocator or overflowing a shape.
    V is (H, G*H) and W is (D, G*H); each must fit in 2**40 bytes (1 TiB) of ``dtype``.
    """
    itemsize = jnp.dtype(dtype).itemsize
    width = num_gates * hidden_size
    arrays = [
        ("hidden_size", hidden_size, "V", (hidden_size, width)),
        ("input_size", input_size, "W", (input_size, width)),
    ]
    for name, value, field, shape in arrays:
        nbytes = shape[0] * shape[1] * itemsize
        if nbytes > MAX_PARAM_BYTES:
            raise ValueError(
                f"{name}={value} is too large: params.{field} would have shape "
                f"{shape_str(shape)}, {nbytes:.3g} bytes in {jnp.dtype(dtype).name}; "
                f"each weight array is limited to 2**40 bytes (1 TiB)"
            )


def check_batch_shape(batch_shape) -> tuple[int, ...]:
    """``batch_shape`` (an int is one dimension) as a tuple of non-negative ints."""

    def is_int(d):
        return not isinstance(d, bool | np.bool_) and isinstance(d, int | np.integer)

    if is_int(batch_shape):
        batch_shape = (batch_shape,)
    try:
        dims = None if isinstance(batch_shape, str) else tuple(batch_shape)
    except TypeError:  # not iterable: a float, None, ...
        dims = None
    if dims is None:
        raise ValueError(
            f"batch_shape must be an int or a tuple of non-negative ints, got {batch_shape!r}"
        )
    if not all(is_int(d) and d >= 0 for d in dims):
        raise ValueError(f"batch_shape must be a tuple of non-negative ints, got {batch_shape!r}")
    return tuple(int(d) for d in dims)


def is_concrete(x) -> bool:
    """True when ``x`` holds values known at trace time (not a tracer)."""
    return not isinstance(x, jax.core.Tracer)


def check_lengths(lengths, batch_shape: Sequence[int], num_steps: int) -> jax.Array:
    """Checks a ``lengths`` array: integer dtype, shape ``batch_shape``, values in [0, T].

    Returns the lengths as int32: the time indices compared with them are built in their
    dtype, and a narrow one (uint8, int8) would wrap around past its range. Values known
    at trace time outside [0, T] raise; traced ones (under ``jit``) are clipped to [0, T],
    exactly for every integer dtype: a dtype that cannot hold T (int8 with T = 200) is
    widened to int32 before the clip, one wider than int32 (uint32, int64) is clipped
    before it is narrowed, so that no value wraps around.
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
    if jnp.iinfo(lengths.dtype).max < num_steps:
        return jnp.clip(lengths.astype(jnp.int32), 0, num_steps)
    return jnp.clip(lengths, 0, num_steps).astype(jnp.int32)


def check_params_type(name: str, params, expected_types: tuple[type, ...]) -> None:
    if not isinstance(params, expected_types):
        names = " or ".join(t.__name__ for t in expected_types)
        raise TypeError(f"{name} must be {names}, got {type(params).__name__}")


def check_params(params, num_gates: int, vectors: dict[str, int] | None = None) -> None:
    """Checks params in the seed's layout: W (D, G*H), V (H, G*H), b (G*H,) and, for the
    reset-after GRU, b_hn (H,), all of one floating dtype (G = ``num_gates``).

    ``vectors`` gives, for a cell with other fields after W and V, each field's length
    in units of H (e.g. ``{"b": 4, "p_i": 1}``); None means b (G*H,) and b_hn (H,).
    """
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
    sizes = {"b": num_gates, "b_hn": 1} if vectors is None else vectors
    for field in params._fields[2:]:
        check_shape(f"params.{field}", getattr(params, field), (sizes[field] * hidden_size,))
    check_floating("params.W", W)
    for field, value in zip(params._fields[1:], params[1:], strict=True):
        if value.dtype != W.dtype:
            raise TypeError(
                f"params.{field} must have dtype {W.dtype} (params.W's dtype), got {value.dtype}"
            )


def check_step_inputs(
    params,
    carry,
    x,
    state_type: type[NamedTuple],
    num_gates: int,
    x_name: str = "x",
    vectors: dict[str, int] | None = None,
) -> None:
    """Checks ``params`` (see ``check_params``), then one step's ``carry`` and ``x``: the
    carry of ``state_type`` with every field (*batch, H), x (*batch, D), one dtype."""
    check_params(params, num_gates, vectors)
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


KERNELS = ("xla", "pallas", "parallel", "sequential")


def check_kernel(kernel: Any) -> str | None:
    """Returns ``kernel`` if it is None or one of ``KERNELS``; else raises ValueError."""
    if kernel is not None and (not isinstance(kernel, str) or kernel not in KERNELS):
        names = ", ".join(repr(k) for k in KERNELS)
        raise ValueError(f"kernel must be None or one of {names}, got {kernel!r}")
    return kernel


MERGES = ("concat", "sum")


def check_merge(merge: str) -> None:
    """Raises ValueError unless ``merge`` is one of ``MERGES``."""
    if merge not in MERGES:
        raise ValueError(f"merge must be one of {list(MERGES)}, got {merge!r}")


def check_dropout_rate(dropout_rate: float) -> float:
    """Returns ``dropout_rate`` as a float in [0, 1); it must be known at trace time (it
    decides whether a mask is drawn at all)."""
    dropout_rate = float(check_number("dropout_rate", dropout_rate))
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate!r}")
    return dropout_rate


def check_layers(layers: Any) -> None:
    """Raises TypeError unless ``layers`` is a tuple or list of layers."""
    if not isinstance(layers, tuple | list) or hasattr(layers, "_fields"):
        # A params or Bidirectional NamedTuple is a tuple too: its fields are not layers.
        named = hasattr(layers, "_fields")
        hint = f" (one layer: ({type(layers).__name__}(...),))" if named else ""
        raise TypeError(
            f"layers must be a tuple of layer params{hint}, got {type(layers).__name__}"
        )
