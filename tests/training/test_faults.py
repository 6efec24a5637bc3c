"""Fault injection on a tiny run: kills, flipped bits, damaged logs, two runs on one workdir.

Each fault must leave the run's data undamaged: a resumed run ends exactly like one that
was never interrupted (metrics, evaluations, parameters), damage it cannot work around
stops it with one error naming the file, and damage it works around is reported as a
`RunWarning` naming what was lost.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import orbax.checkpoint as ocp
import pytest

import tests
from configs import adding
from rnncells.training import (
    CheckpointError,
    ConfigError,
    CorruptFileError,
    ResumeError,
    RunWarning,
    WorkdirLockedError,
    train,
)
from rnncells.training.metrics import read_jsonl
from tests.conftest import assert_tree_allclose

ROOT = str(tests.ROOT)

# Its many train() calls compile the same few programs: each is compiled once.
pytestmark = pytest.mark.usefixtures("compilation_cache")

# The smoke config made smaller still: T=5, 4 hidden units, a chunk and a checkpoint
# every 10 steps, so that a run is mostly checkpoint saves (where a kill does most harm).
TINY = {
    "task.kwargs.T": 5,
    "model.hidden_size": 4,
    "batch_size": 16,
    "num_steps": 40,
    "log_every": 10,
    "checkpoint_every": 10,
    "eval_every": 20,
    "eval_batch_size": 32,
    "early_stop": False,
}


def tiny_config(**overrides):
    config = adding.get_config("smoke")
    for key, value in {**TINY, **overrides}.items():
        *parents, leaf = key.split(".")
        target = config
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return config


def _timeless(records):
    return [{k: v for k, v in r.items() if k != "steps_per_sec"} for r in records]


def _logs(workdir):
    """metrics.jsonl (without the timing) and eval.jsonl of a run."""
    return (
        _timeless(read_jsonl(os.path.join(workdir, "metrics.jsonl"))),
        read_jsonl(os.path.join(workdir, "eval.jsonl")),
    )


def _files(workdir):
    """{relative path: bytes} of every file of a run (checkpoints included)."""
    out = {}
    for root, _, names in os.walk(workdir):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as file:
                out[os.path.relpath(path, workdir)] = file.read()
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted in-process run of the tiny config: its workdir and summary."""
    workdir = str(tmp_path_factory.mktemp("reference") / "run")
    return workdir, train(tiny_config(), workdir)


def _interrupted_copy(reference, tmp_path, *, drop_steps=()):
    """A copy of the reference run as a kill would leave it: no summary.json, and without
    the checkpoints of ``drop_steps`` (killed before they were saved)."""
    workdir = str(tmp_path / "run")
    shutil.copytree(reference[0], workdir)
    os.remove(os.path.join(workdir, "summary.json"))
    for step in drop_steps:
        shutil.rmtree(os.path.join(workdir, "checkpoints", str(step)))
    return workdir


def _final_checkpoint(workdir, step):
    """The state saved at ``step`` as plain arrays (read without building the model)."""
    return ocp.StandardCheckpointer().restore(
        os.path.join(workdir, "checkpoints", str(step), "default")
    )


def _assert_like_reference(workdir, summary, reference):
    ref_dir, ref_summary = reference
    assert _logs(workdir) == _logs(ref_dir)
    assert summary["eval"] == ref_summary["eval"]
    assert_tree_allclose(
        _final_checkpoint(workdir, 40), _final_checkpoint(ref_dir, 40), rtol=0, atol=0
    )


# (a) SIGKILL at random points, resumed each time, ends like the uninterrupted run; a
# second run on the workdir meanwhile is refused, naming the running one's pid.

KILL_STEPS = 100
CLI = [
    sys.executable,
    "-m",
    "experiments.run",
    "--config=configs/adding.py:smoke",
    *(f"--config.{k}={v}" for k, v in {**TINY, "num_steps": KILL_STEPS}.items()),
    "--report=False",
]


def _cli_env(tmp_path):
    """CPU only, and one compilation cache for every process (restarts skip compiling)."""
    return dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    )


