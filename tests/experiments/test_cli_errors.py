"""Bad input to the command lines of ``experiments/``: one ``error:`` line naming the
argument, what it must be and what it is, a ``hint:`` line, exit status 2, no traceback;
and a time-limited run, which prints the command that resumes it, and what a resume refuses."""

import os
import shlex
import subprocess
import sys

import pytest

import tests

ROOT = str(tests.ROOT)
SMOKE = "--config=configs/adding.py:smoke"


def _module(module, *args, timeout=300, env=None):
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def _cli(*args, **kwargs):
    return _module("experiments.run", *args, **kwargs)


def _one_error(proc, status=2):
    """The ``error:`` line of a command that failed as a user error should (and its hint)."""
    assert proc.returncode == status, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "FATAL" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    hints = [line for line in lines if line.startswith("hint: ")]
    assert len(errors) == 1, proc.stderr
    assert len(hints) == 1, proc.stderr
    return errors[0], hints[0]


def test_override_value_of_the_wrong_type_names_key_type_and_value(tmp_path):
    proc = _cli(SMOKE, f"--workdir={tmp_path / 'run'}", "--config.num_steps=abc")
    error, hint = _one_error(proc)
    assert "config.num_steps must be an integer (int), got 'abc'" in error
    assert "--config.num_steps=100" in hint  # the smoke config's own value, as an example
    assert not (tmp_path / "run").exists()


def test_override_of_an_unknown_key_names_its_path_and_the_close_key(tmp_path):
    proc = _cli(SMOKE, f"--workdir={tmp_path / 'run'}", "--config.task.kwargs.TT=50")
    error, hint = _one_error(proc)
    assert "config.task.kwargs.TT is not a key of the config" in error
    assert "did you mean config.task.kwargs.T?" in hint
    proc = _cli(SMOKE, f"--workdir={tmp_path / 'run'}", "--config.num_stepz=50")
    error, hint = _one_error(proc)
    assert "config.num_stepz is not a key" in error
    assert "config.num_steps" in hint
    assert not (tmp_path / "run").exists()


def test_report_of_a_missing_workdir_is_one_error_line(tmp_path):
    proc = _module("experiments.report", f"--workdir={tmp_path / 'nonexistent'}")
    error, _ = _one_error(proc)
    assert f"--workdir={tmp_path / 'nonexistent'} does not exist" in error
    (tmp_path / "empty").mkdir()
    error, _ = _one_error(_module("experiments.report", f"--workdir={tmp_path / 'empty'}"))
    assert "no run" in error and str(tmp_path / "empty") in error


def test_local_cluster_of_zero_processes_is_one_error_line(tmp_path):
    proc = _module(
        "experiments.local_cluster",
        "--num_processes=0",
        "--",
        SMOKE,
        f"--workdir={tmp_path / 'run'}",
    )
    error, _ = _one_error(proc)
    assert "--num_processes must be an integer >= 1, got 0" in error
    assert not (tmp_path / "run").exists()


def test_training_without_the_train_extra_says_which_extra_to_install():
    # A meta-path finder that makes orbax unimportable, as in an environment without it.
    code = """
import sys

class NoOrbax:
    def find_spec(self, name, path=None, target=None):
        if name == "orbax" or name.startswith("orbax."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoOrbax())
try:
    import rnncells.training
except ModuleNotFoundError as error:
    print(error.name)
    print(error)
else:
    print("imported")
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    name, message = proc.stdout.splitlines()[:2]
    assert name == "orbax"
    assert 'pip install "rnncells[train]"' in message
    assert "orbax" in message and "train extra" in message


@pytest.mark.parametrize("module", ["experiments.run", "experiments.science"])
def test_a_command_line_without_the_extra_says_which_extra_to_install(module, tmp_path):
    code = f"""
import runpy, sys

class NoOrbax:
    def find_spec(self, name, path=None, target=None):
        if name == "orbax" or name.startswith("orbax."):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, NoOrbax())
sys.argv = [{module!r}, "--workdir={tmp_path / "run"}"]
runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines[0].startswith(f"error: python -m {module} needs the experiments extra: orbax")
    assert lines[1] == (
        'hint: pip install -e ".[experiments]" in the repository (the command lines are '
        "not part of the installed package)"
    )
    assert not (tmp_path / "run").exists()


def _in_private_mounts(shell: str) -> subprocess.CompletedProcess:
    """``shell`` run in a private mount namespace (its mounts vanish with it)."""
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", shell], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def _can_mount_read_only(tmp_path) -> bool:
    probe = tmp_path / "probe"
    probe.mkdir()
    try:
        proc = _in_private_mounts(f"mount -t tmpfs -o ro,size=64k tmpfs {probe}")
    except (FileNotFoundError, subprocess.SubprocessError):
        return False
    finally:
        probe.rmdir()
    return proc.returncode == 0


