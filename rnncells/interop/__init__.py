"""Exact weight converters between rnncells params and other frameworks' RNNs.

Each converter lives in its own module and imports its framework only when called, so
``import rnncells.interop`` needs JAX alone.

- PyTorch ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (tanh, and relu as the IRNN):
  ``from_torch``, ``to_torch``; stacked ``(h_n, c_n)`` states ``from_torch_carries``,
  ``to_torch_carries``.
- Flax linen ``LSTMCell`` / ``OptimizedLSTMCell`` / ``GRUCell`` / ``SimpleCell``:
  ``from_flax_linen``, ``to_flax_linen``; carries ``from_flax_carry``, ``to_flax_carry``.
- Flax NNX ``LSTMCell`` / ``OptimizedLSTMCell`` / ``GRUCell`` / ``SimpleCell``:
  ``from_flax_nnx``, ``to_flax_nnx`` (same carry converters as linen).
- Equinox ``LSTMCell`` / ``GRUCell``: ``from_equinox``, ``to_equinox``,
  ``from_equinox_carry``, ``to_equinox_carry``.
- Haiku ``hk.LSTM`` / ``hk.GRU`` / ``hk.VanillaRNN`` (relu: the IRNN) params:
  ``from_haiku``, ``to_haiku``, ``from_haiku_carry``, ``to_haiku_carry``.
- Keras 3 (JAX backend) ``keras.layers.LSTM`` / ``GRU`` (both ``reset_after``) /
  ``SimpleRNN``: ``from_keras``, ``to_keras``; states ``from_keras_carry``,
  ``to_keras_carry``.

Where the weights convert exactly but the other framework's object computes something
else with them (a Keras ``go_backwards=True`` layer or mixed-precision policy, a Flax
cell's lower-precision ``dtype``), the converter warns ``InexactConversionWarning``.
"""

from __future__ import annotations

import importlib

_CONVERTERS = {
    "from_torch": "rnncells.interop._torch",
    "to_torch": "rnncells.interop._torch",
    "from_torch_carries": "rnncells.interop._torch",
    "to_torch_carries": "rnncells.interop._torch",
    "from_flax_linen": "rnncells.interop._flax_linen",
    "to_flax_linen": "rnncells.interop._flax_linen",
    "from_flax_carry": "rnncells.interop._flax_linen",
    "to_flax_carry": "rnncells.interop._flax_linen",
    "from_flax_nnx": "rnncells.interop._flax_nnx",
    "to_flax_nnx": "rnncells.interop._flax_nnx",
    "from_equinox": "rnncells.interop._equinox",
    "to_equinox": "rnncells.interop._equinox",
    "from_equinox_carry": "rnncells.interop._equinox",
    "to_equinox_carry": "rnncells.interop._equinox",
    "from_haiku": "rnncells.interop._haiku",
    "to_haiku": "rnncells.interop._haiku",
    "from_haiku_carry": "rnncells.interop._haiku",
    "to_haiku_carry": "rnncells.interop._haiku",
    "from_keras": "rnncells.interop._keras",
    "to_keras": "rnncells.interop._keras",
    "from_keras_carry": "rnncells.interop._keras",
    "to_keras_carry": "rnncells.interop._keras",
    "InexactConversionWarning": "rnncells.interop._checks",
}

__all__ = sorted(_CONVERTERS)


def __getattr__(name: str):
    module = _CONVERTERS.get(name)
    if module is None:
        raise AttributeError(f"module 'rnncells.interop' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
