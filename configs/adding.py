"""Adding problem (Arjovsky et al. 2016): LSTM on T=100, Adam, batch 32.

The file form of ``rnncells.training.configs.adding``, whose docstring gives its commands.
"""

from rnncells.training.configs.adding import get_config

__all__ = ["get_config"]
