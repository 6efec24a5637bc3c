"""Sweeps a config over cell x sequence length x init (x seeds, trained in one program).

    python -m experiments.sweep --config=configs/adding.py --workdir=runs/adding_sweep \
        --cells=rnn,gru,lstm --lengths=100,200,400 [--inits=default,chrono] \
        [--config.num_steps=3000 ...]

Each combination runs in ``workdir/<task>_T<T>_<cell>_<init>`` (rerunning the command
resumes unfinished runs and skips finished ones); then ``report.md`` and the plots of all
runs are written to ``workdir`` and the table is printed. Each run locks its own folder
for as long as it trains, so two sweeps over one workdir never train the same run at
once; an error a user can fix stops the sweep with one ``error:`` line (see
``experiments/cli.py``). In one process, each run trains in a child process of its own,
rerun from its checkpoint when it stalls (``--in_process`` trains them all in this
process, with no reruns). A combination whose init does
not apply to its cell (chrono or forget_bias for the plain RNN) is skipped, with a line
that says so.

On several processes (the flags of ``experiments/run.py``: ``--coordinator_address``,
``--num_processes``, ``--process_id``, or a detected cluster) the runs go one after the
other, each trained by all processes together over one global mesh. With
``--spread_runs`` they are spread instead: process ``i`` of ``N`` trains combinations
``i, i + N, i + 2N, ...`` on its own devices, alone (JAX's distributed runtime is not
started: the processes share nothing but the filesystem), and whichever process finds
every run finished writes the report:

    python -m experiments.local_cluster --num_processes=3 --module=experiments.sweep -- \
        --spread_runs --config=configs/adding.py --workdir=runs/s --cells=rnn,gru,lstm
"""

from __future__ import annotations

import itertools
import os
import sys
import time

from experiments import extra

extra.require_extra("python -m experiments.sweep")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from experiments import report  # noqa: E402
from experiments.cli import resume_command, run_resuming_stalls, user_errors  # noqa: E402
from experiments.run import define_multiprocess_flags, start_processes  # noqa: E402


def run_name(config) -> str:
    """Folder name of one run: task, T, cell, init."""
    T = config.task.kwargs.get("T", None)
    return "_".join(
        str(p)
        for p in (config.task.name, f"T{T}" if T else None, config.model.cell, config.model.init)
        if p is not None
    )


def run_configs(config, cells=None, lengths=None, inits=None, *, announce: bool = True) -> list:
    """The config of every combination, in sweep order (skipped ones left out, with a
    line that says so when ``announce``)."""
    from rnncells.training.model import init_mismatch

    cells = cells or [config.model.cell]
    lengths = [int(t) for t in lengths] if lengths else [config.task.kwargs.get("T", None)]
    inits = inits or [config.model.init]
    configs = []
    for T, init, cell in itertools.product(lengths, inits, cells):
        mismatch = init_mismatch(cell, init)
        if mismatch is not None:
            if announce:
                print(f"skipped cell={cell}, init={init}: {mismatch}", flush=True)
            continue
        run_config = config.copy_and_resolve_references()
        run_config.model.cell = cell
        run_config.model.init = init
        if T is not None:
            run_config.task.kwargs.T = T
        configs.append(run_config)
    return configs


def sweep(
    config,
    workdir: str,
    cells=None,
    lengths=None,
    inits=None,
    *,
    share: tuple[int, int] = (0, 1),
    only: int | None = None,
) -> list[dict]:
    """Trains every combination (one after the other, each with all seeds at once);
    returns the summaries.

    Args:
        config, workdir, cells, lengths, inits: the sweep (see the module docstring).
        share: (i, N): train only combinations i, i + N, ... (process i of N spreading
            the sweep); (0, 1) trains all.
        only: train only combination ``only`` (0-based, in sweep order).
    """
    from rnncells.training import distributed, train

    index, count = share
    primary = distributed.is_primary()
    summaries = []
    for k, run_config in enumerate(run_configs(config, cells, lengths, inits, announce=primary)):
        if k % count != index or only not in (None, k):
            continue
        folder = os.path.join(workdir, run_name(run_config))
        tick = time.perf_counter()
        reused = finished(run_config, folder)
        if primary and not reused:
            print(
                f"{run_name(run_config)}: training {run_config.num_seeds} seeds, up to "
                f"{run_config.num_steps} steps ...",
                flush=True,
            )
        summary = train(run_config, folder, command=sweep_command())
        loss = summary["eval"]["loss"]
        took = "reused, finished earlier" if reused else f"in {time.perf_counter() - tick:.0f} s"
        if primary:
            print(
                f"{run_name(run_config)}: loss {loss['mean']:.4f} ± {loss['std']:.4f} "
                f"(baseline {summary['baseline_loss']:.4f}) {took}",
                flush=True,
            )
        summaries.append(summary)
    return summaries


