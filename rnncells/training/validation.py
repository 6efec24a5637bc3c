"""Checks every value of an experiment config before anything is built or written.

Each error is a `ConfigError` naming the key (``config.optim.learning_rate``), what it
must be, and the value given. The keys are those of ``configs/common.py``; a key the
training loop does not read is an error too (a misspelt key would otherwise be ignored).
``task.kwargs`` belong to the task and are checked when it is built.
"""

from __future__ import annotations

import math
import os
from typing import Any

import ml_collections

from rnncells.tasks import TASK_NAMES
from rnncells.training.errors import ConfigError
from rnncells.training.model import EMBEDDINGS, INITS, cell_names, init_mismatch
from rnncells.training.optim import OPTIMIZERS, SCHEDULES

SEED_LOOPS = ("auto", "vmap", "map")
"""``config.seed_loop``: how the seeds' steps run (``rnncells.training.loop.seed_loop``)."""

__all__ = [
    "EVAL_BATCH_LIMIT",
    "OPTIONAL",
    "SEED_LIMIT",
    "check_eval_memory",
    "device_memory_bytes",
    "eval_memory_bytes",
    "validate",
    "validate_workdir",
]

SEED_LIMIT = 2**31
"""Seeds ``seed .. seed + num_seeds - 1`` must be below this (PRNG keys from int32 seeds)."""

EVAL_BATCH_LIMIT = 2**16
"""``eval_batch_size`` must be at most this. A held-out metric averaged over B sequences
has a standard error of about its per-sequence spread / sqrt(B): at 2**16 sequences that is
0.4% of the spread, far below the differences between seeds, so a larger batch only costs
memory (its evaluation holds the inputs and hidden states of all of them, for every seed,
at once: 10**9 sequences run XLA out of memory). `eval_memory_bytes` bounds it further by
the device's memory once the task's length is known."""

OPTIONAL = {
    "model.unroll": 0,
    "time_limit_s": 0.0,
    "tensorboard": False,
    "stall_timeout_s": 0.0,
    "optim.momentum": 0.0,
    "seed_loop": "auto",
}
"""Keys older configs may lack, with the value that stands for them."""


