"""Exact converters between rnncells params and Keras 3's LSTM, GRU and SimpleRNN.

Keras must run on its JAX backend (``KERAS_BACKEND=jax`` set before Python first imports
``keras``): the converters read and write the layers' variables as JAX arrays, and the
layer then computes what rnncells computes on the same arrays.

Keras stores ``kernel`` (D, G*H) and ``recurrent_kernel`` (H, G*H), so x @ kernel: they
are W and V as they stand, up to the gate order.

- ``keras.layers.LSTM``: gates (i, f, c, o), rnncells' (i, f, g, o); ``bias`` (4H,) is b.
  ``unit_forget_bias=True`` only initialises b_f to 1; the forward pass adds nothing
  (unlike Haiku's), so the stored bias is b as it stands.
- ``keras.layers.GRU``: gates (z, r, h), reordered to rnncells' (r, z, h), and z keeps
  the old state, h_t = z ⊙ h_{t-1} + (1 - z) ⊙ h~_t, where rnncells' z writes the
  candidate; since 1 - σ(a) = σ(-a), the z blocks of W, V and b are negated.

  - ``reset_after=True`` (the default, cuDNN's form): h~ = tanh(x W_h + b_h^in +
    r ⊙ (h V_h + b_h^rec)), ``bias`` (2, 3H) holding the input and recurrent biases:
    ``GRUResetAfterParams`` with b = bias[0] + bias[1] for r and z, b_h = bias[0]'s
    candidate block and b_hn = bias[1]'s.
  - ``reset_after=False``: h~ = tanh(x W_h + b_h + (r ⊙ h) V_h), ``bias`` (3H,): the
    seed's reset-before form, ``GRUParams``, candidate computed the same way.
- ``keras.layers.SimpleRNN``: h_t = tanh(x W + b + h V): ``RNNParams``.

The cells (``keras.layers.LSTMCell``, ``GRUCell``, ``SimpleRNNCell``) and
``keras.layers.RNN`` wrapping one of them convert the same way. ``use_bias=False`` converts
to zero biases. Refused with a ValueError: an ``activation`` other than tanh or a
``recurrent_activation`` other than sigmoid (other functions; rnncells' cells are tanh
and sigmoid), and writing a reset-before ``GRUParams`` into a ``reset_after=True`` GRU or
the reverse (different function families).

Not weights, so not converted: ``dropout``, ``recurrent_dropout``, ``stateful``,
``unroll``, ``implementation``, ``return_sequences``, ``return_state``, and the layer's
dtype policy's compute dtype (under mixed precision Keras rounds where rnncells does not;
both converters warn, ``InexactConversionWarning``). A ``go_backwards=True`` layer runs its
params over the reversed sequence and returns its outputs in the order it produced them:
``rc.unroll(..., reverse=True)``'s outputs reversed in time (both converters warn).

Carries: a Keras layer with ``return_state=True`` returns its final states after the
outputs, ``[h, c]`` for an LSTM and ``[h]`` for a GRU or SimpleRNN, and takes the same
list as ``initial_state``; ``from_keras_carry`` and ``to_keras_carry`` convert them.
"""

from __future__ import annotations

import contextlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnncells.cells.gru import GRUParams, GRUResetAfterParams
from rnncells.cells.lstm import LSTMParams, LSTMState
from rnncells.cells.rnn import RNNParams
from rnncells.interop._checks import (
    Leaves,
    carry_from,
    check_core_carry,
    check_own_forward,
    check_params,
    lower_precision,
    type_name,
    warn_inexact,
)
from rnncells.interop._flax_linen import is_zero

_RESET_MISMATCH = (
    "the two reset placements (reset before the recurrent matmul, V_h (r * h), and after "
    "it, r * (V_h h + b_hn)) are different functions and no weights make one equal the "
    "other"
)


