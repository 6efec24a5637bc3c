"""Bad input to the command lines of ``experiments/``: one ``error:`` line naming the
argument, what it must be and what it is, a ``hint:`` line, exit status 2, no traceback."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
