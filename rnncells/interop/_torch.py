"""Exact weight converters between rnncells stacks and PyTorch's nn.LSTM, nn.GRU and nn.RNN.

A PyTorch recurrent module with ``num_layers`` layers maps onto the tuple that
``rc.stack_init`` returns: one entry per layer, each the cell's params, or
``rc.Bidirectional(forward, backward)`` when the module is bidirectional. Then

    layers = from_torch(module)
    carries, ys = rc.stack_unroll(layers, xs, time_major=not module.batch_first)

computes what ``ys, h_n = module(xs)`` computes (``ys`` equal; the final carries are
``h_n`` rearranged, see ``to_torch_carries``).

Conventions mapped (PyTorch -> rnncells):

- Weights: ``weight_ih_l{k}`` (G*H, D) -> W = weight_ih.T (D, G*H); ``weight_hh_l{k}``
  (G*H, H) -> V = weight_hh.T (H, G*H). The backward direction's names end in
  ``_reverse``. Gate order is PyTorch's: LSTM (i, f, g, o), GRU (r, z, n) = (r, z, h).
- LSTM and RNN: b = bias_ih + bias_hh (only the sum enters the equations).
- LSTM with ``proj_size=P`` (> 0): ``LSTMPParams`` (``rnncells.cells.lstmp``), whose V is
  weight_hh.T (P, 4H) and W_hr = ``weight_hr_l{k}``.T (H, P); its h (the output and the
  recurrent input) is P wide and its c H wide, and layer k > 0 reads P * num_directions
  inputs.
- RNN: ``nonlinearity="tanh"`` (the default) is ``RNNParams``, ``nonlinearity="relu"``
  is the IRNN's ``IRNNParams`` (h_t = relu(W x_t + V h_{t-1} + b)), same layout.
- GRU: PyTorch's GRU is the reset-after form with z meaning "keep",
  h_t = (1 - z'_t) ⊙ h~_t + z'_t ⊙ h_{t-1}. It maps onto ``GRUResetAfterParams``, whose z
  writes (z = 1 - z' = σ(-a)), by negating the z blocks of W, V and b; for the r and z
  blocks b = bias_ih + bias_hh, for the candidate block b = bias_ih and
  b_hn = bias_hh's n block (it sits inside the reset product).
- Carries: PyTorch's ``h_n`` (and ``c_n``) has shape (num_layers * num_directions, *batch, H)
  (``h_n`` P wide with ``proj_size``) with row ``layer * num_directions + direction``
  (direction 0 forward, 1 backward);
  rnncells keeps one carry per layer (``LSTMState(h, c)``, ``GRUState(h)``,
  ``RNNState(h)``, or ``Bidirectional`` of two), see ``from_torch_carries`` and
  ``to_torch_carries``.
- Layout: PyTorch's ``batch_first`` corresponds to ``time_major=not batch_first``;
  variable lengths (``pack_padded_sequence``) correspond to the ``lengths`` argument.
- Dropout between layers is not a weight: pass ``dropout_rate`` to ``stack_unroll``
  yourself if you train with it (the random masks differ from PyTorch's).

Not convertible, refused with an error: reset-before ``GRUParams`` (a different function
family from PyTorch's GRU), ``RNNParams`` (tanh) for ``nn.RNN(nonlinearity="relu")`` and
``IRNNParams`` (relu) for a tanh ``nn.RNN``, ``LSTMParams`` for an ``nn.LSTM`` with
``proj_size > 0`` and ``LSTMPParams`` for one without (the projection is a weight the
other does not have; an ``LSTMPParams`` with P >= H has no PyTorch module).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from rnncells._checks import shape_str
from rnncells.cells.gru import GRUParams, GRUResetAfterParams, GRUState
from rnncells.cells.irnn import IRNNParams
from rnncells.cells.lstm import LSTMParams, LSTMState
from rnncells.cells.lstmp import LSTMPParams
from rnncells.cells.rnn import RNNParams, RNNState
from rnncells.interop._checks import array_dtype, check_dtype_arg, check_own_forward, type_name
from rnncells.layers import Bidirectional

try:
    import torch
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "rnncells.interop.from_torch / to_torch need PyTorch: pip install 'rnncells[torch]'"
    ) from error

# PyTorch ``mode`` -> (params type, carry type, number of gate blocks G).
_CELLS: dict[str, tuple[type, type, int]] = {
    "LSTM": (LSTMParams, LSTMState, 4),
    "GRU": (GRUResetAfterParams, GRUState, 3),
    "RNN_TANH": (RNNParams, RNNState, 1),
    "RNN_RELU": (IRNNParams, RNNState, 1),
}
_ACTIVATIONS = {RNNParams: "tanh", IRNNParams: "relu"}  # nn.RNN's nonlinearity
# The classes whose forward the converted params compute (RNNBase: one built with a mode).
_MODULES = (torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN, torch.nn.RNNBase)
_RESET_BEFORE_MESSAGE = (
    "got GRUParams (the reset-before GRU) for a PyTorch nn.GRU: PyTorch's GRU applies the "
    "reset gate after the recurrent matmul, h~ = tanh(W_h x + b_h + r * (V_h h + b_hn)), "
    "a different function family that no weight conversion maps onto; use "
    "gru_init(..., reset_after=True) (or stack_init('gru', ..., reset_after=True)) for the "
    "PyTorch form"
)


def _check_module(module: Any, argname: str = "module") -> tuple[type[Any], type[Any], int]:
    """Returns (params type, carry type, G) of a supported module, or raises."""
    if not isinstance(module, torch.nn.RNNBase):
        raise TypeError(
            f"{argname} must be a torch.nn.LSTM, torch.nn.GRU or torch.nn.RNN, "
            f"got {type(module).__name__}"
        )
    if module.mode not in _CELLS:
        raise TypeError(
            f"{argname} must be a torch.nn.LSTM, torch.nn.GRU or torch.nn.RNN, "
            f"got {type(module).__name__} with mode {module.mode!r}"
        )
    check_own_forward(argname, module, _MODULES, ("forward", "__call__"), "torch.nn.")
    if module.mode == "LSTM" and _proj_size(module) > 0:
        return LSTMPParams, LSTMState, 4
    return _CELLS[module.mode]


def _proj_size(module) -> int:
    """An nn.LSTM's ``proj_size`` (0: no projection); 0 for the other modules."""
    return getattr(module, "proj_size", 0)


