"""Adding problem (Arjovsky et al. 2016): LSTM on T=100, Adam, batch 32.

Command (about 2-3 min on 2 CPU cores; LSTM reaches MSE well below the 0.167 baseline):

    python -m experiments.run --config=configs/adding.py --workdir=runs/adding \
        --config.model.cell=lstm --config.task.kwargs.T=100

Smoke variant (under 30 s, checks the pipeline only; loss stays near the baseline):

    python -m experiments.run --config=configs/adding.py:smoke --workdir=runs/adding_smoke
"""

from rnncells.training.configs.adding import get_config

__all__ = ["get_config"]
