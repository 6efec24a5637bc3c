"""Exact converters between rnncells params and Haiku's ``hk.LSTM`` / ``hk.GRU`` params.

Haiku params are nested dicts ``{module_path: {name: array}}``; the module path is the
module's name (``"lstm"``, ``"gru"``, or e.g. ``"model/~/lstm"`` when nested).

- ``hk.LSTM``: one ``hk.Linear`` on concat[x, h] at ``f"{name}/linear"``: ``w``
  (D+H, 4H), ``b`` (4H,), gates (i, g, f, o), and the forward pass adds 1 to the forget
  gate's pre-activation. So W = w[:D], V = w[D:], gates reordered, b_f = b_f' + 1
  (a round trip is exact but for the rounding of that +1 and -1 in the params' dtype).
  Carry ``hk.LSTMState(hidden, cell)``.
- ``hk.GRU``: ``w_i`` (D, 3H), ``w_h`` (H, 3H), ``b`` (3H,) at ``name``, gates
  (z, r, a), reset *before* the recurrent matmul (a = tanh(x W_a + (r h) V_a + b_a)) and
  z writes (h' = (1 - z) h + z a): the seed's form, ``GRUParams`` up to the gate order.
- ``hk.VanillaRNN``: h' = relu(x w_i + b_i + h w_h + b_h), ``hk.Linear`` s at
  ``f"{name}/linear"`` (``w`` (D, H), ``b`` (H,)) and ``f"{name}/linear_1"`` (``w``
  (H, H), and ``b`` (H,) with Haiku's default ``double_bias=True``): rnncells' IRNN
  (``IRNNParams``) with W = w_i, V = w_h, b = b_i + b_h (only the sum enters). ``to_haiku``
  writes b into ``linear`` and zeros into ``linear_1``'s ``b``; the tanh ``RNNParams`` are
  refused both ways (another activation).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from rnncells._checks import shape_str
from rnncells.cells.gru import GRUParams, GRUResetAfterParams
from rnncells.cells.irnn import IRNNParams
from rnncells.cells.lstm import LSTMParams, LSTMState
from rnncells.interop._checks import (
    SEED_PARAMS,
    Leaves,
    carry_from,
    check_bool,
    check_core_carry,
    check_params,
    type_name,
)

KINDS = ("lstm", "gru", "vanilla_rnn")
_ACCEPTED = SEED_PARAMS + (IRNNParams,)
_VANILLA = (
    "hk.VanillaRNN computes h' = relu(W x + b + V h + b_h), and rnncells' RNN is "
    "h' = tanh(W x + V h + b): different activations, so no weights make them equal "
    "(rnncells' IRNN, IRNNParams, is the relu RNN that hk.VanillaRNN converts to)"
)


def _leaf(params: Mapping, module: str, name: str) -> Any:
    if module in params and not isinstance(params[module], Mapping):
        raise TypeError(
            f"params[{module!r}] must be a mapping of parameter names to arrays, "
            f"got {type_name(params[module])}"
        )
    if module not in params or name not in params[module]:
        raise ValueError(
            f"params must hold params[{module!r}][{name!r}] (pass name= for a renamed or "
            f"nested module), got modules {sorted(params)}"
        )
    return params[module][name]


def _check_name(name: Any) -> None:
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a string (the module path) or None, got {type_name(name)}")


def _lstm_from_haiku(params: Mapping, name: str) -> LSTMParams:
    """hk.LSTM's ``w`` (D+H, 4H) and ``b`` (4H,), checked, as LSTMParams."""
    module = f"{name}/linear"
    w_name, b_name = f"params[{module!r}]['w']", f"params[{module!r}]['b']"
    leaves = Leaves("hk.LSTM's gates")
    layout = ("input_size + hidden_size", "4 * hidden_size")
    w = leaves(w_name, _leaf(params, module, "w"), layout)
    rows, width = w.shape
    if width % 4:
        raise ValueError(
            f"{w_name} must have shape (input_size + hidden_size, 4 * hidden_size) (hk.LSTM's "
            f"gates), got shape {shape_str(w.shape)}: {width} is not a multiple of 4"
        )
    hidden = width // 4
    if rows < hidden:
        raise ValueError(
            f"{w_name} must have shape (input_size + hidden_size, 4 * hidden_size) (hk.LSTM "
            f"with hidden_size {hidden}: at least {hidden} rows), got shape {shape_str(w.shape)}"
        )
    b = leaves(b_name, _leaf(params, module, "b"), (width,), f"hk.LSTM with hidden_size {hidden}")
    input_size = rows - hidden
    W = _reorder(w[:input_size], _LSTM_TO_HK, 4)
    V = _reorder(w[input_size:], _LSTM_TO_HK, 4)
    return LSTMParams(W, V, _reorder(b, _LSTM_TO_HK, 4) + _forget_shift(hidden, b.dtype))