def _keras() -> Any:
    """The ``keras`` module, checked to be Keras 3 on its JAX backend."""
    try:
        import keras
    except ImportError as error:
        raise ImportError(
            "rnncells' Keras converters need Keras 3 on its JAX backend: "
            "pip install 'rnncells[interop]' and set the environment variable "
            f"KERAS_BACKEND=jax before keras is first imported (importing keras failed: {error})"
        ) from error
    backend = keras.backend.backend()
    if backend != "jax":
        raise RuntimeError(
            f"Keras is running on its {backend!r} backend, but rnncells' Keras converters "
            "need its JAX backend (they read and write the layers' weights as JAX arrays): "
            "set the environment variable KERAS_BACKEND=jax before keras is first imported, "
            "e.g. os.environ['KERAS_BACKEND'] = 'jax' at the top of your script"
        )
    return keras


@contextlib.contextmanager
def _jax_defaults():
    """JAX's default promotion rules, which Keras's initialisers are written for (some
    broadcast a vector against a matrix, an error under jax_numpy_rank_promotion='raise')."""
    with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
        yield


_LAYER_FORWARD = ("call", "inner_loop", "__call__")  # an RNN layer's forward pass
_CELL_FORWARD = ("call", "__call__")


def _cell_of(keras: Any, layer: Any, argname: str) -> tuple[Any, str]:
    """The Keras cell inside ``layer`` (an RNN layer or a cell), and how messages name it."""
    if isinstance(layer, keras.layers.Bidirectional):
        raise TypeError(
            f"{argname} is keras.layers.Bidirectional: convert its two directions one by one, "
            f"{argname}.forward_layer and {argname}.backward_layer (rc.Bidirectional(forward, "
            "backward) holds the pair)"
        )
    cells = (keras.layers.LSTMCell, keras.layers.GRUCell, keras.layers.SimpleRNNCell)
    layers = (keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN, keras.layers.RNN)
    accepted = "keras.layers.LSTM, GRU or SimpleRNN (or their cells, or keras.layers.RNN of one)"
    if isinstance(layer, keras.layers.RNN):
        # The layer's call runs inner_loop, which runs the cell's call on each step (or,
        # for LSTM and GRU, a fused op of the backend computing the same).
        check_own_forward(argname, layer, layers, _LAYER_FORWARD, "keras.layers.")
        cell, path = layer.cell, f"{argname}.cell"
        if isinstance(cell, keras.layers.StackedRNNCells):
            raise TypeError(
                f"{argname} must be {accepted}, got keras.layers.RNN of StackedRNNCells: "
                f"convert each cell of {argname}.cell.cells on its own"
            )
        if not isinstance(cell, cells):
            raise TypeError(
                f"{argname} must be {accepted}, got {type(layer).__name__} of {type_name(cell)}"
            )
        check_own_forward(path, cell, cells, _CELL_FORWARD, "keras.layers.")
        return cell, path
    if not isinstance(layer, cells):
        raise TypeError(f"{argname} must be {accepted}, got {type_name(layer)}")
    check_own_forward(argname, layer, cells, _CELL_FORWARD, "keras.layers.")
    return layer, argname


def _warn_inexact(layer: Any, cell: Any, argname: str) -> None:
    """Warns (``InexactConversionWarning``) where the Keras layer, with exactly converted
    weights, computes something else than the params: ``go_backwards=True``, or a dtype
    policy computing in a lower precision than its weights (``mixed_bfloat16``)."""
    if getattr(layer, "go_backwards", False):
        warn_inexact(
            f"{argname} has go_backwards=True: Keras runs it over the reversed sequence and "
            "returns its outputs in the order it produced them, so its outputs are not "
            "rc.unroll(step, params, xs)'s but rc.unroll(step, params, xs, "
            "reverse=True)'s reversed in time (ys[:, ::-1]), and its final state is that "
            "unroll's; the weights convert exactly. Compare with that (or build the layer "
            "with go_backwards=False)"
        )
    source = layer if hasattr(layer, "compute_dtype") else cell
    compute, variable = source.compute_dtype, source.variable_dtype
    if lower_precision(compute, variable):
        policy = getattr(getattr(source, "dtype_policy", None), "name", compute)
        warn_inexact(
            f"{argname}'s dtype policy {policy!r} computes in {compute} where its weights "
            f"are {variable}: Keras rounds its matmuls and gates to {compute} where "
            f"rnncells computes in {variable}, so the layer's outputs differ from the "
            "params' (about 1e-3 for bfloat16; docs/interop.md), though the weights "
            f"convert exactly. For outputs that agree to {variable} rounding, build the "
            f"layer with dtype={variable!r}"
        )


