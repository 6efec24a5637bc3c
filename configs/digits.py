"""Sequential 8x8 digits (scikit-learn), pixel by pixel (T=64), classified at the last step.

Command (minutes on 2 CPU cores; LSTM/GRU reach high test accuracy, chance is 10%):

    python -m experiments.run --config=configs/digits.py --workdir=runs/digits \
        --config.model.cell=lstm

Smoke variant (under 30 s, pipeline check only):

    python -m experiments.run --config=configs/digits.py:smoke --workdir=runs/digits_smoke
"""

from rnncells.training.configs.digits import get_config

__all__ = ["get_config"]
