"""Flax linen modules over the pure cells: they create params and call the pure functions.

``pip install rnncells[flax]``. A cell stores the core params NamedTuple as one linen
param named ``"cell"`` (``variables["params"]["cell"]`` is an ``LSTMParams`` & co.), a
layer stores the tuple of ``rnncells.stack_init`` as one param named ``"layers"``.

The cells follow flax's ``RNNCellBase`` contract (``__call__(carry, x) -> (carry, y)``,
``initialize_carry(rng, input_shape)``, ``num_feature_axes``), so they run inside
``flax.linen.RNN`` and ``flax.linen.Bidirectional``; their carries are the core's
(``LSTMState(h, c)``, not Flax's ``(c, h)``). ``Cell`` and ``Layer`` build any
registered cell by name (``Cell(cell="ln_lstm", hidden_size=16)``); the seed's cells
also have their own classes.

Example:
  >>> import flax.linen as nn
  >>> import rnncells.linen as rcnn
  >>> rnn = nn.RNN(rcnn.LSTMCell(hidden_size=16))
  >>> variables = rnn.init(jax.random.key(0), jnp.ones((4, 10, 2)))
  >>> ys = rnn.apply(variables, jnp.ones((4, 10, 2)))   # (4, 10, 16)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnncells import _checks
from rnncells import _modules as common
from rnncells.cells import step_for

__all__ = [
    "Cell",
    "GRU",
    "GRUCell",
    "LSTM",
    "LSTMCell",
    "Layer",
    "RNN",
    "RNNCell",
]


class _LinenCell(Protocol):
    """What ``_CellMethods`` reads from the linen cell it is mixed into."""

    @property
    def cell_name(self) -> str: ...

    @property
    def hidden_size(self) -> int: ...

    @property
    def dtype(self) -> Any: ...

    def param(self, name: str, init_fn: Callable[..., Any], /) -> Any: ...

    def _options(self) -> common.CellOptions: ...


class _CellMethods:
    """The linen cells' shared methods; each cell sets ``cell_name`` and ``_options``."""

    def _options(self) -> common.CellOptions:
        raise NotImplementedError

    def _step(self: _LinenCell, carry: Any, x: jax.Array) -> tuple[Any, jax.Array]:
        options = self._options()
        params = self.param(
            "cell",
            lambda key: common.cell_init(
                key, self.cell_name, x.shape[-1], self.hidden_size, options
            ),
        )
        return step_for(params)(params, carry, x)

    @nn.nowrap
    def initialize_carry(self: _LinenCell, rng: jax.Array, input_shape: tuple[int, ...]) -> Any:
        """Zero carry for inputs of shape ``input_shape`` = (*batch, D); ``rng`` is unused."""
        del rng
        return common.zero_carry(
            self.cell_name,
            input_shape[:-1],
            self.hidden_size,
            jnp.dtype(self.dtype),
            self._options(),
        )

    @property
    def num_feature_axes(self) -> int:
        return 1


class LSTMCell(_CellMethods, nn.RNNCellBase):
    """LSTM cell (``rnncells.lstm_step``): gates (i, f, g, o), carry ``LSTMState(h, c)``.

    Attributes:
      hidden_size: H.
      forget_bias: initial forget-gate bias b_f.
      chrono_t_max: chrono initialisation instead of forget_bias, if given.
      dtype: params dtype (inputs and carries must match it).
    """

    hidden_size: int
    forget_bias: float = 1.0
    chrono_t_max: float | None = None
    dtype: Any = jnp.float32
    cell_name = "lstm"

    def _options(self) -> common.CellOptions:
        return common.CellOptions(self.forget_bias, self.chrono_t_max, False, self.dtype)

    @nn.compact
    def __call__(self, carry: Any, x: jax.Array) -> tuple[Any, jax.Array]:
        """One step; x (*batch, D), carry fields (*batch, H); returns (carry, h_t)."""
        return self._step(carry, x)


class GRUCell(_CellMethods, nn.RNNCellBase):
    """GRU cell (``rnncells.gru_step``): gates (r, z, h), z writes; carry ``GRUState(h)``.

    Attributes:
      hidden_size: H.
      reset_after: False for the seed's reset-before form, True for reset-after.
      chrono_t_max: chrono initialisation of the update-gate bias, if given.
      dtype: params dtype.
    """

    hidden_size: int
    reset_after: bool = False
    chrono_t_max: float | None = None
    dtype: Any = jnp.float32
    cell_name = "gru"

    def _options(self) -> common.CellOptions:
        return common.CellOptions(None, self.chrono_t_max, self.reset_after, self.dtype)

    @nn.compact
    def __call__(self, carry: Any, x: jax.Array) -> tuple[Any, jax.Array]:
        """One step; x (*batch, D), carry.h (*batch, H); returns (carry, h_t)."""
        return self._step(carry, x)


