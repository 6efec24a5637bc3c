"""What the Flax NNX and linen wrappers share: building params and running layers.

Both wrappers are bookkeeping around these pure functions: they hold the arrays these
functions create and pass them back in. Nothing here imports Flax.

- ``cell_init`` makes one cell's params from a registered cell's name and its options.
- ``zero_carry`` makes a zero carry before any params exist (linen's
  ``initialize_carry`` contract).
- ``layer_init`` / ``layer_apply`` make and run a stack (``rnncells.stack_init`` /
  ``rnncells.stack_unroll``), adding ``reverse`` for one-directional stacks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnncells import _checks, cells
from rnncells.cells._registry import check_init_options
from rnncells.layers import Bidirectional, stack_init, stack_unroll

# The options every module takes, and the value that means "not given".
_COMMON: dict[str, Any] = {"forget_bias": None, "chrono_t_max": None, "reset_after": False}


class CellOptions(NamedTuple):
    """A cell's options; each is passed only to the init functions that take it.

    An option given (not its "not given" value below) to a cell whose init does not
    take it (``CellSpec.options``) is refused, with ``rnncells.cells.option_error``'s
    message, as ``rnncells.stack_init`` refuses it.

    forget_bias: constant forget-gate bias b_f of the cells with a forget gate; None:
        not given (the init's default, 1 for the LSTM family).
    chrono_t_max: chrono initialisation (Tallec & Ollivier 2018) of gated cells; None
        for off (not given).
    reset_after: GRU reset placement (False: the seed's reset-before form; not given
        for the other cells).
    dtype: floating dtype of the params, and of the inputs and carries they accept.
    extra: further keyword options of one cell's init, as a mapping (e.g. a projection
        size); each must be one of the cell's ``CellSpec.options``.
    """

    forget_bias: float | None = None
    chrono_t_max: float | None = None
    reset_after: bool = False
    dtype: Any = jnp.float32
    extra: Mapping[str, Any] | None = None


def check_cell(cell: str) -> str:
    """Returns ``cell`` if it names a registered cell, else raises ValueError."""
    cells.cell_spec_by_name(cell)
    return cell


def init_kwargs(cell: str, options: CellOptions) -> dict[str, Any]:
    """The keyword arguments of ``cell``'s init function for ``options``.

    The options given (forget_bias and chrono_t_max not None, reset_after True, every
    ``extra`` key) and dtype.

    Raises:
      ValueError: an option given that the cell's init does not take
        (``rnncells.cells.check_init_options``: forget_bias for a cell without a forget
        gate, chrono_t_max for the RNN, reset_after for a non-GRU cell, an ``extra`` key
        the cell does not take), or an ``extra`` key that is one of the common options
        (forget_bias, chrono_t_max, reset_after: they have their own arguments).
      TypeError: reset_after is not a bool (the init functions check the numbers).
    """
    spec = cells.cell_spec_by_name(cell)
    reset_after = _checks.check_bool("reset_after", options.reset_after)
    dtype = jnp.dtype(options.dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    extra = dict(options.extra or {})
    for name in extra:
        if name in _COMMON or name == "dtype":
            raise ValueError(
                f"option {name!r} has its own argument: pass {name}=... rather than in the "
                f"{cell!r} cell's further options, got it there"
            )
    common = {"forget_bias": options.forget_bias, "chrono_t_max": options.chrono_t_max}
    given = {name: value for name, value in common.items() if value is not None}
    if reset_after:
        given["reset_after"] = True
    given.update(extra)
    check_init_options(cell, given)
    kwargs: dict[str, Any] = dict(given)
    if "reset_after" in spec.options:
        kwargs["reset_after"] = reset_after
    kwargs["dtype"] = dtype
    return kwargs


def cell_init(
    key: jax.Array, cell: str, input_size: int, hidden_size: int, options: CellOptions
) -> Any:
    """One cell's params: the registered cell's init (``lstm_init``, ...) with ``options``."""
    spec = cells.cell_spec_by_name(cell)
    return spec.init(key, input_size, hidden_size, **init_kwargs(cell, options))


def zero_carry(
    cell: str,
    batch_shape: Sequence[int],
    hidden_size: int,
    dtype,
    options: CellOptions | None = None,
) -> Any:
    """The zero carry of ``cell`` before its params exist (linen's ``initialize_carry``).

    The carry is the cell's ``zero_carry`` of the params ``cell_init`` would make, built
    from their shapes only (``jax.eval_shape``: nothing is drawn or allocated but the
    zeros).

    Args:
      cell: a registered cell's name.
      batch_shape: leading batch dimensions.
      hidden_size: H.
      dtype: the carry's dtype (the params' dtype).
      options: the cell's other options (some cells' carry sizes depend on them).

    Returns:
      The carry NamedTuple of zeros (*batch_shape, size) in every field: LSTMState(h, c),
      GRUState(h) or RNNState(h), each field (*batch_shape, H), for the seed's cells.
    """
    spec = cells.cell_spec_by_name(cell)
    batch_shape = _checks.check_batch_shape(batch_shape)
    hidden_size = _checks.check_positive_int("hidden_size", hidden_size)
    options = CellOptions(dtype=dtype) if options is None else options._replace(dtype=dtype)
    kwargs = init_kwargs(cell, options)
    # The carry does not depend on the input size; 1 keeps the abstract params small.
    shapes = jax.eval_shape(lambda key: spec.init(key, 1, hidden_size, **kwargs), jax.random.key(0))
    return spec.zero_carry(shapes, batch_shape)


def layer_init(
    key: jax.Array,
    cell: str,
    input_size: int,
    hidden_size: int,
    options: CellOptions,
    *,
    num_layers: int = 1,
    bidirectional: bool = False,
    merge: str = "concat",
) -> tuple[Any, ...]:
    """A stack's params: ``rnncells.stack_init`` with the cell's options."""
    return stack_init(
        key,
        check_cell(cell),
        input_size,
        hidden_size,
        num_layers=num_layers,
        bidirectional=bidirectional,
        merge=merge,
        **init_kwargs(cell, options),
    )


def reverse_valid(xs: jax.Array, lengths: jax.Array | None, *, time_major: bool) -> jax.Array:
    """Reverses each sequence's valid prefix along time; padding stays where it is.

    An involution: applying it twice gives ``xs`` back. Without lengths it flips the
    whole time axis.

    Args:
      xs: (*batch, T, F), or (T, *batch, F) with ``time_major``.
      lengths: optional (*batch,) valid lengths.
      time_major: where the time axis is.

    Returns:
      Array of the shape of ``xs``.
    """
    axis = 0 if time_major else xs.ndim - 2
    if lengths is None:
        return jnp.flip(xs, axis=axis)
    num_steps = xs.shape[axis]
    lengths = lengths.astype(jnp.int32)  # a narrow dtype would wrap around in t below
    t = jnp.arange(num_steps, dtype=lengths.dtype)
    if time_major:
        t = t.reshape((num_steps,) + (1,) * lengths.ndim)
        lens = lengths[None]
    else:
        t = t.reshape((1,) * lengths.ndim + (num_steps,))
        lens = lengths[..., None]
    index = jnp.where(t < lens, lens - 1 - t, t)  # (T, *batch) or (*batch, T)
    index = jnp.broadcast_to(index[..., None], xs.shape)
    return jnp.take_along_axis(xs, index, axis=axis)


def layer_apply(
    layers: tuple[Any, ...],
    xs: jax.Array,
    carries: tuple[Any, ...] | None = None,
    *,
    lengths: jax.Array | None = None,
    reverse: bool = False,
    merge: str = "concat",
    dropout_rate: float = 0.0,
    dropout_key: jax.Array | None = None,
    time_major: bool = False,
    unroll: int | None = None,
    remat: bool = False,
    kernel: str | None = None,
) -> tuple[tuple[Any, ...], jax.Array]:
    """Runs a stack with ``rnncells.stack_unroll``; ``reverse`` runs every layer backwards.

    A reversed one-directional stack is the forward stack applied to the inputs with
    each valid prefix reversed, its outputs reversed back: the same as reversing every
    layer's unroll (each layer reads its input from the last valid step to the first).

    Args:
      layers, xs, carries, lengths, merge, dropout_rate, dropout_key, time_major, unroll,
        remat, kernel: as in ``rnncells.stack_unroll``.
      reverse: run each one-directional layer from the last valid step to the first.

    Returns:
      (final_carries, ys) as ``rnncells.stack_unroll``.

    Raises:
      ValueError: ``reverse`` with bidirectional layers (they already run both ways), or
        anything ``rnncells.stack_unroll`` rejects.
      TypeError: reverse or time_major not a bool, dropout_rate not a number known at
        trace time.
    """
    reverse = _checks.check_bool("reverse", reverse)
    time_major = _checks.check_bool("time_major", time_major)
    dropout_rate = _checks.check_dropout_rate(dropout_rate)
    if reverse and any(isinstance(layer, Bidirectional) for layer in layers):
        raise ValueError("reverse=True does not apply to bidirectional layers (got both)")
    if dropout_rate == 0.0:
        dropout_key = None
    kwargs: dict[str, Any] = dict(
        lengths=lengths,
        merge=merge,
        dropout_rate=dropout_rate,
        dropout_key=dropout_key,
        time_major=time_major,
        unroll=unroll,
        remat=remat,
        kernel=kernel,
    )
    if not reverse:
        return stack_unroll(tuple(layers), xs, carries, **kwargs)
    _checks.check_array("xs", xs)
    _checks.check_min_rank("xs", xs, 2, "(T, *batch, F)" if time_major else "(*batch, T, F)")
    if lengths is not None:
        batch_shape = xs.shape[1:-1] if time_major else xs.shape[:-2]
        lengths = _checks.check_lengths(lengths, batch_shape, xs.shape[0 if time_major else -2])
    finals, ys = stack_unroll(
        tuple(layers), reverse_valid(xs, lengths, time_major=time_major), carries, **kwargs
    )
    return finals, reverse_valid(ys, lengths, time_major=time_major)
