"""Adding problem (Arjovsky et al. 2016): LSTM on T=100, Adam, batch 32.

Command (about 2-3 min on 2 CPU cores; LSTM reaches MSE well below the 0.167 baseline):

    python -m experiments.run --config=configs/adding.py --workdir=runs/adding \
        --config.model.cell=lstm --config.task.kwargs.T=100

Smoke variant (under 30 s, checks the pipeline only; loss stays near the baseline):

    python -m experiments.run --config=configs/adding.py:smoke --workdir=runs/adding_smoke
"""

from rnncells.training.configs.common import base_config

__all__ = [
    "get_config",
]


def get_config(arg=None):
    c = base_config()
    c.task.name = "adding"
    c.task.kwargs.T = 100
    c.model.cell = "lstm"
    c.model.hidden_size = 32  # small enough for CPU; the paper uses 128
    c.optim.learning_rate = 1e-2  # Adam at 1e-2 crosses the baseline plateau quickly
    c.optim.schedule = "cosine"
    c.batch_size = 32
    c.num_steps = 2000
    c.num_seeds = 3
    if arg == "smoke":
        c.task.kwargs.T = 20
        c.model.hidden_size = 8
        c.num_steps = 100
        c.num_seeds = 2
        c.log_every = 25
        c.eval_every = 50
        c.checkpoint_every = 50
        c.eval_batch_size = 64
    elif arg is not None:
        raise ValueError(f"configs/adding.py takes no argument or 'smoke', got {arg!r}")
    return c
