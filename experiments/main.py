"""The default experiment: tanh RNN vs GRU vs LSTM on the adding problem at T=100.

    python -m experiments.main --workdir=runs/main

Trains the three cells (3 seeds each, trained in one program; Adam 1e-2 with cosine
decay, clipping at 1, batch 32, 32 hidden units, up to 2000 steps, stopping early once
every seed is below MSE 0.01) with ``configs/adding.py``, then prints the table of final
held-out MSE (mean ± std over seeds) against the 0.167 baseline and writes to the
workdir ``report.md``, ``learning_curves.png``, ``gates_*.png`` and
``gradient_flow.png``. Expected: GRU and LSTM far below the baseline (MSE ~1e-3), the
tanh RNN at it (~0.17). Under a minute on 2 quiet CPU cores (README.md). Rerunning resumes
or reuses the finished runs.

It runs on several processes like ``experiments.run`` (``--coordinator_address``,
``--num_processes``, ``--process_id``, or a detected cluster): each run is trained by all
of them together, and process 0 writes the report. The gate and gradient-flow plots are
then left out (they are drawn on one process); draw them afterwards with
``python -m experiments.diagnostics --workdir=...``.
"""

from __future__ import annotations

import time

from experiments import extra

extra.require_extra("python -m experiments.main")

from absl import app, flags, logging  # noqa: E402

from configs.adding import get_config  # noqa: E402
from experiments import diagnostics, report, sweep  # noqa: E402
from experiments.cli import user_errors  # noqa: E402
from experiments.run import define_multiprocess_flags, start_processes  # noqa: E402

CELLS = ("rnn", "gru", "lstm")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    processes = start_processes()
    from rnncells.training import distributed

    tick = time.perf_counter()
    config = get_config()
    config.task.kwargs.T = _T.value
    config.num_seeds = _SEEDS.value
    config.progress = False
    with user_errors():
        sweep.sweep(config, _WORKDIR.value, cells=list(CELLS))
        if not distributed.is_primary():
            return  # process 0 reports
        print()
        print(report.write_report(_WORKDIR.value))
        if _DIAGNOSTICS.value and processes > 1:
            print(
                "diagnostics left out on several processes; draw them with: python -m "
                f"experiments.diagnostics --workdir={_WORKDIR.value}"
            )
        elif _DIAGNOSTICS.value:
            drawn = diagnostics.up_to_date(_WORKDIR.value)
            if drawn:
                print(f"reused {len(drawn)} diagnostic plots, newer than every run:")
                for path in drawn:
                    print("  ", path)
            else:
                print("drawing the gate heatmaps and the gradient flow ...", flush=True)
                for path in diagnostics.write_diagnostics(_WORKDIR.value):
                    print("wrote", path)
    print(f"wall time: {time.perf_counter() - tick:.0f} s")
    print(
        f"files: {_WORKDIR.value}/report.md, learning_curves.png, gates_*.png, "
        "gradient_flow.png, and each run's folder"
    )


if __name__ == "__main__":
    _WORKDIR = flags.DEFINE_string("workdir", "runs/main", "folder for the runs and plots")
    _T = flags.DEFINE_integer("T", 100, "sequence length of the adding problem")
    _SEEDS = flags.DEFINE_integer("num_seeds", 3, "seeds per cell (trained at once)")
    _DIAGNOSTICS = flags.DEFINE_bool("diagnostics", True, "also draw gates and gradient flow")
    define_multiprocess_flags()
    app.run(main)