def _get(config: ml_collections.ConfigDict, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        try:
            node = node[part]
        except (KeyError, AttributeError, TypeError):
            if key in OPTIONAL:
                return OPTIONAL[key]
            raise ConfigError(f"config.{key} is missing") from None
    return node


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Checker:
    """Reads keys of a config, remembering which were read (the rest are unknown)."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        self.read: set[str] = set()

    def get(self, key: str) -> Any:
        self.read.add(key)
        return _get(self.config, key)

    def fail(self, key: str, expected: str, value: Any) -> None:
        raise ConfigError(f"config.{key} must be {expected}, got {value!r}")

    def int_at_least(self, key: str, minimum: int, note: str = "") -> int:
        value = self.get(key)
        if not _is_int(value) or value < minimum:
            expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
            self.fail(key, expected + note, value)
        return value

    def number(self, key: str, *, minimum: float | None = None, note: str = "") -> float:
        value = self.get(key)
        if not _is_number(value) or not math.isfinite(value):
            ok = False
        else:
            ok = minimum is None or value >= minimum
        if not ok:
            bound = "" if minimum is None else f" >= {minimum:g}"
            self.fail(key, f"a finite number{bound}{note}", value)
        return float(value)

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        value = self.get(key)
        if value not in choices:
            self.fail(key, f"one of {list(choices)}", value)
        return value

    def boolean(self, key: str) -> bool:
        value = self.get(key)
        if not isinstance(value, bool):
            self.fail(key, "True or False", value)
        return value


def _leaf_keys(config: Any, prefix: str = "") -> list[str]:
    out = []
    for key in config.keys():
        value = config[key]
        name = f"{prefix}{key}"
        if name == "task.kwargs":
            continue  # the task's own arguments, checked by the task
        if isinstance(value, ml_collections.ConfigDict | dict):
            out += _leaf_keys(value, name + ".")
        else:
            out.append(name)
    return out


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks every value of ``config``; nothing is built or written.

    Raises:
        ConfigError: a key missing or unknown, or a value of the wrong type or out of
            range, naming the key, what it must be and the value (also a ValueError).
    """
    c = _Checker(config)
    for key in (
        "batch_size",
        "num_steps",
        "num_seeds",
        "log_every",
        "eval_every",
        "checkpoint_every",
        "eval_batch_size",
    ):
        c.int_at_least(key, 1)
    eval_batch_size = config.eval_batch_size
    if eval_batch_size > EVAL_BATCH_LIMIT:
        raise ConfigError(
            f"config.eval_batch_size must be an integer in [1, {EVAL_BATCH_LIMIT}] "
            "(EVAL_BATCH_LIMIT = 2**16: more sequences do not make a held-out metric "
            f"measurably more precise, only use more memory), got {eval_batch_size!r}",
            hint="set --config.eval_batch_size=1000 or less (the experiments use 64 to 1000)",
        )
    log_every = config.log_every
    for key in ("num_steps", "eval_every", "checkpoint_every"):
        value = config[key]
        if value % log_every:
            raise ConfigError(
                f"config.{key} must be a multiple of config.log_every={log_every}, got {value}"
            )
    num_seeds = config.num_seeds
    seed = c.get("seed")
    if not _is_int(seed) or not 0 <= seed <= SEED_LIMIT - num_seeds:
        c.fail("seed", f"an integer in [0, {SEED_LIMIT - num_seeds}] (num_seeds={num_seeds})", seed)
    c.number("time_limit_s", minimum=0, note=" (0: no limit)")
    c.number("stall_timeout_s", minimum=0, note=" (0: from each phase's measured time)")
    for key in ("early_stop", "progress", "data_parallel", "tensorboard"):
        c.boolean(key)
    c.choice("seed_loop", SEED_LOOPS)

    c.choice("task.name", TASK_NAMES)
    c.read.add("task.kwargs")
    kwargs = c.get("task.kwargs")
    if not isinstance(kwargs, ml_collections.ConfigDict | dict):
        c.fail("task.kwargs", "a dict of the task's arguments", kwargs)

    cell = c.choice("model.cell", cell_names())
    init = c.choice("model.init", INITS)
    mismatch = init_mismatch(cell, init)
    if mismatch is not None:
        raise ConfigError(f"config.model.init: {mismatch}")
    c.int_at_least("model.hidden_size", 1)
    c.int_at_least("model.num_layers", 1)
    c.choice("model.embedding", EMBEDDINGS)
    c.int_at_least("model.embed_size", 0)
    c.number("model.forget_bias")
    t_max = c.number("model.chrono_t_max", minimum=0, note=" (0: 3T/2 for copy, T otherwise)")
    if init == "chrono" and 0 < t_max <= 2:
        c.fail("model.chrono_t_max", "> 2 for init='chrono' (or 0 for the default)", t_max)
    c.int_at_least("model.unroll", 0, " (0: rnncells.default_unroll)")

    c.choice("optim.optimizer", OPTIMIZERS)
    schedule = c.choice("optim.schedule", SCHEDULES)
    learning_rate = c.get("optim.learning_rate")
    if not _is_number(learning_rate) or not math.isfinite(learning_rate) or learning_rate <= 0:
        c.fail("optim.learning_rate", "a finite number > 0", learning_rate)
    warmup = c.int_at_least("optim.warmup_steps", 0)
    if schedule == "warmup_cosine" and warmup >= config.num_steps:
        c.fail(
            "optim.warmup_steps", f"< config.num_steps={config.num_steps} for warmup_cosine", warmup
        )
    c.number("optim.clip_norm", minimum=0, note=" (0 disables clipping)")
    decay = c.get("optim.rmsprop_decay")
    if not _is_number(decay) or not 0 <= decay < 1:
        c.fail("optim.rmsprop_decay", "a number in [0, 1)", decay)
    momentum = c.get("optim.momentum")
    if not _is_number(momentum) or not 0 <= momentum < 1:
        c.fail("optim.momentum", "a number in [0, 1) (SGD's momentum; 0: plain SGD)", momentum)

    unknown = sorted(set(_leaf_keys(config)) - c.read)
    if unknown:
        raise ConfigError(
            f"config.{unknown[0]} is not a key of the training config "
            f"(unknown: {', '.join('config.' + k for k in unknown)}; known: configs/common.py)"
        )


def _read_only(path: str) -> str:
    """The words " on a read-only filesystem" when ``path``'s filesystem is mounted read-only."""
    try:
        return " on a read-only filesystem" if os.statvfs(path).f_flag & os.ST_RDONLY else ""
    except OSError:
        return ""


def validate_workdir(workdir: Any) -> None:
    """Checks that a run can write its files in ``workdir`` (created if missing), before
    anything is written: not empty, not a file, not under a file, and writable (or, if
    missing, its nearest existing parent folder writable).

    Writability is ``os.access``'s: a read-only filesystem is refused for every user; a
    folder without write permission is refused except for root, who can write there.

    Raises:
        ConfigError: naming the workdir, what is wrong and the path that decides it.
    """
    hint = "give --workdir a folder you can write to (it is created if missing)"
    if workdir is None or not os.fspath(workdir):
        raise ConfigError(
            "the workdir is empty (--workdir=): it must name the folder for the run's files",
            hint=hint,
        )
    workdir = os.fspath(workdir)
    path = os.path.abspath(workdir)
    if os.path.lexists(path) and not os.path.exists(path):
        raise ConfigError(
            f"workdir {workdir} is a broken symbolic link (to {os.readlink(path)})", hint=hint
        )
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise ConfigError(f"workdir {workdir} is a file, not a folder", hint=hint)
        if not os.access(path, os.W_OK | os.X_OK):
            where = _read_only(path)
            if os.listdir(path):
                raise ConfigError(
                    f"workdir {workdir} holds a run but is not writable{where}: it cannot be "
                    "resumed there",
                    hint="copy the workdir to a writable place and resume there "
                    "(--workdir=THE_COPY), or make it writable",
                )
            raise ConfigError(f"workdir {workdir} is not writable{where}", hint=hint)
        return
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ConfigError(
            f"workdir {workdir} lies under {parent}, which is a file, not a folder", hint=hint
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(
            f"workdir {workdir} cannot be created: {parent} is not writable{_read_only(parent)}",
            hint=hint,
        )


def eval_memory_bytes(
    *, num_seeds: int, eval_batch_size: int, seq_len: int, widths: tuple[int, ...]
) -> int:
    """Bytes (float32) of the largest arrays one held-out evaluation holds at once: for
    every seed and sequence, every step's values of ``widths`` (input, hidden states of two
    consecutive layers, output)."""
    return 4 * num_seeds * eval_batch_size * seq_len * sum(widths)


def device_memory_bytes() -> int | None:
    """The first local device's memory limit (an accelerator's), else the host's physical
    memory (XLA:CPU); None when neither is known."""
    import jax

    try:
        stats = jax.local_devices()[0].memory_stats() or {}
        if stats.get("bytes_limit"):
            return int(stats["bytes_limit"])
    except Exception:  # noqa: BLE001 - a backend without memory stats
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_eval_memory(config: ml_collections.ConfigDict, task: Any) -> None:
    """ConfigError when the held-out evaluation of ``config`` on ``task`` (without a fixed
    test set) would need more than half of the device's memory (`device_memory_bytes`)."""
    if getattr(task, "test_batch", None) is not None:
        return  # the task's own test set is evaluated, not eval_batch_size sequences
    limit = device_memory_bytes()
    if limit is None:
        return
    m = config.model
    need = eval_memory_bytes(
        num_seeds=config.num_seeds,
        eval_batch_size=config.eval_batch_size,
        seq_len=int(task.seq_len),
        widths=(int(task.input_size), 2 * m.hidden_size * min(m.num_layers, 2), task.output_size),
    )
    if need > limit // 2:
        per_sequence = max(1, need // config.eval_batch_size)
        most = max(1, (limit // 2) // per_sequence)
        raise ConfigError(
            f"config.eval_batch_size must be at most {most} for this task and model "
            f"(its evaluation needs about {need / 2**30:.3g} GiB at once, over half of the "
            f"device's {limit / 2**30:.3g} GiB), got {config.eval_batch_size}",
            hint=f"set --config.eval_batch_size={min(most, 1000)} or less",
        )
