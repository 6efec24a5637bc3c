"""Copy memory (Arjovsky et al. 2016; Tallec & Ollivier 2018): standard vs chrono LSTM.

    python -m experiments.run --config=configs/copy.py --workdir=runs/copy
    python -m experiments.run --config=configs/copy.py:smoke --workdir=runs/copy_smoke

The file form of ``rnncells.training.configs.copy``, whose docstring gives the times.
"""

from rnncells.training.configs.copy import get_config

__all__ = ["get_config"]
