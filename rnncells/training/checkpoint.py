"""Orbax checkpoints of a training state, each verified by a digest of its files.

A checkpoint counts only once it is complete, verified and finite:

    save(manager, step, state)     refuse a non-finite state; Orbax writes step/ (a temporary
                                   folder renamed when complete); extra files (the config)
                                   are added; then DIGEST, the sha256 of every file, is
                                   written (temporary file, then rename); then older
                                   checkpoints are pruned, keeping the ``keep`` newest
                                   that have a digest
    restore(manager, target, step) checks the files against DIGEST, restores, and refuses
                                   a checkpoint whose dtypes differ or values are non-finite
    restore_newest_intact          the newest checkpoint that restores, and what was wrong
                                   with each newer one

A process killed at any point leaves at least one intact checkpoint once one was saved:
Orbax never deletes anything itself (``max_to_keep=None``), and pruning runs only after
the new checkpoint's digest is on disk. A checkpoint without its digest (killed between
Orbax's rename and the digest) counts as incomplete.

In a multi-process run (`rnncells.training.distributed`) every process calls these
functions together: Orbax writes and reads each checkpoint from all processes (its own
multi-process protocol: each process writes its shards, process 0 finalises), process 0
alone writes the extra files and the digest, prunes and deletes, and the processes agree
at each step of a restore, so that they all resume from the same checkpoint or all stop.
The checkpoint folder must be on a filesystem every process sees.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from rnncells.training import distributed
from rnncells.training.errors import CheckpointError, MissingCheckpointError, NonFiniteLossError

__all__ = [
    "DIGEST",
    "all_steps",
    "discard",
    "latest_step",
    "make_manager",
    "nonfinite_leaves",
    "read_file",
    "restore",
    "restore_newest_intact",
    "save",
    "step_dir",
    "verify",
]

DIGEST = "rnncells_digest.json"
"""File in each checkpoint folder: {"step": step, "sha256": {relative path: hex digest}}."""


def make_manager(directory: str) -> ocp.CheckpointManager:
    """A CheckpointManager over ``directory`` (created if missing).

    Orbax deletes nothing itself: `save` prunes, and only checkpoints older than one it
    has verified.
    """
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None, enable_async_checkpointing=False, create=True
    )
    return ocp.CheckpointManager(
        os.path.abspath(directory), options=options, item_handlers=ocp.StandardCheckpointHandler()
    )


def step_dir(manager: ocp.CheckpointManager, step: int) -> str:
    """The folder of checkpoint ``step``."""
    return os.path.join(str(manager.directory), str(int(step)))


def all_steps(manager: ocp.CheckpointManager) -> list[int]:
    """Steps of every checkpoint folder on disk, verified or not, oldest first."""
    directory = str(manager.directory)
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def _paths_and_leaves(tree: Any) -> list[tuple[str, Any]]:
    """(path, leaf) of a pytree's leaves, paths written alike for NamedTuples and dicts."""

    def name(key) -> str:
        for attr in ("name", "key", "idx"):
            if hasattr(key, attr):
                return str(getattr(key, attr))
        return str(key)

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0] if tree is not None else []
    return [("/".join(name(k) for k in path), leaf) for path, leaf in leaves]


@jax.jit
def _finite(leaves: list) -> list:
    return [jnp.all(jnp.isfinite(x)) for x in leaves]


def nonfinite_leaves(tree: Any) -> list[str]:
    """Paths of the floating-point leaves of ``tree`` that hold a NaN or an infinity."""
    floats = [
        (path, leaf)
        for path, leaf in _paths_and_leaves(tree)
        if jnp.issubdtype(getattr(leaf, "dtype", np.int32), jnp.inexact)
    ]
    if not floats:
        return []
    flags = jax.device_get(_finite([leaf for _, leaf in floats]))
    return [path for (path, _), ok in zip(floats, flags, strict=True) if not ok]


def _file_digests(path: str) -> dict[str, str]:
    """{relative path: sha256} of every file under ``path`` but the digest itself."""
    out = {}
    for root, _, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            relative = os.path.relpath(full, path)
            if relative in (DIGEST, DIGEST + ".tmp"):
                continue
            with open(full, "rb") as file:
                out[relative] = hashlib.file_digest(file, "sha256").hexdigest()
    return dict(sorted(out.items()))


