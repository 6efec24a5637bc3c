"""Optional TensorBoard output of the metrics a run already writes as JSON lines.

With ``config.tensorboard = True`` (``pip install "rnncells[tensorboard]"``), the loop
also writes each record's seed-mean scalars to ``workdir/tensorboard/`` with
tensorboardX: ``train/<name>`` for every ``metrics.jsonl`` record (loss, the task's
metric, grad norm, learning rate, steps/s) and ``eval/<name>`` for every ``eval.jsonl``
record. ``tensorboard --logdir workdir/tensorboard`` shows them.

A resumed run opens the writer with ``purge_step`` at its first new step, so TensorBoard
drops what a killed process wrote after the checkpoint the run resumed from, as the JSON
lines are truncated there: the curves hold each step once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

from rnncells.training.errors import ConfigError

__all__ = [
    "FOLDER",
    "TENSORBOARDX_HINT",
    "TENSORBOARDX_MISSING",
    "Writer",
    "check_available",
    "open_writer",
]

FOLDER = "tensorboard"


TENSORBOARDX_MISSING = "config.tensorboard=True needs tensorboardX, which is not installed"
TENSORBOARDX_HINT = 'pip install "rnncells[tensorboard]", or set --config.tensorboard=false'


def check_available(enabled: bool) -> None:
    """ConfigError when ``enabled`` and tensorboardX cannot be imported: checked before a
    run writes anything."""
    if not enabled:
        return
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        raise ConfigError(TENSORBOARDX_MISSING, hint=TENSORBOARDX_HINT) from None


class Writer:
    """Writes records' scalar fields (not ``step`` or per-seed lists) as TensorBoard scalars."""

    def __init__(self, workdir: str, start: int):
        try:
            import tensorboardX
        except ImportError:
            raise ConfigError(TENSORBOARDX_MISSING, hint=TENSORBOARDX_HINT) from None
        self.path = os.path.join(workdir, FOLDER)
        self._writer = tensorboardX.SummaryWriter(self.path, purge_step=start + 1)

    def write(self, prefix: str, records: Iterable[Mapping[str, Any]]) -> None:
        for record in records:
            step = int(record["step"])
            for name, value in record.items():
                if name == "step" or isinstance(value, bool):
                    continue
                if isinstance(value, int | float) and math.isfinite(value):
                    self._writer.add_scalar(f"{prefix}/{name}", float(value), step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def open_writer(enabled: bool, workdir: str, start: int) -> Writer | None:
    """A writer for the run in ``workdir`` resuming after step ``start``; None if disabled."""
    return Writer(workdir, start) if enabled else None
