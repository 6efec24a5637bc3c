"""Sequential 8x8 digits (scikit-learn), pixel by pixel (T=64), classified at the last step.

The file form of ``rnncells.training.configs.digits``, whose docstring gives its commands.
"""

from rnncells.training.configs.digits import get_config

__all__ = ["get_config"]
