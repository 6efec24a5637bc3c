"""Sequential 8x8 digits (scikit-learn), pixel by pixel (T=64), classified at the last step.

Command (minutes on 2 CPU cores; LSTM/GRU reach high test accuracy, chance is 10%):

    python -m experiments.run --config=configs/digits.py --workdir=runs/digits \
        --config.model.cell=lstm

Smoke variant (under 30 s, pipeline check only):

    python -m experiments.run --config=configs/digits.py:smoke --workdir=runs/digits_smoke
"""

from rnncells.training.configs.common import base_config

__all__ = [
    "get_config",
]


def get_config(arg=None):
    c = base_config()
    c.task.name = "digits"
    c.task.kwargs = {"permute": False}
    c.model.cell = "lstm"
    c.model.hidden_size = 64
    c.optim.learning_rate = 3e-3
    c.optim.schedule = "cosine"
    c.batch_size = 64
    c.num_steps = 1500
    c.num_seeds = 3
    c.early_stop = False
    if arg == "smoke":
        c.model.hidden_size = 8
        c.num_steps = 50
        c.num_seeds = 2
        c.log_every = 25
        c.eval_every = 25
        c.checkpoint_every = 25
    elif arg is not None:
        raise ValueError(f"configs/digits.py takes no argument or 'smoke', got {arg!r}")
    return c
