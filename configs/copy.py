"""Copy memory (Arjovsky et al. 2016; Tallec & Ollivier 2018): standard vs chrono LSTM.

Command (standard init; minutes on 2 CPU cores; stays at the memoryless baseline
10 ln 8 / (T + 20) = 0.1733 for T=100):

    python -m experiments.run --config=configs/copy.py --workdir=runs/copy_std

Chrono init (Tallec & Ollivier, T_max = 3T/2) goes far below it:

    python -m experiments.run --config=configs/copy.py --workdir=runs/copy_chrono \
        --config.model.init=chrono

Smoke variant (under 30 s, pipeline check only):

    python -m experiments.run --config=configs/copy.py:smoke --workdir=runs/copy_smoke
"""

from configs.common import base_config


def get_config(arg=None):
    c = base_config()
    c.task.name = "copy"
    c.task.kwargs.T = 100
    c.model.cell = "lstm"
    c.model.hidden_size = 64  # paper: 128 (chrono) / 40 (Arjovsky); 64 fits the CPU budget
    c.model.init = "forget_bias"
    c.model.forget_bias = 0.0  # standard init: all biases zero
    c.optim.optimizer = "rmsprop"
    c.optim.learning_rate = 1e-3  # the papers' RMSProp setting
    c.batch_size = 32
    c.num_steps = 2000
    c.num_seeds = 2
    c.eval_batch_size = 200
    if arg == "smoke":
        c.task.kwargs.T = 10
        c.model.hidden_size = 8
        c.num_steps = 100
        c.num_seeds = 2
        c.log_every = 25
        c.eval_every = 50
        c.checkpoint_every = 50
        c.eval_batch_size = 64
        c.progress = False
    elif arg is not None:
        raise ValueError(f"configs/copy.py takes no argument or 'smoke', got {arg!r}")
    return c
