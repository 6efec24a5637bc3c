"""Exact converters between rnncells params and Flax linen's recurrent cells.

Flax linen cells keep one ``Dense`` per gate, kernels (in, H) so ``x @ kernel``:

- ``LSTMCell`` / ``OptimizedLSTMCell`` (same variables): ``ii, if, ig, io`` kernels
  (D, H) without bias, ``hi, hf, hg, ho`` kernels (H, H) with the gate's bias. Carry
  ``(c, h)``.
- ``GRUCell``: reset-after, z keeps (h' = (1 - z) n + z h). ``ir, iz, in`` (D, H) with
  bias; ``hr, hz`` (H, H) without; ``hn`` (H, H) with bias b_hn inside the reset product.
  Maps onto ``GRUResetAfterParams`` with the update gate's W, V, b negated
  (1 - σ(a) = σ(-a)), which turns "z keeps" into the seed's "z writes".
- ``SimpleCell``: ``i`` (D, H) with bias, ``h`` (H, H) without; with ``residual=True``
  it adds h before the activation, folded exactly into V + I.

Cells whose gate or activation functions are not sigmoid / tanh are refused: they
compute other functions. A linen cell's ``dtype`` (computation dtype) is not a parameter
and is not converted; with a lower-precision ``dtype`` Flax rounds where we do not, and
``from_flax_linen`` warns (``InexactConversionWarning``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from rnncells._checks import check_positive_int
from rnncells.cells.gru import GRUParams, GRUResetAfterParams
from rnncells.cells.lstm import LSTMParams, LSTMState
from rnncells.cells.rnn import RNNParams
from rnncells.interop._checks import (
    Leaves,
    carry_from,
    check_bool,
    check_core_carry,
    check_own_forward,
    check_params,
    flax_dtype_message,
    lower_precision,
    type_name,
    warn_inexact,
)

_LSTM_GATES = ("i", "f", "g", "o")
_GRU_GATES = ("r", "z", "n")


def _sigmoids():
    return {jax.nn.sigmoid}


def _tanhs():
    return {jnp.tanh, jax.nn.tanh} if hasattr(jax.nn, "tanh") else {jnp.tanh}


def check_functions(cell: Any, gate_fn: Any, activation_fn: Any) -> None:
    """Raises ValueError unless a cell's gate function is sigmoid and activation tanh.

    Args:
      cell: the framework's cell (named in the message).
      gate_fn: its gate function, or None for cells without gates.
      activation_fn: its activation function.
    """
    name = type(cell).__name__
    if gate_fn is not None and gate_fn not in _sigmoids():
        raise ValueError(
            f"{name}.gate_fn must be sigmoid to convert exactly (rnncells gates are "
            f"sigmoids), got {getattr(gate_fn, '__name__', gate_fn)!r}"
        )
    if activation_fn not in _tanhs():
        raise ValueError(
            f"{name}.activation_fn must be tanh to convert exactly (rnncells cells use "
            f"tanh), got {getattr(activation_fn, '__name__', activation_fn)!r}"
        )


def negate_update(params: GRUResetAfterParams) -> GRUResetAfterParams:
    """Negates the update gate's W, V, b blocks: z keeps <-> z writes (an involution)."""
    z = slice(params.V.shape[0], 2 * params.V.shape[0])

    def flip(x):
        return x.at[..., z].set(-x[..., z])

    return params._replace(W=flip(params.W), V=flip(params.V), b=flip(params.b))


def is_zero(x: jax.Array, name: str, why: str) -> bool:
    """True when a concrete array is all zeros; ValueError when it cannot be checked."""
    if isinstance(x, jax.core.Tracer):
        raise ValueError(f"{name} must be concrete to check that it is zero ({why}), got a tracer")
    return not bool(jnp.any(x != 0))


def _layers_of(variables: Mapping) -> tuple[Mapping, str]:
    """The mapping of a cell's Dense layers in ``variables``, and how messages name it."""
    if not isinstance(variables, Mapping):
        raise TypeError(
            f"variables must be a mapping ({{'params': ...}}), got {type_name(variables)}"
        )
    if "params" in variables:
        tree, prefix = variables["params"], "variables['params']"
    else:
        tree, prefix = variables, "variables"
    if not isinstance(tree, Mapping):
        raise TypeError(
            f"{prefix} must be a mapping of the cell's Dense layers, got {type_name(tree)}"
        )
    return tree, prefix


