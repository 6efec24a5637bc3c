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

from rnncells.cells.gru import GRUParams, GRUResetAfterParams
from rnncells.cells.lstm import LSTMParams
from rnncells.cells.rnn import RNNParams
from rnncells.interop._checks import (
    Leaves,
    check_bool,
    check_own_forward,
    check_params,
    flax_dtype_message,
    lower_precision,
    type_name,
    warn_inexact,
)
from rnncells.interop._flax_linen import check_functions, is_zero, negate_update

_LSTM_GATES = ("i", "f", "g", "o")


def from_flax_nnx(module: Any) -> Any:
    """rnncells params from a Flax NNX cell.

    Args:
      module: ``flax.nnx.LSTMCell``, ``OptimizedLSTMCell``, ``GRUCell`` or ``SimpleCell``,
        its kernels and biases of the shapes its ``in_features`` and ``hidden_features``
        give, all of one floating dtype.

    Returns:
      LSTMParams (LSTM cells), GRUResetAfterParams with b_hn = 0 (GRUCell) or
      RNNParams (SimpleCell).

    Warns:
      InexactConversionWarning: the module's ``dtype`` (its computation dtype) is a
        lower precision than its weights' (``dtype=jnp.bfloat16`` with float32 weights):
        Flax then rounds where the params do not, about 1e-3 apart.

    Raises:
      TypeError: an unsupported module type, a subclass overriding ``__call__`` (the
        params would compute Flax's cell, not it), or weights that are not floating
        arrays of one dtype (float64 also needs ``jax_enable_x64``).
      ValueError: a non-sigmoid gate or non-tanh activation function, or a weight whose
        shape does not match ``in_features`` and ``hidden_features`` (one replaced after
        construction).
    """
    params = _from_flax_nnx(module)
    compute_dtype = getattr(module, "dtype", None)
    if lower_precision(compute_dtype, params.W.dtype):
        warn_inexact(flax_dtype_message("module", compute_dtype, params.W.dtype))
    return params


def _from_flax_nnx(module: Any) -> Any:
    from flax import nnx

    cells = (nnx.LSTMCell, nnx.OptimizedLSTMCell, nnx.GRUCell, nnx.SimpleCell)
    if not isinstance(module, cells):
        raise TypeError(
            "module must be flax.nnx LSTMCell, OptimizedLSTMCell, GRUCell or SimpleCell, "
            f"got {type(module).__name__}"
        )
    check_own_forward("module", module, cells, ("__call__",), "flax.nnx.")
    check_functions(module, getattr(module, "gate_fn", None), module.activation_fn)
    D, H = module.in_features, module.hidden_features
    leaves = Leaves(f"{type(module).__name__} with in_features={D}, hidden_features={H}")

    def read(path: str, shape: tuple[int, ...]) -> jax.Array:
        variable: Any = module  # then the attribute at each part of the path
        for part in path.split("."):
            variable = getattr(variable, part)
        return leaves(f"module.{path}", variable[...], shape)

    if isinstance(module, nnx.OptimizedLSTMCell):
        W = read("dense_i.kernel", (D, 4 * H))
        return LSTMParams(W, read("dense_h.kernel", (H, 4 * H)), read("dense_h.bias", (4 * H,)))
    if isinstance(module, nnx.LSTMCell):
        names = ["if_" if g == "f" else "i" + g for g in _LSTM_GATES]
        W = jnp.concatenate([read(f"{n}.kernel", (D, H)) for n in names], -1)
        V = jnp.concatenate([read(f"h{g}.kernel", (H, H)) for g in _LSTM_GATES], -1)
        b = jnp.concatenate([read(f"h{g}.bias", (H,)) for g in _LSTM_GATES], -1)
        return LSTMParams(W, V, b)
    if isinstance(module, nnx.GRUCell):
        W = read("dense_i.kernel", (D, 3 * H))
        V = read("dense_h.kernel", (H, 3 * H))
        b = read("dense_i.bias", (3 * H,))
        return negate_update(GRUResetAfterParams(W, V, b, jnp.zeros((H,), V.dtype)))
    W = read("dense_i.kernel", (D, H))
    V = read("dense_h.kernel", (H, H))
    b = read("dense_i.bias", (H,))
    if module.residual:  # tanh(W x + b + V h + h) = tanh(W x + b + (V + I) h)
        V = V + jnp.eye(H, dtype=V.dtype)
    return RNNParams(W, V, b)


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
      TypeError: params is not a built-in params NamedTuple, holds non-floating arrays or
        fields of different dtypes (float64 also needs ``jax_enable_x64``); ``optimized``
        is not a bool or ``rngs`` not an ``nnx.Rngs``.
      ValueError: GRUParams (reset-before; Flax is reset-after), GRUResetAfterParams
        with a non-zero b_hn (Flax NNX's GRUCell has no b_hn), or shapes that are not
        W (D, G*H), V (H, G*H), b (G*H,), b_hn (H,).
    """
    from flax import nnx

    check_params(params)
    check_bool("optimized", optimized)
    if rngs is not None and not isinstance(rngs, nnx.Rngs):
        raise TypeError(f"rngs must be a flax.nnx.Rngs or None, got {type_name(rngs)}")
    rngs = nnx.Rngs(0) if rngs is None else rngs
    D, H = params.W.shape[0], params.V.shape[0]
    kwargs = dict(dtype=params.W.dtype, param_dtype=params.W.dtype, rngs=rngs)
    module: nnx.OptimizedLSTMCell | nnx.LSTMCell | nnx.GRUCell | nnx.SimpleCell
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
