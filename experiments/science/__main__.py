"""The long-dependency studies with fixed step budgets, 5 seeds and 10,000 test sequences.

    python -m experiments.science --study=adding --where=cpu   # train, then score
    python -m experiments.science --report                     # tables and plots

Each study is a list of `Run` rows (task, T, cell, init, optimiser), all trained from a
config file plus overrides, with 5 seeds in one program (``config.seed_loop``), for a
fixed number of steps (``num_steps``, never stopped early, so every row of a table is
compared after the same number of steps, and a rerun on any machine gives the same
table). ``where`` says where
the committed command runs a row: ``cpu`` rows fit a CPU working day, ``gpu`` rows are
in ``experiments/gpu_science.sh``.

After a row's training finishes, its final parameters are scored on a test set of 10,000
sequences drawn from a key of its own (`TEST_KEY`), the same sequences for every row of
one task and T, and disjoint in key from training and from the in-training evaluation:
per seed the loss, the task's metric, the fraction of sequences that meet the per-sequence
criterion (`CRITERIA`; for the adding problem Hochreiter & Schmidhuber's ``|error| <
0.04``), whether every sequence meets it, the project's ``solved``, and the first
evaluation step at which the seed met ``solved`` during training. The constant (memoryless)
predictor is scored on the same sequences. One JSON per row goes to
``experiments/results/science/<study>/<row>.json``; ``--report`` rebuilds every table and
plot from those files alone (`experiments/results/science/README.md` explains them).

A row's training resumes from its checkpoints (``--time_limit_s`` stops each row after so
many seconds, resumable), and a row whose JSON exists is skipped. A row whose loss
became NaN or infinite is an outcome: its JSON says ``diverged`` (``train_and_score``).
Each row trains in a child process of its own under the stall guard
(`rnncells.training.stall`): a row that stalls is rerun from its checkpoint up to
`experiments.cli.STALL_RETRIES` times, then reported as stalled while the other rows go
on (``--in_process`` trains in this process, with no reruns).
"""

from __future__ import annotations

import json
import os
import sys
import time

from experiments import extra

extra.require_extra("python -m experiments.science", (*extra.EXTRA_MODULES, "scipy"))

from absl import app, flags, logging  # noqa: E402

from experiments.cli import STALL_RETRIES, run_resuming_stalls, user_errors  # noqa: E402
from experiments.science import report  # noqa: E402
from experiments.science.cost import measure_cost  # noqa: E402
from experiments.science.scoring import digits_linear_baselines  # noqa: E402
from experiments.science.studies import RESULTS, STUDIES, Run, select  # noqa: E402
from experiments.science.train import environment, train_and_score  # noqa: E402
from rnncells.training.metrics import write_json  # noqa: E402
from rnncells.training.stall import is_stall_status  # noqa: E402

