"""Layers built from the pure parts: bidirectional runs and multi-layer stacks.

A stack is a tuple of layers, one per depth; a layer is a cell's params, or
``Bidirectional(forward, backward)`` of two params of the same cell. Final carries come
back in the same structure. Dropout, when asked for, is applied to each layer's outputs
except the last one's (PyTorch's ``dropout`` argument), from an explicit key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnncells import _checks, cells
from rnncells.cells import step_for
from rnncells.cells._registry import check_init_options
from rnncells.unrolling import unroll as _unroll

__all__ = [
    "Bidirectional",
    "bidirectional_unroll",
    "stack_init",
    "stack_unroll",
]


class Bidirectional(NamedTuple):
    """A pair of per-direction values: params, carries."""

    forward: Any
    backward: Any


def _registered(params: Any) -> cells.CellSpec | None:
    try:
        return cells.cell_spec(params)
    except TypeError:
        return None


def _input_size(params: Any) -> int | None:
    """D of a registered cell's params (for the seed's, W is (D, G*H)); None for
    anything else, or when the params are too malformed to tell."""
    spec = _registered(params)
    return None if spec is None else spec.input_size(params)


def _output_size(params: Any, default: int) -> int:
    """The output width of one direction of a layer: the registered cell's (h for the
    seed's cells), or ``default`` (the hidden size) for params of an unregistered cell."""
    spec = _registered(params)
    size = None if spec is None else spec.output_size(params)
    return default if size is None else size


def bidirectional_unroll(
    step: Callable | None,
    params: Bidirectional,
    xs: jax.Array,
    carry: Bidirectional | None = None,
    *,
    lengths: jax.Array | None = None,
    merge: str = "concat",
    time_major: bool = False,
    unroll: int | None = None,
    remat: bool = False,
    kernel: str | None = None,
) -> tuple[Bidirectional, jax.Array]:
    """Runs a forward and a reversed unroll over ``xs`` and merges their outputs.

    Args:
      step: the step function, or None for the registered step of ``params.forward``.
      params: Bidirectional(forward, backward) params.
      xs: inputs (*batch, T, D), or (T, *batch, D) with ``time_major``.
      carry: optional Bidirectional of initial carries.
      lengths: optional (*batch,) valid lengths; the backward direction starts at each
        sequence's last valid step.
      merge: "concat" (outputs (..., 2H), forward first) or "sum" (outputs (..., H)).
      time_major: as in ``unroll``.
      unroll: as in ``unroll``.
      remat: as in ``unroll``.
      kernel: as in ``unroll``: None, "xla" or "pallas".

    Returns:
      (Bidirectional(forward_carry, backward_carry), ys).
    """
    _checks.check_merge(merge)
    time_major = _checks.check_bool("time_major", time_major)
    remat = _checks.check_bool("remat", remat)
    if not isinstance(params, Bidirectional):
        raise TypeError(
            f"params must be Bidirectional(forward, backward), got {type(params).__name__}"
        )
    carry = Bidirectional(None, None) if carry is None else carry
    if not isinstance(carry, Bidirectional):
        raise TypeError(
            "carry must be Bidirectional(forward_carry, backward_carry) or None, "
            f"got {type(carry).__name__}"
        )
    fwd_step = step_for(params.forward) if step is None else step
    bwd_step = step_for(params.backward) if step is None else step
    kwargs: dict[str, Any] = dict(
        lengths=lengths, time_major=time_major, unroll=unroll, remat=remat, kernel=kernel
    )
    carry_f, ys_f = _unroll(fwd_step, params.forward, xs, carry.forward, **kwargs)
    carry_b, ys_b = _unroll(bwd_step, params.backward, xs, carry.backward, reverse=True, **kwargs)
    if merge == "sum" and ys_f.shape[-1] != ys_b.shape[-1]:
        raise ValueError(
            "merge='sum' needs outputs of one size from both directions, got "
            f"{ys_f.shape[-1]} from params.forward and {ys_b.shape[-1]} from params.backward"
        )
    ys = jnp.concatenate([ys_f, ys_b], axis=-1) if merge == "concat" else ys_f + ys_b
    return Bidirectional(carry_f, carry_b), ys


