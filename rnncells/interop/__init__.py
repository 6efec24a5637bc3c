"""Exact weight converters between rnncells params and other frameworks' RNNs.

Each converter lives in its own module and imports its framework only when called, so
``import rnncells.interop`` needs JAX alone.

- PyTorch ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``: ``from_torch``, ``to_torch``.
"""

from __future__ import annotations

import importlib

_CONVERTERS = {
    "from_torch": "rnncells.interop._torch",
    "to_torch": "rnncells.interop._torch",
}

__all__ = sorted(_CONVERTERS)


def __getattr__(name: str):
    module = _CONVERTERS.get(name)
    if module is None:
        raise AttributeError(f"module 'rnncells.interop' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
