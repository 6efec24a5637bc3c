"""The training loop: several seeds in one program, data-parallel (sharding), resumable.

A run is a pure function of its config: seed ``s`` of ``num_seeds`` starts from
``PRNGKey(config.seed + s)``, split into the init key and the data key; each step splits
the data key, draws a fresh batch, and applies one optimiser update. All seeds advance
together as one program over a leading seed axis of the state (``jax.vmap``, or
``jax.lax.map`` one seed after another on one CPU device: ``config.seed_loop``), and
``log_every`` steps run per call as one ``lax.scan`` compiled once.

    state = init_state(config)                       # leading axis: seeds
    for chunk in range(num_steps // log_every):
        state, metrics = train_chunk(state)          # log_every steps, jitted once
        write metrics.jsonl; checkpoint; evaluate; early stop when solved

Files in ``workdir``: ``config.json`` (resolved config), ``metrics.jsonl`` (one line per
step: loss, task metric, grad norm, learning rate, steps/s, per seed and mean),
``eval.jsonl`` (held-out metrics every ``eval_every`` steps), ``checkpoints/`` (Orbax, each
with a copy of the config and a digest of its files), ``summary.json`` (final metrics,
mean and spread over seeds), ``.lock`` (the pid of the run holding the workdir).

A run's data is never damaged (DESIGN.md): one run per workdir (`lock`); every file is
checked before any is changed; nothing non-finite is saved (a NaN or inf loss, state or
held-out metric stops the run, `NonFiniteLossError`); a resume uses the newest intact
checkpoint (`checkpoint.restore_newest_intact`) and says when it passed over one.

Several processes (`distributed`) run the same loop in lockstep over one global mesh: every
decision (config checks, resume, NaN stops, evaluations, early stops) is made from the
same files and the same replicated values on each, so they all go on or all stop; process
0 alone writes the run's files and prints warnings and progress, and where a decision
rests on a clock (``time_limit_s``) process 0's is used by all.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from rnncells.tasks import Task, get_task
from rnncells.training import (
    checkpoint,
    distributed,
    lock,
    metrics,
    parallel,
    stall,
    tensorboard,
)
from rnncells.training.errors import (
    CheckpointError,
    ConfigError,
    MissingCheckpointError,
    NonFiniteLossError,
    ResumeError,
    RunInterrupted,
    RunWarning,
)
from rnncells.training.model import ModelParams, model_apply, model_init
from rnncells.training.optim import make_optimizer, make_schedule
from rnncells.training.validation import (
    OPTIONAL,
    check_eval_memory,
    validate,
    validate_workdir,
)

__all__ = [
    "CONFIG_FILE",
    "NON_FINITE_HINT",
    "PROGRESS_LINE_S",
    "RESUMABLE_CHANGES",
    "Setup",
    "TrainState",
    "build",
    "chrono_t_max_for",
    "final_params",
    "train",
]


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
    seed_loop: str = "vmap"  # how the seeds' steps run: "vmap" or "map" (`seed_loop`)


def chrono_t_max_for(task: Task, task_kwargs: dict, value: float) -> float:
    """``value`` if > 0, else Tallec & Ollivier's choice: 3T/2 for copy, T otherwise."""
    if value > 0:
        return float(value)
    T = task_kwargs.get("T", task.seq_len)
    return 1.5 * T if task.name == "copy" else float(T)


