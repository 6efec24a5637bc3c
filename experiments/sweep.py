"""Sweeps a config over cell x sequence length x init (x seeds, trained at once by vmap).

    python -m experiments.sweep --config=configs/adding.py --workdir=runs/adding_sweep \
        --cells=rnn,gru,lstm --lengths=100,200,400 [--inits=default,chrono] \
        [--config.num_steps=3000 ...]

Each combination runs in ``workdir/<task>_T<T>_<cell>_<init>`` (rerunning the command
resumes unfinished runs and skips finished ones); then ``report.md`` and the plots of all
runs are written to ``workdir`` and the table is printed. Each run locks its own folder
for as long as it trains, so two sweeps over one workdir never train the same run at
once; an error a user can fix stops the sweep with one ``error:`` line (see
``experiments/run.py``). A combination whose init does
not apply to its cell (chrono or forget_bias for the plain RNN) is skipped, with a line
that says so.
"""

from __future__ import annotations

import itertools
import os
import time

from absl import app, flags, logging
from ml_collections import config_flags


def run_name(config) -> str:
    """Folder name of one run: task, T, cell, init."""
    T = config.task.kwargs.get("T", None)
    return "_".join(
        str(p)
        for p in (config.task.name, f"T{T}" if T else None, config.model.cell, config.model.init)
        if p is not None
    )


def sweep(config, workdir: str, cells=None, lengths=None, inits=None) -> list[dict]:
    """Trains every combination (sequentially, each with all seeds at once); returns summaries."""
    from rnncells.training import train
    from rnncells.training.model import init_mismatch

    cells = cells or [config.model.cell]
    lengths = [int(t) for t in lengths] if lengths else [config.task.kwargs.get("T", None)]
    inits = inits or [config.model.init]
    summaries = []
    for T, init, cell in itertools.product(lengths, inits, cells):
        mismatch = init_mismatch(cell, init)
        if mismatch is not None:
            print(f"skipped cell={cell}, init={init}: {mismatch}", flush=True)
            continue
        run_config = config.copy_and_resolve_references()
        run_config.model.cell = cell
        run_config.model.init = init
        if T is not None:
            run_config.task.kwargs.T = T
        folder = os.path.join(workdir, run_name(run_config))
        tick = time.perf_counter()
        summary = train(run_config, folder)
        loss = summary["eval"]["loss"]
        print(
            f"{run_name(run_config)}: loss {loss['mean']:.4f} ± {loss['std']:.4f} "
            f"(baseline {summary['baseline_loss']:.4f}) in {time.perf_counter() - tick:.0f} s",
            flush=True,
        )
        summaries.append(summary)
    return summaries


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    from experiments import report
    from experiments.run import user_errors

    tick = time.perf_counter()
    with user_errors():
        sweep(_CONFIG.value, _WORKDIR.value, _CELLS.value, _LENGTHS.value, _INITS.value)
        print(report.write_report(_WORKDIR.value))
    print(f"sweep wall time: {time.perf_counter() - tick:.0f} s")


if __name__ == "__main__":
    # Flags are defined only when run as a program, so the module imports without them.
    _CONFIG = config_flags.DEFINE_config_file(
        "config", None, "experiment config file", lock_config=True
    )
    _WORKDIR = flags.DEFINE_string("workdir", None, "folder for all runs of the sweep")
    _CELLS = flags.DEFINE_list("cells", None, "cells to run (default: the config's)")
    _LENGTHS = flags.DEFINE_list("lengths", None, "task T values (default: the config's)")
    _INITS = flags.DEFINE_list("inits", None, "inits to run (default: the config's)")
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
