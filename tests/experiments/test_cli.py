"""The command line as people use it: every config key described, a readable summary; the
report defines its columns. (A time-limited run that prints the command resuming it is
tested with the resume's refusals, in test_cli_errors.py.)"""

import subprocess
import sys

import ml_collections
import pytest

import tests
from configs import adding, common, copy, digits
from experiments import report
from rnncells.training.cli import format_summary

ROOT = str(tests.ROOT)


def _keys(config, prefix=""):
    for key in config.keys():
        value, name = config[key], prefix + key
        if isinstance(value, ml_collections.ConfigDict) and name not in common.DESCRIPTIONS:
            yield from _keys(value, name + ".")
        else:
            yield name


@pytest.mark.parametrize("module", [adding, copy, digits])
@pytest.mark.parametrize("arg", [None, "smoke"])
def test_every_config_key_is_described(module, arg):
    keys = set(_keys(module.get_config(arg)))
    assert keys <= set(common.DESCRIPTIONS), keys - set(common.DESCRIPTIONS)
    assert all(common.DESCRIPTIONS[k].strip() for k in keys)


def _cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "experiments.run", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_show_config_lists_every_key_with_value_and_meaning(tmp_path):
    proc = _cli("--config=configs/copy.py:smoke", "--show_config", "--config.model.hidden_size=7")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    config = copy.get_config("smoke")
    for key in _keys(config):
        (line,) = [line for line in lines if line.startswith(f"{key} = ")]
        assert line.endswith("# " + common.DESCRIPTIONS[key]), line
    assert any(line.startswith("model.hidden_size = 7 ") for line in lines)


def test_format_summary_reads_like_a_sentence():
    summary = {
        "task": "adding",
        "task_kwargs": {"T": 100},
        "cell": "lstm",
        "init": "default",
        "num_seeds": 2,
        "num_steps": 1000,
        "steps_run": 500,
        "stopped_early": True,
        "baseline_loss": 1 / 6,
        "solved": True,
        "eval": {
            "loss": {"mean": 0.005, "std": 0.001, "per_seed": [0.004, 0.006]},
            "success_rate": {"mean": 0.9, "std": 0.05, "per_seed": [0.85, 0.95]},
        },
    }
    text = format_summary(summary, "runs/x")
    assert text.splitlines()[0] == (
        "adding (T=100), lstm, init default: 500 of 1000 steps, 2 seeds, stopped early: solved"
    )
    assert "held-out loss: 0.005 ± 0.001 (0.004, 0.006)" in text
    assert "solved by every seed: yes" in text


def test_report_footnote_defines_every_column():
    def run(task, metric):
        return (
            f"runs/{task}",
            {
                "task": task,
                "task_kwargs": {"T": 100},
                "cell": "lstm",
                "init": "default",
                "num_seeds": 1,
                "steps_run": 10,
                "baseline_loss": 0.2,
                "solved": False,
                "eval": {
                    "loss": {"mean": 0.1, "std": 0.0, "per_seed": [0.1]},
                    metric: {"mean": 0.5, "std": 0.0, "per_seed": [0.5]},
                },
            },
        )

    text = report.table([run("adding", "success_rate"), run("copy", "accuracy")])
    header = [c.strip() for c in text.splitlines()[0].strip("|").split("|")]
    footnote = text.strip().splitlines()[-1]
    for column in header:
        assert f"{column}: " in footnote, column