def _function_name(fn: Any) -> str:
    return "None (linear)" if fn is None else repr(getattr(fn, "__name__", fn))


def _check_activations(keras: Any, cell: Any, path: str) -> None:
    """ValueError unless the cell's activation is tanh and its recurrent activation (the
    gates') sigmoid: other functions are other cells, which no weights convert into ours."""
    tanhs = {keras.activations.tanh, keras.ops.tanh, jnp.tanh, getattr(jax.nn, "tanh", jnp.tanh)}
    sigmoids = {keras.activations.sigmoid, keras.ops.sigmoid, jax.nn.sigmoid}
    if cell.activation not in tanhs:
        raise ValueError(
            f"{path}.activation must be tanh to convert exactly (rnncells' cells use tanh), "
            f"got {_function_name(cell.activation)}"
        )
    if not isinstance(cell, keras.layers.SimpleRNNCell) and (
        cell.recurrent_activation not in sigmoids
    ):
        raise ValueError(
            f"{path}.recurrent_activation must be sigmoid to convert exactly (rnncells' "
            f"gates are sigmoids), got {_function_name(cell.recurrent_activation)}"
        )


def _params_type(keras: Any, cell: Any) -> type:
    if isinstance(cell, keras.layers.LSTMCell):
        return LSTMParams
    if isinstance(cell, keras.layers.GRUCell):
        return GRUResetAfterParams if cell.reset_after else GRUParams
    return RNNParams


def _num_gates(params_type: type) -> int:
    return {LSTMParams: 4, GRUParams: 3, GRUResetAfterParams: 3, RNNParams: 1}[params_type]


def _keras_name(keras: Any, cell: Any) -> str:
    if isinstance(cell, keras.layers.GRUCell):
        return f"keras.layers.GRU(reset_after={cell.reset_after})"
    return "keras.layers." + type(cell).__name__.removesuffix("Cell")


def _gru_from_keras(x: jax.Array) -> jax.Array:
    """Keras's (z, r, h) blocks, z keeping, as rnncells' (r, z, h), z writing."""
    z, r, h = jnp.split(x, 3, axis=-1)
    return jnp.concatenate([r, -z, h], axis=-1)


def _gru_to_keras(x: jax.Array) -> jax.Array:
    """rnncells' (r, z, h) blocks, z writing, as Keras's (z, r, h), z keeping."""
    r, z, h = jnp.split(x, 3, axis=-1)
    return jnp.concatenate([-z, r, h], axis=-1)


