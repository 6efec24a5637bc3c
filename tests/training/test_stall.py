"""The stall guard (`rnncells.training.stall`) and prompt stops: a run whose chunk never
finishes stops by itself with exit status 4, one ``error:`` line and its stacks, and the
same command resumes it to the end an uninterrupted run reaches; SIGINT and SIGTERM
during a blocked call stop it within seconds, resumably."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import tests
from rnncells.training import stall

ROOT = str(tests.ROOT)
HOOK = os.path.join(ROOT, "tests", "stall_hook.py")
ARGS = ["--config=configs/adding.py:smoke", "--config.num_steps=100", "--report=false"]


# -- the guard alone ------------------------------------------------------------------


def test_automatic_limits_follow_each_phases_measured_time(tmp_path):
    guard = stall.StallGuard(str(tmp_path), exit=lambda code: None)
    assert guard.limit("chunk") == stall.FIRST_CALL_S  # compiles, too
    guard._slowest["chunk"] = 2.0
    assert guard.limit("chunk") == stall.MIN_LIMIT_S
    guard._slowest["chunk"] = 45.0
    assert guard.limit("chunk") == pytest.approx(stall.LIMIT_FACTOR * 45.0)
    assert guard.limit("evaluate") == stall.FIRST_CALL_S  # each phase its own
    fixed = stall.StallGuard(str(tmp_path), 7.5)
    assert fixed.limit("chunk") == 7.5
    assert fixed.limit("chunk", compiles=True) == stall.FIRST_CALL_S  # compiling: never less
    fixed._slowest["chunk"] = 1.0
    assert fixed.limit("chunk") == fixed.limit("chunk", compiles=True) == 7.5
    with pytest.raises(ValueError, match=r"timeout_s must be >= 0 .*got -1"):
        stall.StallGuard(str(tmp_path), -1)


def test_guard_fires_once_a_phase_outlives_its_limit(tmp_path, capsys):
    exits = []
    guard = stall.StallGuard(
        str(tmp_path),
        0.3,
        describe_checkpoint=lambda: "the newest intact checkpoint is step 50 in X",
        resume_hint="resume with: CMD",
        native_stacks=False,  # gdb's stacks: the real runs below
        exit=exits.append,
    )
    with guard:
        with guard.phase("evaluate", 50):
            time.sleep(0.1)  # within the limit
        assert not guard.fired.is_set()
        with guard.phase("chunk", 75):
            assert guard.fired.wait(timeout=10)
    assert exits == [stall.STALL_EXIT_CODE]
    err = capsys.readouterr().err.splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1
    assert "phase 'chunk' at step 75 made no progress" in errors[0]
    assert "step 50 in X" in errors[0] and str(tmp_path / "stall.txt") in errors[0]
    assert err[-1] == "hint: resume with: CMD"
    text = (tmp_path / "stall.txt").read_text()
    assert "Python stacks (every thread)" in text and "test_guard_fires" in text


def test_stall_statuses():
    assert stall.is_stall_status(4) and stall.is_stall_status(-signal.SIGALRM)
    assert not any(stall.is_stall_status(rc) for rc in (0, 2, 3, 130, -9, None))


# -- real runs ----------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _compilation_cache(tmp_path_factory):
    """One compilation cache for every run this module starts (its environment is theirs):
    a later run loads what an earlier one compiled instead of compiling it again."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path_factory.mktemp("jax_cache")))
        patch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        yield