def _reader(cell: Any, variables: Mapping) -> Callable:
    """``read(layer, leaf, shape)``: one checked leaf of a linen cell's variables.

    Checks (see ``Leaves``) that it exists, is a floating array of the first leaf's dtype
    and has ``shape``: the per-gate kernels must agree with ``cell.features`` and with
    each other, or the fused params would be of another width than the cell's.
    """
    tree, prefix = _layers_of(variables)
    leaves = Leaves(f"{type(cell).__name__} with features={cell.features}")

    def read(layer: str, leaf: str, shape) -> jax.Array:
        if layer in tree and not isinstance(tree[layer], Mapping):
            raise TypeError(
                f"{prefix}[{layer!r}] must be a mapping (a Dense layer's kernel and bias), "
                f"got {type_name(tree[layer])}"
            )
        if layer not in tree or leaf not in tree[layer]:
            raise ValueError(
                f"variables of {type(cell).__name__} must hold params[{layer!r}][{leaf!r}], "
                f"got keys {sorted(tree)}"
            )
        return leaves(f"{prefix}[{layer!r}][{leaf!r}]", tree[layer][leaf], shape)

    return read


def from_flax_linen(cell: Any, variables: Mapping) -> Any:
    """rnncells params from a Flax linen cell and its variables.

    Args:
      cell: ``flax.linen.LSTMCell``, ``OptimizedLSTMCell``, ``GRUCell`` or ``SimpleCell``.
      variables: its variables, ``{"params": {...}}`` as returned by ``cell.init``, or
        the inner params dict: per gate, input kernels (D, H), hidden kernels (H, H) and
        biases (H,), H = ``cell.features``, all of one floating dtype.

    Returns:
      LSTMParams (LSTM cells), GRUResetAfterParams (GRUCell) or RNNParams (SimpleCell).

    Warns:
      InexactConversionWarning: the cell's ``dtype`` (its computation dtype) is a
        lower precision than its variables' (``dtype=jnp.bfloat16`` with float32
        params): Flax then rounds where the params do not, about 1e-3 apart.

    Raises:
      TypeError: an unsupported cell type, a subclass overriding ``__call__`` (the params
        would compute Flax's cell, not it), variables not a mapping, or leaves that are
        not floating arrays of one dtype (float64 also needs ``jax_enable_x64``).
      ValueError: a non-sigmoid gate or non-tanh activation function, missing
        variables, or a leaf whose shape does not match ``cell.features`` or the other
        gates' input size.
    """
    params = _from_flax_linen(cell, variables)
    if lower_precision(cell.dtype, params.W.dtype):
        warn_inexact(flax_dtype_message("cell", cell.dtype, params.W.dtype))
    return params


def _from_flax_linen(cell: Any, variables: Mapping) -> Any:
    import flax.linen as nn

    cells = (nn.LSTMCell, nn.OptimizedLSTMCell, nn.GRUCell, nn.SimpleCell)
    if not isinstance(cell, cells):
        raise TypeError(
            "cell must be flax.linen LSTMCell, OptimizedLSTMCell, GRUCell or SimpleCell, "
            f"got {type(cell).__name__}"
        )
    check_own_forward("cell", cell, cells, ("__call__",), "flax.linen.")
    check_functions(cell, getattr(cell, "gate_fn", None), cell.activation_fn)
    H = check_positive_int(f"{type(cell).__name__}.features", cell.features)
    read = _reader(cell, variables)
    if isinstance(cell, nn.SimpleCell):
        W = read("i", "kernel", ("input_size", H))
        V = read("h", "kernel", (H, H))
        b = read("i", "bias", (H,))
        if cell.residual:  # tanh(W x + b + V h + h) = tanh(W x + b + (V + I) h)
            V = V + jnp.eye(H, dtype=V.dtype)
        return RNNParams(W, V, b)
    gates = _GRU_GATES if isinstance(cell, nn.GRUCell) else _LSTM_GATES
    first = read("i" + gates[0], "kernel", ("input_size", H))
    D = first.shape[0]
    Ws = [first] + [read("i" + g, "kernel", (D, H)) for g in gates[1:]]
    Vs = [read("h" + g, "kernel", (H, H)) for g in gates]
    if isinstance(cell, nn.GRUCell):
        bs = [read("i" + g, "bias", (H,)) for g in gates]
        b_hn = read("hn", "bias", (H,))
        W, V, b = (jnp.concatenate(x, -1) for x in (Ws, Vs, bs))
        return negate_update(GRUResetAfterParams(W, V, b, b_hn))
    bs = [read("h" + g, "bias", (H,)) for g in gates]
    return LSTMParams(*(jnp.concatenate(x, -1) for x in (Ws, Vs, bs)))


def _blocks(x: jax.Array, n: int) -> list[jax.Array]:
    return jnp.split(x, n, axis=-1)


