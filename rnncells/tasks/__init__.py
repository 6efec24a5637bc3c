"""Long-dependency benchmark tasks for recurrent cells, as pure JAX batch generators.

Every task is a `Task` with the same interface, so a training loop can run any of them by
name:

```python
task = get_task("copy", T=100)
batch = task.make_batch(key, 32)        # Batch(inputs, targets, lengths, mask)
ys = model(batch.inputs)                # (B, task.seq_len, task.output_size)
loss = task.loss(ys, batch)             # scalar; compare with task.baseline_loss
metrics = task.metric(ys, batch)        # {"loss": ..., "accuracy" | "success_rate": ...}
task.solved(metrics)                    # bool
```

| name | inputs (B, seq_len, ...) | loss reads | baseline |
|---|---|---|---|
| `adding` | (B, T, 2) float32 | last step, MSE | 1/6 |
| `adding_hs` | (B, T + T//10, 2) float32 + lengths | step lengths - 1, MSE | ~0.039 |
| `copy` | (B, T + 20) int32 tokens | all steps, cross-entropy | 10 ln8/(T+20) |
| `variable_copy` | (B, T + 21) int32 tokens + mask | 10 recall steps (mask), CE | ln 8 |
| `digits` | (B, 64, 1) float32 | last step, cross-entropy | ln 10 |

The per-task modules (`adding`, `copy`, `digits`) also expose the plain functions
(``make_batch``, ``loss``, ``accuracy``, baselines) on the natural shapes; `last_step` and
`predicted_class` read a model's outputs as the tasks' losses and metrics do.
"""

from __future__ import annotations

from collections.abc import Callable

from . import adding, copy, digits
from ._common import Batch, Task, last_step, predicted_class

_FACTORIES: dict[str, Callable[..., Task]] = {
    "adding": adding.adding_task,
    "adding_hs": adding.adding_hs_task,
    "copy": copy.copy_task,
    "variable_copy": copy.variable_copy_task,
    "digits": digits.digits_task,
}

TASK_NAMES: tuple[str, ...] = tuple(_FACTORIES)


def get_task(name: str, **kwargs) -> Task:
    """The task called ``name``, configured by ``kwargs``.

    Args:
        name: one of ``"adding"``, ``"adding_hs"``, ``"copy"``, ``"variable_copy"`` (each
            takes ``T=100``) or ``"digits"`` (takes ``permute=False, permutation_seed=0``).
        **kwargs: passed to the task's factory (`adding.adding_task`,
            `adding.adding_hs_task`, `copy.copy_task`, `copy.variable_copy_task`,
            `digits.digits_task`).

    Returns:
        A `Task`.

    Raises:
        ValueError: for an unknown name or an out-of-range argument.
        TypeError: for a keyword the task does not take.

    Example:
        >>> task = get_task("adding", T=200)
        >>> task.seq_len, task.input_size, task.output_size
        (200, 2, 1)
    """
    if name not in _FACTORIES:
        raise ValueError(f"name must be one of {list(TASK_NAMES)}, got {name!r}")
    return _FACTORIES[name](**kwargs)


__all__ = [
    "TASK_NAMES",
    "Batch",
    "Task",
    "adding",
    "copy",
    "digits",
    "get_task",
    "last_step",
    "predicted_class",
]
