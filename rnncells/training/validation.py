"""Checks every value of an experiment config before anything is built or written.

Each error is a `ConfigError` naming the key (``config.optim.learning_rate``), what it
must be, and the value given. The keys are those of ``configs/common.py``; a key the
training loop does not read is an error too (a misspelt key would otherwise be ignored).
``task.kwargs`` belong to the task and are checked when it is built.
"""

from __future__ import annotations

import math
from typing import Any

import ml_collections

from rnncells.tasks import TASK_NAMES
from rnncells.training.errors import ConfigError
from rnncells.training.model import EMBEDDINGS, INITS, cell_names, init_mismatch
from rnncells.training.optim import OPTIMIZERS, SCHEDULES

SEED_LIMIT = 2**31
"""Seeds ``seed .. seed + num_seeds - 1`` must be below this (PRNG keys from int32 seeds)."""

OPTIONAL = {
    "model.unroll": 0,
    "time_limit_s": 0.0,
    "tensorboard": False,
    "stall_timeout_s": 0.0,
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

    unknown = sorted(set(_leaf_keys(config)) - c.read)
    if unknown:
        raise ConfigError(
            f"config.{unknown[0]} is not a key of the training config "
            f"(unknown: {', '.join('config.' + k for k in unknown)}; known: configs/common.py)"
        )
