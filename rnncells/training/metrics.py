"""Metrics as JSON lines (one object per training step) and summaries over seeds."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np


def mean_spread(values: Iterable[float]) -> tuple[float, float]:
    """(mean, standard deviation) over seeds; the spread of one value is 0."""
    array = np.asarray(list(values), dtype=np.float64)
    return float(array.mean()), float(array.std())


def _clean(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def write_jsonl(path: str, records: Iterable[Mapping[str, Any]]) -> None:
    """Appends one JSON line per record (NumPy values become lists, non-finite floats strings)."""
    with open(path, "a", encoding="utf-8") as file:
        for record in records:
            file.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """All records of a JSON-lines file (an empty list when it does not exist).

    A last line without its newline is a record cut short by a killed process (appends
    write whole lines otherwise) and is left out; any other line that is not JSON raises.
    """
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as file:
        lines = file.read().split("\n")
    # After the last newline: "" for a complete file, else the torn record.
    return [json.loads(line) for line in lines[:-1] if line.strip()]


def truncate_jsonl(path: str, max_step: int) -> None:
    """Drops the records with ``step > max_step`` (written after the checkpoint resumed from).

    The kept records go to a temporary file that then replaces ``path`` in one step, so a
    process killed meanwhile leaves the old file whole.
    """
    if not os.path.exists(path):
        return
    records = [r for r in read_jsonl(path) if r.get("step", 0) <= max_step]
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as file:
        for record in records:
            file.write(json.dumps(record) + "\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
