"""Optax optimisers and learning-rate schedules chosen by name.

    update = clip_by_global_norm(clip_norm) -> adam | rmsprop | sgd, scaled by schedule(step)

RMSProp follows the papers' setting (Arjovsky et al. 2016; Tallec & Ollivier 2018:
RMSProp lr 1e-3, decay 0.9, clipping at 1); SGD (with optional momentum) is Le, Jaitly &
Hinton's (2015) optimiser for the IRNN, with gradient clipping.
"""

from __future__ import annotations

import optax

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "make_optimizer",
    "make_schedule",
]

OPTIMIZERS = ("adam", "rmsprop", "sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine")


def make_schedule(
    name: str, learning_rate: float, num_steps: int, warmup_steps: int = 0
) -> optax.Schedule:
    """A learning-rate schedule.

    Args:
        name: "constant"; "cosine" (decay to 0 over ``num_steps``); "warmup_cosine"
            (linear warmup from 0 over ``warmup_steps``, then cosine decay to 0).
        learning_rate: peak learning rate, > 0.
        num_steps: total training steps.
        warmup_steps: warmup length for "warmup_cosine", in [0, num_steps).

    Returns:
        ``schedule(step) -> learning rate``.

    Raises:
        ValueError: unknown name or out-of-range value.
    """
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {name!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
    if name == "constant":
        return optax.constant_schedule(learning_rate)
    if name == "cosine":
        return optax.cosine_decay_schedule(learning_rate, max(num_steps, 1))
    if not 0 <= warmup_steps < num_steps:
        raise ValueError(f"warmup_steps must be in [0, num_steps={num_steps}), got {warmup_steps}")
    return optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, max(warmup_steps, 1), max(num_steps, 2)
    )


def make_optimizer(
    name: str,
    schedule: optax.Schedule,
    *,
    clip_norm: float = 0.0,
    rmsprop_decay: float = 0.9,
    momentum: float = 0.0,
) -> optax.GradientTransformation:
    """The optimiser: optional global-norm clipping, then Adam, RMSProp or SGD.

    Args:
        name: "adam", "rmsprop" or "sgd".
        schedule: learning-rate schedule (see `make_schedule`).
        clip_norm: clip the gradient's global norm to this value; 0 disables clipping.
        rmsprop_decay: RMSProp's squared-gradient decay.
        momentum: SGD's momentum (heavy ball); 0 is plain SGD. Only "sgd" reads it.

    Returns:
        An optax GradientTransformation.

    Raises:
        ValueError: unknown name or negative clip_norm.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {name!r}")
    if clip_norm < 0:
        raise ValueError(f"clip_norm must be >= 0 (0 disables clipping), got {clip_norm!r}")
    if name == "adam":
        base = optax.adam(schedule)
    elif name == "rmsprop":
        base = optax.rmsprop(schedule, decay=rmsprop_decay)
    else:
        base = optax.sgd(schedule, momentum=momentum or None)
    if clip_norm == 0:
        return base
    return optax.chain(optax.clip_by_global_norm(clip_norm), base)