def _start(workdir, env):
    return subprocess.Popen(
        [*CLI, f"--workdir={workdir}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _lines(path):
    try:
        with open(path, encoding="utf-8") as file:
            return file.read().count("\n")
    except FileNotFoundError:
        return 0


def test_sigkill_at_random_points_then_resume_equals_uninterrupted(tmp_path):
    rng = random.Random(7)
    env = _cli_env(tmp_path)
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    reference = _start(straight, env)
    # The victims start once the reference has compiled everything, evaluation included,
    # into the shared cache (compiling twice at once would take most of this test's time).
    deadline = time.monotonic() + 120
    while not _lines(os.path.join(straight, "eval.jsonl")) and reference.poll() is None:
        assert time.monotonic() < deadline, "the reference run made no progress"
        time.sleep(0.02)
    metrics = os.path.join(killed, "metrics.jsonl")
    kills = 0
    # A kill point in each of two windows of steps, so that each run gets further; the
    # kill lands a random time after the run logs that step (in an evaluation, a save, the
    # next chunk).
    for target in (rng.randrange(20, 40), rng.randrange(50, 70)):
        victim = _start(killed, env)
        deadline = time.monotonic() + 120
        while _lines(metrics) < target and victim.poll() is None:
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.01)
        if kills == 0:
            # (d) A second run on the same workdir is refused while the first holds it (the
            # first is paused meanwhile, so it is surely still running) and changes nothing.
            victim.send_signal(signal.SIGSTOP)
            with pytest.raises(WorkdirLockedError, match=rf"in use by .*pid {victim.pid}\b"):
                train(tiny_config(num_steps=KILL_STEPS), killed)
            victim.send_signal(signal.SIGCONT)
        time.sleep(rng.uniform(0.0, 0.1))
        if victim.poll() is None:
            victim.send_signal(signal.SIGKILL)
            kills += 1
        victim.communicate()
    assert kills >= 2
    assert not os.path.exists(os.path.join(killed, "summary.json"))

    resumed = subprocess.run(
        [*CLI, f"--workdir={killed}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-3000:]

    assert _logs(killed) == _logs(straight)
    assert len(_logs(killed)[0]) == KILL_STEPS
    with (
        open(os.path.join(killed, "summary.json")) as a,
        open(os.path.join(straight, "summary.json")) as b,
    ):
        assert json.load(a)["eval"] == json.load(b)["eval"]
    assert_tree_allclose(
        _final_checkpoint(killed, KILL_STEPS),
        _final_checkpoint(straight, KILL_STEPS),
        rtol=0,
        atol=0,
    )
    # Only the two newest checkpoints remain, no partial saves.
    assert set(os.listdir(os.path.join(killed, "checkpoints"))) == {
        str(KILL_STEPS - 10),
        str(KILL_STEPS),
    }


# (b) Flipped bits in the latest checkpoint: found, the run falls back and says so.


def test_flipped_bits_in_the_latest_checkpoint_fall_back_to_the_previous(reference, tmp_path):
    workdir = _interrupted_copy(reference, tmp_path)
    flipped = 0
    for root, _, names in os.walk(os.path.join(workdir, "checkpoints", "40")):
        for name in names if os.path.basename(root) == "d" else ():
            path = os.path.join(root, name)
            with open(path, "rb") as file:
                data = bytearray(file.read())
            data[len(data) // 2] ^= 0x04
            with open(path, "wb") as file:
                file.write(bytes(data))
            flipped += 1
    assert flipped
    with pytest.warns(RunWarning, match=r"checkpoint step 40 .*corrupt.* resum\w* from step 30"):
        summary = train(tiny_config(), workdir)
    _assert_like_reference(workdir, summary, reference)


# (c) Damaged logs: records missing are reported; a damaged line stops the run, naming the
# file and line, before any file is changed.


@pytest.mark.parametrize("kept_lines, missing", [(15, "16-40"), (None, "1-40")])
def test_truncated_or_deleted_metrics_are_reported(reference, tmp_path, kept_lines, missing):
    workdir = _interrupted_copy(reference, tmp_path)
    path = os.path.join(workdir, "metrics.jsonl")
    if kept_lines is None:
        os.remove(path)
    else:
        with open(path) as file:
            lines = file.readlines()
        with open(path, "w") as file:
            file.writelines(lines[:kept_lines])
    with pytest.warns(RunWarning, match=rf"metrics.jsonl .*steps {missing}\b"):
        summary = train(tiny_config(), workdir)
    assert summary["eval"] == reference[1]["eval"]


@pytest.mark.parametrize(
    "name, line",
    [("metrics.jsonl", 20), ("eval.jsonl", 1), ("config.json", 3), ("summary.json", 3)],
)
def test_a_damaged_line_stops_the_run_naming_it_and_changes_nothing(
    reference, tmp_path, name, line
):
    # Killed after the metrics and evaluation of step 40, before its checkpoint: a resume
    # would truncate metrics.jsonl and eval.jsonl to step 30.
    workdir = _interrupted_copy(reference, tmp_path, drop_steps=[40])
    if name == "summary.json":
        shutil.copy(os.path.join(reference[0], name), os.path.join(workdir, name))
    path = os.path.join(workdir, name)
    with open(path) as file:
        lines = file.readlines()
    assert line < len(lines)  # a line in the middle, not a torn last line
    lines[line - 1] = lines[line - 1][: len(lines[line - 1]) // 2] + "\n"
    with open(path, "w") as file:
        file.writelines(lines)
    before = _files(workdir)
    with pytest.raises(CorruptFileError, match=rf"{name} line {line}\b"):
        train(tiny_config(), workdir)
    after = _files(workdir)
    after.pop(".lock", None)
    before.pop(".lock", None)
    assert after == before


def test_a_lost_config_json_is_recovered_from_the_checkpoint(reference, tmp_path):
    workdir = _interrupted_copy(reference, tmp_path, drop_steps=[40])
    os.remove(os.path.join(workdir, "config.json"))
    # Recovered and put back; another config is refused, naming the difference.
    with (
        pytest.warns(RunWarning, match=r"config.json .*recovered .*checkpoint step 30"),
        pytest.raises(ConfigError, match=r"optim.learning_rate: saved 0.01, now 0.02"),
    ):
        train(tiny_config(**{"optim.learning_rate": 0.02}), workdir)
    with open(os.path.join(workdir, "config.json")) as a:
        with open(os.path.join(reference[0], "config.json")) as b:
            assert json.load(a) == json.load(b)
    summary = train(tiny_config(), workdir)
    _assert_like_reference(workdir, summary, reference)


def test_run_files_without_config_json_or_checkpoint_are_refused(reference, tmp_path):
    workdir = _interrupted_copy(reference, tmp_path, drop_steps=[30, 40])
    os.remove(os.path.join(workdir, "config.json"))
    before = _files(workdir)
    with pytest.raises(ResumeError, match=r"no config.json"):
        train(tiny_config(), workdir)
    after = _files(workdir)
    after.pop(".lock", None)
    before.pop(".lock", None)
    assert after == before


# (d) Two runs on one workdir (see also (a), with a real running process).


def test_the_cli_refuses_a_locked_workdir_in_one_line(reference, tmp_path):
    from rnncells.training import lock

    workdir = str(tmp_path / "run")
    shutil.copytree(reference[0], workdir)
    before = _files(workdir)
    with lock.workdir_lock(workdir):
        proc = subprocess.run(
            [*CLI, f"--workdir={workdir}"],
            cwd=ROOT,
            env=_cli_env(tmp_path),
            capture_output=True,
            text=True,
        )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith(
        f"error: workdir {workdir} is in use by another run (pid {os.getpid()})"
    )
    assert [line.split(":")[0] for line in lines] == ["error", "hint"], proc.stderr
    after = _files(workdir)
    assert {k: v for k, v in after.items() if k != ".lock"} == {
        k: v for k, v in before.items() if k != ".lock"
    }


def test_a_resume_is_refused_when_config_json_was_edited_unlike_the_checkpoint(reference, tmp_path):
    # config.json edited, and the command changed to match it: the checkpoint's own
    # verified copy of the config decides.
    workdir = _interrupted_copy(reference, tmp_path, drop_steps=[40])
    path = os.path.join(workdir, "config.json")
    with open(path) as file:
        saved = json.load(file)
    saved["optim"]["learning_rate"] = 0.02
    with open(path, "w") as file:
        json.dump(saved, file)
    before = _files(workdir)
    with pytest.raises(
        CheckpointError,
        match=r"checkpoint step 30 .* another config \(optim.learning_rate: saved 0.01, now "
        r"0.02\): config.json .* was changed after it",
    ):
        train(tiny_config(**{"optim.learning_rate": 0.02}), workdir)
    after = _files(workdir)
    assert {k: v for k, v in after.items() if k != ".lock"} == {
        k: v for k, v in before.items() if k != ".lock"
    }


def test_a_tanh_rnn_checkpoint_is_not_resumed_as_an_irnn(tmp_path):
    # The two cells have the same parameter shapes: only the config tells them apart.
    workdir = str(tmp_path / "run")
    train(tiny_config(**{"model.cell": "rnn", "num_steps": 20}), workdir)
    os.remove(os.path.join(workdir, "summary.json"))
    path = os.path.join(workdir, "config.json")
    with open(path) as file:
        saved = json.load(file)
    saved["model"]["cell"], saved["num_steps"] = "irnn", 40
    with open(path, "w") as file:
        json.dump(saved, file)
    with pytest.raises(CheckpointError, match=r"model.cell: saved 'rnn', now 'irnn'"):
        train(tiny_config(**{"model.cell": "irnn"}), workdir)


def test_lost_scheduled_evaluations_are_reported(reference, tmp_path):
    workdir = _interrupted_copy(reference, tmp_path, drop_steps=[40])
    path = os.path.join(workdir, "eval.jsonl")
    with open(path) as file:
        lines = file.readlines()
    assert [json.loads(line)["step"] for line in lines] == [20, 40]
    with open(path, "w") as file:
        file.writelines(lines[1:])  # step 20's evaluation lost
    with pytest.warns(RunWarning, match=r"eval.jsonl lacks the scheduled evaluations of steps 20 "):
        summary = train(tiny_config(), workdir)
    assert summary["eval"] == reference[1]["eval"]
    assert [r["step"] for r in read_jsonl(path)] == [40]
