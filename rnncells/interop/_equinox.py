"""Exact converters between rnncells params and Equinox's ``LSTMCell`` / ``GRUCell``.

Equinox stores PyTorch's layout: ``weight_ih`` (G*H, D), ``weight_hh`` (G*H, H), so
W = weight_ih.T and V = weight_hh.T; one ``bias`` (G*H,) on the input side.

- ``LSTMCell``: gates (i, f, g, o); carry ``(h, c)``.
- ``GRUCell``: reset-after with ``bias_n`` = b_hn, gates (r, z, n), and z keeps
  (h' = n + z (h - n)); it maps onto ``GRUResetAfterParams`` with the update gate's
  W, V, b negated.

``use_bias=False`` cells convert to zero biases; converting back gives ``use_bias=True``
cells holding those zeros. Equinox cells take one example at a time (``jax.vmap`` them
for a batch).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rnncells.cells.gru import GRUParams, GRUResetAfterParams
from rnncells.cells.lstm import LSTMParams, LSTMState
from rnncells.interop._checks import (
    Leaves,
    carry_from,
    check_core_carry,
    check_own_forward,
    check_params,
)
from rnncells.interop._flax_linen import negate_update


def from_equinox(module: Any) -> Any:
    """rnncells params from an Equinox cell.

    Args:
      module: ``equinox.nn.LSTMCell`` or ``equinox.nn.GRUCell``, its weights of the shapes
        its ``input_size`` and ``hidden_size`` give, all of one floating dtype.

    Returns:
      LSTMParams or GRUResetAfterParams.

    Raises:
      TypeError: an unsupported module type, a subclass overriding ``__call__`` (the
        params would compute Equinox's cell, not it), or weights that are not floating
        arrays of one dtype (float64 also needs ``jax_enable_x64``).
      ValueError: a weight whose shape does not match ``input_size`` and
        ``hidden_size`` (one replaced with ``eqx.tree_at``).
    """
    import equinox as eqx

    cells = (eqx.nn.LSTMCell, eqx.nn.GRUCell)
    if not isinstance(module, cells):
        raise TypeError(
            f"module must be equinox.nn.LSTMCell or equinox.nn.GRUCell, got {type(module).__name__}"
        )
    check_own_forward("module", module, cells, ("__call__",), "equinox.nn.")
    D, H = module.input_size, module.hidden_size
    G = 4 if isinstance(module, eqx.nn.LSTMCell) else 3
    leaves = Leaves(f"{type(module).__name__} with input_size={D}, hidden_size={H}")
    W = leaves("module.weight_ih", module.weight_ih, (G * H, D)).T
    V = leaves("module.weight_hh", module.weight_hh, (G * H, H)).T
    zeros = jnp.zeros((G * H,), W.dtype)
    b = zeros if module.bias is None else leaves("module.bias", module.bias, (G * H,))
    if isinstance(module, eqx.nn.LSTMCell):
        return LSTMParams(W, V, b)
    b_hn = zeros[:H] if module.bias_n is None else leaves("module.bias_n", module.bias_n, (H,))
    return negate_update(GRUResetAfterParams(W, V, b, b_hn))


def to_equinox(params: Any) -> Any:
    """An Equinox cell computing exactly what ``params`` computes.

    Args:
      params: LSTMParams or GRUResetAfterParams.

    Returns:
      ``equinox.nn.LSTMCell`` or ``equinox.nn.GRUCell`` with ``use_bias=True``, in the
      params' dtype.

    Raises:
      TypeError: params is not a built-in params NamedTuple, or holds non-floating
        arrays or fields of different dtypes (float64 also needs ``jax_enable_x64``).
      ValueError: GRUParams (reset-before; Equinox's GRUCell is reset-after),
        RNNParams (Equinox has no plain RNN cell), or shapes that are not W (D, G*H),
        V (H, G*H), b (G*H,), b_hn (H,).
    """
    import equinox as eqx

    check_params(params)
    if isinstance(params, GRUParams):
        raise ValueError(
            "params is GRUParams (reset-before: V_h (r * h)), but Equinox's GRUCell is "
            "reset-after (r * (V_h h + b_hn)); the two are different functions and no "
            "weights make one equal the other"
        )
    if not isinstance(params, LSTMParams | GRUResetAfterParams):
        raise ValueError(
            f"params must be LSTMParams or GRUResetAfterParams (Equinox has no plain RNN "
            f"cell), got {type(params).__name__}"
        )
    D, H = params.W.shape[0], params.V.shape[0]
    key = jax.random.key(0)  # the random initial weights are all replaced below
    module: eqx.nn.LSTMCell | eqx.nn.GRUCell
    new: tuple[jax.Array, ...]
    if isinstance(params, LSTMParams):
        module = eqx.nn.LSTMCell(D, H, use_bias=True, dtype=params.W.dtype, key=key)
        new = (params.W.T, params.V.T, params.b)
        return eqx.tree_at(lambda m: (m.weight_ih, m.weight_hh, m.bias), module, new)
    flipped = negate_update(params)
    module = eqx.nn.GRUCell(D, H, use_bias=True, dtype=params.W.dtype, key=key)
    new = (flipped.W.T, flipped.V.T, flipped.b, params.b_hn)
    return eqx.tree_at(lambda m: (m.weight_ih, m.weight_hh, m.bias, m.bias_n), module, new)


def to_equinox_carry(carry: Any) -> Any:
    """A core carry as Equinox's: LSTMState(h, c) -> (h, c) tuple; GRUState(h) -> h.

    Raises:
      TypeError: not an rnncells carry, or fields that are not floating arrays of one
        dtype.
      ValueError: an LSTMState whose h and c differ in shape.
    """
    check_core_carry(carry)
    if isinstance(carry, LSTMState):
        return (carry.h, carry.c)
    return carry.h


def _equinox_pair(carry: Any):
    # Only a plain tuple or list: a NamedTuple is some framework's carry, not Equinox's.
    if isinstance(carry, tuple | list) and not hasattr(carry, "_fields") and len(carry) == 2:
        h, c = carry
        return ("carry[0] (h)", h), ("carry[1] (c)", c)
    return None


def from_equinox_carry(carry: Any, params: Any) -> Any:
    """An Equinox carry as the core's for ``params``: (h, c) -> LSTMState; h -> GRUState.

    Args:
      carry: Equinox's carry: an (h, c) tuple for ``LSTMCell``, the array h for
        ``GRUCell``, each of shape (hidden_size,) (or with batch dimensions, as ``vmap``
        gives) and the params' dtype.
      params: the core params (their type picks LSTMState or GRUState).

    Returns:
      LSTMState(h, c) or GRUState(h).

    Raises:
      TypeError: ``carry`` is already an rnncells carry or another NamedTuple, another
        cell's carry, or holds non-floating arrays or arrays of another dtype than the
        params'.
      ValueError: a last dimension other than the hidden size, or h and c of different
        shapes.
    """
    return carry_from(carry, params, "Equinox", "an (h, c) tuple", _equinox_pair)
