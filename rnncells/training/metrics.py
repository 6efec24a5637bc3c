"""Metrics as JSON lines (one object per training step) and summaries over seeds.

A run's ``summary.json`` stores each held-out metric as `per_seed_stats` and whether every
seed solved the task as `solved_by_every_seed`; the reports rebuild the same summary from
``eval.jsonl`` for a run stopped before writing one.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from rnncells.training.errors import CorruptFileError

__all__ = [
    "mean_spread",
    "missing_steps",
    "per_seed_stats",
    "read_json",
    "read_jsonl",
    "read_steps",
    "solved_by_every_seed",
    "truncate_jsonl",
    "write_json",
    "write_jsonl",
    "write_records",
]


def mean_spread(values: Iterable[float]) -> tuple[float, float]:
    """(mean, standard deviation) over seeds; the spread of one value is 0."""
    array = np.asarray(list(values), dtype=np.float64)
    return float(array.mean()), float(array.std())


def per_seed_stats(values) -> dict[str, Any]:
    """Mean, std and the per-seed values of one metric, as the summary stores them."""
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values)),
        "per_seed": [float(v) for v in np.ravel(values)],
    }


def solved_by_every_seed(task, metrics: Mapping[str, Any]) -> bool:
    """Whether ``task.solved`` holds for every seed of per-seed ``metrics`` ({name: (S,)})."""
    num_seeds = len(np.ravel(next(iter(metrics.values()))))
    return all(
        task.solved({k: float(np.ravel(v)[s]) for k, v in metrics.items()})
        for s in range(num_seeds)
    )


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


def _damaged(path: str, line: int, what: str) -> CorruptFileError:
    return CorruptFileError(
        f"{path} line {line} is damaged: {what}",
        hint=f"repair or delete that line of {os.path.basename(path)}, or use a new --workdir",
    )


def _numbered_records(path: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) of every record of a JSON-lines file; see `read_jsonl`."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as file:
        lines = file.read().split("\n")
    # After the last newline: "" for a complete file, else the torn record.
    records = []
    for number, line in enumerate(lines[:-1], start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise _damaged(path, number, f"not JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise _damaged(path, number, f"a JSON {type(record).__name__}, not an object")
        records.append((number, record))
    return records


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """All records of a JSON-lines file (an empty list when it does not exist).

    A last line without its newline is a record cut short by a killed process (appends
    write whole lines otherwise) and is left out.

    Raises:
        CorruptFileError: any other line is not a JSON object, naming the file and line.
    """
    return [record for _, record in _numbered_records(path)]


def read_steps(path: str) -> list[dict[str, Any]]:
    """`read_jsonl` of a run's log, whose records must have increasing integer ``step``.

    Raises:
        CorruptFileError: a damaged line, a record without a positive integer step, or a
            step not after the one before (records written twice or out of order), naming
            the file and line.
    """
    numbered = _numbered_records(path)
    previous = 0
    for number, record in numbered:
        step = record.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise _damaged(path, number, f"'step' must be a positive integer, got {step!r}")
        if step <= previous:
            raise _damaged(path, number, f"step {step} follows step {previous}")
        previous = step
    return [record for _, record in numbered]


def read_json(path: str) -> Any:
    """The JSON value in ``path``, or None when the file does not exist.

    Raises:
        CorruptFileError: the file is not JSON, naming the file and the line.
    """
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as file:
        text = file.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise _damaged(path, error.lineno, f"not JSON ({error.msg})") from None


def _replace(path: str, text: str) -> None:
    """Writes ``text`` to a temporary file that then replaces ``path`` in one step, so a
    process killed meanwhile leaves the old file whole."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


def write_json(path: str, value: Any, *, sort_keys: bool = False) -> None:
    """Writes ``value`` as indented JSON, atomically (a killed process leaves the old file)."""
    _replace(path, json.dumps(value, indent=2, sort_keys=sort_keys) + "\n")


def write_records(path: str, records: Iterable[Mapping[str, Any]]) -> None:
    """Replaces a JSON-lines file by ``records``, atomically."""
    _replace(path, "".join(json.dumps(record) + "\n" for record in records))


def truncate_jsonl(path: str, max_step: int) -> None:
    """Drops the records with ``step > max_step`` (written after the checkpoint resumed from).

    The kept records replace the file in one step, so a process killed meanwhile leaves
    the old file whole.
    """
    if not os.path.exists(path):
        return
    write_records(path, [r for r in read_jsonl(path) if r.get("step", 0) <= max_step])


def missing_steps(records: Iterable[Mapping[str, Any]], last: int) -> list[tuple[int, int]]:
    """The ranges (first, last) of the steps 1..``last`` that have no record."""
    present = {r["step"] for r in records}
    ranges: list[tuple[int, int]] = []
    for step in range(1, last + 1):
        if step in present:
            continue
        if ranges and ranges[-1][1] == step - 1:
            ranges[-1] = (ranges[-1][0], step)
        else:
            ranges.append((step, step))
    return ranges
