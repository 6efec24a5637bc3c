"""Flax NNX modules over the pure cells: they hold params and call the pure functions.

``pip install rnncells[flax]``. Each module keeps a core params NamedTuple as one
``nnx.Param`` per field (W, V, b, and b_hn for a reset-after GRU; each registered
cell's own fields) and rebuilds the
NamedTuple, with no arithmetic, when called. (An ``nnx.Param`` holding the whole
NamedTuple does not survive ``nnx.Optimizer``: its state is split per leaf.) So
``module.params`` is exactly what ``rnncells.lstm_init`` & co. return, and

    module(carry, x) == rnncells.step_for(module.params)(module.params, carry, x)

Cells follow the scan contract ``(carry, x) -> (carry, y)`` with the core's carries
(``LSTMState(h, c)``, not Flax's ``(c, h)``). Layers run ``rnncells.stack_unroll``.
Any registered cell is built by name with ``make_cell`` and ``make_layer`` (the seed's
cells also have their own classes, ``LSTMCell``, ``LSTM``, ...).

Example:
  >>> from flax import nnx
  >>> import rnncells.nnx as rcnn
  >>> layer = rcnn.LSTM(2, 16, num_layers=2, rngs=nnx.Rngs(0))
  >>> carries, ys = layer(jnp.ones((4, 10, 2)))          # ys: (4, 10, 16)
  >>> ln = rcnn.make_layer("ln_lstm", 2, 16, rngs=nnx.Rngs(0))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from rnncells import _checks
from rnncells import _modules as common
from rnncells.cells import cell_spec, init_carry, step_for
from rnncells.layers import Bidirectional

__all__ = [
    "Cell",
    "GRU",
    "GRUCell",
    "LSTM",
    "LSTMCell",
    "Layer",
    "RNN",
    "RNNCell",
    "make_cell",
    "make_layer",
]


class _Params(nnx.Module):
    """One params NamedTuple (or a Bidirectional pair of them), one nnx.Param per field."""

    def __init__(self, params: Any):
        if isinstance(params, Bidirectional):
            self.forward = _Params(params.forward)
            self.backward = _Params(params.backward)
            self.kind = Bidirectional
            return
        cell_spec(params)  # TypeError for anything but a registered cell's params
        self.kind = type(params)
        for name, value in zip(params._fields, params, strict=True):
            setattr(self, name, nnx.Param(value))

    def get(self) -> Any:
        if self.kind is Bidirectional:
            return Bidirectional(self.forward.get(), self.backward.get())
        return self.kind(*(getattr(self, name)[...] for name in self.kind._fields))


class Cell(nnx.RNNCellBase):
    """An NNX cell holding given core params; ``__call__`` is the pure step.

    Args:
      params: a registered cell's params (LSTMParams, GRUParams, GRUResetAfterParams,
        RNNParams, PeepholeLSTMParams, ...).

    Raises:
      TypeError: params is not a registered cell's params NamedTuple.
    """

    def __init__(self, params: Any):
        self.weights = _Params(params)

    @property
    def params(self) -> Any:
        """The core params NamedTuple, rebuilt from the module's nnx.Params."""
        return self.weights.get()

    def __call__(self, carry: Any, x: jax.Array) -> tuple[Any, jax.Array]:
        """One step: ``step_for(params)(params, carry, x)``.

        Args:
          carry: the core carry (LSTMState(h, c), GRUState(h), RNNState(h), or the
            cell's own), fields of shape (*batch, H).
          x: input x_t (*batch, D) in the params' dtype.

        Returns:
          (new_carry, h_t).
        """
        params = self.params
        return step_for(params)(params, carry, x)

    # Takes the batch shape where flax's RNNCellBase takes the input shape (see below).
    def initialize_carry(  # type: ignore[override]
        self, batch_shape: Sequence[int] | int = (), rngs: Any = None
    ) -> Any:
        """The zero carry for inputs with leading dims ``batch_shape`` (rngs is unused).

        Unlike ``flax.nnx``'s cells this takes the batch shape, not the input shape; inside
        ``nnx.RNN`` pass ``initial_carry=cell.initialize_carry(batch_shape)``.
        """
        del rngs
        return init_carry(self.params, batch_shape)

    @property
    def num_feature_axes(self) -> int:
        return 1