def _start(workdir, *extra, hook_at=None, mode="event", marker=None):
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "experiments.run"]
    if hook_at is not None:
        env.update(STALL_HOOK_AT=str(hook_at), STALL_HOOK_MODE=mode)
        if marker:
            env["STALL_HOOK_MARKER"] = str(marker)
        cmd = [sys.executable, HOOK]
    return subprocess.Popen(
        [*cmd, *ARGS, f"--workdir={workdir}", *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as file:
        return [(r["step"], r["loss_per_seed"]) for r in map(json.loads, file)]


def _final(workdir):
    with open(os.path.join(workdir, "summary.json")) as file:
        summary = json.load(file)
    return summary["steps_run"], summary["eval"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight") / "run"
    rc, _, err = _finish(_start(workdir))
    assert rc == 0, err
    return _losses(workdir), _final(workdir)


def test_a_stall_holding_the_python_lock_is_ended_by_the_fallback(tmp_path, uninterrupted):
    workdir = tmp_path / "run"
    rc, _, err = _finish(_start(workdir, "--config.stall_timeout_s=4", hook_at=2, mode="gil"))
    assert rc == -signal.SIGALRM, err  # no Python thread could run: the kernel's signal
    assert stall.is_stall_status(rc)
    stacks = (workdir / "stall.txt").read_text()
    assert "_wait_forever" in stacks  # faulthandler wrote every thread's Python stack
    rc, _, err = _finish(_start(workdir, "--config.stall_timeout_s=4"))
    assert rc == 0, err
    assert _losses(workdir) == uninterrupted[0]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_a_blocked_call_stops_promptly_and_resumes_exactly(
    tmp_path, signum, uninterrupted
):
    workdir, marker = tmp_path / "run", tmp_path / "blocked"
    proc = _start(workdir, hook_at=4, marker=marker)  # steps 76-100 block forever
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    tick = time.monotonic()
    proc.send_signal(signum)
    rc, out, err = _finish(proc, timeout=60)
    assert time.monotonic() - tick < 15
    assert rc == 128 + signum, err
    lines = err.strip().splitlines()
    name = signal.Signals(signum).name
    assert lines[-2] == (
        f"error: stopped by {name} at step 75 of 100; the newest intact checkpoint is "
        f"step 50 in {workdir / 'checkpoints'}"
    ), err
    assert lines[-1].startswith("hint: resume with: ") and "--workdir=" in lines[-1]
    assert "Traceback" not in err
    if signum == signal.SIGINT:
        return  # the same stop: one resume (SIGTERM's) shows it exact
    rc, _, err = _finish(_start(workdir))
    assert rc == 0, err
    assert _losses(workdir) == uninterrupted[0]
    assert _final(workdir) == uninterrupted[1]


# -- reruns of a stalled child (experiments.science and experiments.sweep use them) ----


def test_a_stalled_chunk_stops_the_run_and_its_rerun_resumes_it_to_the_end(
    tmp_path, uninterrupted, capfd
):
    # The run's chunk 3 (steps 51-75) never finishes (checkpoint 50 is intact): the guard
    # stops it; experiments.cli reruns it (science and sweep do), and the rerun, which
    # does not stall, ends as an uninterrupted run.
    from experiments.cli import run_resuming_stalls

    workdir, marker = tmp_path / "run", tmp_path / "stalled-once"
    os.environ.update(STALL_HOOK_AT="3", STALL_HOOK_MARKER=str(marker), STALL_HOOK_ONCE="1")
    try:
        command = [sys.executable, HOOK, *ARGS, f"--workdir={workdir}"]
        status = run_resuming_stalls([*command, "--config.stall_timeout_s=5"], "row")
    finally:
        for key in ("STALL_HOOK_AT", "STALL_HOOK_MARKER", "STALL_HOOK_ONCE"):
            os.environ.pop(key)
    err = capfd.readouterr().err
    assert status == 0, err
    assert marker.exists()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert "phase 'chunk' at step 50 made no progress for 5" in errors[0]
    assert "newest intact checkpoint is step 50" in errors[0]
    assert any(line.startswith("hint: resume with: ") for line in err.splitlines())
    assert "row: stalled (exit status 4); rerun 1 of 2 resumes it from its newest" in err
    stacks = (workdir / "stall.txt").read_text()
    assert "_wait_forever" in stacks  # the stuck callback's thread, named
    native = stacks.split("Native stacks (every thread):", 1)[1].splitlines()[1]
    if shutil.which("gdb"):  # gdb's frames, else the reason there are none
        assert native.startswith(("Thread ", "#")), native
    else:
        assert native.startswith("(no native stack: gdb is not installed)"), native
    assert _losses(workdir) == uninterrupted[0]
    assert _final(workdir) == uninterrupted[1]


def test_a_child_that_keeps_stalling_is_reported_after_the_reruns(capfd):
    from experiments.cli import STALL_RETRIES, run_resuming_stalls

    count = "import os, sys; print('ran', os.environ.get('XLA_FLAGS', ''), file=sys.stderr)"
    status = run_resuming_stalls([sys.executable, "-c", f"{count}; os._exit(4)"], "row")
    err = capfd.readouterr().err
    assert status == stall.STALL_EXIT_CODE
    runs = [line for line in err.splitlines() if line.startswith("ran")]
    assert len(runs) == 1 + STALL_RETRIES
    # The first rerun as the first run (bit for bit alike), the later with the fusions off.
    assert "ynn_fusion_type" not in runs[0] + runs[1] and "ynn_fusion_type=" in runs[2]
    assert f"error: row stalled {1 + STALL_RETRIES} times (exit status 4)" in err
    assert run_resuming_stalls([sys.executable, "-c", "raise SystemExit(2)"], "row") == 2
