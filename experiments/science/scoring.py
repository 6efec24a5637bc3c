"""A trained row's figures: its scores on the test set, and what its training logs say.

`score` runs a row's final parameters on a test set of `TEST_SEQUENCES` sequences drawn
from `TEST_KEY` (the task's fixed test set where it has one) and scores the constant
predictor on the same sequences; `steps_to_solve`, `seconds_to_solve` and `eval_curve`
read the run's ``eval.jsonl`` and ``metrics.jsonl``; `digits_linear_baselines` is what a
model with no long memory reaches on the digits.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

TEST_SEQUENCES = 10_000
TEST_CHUNK = 1_000
TEST_KEY = 0x7E575E7
"""Seed of the test sets: chunk i of a task's test set is drawn with
``fold_in(PRNGKey(TEST_KEY), i)``; training uses ``PRNGKey(seed + s)`` and the in-training
evaluation ``fold_in(PRNGKey(seed), 0x5EED)``."""


def _last(ys, batch):
    from rnncells.tasks import last_step

    return last_step(ys, batch.lengths)


def _adding_passes(ys, batch):
    import jax.numpy as jnp

    from rnncells.tasks.adding import SUCCESS_TOLERANCE

    return jnp.abs(_last(ys, batch)[:, 0] - batch.targets[:, 0]) < SUCCESS_TOLERANCE


def _copy_passes(ys, batch):
    import jax.numpy as jnp

    from rnncells.tasks import predicted_class

    correct = predicted_class(ys, batch.targets) == batch.targets
    if batch.mask is None:  # fixed copy: the last ten steps recall the data
        return jnp.all(correct[:, -10:], axis=1)
    return jnp.all(correct | (batch.mask == 0), axis=1)


def _digits_passes(ys, batch):
    from rnncells.tasks import predicted_class

    return predicted_class(_last(ys, batch), batch.targets) == batch.targets


CRITERIA: dict[str, tuple[str, Callable]] = {
    "adding": ("|error| < 0.04 (Hochreiter & Schmidhuber)", _adding_passes),
    "adding_hs": ("|error| < 0.04 (Hochreiter & Schmidhuber)", _adding_passes),
    "copy": ("all 10 symbols recalled", _copy_passes),
    "variable_copy": ("all 10 symbols recalled", _copy_passes),
    "digits": ("label right", _digits_passes),
}
"""Per task: the per-sequence criterion's description and ``(ys, batch) -> (B,) bool``."""


def constant_outputs(task_name: str, task, batch):
    """The outputs ``(B, seq_len, output_size)`` of the task's best memoryless predictor:
    adding 1 (the mean target), adding_hs 0.5, copy and variable copy the memoryless
    logits of `rnncells.tasks.copy`, digits uniform logits."""
    import jax.numpy as jnp

    from rnncells.tasks import copy as copy_task

    B = batch.targets.shape[0]
    shape = (B, task.seq_len, task.output_size)
    if task_name == "adding":
        return jnp.ones(shape, jnp.float32)
    if task_name == "adding_hs":
        return jnp.full(shape, 0.5, jnp.float32)
    if task_name == "copy":
        return copy_task.memoryless_logits(B, task.seq_len - 20)
    if task_name == "variable_copy":
        return copy_task.variable_memoryless_logits(batch.inputs)
    if task_name == "digits":
        return jnp.zeros(shape, jnp.float32)
    raise ValueError(f"no constant predictor for task {task_name!r}")


def test_batches(task, task_name: str) -> list:
    """The test set: the task's fixed test set if it has one (digits), else
    `TEST_SEQUENCES` sequences in chunks of `TEST_CHUNK`, drawn from `TEST_KEY`."""
    import jax

    if task.test_batch is not None:
        return [task.test_batch()]
    key = jax.random.PRNGKey(TEST_KEY)
    return [
        task.make_batch(jax.random.fold_in(key, i), TEST_CHUNK)
        for i in range(TEST_SEQUENCES // TEST_CHUNK)
    ]


def score(config, params, guard=None) -> dict[str, Any]:
    """Per seed test metrics of ``params`` (leading seed axis) on the task's test set,
    and the constant predictor's on the same sequences (see the module docstring).
    ``guard``: a `rnncells.training.stall.StallGuard`; each compiled call then runs as
    its phase "score", so that a call that hangs inside XLA ends the process (resumable)
    instead of blocking it forever."""
    import contextlib

    import jax
    import numpy as np

    from rnncells.tasks import get_task
    from rnncells.training.model import model_apply

    task_name = config.task.name
    task = get_task(task_name, **dict(config.task.kwargs))
    criterion_text, passes = CRITERIA[task_name]
    batches = test_batches(task, task_name)
    apply = jax.jit(functools.partial(model_apply, vocab_size=task.vocab_size))

    @jax.jit
    def one_chunk(p, batch):
        ys = apply(p, batch.inputs, lengths=batch.lengths)
        return task.metric(ys, batch), passes(ys, batch)

    num_seeds = jax.tree.leaves(params)[0].shape[0]
    sizes = np.array([b.targets.shape[0] for b in batches], dtype=float)
    per_seed: dict[str, list] = {}
    for s in range(num_seeds):
        p = jax.tree.map(lambda x, s=s: x[s], params)
        sums: dict[str, float] = {}
        passed = []
        for batch, size in zip(batches, sizes, strict=True):
            with guard.phase("score", 0, compiles=True) if guard else contextlib.nullcontext():
                metrics, ok = jax.device_get(one_chunk(p, batch))
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v) * size
            passed.append(np.asarray(ok))
        ok_all = np.concatenate(passed)
        for k, v in sums.items():
            per_seed.setdefault(k, []).append(v / sizes.sum())
        per_seed.setdefault("criterion_fraction", []).append(float(ok_all.mean()))
        per_seed.setdefault("criterion_all", []).append(bool(ok_all.all()))
    metric_names = [k for k in per_seed if k not in ("criterion_fraction", "criterion_all")]
    per_seed["solved"] = [
        bool(task.solved({k: per_seed[k][s] for k in metric_names})) for s in range(num_seeds)
    ]
    constant = 0.0
    for batch, size in zip(batches, sizes, strict=True):
        ys = constant_outputs(task_name, task, batch)
        constant += float(jax.device_get(task.metric(ys, batch))["loss"]) * size
    return {
        "num_sequences": int(sizes.sum()),
        "test_key": None if task.test_batch is not None else TEST_KEY,
        "criterion": criterion_text,
        "per_seed": per_seed,
        "constant_loss": constant / sizes.sum(),
        "analytic_baseline": float(task.baseline_loss),
    }