def _options(forget_bias, chrono_t_max, reset_after, dtype, extra=None) -> common.CellOptions:
    return common.CellOptions(forget_bias, chrono_t_max, reset_after, dtype, extra)


def make_cell(
    cell: str,
    input_size: int,
    hidden_size: int,
    *,
    forget_bias: float | None = None,
    chrono_t_max: float | None = None,
    reset_after: bool = False,
    dtype: Any = jnp.float32,
    rngs: nnx.Rngs,
    **cell_options: Any,
) -> Cell:
    """A ``Cell`` of any registered cell, by name.

    Args:
      cell: a registered cell's name ("lstm", "peephole_lstm", "ln_gru", "irnn", ...;
        ``rnncells.cells.cell_names()``).
      input_size: D.
      hidden_size: H.
      forget_bias: the forget-gate bias of a cell with a forget gate (the LSTM family);
        None: the init's default.
      chrono_t_max: chrono initialisation, for cells whose init takes it.
      reset_after: the GRU's reset placement.
      dtype: params dtype.
      rngs: ``nnx.Rngs``; its ``params`` stream initialises the weights.
      **cell_options: the cell's own further init options.

    Returns:
      A ``Cell`` holding the cell's params; ``cell(carry, x)`` is its step.

    Raises:
      ValueError: unknown cell name, or an option given (forget_bias or chrono_t_max not
        None, reset_after True, a ``cell_options`` key) that the cell's init does not take
        (``CellSpec.options``), with ``rnncells.cells.option_error``'s message, as
        ``rnncells.stack_init``.

    Example:
      >>> cell = make_cell("peephole_lstm", 2, 8, rngs=nnx.Rngs(0))
      >>> carry, h = cell(cell.initialize_carry((4,)), jnp.ones((4, 2)))
    """
    options = _options(forget_bias, chrono_t_max, reset_after, dtype, cell_options)
    return Cell(common.cell_init(rngs.params(), cell, input_size, hidden_size, options))


class LSTMCell(Cell):
    """LSTM cell (``rnncells.cells.lstm``): gates (i, f, g, o), carry ``LSTMState(h, c)``.

    Args:
      input_size: D.
      hidden_size: H.
      forget_bias: initial forget-gate bias b_f (1 by default).
      chrono_t_max: chrono initialisation instead of forget_bias, if given.
      dtype: params dtype (inputs and carries must match it).
      rngs: ``nnx.Rngs``; its ``params`` stream initialises the weights.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        forget_bias: float = 1.0,
        chrono_t_max: float | None = None,
        dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        options = _options(forget_bias, chrono_t_max, False, dtype)
        super().__init__(common.cell_init(rngs.params(), "lstm", input_size, hidden_size, options))


class GRUCell(Cell):
    """GRU cell (``rnncells.cells.gru``): gates (r, z, h), z writes; carry ``GRUState(h)``.

    Args:
      input_size: D.
      hidden_size: H.
      reset_after: False for the seed's reset-before form, True for the cuDNN/PyTorch
        reset-after form with b_hn.
      chrono_t_max: chrono initialisation of the update-gate bias, if given.
      dtype: params dtype.
      rngs: ``nnx.Rngs``; its ``params`` stream initialises the weights.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        reset_after: bool = False,
        chrono_t_max: float | None = None,
        dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        options = _options(None, chrono_t_max, reset_after, dtype)
        super().__init__(common.cell_init(rngs.params(), "gru", input_size, hidden_size, options))


