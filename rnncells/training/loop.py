"""The training loop: several seeds at once (vmap), data-parallel (sharding), resumable.

A run is a pure function of its config: seed ``s`` of ``num_seeds`` starts from
``PRNGKey(config.seed + s)``, split into the init key and the data key; each step splits
the data key, draws a fresh batch, and applies one optimiser update. All seeds advance
together as one program (``jax.vmap`` over a leading seed axis of the state), and
``log_every`` steps run per call as one ``lax.scan`` compiled once.

    state = init_state(config)                       # leading axis: seeds
    for chunk in range(num_steps // log_every):
        state, metrics = train_chunk(state)          # log_every steps, jitted once
        write metrics.jsonl; checkpoint; evaluate; early stop when solved

Files in ``workdir``: ``config.json`` (resolved config), ``metrics.jsonl`` (one line per
step: loss, task metric, grad norm, learning rate, steps/s, per seed and mean),
``eval.jsonl`` (held-out metrics every ``eval_every`` steps), ``checkpoints/`` (Orbax),
``summary.json`` (final metrics, mean and spread over seeds).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from rnncells.tasks import Task, get_task
from rnncells.training import checkpoint, metrics, parallel
from rnncells.training.errors import NonFiniteLossError
from rnncells.training.model import ModelParams, model_apply, model_init
from rnncells.training.optim import make_optimizer, make_schedule


class TrainState(NamedTuple):
    """Everything a resumed run needs; every field has a leading seed axis S."""

    params: ModelParams
    opt_state: Any
    step: jax.Array  # (S,), int32: optimiser steps taken
    data_key: jax.Array  # (S, 2), uint32: key of the next batch


class Setup(NamedTuple):
    """The pieces `train` is made of, built from a config by `build`."""

    task: Task
    init_state: Callable[[], TrainState]
    train_chunk: Callable[[TrainState], tuple[TrainState, dict]]
    evaluate: Callable[[ModelParams], dict]
    schedule: optax.Schedule
    mesh: jax.sharding.Mesh


def chrono_t_max_for(task: Task, task_kwargs: dict, value: float) -> float:
    """``value`` if > 0, else Tallec & Ollivier's choice: 3T/2 for copy, T otherwise."""
    if value > 0:
        return float(value)
    T = task_kwargs.get("T", task.seq_len)
    return 1.5 * T if task.name == "copy" else float(T)