class RNNCell(_CellMethods, nn.RNNCellBase):
    """tanh RNN cell (``rnncells.rnn_step``); carry ``RNNState(h)``.

    Attributes:
      hidden_size: H.
      dtype: params dtype.
    """

    hidden_size: int
    dtype: Any = jnp.float32
    cell_name = "rnn"

    def _options(self) -> common.CellOptions:
        return common.CellOptions(dtype=self.dtype)

    @nn.compact
    def __call__(self, carry: Any, x: jax.Array) -> tuple[Any, jax.Array]:
        """One step; x (*batch, D), carry.h (*batch, H); returns (carry, h_t)."""
        return self._step(carry, x)


class Cell(_CellMethods, nn.RNNCellBase):
    """Any registered cell, by name: ``Cell(cell="peephole_lstm", hidden_size=16)``.

    Its step is the cell's registered step and its carry the cell's (``LSTMState(h, c)``
    for the LSTM family, ``GRUState(h)``, ``RNNState(h)``); the params are stored as one
    linen param ``"cell"``, the cell's params NamedTuple.

    Attributes:
      cell: a registered cell's name (``rnncells.cells.cell_names()``).
      hidden_size: H.
      forget_bias, chrono_t_max, reset_after: passed to the cell's init when given
        (forget_bias and chrono_t_max not None, reset_after True); one the cell's init
        does not take (``CellSpec.options``) raises ``rnncells.cells.option_error``'s
        ValueError, as ``rnncells.stack_init`` (forget_bias None: the init's default).
      dtype: params dtype (inputs and carries must match it).
      cell_options: the cell's own further init options, a mapping, or None.
    """

    cell: str
    hidden_size: int
    forget_bias: float | None = None
    chrono_t_max: float | None = None
    reset_after: bool = False
    dtype: Any = jnp.float32
    cell_options: Any = None

    @property
    def cell_name(self) -> str:
        return self.cell

    def _options(self) -> common.CellOptions:
        return common.CellOptions(
            self.forget_bias, self.chrono_t_max, self.reset_after, self.dtype, self.cell_options
        )

    @nn.compact
    def __call__(self, carry: Any, x: jax.Array) -> tuple[Any, jax.Array]:
        """One step; x (*batch, D), carry fields (*batch, H); returns (carry, y_t)."""
        return self._step(carry, x)


class _LinenLayer(_LinenCell, Protocol):
    """What ``_LayerMethods`` reads from the linen layer it is mixed into."""

    num_layers: int
    bidirectional: bool
    merge: str
    dropout_rate: float
    deterministic: bool | None
    reverse: bool
    unroll: int | None
    remat: bool
    kernel: str | None

    def make_rng(self, name: str, /) -> jax.Array: ...

    def has_rng(self, name: str, /) -> bool: ...


class _LayerMethods:
    """The linen layers' shared ``__call__``; each layer sets ``cell_name``, ``_options``."""

    def _options(self) -> common.CellOptions:
        raise NotImplementedError

    def _run(self: _LinenLayer, xs, carries, lengths, time_major, deterministic):
        dropout_rate = _checks.check_dropout_rate(self.dropout_rate)
        for name in ("bidirectional", "reverse", "remat"):
            _checks.check_bool(name, getattr(self, name))
        _checks.check_kernel(self.kernel)
        for value in (self.deterministic, deterministic):  # None: given at the other place
            if value is not None:
                _checks.check_bool("deterministic", value)
        options = self._options()
        input_size = xs.shape[-1]
        layers = self.param(
            "layers",
            lambda key: common.layer_init(
                key,
                self.cell_name,
                input_size,
                self.hidden_size,
                options,
                num_layers=self.num_layers,
                bidirectional=self.bidirectional,
                merge=self.merge,
            ),
        )
        dropout_key = None
        if dropout_rate > 0.0:
            deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
            # Flax falls back to the 'params' PRNG (given to init) for a missing stream.
            if not deterministic and not (self.has_rng("dropout") or self.has_rng("params")):
                raise ValueError(
                    f"dropout (dropout_rate={dropout_rate}, deterministic=False) draws its "
                    "masks from rngs['dropout'], and none was given: pass "
                    "rngs={'dropout': key} to apply, or deterministic=True"
                )
            if not deterministic:
                dropout_key = self.make_rng("dropout")
        return common.layer_apply(
            layers,
            xs,
            carries,
            lengths=lengths,
            reverse=self.reverse,
            merge=self.merge,
            dropout_rate=0.0 if dropout_key is None else dropout_rate,
            dropout_key=dropout_key,
            time_major=time_major,
            unroll=self.unroll,
            remat=self.remat,
            kernel=self.kernel,
        )


