"""Sequential 8x8 digits (scikit-learn), pixel by pixel (T=64), classified at the last step.

    python -m experiments.run --config=configs/digits.py --workdir=runs/digits
    python -m experiments.run --config=configs/digits.py:smoke --workdir=runs/digits_smoke

The file form of ``rnncells.training.configs.digits``, whose docstring gives the times.
"""

from rnncells.training.configs.digits import get_config

__all__ = ["get_config"]