def to_flax_linen(params: Any, *, optimized: bool = False) -> tuple[Any, dict]:
    """A Flax linen cell and its variables computing exactly what ``params`` computes.

    Args:
      params: LSTMParams, GRUResetAfterParams or RNNParams.
      optimized: for LSTMParams, return ``OptimizedLSTMCell`` instead of ``LSTMCell``
        (same variables).

    Returns:
      (cell, variables): ``cell.apply(variables, carry, x)`` is one step; variables is
      ``{"params": {...}}``; the cell's ``param_dtype`` is the params' dtype.

    Raises:
      TypeError: params is not a built-in params NamedTuple, holds non-floating arrays or
        fields of different dtypes (float64 also needs ``jax_enable_x64``), or
        ``optimized`` is not a bool.
      ValueError: GRUParams (reset-before; Flax's GRUCell is reset-after, a different
        function family), or shapes that are not W (D, G*H), V (H, G*H), b (G*H,),
        b_hn (H,).
    """
    import flax.linen as nn

    check_params(params)
    check_bool("optimized", optimized)
    dtype = params.W.dtype
    hidden = params.V.shape[0]
    if isinstance(params, LSTMParams):
        tree = {}
        for g, W, V, b in zip(
            _LSTM_GATES,
            _blocks(params.W, 4),
            _blocks(params.V, 4),
            _blocks(params.b, 4),
            strict=True,
        ):
            tree["i" + g] = {"kernel": W}
            tree["h" + g] = {"kernel": V, "bias": b}
        cls = nn.OptimizedLSTMCell if optimized else nn.LSTMCell
        return cls(features=hidden, param_dtype=dtype), {"params": tree}
    if isinstance(params, GRUParams):
        raise ValueError(
            "params is GRUParams (reset-before: V_h (r * h)), but Flax's GRUCell is "
            "reset-after (r * (V_h h + b_hn)); the two are different functions and no "
            "weights make one equal the other"
        )
    if isinstance(params, GRUResetAfterParams):
        flipped = negate_update(params)
        Ws, Vs, bs = _blocks(flipped.W, 3), _blocks(flipped.V, 3), _blocks(flipped.b, 3)
        tree = {}
        for k, g in enumerate(_GRU_GATES):
            tree["i" + g] = {"kernel": Ws[k], "bias": bs[k]}
            tree["h" + g] = {"kernel": Vs[k]}
        tree["hn"]["bias"] = params.b_hn
        return nn.GRUCell(features=hidden, param_dtype=dtype), {"params": tree}
    tree = {"i": {"kernel": params.W, "bias": params.b}, "h": {"kernel": params.V}}
    return nn.SimpleCell(features=hidden, param_dtype=dtype), {"params": tree}


def to_flax_carry(carry: Any) -> Any:
    """A core carry as Flax's (linen and NNX): LSTMState(h, c) -> (c, h); others -> h.

    Raises:
      TypeError: not an rnncells carry, or fields that are not floating arrays of one
        dtype.
      ValueError: an LSTMState whose h and c differ in shape.
    """
    check_core_carry(carry)
    if isinstance(carry, LSTMState):
        return (carry.c, carry.h)
    return carry.h


def _flax_pair(carry: Any):
    # Any NamedTuple (rnncells' LSTMState(h, c), Haiku's LSTMState(hidden, cell)) is a
    # pair too, but in another order than Flax's (c, h): only a plain tuple or list is.
    if isinstance(carry, tuple | list) and not hasattr(carry, "_fields") and len(carry) == 2:
        c, h = carry
        return ("carry[1] (h)", h), ("carry[0] (c)", c)
    return None


def from_flax_carry(carry: Any, params: Any) -> Any:
    """A Flax carry as the core's for ``params``' cell: (c, h) -> LSTMState(h, c); h -> state.

    Args:
      carry: Flax's carry: a (c, h) tuple for LSTM cells, the array h otherwise, each of
        shape (*batch, hidden_size) and the params' dtype.
      params: the core params (their type picks LSTMState, GRUState or RNNState).

    Returns:
      LSTMState(h, c), GRUState(h) or RNNState(h).

    Raises:
      TypeError: ``carry`` is already an rnncells carry (an ``LSTMState(h, c)`` read as
        Flax's (c, h) would swap h and c), another NamedTuple, another cell's carry, or
        holds non-floating arrays or arrays of another dtype than the params'.
      ValueError: a last dimension other than the hidden size, or c and h of different
        shapes.
    """
    return carry_from(carry, params, "Flax", "a (c, h) tuple", _flax_pair)