def from_keras(layer: Any) -> Any:
    """rnncells params computing exactly what a Keras recurrent layer computes.

    With ``params = from_keras(layer)``, ``rc.unroll(rc.step_for(params), params, xs)``
    returns the outputs of ``layer(xs)`` for a ``return_sequences=True`` layer (its last
    step otherwise), batch-major as Keras's. The mapping of gates, biases and the GRU's
    update gate is in this module's docstring. The params have the dtype of the layer's
    variables.

    Args:
      layer: a built ``keras.layers.LSTM``, ``keras.layers.GRU`` (``reset_after`` True or
        False) or ``keras.layers.SimpleRNN``, or one of their cells, or
        ``keras.layers.RNN`` wrapping one; activation tanh and (LSTM, GRU)
        recurrent_activation sigmoid; any ``use_bias``.

    Returns:
      ``LSTMParams``, ``GRUResetAfterParams`` (``reset_after=True``), ``GRUParams``
      (``reset_after=False``) or ``RNNParams``: W (D, G*H), V (H, G*H), b (G*H,), and
      b_hn (H,) for the reset-after GRU.

    Warns:
      InexactConversionWarning: the layer has ``go_backwards=True`` (its outputs are
        ``rc.unroll(..., reverse=True)``'s reversed in time), or a dtype policy that
        computes in a lower precision than its weights (``"mixed_bfloat16"``: Keras
        rounds where the params do not, about 1e-3 apart).

    Raises:
      ImportError: Keras is not installed, or fails to import (it does when no
        ``KERAS_BACKEND`` is set and TensorFlow, its default backend, is absent).
      RuntimeError: Keras runs on another backend than JAX.
      TypeError: ``layer`` is not one of the layers above (``keras.layers.Bidirectional``
        and stacked cells included: convert each direction or cell), a subclass of one
        (or of its cell) overriding ``call`` (or the layer's ``inner_loop``: the params
        would compute Keras's layer, not it), or its weights are not floating arrays of
        one dtype (float64 also needs ``jax_enable_x64``).
      ValueError: the layer is not built, its activation is not tanh or its
        recurrent_activation not sigmoid, or a weight's shape does not match ``units``.

    Example:
      >>> layer = keras.layers.GRU(16, return_sequences=True)
      >>> ys = layer(np.ones((4, 10, 3), "float32"))
      >>> params = from_keras(layer)
      >>> type(params).__name__
      'GRUResetAfterParams'
    """
    keras = _keras()
    cell, path = _cell_of(keras, layer, "layer")
    _check_activations(keras, cell, path)
    if not cell.built:
        raise ValueError(
            "layer is not built, so it has no weights yet: call it on an input (layer(xs)) "
            "or build it (layer.build((None, None, input_size)) for a layer, "
            "(None, input_size) for a cell) first"
        )
    _warn_inexact(layer, cell, "layer")
    params_type = _params_type(keras, cell)
    H, G = cell.units, _num_gates(params_type)
    leaves = Leaves(f"{_keras_name(keras, cell)} with units={H}")
    W = leaves(f"{path}.kernel", cell.kernel.value, ("input_size", G * H))
    V = leaves(f"{path}.recurrent_kernel", cell.recurrent_kernel.value, (H, G * H))
    zeros = jnp.zeros((G * H,), W.dtype)
    if params_type is GRUResetAfterParams:
        if cell.bias is None:
            b_in = b_rec = zeros
        else:
            both = leaves(f"{path}.bias", cell.bias.value, (2, G * H), "input and recurrent biases")
            b_in, b_rec = both[0], both[1]
        b = jnp.concatenate([b_in[: 2 * H] + b_rec[: 2 * H], b_in[2 * H :]])
        return GRUResetAfterParams(
            _gru_from_keras(W), _gru_from_keras(V), _gru_from_keras(b), b_rec[2 * H :]
        )
    b = zeros if cell.bias is None else leaves(f"{path}.bias", cell.bias.value, (G * H,))
    if params_type is GRUParams:
        return GRUParams(_gru_from_keras(W), _gru_from_keras(V), _gru_from_keras(b))
    return params_type(W, V, b)


def _keras_weights(params: Any) -> dict[str, jax.Array]:
    """``params`` as Keras's ``kernel``, ``recurrent_kernel`` and ``bias`` values."""
    if isinstance(params, GRUResetAfterParams):
        b_in = _gru_to_keras(params.b)
        b_rec = jnp.concatenate([jnp.zeros_like(b_in[: 2 * params.V.shape[0]]), params.b_hn])
        return {
            "kernel": _gru_to_keras(params.W),
            "recurrent_kernel": _gru_to_keras(params.V),
            "bias": jnp.stack([b_in, b_rec]),
        }
    if isinstance(params, GRUParams):
        W, V, b = (_gru_to_keras(x) for x in params)
        return {"kernel": W, "recurrent_kernel": V, "bias": b}
    return {"kernel": params.W, "recurrent_kernel": params.V, "bias": params.b}


def _new_layer(keras: Any, params: Any) -> Any:
    """An unbuilt Keras layer for ``params``' cell, returning the whole sequence."""
    options = {
        "return_sequences": True,
        "dtype": np.dtype(params.W.dtype).name,
        # Never used (every weight is overwritten); zeros draw nothing from Keras's RNG.
        "kernel_initializer": "zeros",
        "recurrent_initializer": "zeros",
        "bias_initializer": "zeros",
    }
    H = params.V.shape[0]
    if isinstance(params, LSTMParams):
        return keras.layers.LSTM(H, unit_forget_bias=False, **options)
    if isinstance(params, GRUParams | GRUResetAfterParams):
        return keras.layers.GRU(H, reset_after=isinstance(params, GRUResetAfterParams), **options)
    return keras.layers.SimpleRNN(H, **options)