class RNNCell(Cell):
    """tanh RNN cell (``rnncells.cells.rnn``): h_t = tanh(W x_t + V h_{t-1} + b).

    Args:
      input_size: D.
      hidden_size: H.
      dtype: params dtype.
      rngs: ``nnx.Rngs``; its ``params`` stream initialises the weights.
    """

    def __init__(
        self, input_size: int, hidden_size: int, *, dtype: Any = jnp.float32, rngs: nnx.Rngs
    ):
        options = _options(None, None, False, dtype)
        super().__init__(common.cell_init(rngs.params(), "rnn", input_size, hidden_size, options))


def _streams(rngs: nnx.Rngs) -> list[str]:
    return sorted({str(path[0]) for path, _ in nnx.to_flat_state(nnx.state(rngs))})


def _has_dropout_stream(rngs: nnx.Rngs) -> bool:
    """Whether ``rngs.dropout`` exists: a 'dropout' stream, or the 'default' one."""
    return any(name in ("dropout", "default") for name in _streams(rngs))


def _no_dropout_stream(rngs: nnx.Rngs, where: str) -> ValueError:
    return ValueError(
        f"dropout (dropout_rate > 0, deterministic=False) draws its masks from "
        f"rngs['dropout'], and the nnx.Rngs given {where} have no 'dropout' stream (nor a "
        f"'default' one), got streams {_streams(rngs)}: give nnx.Rngs(params=..., "
        "dropout=...) or a PRNG key, or deterministic=True"
    )


def _dropout_key(rngs: Any) -> jax.Array:
    if isinstance(rngs, nnx.Rngs):
        if not _has_dropout_stream(rngs):
            raise _no_dropout_stream(rngs, "to this call")
        return rngs.dropout()
    if isinstance(rngs, nnx.RngStream):
        return rngs()
    if isinstance(rngs, jax.Array):
        return rngs
    raise TypeError(
        f"rngs must be nnx.Rngs, nnx.RngStream or a PRNG key, got {type(rngs).__name__}"
    )