def _gru_from_haiku(params: Mapping, name: str) -> GRUParams:
    """hk.GRU's ``w_i`` (D, 3H), ``w_h`` (H, 3H) and ``b`` (3H,), checked, as GRUParams."""
    names = {leaf: f"params[{name!r}][{leaf!r}]" for leaf in ("w_i", "w_h", "b")}
    leaves = Leaves("hk.GRU's gates")
    w_i = leaves(names["w_i"], _leaf(params, name, "w_i"), ("input_size", "3 * hidden_size"))
    w_h = leaves(names["w_h"], _leaf(params, name, "w_h"), ("hidden_size", "3 * hidden_size"))
    hidden = w_h.shape[0]
    if w_h.shape[1] != 3 * hidden:
        raise ValueError(
            f"{names['w_h']} must have shape (hidden_size, 3 * hidden_size) (hk.GRU's gates), "
            f"got shape {shape_str(w_h.shape)}"
        )
    what = f"hk.GRU with hidden_size {hidden}, from {names['w_h']}"
    leaves.check_shape(names["w_i"], w_i, ("input_size", 3 * hidden), what)
    b = leaves(names["b"], _leaf(params, name, "b"), (3 * hidden,), what)
    return GRUParams(*(_reorder(x, _GRU_TO_HK, 3) for x in (w_i, w_h, b)))


def _vanilla_from_haiku(params: Mapping, name: str) -> IRNNParams:
    """hk.VanillaRNN's two linears, checked, as IRNNParams (b = b_i + b_h)."""
    i_module, h_module = f"{name}/linear", f"{name}/linear_1"
    names = {
        "w_i": f"params[{i_module!r}]['w']",
        "b_i": f"params[{i_module!r}]['b']",
        "w_h": f"params[{h_module!r}]['w']",
        "b_h": f"params[{h_module!r}]['b']",
    }
    leaves = Leaves("hk.VanillaRNN's weights")
    w_h = leaves(names["w_h"], _leaf(params, h_module, "w"), ("hidden_size", "hidden_size"))
    hidden = w_h.shape[0]
    what = f"hk.VanillaRNN with hidden_size {hidden}, from {names['w_h']}"
    leaves.check_shape(names["w_h"], w_h, (hidden, hidden), what)
    w_i = leaves(names["w_i"], _leaf(params, i_module, "w"), ("input_size", hidden), what)
    b = leaves(names["b_i"], _leaf(params, i_module, "b"), (hidden,), what)
    if "b" in params[h_module]:  # double_bias=True (Haiku's default)
        b = b + leaves(names["b_h"], params[h_module]["b"], (hidden,), what)
    return IRNNParams(w_i, w_h, b)


def _reorder(x: jax.Array, order: tuple[int, ...], num_gates: int) -> jax.Array:
    blocks = jnp.split(x, num_gates, axis=-1)
    return jnp.concatenate([blocks[k] for k in order], axis=-1)


_LSTM_TO_HK = (0, 2, 1, 3)  # ours (i, f, g, o) <-> Haiku's (i, g, f, o), an involution
_GRU_TO_HK = (1, 0, 2)  # ours (r, z, h) <-> Haiku's (z, r, a), an involution


def _forget_shift(hidden: int, dtype) -> jax.Array:
    """+1 on the forget block of a fused (i, f, g, o) bias: Haiku's built-in forget bias."""
    z = jnp.zeros((hidden,), dtype)
    return jnp.concatenate([z, jnp.ones((hidden,), dtype), z, z])