def _check_target(keras: Any, cell: Any, path: str, params: Any) -> None:
    """Checks that ``cell`` (of an existing layer) can hold ``params`` exactly."""
    _check_activations(keras, cell, path)
    wanted = _params_type(keras, cell)
    given = type(params)
    if wanted is not given:
        if {wanted, given} == {GRUParams, GRUResetAfterParams}:
            form = "reset-after" if cell.reset_after else "reset-before"
            raise ValueError(
                f"params is {given.__name__}, but layer is keras.layers.GRU("
                f"reset_after={cell.reset_after}), the {form} GRU: {_RESET_MISMATCH}; "
                f"use a GRU with reset_after={not cell.reset_after} (or to_keras(params) "
                "without a layer)"
            )
        raise TypeError(
            f"layer must be the Keras layer of params' cell ({given.__name__}), got "
            f"{_keras_name(keras, cell)}, whose params are {wanted.__name__}"
        )
    H, D = params.V.shape[0], params.W.shape[0]
    if cell.units != H:
        raise ValueError(
            f"layer has units={cell.units}, but params have hidden_size {H} "
            f"(params.V.shape[0]); they must be equal"
        )
    variable_dtype = np.dtype(cell.variable_dtype)
    if variable_dtype != params.W.dtype:
        raise TypeError(
            f"layer's weights are {variable_dtype}, but params are {np.dtype(params.W.dtype)}; "
            f"they must be equal (convert one or build the layer with "
            f"dtype={np.dtype(params.W.dtype).name!r})"
        )
    if cell.built and cell.kernel.shape[0] != D:
        raise ValueError(
            f"layer was built for input size {cell.kernel.shape[0]} ({path}.kernel has shape "
            f"{tuple(cell.kernel.shape)}), but params have input_size {D} (params.W.shape[0])"
        )
    if not cell.use_bias:
        names = "b and b_hn" if isinstance(params, GRUResetAfterParams) else "b"
        why = "the layer has use_bias=False"
        for name in names.split(" and "):
            if not is_zero(getattr(params, name), f"params.{name}", why):
                raise ValueError(
                    f"layer has use_bias=False, so params.{name} must be all zeros to convert "
                    f"exactly, got non-zero values (use a layer with use_bias=True)"
                )


def to_keras(params: Any, layer: Any = None) -> Any:
    """A Keras layer computing exactly what ``params`` computes.

    Without ``layer``, builds a new one: ``keras.layers.LSTM`` for ``LSTMParams``,
    ``keras.layers.GRU(reset_after=True)`` for ``GRUResetAfterParams``,
    ``keras.layers.GRU(reset_after=False)`` for ``GRUParams`` and
    ``keras.layers.SimpleRNN`` for ``RNNParams``, each with ``units`` = H,
    ``return_sequences=True`` (so ``layer(xs)`` returns what ``rc.unroll`` does, batch-major),
    ``return_state=False``, the params' dtype, Keras's default activations, and zeros as
    initialisers (never used: every weight is set here, and building draws nothing from
    Keras's random state). For other options (``return_state=True``, ``go_backwards``,
    ``stateful``, ...) build your own layer and pass it.

    With ``layer``, writes the params into it, in place, after checking everything: it
    must be the layer (or cell, or ``keras.layers.RNN`` of the cell) of the params' cell,
    with ``units`` = H, tanh and sigmoid activations, weights of the params' dtype, and
    built for input size D or not yet built (it is then built for D). A layer with
    ``use_bias=False`` takes params whose biases are all zeros.

    The GRU's z blocks are negated (Keras's z keeps the old state) and reordered to
    Keras's (z, r, h); for the reset-after GRU, ``bias[0]`` holds b and ``bias[1]`` holds
    zeros but for its candidate block, b_hn. So ``from_keras(to_keras(params))`` returns
    ``params`` exactly.

    Args:
      params: ``LSTMParams``, ``GRUResetAfterParams``, ``GRUParams`` or ``RNNParams``.
      layer: optional Keras layer to write into (see above).

    Returns:
      The built Keras layer holding the params: ``layer`` itself when given.

    Warns:
      InexactConversionWarning: the layer has ``go_backwards=True`` (its outputs are
        ``rc.unroll(..., reverse=True)``'s reversed in time), or a dtype policy that
        computes in a lower precision than its weights (``"mixed_bfloat16"``: Keras
        rounds where the params do not, about 1e-3 apart).

    Raises:
      ImportError: Keras is not installed, or fails to import.
      RuntimeError: Keras runs on another backend than JAX.
      TypeError: ``params`` is not a built-in params NamedTuple, holds non-floating
        arrays or fields of different dtypes (float64 also needs ``jax_enable_x64``);
        ``layer`` is not a supported Keras layer (or is a subclass overriding its or its
        cell's ``call``), is another cell's layer, or holds weights of another dtype than
        the params'.
      ValueError: ``params`` shapes are not W (D, G*H), V (H, G*H), b (G*H,), b_hn (H,);
        ``layer`` has other ``units``, was built for another input size, has an
        activation other than tanh or a recurrent_activation other than sigmoid, is a
        GRU with the other reset placement, or has ``use_bias=False`` while the params'
        biases are not all zero.

    Example:
      >>> params = rc.lstm_init(jax.random.key(0), 3, 16)
      >>> layer = to_keras(params)
      >>> layer(np.ones((4, 10, 3), "float32")).shape
      (4, 10, 16)
    """
    keras = _keras()
    check_params(params)
    D = params.W.shape[0]
    if layer is None:
        layer = _new_layer(keras, params)
        cell, path = layer.cell, "layer.cell"
    else:
        cell, path = _cell_of(keras, layer, "layer")
        _check_target(keras, cell, path, params)
        _warn_inexact(layer, cell, "layer")
    values = _keras_weights(params)
    if not cell.built:
        with _jax_defaults():
            if cell is layer:
                cell.build((None, D))
            else:
                layer.build((None, None, D))
    for name, value in values.items():
        variable = getattr(cell, name)
        if variable is not None:  # bias is None with use_bias=False (checked zero above)
            variable.assign(value)
    return layer


