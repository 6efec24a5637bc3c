"""Tables and plots of finished runs: a markdown table and PNG learning curves.

    python -m experiments.report --workdir=runs/sweep [--export=experiments/results/x]

reads every ``summary.json`` under the workdir (a single run or a sweep of runs) and
writes ``report.md`` (final held-out loss per run, mean ± std over seeds, against the
task's memoryless baseline), ``learning_curves.png`` (training loss against step, mean
over seeds with a min-max band, baseline dashed) and, when several sequence lengths were
run, ``loss_vs_T.png`` (final loss against T per cell).
"""

from __future__ import annotations

import json
import os
import shutil
from collections import defaultdict
from typing import Any

from experiments import extra

extra.require_extra("python -m experiments.report")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.cli import user_errors  # noqa: E402
from rnncells.tasks import get_task  # noqa: E402
from rnncells.training.errors import RunError  # noqa: E402
from rnncells.training.metrics import (  # noqa: E402
    per_seed_stats,
    read_json,
    read_jsonl,
    solved_by_every_seed,
)


class NoRunError(RunError, FileNotFoundError):
    """The workdir does not exist, is not a folder, or holds no run to report."""


def _check_has_runs(workdir: str, runs: list) -> None:
    """NoRunError (one line naming ``workdir`` and what it is) unless ``runs``."""
    if runs:
        return
    hint = "give --workdir the folder of a run or of a sweep (the --workdir it ran with)"
    if not workdir:
        raise NoRunError("no run to report: --workdir is empty", hint=hint)
    if not os.path.exists(workdir):
        raise NoRunError(f"no run to report: --workdir={workdir} does not exist", hint=hint)
    if not os.path.isdir(workdir):
        raise NoRunError(
            f"no run to report: --workdir={workdir} is a file, not a folder of runs", hint=hint
        )
    raise NoRunError(
        f"no run (summary.json, or config.json with eval.jsonl) under --workdir={workdir}",
        hint=hint + "; a run writes its first files at its first evaluation",
    )


def find_runs(workdir: str) -> list[tuple[str, dict[str, Any]]]:
    """(run folder, summary) of every run under ``workdir``, sorted by folder: its
    ``summary.json``, or for a run stopped before writing one (killed) the summary of its
    last evaluation (``summary_from_logs``)."""
    runs = []
    for root, dirs, files in os.walk(workdir):
        dirs[:] = sorted(d for d in dirs if d != "checkpoints")  # Orbax folders, not runs
        if "summary.json" in files:
            runs.append((root, read_json(os.path.join(root, "summary.json"))))
        elif "config.json" in files and "eval.jsonl" in files:
            summary = summary_from_logs(root)
            if summary is not None:
                runs.append((root, summary))
    return sorted(runs, key=lambda item: item[0])


def summary_from_logs(folder: str) -> dict[str, Any] | None:
    """The summary of a run that has no ``summary.json`` (stopped by a signal or killed),
    from its ``config.json`` and its last evaluation in ``eval.jsonl``; None before the
    first evaluation. Marked ``finished: False, from_logs: True``."""
    evals = read_jsonl(os.path.join(folder, "eval.jsonl"))
    if not evals:
        return None
    config = read_json(os.path.join(folder, "config.json"))
    last = evals[-1]
    task = get_task(config["task"]["name"], **config["task"]["kwargs"])
    names = [k[: -len("_per_seed")] for k in last if k.endswith("_per_seed")]
    per_seed = {k: np.asarray(last[f"{k}_per_seed"], dtype=float) for k in names}
    num_seeds = len(per_seed["loss"])
    return {
        "task": config["task"]["name"],
        "task_kwargs": config["task"]["kwargs"],
        "cell": config["model"]["cell"],
        "init": config["model"]["init"],
        "forget_bias": config["model"]["forget_bias"],
        "hidden_size": config["model"]["hidden_size"],
        "num_seeds": num_seeds,
        "seed": config["seed"],
        "baseline_loss": float(task.baseline_loss),
        "num_steps": config["num_steps"],
        "steps_run": int(last["step"]),
        "stopped_early": False,
        "solved": solved_by_every_seed(task, per_seed),
        "eval": {k: per_seed_stats(v) for k, v in per_seed.items()},
        "finished": False,
        "from_logs": True,
    }