def from_haiku(params: Mapping, kind: str, *, name: str | None = None) -> Any:
    """rnncells params from the params of a Haiku recurrent core.

    Args:
      params: Haiku params, ``{module_path: {param_name: array}}`` (from ``init``).
      kind: "lstm" (``hk.LSTM``), "gru" (``hk.GRU``) or "vanilla_rnn"
        (``hk.VanillaRNN``, either ``double_bias``).
      name: the core's module path; defaults to ``kind`` (Haiku's default names).

    Returns:
      LSTMParams (with b_f including Haiku's +1), GRUParams (reset-before, z writes) or
      IRNNParams (relu; b = the two linears' biases summed).

    Raises:
      TypeError: params (or a module's entry) not a mapping, ``name`` not a string, or
        leaves that are not floating arrays of one dtype (float64 also needs
        ``jax_enable_x64``).
      ValueError: unknown kind, missing params, or shapes that are not the core's: LSTM
        ``w`` (D+H, 4H) and ``b`` (4H,); GRU ``w_i`` (D, 3H), ``w_h`` (H, 3H), ``b``
        (3H,); VanillaRNN ``linear`` ``w`` (D, H), ``b`` (H,), ``linear_1`` ``w`` (H, H)
        and ``b`` (H,) if present.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a Haiku params mapping, got {type(params).__name__}")
    _check_name(name)
    name = kind if name is None else name
    if kind == "lstm":
        return _lstm_from_haiku(params, name)
    if kind == "vanilla_rnn":
        return _vanilla_from_haiku(params, name)
    return _gru_from_haiku(params, name)


def to_haiku(
    params: Any, *, name: str | None = None, double_bias: bool = True
) -> dict[str, dict[str, jax.Array]]:
    """Haiku params for ``hk.LSTM`` / ``hk.GRU`` / ``hk.VanillaRNN`` computing exactly what
    ``params`` computes.

    Args:
      params: LSTMParams, GRUParams or IRNNParams.
      name: the Haiku module path; "lstm", "gru" or "vanilla_rnn" (Haiku's default
        names) when None.
      double_bias: IRNNParams only: the ``double_bias`` of the ``hk.VanillaRNN`` the
        params are for (Haiku's default True: ``linear_1`` has a ``b``, written as zeros).

    Returns:
      ``{f"{name}/linear": {"w", "b"}}`` for LSTMParams (b_f minus Haiku's +1),
      ``{name: {"w_i", "w_h", "b"}}`` for GRUParams, or ``{f"{name}/linear": {"w": W,
      "b": b}, f"{name}/linear_1": {"w": V, "b": 0}}`` for IRNNParams.

    Raises:
      TypeError: params is not a built-in params NamedTuple, holds non-floating arrays or
        fields of different dtypes (float64 also needs ``jax_enable_x64``), ``name`` is
        not a string or ``double_bias`` not a bool.
      ValueError: GRUResetAfterParams (Haiku's GRU is reset-before), RNNParams
        (hk.VanillaRNN is relu), another cell's params, or shapes that are not W (D, G*H),
        V (H, G*H), b (G*H,).
    """
    check_params(params, _ACCEPTED)
    _check_name(name)
    check_bool("double_bias", double_bias)
    if isinstance(params, IRNNParams):
        name = "vanilla_rnn" if name is None else name
        linear_1 = {"w": params.V}
        if double_bias:
            linear_1["b"] = jnp.zeros_like(params.b)
        return {f"{name}/linear": {"w": params.W, "b": params.b}, f"{name}/linear_1": linear_1}
    if isinstance(params, LSTMParams):
        name = "lstm" if name is None else name
        hidden = params.V.shape[0]
        w = _reorder(jnp.concatenate([params.W, params.V], axis=0), _LSTM_TO_HK, 4)
        b = _reorder(params.b - _forget_shift(hidden, params.b.dtype), _LSTM_TO_HK, 4)
        return {f"{name}/linear": {"w": w, "b": b}}
    if isinstance(params, GRUParams):
        name = "gru" if name is None else name
        w_i, w_h, b = (_reorder(x, _GRU_TO_HK, 3) for x in params)
        return {name: {"w_i": w_i, "w_h": w_h, "b": b}}
    if isinstance(params, GRUResetAfterParams):
        raise ValueError(
            "params is GRUResetAfterParams (reset-after: r * (V_h h + b_hn)), but hk.GRU "
            "is reset-before (V_h (r * h)); the two are different functions and no "
            "weights make one equal the other"
        )
    raise ValueError(f"cannot convert RNNParams to Haiku: {_VANILLA}")


def to_haiku_carry(carry: Any) -> Any:
    """A core carry as Haiku's: LSTMState(h, c) -> hk.LSTMState(hidden, cell); GRUState
    (hk.GRU) and RNNState (hk.VanillaRNN) -> h.

    Raises:
      TypeError: not an rnncells carry (``hk.LSTMState`` is Haiku's already), or fields
        that are not floating arrays of one dtype.
      ValueError: an LSTMState whose h and c differ in shape.
    """
    check_core_carry(carry)
    if isinstance(carry, LSTMState):
        import haiku as hk

        return hk.LSTMState(hidden=carry.h, cell=carry.c)
    return carry.h


def _haiku_pair(carry: Any):
    if hasattr(carry, "hidden") and hasattr(carry, "cell"):
        return ("carry.hidden", carry.hidden), ("carry.cell", carry.cell)
    return None


def from_haiku_carry(carry: Any, params: Any) -> Any:
    """A Haiku carry as the core's: hk.LSTMState(hidden, cell) -> LSTMState(h, c); the
    array h -> GRUState(h) (hk.GRU) or RNNState(h) (hk.VanillaRNN).

    Args:
      carry: Haiku's carry: ``hk.LSTMState(hidden, cell)`` for ``hk.LSTM``, the array h
        for ``hk.GRU`` and ``hk.VanillaRNN``, each of shape (*batch, hidden_size) and the
        params' dtype.
      params: the core params (their type picks LSTMState, GRUState or RNNState).

    Returns:
      LSTMState(h, c), GRUState(h) or RNNState(h).

    Raises:
      TypeError: ``carry`` is already an rnncells carry, another cell's carry (an
        ``hk.LSTMState`` for GRU params), or holds non-floating arrays or arrays of
        another dtype than the params'.
      ValueError: a last dimension other than the hidden size, or hidden and cell of
        different shapes.
    """
    return carry_from(carry, params, "Haiku", "hk.LSTMState(hidden, cell)", _haiku_pair, _ACCEPTED)
