"""Orbax checkpoints of a training state: params, optimizer state, step and data key.

Saving is synchronous and atomic (Orbax writes a temporary folder and renames it when the
save is complete), so a process killed at any point leaves the previous checkpoint intact
and the next start resumes from it.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


def make_manager(directory: str, *, max_to_keep: int = 2) -> ocp.CheckpointManager:
    """A CheckpointManager over ``directory`` (created if missing) keeping the newest saves."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, enable_async_checkpointing=False, create=True
    )
    return ocp.CheckpointManager(
        os.path.abspath(directory), options=options, item_handlers=ocp.StandardCheckpointHandler()
    )


def save(manager: ocp.CheckpointManager, step: int, state: Any) -> None:
    """Saves ``state`` (any pytree of arrays) as checkpoint ``step`` and waits for it."""
    manager.save(int(step), args=ocp.args.StandardSave(state), force=True)
    manager.wait_until_finished()


def restore(manager: ocp.CheckpointManager, target: Any, step: int | None = None) -> Any:
    """Restores checkpoint ``step`` (the latest if None) into the structure of ``target``.

    Args:
        manager: from `make_manager`.
        target: a pytree with the saved structure, shapes and dtypes (e.g. a fresh state);
            its arrays' shardings are used for the restored arrays.
        step: which checkpoint; None for the latest.

    Returns:
        The restored pytree.

    Raises:
        FileNotFoundError: no checkpoint (or not that step) in the manager's directory,
            naming the path.
        ValueError: the checkpoint exists but cannot be read (corrupt, or saved from a
            different model or config), naming the path.
    """
    directory = str(manager.directory)
    if step is None:
        step = manager.latest_step()
        if step is None:
            raise FileNotFoundError(f"no checkpoint found in {directory}")
    path = os.path.join(directory, str(step))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        saved = _dtypes(getattr(manager.item_metadata(int(step)), "tree", None))
        restored = manager.restore(int(step), args=ocp.args.StandardRestore(target))
    except Exception as error:  # Orbax raises many types for unreadable or mismatched files.
        raise ValueError(
            f"checkpoint {path} is corrupt or does not match this model/config: "
            f"{type(error).__name__}: {error}"
        ) from error
    # Orbax casts a saved array to the target's dtype without a word.
    for where, dtype in _dtypes(target).items():
        if where in saved and saved[where] != dtype:
            raise ValueError(
                f"checkpoint {path} does not match this model/config: {where} was saved as "
                f"{saved[where]}, the target has {dtype}"
            )
    return restored


def _dtypes(tree: Any) -> dict[str, Any]:
    """{path: dtype} of a pytree's leaves, paths written alike for NamedTuples and dicts."""

    def name(key) -> str:
        for attr in ("name", "key", "idx"):
            if hasattr(key, attr):
                return str(getattr(key, attr))
        return str(key)

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0] if tree is not None else []
    return {
        "/".join(name(k) for k in path): str(leaf.dtype)
        for path, leaf in leaves
        if getattr(leaf, "dtype", None) is not None
    }


def latest_step(manager: ocp.CheckpointManager) -> int | None:
    """The newest complete checkpoint's step, or None."""
    return manager.latest_step()