def seed_loop(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> str:
    """ "vmap" or "map": how each seed's training step and evaluation run. ``config.seed_loop``
    "auto" takes "map" (``jax.lax.map``, one seed after another inside the compiled chunk)
    on a mesh of one CPU device, where XLA runs the seeds' batched matmuls and the fused
    layer's in-place loops slower than one seed at a time (measured: a vmap of 5 seeds took
    1.08-1.82x the time of 5 single-seed steps, B = 20-32, H = 32-128, T = 200); "vmap"
    elsewhere (a GPU runs the seeds in parallel; a data-parallel mesh shards each seed's
    batch). The seeds' values are the same either way up to floating-point rounding."""
    choice = config.get("seed_loop", OPTIONAL["seed_loop"])
    if choice != "auto":
        return choice
    devices = mesh.devices.flat
    return "map" if mesh.devices.size == 1 and next(iter(devices)).platform == "cpu" else "vmap"


def _per_seed(how: str, fn, *args):
    """``fn`` of each seed's slice of ``args`` (leading seed axis), stacked: ``jax.vmap``
    or ``jax.lax.map`` (``seed_loop``)."""
    if how == "vmap":
        return jax.vmap(fn)(*args)
    return jax.lax.map(lambda a: fn(*a), args)


def build(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh | None = None) -> Setup:
    """Builds the task, initial state, jitted chunk of training steps and evaluation.

    Args:
        config: an experiment config (see ``configs/adding.py``).
        mesh: 1-D ``"data"`` mesh for data parallelism; None uses all devices (of every
            process, in a multi-process run) when ``config.data_parallel`` else the
            first device.

    Returns:
        Setup.

    Raises:
        ConfigError: a config value out of range, naming the key (also a ValueError).
    """
    validate(config)
    task_kwargs = dict(config.task.kwargs)
    try:
        task = get_task(config.task.name, **task_kwargs)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"config.task.kwargs: {error}") from None
    check_eval_memory(config, task)  # an XLA out-of-memory error otherwise, at evaluation
    if mesh is None:
        if not config.data_parallel and jax.process_count() > 1:
            raise ConfigError(
                f"config.data_parallel=False trains on one device, but this run has "
                f"{jax.process_count()} processes",
                hint="set --config.data_parallel=True, or run one process",
            )
        mesh = parallel.make_mesh(None if config.data_parallel else jax.devices()[:1])
    try:
        parallel.check_batch_divisible(config.batch_size, mesh)
    except ValueError as error:
        raise ConfigError(f"config.{error}") from None
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
        o.optimizer,
        schedule,
        clip_norm=o.clip_norm,
        rmsprop_decay=o.rmsprop_decay,
        momentum=o.get("momentum", 0.0),
    )
    vocab, batch_size, num_seeds = task.vocab_size, config.batch_size, config.num_seeds
    replicated = parallel.replicated(mesh)
    how = seed_loop(config, mesh)
    # Raises what validate cannot see (e.g. a learned embedding of size 0 for a token
    # task) now, without computing anything.
    try:
        jax.eval_shape(lambda: model_init(jax.random.PRNGKey(0), **model_kwargs))
    except ValueError as error:
        raise ConfigError(f"config.model: {error}") from None

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
        params, opt_state, step_metrics = _per_seed(
            how, update, state.params, state.opt_state, state.step, batch
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

        return _per_seed(how, one, params)

    return Setup(task, init_state, train_chunk, evaluate, schedule, mesh, how)


def _config_diff(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """The keys on which ``current`` differs from ``saved``, as "key: saved A, now B"; a key
    that the saved (older) config lacks matches the value that stands for it in
    `validation.OPTIONAL`, so a run saved before a key was added resumes."""
    keys = sorted(set(saved) | set(current))
    out = []
    for key in keys:
        a, b = saved.get(key), current.get(key)
        if key not in saved and OPTIONAL.get(prefix + key, object()) == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: saved {a!r}, now {b!r}")
    return out


RESUMABLE_CHANGES = (
    "num_steps",
    "progress",
    "eval_every",
    "early_stop",
    "time_limit_s",
    "tensorboard",
    "stall_timeout_s",
    "seed_loop",
)
"""Config keys that may change between a run and its resumption (num_steps only under the
constant schedule: the others decay over num_steps, so a new total would change the
learning rate of the steps to come and of none already run)."""


def _config_changes(saved: dict, current: dict, config: ml_collections.ConfigDict) -> list[str]:
    """The differences of ``current`` from ``saved`` that a resume cannot take (all but
    RESUMABLE_CHANGES), as "key: saved A, now B"."""
    resumable = set(RESUMABLE_CHANGES)
    if config.optim.schedule != "constant":
        resumable.discard("num_steps")
    return [d for d in _config_diff(saved, current) if d.split(":")[0] not in resumable]


def _check_config(saved: dict, current: dict, config: ml_collections.ConfigDict, workdir: str):
    """ConfigError unless ``current`` equals the config ``saved`` with the run in ``workdir``
    (but for RESUMABLE_CHANGES)."""
    diff = _config_changes(saved, current, config)
    if diff:
        hint = (
            " (num_steps can change only with optim.schedule='constant')"
            if any(d.startswith("num_steps:") for d in diff)
            else ""
        )
        raise ConfigError(
            f"workdir {workdir} holds a run with a different config ({'; '.join(diff)}){hint}",
            hint="use a new --workdir, or the saved run's config",
        )


CONFIG_FILE = "config.json"
"""The run's resolved config: in the workdir, and a copy in every checkpoint."""


def _recover_config(manager, workdir: str, found: list[str]) -> dict:
    """The config saved in the newest verified checkpoint, for a run whose config.json is
    lost (warning that it was); ResumeError when no checkpoint holds one."""
    for step in reversed(checkpoint.all_steps(manager)):
        text = checkpoint.read_file(manager, step, CONFIG_FILE)
        if text is not None and checkpoint.verify(manager, step) is None:
            _warn(
                f"{CONFIG_FILE} was missing from {workdir}; recovered the run's config from "
                f"checkpoint step {step}",
                stacklevel=3,
            )
            saved = json.loads(text)  # verified: the text is what was saved
            if distributed.is_primary():
                metrics.write_json(os.path.join(workdir, CONFIG_FILE), saved, sort_keys=True)
            return saved
    raise ResumeError(
        f"workdir {workdir} holds a run ({', '.join(found)}) but no {CONFIG_FILE} and no "
        "intact checkpoint holding a copy of it, so its config cannot be checked against "
        "this one",
        hint=f"put back its {CONFIG_FILE}, or use a new --workdir",
    )


def _say(message: str) -> None:
    """One line on stderr, from process 0 only: where a run starts (resumed, finished)."""
    if distributed.is_primary():
        print(message, file=sys.stderr, flush=True)


def _warn(message: str, stacklevel: int) -> None:
    """A `RunWarning`, from process 0 only (the others would repeat it)."""
    if distributed.is_primary():
        warnings.warn(message, RunWarning, stacklevel=stacklevel + 1)


def _ranges(ranges: list[tuple[int, int]]) -> str:
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in ranges)


def _nothing_saved_or_kept(manager) -> str:
    """Where the run stands after a non-finite value, truly: its newest intact checkpoint."""
    last = checkpoint.latest_step(manager)
    if last is None:
        return "no checkpoint was saved yet"
    return f"kept the last good checkpoint step {last} in {manager.directory}"


NON_FINITE_HINT = (
    "resuming repeats the same steps and fails the same way; start a new --workdir with a "
    "lower config.optim.learning_rate or a config.optim.clip_norm"
)


def _check_eval(eval_metrics: dict, step: int, config, manager) -> None:
    """NonFiniteLossError when a held-out metric of any seed is NaN or infinite."""
    for name, values in eval_metrics.items():
        values = np.ravel(np.asarray(values))
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise NonFiniteLossError(
                f"held-out {name} became {values[bad[0]]} at step {step} (seed "
                f"{config.seed + int(bad[0])}); training stopped; "
                f"{_nothing_saved_or_kept(manager)}",
                hint=NON_FINITE_HINT,
            )


def train(
    config: ml_collections.ConfigDict, workdir: str, *, command: str | None = None
) -> dict[str, Any]:
    """Trains (or resumes, or returns a finished) run of ``config`` in ``workdir``.

    Args:
        config: an experiment config (see ``configs/adding.py``).
        workdir: folder for the config, metrics, checkpoints and summary; a workdir
            holding a checkpoint of the same config is resumed from it.
        command: the command line that resumes this run, named in the messages of a
            stalled or interrupted run (default: "the same call").

    Returns:
        The summary dict also written to ``workdir/summary.json``: task, cell, T,
        baseline, steps, wall time, final held-out metrics per seed with mean and std,
        whether every seed solved the task. A run that reached ``config.time_limit_s``
        (seconds of training in this call) stops after the current chunk, evaluated and
        checkpointed, with ``stopped_at_time_limit`` true and ``finished`` false: the
        same call resumes it. With ``config.early_stop`` a run stops once every seed
        solves the task at a scheduled evaluation (every ``eval_every`` steps), so a run
        interrupted anywhere and resumed stops at the same step as an uninterrupted one.

    A run that resumes says so on stderr (the checkpoint step it resumes from), and so does
    a finished run whose summary is returned as it is.

    The run's data is never damaged: the config, the workdir (not a file, not under a file,
    writable) and the optional tensorboardX are checked before the workdir is created;
    the workdir is locked for the whole call (one run per workdir); every file is read and
    checked before any is changed; a checkpoint is saved only when the whole state is
    finite, and resuming uses the newest intact one (a `RunWarning` names any newer one
    passed over, and the steps after it are run again, with the same result) and only
    when the config saved inside it is this one. A ``config.json`` lost from a resumable
    run is recovered from its checkpoint (with a `RunWarning`); records missing from
    ``metrics.jsonl`` and scheduled evaluations missing from ``eval.jsonl`` are named in
    a `RunWarning`.

    No run hangs silently: the restore, every chunk of steps, every evaluation and every
    save run under a `rnncells.training.stall.StallGuard` (limit ``config.stall_timeout_s``;
    0 derives it from each phase's measured time), which ends a process whose phase makes
    no progress for that long with exit status 4, its stacks in ``workdir/stall.txt``.
    While a compiled chunk runs, the loop waits in short sleeps, so SIGINT (Ctrl-C) and
    SIGTERM stop the run at once with `RunInterrupted`; the steps since the newest
    checkpoint are run again on resuming, with the same result.

    Raises:
        ConfigError: a bad config value, or a workdir holding a run of another config.
        WorkdirLockedError: another process is running in ``workdir`` (naming its pid).
        CorruptFileError: a damaged line in a JSON or JSON-lines file (naming file and line).
        CheckpointError: checkpoints exist but none is intact (naming the folder), or the
            newest intact one was saved by a run of another config.
        ResumeError: a run's files without its config.
        NonFiniteLossError: the loss, the training state or a held-out metric became NaN or
            infinite; nothing non-finite was saved, and the message names the checkpoint
            kept (or says none was saved yet).
        RunInterrupted: SIGINT or SIGTERM arrived during the run (in the main thread).

    All of these are ``RunError``s (``rnncells.training.errors``).

    In a multi-process run (`rnncells.training.distributed`) every process calls it with
    the same arguments and the workdir on a filesystem all of them see; each raises the
    same error, and all return the same summary (written by process 0).
    """
    setup = build(config)  # every config error before the workdir is created
    validate_workdir(workdir)  # not a file, not under one, writable
    tensorboard.check_available(bool(config.get("tensorboard", False)))
    os.makedirs(workdir, exist_ok=True)
    with lock.workdir_lock(workdir):
        return _train_locked(config, setup, workdir, command)


def _wait(tree: Any) -> Any:
    """``jax.block_until_ready(tree)``, waiting in short sleeps rather than in one blocking
    call, so that signals (Ctrl-C, SIGTERM) act while a compiled call runs."""
    leaves: list[Any] = [x for x in jax.tree.leaves(tree) if isinstance(x, jax.Array)]
    pause = 1e-4
    while not all(x.is_ready() for x in leaves):
        time.sleep(pause)
        pause = min(2 * pause, 0.02)
    return tree


def _guarded(guard: stall.StallGuard, name: str, step: int, fn: Callable, *args) -> Any:
    """``fn(*args)``, its results ready, as phase ``name`` of ``guard`` (whose first call
    compiles ``fn``)."""
    with guard.phase(name, step, compiles=True):
        return _wait(fn(*args))


@contextlib.contextmanager
def _signals_interrupt(received: list[int]) -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the main thread inside the block (the
    signal's number appended to ``received``); handlers a user installed are left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    previous = {}
    for signum, default in (
        (signal.SIGINT, signal.default_int_handler),
        (signal.SIGTERM, signal.SIG_DFL),
    ):
        if signal.getsignal(signum) == default:
            previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _newest_checkpoint(manager) -> str:
    """Where a stopped run resumes from, in words."""
    last = checkpoint.latest_step(manager)
    if last is None:
        return "no checkpoint was saved yet (a rerun starts over)"
    return f"the newest intact checkpoint is step {last} in {manager.directory}"


class _Files(NamedTuple):
    """A run's files in its workdir."""

    config: str
    summary: str
    metrics: str
    eval: str


def _check_checkpoint_config(manager, step: int, current: dict, config, workdir: str) -> None:
    """CheckpointError unless checkpoint ``step`` was saved by a run of this config: its
    own verified copy decides, whatever ``config.json`` says now."""
    text = checkpoint.read_file(manager, step, CONFIG_FILE)
    if text is None:
        return  # saved before checkpoints held their config; config.json was checked
    diff = _config_changes(json.loads(text), current, config)
    if diff:
        raise CheckpointError(
            f"checkpoint step {step} in {manager.directory} was saved by a run of another "
            f"config ({'; '.join(diff)}): {CONFIG_FILE} in {workdir} was changed after it",
            hint=f"use a new --workdir, or the config saved in "
            f"{checkpoint.step_dir(manager, step)}/{CONFIG_FILE}",
        )


def _missing_evaluations(records: list[dict], start: int, config) -> list[int]:
    """The scheduled evaluation steps (every ``eval_every``) up to ``start`` that
    ``eval.jsonl`` lacks."""
    present = {r["step"] for r in records}
    last = min(start, config.num_steps)
    return [s for s in range(config.eval_every, last + 1, config.eval_every) if s not in present]


def _train_locked(
    config: ml_collections.ConfigDict, setup: Setup, workdir: str, command: str | None
) -> dict:
    files = _Files(
        *(
            os.path.join(workdir, name)
            for name in (CONFIG_FILE, "summary.json", "metrics.jsonl", "eval.jsonl")
        )
    )
    manager = checkpoint.make_manager(os.path.join(workdir, "checkpoints"))
    resume = f"resume with: {command}" if command else "the same call resumes the run"
    stalled_hint = resume + " (the steps since that checkpoint are run again, alike)"
    if jax.default_backend() == "cpu":
        stalled_hint += (
            f"; if it stalls again, run it with XLA_FLAGS={stall.YNN_OFF_FLAG} (XLA:CPU's "
            "YNN fusions, known to hang on some programs)"
        )
    guard = stall.StallGuard(
        workdir,
        float(config.get("stall_timeout_s", 0.0)),
        describe_checkpoint=lambda: _newest_checkpoint(manager),
        resume_hint=stalled_hint,
        primary=distributed.is_primary(),
        process_index=jax.process_index(),
    )
    received: list[int] = []
    with guard, _signals_interrupt(received):
        try:
            return _train_guarded(config, setup, workdir, files, manager, guard)
        except BaseException as error:
            # A signal's KeyboardInterrupt raised inside a host callback reaches here
            # as the runtime's error: the signal received decides.
            if not (received or isinstance(error, KeyboardInterrupt)):
                raise
            signum = received[-1] if received else signal.SIGINT
            raise RunInterrupted(
                f"stopped by {signal.Signals(signum).name} at step {guard.step} of "
                f"{config.num_steps}; {_newest_checkpoint(manager)}",
                signum=signum,
                hint=resume,
            ) from None


def _open_run(config, setup: Setup, workdir: str, files: _Files, manager, guard):
    """Reads and checks the run's files, restores its newest intact checkpoint; returns
    (finished summary or None, state, start step, eval records, metric records)."""
    saved_config = metrics.read_json(files.config)
    summary = metrics.read_json(files.summary)
    metric_records = metrics.read_steps(files.metrics)
    eval_records = metrics.read_steps(files.eval)
    current = json.loads(config.to_json_best_effort())
    if saved_config is None:
        found = [
            name
            for name, present in (
                ("summary.json", summary is not None),
                ("metrics.jsonl", bool(metric_records)),
                ("eval.jsonl", bool(eval_records)),
                ("checkpoints", bool(checkpoint.all_steps(manager))),
            )
            if present
        ]
        if found:
            saved_config = _recover_config(manager, workdir, found)
    if saved_config is not None:
        _check_config(saved_config, current, config, workdir)
    if isinstance(summary, dict):
        if summary.get("finished") and summary.get("num_steps") == config.num_steps:
            _say(
                f"the run in {workdir} already finished ({summary.get('steps_run')} of "
                f"{config.num_steps} steps): its summary is returned, nothing is trained"
            )
            return summary, None, 0, [], []

    state = setup.init_state()
    start = 0
    with guard.phase("restore", 0, compiles=True):
        found_checkpoint = checkpoint.restore_newest_intact(manager, state)
        passed_over: list[int] = []
        if found_checkpoint is not None:
            state, start, skipped = found_checkpoint
            state = _wait(state)
            passed_over = [step for step, _ in skipped]
    if found_checkpoint is not None:
        _check_checkpoint_config(manager, start, current, config, workdir)
        if start > config.num_steps:  # before any file is changed
            raise ConfigError(
                f"config.num_steps={config.num_steps} is below step {start} of the run's "
                f"newest checkpoint in {manager.directory}: the run is already past it",
                hint=f"resume with --config.num_steps >= {start} (the run's was "
                f"{saved_config.get('num_steps') if saved_config else start}), or use a new "
                "--workdir",
            )
        if skipped:
            unusable = "; ".join(f"checkpoint step {s} is unusable ({why})" for s, why in skipped)
            _warn(
                f"{unusable}; resuming from step {start}, the newest intact checkpoint in "
                f"{manager.directory}: steps {start + 1}-{skipped[0][0]} are run again, and "
                "the unusable checkpoints are deleted",
                stacklevel=4,
            )
    if found_checkpoint is not None:
        _say(f"resuming from checkpoint step {start} of {config.num_steps} in {manager.directory}")
    # Every process has read the run's files; from here process 0 changes them.
    distributed.barrier("rnncells run files read")
    checkpoint.discard(manager, passed_over)  # and Orbax's leftovers of killed saves
    gaps = metrics.missing_steps([r for r in metric_records if r["step"] <= start], start)
    if gaps:
        _warn(
            f"{files.metrics} lacks the records of steps {_ranges(gaps)} (before step "
            f"{start}, where this run resumes); they are not written again",
            stacklevel=4,
        )
    lost = _missing_evaluations([r for r in eval_records if r["step"] <= start], start, config)
    if lost:
        _warn(
            f"{files.eval} lacks the scheduled evaluations of steps "
            f"{', '.join(map(str, lost))} (before step {start}, where this run resumes); "
            "their params are gone, so they are not written again",
            stacklevel=4,
        )
    if distributed.is_primary():
        metrics.write_json(files.config, current, sort_keys=True)
        for path, records in ((files.metrics, metric_records), (files.eval, eval_records)):
            if os.path.exists(path):  # drops what was written after the checkpoint
                metrics.write_records(path, [r for r in records if r["step"] <= start])
    return None, state, start, eval_records, metric_records


class _Run(NamedTuple):
    """What every step of a run reads: its config and pieces, files, checkpoints, guard."""

    config: ml_collections.ConfigDict
    setup: Setup
    workdir: str
    files: _Files
    manager: Any  # the run's Orbax CheckpointManager
    guard: stall.StallGuard


class _Progress(NamedTuple):
    """Where a run stands: after its latest chunk, or where it resumed."""

    state: TrainState
    step: int  # optimiser steps taken
    solved: bool  # every seed solved the task at the latest evaluation
    stopped_early: bool
    at_time_limit: bool
    eval_metrics: dict | None  # the latest held-out metrics per seed; None before any


def _train_guarded(config, setup: Setup, workdir: str, files: _Files, manager, guard) -> dict:
    """A run under its stall guard: opens or restores it, trains its chunks, writes its
    summary (or returns the summary of a run already finished)."""
    finished, state, start, _, _ = _open_run(config, setup, workdir, files, manager, guard)
    if finished is not None:
        return finished
    run = _Run(config, setup, workdir, files, manager, guard)
    time_limit_s = float(config.get("time_limit_s", 0.0))
    config_text = json.dumps(json.loads(config.to_json_best_effort()), indent=2, sort_keys=True)
    t0 = time.perf_counter()
    progress = _resumed_progress(run, state, start)
    progress = _train_chunks(run, progress, t0, time_limit_s, config_text)
    return _finish_run(run, progress, t0)


def _evaluate(run: _Run, params: ModelParams, step: int) -> dict:
    """Held-out metrics per seed of ``params`` at ``step``, under the stall guard;
    NonFiniteLossError when any is NaN or infinite."""
    eval_metrics = jax.device_get(_guarded(run.guard, "evaluate", step, run.setup.evaluate, params))
    _check_eval(eval_metrics, step, run.config, run.manager)
    return eval_metrics


def _resumed_progress(run: _Run, state: TrainState, start: int) -> _Progress:
    """Where a run starts at step ``start``: an early stop made there is made again."""
    config = run.config
    progress = _Progress(
        state, start, solved=False, stopped_early=False, at_time_limit=False, eval_metrics=None
    )
    if config.early_stop and 0 < start < config.num_steps and start % config.eval_every == 0:
        # The run may have stopped early here and been killed before its summary was
        # written: the held-out evaluation of the restored params decides again, with the
        # same result (its batch is fixed), so the run stops where it stopped.
        eval_metrics = _evaluate(run, state.params, start)
        solved = metrics.solved_by_every_seed(run.setup.task, eval_metrics)
        progress = progress._replace(solved=solved, stopped_early=solved, eval_metrics=eval_metrics)
    return progress


PROGRESS_LINE_S = 30.0
"""How often a run whose stderr is not a terminal (a log file) prints a progress line."""


class _LineProgress:
    """Progress as lines on stderr: one when training starts, then one every
    ``PROGRESS_LINE_S`` seconds, for a log, where a bar's redraws would make one long line.
    The calls the loop makes of a tqdm bar: update, set_postfix, close."""

    def __init__(self, total: int, initial: int, desc: str) -> None:
        self.total, self.n, self.desc = total, initial, desc
        self.postfix = ""
        self.last = time.monotonic()
        what = "resuming at" if initial else "starting at"
        self._print(f"{what} step {initial} of {total} (the first chunk compiles)")

    def _print(self, text: str) -> None:
        print(f"{self.desc}: {text}", file=sys.stderr, flush=True)

    def set_postfix(self, refresh: bool = True, **values: str) -> None:
        del refresh
        self.postfix = ", ".join(f"{name} {value}" for name, value in values.items())

    def update(self, n: int) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= PROGRESS_LINE_S:
            self.last = now
            self._print(
                f"step {self.n} of {self.total}" + (f", {self.postfix}" if self.postfix else "")
            )

    def close(self) -> None:
        pass


def _progress_bar(total: int, initial: int, desc: str, enabled: bool):
    """A tqdm bar on a terminal, progress lines in a log (``_LineProgress``), nothing when
    ``enabled`` is false (config.progress off, or not process 0)."""
    if enabled and not sys.stderr.isatty():
        return _LineProgress(total, initial, desc)
    return tqdm.tqdm(
        total=total, initial=initial, disable=not enabled, desc=desc, dynamic_ncols=True
    )


def _train_chunks(
    run: _Run, progress: _Progress, t0: float, time_limit_s: float, config_text: str
) -> _Progress:
    """The chunk loop: trains ``log_every`` steps at a time, each chunk logged, evaluated
    and checkpointed as scheduled, until num_steps, an early stop or the time limit."""
    config = run.config
    primary = distributed.is_primary()
    board = tensorboard.open_writer(
        primary and bool(config.get("tensorboard", False)), run.workdir, progress.step
    )
    bar = _progress_bar(
        config.num_steps,
        progress.step,
        f"{run.setup.task.name} {config.model.cell}",
        bool(config.progress and primary),
    )
    try:
        while progress.step < config.num_steps and not progress.stopped_early:
            state = _train_chunk(run, progress.state, progress.step, board, bar)
            step = progress.step + config.log_every
            at_time_limit = (
                time_limit_s > 0
                and time.perf_counter() - t0 >= time_limit_s
                and step < config.num_steps
            )
            if time_limit_s > 0:  # the processes' clocks differ: process 0's decides
                at_time_limit = bool(distributed.broadcast(at_time_limit))
            progress = progress._replace(state=state, step=step, at_time_limit=at_time_limit)
            progress = _evaluate_and_save(run, progress, board, config_text)
            if progress.stopped_early or progress.at_time_limit:
                break
    finally:
        bar.close()
        if board is not None:
            board.close()
    return progress


def _step_records(
    chunk: dict, step: int, log_every: int, steps_per_sec: float
) -> list[dict[str, Any]]:
    """One metrics.jsonl record per step of a chunk that began after ``step``: each metric's
    mean over seeds and its per-seed values, and the chunk's steps/s."""
    records = []
    for i in range(log_every):
        record: dict[str, Any] = {"step": step + i + 1}
        for name, values in chunk.items():
            record[name] = float(np.mean(values[i]))
            record[f"{name}_per_seed"] = values[i]
        record["steps_per_sec"] = steps_per_sec
        records.append(record)
    return records


def _train_chunk(run: _Run, state: TrainState, step: int, board, bar) -> TrainState:
    """Trains the ``log_every`` steps after ``step`` and writes their records;
    NonFiniteLossError (after the records up to the first bad loss) when a loss or the
    state became NaN or infinite."""
    config, manager = run.config, run.manager
    tick = time.perf_counter()
    state, chunk = _guarded(run.guard, "chunk", step, run.setup.train_chunk, state)
    chunk = jax.device_get(chunk)
    steps_per_sec = config.log_every / (time.perf_counter() - tick)
    losses = np.asarray(chunk["loss"])  # (log_every, S)
    records = _step_records(chunk, step, config.log_every, steps_per_sec)
    bad = np.argwhere(~np.isfinite(losses))
    if bad.size:
        records = records[: int(bad[0][0]) + 1]
    if distributed.is_primary():
        metrics.write_jsonl(run.files.metrics, records)
    if board is not None:
        board.write("train", records)
    if bad.size:
        raise NonFiniteLossError(
            f"loss became {losses[tuple(bad[0])]} at step {step + int(bad[0][0]) + 1} "
            f"(seed {config.seed + int(bad[0][1])}); training stopped; "
            f"{_nothing_saved_or_kept(manager)}",
            hint=NON_FINITE_HINT,
        )
    step += config.log_every
    # The losses were computed before each update: the last update can still have
    # made the state non-finite.
    bad_leaves = checkpoint.nonfinite_leaves(state)
    if bad_leaves:
        raise NonFiniteLossError(
            f"the training state became non-finite by step {step} (the losses up to "
            f"it were finite) in {', '.join(bad_leaves)}; training stopped; "
            f"{_nothing_saved_or_kept(manager)}",
            hint=NON_FINITE_HINT,
        )
    bar.set_postfix(loss=f"{losses[-1].mean():.4f}", refresh=False)
    bar.update(config.log_every)
    return state


def _evaluate_and_save(run: _Run, progress: _Progress, board, config_text: str) -> _Progress:
    """After a chunk: evaluates when scheduled or at the time limit (an early stop when
    every seed solved the task at a scheduled one) and checkpoints when due or at the end."""
    config, step = run.config, progress.step
    scheduled_eval = step % config.eval_every == 0 or step == config.num_steps
    if scheduled_eval or progress.at_time_limit:
        eval_metrics = _evaluate(run, progress.state.params, step)
        eval_record = {
            "step": step,
            **{k: float(np.mean(v)) for k, v in eval_metrics.items()},
            **{f"{k}_per_seed": v for k, v in eval_metrics.items()},
        }
        if distributed.is_primary():
            metrics.write_jsonl(run.files.eval, [eval_record])
        if board is not None:
            board.write("eval", [eval_record])
        solved = metrics.solved_by_every_seed(run.setup.task, eval_metrics)
        progress = progress._replace(solved=solved, eval_metrics=eval_metrics)
        # Only scheduled evaluations stop a run, so where it stops does not depend
        # on where a time limit interrupted it.
        if solved and scheduled_eval and config.early_stop and step < config.num_steps:
            # Finished here: nothing to resume.
            progress = progress._replace(stopped_early=True, at_time_limit=False)
    at_end = step == config.num_steps or progress.stopped_early or progress.at_time_limit
    if step % config.checkpoint_every == 0 or at_end:
        with run.guard.phase("save", step, compiles=True):
            checkpoint.save(run.manager, step, progress.state, files={CONFIG_FILE: config_text})
    return progress


def _finish_run(run: _Run, progress: _Progress, t0: float) -> dict:
    """The run's summary, written to summary.json: its final held-out metrics (evaluated
    now if no chunk was) with mean and spread over seeds, and how it stopped."""
    config, task = run.config, run.setup.task
    eval_metrics, solved = progress.eval_metrics, progress.solved
    if eval_metrics is None:
        eval_metrics = _evaluate(run, progress.state.params, progress.step)
        solved = metrics.solved_by_every_seed(task, eval_metrics)
    summary = {
        "task": task.name,
        "task_kwargs": dict(config.task.kwargs),
        "cell": config.model.cell,
        "init": config.model.init,
        "forget_bias": config.model.forget_bias,
        "hidden_size": config.model.hidden_size,
        "num_seeds": config.num_seeds,
        "seed": config.seed,
        "seed_loop": run.setup.seed_loop,
        "baseline_loss": float(task.baseline_loss),
        "num_steps": config.num_steps,
        "steps_run": progress.step,
        "stopped_early": progress.stopped_early,
        "stopped_at_time_limit": progress.at_time_limit,
        "wall_s_this_process": time.perf_counter() - t0,
        "solved": bool(solved),
        "eval": {k: metrics.per_seed_stats(np.asarray(v)) for k, v in eval_metrics.items()},
        "finished": not progress.at_time_limit,  # a run stopped at its time limit resumes
    }
    if distributed.is_primary():
        metrics.write_json(run.files.summary, summary)
    return summary


def final_params(config: ml_collections.ConfigDict, workdir: str) -> ModelParams:
    """The params of the newest intact checkpoint of the run in ``workdir`` (leading seed
    axis); a `RunWarning` names any newer checkpoint passed over.

    Raises:
        MissingCheckpointError: the run has no checkpoint.
        CheckpointError: it has checkpoints but none is intact.
    """
    setup = build(config)
    manager = checkpoint.make_manager(os.path.join(workdir, "checkpoints"))
    found = checkpoint.restore_newest_intact(manager, setup.init_state())
    if found is None:
        raise MissingCheckpointError(f"no checkpoint found in {manager.directory}")
    state, step, skipped = found
    for passed, why in skipped:
        _warn(f"checkpoint step {passed} is unusable ({why}); read step {step}", stacklevel=2)
    return state.params