def test_workdir_that_is_a_file_under_a_file_or_empty_is_one_error_line(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    cases = [
        (str(a_file), f"workdir {a_file} is a file, not a folder"),
        (str(a_file / "sub" / "run"), f"lies under {a_file}, which is a file"),
        ("", "the workdir is empty"),
    ]
    for workdir, expected in cases:
        error, _ = _one_error(_cli(SMOKE, f"--workdir={workdir}", "--report=false"))
        assert expected in error, (workdir, error)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_workdir_on_a_read_only_place_is_one_error_line(tmp_path):
    """A read-only tmpfs (a private mount namespace; these tests run as root, whom chmod
    does not stop): a fresh run cannot create its workdir there."""
    import pytest

    if not _can_mount_read_only(tmp_path):
        pytest.skip("no mount namespace here (unshare -m) for a read-only filesystem")
    ro = tmp_path / "ro"
    ro.mkdir()
    proc = _in_private_mounts(
        f"mount -t tmpfs -o ro,size=64k tmpfs {ro} && "
        f"{sys.executable} -m experiments.run {SMOKE} --workdir={ro / 'run'} --report=false"
    )
    error, _ = _one_error(proc)
    assert f"workdir {ro / 'run'} cannot be created: {ro} is not writable" in error
    assert "read-only filesystem" in error


def test_validate_workdir_refuses_a_folder_it_cannot_write(tmp_path, monkeypatch):
    """In-process, for a user other than root: os.access says the folder is not writable."""
    import pytest

    from rnncells.training.errors import ConfigError
    from rnncells.training.validation import validate_workdir

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(ConfigError, match="holds a run but is not writable") as info:
        validate_workdir(str(run))
    assert "resume there" in info.value.hint
    with pytest.raises(ConfigError, match=f"{tmp_path} is not writable"):
        validate_workdir(str(tmp_path / "new"))


def _mtimes(folder):
    return {
        os.path.relpath(os.path.join(root, name), folder): os.stat(
            os.path.join(root, name)
        ).st_mtime_ns
        for root, _, names in os.walk(folder)
        for name in names
        if name != ".lock"  # the lock every call takes to read the files, not their data
    }


def _compilation_cache_env(tmp_path):
    """One compilation cache for a test's command lines: the second and later compile
    nothing the first compiled (seconds each)."""
    return dict(
        os.environ,
        JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    )


def test_resume_says_so_refuses_fewer_steps_and_read_only_and_says_finished(tmp_path):
    workdir = tmp_path / "run"
    args = [SMOKE, f"--workdir={workdir}", "--report=false", "--config.optim.schedule=constant"]
    limited = [*args, "--config.time_limit_s=0.001"]  # stops after the first chunk
    env = _compilation_cache_env(tmp_path)
    first = _cli(*limited, env=env)
    assert first.returncode == 0, first.stderr
    assert "25 of 100 steps" in first.stdout
    assert "stopped at the time limit" in first.stdout
    assert "resuming" not in first.stderr + first.stdout
    command = first.stdout.strip().splitlines()[-1].strip()
    assert shlex.split(command) == [sys.executable, "-m", "experiments.run", *limited]
    # The printed command, run as it is, resumes: one more chunk before the limit again.
    second = subprocess.run(
        shlex.split(command), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert second.returncode == 0, second.stderr
    assert f"resuming from checkpoint step 25 of 100 in {workdir / 'checkpoints'}" in (
        second.stderr
    )
    assert "50 of 100 steps" in second.stdout

    # num_steps below the checkpoint's step: refused, naming both, nothing written.
    before = _mtimes(workdir)
    error, hint = _one_error(_cli(*args, "--config.num_steps=25", env=env))
    assert "config.num_steps=25 is below step 50" in error
    assert "--config.num_steps >= 50" in hint
    assert _mtimes(workdir) == before

    # The same run on a read-only bind of its workdir cannot be resumed there.
    if _can_mount_read_only(tmp_path):
        proc = _in_private_mounts(
            f"mount --bind {workdir} {workdir} && mount -o remount,bind,ro {workdir} && "
            f"{sys.executable} -m experiments.run {' '.join(args)}"
        )
        error, hint = _one_error(proc)
        assert f"workdir {workdir} holds a run but is not writable" in error
        assert _mtimes(workdir) == before

    finished = _cli(*args, env=env)
    assert finished.returncode == 0, finished.stderr
    assert "resuming from checkpoint step 50 of 100" in finished.stderr
    again = _cli(*args, env=env)
    assert again.returncode == 0, again.stderr
    assert f"the run in {workdir} already finished (100 of 100 steps)" in again.stderr
    assert "resuming" not in again.stderr


_NO_TENSORBOARDX = """
import runpy, sys

class NoTensorboardX:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorboardX" or name.startswith("tensorboardX."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoTensorboardX())
sys.argv = ["experiments.run", *sys.argv[1:]]
runpy.run_module("experiments.run", run_name="__main__", alter_sys=True)
"""


def test_missing_tensorboardx_is_found_before_anything_is_written(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _NO_TENSORBOARDX,
            SMOKE,
            f"--workdir={tmp_path / 'run'}",
            "--config.tensorboard=true",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    error, hint = _one_error(proc)
    assert "config.tensorboard=True needs tensorboardX" in error
    assert 'pip install "rnncells[tensorboard]"' in hint
    assert not (tmp_path / "run").exists()


def test_eval_batch_size_is_bounded_before_anything_runs(tmp_path, monkeypatch):
    import pytest

    from configs import adding
    from rnncells.training import validation
    from rnncells.training.errors import ConfigError

    proc = _cli(SMOKE, f"--workdir={tmp_path / 'run'}", "--config.eval_batch_size=1000000000")
    error, _ = _one_error(proc)
    assert "config.eval_batch_size must be an integer in [1, 65536]" in error
    assert "EVAL_BATCH_LIMIT" in error and "got 1000000000" in error
    assert not (tmp_path / "run").exists()

    # Below EVAL_BATCH_LIMIT, the device's memory bounds it once the task is known.
    from rnncells.tasks import get_task

    config = adding.get_config("smoke")
    config.eval_batch_size = 4096  # 2 seeds x 4096 x 20 steps x (2 + 2 x 8 + 1) x 4 B: 12 MiB
    task = get_task("adding", T=20)
    monkeypatch.setattr(validation, "device_memory_bytes", lambda: 2**20)
    with pytest.raises(ConfigError, match=r"config.eval_batch_size must be at most \d+"):
        validation.check_eval_memory(config, task)
    monkeypatch.setattr(validation, "device_memory_bytes", lambda: 2**40)
    validation.check_eval_memory(config, task)
