"""Exact converters between rnncells params and Flax NNX's recurrent cells.

Flax NNX cells hold ``nnx.Linear`` layers, kernels (in, out) so ``x @ kernel``:

- ``LSTMCell``: per gate ``ii, if_, ig, io`` (D, H) without bias and ``hi, hf, hg,
  ho`` (H, H) with bias. ``OptimizedLSTMCell``: ``dense_i`` (D, 4H) without bias,
  ``dense_h`` (H, 4H) with bias, gates (i, f, g, o). Carry ``(c, h)``.
- ``GRUCell``: reset-after, z keeps. ``dense_i`` (D, 3H) with bias, ``dense_h`` (H, 3H)
  without, gates (r, z, n); the candidate is tanh(W_n x + b_n + r * (V_n h)): there is
  no b_hn. It maps onto ``GRUResetAfterParams`` with b_hn = 0 and the update gate
  negated; params with a non-zero b_hn cannot be expressed and are refused.
- ``SimpleCell``: ``dense_i`` (D, H) with bias, ``dense_h`` (H, H) without;
  ``residual=True`` is folded exactly into V + I.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rnncells.cells import cell_spec
from rnncells.gru import GRUParams, GRUResetAfterParams
from rnncells.interop._flax_linen import check_functions, is_zero, negate_update
from rnncells.lstm import LSTMParams
from rnncells.rnn import RNNParams

_LSTM_GATES = ("i", "f", "g", "o")


def _value(variable: Any) -> jax.Array:
    return jnp.asarray(variable[...])


def from_flax_nnx(module: Any) -> Any:
    """rnncells params from a Flax NNX cell.

    Args:
      module: ``flax.nnx.LSTMCell``, ``OptimizedLSTMCell``, ``GRUCell`` or ``SimpleCell``.

    Returns:
      LSTMParams (LSTM cells), GRUResetAfterParams with b_hn = 0 (GRUCell) or
      RNNParams (SimpleCell).

    Raises:
      TypeError: an unsupported module type.
      ValueError: a non-sigmoid gate or non-tanh activation function.
    """
    from flax import nnx

    if isinstance(module, nnx.OptimizedLSTMCell):
        check_functions(module, module.gate_fn, module.activation_fn)
        return LSTMParams(
            _value(module.dense_i.kernel),
            _value(module.dense_h.kernel),
            _value(module.dense_h.bias),
        )
    if isinstance(module, nnx.LSTMCell):
        check_functions(module, module.gate_fn, module.activation_fn)
        inputs = [getattr(module, "if_" if g == "f" else "i" + g) for g in _LSTM_GATES]
        hiddens = [getattr(module, "h" + g) for g in _LSTM_GATES]
        return LSTMParams(
            jnp.concatenate([_value(d.kernel) for d in inputs], -1),
            jnp.concatenate([_value(d.kernel) for d in hiddens], -1),
            jnp.concatenate([_value(d.bias) for d in hiddens], -1),
        )
    if isinstance(module, nnx.GRUCell):
        check_functions(module, module.gate_fn, module.activation_fn)
        V = _value(module.dense_h.kernel)
        params = GRUResetAfterParams(
            _value(module.dense_i.kernel),
            V,
            _value(module.dense_i.bias),
            jnp.zeros(V.shape[:1], V.dtype),
        )
        return negate_update(params)
    if isinstance(module, nnx.SimpleCell):
        check_functions(module, None, module.activation_fn)
        V = _value(module.dense_h.kernel)
        if module.residual:  # tanh(W x + b + V h + h) = tanh(W x + b + (V + I) h)
            V = V + jnp.eye(V.shape[0], dtype=V.dtype)
        return RNNParams(_value(module.dense_i.kernel), V, _value(module.dense_i.bias))
    raise TypeError(
        "module must be flax.nnx LSTMCell, OptimizedLSTMCell, GRUCell or SimpleCell, "
        f"got {type(module).__name__}"
    )


def _set(variable: Any, value: jax.Array) -> None:
    variable[...] = value


def to_flax_nnx(params: Any, *, optimized: bool = True, rngs: Any = None) -> Any:
    """A Flax NNX cell computing exactly what ``params`` computes.

    Args:
      params: LSTMParams, GRUResetAfterParams with b_hn = 0, or RNNParams.
      optimized: for LSTMParams, return ``OptimizedLSTMCell`` (fused, the default) or
        ``LSTMCell`` (one Linear per gate).
      rngs: ``nnx.Rngs`` for the module's construction (its random initial weights are
        overwritten); ``nnx.Rngs(0)`` when None.

    Returns:
      The NNX module, ``param_dtype`` and ``dtype`` set to the params' dtype.

    Raises:
      TypeError: params is not a built-in params NamedTuple.
      ValueError: GRUParams (reset-before; Flax is reset-after), or
        GRUResetAfterParams with a non-zero b_hn (Flax NNX's GRUCell has no b_hn).
    """
    from flax import nnx

    cell_spec(params)
    rngs = nnx.Rngs(0) if rngs is None else rngs
    D, H = params.W.shape[0], params.V.shape[0]
    kwargs = dict(dtype=params.W.dtype, param_dtype=params.W.dtype, rngs=rngs)
    if isinstance(params, LSTMParams):
        if optimized:
            module = nnx.OptimizedLSTMCell(D, H, **kwargs)
            _set(module.dense_i.kernel, params.W)
            _set(module.dense_h.kernel, params.V)
            _set(module.dense_h.bias, params.b)
            return module
        module = nnx.LSTMCell(D, H, **kwargs)
        Ws, Vs, bs = (jnp.split(a, 4, axis=-1) for a in params)
        for k, g in enumerate(_LSTM_GATES):
            _set(getattr(module, "if_" if g == "f" else "i" + g).kernel, Ws[k])
            _set(getattr(module, "h" + g).kernel, Vs[k])
            _set(getattr(module, "h" + g).bias, bs[k])
        return module
    if isinstance(params, GRUParams):
        raise ValueError(
            "params is GRUParams (reset-before: V_h (r * h)), but Flax's GRUCell is "
            "reset-after (r * (V_h h)); the two are different functions and no weights "
            "make one equal the other"
        )
    if isinstance(params, GRUResetAfterParams):
        why = "Flax NNX's GRUCell has no b_hn"
        if not is_zero(params.b_hn, "params.b_hn", why):
            raise ValueError(
                f"params.b_hn must be zero: {why} (its candidate is tanh(W_n x + b_n + "
                "r * (V_n h))), got a non-zero b_hn; use to_flax_linen (linen's GRUCell "
                "holds b_hn as hn.bias) or to_equinox"
            )
        flipped = negate_update(params)
        module = nnx.GRUCell(D, H, **kwargs)
        _set(module.dense_i.kernel, flipped.W)
        _set(module.dense_i.bias, flipped.b)
        _set(module.dense_h.kernel, flipped.V)
        return module
    module = nnx.SimpleCell(D, H, **kwargs)
    _set(module.dense_i.kernel, params.W)
    _set(module.dense_i.bias, params.b)
    _set(module.dense_h.kernel, params.V)
    return module