MIN_ROW_S = 60
"""Under ``--budget_s``, a row starts only with at least this many seconds left (its
compilation and scoring are not counted in the budget)."""


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    if _COST.value:
        result = measure_cost()
        path = os.path.join(_RESULTS.value, "cost.json")
        write_json(path, result)
        for name, r in result["rows"].items():
            print(
                f"{name:30s} params {r['params']:7d}  FLOPs/step {r['train_flops']:.3g}  "
                f"{1e3 * r['median_s_per_step']:.2f} ms/step"
            )
        print("wrote", path)
        return
    if _DIGITS_BASELINES.value:
        path = os.path.join(_RESULTS.value, "digits", "linear_baselines.json")
        write_json(path, {**digits_linear_baselines(), "environment": environment()})
        print("wrote", path)
        return
    if _REPORT.value:
        for path in report.write_all(_RESULTS.value):
            print("wrote", path)
        return
    # --list shows every row unless --where is given; training defaults to the CPU rows.
    where = "all" if _LIST.value and not flags.FLAGS["where"].present else _WHERE.value
    try:
        rows = select(_STUDY.value, where, _ONLY.value)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    if _LIST.value:
        for row in rows:
            done = os.path.exists(os.path.join(_RESULTS.value, row.study, f"{row.name}.json"))
            print(f"{row.name:40s} {row.where}  {'done' if done else 'pending'}  {row.label}")
        return
    failed: list[str] = []
    stalled: list[str] = []
    start = time.perf_counter()
    for row in rows:
        path = os.path.join(_RESULTS.value, row.study, f"{row.name}.json")
        if os.path.exists(path):
            print(f"{row.name}: done ({path})", flush=True)
            continue
        tick = time.perf_counter()
        limit = _TIME_LIMIT.value
        if _BUDGET.value > 0:
            left = _BUDGET.value - (tick - start)
            if left < MIN_ROW_S:
                print(f"{row.name}: not started, under {MIN_ROW_S} s of --budget_s left")
                continue
            limit = left if limit <= 0 else min(limit, left)
        if not _IN_PROCESS.value:
            # The row in a child process of its own, rerun from its checkpoint if it
            # stalls (a stuck compiled call cannot be stopped inside a process).
            status = run_resuming_stalls(_row_command(row, limit), row.name)
            if status in (130, 143):  # SIGINT or SIGTERM: the child said how to resume
                raise SystemExit(status)
            if is_stall_status(status):
                stalled.append(row.name)
            elif status != 0:
                failed.append(row.name)
            continue
        try:
            with user_errors():
                written = train_and_score(row, _WORKDIR.value, _RESULTS.value, limit)
        except SystemExit:  # the row's error is printed; the other rows go on
            failed.append(row.name)
            continue
        took = time.perf_counter() - tick
        if written is None:
            print(f"{row.name}: stopped at the time limit after {took:.0f} s; rerun to resume")
            continue
        with open(written, encoding="utf-8") as file:
            result = json.load(file)
        if result.get("diverged"):
            print(f"{row.name}: diverged: {result['diverged']} -> {written}", flush=True)
            continue
        loss = result["test"]["per_seed"]["loss"]
        print(
            f"{row.name}: test loss {sum(loss) / len(loss):.4g} (constant "
            f"{result['test']['constant_loss']:.4g}), solved "
            f"{sum(result['test']['per_seed']['solved'])}/{len(loss)}, "
            f"steps {result['steps_run']}, {took:.0f} s -> {written}",
            flush=True,
        )
    if _IN_PROCESS.value and failed:
        raise SystemExit(2)  # the parent counts it
    if not _IN_PROCESS.value:
        print("tables and plots: python -m experiments.science --report")
    if stalled:
        print(
            f"error: {len(stalled)} rows stalled {1 + STALL_RETRIES} times: "
            f"{', '.join(stalled)}; rerun the command to resume them"
        )
    if failed:
        print(f"error: {len(failed)} rows stopped with an error: {', '.join(failed)}")
    if failed or stalled:
        raise SystemExit(2)


def _row_command(row: Run, time_limit_s: float) -> list[str]:
    """The child process that trains and scores ``row`` alone, in this process's folders."""
    return [
        sys.executable,
        "-m",
        "experiments.science",
        f"--only={row.name}",
        f"--workdir={_WORKDIR.value}",
        f"--results={_RESULTS.value}",
        f"--time_limit_s={time_limit_s}",
        "--in_process",
    ]


if __name__ == "__main__":
    _STUDY = flags.DEFINE_enum("study", None, list(STUDIES), "the study to run (default: all)")
    _WHERE = flags.DEFINE_enum(
        "where", "cpu", ["cpu", "gpu", "all"], "run the rows planned for this machine kind"
    )
    _ONLY = flags.DEFINE_list("only", None, "run exactly these rows (names as in --list)")
    _LIST = flags.DEFINE_bool("list", False, "list the selected rows and whether each is done")
    _REPORT = flags.DEFINE_bool(
        "report", False, "rebuild every table and plot from the committed JSON and exit"
    )
    _DIGITS_BASELINES = flags.DEFINE_bool(
        "digits_baselines",
        False,
        "fit logistic regression on the digits' last k pixels, write linear_baselines.json",
    )
    _COST = flags.DEFINE_bool(
        "cost",
        False,
        "time one training step of the GRU and LSTM rows of COST_ROWS here, write cost.json",
    )
    _WORKDIR = flags.DEFINE_string("workdir", "runs/science", "folder of the training runs")
    _RESULTS = flags.DEFINE_string("results", RESULTS, "folder of the per-row JSON results")
    _TIME_LIMIT = flags.DEFINE_float(
        "time_limit_s", 0.0, "stop each row after this many seconds (resumable); 0: none"
    )
    _IN_PROCESS = flags.DEFINE_bool(
        "in_process",
        False,
        "train the rows in this process (default: each in a child process, rerun from its "
        "checkpoint when it stalls)",
    )
    _BUDGET = flags.DEFINE_float(
        "budget_s",
        0.0,
        "stop (resumable) once this call has trained this many seconds in all; 0: none",
    )
    app.run(main)
