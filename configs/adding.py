"""Adding problem (Arjovsky et al. 2016): LSTM on T=100, Adam, batch 32.

    python -m experiments.run --config=configs/adding.py --workdir=runs/adding
    python -m experiments.run --config=configs/adding.py:smoke --workdir=runs/adding_smoke

The file form of ``rnncells.training.configs.adding``, whose docstring gives the times.
"""

from rnncells.training.configs.adding import get_config

__all__ = ["get_config"]
