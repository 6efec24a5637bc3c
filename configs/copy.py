"""Copy memory (Arjovsky et al. 2016; Tallec & Ollivier 2018): standard vs chrono LSTM.

Standard init (all biases zero, the memoryless plateau at 10 ln 8 / (T + 20) = 0.1733 for
T=100) and chrono init (Tallec & Ollivier, b_f ~ log U[1, T_max - 1], T_max = 3T/2):

    python -m experiments.run --config=configs/copy.py --workdir=runs/copy_std
    python -m experiments.run --config=configs/copy.py --workdir=runs/copy_chrono \
        --config.model.init=chrono

About 25 min each on a loaded 2-core CPU (4000 steps, batch 128, 2 seeds). Expected at
this budget (see experiments/results/README.md): chrono leaves the plateau first and ends
clearly below the baseline; the standard init stays near it. The papers' setting
(RMSProp 1e-3, batch 32) is ``--config.optim.optimizer=rmsprop --config.batch_size=32``:
in 2000 steps neither init leaves the plateau.

T=500 as in Tallec & Ollivier, 128 units: an H100 ran it at ~57 steps/s; on the 2-core
CPU two such runs side by side had not finished 100 steps after 5 minutes.
``time_limit_s`` stops a run, resumable, after 200 s:

    python -m experiments.run --config=configs/copy.py --workdir=runs/copy500_chrono \
        --config.task.kwargs.T=500 --config.model.hidden_size=128 \
        --config.model.init=chrono --config.num_steps=100000 --config.time_limit_s=200

On an H100, 10,500 steps (200 s): chrono 0.0248 against the 0.0400 baseline, standard
init 0.0400 (experiments/results/README.md, copy_T500).

Smoke variant (under 30 s, pipeline check only):

    python -m experiments.run --config=configs/copy.py:smoke --workdir=runs/copy_smoke
"""

from rnncells.training.configs.copy import get_config

__all__ = ["get_config"]