class Layer(nnx.Module):
    """A stack of recurrent layers holding given params; runs ``rnncells.stack_unroll``.

    Args:
      layers: tuple of per-layer params or Bidirectional params (``rnncells.stack_init``,
        ``rnncells.interop.from_torch``).
      merge: how a bidirectional layer's outputs merge: "concat" or "sum".
      dropout_rate: dropout on every layer's outputs but the last's.
      reverse: run every (one-directional) layer from the last valid step to the first.
      deterministic: True disables dropout (also settable per call or by ``nnx.view``).
      unroll: ``jax.lax.scan`` unroll factor; None: ``rnncells.default_unroll``.
      remat: recompute steps in the backward pass.
      kernel: how a fused cell's layers run: None (the measured choice per backend and
        shape), "xla" or "pallas" (``rnncells.unroll``).
      rngs: ``nnx.Rngs`` whose ``dropout`` stream is kept for dropout masks (optional:
        a key can be given per call instead).

    Raises:
      TypeError: an entry of ``layers`` is not a registered cell's params.
      ValueError: ``reverse`` with bidirectional layers (they already run both ways), or
        ``kernel`` not None, "xla" or "pallas".
    """

    def __init__(
        self,
        layers: Sequence[Any],
        *,
        merge: str = "concat",
        dropout_rate: float = 0.0,
        reverse: bool = False,
        deterministic: bool = False,
        unroll: int | None = None,
        remat: bool = False,
        kernel: str | None = None,
        rngs: nnx.Rngs | None = None,
    ):
        _checks.check_layers(layers)
        _checks.check_merge(merge)
        dropout_rate = _checks.check_dropout_rate(dropout_rate)
        reverse = _checks.check_bool("reverse", reverse)
        deterministic = _checks.check_bool("deterministic", deterministic)
        remat = _checks.check_bool("remat", remat)
        kernel = _checks.check_kernel(kernel)
        if reverse and any(isinstance(layer, Bidirectional) for layer in layers):
            raise ValueError("reverse=True does not apply to bidirectional layers (got both)")
        self.layers = nnx.List([_Params(layer) for layer in layers])
        self.merge = merge
        self.dropout_rate = dropout_rate
        self.reverse = reverse
        self.deterministic = deterministic
        self.unroll = unroll
        self.remat = remat
        self.kernel = kernel
        # Without a dropout stream nothing is kept: a call with dropout then needs rngs.
        self._rngs_without_dropout: str | None = None  # their streams, when given so
        if rngs is not None and self.dropout_rate > 0.0 and not _has_dropout_stream(rngs):
            self._rngs_without_dropout = str(_streams(rngs))
            rngs = None
        self.rngs = (
            rngs.dropout.fork() if rngs is not None and self.dropout_rate > 0.0 else nnx.data(None)
        )

    @property
    def params(self) -> tuple[Any, ...]:
        """The stack's params: a tuple, one entry per layer, as ``rnncells.stack_init``."""
        return tuple(layer.get() for layer in self.layers)

    def initialize_carry(self, batch_shape: Sequence[int] | int = ()) -> tuple[Any, ...]:
        """Zero carries, one per layer (Bidirectional pairs for bidirectional layers)."""
        return tuple(
            Bidirectional(init_carry(p.forward, batch_shape), init_carry(p.backward, batch_shape))
            if isinstance(p, Bidirectional)
            else init_carry(p, batch_shape)
            for p in self.params
        )

    def __call__(
        self,
        xs: jax.Array,
        carries: tuple[Any, ...] | None = None,
        *,
        lengths: jax.Array | None = None,
        time_major: bool = False,
        deterministic: bool | None = None,
        rngs: nnx.Rngs | nnx.RngStream | jax.Array | None = None,
    ) -> tuple[tuple[Any, ...], jax.Array]:
        """Runs the stack over ``xs``.

        Args:
          xs: inputs (*batch, T, D), or (T, *batch, D) with ``time_major``.
          carries: optional initial carries, one per layer.
          lengths: optional (*batch,) valid lengths (packed-sequence semantics).
          time_major: whether time is the first axis of ``xs`` and ``ys``.
          deterministic: overrides the module's ``deterministic`` for this call.
          rngs: ``nnx.Rngs``, ``nnx.RngStream`` or PRNG key for the dropout mask,
            overriding the stream kept at construction.

        Returns:
          (final_carries, ys) as ``rnncells.stack_unroll``.

        Raises:
          ValueError: dropout is active but no rngs were given here or at construction.
        """
        if deterministic is None:
            deterministic = self.deterministic
        deterministic = _checks.check_bool("deterministic", deterministic)
        dropout_rate = 0.0 if deterministic else self.dropout_rate
        dropout_key = None
        if dropout_rate > 0.0:
            source = rngs if rngs is not None else self.rngs
            if source is None and self._rngs_without_dropout is not None:
                raise ValueError(
                    "dropout (dropout_rate > 0, deterministic=False) draws its masks from "
                    "rngs['dropout'], and the nnx.Rngs given at construction have no "
                    "'dropout' stream (nor a 'default' one), got streams "
                    f"{self._rngs_without_dropout}: give nnx.Rngs(params=..., dropout=...) "
                    "at construction, rngs per call, or deterministic=True"
                )
            if source is None:
                raise ValueError(
                    "rngs is required for dropout (dropout_rate > 0 and deterministic=False): "
                    "give rngs at construction or per call (its masks come from "
                    "rngs['dropout']), got none"
                )
            dropout_key = _dropout_key(source)
        return common.layer_apply(
            self.params,
            xs,
            carries,
            lengths=lengths,
            reverse=self.reverse,
            merge=self.merge,
            dropout_rate=dropout_rate,
            dropout_key=dropout_key,
            time_major=time_major,
            unroll=self.unroll,
            remat=self.remat,
            kernel=self.kernel,
        )

    def set_view(self, deterministic: bool | None = None):
        """Used by ``nnx.view(module, deterministic=...)``."""
        if deterministic is not None:
            self.deterministic = _checks.check_bool("deterministic", deterministic)


