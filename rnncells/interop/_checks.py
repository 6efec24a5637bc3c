"""Input checks shared by the converters, run before anything is built.

Each helper raises ``ValueError`` (shape, value) or ``TypeError`` (dtype, type) with a
message that names the argument, what was expected and what was given. The core's
checks (``rnncells._checks``) are reused where they fit; these add what only a
converter needs: another framework's weights read one by one, carries told apart from
the other frameworks' carries, and dtypes that JAX would silently narrow.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnncells import _checks
from rnncells.cells import CellSpec, cell_spec
from rnncells.cells.gru import GRUParams, GRUResetAfterParams, GRUState
from rnncells.cells.lstm import LSTMParams, LSTMState
from rnncells.cells.rnn import RNNParams, RNNState

CORE_STATES = (LSTMState, GRUState, RNNState)
SEED_PARAMS = (LSTMParams, GRUParams, GRUResetAfterParams, RNNParams)
"""The params types every converter reads (some refuse one with a reason of its own)."""


class InexactConversionWarning(UserWarning):
    """The weights converted exactly, but the other framework's object computes something
    else than the params with them (docs/interop.md: a Keras ``go_backwards=True`` layer,
    a Keras mixed-precision dtype policy, a Flax cell's lower-precision ``dtype``). The
    message says what differs and what to do for outputs that agree."""


def warn_inexact(message: str) -> None:
    """Warns ``InexactConversionWarning`` at the caller of the converter that calls this."""
    warnings.warn(message, InexactConversionWarning, stacklevel=3)


def lower_precision(compute_dtype: Any, params_dtype: Any) -> bool:
    """Whether a framework computing in ``compute_dtype`` (None: the inputs' dtype) rounds
    where params of ``params_dtype`` do not: a floating dtype of fewer bits."""
    if compute_dtype is None:
        return False
    compute, params = jnp.dtype(compute_dtype), jnp.dtype(params_dtype)
    if not (jnp.issubdtype(compute, jnp.floating) and jnp.issubdtype(params, jnp.floating)):
        return False
    return bool(jnp.finfo(compute).bits < jnp.finfo(params).bits)


def flax_dtype_message(name: str, compute_dtype: Any, params_dtype: Any) -> str:
    """The warning for a Flax cell whose computation ``dtype`` is below its params'."""
    compute, params = jnp.dtype(compute_dtype).name, jnp.dtype(params_dtype).name
    return (
        f"{name}.dtype={compute} is the Flax cell's computation dtype, lower than its "
        f"params' {params}: Flax rounds its matmuls and gates to {compute} where rnncells "
        f"computes in {params}, so the cell's outputs differ from the converted params' "
        f"(about 1e-3 for bfloat16; docs/interop.md), though the weights convert exactly. "
        f"For outputs that agree to {params} rounding, run the Flax cell with dtype=None "
        f"(or {params})"
    )


def type_name(x: Any) -> str:
    """The type of ``x`` for a message; qualified when it is not rnncells' or a builtin
    (``haiku._src.recurrent.LSTMState`` is not ``LSTMState``)."""
    cls = type(x)
    if isinstance(x, jax.Array | np.ndarray):
        return f"an array of shape {_checks.shape_str(x.shape)}"
    if cls.__module__ == "builtins" or cls.__module__.startswith("rnncells."):
        return cls.__name__
    return f"{cls.__module__}.{cls.__qualname__}"


def check_own_forward(
    argname: str, obj: Any, framework: tuple[type, ...], methods: Sequence[str], prefix: str
) -> None:
    """TypeError unless ``obj`` runs the framework's own forward pass.

    The converters read only an object's weights, and give params computing the
    framework's forward; a subclass that overrides it (``forward``, ``call``,
    ``__call__``, ...) computes something else, which no reading of its weights shows.
    Each of ``methods`` is looked up as Python looks it up: in the instance's
    ``__dict__`` (but for dunders, which Python looks up on the type), then along
    ``type(obj)``'s MRO. The first class defining it must be one of the framework's
    classes ``obj`` is accepted as (``framework``) or their bases. A class of the
    framework's own package outside those (Flax linen's ``nn.remat(nn.LSTMCell)``,
    ``nn.jit``, ``nn.scan`` classes, which wrap the method) is passed over to the class
    it wraps; any other class defining the method is an override, even one calling
    ``super()`` (the check cannot tell what it adds). A subclass that adds attributes or
    its own ``__init__`` keeps the forward and passes.

    Args:
      argname: the argument's name (or path, e.g. "layer.cell") for the message.
      obj: an instance of one of ``framework``.
      framework: the framework's classes ``obj`` is accepted as, e.g. torch's
        (``nn.LSTM``, ``nn.GRU``, ``nn.RNN``).
      methods: the names making up the forward pass, e.g. ("forward", "__call__").
      prefix: how the framework's classes are named, e.g. "torch.nn." (then the class's
        ``__name__``); its first part is the framework's package.
    """
    own = {base for cls in framework for base in cls.__mro__}
    package = prefix.split(".")[0]
    mro = type(obj).__mro__
    instance = getattr(obj, "__dict__", {})
    found = []  # (method, where its definition comes from)
    for method in methods:
        if not method.startswith("__") and method in instance:
            found.append((method, f"set on the instance: {argname}.{method} = ..."))
            continue
        for cls in mro:
            if method not in vars(cls):
                continue
            if cls in own:
                break  # the framework's own method
            if cls.__module__ != package and not cls.__module__.startswith(package + "."):
                found.append((method, f"{cls.__qualname__}.{method}"))
                break
            # else a class of the framework's package wrapping the method: look further
    if not found:
        return
    accepted = next(cls for cls in mro if cls in framework)
    base = prefix + accepted.__name__
    given = f"a {base}" if type(obj) is accepted else f"{type_name(obj)}, a subclass of {base},"
    names = " and ".join(method for method, _ in found)
    verb = "is" if len(found) == 1 else "are"
    raise TypeError(
        f"{argname} is {given} whose {names} {verb} not {base}'s own "
        f"({'; '.join(where for _, where in found)}): the converter reads only the weights, "
        f"so the params would compute {base}'s {names}, not this object's; convert a plain "
        f"{base} (a subclass converts when it keeps {base}'s {names})"
    )


def check_x64(name: str, dtype: Any) -> None:
    """TypeError when JAX cannot hold ``dtype`` now (64-bit types with x64 off): it would
    silently narrow float64 to float32, so a converter would not be exact."""
    canonical = jax.dtypes.canonicalize_dtype(dtype)
    if canonical != dtype:
        raise TypeError(
            f"{name} is {np.dtype(dtype)}, but jax_enable_x64 is off, so JAX would silently "
            f"make it {canonical}; turn it on (jax.config.update('jax_enable_x64', True)) "
            f"or use {canonical}"
        )


def check_bool(name: str, value: Any) -> None:
    """TypeError unless ``value`` is a bool (a string such as "no" would read as True)."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {value!r}")


def check_dtype_arg(dtype: Any, name: str = "dtype") -> np.dtype:
    """A converter's ``dtype`` argument as a NumPy dtype: floating and available in JAX."""
    if dtype is None:
        raise TypeError(f"{name} must be a floating dtype (e.g. jnp.float32), got None")
    try:
        resolved = np.dtype(jnp.dtype(dtype))
    except TypeError:
        raise TypeError(f"{name} must be a floating dtype, got {dtype!r}") from None
    if not jnp.issubdtype(resolved, jnp.floating):
        raise TypeError(f"{name} must be a floating dtype, got {resolved}")
    check_x64(name, resolved)
    return resolved


def array_dtype(name: str, x: Any) -> np.dtype:
    """The dtype of a JAX or NumPy array; TypeError for anything else."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be an array, got {type_name(x)}")
    try:
        return np.dtype(x.dtype)
    except TypeError:
        raise TypeError(
            f"{name} must be a JAX or NumPy array, got {type_name(x)} with dtype {x.dtype}"
        ) from None


def _shape_label(shape: Sequence[int | str]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


class Leaves:
    """Reads another framework's weights one by one, checking each before use.

    Every leaf must be a floating JAX or NumPy array whose dtype JAX can hold, all of one
    dtype (the first leaf's), and of the expected shape; an entry of ``shape`` that is a
    string (e.g. "input_size") matches any size and names it in the message.
    """

    def __init__(self, what: str):
        self.what = what  # the layout, for messages: e.g. "hidden_size 5, 4 gates"
        self.dtype: np.dtype | None = None
        self.first = ""

    def __call__(
        self, name: str, x: Any, shape: Sequence[int | str], what: str | None = None
    ) -> jax.Array:
        dtype = array_dtype(name, x)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"{name} must have a floating dtype, got {dtype}")
        if self.dtype is None:
            check_x64(f"{name}'s dtype", dtype)
            self.dtype, self.first = dtype, name
        elif dtype != self.dtype:
            raise TypeError(
                f"{name} must have dtype {self.dtype} ({self.first}'s dtype: the converted "
                f"params hold one dtype), got {dtype}"
            )
        self.check_shape(name, x, shape, what)
        return jnp.asarray(x)

    def check_shape(
        self, name: str, x: Any, shape: Sequence[int | str], what: str | None = None
    ) -> None:
        """ValueError unless ``x`` has ``shape`` (strings match any size)."""
        if len(x.shape) != len(shape) or any(
            isinstance(want, int) and got != want for got, want in zip(x.shape, shape, strict=True)
        ):
            raise ValueError(
                f"{name} must have shape {_shape_label(shape)} ({what or self.what}), "
                f"got shape {_checks.shape_str(x.shape)}"
            )


def check_params(params: Any, accepted: tuple[type, ...] = SEED_PARAMS) -> CellSpec:
    """Checks built-in params before a converter reads them, and returns their CellSpec.

    The params must be of a type in ``accepted`` (the converter's cells: another
    registered cell, e.g. the peephole LSTM, has no counterpart there and is refused
    rather than read as the cell of the same layout), then pass the cell's own
    ``check_params`` (W (D, G*H), V (H, G*H), b (G*H,), b_hn (H,), one floating dtype),
    after checking that every field is a JAX or NumPy array, and that JAX can hold their
    dtype (float64 needs x64).

    Raises:
      TypeError: not a registered cell's params, or bad arrays.
      ValueError: a registered cell's params that this converter does not take, or
        shapes that are not the cell's.
    """
    spec = cell_spec(params)
    if type(params) not in accepted:
        names = ", ".join(t.__name__ for t in accepted)
        raise ValueError(
            f"params is {type(params).__name__} (rnncells' {spec.name!r} cell), which this "
            f"converter cannot convert: no cell of the other framework computes it (it "
            f"converts {names})"
        )
    for field, value in zip(params._fields, params, strict=True):
        array_dtype(f"params.{field}", value)
    spec.check_params(params)
    check_x64("params' dtype", np.dtype(params.W.dtype))
    return spec


def check_core_carry(carry: Any, allowed: tuple[type, ...] = CORE_STATES) -> None:
    """Checks an rnncells carry before it is converted to another framework's.

    Its type must be one of ``allowed``; its fields floating arrays of one shape
    (*batch, H) and one dtype.
    """
    if type(carry) not in allowed:
        names = [t.__name__ for t in allowed]
        listed = " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
        raise TypeError(f"carry must be rnncells' {listed}, got {type_name(carry)}")
    first = None
    for field, value in zip(carry._fields, carry, strict=True):
        dtype = array_dtype(f"carry.{field}", value)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"carry.{field} must have a floating dtype, got {dtype}")
        if len(value.shape) < 1:
            raise ValueError(f"carry.{field} must have shape (*batch, hidden_size), got shape ()")
        if first is None:
            first = (field, tuple(value.shape), dtype)
        elif tuple(value.shape) != first[1]:
            raise ValueError(
                f"carry.{field} must have carry.{first[0]}'s shape "
                f"{_checks.shape_str(first[1])}, got shape {_checks.shape_str(value.shape)}"
            )
        elif dtype != first[2]:
            raise TypeError(
                f"carry.{field} must have carry.{first[0]}'s dtype {first[2]}, got {dtype}"
            )


def check_carry_array(name: str, x: Any, params: Any) -> None:
    """Checks one array of another framework's carry against the params it is for:
    floating, of the params' dtype, with shape (*batch, hidden_size)."""
    dtype = array_dtype(name, x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{name} must have a floating dtype, got {dtype}")
    if dtype != params.W.dtype:
        raise TypeError(
            f"{name} must have dtype {np.dtype(params.W.dtype)} (the params' dtype), got {dtype}"
        )
    hidden = params.V.shape[0]
    if len(x.shape) < 1 or x.shape[-1] != hidden:
        raise ValueError(
            f"{name} must have shape (*batch, hidden_size = {hidden}), "
            f"got shape {_checks.shape_str(x.shape)}"
        )


def carry_from(
    carry: Any,
    params: Any,
    framework: str,
    lstm_form: str,
    unpack: Callable,
    accepted: tuple[type, ...] = SEED_PARAMS,
) -> Any:
    """Another framework's carry as the core's carry for ``params``, checked first.

    Args:
      carry: the framework's carry: for an LSTM the pair ``lstm_form`` describes, the
        array h for the other cells.
      params: the core params the carry is for (their cell picks the carry type; their
        hidden size and dtype are the carry's).
      framework: the framework's name, for messages.
      lstm_form: the framework's LSTM carry as a message shows it, e.g. "a (c, h) tuple".
      unpack: ``unpack(carry) -> ((name_h, h), (name_c, c))`` for an LSTM carry, or None
        when ``carry`` is not the framework's LSTM carry.
      accepted: the params types the framework's converters take.

    Raises:
      TypeError: an rnncells carry (reading ours as theirs would swap or nest fields),
        a carry of another cell, non-floating arrays or another dtype than the params'.
      ValueError: arrays whose last dimension is not the hidden size, or an LSTM carry
        whose two arrays differ in shape.
    """
    spec = check_params(params, accepted)
    cell = type(params).__name__
    array_form = f"the array h for {cell}"
    if isinstance(carry, CORE_STATES):
        expected = lstm_form if spec.state is LSTMState else array_form
        raise TypeError(
            f"carry must be {framework}'s carry ({expected}), got rnncells' "
            f"{type(carry).__name__}, which is already the core's carry: use it directly"
        )
    if spec.state is LSTMState:
        pair = unpack(carry)
        if pair is None:
            raise TypeError(
                f"carry must be {framework}'s LSTM carry, {lstm_form} (params are {cell}), "
                f"got {type_name(carry)}"
            )
        (name_h, h), (name_c, c) = pair
        check_carry_array(name_h, h, params)
        check_carry_array(name_c, c, params)
        check_same_shape((name_h, name_c), (h, c))
        return LSTMState(h=h, c=c)
    if not hasattr(carry, "shape") or hasattr(carry, "_fields"):
        hint = " (an LSTM carry?)" if isinstance(carry, tuple | list) else ""
        raise TypeError(
            f"carry must be {framework}'s carry for {cell}, the array h, "
            f"got {type_name(carry)}{hint}"
        )
    check_carry_array("carry", carry, params)
    return spec.state(carry)


def check_same_shape(names: Sequence[str], arrays: Sequence[Any]) -> None:
    """ValueError unless the arrays (a carry's fields) share one shape."""
    shapes = [tuple(a.shape) for a in arrays]
    if any(s != shapes[0] for s in shapes[1:]):
        given = " and ".join(
            f"{n} {_checks.shape_str(s)}" for n, s in zip(names, shapes, strict=True)
        )
        raise ValueError(f"{' and '.join(names)} must have the same shape, got {given}")