_LAYER_DOC = """

    Attributes:
      hidden_size: H of every layer.
      num_layers: depth.
      bidirectional: each layer runs forwards and backwards and merges.
      merge: "concat" (outputs 2H) or "sum" (outputs H) for bidirectional layers.
      dropout_rate: dropout on every layer's outputs but the last's, from the
        ``"dropout"`` rng collection.
      deterministic: True disables dropout; may be given per call instead.
      reverse: run every one-directional layer from the last valid step to the first.
      unroll: ``jax.lax.scan`` unroll factor; None: ``rnncells.default_unroll``.
      remat: recompute steps in the backward pass.
      kernel: how a fused cell's layers run: None (the measured choice per backend and
        shape), "xla" or "pallas" (``rnncells.unroll``).
      dtype: params dtype.

    ``__call__(xs, carries=None, *, lengths=None, time_major=False,
    deterministic=None) -> (final_carries, ys)``, as ``rnncells.stack_unroll``:
    xs (*batch, T, D), carries one per layer, lengths (*batch,).
"""


class LSTM(_LayerMethods, nn.Module):
    __doc__ = (
        "Stacked LSTM layers running ``rnncells.stack_unroll``; forget_bias and "
        "chrono_t_max as ``rnncells.lstm_init``." + _LAYER_DOC
    )

    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    merge: str = "concat"
    dropout_rate: float = 0.0
    deterministic: bool | None = None
    reverse: bool = False
    unroll: int | None = None
    remat: bool = False
    kernel: str | None = None
    forget_bias: float = 1.0
    chrono_t_max: float | None = None
    dtype: Any = jnp.float32
    cell_name = "lstm"

    def _options(self) -> common.CellOptions:
        return common.CellOptions(self.forget_bias, self.chrono_t_max, False, self.dtype)

    @nn.compact
    def __call__(self, xs, carries=None, *, lengths=None, time_major=False, deterministic=None):
        return self._run(xs, carries, lengths, time_major, deterministic)


class GRU(_LayerMethods, nn.Module):
    __doc__ = (
        "Stacked GRU layers running ``rnncells.stack_unroll``; reset_after and "
        "chrono_t_max as ``rnncells.gru_init``." + _LAYER_DOC
    )

    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    merge: str = "concat"
    dropout_rate: float = 0.0
    deterministic: bool | None = None
    reverse: bool = False
    unroll: int | None = None
    remat: bool = False
    kernel: str | None = None
    reset_after: bool = False
    chrono_t_max: float | None = None
    dtype: Any = jnp.float32
    cell_name = "gru"

    def _options(self) -> common.CellOptions:
        return common.CellOptions(None, self.chrono_t_max, self.reset_after, self.dtype)

    @nn.compact
    def __call__(self, xs, carries=None, *, lengths=None, time_major=False, deterministic=None):
        return self._run(xs, carries, lengths, time_major, deterministic)


class RNN(_LayerMethods, nn.Module):
    __doc__ = "Stacked tanh RNN layers running ``rnncells.stack_unroll``." + _LAYER_DOC

    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    merge: str = "concat"
    dropout_rate: float = 0.0
    deterministic: bool | None = None
    reverse: bool = False
    unroll: int | None = None
    remat: bool = False
    kernel: str | None = None
    dtype: Any = jnp.float32
    cell_name = "rnn"

    def _options(self) -> common.CellOptions:
        return common.CellOptions(dtype=self.dtype)

    @nn.compact
    def __call__(self, xs, carries=None, *, lengths=None, time_major=False, deterministic=None):
        return self._run(xs, carries, lengths, time_major, deterministic)


class Layer(_LayerMethods, nn.Module):
    __doc__ = (
        "Stacked layers of any registered cell, by name, running "
        '``rnncells.stack_unroll``: ``Layer(cell="ln_lstm", hidden_size=16)``.\n\n'
        "    ``cell`` is a registered cell's name; forget_bias, chrono_t_max, reset_after "
        "and cell_options (a mapping of the cell's own init options) as for ``Cell``." + _LAYER_DOC
    )

    cell: str
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    merge: str = "concat"
    dropout_rate: float = 0.0
    deterministic: bool | None = None
    reverse: bool = False
    unroll: int | None = None
    remat: bool = False
    kernel: str | None = None
    forget_bias: float | None = None
    chrono_t_max: float | None = None
    reset_after: bool = False
    dtype: Any = jnp.float32
    cell_options: Any = None

    @property
    def cell_name(self) -> str:
        return self.cell

    def _options(self) -> common.CellOptions:
        return common.CellOptions(
            self.forget_bias, self.chrono_t_max, self.reset_after, self.dtype, self.cell_options
        )

    @nn.compact
    def __call__(self, xs, carries=None, *, lengths=None, time_major=False, deterministic=None):
        return self._run(xs, carries, lengths, time_major, deterministic)