def _make_layer(
    cell: str,
    input_size: int,
    hidden_size: int,
    options: common.CellOptions,
    *,
    num_layers: int,
    bidirectional: bool,
    merge: str,
    rngs: nnx.Rngs,
) -> tuple[Any, ...]:
    return common.layer_init(
        rngs.params(),
        cell,
        input_size,
        hidden_size,
        options,
        num_layers=num_layers,
        bidirectional=bidirectional,
        merge=merge,
    )


def make_layer(
    cell: str,
    input_size: int,
    hidden_size: int,
    *,
    num_layers: int = 1,
    bidirectional: bool = False,
    merge: str = "concat",
    dropout_rate: float = 0.0,
    reverse: bool = False,
    deterministic: bool = False,
    unroll: int | None = None,
    remat: bool = False,
    kernel: str | None = None,
    forget_bias: float | None = None,
    chrono_t_max: float | None = None,
    reset_after: bool = False,
    dtype: Any = jnp.float32,
    rngs: nnx.Rngs,
    **cell_options: Any,
) -> Layer:
    """A ``Layer`` (a stack, ``rnncells.stack_unroll``) of any registered cell, by name.

    Args:
      cell: a registered cell's name ("lstm", "cifg_lstm", "ln_lstm", "irnn", ...).
      input_size: D of the first layer.
      hidden_size: H of every layer.
      num_layers: depth.
      bidirectional: each layer runs forwards and backwards and merges.
      merge: "concat" or "sum" for bidirectional layers.
      dropout_rate: dropout on every layer's outputs but the last's.
      reverse: run every one-directional layer from the last valid step to the first.
      deterministic: True disables dropout.
      unroll: ``jax.lax.scan`` unroll factor; None: ``rnncells.default_unroll``.
      remat: recompute steps in the backward pass.
      kernel: None, "xla" or "pallas", as ``rnncells.unroll``.
      forget_bias: as for ``make_cell``.
      chrono_t_max: as for ``make_cell``.
      reset_after: as for ``make_cell``.
      dtype: params dtype.
      rngs: ``nnx.Rngs``: ``params`` initialises the weights, ``dropout`` is kept for
        dropout masks.
      **cell_options: the cell's own further init options.

    Returns:
      A ``Layer``; ``layer(xs)`` returns (final_carries, ys).

    Raises:
      ValueError: unknown cell name, an option the cell does not take, or what
        ``Layer`` rejects.

    Example:
      >>> layer = make_layer("ln_gru", 2, 16, num_layers=2, rngs=nnx.Rngs(0))
      >>> carries, ys = layer(jnp.ones((4, 10, 2)))          # ys: (4, 10, 16)
    """
    options = _options(forget_bias, chrono_t_max, reset_after, dtype, cell_options)
    layers = _make_layer(
        cell,
        input_size,
        hidden_size,
        options,
        num_layers=num_layers,
        bidirectional=bidirectional,
        merge=merge,
        rngs=rngs,
    )
    return Layer(
        layers,
        merge=merge,
        dropout_rate=dropout_rate,
        reverse=reverse,
        deterministic=deterministic,
        unroll=unroll,
        remat=remat,
        kernel=kernel,
        rngs=rngs,
    )


