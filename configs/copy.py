"""Copy memory (Arjovsky et al. 2016; Tallec & Ollivier 2018): standard vs chrono LSTM.

The file form of ``rnncells.training.configs.copy``, whose docstring gives its commands.
"""

from rnncells.training.configs.copy import get_config

__all__ = ["get_config"]
