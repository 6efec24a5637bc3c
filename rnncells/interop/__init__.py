"""Exact weight converters between rnncells params and other frameworks' RNNs.

Each converter lives in its own (private) module and imports its framework only when
called, so ``import rnncells.interop`` needs JAX alone.

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

from rnncells.interop._checks import InexactConversionWarning
from rnncells.interop._equinox import (
    from_equinox,
    from_equinox_carry,
    to_equinox,
    to_equinox_carry,
)
from rnncells.interop._flax_linen import (
    from_flax_carry,
    from_flax_linen,
    to_flax_carry,
    to_flax_linen,
)
from rnncells.interop._flax_nnx import from_flax_nnx, to_flax_nnx
from rnncells.interop._haiku import from_haiku, from_haiku_carry, to_haiku, to_haiku_carry
from rnncells.interop._keras import from_keras, from_keras_carry, to_keras, to_keras_carry
from rnncells.interop._torch import from_torch, from_torch_carries, to_torch, to_torch_carries

__all__ = [
    "InexactConversionWarning",
    "from_equinox",
    "from_equinox_carry",
    "from_flax_carry",
    "from_flax_linen",
    "from_flax_nnx",
    "from_haiku",
    "from_haiku_carry",
    "from_keras",
    "from_keras_carry",
    "from_torch",
    "from_torch_carries",
    "to_equinox",
    "to_equinox_carry",
    "to_flax_carry",
    "to_flax_linen",
    "to_flax_nnx",
    "to_haiku",
    "to_haiku_carry",
    "to_keras",
    "to_keras_carry",
    "to_torch",
    "to_torch_carries",
]