def label(summary: dict[str, Any]) -> str:
    """Short run name: cell, init when not default, and T when the task has one."""
    parts = [summary["cell"]]
    init = summary.get("init", "default")
    if init == "forget_bias":
        parts.append(f"b_f={summary.get('forget_bias')}")
    elif init != "default":
        parts.append(init)
    T = summary.get("task_kwargs", {}).get("T")
    if T is not None:
        parts.append(f"T={T}")
    return " ".join(parts)


def _fmt(stat: dict[str, Any]) -> str:
    return f"{stat['mean']:.4f} ± {stat['std']:.4f}"


def table(runs: list[tuple[str, dict[str, Any]]]) -> str:
    """Markdown table: one row per run, final held-out metrics mean ± std over seeds."""
    extra = sorted({k for _, s in runs for k in s["eval"] if k != "loss"})
    head = ["run", "task", "T", "cell", "init", "seeds", "steps", "baseline", "final loss"]
    head += extra + ["below baseline/2", "solved"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for folder, s in runs:
        loss = s["eval"]["loss"]
        below = sum(v < 0.5 * s["baseline_loss"] for v in loss["per_seed"])
        row = [
            os.path.basename(folder) or folder,
            s["task"],
            str(s.get("task_kwargs", {}).get("T", "-")),
            s["cell"],
            s.get("init", "-"),
            str(s["num_seeds"]),
            str(s["steps_run"]) + ("" if s.get("finished", True) else " (stopped)"),
            f"{s['baseline_loss']:.4f}",
            _fmt(loss),
        ]
        row += [_fmt(s["eval"][k]) if k in s["eval"] else "-" for k in extra]
        row += [f"{below}/{s['num_seeds']}", "yes" if s["solved"] else "no"]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(
        " ".join(
            COLUMNS.get(c, f"{c}: the task's held-out {c}, mean ± std over seeds.") for c in head
        )
    )
    return "\n".join(lines) + "\n"


COLUMNS = {
    "run": "run: the run's folder.",
    "task": "task: the task's name (rnncells.tasks).",
    "cell": "cell: the recurrent cell.",
    "T": "T: the task's sequence length (the time lag to bridge).",
    "init": "init: the bias init (default: the cell's own; forget_bias; chrono).",
    "seeds": "seeds: independent initialisations and data streams, trained at once.",
    "steps": "steps: optimiser steps run ((stopped): stopped before num_steps, by a time "
    "limit or a kill, with figures from its last evaluation).",
    "baseline": "baseline: the loss of the best memoryless predictor (adding: always 1, "
    "1/6; copy: 10 ln 8 / (T + 20); digits: ln 10).",
    "final loss": "final loss: held-out loss after the last step, mean ± std over seeds "
    "(np.std, ddof 0).",
    "success_rate": "success_rate: (adding) fraction of held-out sequences predicted within "
    "0.04 of the target (Hochreiter & Schmidhuber's criterion), mean ± std over seeds.",
    "accuracy": "accuracy: fraction of held-out symbols (copy: the 10 recalled; digits: the "
    "labels) predicted exactly, mean ± std over seeds.",
    "below baseline/2": "below baseline/2: seeds whose final loss is under half the baseline.",
    "solved": "solved: every seed meets the task's criterion (adding: MSE < 0.01; adding_hs: "
    "every sequence within 0.04; copy: >= 99% of symbols recalled; digits: accuracy >= 0.9).",
}
"""The report's footnote: what each column of the table means."""


def plot_learning_curves(runs, path: str) -> None:
    """Training loss (mean over seeds, min-max band) against step for every run."""
    groups: dict[str, list] = defaultdict(list)
    for folder, s in runs:
        groups[f"{s['task']} T={s.get('task_kwargs', {}).get('T', '-')}"].append((folder, s))
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.6), squeeze=False)
    for ax, (title, members) in zip(axes[0], sorted(groups.items()), strict=True):
        for folder, s in members:
            records = read_jsonl(os.path.join(folder, "metrics.jsonl"))
            if not records:
                continue
            steps = np.array([r["step"] for r in records])
            per_seed = np.array([r["loss_per_seed"] for r in records], dtype=float)
            window = max(1, len(steps) // 50)  # smooth the per-step noise for reading
            kernel = np.ones(window) / window
            smooth = np.stack([np.convolve(c, kernel, mode="valid") for c in per_seed.T], 1)
            xs = steps[window - 1 :]
            (line,) = ax.plot(xs, smooth.mean(1), label=label(s))
            ax.fill_between(xs, smooth.min(1), smooth.max(1), color=line.get_color(), alpha=0.2)
        ax.axhline(members[0][1]["baseline_loss"], color="k", ls="--", lw=1, label="baseline")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_loss_vs_T(runs, path: str) -> bool:
    """Final held-out loss against T per (cell, init), the seeds' range as a band; False
    when fewer than two T."""
    series: dict[str, list] = defaultdict(list)
    for _, s in runs:
        T = s.get("task_kwargs", {}).get("T")
        if T is not None:
            key = label({**s, "task_kwargs": {}})
            loss = s["eval"]["loss"]
            per_seed = loss["per_seed"]
            series[key].append((T, loss["mean"], min(per_seed), max(per_seed), s["baseline_loss"]))
    if len({t for points in series.values() for t, *_ in points}) < 2:
        return False
    fig, ax = plt.subplots(figsize=(5, 3.6))
    baselines = {}
    for name, points in sorted(series.items()):
        points.sort(key=lambda p: p[0])
        ts, means, lows, highs, bases = (np.array(v) for v in zip(*points, strict=True))
        # The seeds' range, not mean ± std: it stays positive on the log axis.
        (line,) = ax.plot(ts, means, marker="o", label=name)
        ax.fill_between(ts, lows, highs, color=line.get_color(), alpha=0.2)
        baselines.update(zip(ts.tolist(), bases.tolist(), strict=True))
    bt = sorted(baselines)
    ax.plot(bt, [baselines[t] for t in bt], "k--", lw=1, label="baseline")
    ax.set_yscale("log")
    ax.set_xlabel("T")
    ax.set_ylabel("final held-out loss")
    task = runs[0][1]["task"]
    ax.set_title(
        f"{task}: final held-out loss against T\n(line: mean over seeds; band: their min to max)",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(workdir: str) -> str:
    """Writes report.md and the plots for every run under ``workdir``; returns the table."""
    runs = find_runs(workdir)
    _check_has_runs(workdir, runs)  # NoRunError, also a FileNotFoundError
    text = table(runs)
    with open(os.path.join(workdir, "report.md"), "w", encoding="utf-8") as file:
        file.write(text)
    plot_learning_curves(runs, os.path.join(workdir, "learning_curves.png"))
    plot_loss_vs_T(runs, os.path.join(workdir, "loss_vs_T.png"))
    return text


def export(workdir: str, dest: str) -> list[str]:
    """Copies the small results of ``workdir`` to ``dest`` (for committing): report.md,
    the PNGs and ``summaries.json`` (every run's summary; no checkpoints or metrics)."""
    os.makedirs(dest, exist_ok=True)
    written = []
    for name in sorted(os.listdir(workdir)):
        if name == "report.md" or name.endswith(".png"):
            shutil.copyfile(os.path.join(workdir, name), os.path.join(dest, name))
            written.append(os.path.join(dest, name))
    summaries = {os.path.relpath(folder, workdir): s for folder, s in find_runs(workdir)}
    path = os.path.join(dest, "summaries.json")
    with open(path, "w", encoding="utf-8") as file:
        json.dump(summaries, file, indent=1)
    return written + [path]


def main(argv):
    del argv
    with user_errors():  # a damaged log: one line naming the file and line
        print(write_report(_WORKDIR.value))
        if _EXPORT.value:
            for path in export(_WORKDIR.value, _EXPORT.value):
                print("wrote", path)


if __name__ == "__main__":
    from absl import app, flags

    _WORKDIR = flags.DEFINE_string("workdir", None, "folder holding finished runs")
    _EXPORT = flags.DEFINE_string("export", None, "copy report, plots and summaries here")
    flags.mark_flags_as_required(["workdir"])
    app.run(main)