def finished(config, folder: str) -> bool:
    """Whether ``folder`` holds the finished run of ``config``'s step budget (`train` then
    returns its summary without training)."""
    from rnncells.training.errors import CorruptFileError
    from rnncells.training.metrics import read_json

    try:
        summary = read_json(os.path.join(folder, "summary.json"))
    except CorruptFileError:
        return False  # train names the damage
    return (
        isinstance(summary, dict)
        and bool(summary.get("finished"))
        and summary.get("num_steps") == config.num_steps
    )


def sweep_command() -> str:
    """The command line that runs this sweep again (and so resumes its unfinished runs)."""
    args = [a for a in sys.argv[1:] if not a.startswith(("--run_index", "--in_process"))]
    return resume_command("experiments.sweep", args)


def supervise(config, workdir: str, cells=None, lengths=None, inits=None) -> int:
    """Trains every combination in a child process of its own, rerun from its checkpoint
    when it stalls (`experiments.cli.run_resuming_stalls`); returns 0, or the first
    status that stopped the sweep (a user error, a stall after the reruns, a signal)."""
    for k, run_config in enumerate(run_configs(config, cells, lengths, inits)):
        command = [
            sys.executable,
            "-m",
            "experiments.sweep",
            *sys.argv[1:],
            f"--run_index={k}",
            "--in_process",
        ]
        status = run_resuming_stalls(command, run_name(run_config))
        if status != 0:
            return status
    return 0


def all_finished(config, workdir: str, cells=None, lengths=None, inits=None) -> bool:
    """Whether every combination of the sweep has a finished summary in ``workdir``."""
    return all(
        finished(run_config, os.path.join(workdir, run_name(run_config)))
        for run_config in run_configs(config, cells, lengths, inits, announce=False)
    )


def write_report_once(workdir: str) -> str | None:
    """The report of ``workdir``, written under its lock; None when another process of
    a spread sweep holds the lock (it is writing the same report)."""
    from rnncells.training import lock
    from rnncells.training.errors import WorkdirLockedError

    try:
        with lock.workdir_lock(workdir):
            return report.write_report(workdir)
    except WorkdirLockedError:
        return None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    tick = time.perf_counter()
    args = (_CONFIG.value, _WORKDIR.value, _CELLS.value, _LENGTHS.value, _INITS.value)
    if _SPREAD.value:
        values = flags.FLAGS
        if values.num_processes is None or values.process_id is None:
            raise app.UsageError("--spread_runs needs --num_processes and --process_id")
        if not 0 <= values.process_id < values.num_processes:
            raise app.UsageError(
                f"--process_id must be in [0, {values.num_processes}), got {values.process_id}"
            )
        with user_errors():
            sweep(*args, share=(values.process_id, values.num_processes))
            # The last process to finish sees every run finished and writes the report.
            text = write_report_once(_WORKDIR.value) if all_finished(*args) else None
        if text is not None:
            print(text)
        print(f"sweep wall time (this process): {time.perf_counter() - tick:.0f} s")
        return
    processes = start_processes()
    from rnncells.training import distributed

    if _RUN_INDEX.value is not None:  # a child of `supervise`: one run, no report
        with user_errors():
            sweep(*args, only=_RUN_INDEX.value)
        return
    if processes == 1 and not _IN_PROCESS.value:
        status = supervise(*args)
        if status != 0:
            raise SystemExit(status)
        with user_errors():
            print(report.write_report(_WORKDIR.value))
        print(f"sweep wall time: {time.perf_counter() - tick:.0f} s")
        return
    with user_errors():
        sweep(*args)
        if distributed.is_primary():
            print(report.write_report(_WORKDIR.value))
    if distributed.is_primary():
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
    _SPREAD = flags.DEFINE_bool(
        "spread_runs",
        False,
        "process i of --num_processes trains runs i, i + N, ... alone (else all processes "
        "train each run together)",
    )
    _IN_PROCESS = flags.DEFINE_bool(
        "in_process",
        False,
        "train the runs in this process (default with one process: each run in a child "
        "process, rerun from its checkpoint when it stalls)",
    )
    _RUN_INDEX = flags.DEFINE_integer(
        "run_index", None, "train only this combination (0-based), in this process"
    )
    define_multiprocess_flags()
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