def _check_multiple(config: ml_collections.ConfigDict, name: str) -> None:
    value, log_every = config[name], config.log_every
    if value % log_every:
        raise ValueError(
            f"config.{name} must be a multiple of config.log_every={log_every}, got {value}"
        )


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks the values `build` cannot check by itself (ValueError naming the key)."""
    for name in (
        "batch_size",
        "num_steps",
        "num_seeds",
        "log_every",
        "eval_every",
        "checkpoint_every",
        "eval_batch_size",
    ):
        value = config[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"config.{name} must be a positive integer, got {value!r}")
    for name in ("num_steps", "eval_every", "checkpoint_every"):
        _check_multiple(config, name)


def build(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh | None = None) -> Setup:
    """Builds the task, initial state, jitted chunk of training steps and evaluation.

    Args:
        config: an experiment config (see ``configs/adding.py``).
        mesh: 1-D ``"data"`` mesh for data parallelism; None uses all devices when
            ``config.data_parallel`` else the first device.

    Returns:
        Setup.

    Raises:
        ValueError: a config value out of range, naming the key.
    """
    validate(config)
    task_kwargs = dict(config.task.kwargs)
    task = get_task(config.task.name, **task_kwargs)
    if mesh is None:
        mesh = parallel.make_mesh(None if config.data_parallel else jax.devices()[:1])
    parallel.check_batch_divisible(config.batch_size, mesh)
    m = config.model
    model_kwargs = dict(
        cell=m.cell,
        input_size=task.input_size,
        output_size=task.output_size,
        hidden_size=m.hidden_size,
        num_layers=m.num_layers,
        vocab_size=task.vocab_size,
        embedding=m.embedding,
        embed_size=m.embed_size,
        init=m.init,
        forget_bias=m.forget_bias,
        chrono_t_max=chrono_t_max_for(task, task_kwargs, m.chrono_t_max),
    )
    o = config.optim
    schedule = make_schedule(o.schedule, o.learning_rate, config.num_steps, o.warmup_steps)
    optimizer = make_optimizer(
        o.optimizer, schedule, clip_norm=o.clip_norm, rmsprop_decay=o.rmsprop_decay
    )
    vocab, batch_size, num_seeds = task.vocab_size, config.batch_size, config.num_seeds
    replicated = parallel.replicated(mesh)
    # Raises config errors (cell, init, sizes) now, without computing anything.
    jax.eval_shape(lambda: model_init(jax.random.PRNGKey(0), **model_kwargs))

    def init_one(seed_key):
        k_init, k_data = jax.random.split(seed_key)
        params = model_init(k_init, **model_kwargs)
        return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32), k_data)

    @jax.jit
    def init_all(seeds):
        state = jax.vmap(lambda s: init_one(jax.random.PRNGKey(s)))(seeds)
        return jax.lax.with_sharding_constraint(state, replicated)

    def init_state() -> TrainState:
        return init_all(np.arange(config.seed, config.seed + num_seeds, dtype=np.uint32))

    unroll = int(config.model.get("unroll", 0)) or None  # 0: rnncells.default_unroll

    def loss_fn(params, batch):
        ys = model_apply(
            params, batch.inputs, vocab_size=vocab, lengths=batch.lengths, unroll=unroll
        )
        return task.loss(ys, batch), task.metric(ys, batch)

    def update(params, opt_state, step, batch):
        (_, step_metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
        # Optax mixes Python floats with int32 step counts; allow that under strict promotion.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            learning_rate = jnp.asarray(schedule(step), jnp.float32)
        step_metrics = dict(
            step_metrics, grad_norm=optax.tree.norm(grads), learning_rate=learning_rate
        )
        return params, opt_state, step_metrics

    def one_step(state: TrainState, _):
        keys = jax.vmap(jax.random.split)(state.data_key)  # (S, 2, 2)
        batch = jax.vmap(lambda k: task.make_batch(k, batch_size))(keys[:, 1])
        batch = parallel.shard_batch(batch, mesh, batch_axis=1)
        params, opt_state, step_metrics = jax.vmap(update)(
            state.params, state.opt_state, state.step, batch
        )
        return TrainState(params, opt_state, state.step + 1, keys[:, 0]), step_metrics

    @jax.jit
    def train_chunk(state: TrainState):
        state, chunk_metrics = jax.lax.scan(one_step, state, None, length=config.log_every)
        state = jax.lax.with_sharding_constraint(state, replicated)
        return state, chunk_metrics

    eval_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0x5EED)
    test_batch = task.test_batch() if task.test_batch is not None else None

    @jax.jit
    def evaluate(params: ModelParams) -> dict:
        """Held-out metrics per seed: the task's test set, else a fixed batch of the task."""
        if test_batch is not None:
            eval_batch = test_batch
        else:
            eval_batch = task.make_batch(eval_key, config.eval_batch_size)

        def one(p):
            ys = model_apply(
                p, eval_batch.inputs, vocab_size=vocab, lengths=eval_batch.lengths, unroll=unroll
            )
            return task.metric(ys, eval_batch)

        return jax.vmap(one)(params)

    return Setup(task, init_state, train_chunk, evaluate, schedule, mesh)


def _config_diff(saved: dict, current: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(saved) | set(current))
    out = []
    for key in keys:
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: saved {a!r}, now {b!r}")
    return out


RESUMABLE_CHANGES = ("num_steps", "progress", "eval_every", "early_stop", "time_limit_s")
"""Config keys that may change between a run and its resumption (num_steps only under the
constant schedule: the others decay over num_steps, so a new total would change the
learning rate of the steps to come and of none already run)."""