def _write_file(path: str, data: bytes) -> None:
    """Writes ``data`` to a temporary file, flushed to disk, then renames it to ``path``."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


def _write_digest(path: str) -> None:
    """Writes DIGEST of the checkpoint folder ``path``: from now on it counts as complete."""
    step = int(os.path.basename(path))
    digest = {"step": step, "sha256": _file_digests(path)}
    _write_file(os.path.join(path, DIGEST), json.dumps(digest, indent=1).encode())


def verify(manager: ocp.CheckpointManager, step: int) -> str | None:
    """What is wrong with the files of checkpoint ``step`` (a phrase), or None if nothing.

    Compares every file with DIGEST: a missing digest means an incomplete save; a file
    missing, added or changed since the save means a corrupt checkpoint.
    """
    path = step_dir(manager, step)
    try:
        with open(os.path.join(path, DIGEST), encoding="utf-8") as file:
            expected = json.load(file)["sha256"]
    except FileNotFoundError:
        return f"incomplete: no {DIGEST} (its save did not finish, or predates digests)"
    except (ValueError, KeyError, TypeError) as error:
        return f"corrupt: {DIGEST} is unreadable ({type(error).__name__})"
    actual = _file_digests(path)
    for name in sorted(set(expected) | set(actual)):
        if name not in actual:
            return f"corrupt: {name} is missing"
        if name not in expected:
            return f"corrupt: {name} was not part of the save"
        if actual[name] != expected[name]:
            return f"corrupt: {name} differs from its digest"
    return None


def latest_step(manager: ocp.CheckpointManager) -> int | None:
    """The newest checkpoint that has its digest (complete when saved), or None."""
    complete = [
        s for s in all_steps(manager) if os.path.exists(os.path.join(step_dir(manager, s), DIGEST))
    ]
    return complete[-1] if complete else None


def save(
    manager: ocp.CheckpointManager,
    step: int,
    state: Any,
    *,
    keep: int | None = 2,
    files: dict[str, str] | None = None,
) -> None:
    """Saves ``state`` (a pytree of arrays) as checkpoint ``step``, verified and pruned.

    Args:
        manager: from `make_manager`.
        step: the checkpoint's step (a folder of that name must not exist).
        state: the pytree to save.
        keep: how many verified checkpoints to keep (the newest); None keeps all. Older
            ones, and any without a digest older than this one, are deleted after this
            one's digest is written.
        files: extra text files ({name: text}) saved in the checkpoint's folder and covered
            by its digest (the run's config).

    Raises:
        NonFiniteLossError: a floating-point leaf holds NaN or inf (nothing is written).
    """
    step = int(step)
    bad = nonfinite_leaves(state)
    if bad:
        raise NonFiniteLossError(
            f"refusing to save checkpoint step {step} in {manager.directory}: non-finite "
            f"values in {', '.join(bad)}"
        )
    manager.save(step, args=ocp.args.StandardSave(state), force=True)
    manager.wait_until_finished()
    if distributed.is_primary():
        path = step_dir(manager, step)
        for name, text in (files or {}).items():
            _write_file(os.path.join(path, name), text.encode("utf-8"))
        _write_digest(path)
        if keep is not None:
            _prune(manager, step, keep)
    # Every process returns once the checkpoint is verified and the old ones are gone.
    distributed.barrier(f"rnncells checkpoint {step} saved")
    manager.reload()


def _prune(manager: ocp.CheckpointManager, newest: int, keep: int) -> None:
    """Deletes all but the ``keep`` newest checkpoints with a digest, and the ones without
    a digest older than ``newest`` (which has its digest, so one verified checkpoint always
    remains)."""
    complete = [s for s in all_steps(manager) if s <= newest and _has_digest(manager, s)]
    kept = set(complete[-max(keep, 1) :]) | {newest}
    doomed = [s for s in all_steps(manager) if s < newest and s not in kept]
    _delete(manager, doomed)


def _has_digest(manager: ocp.CheckpointManager, step: int) -> bool:
    return os.path.exists(os.path.join(step_dir(manager, step), DIGEST))


def _delete(manager: ocp.CheckpointManager, steps: list[int]) -> None:
    """Deletes the folders of ``steps`` and Orbax's leftovers of interrupted saves."""
    directory = str(manager.directory)
    for step in steps:
        shutil.rmtree(step_dir(manager, step), ignore_errors=True)
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            if "orbax-checkpoint-tmp" in name:  # a save killed before Orbax's rename
                shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


def discard(manager: ocp.CheckpointManager, steps: list[int]) -> None:
    """Deletes the checkpoints of ``steps`` and Orbax's leftovers of interrupted saves
    (process 0 deletes; every process returns once they are gone)."""
    if distributed.is_primary():
        _delete(manager, steps)
    distributed.barrier("rnncells checkpoints discarded")
    manager.reload()


def read_file(manager: ocp.CheckpointManager, step: int, name: str) -> str | None:
    """The text of an extra file saved with checkpoint ``step`` (see `save`), or None."""
    try:
        with open(os.path.join(step_dir(manager, step), name), encoding="utf-8") as file:
            return file.read()
    except FileNotFoundError:
        return None


_ELSEWHERE = "unreadable by another process of this run (see its log)"


def restore(manager: ocp.CheckpointManager, target: Any, step: int | None = None) -> Any:
    """Restores checkpoint ``step`` (the newest on disk if None) into ``target``'s structure.

    Args:
        manager: from `make_manager`.
        target: a pytree with the saved structure, shapes and dtypes (e.g. a fresh state);
            its arrays' shardings are used for the restored arrays.
        step: which checkpoint; None for the newest.

    Returns:
        The restored pytree.

    Raises:
        MissingCheckpointError: no checkpoint (or not that step) in the manager's
            directory, naming the path (also a FileNotFoundError).
        CheckpointError: the checkpoint is incomplete (no digest), corrupt (its files
            differ from the digest, or Orbax cannot read them), saved from another model or
            dtype, or holds non-finite values; naming the path (also a ValueError).
    """
    directory = str(manager.directory)
    if step is None:
        steps = all_steps(manager)
        if not steps:
            raise MissingCheckpointError(f"no checkpoint found in {directory}")
        step = steps[-1]
    path = step_dir(manager, step)
    if not os.path.isdir(path):
        raise MissingCheckpointError(f"checkpoint {path} does not exist")
    # Processes agree after each step that may fail on one alone (a file read), so that
    # they all go on to the next one (a collective) or all stop.
    problem = verify(manager, step)
    if not distributed.all_agree(problem is None):
        raise CheckpointError(f"checkpoint {path} is {problem or _ELSEWHERE}")
    failure = None
    try:
        saved = _dtypes(getattr(manager.item_metadata(int(step)), "tree", None))
        restored = manager.restore(int(step), args=ocp.args.StandardRestore(target))
    except Exception as error:  # Orbax raises many types for unreadable or mismatched files.
        failure = error
    if not distributed.all_agree(failure is None):
        what = f"{type(failure).__name__}: {failure}" if failure is not None else _ELSEWHERE
        raise CheckpointError(
            f"checkpoint {path} is corrupt or does not match this model/config: {what}"
        ) from failure
    # Orbax casts a saved array to the target's dtype without a word.
    for where, dtype in _dtypes(target).items():
        if where in saved and saved[where] != dtype:
            raise CheckpointError(
                f"checkpoint {path} does not match this model/config: {where} was saved as "
                f"{saved[where]}, the target has {dtype}"
            )
    bad = nonfinite_leaves(restored)
    if bad:
        raise CheckpointError(f"checkpoint {path} holds non-finite values in {', '.join(bad)}")
    return restored


def restore_newest_intact(
    manager: ocp.CheckpointManager, target: Any
) -> tuple[Any, int, list[tuple[int, str]]] | None:
    """The newest checkpoint that `restore` accepts, trying older ones in turn.

    Returns:
        None when there is no checkpoint at all; else (restored pytree, its step, and
        (step, what is wrong) for each newer checkpoint that was passed over).

    Raises:
        CheckpointError: there are checkpoints but none is intact, naming the folder and
            what is wrong with each.
    """
    skipped: list[tuple[int, str]] = []
    for step in reversed(all_steps(manager)):
        try:
            return restore(manager, target, step), step, skipped
        except CheckpointError as error:
            skipped.append((step, str(error)))
    if not skipped:
        return None
    reasons = "; ".join(f"step {step}: {reason}" for step, reason in skipped)
    raise CheckpointError(
        f"no intact checkpoint in {manager.directory} ({reasons})",
        hint="the run cannot resume from it: move the workdir aside and start again",
    )


def _dtypes(tree: Any) -> dict[str, Any]:
    """{path: dtype} of a pytree's leaves, paths written alike for NamedTuples and dicts."""
    return {
        path: str(leaf.dtype)
        for path, leaf in _paths_and_leaves(tree)
        if getattr(leaf, "dtype", None) is not None
    }
