"""Trains one row (or resumes it) and writes its JSON: the scores, the run's figures, the
config and the machine it ran on.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from experiments.science.scoring import (
    eval_curve,
    missing_evaluations,
    score,
    seconds_to_solve,
    steps_to_solve,
)
from experiments.science.studies import Run


def environment() -> dict[str, Any]:
    """What a rerun elsewhere needs to compare with: the jax and jaxlib versions, the CPU
    model and count, the XLA flags, Python's version and the repository's commit."""
    import platform
    import subprocess

    import jax
    import jaxlib

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            rows = [line.split(":", 1) for line in file if line.startswith("model name")]
        names = [name.strip() for _, name in rows]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = None, None
    return {
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "backend": jax.default_backend(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "python": platform.python_version(),
        "commit": commit,
        "uncommitted_changes": dirty,
    }


def _identity(row: Run, config) -> dict[str, Any]:
    """What every row's JSON starts with: the row, its command and whole config."""
    return {
        "study": row.study,
        "name": row.name,
        "label": row.label,
        "command": row.command(),
        "config": config.to_dict(),
        "task": config.task.name,
        "T": config.task.kwargs.get("T"),
        "seeds": list(range(config.seed, config.seed + config.num_seeds)),
        "num_steps": config.num_steps,
    }


def train_and_score(row: Run, workdir: str, results: str, time_limit_s: float = 0.0):
    """Trains ``row`` in ``workdir/<study>/<name>`` (or resumes it) and, once finished,
    writes its JSON to ``results/<study>/<name>.json``; returns that path, or None when the
    time limit stopped the run first. A row whose loss became NaN or infinite (a seed
    diverged: the loop stops all seeds) is an outcome too: its JSON says ``diverged``
    with the loop's message, its evaluations up to then, and no test scores."""
    import jax

    from rnncells.training import train
    from rnncells.training.errors import NonFiniteLossError
    from rnncells.training.loop import final_params
    from rnncells.training.metrics import write_json

    config = row.make_config()
    config.time_limit_s = float(time_limit_s)
    folder = os.path.join(workdir, row.study, row.name)
    tick = time.perf_counter()
    path = os.path.join(results, row.study, f"{row.name}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        summary = train(config, folder, command=row.command())
    except NonFiniteLossError as error:
        write_json(
            path,
            {
                **_identity(row, config),
                # "loss became nan at step S (seed K)", without the run's local paths
                "diverged": str(error).splitlines()[0].split("; training stopped")[0],
                "test": None,
                "eval_curve": eval_curve(config, folder),
                "device": jax.devices()[0].device_kind,
                "environment": environment(),
            },
        )
        return path
    if not summary["finished"]:
        return None
    from rnncells.training.stall import StallGuard

    params = final_params(config, folder)
    # Scoring runs compiled calls too: under the stall guard, a hang there ends this
    # process (exit 4) and the row's rerun trains nothing more and scores again.
    guard = StallGuard(
        folder,
        describe_checkpoint=lambda: f"training finished ({summary['steps_run']} steps)",
        resume_hint=f"run the same command again: it scores the row anew ({row.command()})",
    )
    with guard:
        test = score(config, params, guard)
    solve_steps = steps_to_solve(config, folder)
    missing = missing_evaluations(config, folder, summary["steps_run"])
    if missing:
        print(
            f"warning: {row.name}: eval.jsonl lacks the scheduled evaluations of steps "
            f"{', '.join(map(str, missing))}; its steps to solve read the next ones",
            file=sys.stderr,
        )
    result = {
        **_identity(row, config),
        "steps_run": summary["steps_run"],
        "stopped_early": summary["stopped_early"],
        "steps_to_solve": solve_steps,
        "seconds_to_solve": seconds_to_solve(config, folder, solve_steps),
        "missing_evaluations": missing,
        "test": test,
        "eval_curve": eval_curve(config, folder),
        "device": jax.devices()[0].device_kind,
        "environment": environment(),
        "train_wall_s_last_call": summary["wall_s_this_process"],
        # How the seeds' steps ran in the last call ("map" or "vmap"; rows run before the
        # key existed ran "vmap"): the same values up to rounding, not the same time.
        "seed_loop": summary.get("seed_loop", "vmap"),
        "score_and_train_wall_s": time.perf_counter() - tick,
    }
    write_json(path, result)
    return path
