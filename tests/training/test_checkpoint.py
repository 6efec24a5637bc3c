"""Checkpoints: verified by a digest, never non-finite, pruned only behind a verified one;
missing, incomplete and corrupt checkpoints raise errors naming the path, and a resume
finds the newest intact one. (Killed and resumed runs: tests/training/test_faults.py.)"""

import os

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from rnncells.training import (
    CheckpointError,
    NonFiniteLossError,
    checkpoint,
    make_manager,
    restore,
    save,
)
from tests.conftest import assert_tree_allclose


def test_missing_checkpoint_names_path(tmp_path):
    manager = make_manager(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="no checkpoint found in .*empty"):
        restore(manager, {"a": jnp.zeros(3, jnp.float32)})
    with pytest.raises(FileNotFoundError, match=r"checkpoint .*empty/7 does not exist"):
        restore(manager, {"a": jnp.zeros(3, jnp.float32)}, step=7)


def test_corrupt_checkpoint_names_path(tmp_path):
    manager = make_manager(str(tmp_path / "ckpt"))
    state = {"a": jnp.arange(3, dtype=jnp.float32), "b": jnp.ones((2, 2), jnp.float32)}
    save(manager, 5, state)
    assert_tree_allclose(restore(manager, state), state)
    for root, _, files in os.walk(tmp_path / "ckpt" / "5"):
        for name in files:
            with open(os.path.join(root, name), "wb") as file:
                file.write(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"checkpoint .*ckpt/5 is corrupt"):
        restore(manager, state)
    np.testing.assert_array_equal(np.asarray(state["a"]), [0, 1, 2])


def test_checkpoint_of_another_dtype_names_it(tmp_path):
    manager = make_manager(str(tmp_path / "ckpt"))
    save(manager, 1, {"a": jnp.ones(3, jnp.float32), "b": jnp.zeros(2, jnp.int32)})
    expected = (
        r"checkpoint .*ckpt/1 does not match .*: a was saved as float32, the target has int32"
    )
    with pytest.raises(ValueError, match=expected):
        restore(manager, {"a": jnp.ones(3, jnp.int32), "b": jnp.zeros(2, jnp.int32)})


STATE = {"a": jnp.arange(300, dtype=jnp.float32), "b": jnp.ones((20, 20), jnp.float32)}


def _flip_bits(step_dir):
    """Flips one bit in the middle of every Orbax data file of a checkpoint step."""
    flipped = 0
    for root, _, files in os.walk(step_dir):
        if os.path.basename(root) != "d":
            continue
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as file:
                data = bytearray(file.read())
            data[len(data) // 2] ^= 0x10
            with open(path, "wb") as file:
                file.write(bytes(data))
            flipped += 1
    assert flipped


def _on_disk(folder):
    return sorted(int(d) for d in os.listdir(folder) if d.isdigit())


def test_flipped_bits_are_detected_and_the_newest_intact_checkpoint_is_used(tmp_path):
    manager = make_manager(str(tmp_path / "ckpt"))
    save(manager, 1, STATE)
    later = {k: v + 1 for k, v in STATE.items()}
    save(manager, 2, later)
    _flip_bits(tmp_path / "ckpt" / "2")
    with pytest.raises(CheckpointError, match=r"checkpoint .*ckpt/2 is corrupt: .*differs from"):
        restore(manager, STATE)
    restored, step, skipped = checkpoint.restore_newest_intact(manager, STATE)
    assert step == 1 and [s for s, _ in skipped] == [2]
    assert_tree_allclose(restored, STATE, rtol=0, atol=0)
    assert_tree_allclose(restore(manager, STATE, step=1), STATE, rtol=0, atol=0)


def test_a_checkpoint_without_its_digest_counts_as_incomplete(tmp_path):
    manager = make_manager(str(tmp_path / "ckpt"))
    save(manager, 1, STATE)
    save(manager, 2, STATE)
    os.remove(tmp_path / "ckpt" / "2" / checkpoint.DIGEST)
    with pytest.raises(CheckpointError, match=r"checkpoint .*ckpt/2 is incomplete"):
        restore(manager, STATE)
    assert checkpoint.restore_newest_intact(manager, STATE)[1] == 1
    assert checkpoint.latest_step(manager) == 1


def test_no_intact_checkpoint_names_the_path(tmp_path):
    manager = make_manager(str(tmp_path / "ckpt"))
    save(manager, 1, STATE)
    save(manager, 2, STATE)
    _flip_bits(tmp_path / "ckpt" / "1")
    os.remove(tmp_path / "ckpt" / "2" / checkpoint.DIGEST)
    with pytest.raises(
        CheckpointError, match=r"no intact checkpoint in .*ckpt \(step 2: .*step 1: "
    ):
        checkpoint.restore_newest_intact(manager, STATE)
    assert _on_disk(tmp_path / "ckpt") == [1, 2]  # nothing deleted
    assert checkpoint.restore_newest_intact(make_manager(str(tmp_path / "none")), STATE) is None


def test_non_finite_state_is_never_saved_nor_restored(tmp_path):
    manager = make_manager(str(tmp_path / "ckpt"))
    bad = {"a": STATE["a"].at[7].set(jnp.inf), "b": STATE["b"]}
    with pytest.raises(NonFiniteLossError, match=r"checkpoint step 3 .* a\b"):
        save(manager, 3, bad)
    assert _on_disk(tmp_path / "ckpt") == []
    # A non-finite checkpoint written by other means, with a valid digest, is refused too.
    manager.save(4, args=ocp.args.StandardSave(bad), force=True)
    manager.wait_until_finished()
    checkpoint._write_digest(str(tmp_path / "ckpt" / "4"))
    with pytest.raises(CheckpointError, match=r"checkpoint .*ckpt/4 holds non-finite values in a"):
        restore(manager, STATE)


def test_pruning_never_removes_the_only_verified_checkpoint(tmp_path, monkeypatch):
    manager = make_manager(str(tmp_path / "ckpt"))
    for step in (1, 2, 3):
        save(manager, step, STATE)
    assert _on_disk(tmp_path / "ckpt") == [2, 3]  # the newest two verified are kept

    def killed(path):
        raise KeyboardInterrupt  # the process stops after Orbax's save, before the digest

    monkeypatch.setattr(checkpoint, "_write_digest", killed)
    with pytest.raises(KeyboardInterrupt):
        save(manager, 4, STATE)
    assert _on_disk(tmp_path / "ckpt") == [2, 3, 4]
    assert checkpoint.restore_newest_intact(manager, STATE)[1] == 3
    monkeypatch.undo()
    save(manager, 5, STATE)  # verified: the unverified 4 and the oldest verified go
    assert _on_disk(tmp_path / "ckpt") == [3, 5]
