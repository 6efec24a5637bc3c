"""Checkpoints: a run killed by SIGKILL and restarted ends exactly like an uninterrupted
run; missing and corrupt checkpoints raise errors naming the path."""

import json
import os
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from rnncells.training import make_manager, restore, save
from tests.conftest import assert_tree_allclose

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_STEPS = 600
COMMAND = [
    sys.executable,
    "-m",
    "experiments.run",
    "--config=configs/adding.py:smoke",
    f"--config.num_steps={NUM_STEPS}",
    "--config.log_every=50",
    "--config.eval_every=1000",
    "--config.checkpoint_every=100",
    "--config.early_stop=False",
    "--report=False",
]


def _env(tmp_path):
    """CPU only, and a compilation cache shared by the runs (the resumed run reuses it)."""
    return dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    )


def _start(workdir, env):
    return subprocess.Popen(
        COMMAND + [f"--workdir={workdir}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _steps(workdir):
    folder = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(folder):
        return []
    return sorted(int(d) for d in os.listdir(folder) if d.isdigit())


def _final(workdir):
    path = os.path.join(workdir, "checkpoints", str(NUM_STEPS), "default")
    return ocp.StandardCheckpointer().restore(path)


def _losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as file:
        return [(r["step"], r["loss_per_seed"]) for r in map(json.loads, file)]


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    env = _env(tmp_path)
    reference = _start(straight, env)  # runs alongside the one that gets killed
    victim = _start(killed, env)
    deadline = time.monotonic() + 240
    while not _steps(killed) and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert victim.poll() is None, "the run ended before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    kill_steps = _steps(killed)
    assert kill_steps and kill_steps[-1] < NUM_STEPS
    assert not os.path.exists(os.path.join(killed, "summary.json"))

    resumed = subprocess.run(
        COMMAND + [f"--workdir={killed}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    out, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-3000:]

    assert_tree_allclose(_final(killed), _final(straight), rtol=0, atol=0)
    assert _losses(killed) == _losses(straight)
    assert len(_losses(killed)) == NUM_STEPS


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