def steps_to_solve(config, workdir: str) -> list[int | None]:
    """Per seed, the first in-training evaluation step at which the seed met the task's
    ``solved`` (None: never within the run). Resolved to ``eval_every`` steps; a
    scheduled evaluation lost from ``eval.jsonl`` is named by `missing_evaluations`."""
    from rnncells.tasks import get_task

    task = get_task(config.task.name, **dict(config.task.kwargs))
    first: list[int | None] = [None] * config.num_seeds
    for record in scheduled_evaluations(config, workdir):
        names = [k[: -len("_per_seed")] for k in record if k.endswith("_per_seed")]
        for s in range(config.num_seeds):
            if first[s] is None and task.solved({k: record[f"{k}_per_seed"][s] for k in names}):
                first[s] = int(record["step"])
    return first


def seconds_to_solve(config, workdir: str, steps: list[int | None]) -> list[float | None]:
    """Per seed, the training seconds (the chunks' own times from ``metrics.jsonl``,
    evaluations and saves left out) up to its step in ``steps``."""
    from rnncells.training.metrics import read_jsonl

    elapsed, total = {}, 0.0
    for record in read_jsonl(os.path.join(workdir, "metrics.jsonl")):
        total += 1.0 / record["steps_per_sec"]
        elapsed[record["step"]] = total
    return [None if step is None else elapsed.get(step) for step in steps]


def missing_evaluations(config, workdir: str, steps_run: int) -> list[int]:
    """The scheduled evaluation steps up to ``steps_run`` that ``eval.jsonl`` lacks (its
    steps to solve may then read a later evaluation than the first that solved)."""
    present = {r["step"] for r in scheduled_evaluations(config, workdir)}
    expected = set(range(config.eval_every, steps_run + 1, config.eval_every))
    return sorted(expected - present)


def scheduled_evaluations(config, workdir: str) -> list[dict]:
    """The run's in-training evaluations at scheduled steps (every ``eval_every`` and the
    last): an evaluation a time limit added where it stopped a run is left out, so the
    figures do not depend on where a run was cut and resumed."""
    from rnncells.training.metrics import read_jsonl

    return [
        r
        for r in read_jsonl(os.path.join(workdir, "eval.jsonl"))
        if r["step"] % config.eval_every == 0 or r["step"] == config.num_steps
    ]


def eval_curve(config, workdir: str) -> dict[str, list]:
    """The in-training held-out loss per seed at each scheduled evaluation."""
    records = scheduled_evaluations(config, workdir)
    return {
        "step": [int(r["step"]) for r in records],
        "loss_per_seed": [[float(v) for v in r["loss_per_seed"]] for r in records],
    }


DIGITS_LAST_PIXELS = (8, 16, 32, 64)
"""The linear baselines of the digits rows read the last k pixels of each sequence."""


def digits_linear_baselines() -> dict[str, Any]:
    """Test accuracy of logistic regression (scikit-learn, L2, C=1) on the last k pixels
    of each digit, in reading order and in the permuted order, trained on the rows'
    1500-image training split and scored on their 297-image test split: what a model
    with no memory beyond k steps can reach."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from rnncells.tasks import digits

    out: dict[str, Any] = {"model": "sklearn LogisticRegression(C=1.0, max_iter=5000)"}
    for permute in (False, True):
        train, test = digits.train_set(permute=permute), digits.test_set(permute=permute)
        x_train, x_test = np.asarray(train.inputs)[..., 0], np.asarray(test.inputs)[..., 0]
        y_train, y_test = np.asarray(train.targets), np.asarray(test.targets)
        scores = {}
        for k in DIGITS_LAST_PIXELS:
            model = LogisticRegression(C=1.0, max_iter=5000)
            model.fit(x_train[:, -k:], y_train)
            scores[str(k)] = float(model.score(x_test[:, -k:], y_test))
        out["permuted" if permute else "sequential"] = scores
    return out