def to_keras_carry(carry: Any) -> list[jax.Array]:
    """A core carry as Keras's states: LSTMState(h, c) -> [h, c]; GRUState(h) -> [h].

    The list is what a ``return_state=True`` layer returns after its outputs, and what
    ``layer(xs, initial_state=...)`` takes.

    Raises:
      TypeError: not an rnncells carry, or fields that are not floating arrays of one
        dtype.
      ValueError: an LSTMState whose h and c differ in shape.
    """
    check_core_carry(carry)
    if isinstance(carry, LSTMState):
        return [carry.h, carry.c]
    return [carry.h]


def _plain_sequence(x: Any) -> bool:
    # Only a plain list or tuple: a NamedTuple is some framework's carry, not Keras's.
    return isinstance(x, list | tuple) and not hasattr(x, "_fields")


def _keras_pair(carry: Any):
    if _plain_sequence(carry) and len(carry) == 2:
        h, c = carry
        return ("carry[0] (h)", h), ("carry[1] (c)", c)
    return None


def from_keras_carry(carry: Any, params: Any) -> Any:
    """Keras's states as the core's carry for ``params``: [h, c] -> LSTMState; [h] -> GRUState.

    Args:
      carry: Keras's states, as a ``return_state=True`` layer returns them after its
        outputs (``ys, *states = layer(xs)``): ``[h, c]`` (list or tuple) for an LSTM,
        ``[h]`` or the array h for a GRU or SimpleRNN, each of shape (*batch, hidden_size)
        and the params' dtype.
      params: the core params (their type picks LSTMState, GRUState or RNNState).

    Returns:
      LSTMState(h, c), GRUState(h) or RNNState(h).

    Raises:
      TypeError: ``carry`` is already an rnncells carry or another NamedTuple, another
        cell's carry, or holds non-floating arrays or arrays of another dtype than the
        params'.
      ValueError: a last dimension other than the hidden size, or h and c of different
        shapes.
    """
    if not isinstance(params, LSTMParams) and _plain_sequence(carry) and len(carry) == 1:
        carry = carry[0]
    return carry_from(carry, params, "Keras", "an [h, c] list", _keras_pair)


__all__ = ["from_keras", "from_keras_carry", "to_keras", "to_keras_carry"]