def stack_init(
    key: jax.Array,
    cell: str | Callable,
    input_size: int,
    hidden_size: int,
    *,
    num_layers: int = 1,
    bidirectional: bool = False,
    merge: str = "concat",
    **init_kwargs,
) -> tuple[Any, ...]:
    """Initialises a stack of ``num_layers`` recurrent layers.

    Args:
      key: PRNG key.
      cell: a registered cell's name ("lstm", "gru", "rnn", "peephole_lstm", ...; see
        ``rnncells.cells.cell_names()``), or an init function ``init(key, input_size,
        hidden_size, **init_kwargs)``.
      input_size: D of the first layer; later layers take the previous layer's output
        (its cell's output size, H for the seed's cells; twice that for concatenated
        bidirectional outputs).
      hidden_size: H of every layer.
      num_layers: depth.
      bidirectional: each layer is Bidirectional(forward, backward).
      merge: how bidirectional outputs merge ("concat" makes the next input 2H).
      **init_kwargs: passed to the init function (forget_bias, chrono_t_max,
        reset_after, dtype, ...; a cell's options are in its ``CellSpec.options``).

    Raises:
      ValueError: an unknown cell name, an option a named cell's init does not take
        (``rnncells.cells.option_error``: the Flax modules' message), num_layers not a
        positive integer, or an unknown merge.

    Returns:
      A tuple of ``num_layers`` params (or Bidirectional params).
    """
    if isinstance(cell, str):
        names = cells.cell_names()
        if cell not in names:
            raise ValueError(f"cell must be one of {list(names)} or an init function, got {cell!r}")
        check_init_options(cell, init_kwargs)
        cell = cells.cell_spec_by_name(cell).init
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
    bidirectional = _checks.check_bool("bidirectional", bidirectional)
    _checks.check_merge(merge)
    layers = []
    width = input_size
    for layer_key in jax.random.split(key, num_layers):
        if bidirectional:
            k_f, k_b = jax.random.split(layer_key)
            layers.append(
                Bidirectional(
                    cell(k_f, width, hidden_size, **init_kwargs),
                    cell(k_b, width, hidden_size, **init_kwargs),
                )
            )
        else:
            layers.append(cell(layer_key, width, hidden_size, **init_kwargs))
        last = layers[-1].forward if bidirectional else layers[-1]
        width = _output_size(last, hidden_size) * (2 if bidirectional and merge == "concat" else 1)
    return tuple(layers)


def stack_unroll(
    layers: tuple[Any, ...],
    xs: jax.Array,
    carries: tuple[Any, ...] | None = None,
    *,
    step: Callable | None = None,
    lengths: jax.Array | None = None,
    merge: str = "concat",
    dropout_rate: float = 0.0,
    dropout_key: jax.Array | None = None,
    time_major: bool = False,
    unroll: int | None = None,
    remat: bool = False,
    kernel: str | None = None,
) -> tuple[tuple[Any, ...], jax.Array]:
    """Runs a stack of layers (from ``stack_init`` or ``interop.from_torch``) over ``xs``.

    Args:
      layers: tuple of params or Bidirectional params, first layer first.
      xs: inputs (*batch, T, D), or (T, *batch, D) with ``time_major``.
      carries: optional tuple of initial carries, one per layer (Bidirectional for a
        bidirectional layer; None entries give zero carries).
      step: the step function for every layer; None uses each params' registered step.
      lengths: optional (*batch,) valid lengths.
      merge: how a bidirectional layer's two outputs merge: "concat" or "sum".
      dropout_rate: probability of zeroing each output of every layer but the last
        (inverted dropout, survivors scaled by 1 / (1 - rate)); a Python float in
        [0, 1), known at trace time (not a traced value).
      dropout_key: PRNG key, required when dropout_rate > 0.
      time_major: as in ``unroll``.
      unroll: as in ``unroll``.
      remat: as in ``unroll``.
      kernel: as in ``unroll``: None (the measured choice per backend and shape), "xla"
        or "pallas", for every layer.

    Returns:
      (final_carries, ys): one final carry per layer, and the last layer's outputs.
    """
    _checks.check_layers(layers)
    if not layers:
        raise ValueError(
            f"layers must hold at least one layer, got an empty {type(layers).__name__}"
        )
    if carries is None:
        carries = (None,) * len(layers)
    if len(carries) != len(layers):
        raise ValueError(
            f"carries must have one entry per layer ({len(layers)}), got {len(carries)}"
        )
    dropout_rate = _checks.check_dropout_rate(dropout_rate)
    time_major = _checks.check_bool("time_major", time_major)
    remat = _checks.check_bool("remat", remat)
    if dropout_rate > 0.0 and dropout_key is None:
        raise ValueError("dropout_key is required when dropout_rate > 0 (dropout_key=None given)")
    _checks.check_merge(merge)
    kernel = _checks.check_kernel(kernel)
    kwargs: dict[str, Any] = dict(
        lengths=lengths, time_major=time_major, unroll=unroll, remat=remat, kernel=kernel
    )
    finals = []
    ys = xs
    for depth, (layer, carry) in enumerate(zip(layers, carries, strict=True)):
        if depth > 0 and dropout_rate > 0.0 and dropout_key is not None:  # a key: checked above
            dropout_key, sub = jax.random.split(dropout_key)
            keep = jax.random.bernoulli(sub, 1.0 - dropout_rate, ys.shape)
            ys = jnp.where(keep, ys / (1.0 - dropout_rate), jnp.zeros_like(ys))
        width = _input_size(layer.forward if isinstance(layer, Bidirectional) else layer)
        if depth > 0 and width is not None and width != ys.shape[-1]:
            raise ValueError(
                f"layers[{depth}] takes inputs of size {width}, but layers[{depth - 1}] "
                f"gives outputs of size {ys.shape[-1]}"
            )
        if isinstance(layer, Bidirectional):
            final, ys = bidirectional_unroll(step, layer, ys, carry, merge=merge, **kwargs)
        else:
            layer_step = step_for(layer) if step is None else step
            final, ys = _unroll(layer_step, layer, ys, carry, **kwargs)
        finals.append(final)
    return tuple(finals), ys