def _out_size(module) -> int:
    """The width of h (each layer's output and recurrent input): P with a projection, H
    otherwise (PyTorch's ``real_hidden_size``)."""
    return _proj_size(module) or module.hidden_size


def _num_directions(module) -> int:
    return 2 if module.bidirectional else 1


def _tensor_to_numpy(name: str, x) -> np.ndarray:
    """A float64 NumPy copy of a floating tensor or array (exact for every float dtype up
    to 64 bits); TypeError for integer, bool or complex ones, which would be cast."""
    if isinstance(x, torch.Tensor):
        if not x.is_floating_point():
            raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
        return x.detach().to(device="cpu", dtype=torch.float64).numpy()
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be a torch.Tensor or an array, got {type_name(x)}")
    dtype = array_dtype(name, x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{name} must have a floating dtype, got {dtype}")
    return np.array(x, dtype=np.float64)  # a writable copy: torch refuses read-only arrays


def _negate_block(x: np.ndarray, block: int, hidden: int) -> np.ndarray:
    """Negates gate block ``block`` (of size ``hidden``) along the last axis of ``x``."""
    x = x.copy()
    x[..., block * hidden : (block + 1) * hidden] *= -1.0
    return x


def _input_width(module, layer: int) -> tuple[int, str]:
    """Layer ``layer``'s input width, and how a message names it."""
    if layer == 0:
        return module.input_size, f"input_size {module.input_size}"
    width = _out_size(module) * _num_directions(module)
    size = "proj_size" if _proj_size(module) else "hidden_size"
    return width, f"layer {layer}'s input {size} * num_directions {width}"


def _module_weight(module, name: str, layer: int, suffix: str, shape, what: str) -> np.ndarray:
    """A parameter of ``module`` as float64 NumPy, checked: floating, of shape ``shape``.

    The module's sizes (input_size, hidden_size) are what the converted params promise;
    a parameter replaced by one of another shape would give params of another cell.
    """
    full = f"module.{name}_l{layer}{suffix}"
    value = _tensor_to_numpy(full, getattr(module, f"{name}_l{layer}{suffix}"))
    if value.shape != shape:
        raise ValueError(
            f"{full} must have shape {shape_str(shape)} ({what}), "
            f"got shape {shape_str(value.shape)}"
        )
    return value


def _layer_from_torch(module, params_type: type, layer: int, suffix: str, dtype) -> Any:
    hidden = module.hidden_size
    G = _CELLS[module.mode][2]
    width, width_what = _input_width(module, layer)
    gates = f"{G} gate blocks * hidden_size {hidden}"

    def read(name: str, shape, what: str) -> np.ndarray:
        return _module_weight(module, name, layer, suffix, shape, what)

    W = read("weight_ih", (G * hidden, width), f"{gates}, {width_what}").T
    out, out_what = _out_size(module), "proj_size" if _proj_size(module) else "hidden_size"
    V = read("weight_hh", (G * hidden, out), f"{gates}, {out_what} {out}").T
    if module.bias:
        b_ih = read("bias_ih", (G * hidden,), gates)
        b_hh = read("bias_hh", (G * hidden,), gates)
    else:
        b_ih = b_hh = np.zeros((W.shape[1],), np.float64)

    def cast(x):
        return jnp.asarray(np.ascontiguousarray(x).astype(dtype))

    if params_type is GRUResetAfterParams:
        b = np.concatenate([b_ih[: 2 * hidden] + b_hh[: 2 * hidden], b_ih[2 * hidden :]])
        z = 1  # PyTorch's z keeps the old state, ours writes the candidate: negate its block
        W, V, b = (_negate_block(x, z, hidden) for x in (W, V, b))
        return GRUResetAfterParams(cast(W), cast(V), cast(b), cast(b_hh[2 * hidden :]))
    if params_type is LSTMPParams:
        W_hr = read("weight_hr", (out, hidden), f"proj_size {out}, hidden_size {hidden}").T
        return LSTMPParams(cast(W), cast(V), cast(b_ih + b_hh), cast(W_hr))
    return params_type(cast(W), cast(V), cast(b_ih + b_hh))


def from_torch(module, *, dtype=jnp.float32) -> tuple[Any, ...]:
    """Converts a PyTorch ``nn.LSTM``, ``nn.GRU`` or ``nn.RNN`` into an rnncells stack.

    The result has the structure ``rc.stack_init`` returns, so that

        layers = from_torch(module)
        carries, ys = rc.stack_unroll(layers, xs, time_major=not module.batch_first)

    gives the outputs ``ys`` of ``module(xs)``, with ``stack_unroll``'s default
    ``merge="concat"`` (PyTorch concatenates the directions, forward first). The mapping
    of weights, biases, the GRU's update gate and the carries is in this module's
    docstring. Weights are read through float64, so reading is exact for float16,
    bfloat16, float32 and float64 modules on any device; biases are summed in float64
    before rounding to ``dtype``. Dropout (``module.dropout``) is not a weight and is not
    converted.

    Args:
      module: ``torch.nn.LSTM`` (any ``proj_size``), ``torch.nn.GRU`` or ``torch.nn.RNN``
        (nonlinearity "tanh" or "relu"), any ``num_layers``, ``bidirectional``,
        ``bias``, ``batch_first``.
      dtype: floating dtype of the returned arrays (float32 by default; float64 needs
        ``jax_enable_x64``).

    Returns:
      A tuple of ``module.num_layers`` entries, each ``LSTMParams``,
      ``GRUResetAfterParams``, ``RNNParams`` (tanh) or ``IRNNParams`` (relu) (W (D_k,
      G*H), V (H, G*H), b (G*H,), b_hn (H,)), or ``LSTMPParams`` for ``proj_size=P``
      (W (D_k, 4H), V (P, 4H), b (4H,), W_hr (H, P)), or ``Bidirectional(forward,
      backward)`` of two when the module is bidirectional. D_0 = input_size,
      D_k = H * num_directions for k > 0 (P * num_directions with a projection).

    Raises:
      TypeError: ``module`` is not one of the three modules (or is a subclass overriding
        ``forward``: the params would compute PyTorch's, not its), holds non-floating
        (e.g. complex) parameters, or ``dtype`` is not floating or is float64 while
        ``jax_enable_x64`` is off (JAX would silently make it float32).
      ValueError: a parameter whose shape does not match the module's sizes.

    Example:
      >>> module = torch.nn.GRU(3, 5, num_layers=2, bidirectional=True)
      >>> layers = from_torch(module)
      >>> type(layers[0]).__name__, type(layers[0].forward).__name__
      ('Bidirectional', 'GRUResetAfterParams')
    """
    params_type, _, _ = _check_module(module)
    dtype = check_dtype_arg(dtype)
    layers = []
    for layer in range(module.num_layers):
        if module.bidirectional:
            forward = _layer_from_torch(module, params_type, layer, "", dtype)
            backward = _layer_from_torch(module, params_type, layer, "_reverse", dtype)
            layers.append(Bidirectional(forward, backward))
        else:
            layers.append(_layer_from_torch(module, params_type, layer, "", dtype))
    return tuple(layers)


def _layer_items(layers: Any, module, kind: str) -> list[tuple[str, int, str, Any]]:
    """Checks a per-layer tuple's structure against ``module``.

    Returns (path, layer, torch name suffix, entry) for every direction of every layer;
    ``kind`` ("params" or "carries") names the argument in error messages.
    """
    if not isinstance(layers, tuple | list) or hasattr(layers, "_fields"):
        # A single params or carry NamedTuple is a tuple too: refuse it rather than
        # reading its fields as layers.
        raise TypeError(
            f"{kind} must be a tuple with one entry per layer (as stack_init and "
            f"stack_unroll return), got {type(layers).__name__}"
        )
    if len(layers) != module.num_layers:
        raise ValueError(
            f"{kind} has {len(layers)} layers but the module has num_layers={module.num_layers}"
        )
    items = []
    for layer, entry in enumerate(layers):
        path = f"{kind}[{layer}]"
        if module.bidirectional != isinstance(entry, Bidirectional):
            if module.bidirectional:
                raise ValueError(
                    f"the module is bidirectional, so {path} must be Bidirectional(forward, "
                    f"backward), got {type(entry).__name__}"
                )
            raise ValueError(
                f"the module is not bidirectional (bidirectional=False), but {path} is "
                "Bidirectional"
            )
        if module.bidirectional:
            items.append((f"{path}.forward", layer, "", entry.forward))
            items.append((f"{path}.backward", layer, "_reverse", entry.backward))
        else:
            items.append((path, layer, "", entry))
    return items


def _check_param_shape(path: str, name: str, x, expected: tuple[int, ...], what: str) -> None:
    dtype = array_dtype(f"{path}.{name}", x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{path}.{name} must have a floating dtype, got {dtype}")
    if tuple(x.shape) != expected:
        raise ValueError(
            f"{path}.{name} must have shape {shape_str(expected)} ({what}), "
            f"got shape {shape_str(x.shape)}"
        )


def _check_layer_params(path: str, params: Any, module, layer: int, params_type: type[Any], G: int):
    if isinstance(params, GRUParams) and params_type is GRUResetAfterParams:
        raise ValueError(f"{path}: {_RESET_BEFORE_MESSAGE}")
    if {type(params), params_type} == {RNNParams, IRNNParams}:
        given, wanted = _ACTIVATIONS[type(params)], _ACTIVATIONS[params_type]
        init = "irnn_init" if wanted == "relu" else "rnn_init"
        raise ValueError(
            f"{path} is {type(params).__name__}, h = {given}(W x + V h + b), but the module is "
            f"nn.RNN(nonlinearity='{wanted}'): different activations, so no weights make "
            f"them equal; use {params_type.__name__} ({init}) for this module"
        )
    if {type(params), params_type} == {LSTMParams, LSTMPParams}:
        proj = _proj_size(module)
        raise ValueError(
            f"{path} is {type(params).__name__}, but the module is nn.LSTM(proj_size={proj}): "
            + (
                "its projection weight_hr has no counterpart in LSTMParams; use LSTMPParams "
                "(lstmp_init(..., proj_size=P))"
                if proj
                else "it has no projection to hold LSTMPParams.W_hr; use nn.LSTM(..., "
                "proj_size=P) with P = W_hr.shape[1]"
            )
        )
    if type(params) is not params_type:
        raise TypeError(
            f"{path} must be {params_type.__name__} for a torch.nn.{type(module).__name__}, "
            f"got {type(params).__name__}"
        )
    hidden, out = module.hidden_size, _out_size(module)
    width = module.input_size if layer == 0 else out * _num_directions(module)
    what = f"layer {layer}: input {width}, hidden_size {hidden}, {G} gate blocks"
    if params_type is LSTMPParams:
        what += f", proj_size {out}"
    _check_param_shape(path, "W", params.W, (width, G * hidden), what)
    _check_param_shape(path, "V", params.V, (out, G * hidden), what)
    _check_param_shape(path, "b", params.b, (G * hidden,), what)
    if params_type is GRUResetAfterParams:
        _check_param_shape(path, "b_hn", params.b_hn, (hidden,), what)
    if params_type is LSTMPParams:
        _check_param_shape(path, "W_hr", params.W_hr, (hidden, out), what)
    for field in params._fields[1:]:  # one dtype per cell, as the core's steps require
        value = getattr(params, field)
        if value.dtype != params.W.dtype:
            raise TypeError(
                f"{path}.{field} must have dtype {params.W.dtype} ({path}.W's dtype), "
                f"got {value.dtype}"
            )


def to_torch(params: Any, module):
    """Writes an rnncells stack into an existing PyTorch module, in place.

    The inverse of ``from_torch``: W and V go to ``weight_ih`` / ``weight_hh`` transposed
    (the GRU's z blocks negated, as PyTorch's z keeps where ours writes), b goes to
    ``bias_ih`` and ``bias_hh`` is set to zero, except the GRU's candidate block of
    ``bias_hh``, which takes b_hn. Values are copied (under ``torch.no_grad``) into the
    module's own parameters, keeping their dtype, device and ``requires_grad``; so
    ``from_torch(to_torch(params, module))`` returns ``params`` exactly when the module's
    dtype holds them exactly (float32 params into a float32 or float64 module).

    Args:
      params: a tuple with one entry per layer, as ``stack_init`` or ``from_torch``
        return, or for a module with ``num_layers=1`` that one layer's entry alone (a
        1-layer stack): ``LSTMParams`` for ``nn.LSTM``, ``GRUResetAfterParams`` for ``nn.GRU``,
        ``RNNParams`` for ``nn.RNN`` (``IRNNParams`` for ``nonlinearity="relu"``),
        ``LSTMPParams`` for ``nn.LSTM(proj_size=P)``, each wrapped in
        ``Bidirectional(forward, backward)`` when the module is bidirectional. Layer k has
        W (D_k, G*H), V (H, G*H), b (G*H,) (and b_hn (H,)), D_0 = input_size,
        D_k = H * num_directions; with a projection V (P, 4H), W_hr (H, P) (written to
        ``weight_hr_l{k}`` transposed) and D_k = P * num_directions.
      module: the ``torch.nn.LSTM`` / ``GRU`` / ``RNN`` to overwrite.

    Returns:
      ``module``, with its parameters overwritten.

    Raises:
      TypeError: ``module`` is not one of the three modules (or is a subclass overriding
        ``forward``); ``params`` is not a tuple (or one layer's params),
        or holds the wrong cell's params, non-floating arrays, arrays that are not JAX or
        NumPy arrays, or a layer whose fields differ in dtype.
      ValueError: the number of layers (one layer's params for a module with
        ``num_layers`` > 1), bidirectionality or a shape does not match the module;
        reset-before ``GRUParams`` for an ``nn.GRU``; non-zero biases for a module with
        ``bias=False``; the other activation's params for an ``nn.RNN``;
        ``LSTMParams`` for an ``nn.LSTM`` with ``proj_size > 0``, ``LSTMPParams`` for one
        without.
    """
    params_type, _, G = _check_module(module)
    if hasattr(params, "_fields"):  # one layer's params (or Bidirectional pair): a 1-layer stack
        if module.num_layers != 1:
            raise ValueError(
                f"params is one layer's {type(params).__name__} (a 1-layer stack), but the "
                f"module has num_layers={module.num_layers}: pass a tuple with one entry per "
                "layer (as stack_init and from_torch return)"
            )
        params = (params,)
    items = _layer_items(params, module, "params")
    hidden = module.hidden_size
    converted = []
    for path, layer, suffix, entry in items:  # check everything before writing anything
        _check_layer_params(path, entry, module, layer, params_type, G)
        # Copies: a float64 array would otherwise be a read-only view, which torch warns on.
        W, V, b = (np.array(x, dtype=np.float64) for x in (entry.W, entry.V, entry.b))
        if params_type is GRUResetAfterParams:
            W, V, b = (_negate_block(x, 1, hidden) for x in (W, V, b))
            b_hh = np.concatenate([np.zeros(2 * hidden), np.asarray(entry.b_hn, np.float64)])
        else:
            b_hh = np.zeros_like(b)
        if not module.bias and (np.any(b != 0) or np.any(b_hh != 0)):
            names = "b and b_hn" if params_type is GRUResetAfterParams else "b"
            raise ValueError(
                f"the module has bias=False, so {path}.{names} must be all zeros, "
                f"got non-zero values (largest |value| {max(np.abs(b).max(), np.abs(b_hh).max())})"
            )
        values = {"weight_ih": W.T, "weight_hh": V.T}
        if params_type is LSTMPParams:
            values["weight_hr"] = np.array(entry.W_hr, dtype=np.float64).T
        if module.bias:
            values.update(bias_ih=b, bias_hh=b_hh)
        converted.append((layer, suffix, values))
    with torch.no_grad():
        for layer, suffix, values in converted:
            for name, value in values.items():
                target = getattr(module, f"{name}_l{layer}{suffix}")
                target.copy_(torch.from_numpy(np.ascontiguousarray(value)))
    return module


def from_torch_carries(module, h0, c0=None, *, dtype=jnp.float32) -> tuple[Any, ...]:
    """Turns PyTorch initial or final states into per-layer carries for ``stack_unroll``.

    Row ``layer * num_directions + direction`` of ``h0`` (and ``c0``) becomes the carry of
    that layer and direction: ``carries[layer]`` is ``LSTMState(h, c)``, ``GRUState(h)`` or
    ``RNNState(h)``, or ``Bidirectional(forward, backward)`` of two.

    Args:
      module: the ``torch.nn.LSTM`` / ``GRU`` / ``RNN`` the states belong to.
      h0: (num_layers * num_directions, *batch, H) tensor or array (batch may be empty,
        as for PyTorch's unbatched input); (..., P) for an LSTM with ``proj_size=P``.
      c0: the LSTM's cell state, (num_layers * num_directions, *batch, H); required for
        an LSTM, refused otherwise.
      dtype: floating dtype of the returned arrays.

    Returns:
      A tuple of ``num_layers`` carries, each field of shape (*batch, H) (h (*batch, P)
      with a projection).

    Raises:
      TypeError: unsupported module (or a subclass overriding ``forward``); non-floating
        (integer, bool, complex) states; ``dtype`` not floating, or float64 while
        ``jax_enable_x64`` is off.
      ValueError: a state of the wrong shape, c0 missing for an LSTM or given otherwise.
    """
    _, state_type, _ = _check_module(module)
    dtype = check_dtype_arg(dtype)
    rows = module.num_layers * _num_directions(module)
    states = {"h0": h0}
    if state_type is LSTMState:
        if c0 is None and isinstance(h0, tuple | list):
            raise ValueError(
                f"h0 is a {type(h0).__name__} (PyTorch's (h_n, c_n) state?), but h0 and c0 "
                "are separate arguments: call from_torch_carries(module, *state)"
            )
        if c0 is None:
            raise ValueError("c0 is required for an nn.LSTM (its carry is (h, c)), got None")
        states["c0"] = c0
    elif c0 is not None:
        raise ValueError(f"c0 must be None for a torch.nn.{type(module).__name__}, got a value")
    arrays = []
    for name, value in states.items():
        value = _tensor_to_numpy(name, value)
        size, what = _state_size(module, name[0])
        if value.ndim < 2 or value.shape[0] != rows or value.shape[-1] != size:
            raise ValueError(
                f"{name} must have shape (num_layers * num_directions = {rows}, *batch, "
                f"{what} = {size}), got shape {shape_str(value.shape)}"
            )
        arrays.append(jnp.asarray(value.astype(dtype)))
    if len(arrays) == 2 and arrays[0].shape[:-1] != arrays[1].shape[:-1]:
        raise ValueError(
            f"h0 and c0 must have the same shape but for the last axis, got "
            f"{shape_str(arrays[0].shape)} and {shape_str(arrays[1].shape)}"
        )
    directions = _num_directions(module)
    carries = []
    for layer in range(module.num_layers):
        per_direction = [
            state_type(*(a[layer * directions + d] for a in arrays)) for d in range(directions)
        ]
        carries.append(Bidirectional(*per_direction) if directions == 2 else per_direction[0])
    return tuple(carries)


def _state_size(module, field: str) -> tuple[int, str]:
    """The last dimension of carry field ``field`` ("h" or "c"), and its name."""
    if field == "h" and _proj_size(module):
        return _proj_size(module), "proj_size"
    return module.hidden_size, "hidden_size"


def to_torch_carries(carries: tuple[Any, ...], module):
    """Turns per-layer carries (as ``stack_unroll`` returns) into PyTorch's ``h_n`` layout.

    The inverse of ``from_torch_carries``: the result compares with the second output of
    ``module(xs)`` and can be passed back to it as the initial state.

    Args:
      carries: a tuple of ``num_layers`` carries (``LSTMState``, ``GRUState``,
        ``RNNState``, or ``Bidirectional`` of two), each field of shape (*batch, H)
        (h (*batch, P) for an LSTM with ``proj_size=P``).
      module: the ``torch.nn.LSTM`` / ``GRU`` / ``RNN`` whose layout to follow.

    Returns:
      ``(h_n, c_n)`` for an LSTM, ``h_n`` otherwise: tensors of shape
      (num_layers * num_directions, *batch, H) (``h_n`` (..., P) with a projection) in
      the module's parameter dtype and device.

    Raises:
      TypeError: unsupported module (or a subclass overriding ``forward``), wrong carry
        types or non-floating carries.
      ValueError: wrong number of layers, bidirectionality, or carry shapes.
    """
    _, state_type, _ = _check_module(module)
    items = _layer_items(carries, module, "carries")
    reference = module.weight_ih_l0
    fields: list[list[np.ndarray]] = [[] for _ in state_type._fields]
    batch = None
    for path, _, _, carry in items:
        if not isinstance(carry, state_type):
            raise TypeError(
                f"{path} must be {state_type.__name__} for a torch.nn.{type(module).__name__}, "
                f"got {type(carry).__name__}"
            )
        for i, (field, value) in enumerate(zip(state_type._fields, carry, strict=True)):
            value = _tensor_to_numpy(f"{path}.{field}", value)
            size, what = _state_size(module, field)
            batch = value.shape[:-1] if batch is None else batch
            if value.ndim < 1 or value.shape != batch + (size,):
                raise ValueError(
                    f"{path}.{field} must have shape (*batch, {what} = {size}), with the "
                    f"same batch in every layer ({shape_str(batch + (size,))}), "
                    f"got shape {shape_str(value.shape)}"
                )
            fields[i].append(value)
    tensors = tuple(
        torch.from_numpy(np.stack(values)).to(device=reference.device, dtype=reference.dtype)
        for values in fields
    )
    return tensors if state_type is LSTMState else tensors[0]


__all__ = ["from_torch", "from_torch_carries", "to_torch", "to_torch_carries"]
