"""The long-dependency studies with fixed step budgets, 5 seeds and 10,000 test sequences.

    python -m experiments.science --study=adding --where=cpu   # train, then score
    python -m experiments.science --report                     # tables and plots

What the command does, row by row, is in ``__main__.py``'s docstring (``--help`` prints
it). The package, each module importing only those above it:

    studies.py    the rows (`Run`), `STUDIES`, `all_rows`, `select`, `COST_ROWS`
    stats.py      t intervals, paired t-tests, Holm's adjustment
    scoring.py    a row's test-set scores and the figures of its training logs
    cost.py       parameters, FLOPs and time of a training step (``--cost``)
    train.py      trains and scores one row, writes its JSON
    report.py     the tables and plots, from the JSON alone (``--report``)
    __main__.py   the command line
"""

from experiments.science.cost import measure_cost, train_flops
from experiments.science.scoring import (
    CRITERIA,
    DIGITS_LAST_PIXELS,
    TEST_KEY,
    constant_outputs,
    digits_linear_baselines,
    eval_curve,
    missing_evaluations,
    scheduled_evaluations,
    score,
    seconds_to_solve,
    steps_to_solve,
    test_batches,
)
from experiments.science.studies import (
    ABLATION_CELLS,
    ADDING_T,
    COPY_T,
    COST_ROWS,
    LR_CELLS,
    LR_GRID,
    NUM_SEEDS,
    REFERENCE,
    RESULTS,
    STUDIES,
    Run,
    all_rows,
    select,
)
from experiments.science.train import environment, train_and_score

__all__ = [
    "ABLATION_CELLS",
    "ADDING_T",
    "COPY_T",
    "COST_ROWS",
    "CRITERIA",
    "DIGITS_LAST_PIXELS",
    "LR_CELLS",
    "LR_GRID",
    "NUM_SEEDS",
    "REFERENCE",
    "RESULTS",
    "STUDIES",
    "TEST_KEY",
    "Run",
    "all_rows",
    "constant_outputs",
    "digits_linear_baselines",
    "environment",
    "eval_curve",
    "measure_cost",
    "missing_evaluations",
    "scheduled_evaluations",
    "score",
    "seconds_to_solve",
    "select",
    "steps_to_solve",
    "test_batches",
    "train_and_score",
    "train_flops",
]