def _save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    path = os.path.join(workdir, "config.json")
    current = json.loads(config.to_json_best_effort())
    if os.path.exists(path):
        with open(path, encoding="utf-8") as file:
            saved = json.load(file)
        resumable = set(RESUMABLE_CHANGES)
        if config.optim.schedule != "constant":
            resumable.discard("num_steps")
        diff = [d for d in _config_diff(saved, current) if d.split(":")[0] not in resumable]
        if diff:
            hint = (
                " (num_steps can change only with optim.schedule='constant')"
                if any(d.startswith("num_steps:") for d in diff)
                else ""
            )
            raise ValueError(
                f"workdir {workdir} holds a run with a different config "
                f"({'; '.join(diff)}){hint}; use a new --workdir"
            )
    with open(path, "w", encoding="utf-8") as file:
        json.dump(current, file, indent=2, sort_keys=True)


def solved_by_every_seed(task, metrics: dict[str, Any]) -> bool:
    """Whether ``task.solved`` holds for every seed of per-seed ``metrics`` ({name: (S,)})."""
    num_seeds = len(np.ravel(next(iter(metrics.values()))))
    return all(
        task.solved({k: float(np.ravel(v)[s]) for k, v in metrics.items()})
        for s in range(num_seeds)
    )


def per_seed_stats(values) -> dict[str, Any]:
    """Mean, std and the per-seed values of one metric, as the summary stores them."""
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values)),
        "per_seed": [float(v) for v in np.ravel(values)],
    }


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains (or resumes, or returns a finished) run of ``config`` in ``workdir``.

    Args:
        config: an experiment config (see ``configs/adding.py``).
        workdir: folder for the config, metrics, checkpoints and summary; a workdir
            holding a checkpoint of the same config is resumed from it.

    Returns:
        The summary dict also written to ``workdir/summary.json``: task, cell, T,
        baseline, steps, wall time, final held-out metrics per seed with mean and std,
        whether every seed solved the task. A run that reached ``config.time_limit_s``
        (seconds of training in this call) stops after the current chunk, evaluated and
        checkpointed, with ``stopped_at_time_limit`` true and ``finished`` false: the
        same call resumes it. With ``config.early_stop`` a run stops once every seed
        solves the task at a scheduled evaluation (every ``eval_every`` steps), so a run
        interrupted anywhere and resumed stops at the same step as an uninterrupted one.

    Raises:
        NonFiniteLossError: the loss became NaN/inf (the last good checkpoint is kept).
        ValueError: bad config value, a workdir of another config, or an unreadable
            checkpoint (naming its path).
        FileNotFoundError: a checkpoint listed but missing (naming its path).
    """
    time_limit_s = float(config.get("time_limit_s", 0.0))
    if time_limit_s < 0:
        raise ValueError(f"time_limit_s must be >= 0 (0: no limit), got {time_limit_s}")
    os.makedirs(workdir, exist_ok=True)
    setup = build(config)
    _save_config(config, workdir)
    summary_path = os.path.join(workdir, "summary.json")
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    eval_path = os.path.join(workdir, "eval.jsonl")
    if os.path.exists(summary_path):
        with open(summary_path, encoding="utf-8") as file:
            summary = json.load(file)
        if summary.get("finished") and summary.get("num_steps") == config.num_steps:
            return summary

    manager = checkpoint.make_manager(os.path.join(workdir, "checkpoints"))
    state = setup.init_state()
    start = 0
    if checkpoint.latest_step(manager) is not None:
        state = jax.block_until_ready(checkpoint.restore(manager, state))
        start = int(np.asarray(state.step)[0])
    metrics.truncate_jsonl(metrics_path, start)
    metrics.truncate_jsonl(eval_path, start)

    task = setup.task
    t0 = time.perf_counter()
    step, solved, stopped_early, at_time_limit = start, False, False, False
    eval_metrics = None
    if config.early_stop and 0 < start < config.num_steps and start % config.eval_every == 0:
        # The run may have stopped early here and been killed before its summary was
        # written: the held-out evaluation of the restored params decides again, with the
        # same result (its batch is fixed), so the run stops where it stopped.
        eval_metrics = jax.device_get(setup.evaluate(state.params))
        solved = solved_by_every_seed(task, eval_metrics)
        stopped_early = solved
    bar = tqdm.tqdm(
        total=config.num_steps,
        initial=start,
        disable=not config.progress,
        desc=f"{task.name} {config.model.cell}",
        dynamic_ncols=True,
    )
    try:
        while step < config.num_steps and not stopped_early:
            tick = time.perf_counter()
            state, chunk = setup.train_chunk(state)
            chunk = jax.device_get(chunk)
            steps_per_sec = config.log_every / (time.perf_counter() - tick)
            losses = np.asarray(chunk["loss"])  # (log_every, S)
            records = []
            for i in range(config.log_every):
                record = {"step": step + i + 1}
                for name, values in chunk.items():
                    record[name] = float(np.mean(values[i]))
                    record[f"{name}_per_seed"] = values[i]
                record["steps_per_sec"] = steps_per_sec
                records.append(record)
            bad = np.argwhere(~np.isfinite(losses))
            if bad.size:
                records = records[: int(bad[0][0]) + 1]
            metrics.write_jsonl(metrics_path, records)
            if bad.size:
                last = checkpoint.latest_step(manager)
                where = (
                    f"checkpoint step {last} in {manager.directory}"
                    if last is not None
                    else "no checkpoint (none was saved yet)"
                )
                raise NonFiniteLossError(
                    f"loss became {losses[tuple(bad[0])]} at step {step + int(bad[0][0]) + 1} "
                    f"(seed {config.seed + int(bad[0][1])}); training stopped; kept the last "
                    f"good {where}"
                )
            step += config.log_every
            bar.update(config.log_every)
            bar.set_postfix(loss=f"{losses[-1].mean():.4f}")
            at_time_limit = (
                time_limit_s > 0
                and time.perf_counter() - t0 >= time_limit_s
                and step < config.num_steps
            )
            scheduled_eval = step % config.eval_every == 0 or step == config.num_steps
            if scheduled_eval or at_time_limit:
                eval_metrics = jax.device_get(setup.evaluate(state.params))
                metrics.write_jsonl(
                    eval_path,
                    [
                        {
                            "step": step,
                            **{k: float(np.mean(v)) for k, v in eval_metrics.items()},
                            **{f"{k}_per_seed": v for k, v in eval_metrics.items()},
                        }
                    ],
                )
                solved = solved_by_every_seed(task, eval_metrics)
                # Only scheduled evaluations stop a run, so where it stops does not depend
                # on where a time limit interrupted it.
                if solved and scheduled_eval and config.early_stop and step < config.num_steps:
                    stopped_early = True
                    at_time_limit = False  # finished here, nothing to resume
            at_end = step == config.num_steps or stopped_early or at_time_limit
            if step % config.checkpoint_every == 0 or at_end:
                checkpoint.save(manager, step, state)
            if stopped_early or at_time_limit:
                break
    finally:
        bar.close()
    if eval_metrics is None:
        eval_metrics = jax.device_get(setup.evaluate(state.params))
        solved = solved_by_every_seed(task, eval_metrics)
    summary = {
        "task": task.name,
        "task_kwargs": dict(config.task.kwargs),
        "cell": config.model.cell,
        "init": config.model.init,
        "forget_bias": config.model.forget_bias,
        "hidden_size": config.model.hidden_size,
        "num_seeds": config.num_seeds,
        "seed": config.seed,
        "baseline_loss": float(task.baseline_loss),
        "num_steps": config.num_steps,
        "steps_run": step,
        "stopped_early": stopped_early,
        "stopped_at_time_limit": at_time_limit,
        "wall_s_this_process": time.perf_counter() - t0,
        "solved": bool(solved),
        "eval": {k: per_seed_stats(np.asarray(v)) for k, v in eval_metrics.items()},
        "finished": not at_time_limit,  # a run stopped at its time limit resumes
    }
    with open(summary_path, "w", encoding="utf-8") as file:
        json.dump(summary, file, indent=2)
    return summary


def final_params(config: ml_collections.ConfigDict, workdir: str) -> ModelParams:
    """The latest checkpointed params of the run in ``workdir`` (leading seed axis)."""
    setup = build(config)
    manager = checkpoint.make_manager(os.path.join(workdir, "checkpoints"))
    return checkpoint.restore(manager, setup.init_state()).params