_LAYER_ARGS = """
    Args:
      input_size: D of the first layer.
      hidden_size: H of every layer.
      num_layers: depth.
      bidirectional: each layer runs forwards and backwards and merges.
      merge: "concat" (outputs 2H) or "sum" (outputs H) for bidirectional layers.
      dropout_rate: dropout on every layer's outputs but the last's (PyTorch's).
      reverse: run every one-directional layer from the last valid step to the first.
      deterministic: True disables dropout.
      unroll: ``jax.lax.scan`` unroll factor; None: ``rnncells.default_unroll``.
      remat: recompute steps in the backward pass.
      kernel: None, "xla" or "pallas", as ``rnncells.unroll``.
      dtype: params dtype.
      rngs: ``nnx.Rngs``: ``params`` initialises the weights, ``dropout`` is kept for
        dropout masks.
"""


class LSTM(Layer):
    __doc__ = (
        "Stacked (optionally bidirectional) LSTM layers, ``rnncells.stack_unroll``.\n"
        + _LAYER_ARGS
        + "      forget_bias, chrono_t_max: as ``rnncells.lstm_init``.\n"
    )

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        num_layers: int = 1,
        bidirectional: bool = False,
        merge: str = "concat",
        dropout_rate: float = 0.0,
        reverse: bool = False,
        deterministic: bool = False,
        unroll: int | None = None,
        remat: bool = False,
        kernel: str | None = None,
        forget_bias: float = 1.0,
        chrono_t_max: float | None = None,
        dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        options = _options(forget_bias, chrono_t_max, False, dtype)
        layers = _make_layer(
            "lstm",
            input_size,
            hidden_size,
            options,
            num_layers=num_layers,
            bidirectional=bidirectional,
            merge=merge,
            rngs=rngs,
        )
        super().__init__(
            layers,
            merge=merge,
            dropout_rate=dropout_rate,
            reverse=reverse,
            deterministic=deterministic,
            unroll=unroll,
            remat=remat,
            kernel=kernel,
            rngs=rngs,
        )


class GRU(Layer):
    __doc__ = (
        "Stacked (optionally bidirectional) GRU layers, ``rnncells.stack_unroll``.\n"
        + _LAYER_ARGS
        + "      reset_after, chrono_t_max: as ``rnncells.gru_init``.\n"
    )

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        num_layers: int = 1,
        bidirectional: bool = False,
        merge: str = "concat",
        dropout_rate: float = 0.0,
        reverse: bool = False,
        deterministic: bool = False,
        unroll: int | None = None,
        remat: bool = False,
        kernel: str | None = None,
        reset_after: bool = False,
        chrono_t_max: float | None = None,
        dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        options = _options(None, chrono_t_max, reset_after, dtype)
        layers = _make_layer(
            "gru",
            input_size,
            hidden_size,
            options,
            num_layers=num_layers,
            bidirectional=bidirectional,
            merge=merge,
            rngs=rngs,
        )
        super().__init__(
            layers,
            merge=merge,
            dropout_rate=dropout_rate,
            reverse=reverse,
            deterministic=deterministic,
            unroll=unroll,
            remat=remat,
            kernel=kernel,
            rngs=rngs,
        )


class RNN(Layer):
    __doc__ = (
        "Stacked (optionally bidirectional) tanh RNN layers, ``rnncells.stack_unroll``.\n"
        + _LAYER_ARGS
    )

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        num_layers: int = 1,
        bidirectional: bool = False,
        merge: str = "concat",
        dropout_rate: float = 0.0,
        reverse: bool = False,
        deterministic: bool = False,
        unroll: int | None = None,
        remat: bool = False,
        kernel: str | None = None,
        dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        options = _options(None, None, False, dtype)
        layers = _make_layer(
            "rnn",
            input_size,
            hidden_size,
            options,
            num_layers=num_layers,
            bidirectional=bidirectional,
            merge=merge,
            rngs=rngs,
        )
        super().__init__(
            layers,
            merge=merge,
            dropout_rate=dropout_rate,
            reverse=reverse,
            deterministic=deterministic,
            unroll=unroll,
            remat=remat,
            kernel=kernel,
            rngs=rngs,
        )
