"""Experiments: config errors, the smoke config end to end, resume, report and diagnostics."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import rnncells as rc
import tests
from configs import adding, copy, digits
from experiments import diagnostics, report, sweep
from experiments import run as run_lib
from rnncells.tasks import get_task
from rnncells.training import cell_names, model_init

ROOT = str(tests.ROOT)


def _run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "experiments.run", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "override, expected",
    [
        ("--config.model.hidden_sise=3", "hidden_sise"),
        ("--config.model.hidden_size=wide", "hidden_size"),
        ("--config.num_steps=1.5", "num_steps"),
        (
            "--config.model.cell=foo",
            # every registered cell is listed, the seed's four first
            f"error: config.model.cell must be one of {list(cell_names())}, got 'foo'\n",
        ),
        ("--config.optim.learning_rate=inf", "error: config.optim.learning_rate must be a finite"),
    ],
)
def test_bad_override_names_the_key(tmp_path, override, expected):
    workdir = tmp_path / "run"
    proc = _run_cli("--config=configs/adding.py:smoke", f"--workdir={workdir}", override)
    assert proc.returncode != 0
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr  # a one-line error, not a crash
    assert not os.path.exists(workdir)  # checked before anything is written
    if expected.startswith("error: config."):  # errors of values, found by validate
        assert proc.returncode == 2
        assert [line.split(":")[0] for line in proc.stderr.splitlines()] in (
            ["error"],
            ["error", "hint"],
        ), proc.stderr


def test_configs_have_smoke_variants():
    for module in (adding, copy, digits):
        full, smoke = module.get_config(), module.get_config("smoke")
        assert smoke.num_steps < full.num_steps
        assert module.__doc__ and "python -m experiments.run" in module.__doc__
        with pytest.raises(ValueError, match="smoke"):
            module.get_config("large")


def test_smoke_config_end_to_end_and_resume(tmp_path):
    config = adding.get_config("smoke")
    workdir = str(tmp_path / "smoke")
    summary = run_lib.run(config, workdir)
    for name in (
        "config.json",
        "metrics.jsonl",
        "eval.jsonl",
        "summary.json",
        "report.md",
        "learning_curves.png",
    ):
        assert os.path.exists(os.path.join(workdir, name)), name
    with open(os.path.join(workdir, "metrics.jsonl")) as file:
        records = [json.loads(line) for line in file]
    assert [r["step"] for r in records] == list(range(1, config.num_steps + 1))
    for key in ("loss", "success_rate", "grad_norm", "learning_rate", "steps_per_sec"):
        assert np.isfinite(records[-1][key]), key
    assert len(records[-1]["loss_per_seed"]) == config.num_seeds
    with open(os.path.join(workdir, "config.json")) as file:
        assert json.load(file)["model"]["hidden_size"] == config.model.hidden_size
    assert summary["steps_run"] == config.num_steps
    assert len(summary["eval"]["loss"]["per_seed"]) == config.num_seeds
    with open(os.path.join(workdir, "report.md")) as file:
        assert "| adding |" in file.read()

    # The same command again finds the finished run and returns its summary.
    assert run_lib.run(config, workdir, report=False)["eval"] == summary["eval"]
    # A different config on the same workdir is refused, naming the key.
    other = adding.get_config("smoke")
    other.model.hidden_size = 9
    with pytest.raises(ValueError, match="model.hidden_size: saved 8, now 9"):
        run_lib.run(other, workdir)


def test_gate_activations_and_gradient_norms(key):
    task = get_task("adding", T=7)

    @jax.jit
    def compute(key):  # one compiled program instead of many eager ops
        params = model_init(key, cell="lstm", input_size=2, output_size=1, hidden_size=3)
        batch = task.make_batch(jax.random.PRNGKey(0), 4)
        acts = diagnostics.gate_activations(params.layers[0], batch.inputs[0])
        w = rc.gate(params.layers[0], "f")
        # The forget gate at step 0 (h_{-1} = 0) is sigmoid(x_0 W_f + b_f).
        f0 = jax.nn.sigmoid(batch.inputs[0, :1] @ w.W + w.b.reshape(1, -1))[0]
        norms = diagnostics.hidden_grad_norms(params, task, batch)
        gru = model_init(key, cell="gru_reset_after", input_size=2, output_size=1, hidden_size=3)
        return acts, f0, norms, diagnostics.gate_activations(gru.layers[0], batch.inputs[0])

    acts, f0, norms, gru_acts = compute(key)
    assert sorted(acts) == ["f", "i", "o"]
    for act in acts.values():
        assert act.shape == (7, 3)
        assert np.all((np.asarray(act) > 0) & (np.asarray(act) < 1))
    np.testing.assert_allclose(acts["f"][0], f0, rtol=1e-6)
    assert norms.shape == (6,)
    assert np.all(np.isfinite(np.asarray(norms))) and float(norms[-1]) > 0
    assert sorted(gru_acts) == ["r", "z"]


def _fake_run(folder, cell, T, loss):
    os.makedirs(folder)
    summary = {
        "task": "adding",
        "task_kwargs": {"T": T},
        "cell": cell,
        "init": "default",
        "num_seeds": 2,
        "steps_run": 4,
        "baseline_loss": 1 / 6,
        "solved": loss < 0.01,
        "eval": {"loss": {"mean": loss, "std": 0.0, "per_seed": [loss, loss]}},
    }
    with open(os.path.join(folder, "summary.json"), "w") as file:
        json.dump(summary, file)
    with open(os.path.join(folder, "metrics.jsonl"), "w") as file:
        for step in range(1, 5):
            file.write(json.dumps({"step": step, "loss_per_seed": [loss * 2, loss]}) + "\n")


def test_report_table_and_plots(tmp_path):
    for cell, loss in (("rnn", 0.17), ("lstm", 0.001)):
        for T in (10, 20):
            _fake_run(str(tmp_path / f"adding_T{T}_{cell}"), cell, T, loss)
    text = report.write_report(str(tmp_path))
    assert text.count("| adding |") == 4
    assert "0.0010 ± 0.0000" in text and "2/2" in text
    for name in ("report.md", "learning_curves.png", "loss_vs_T.png"):
        assert os.path.exists(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="no run"):
        report.write_report(str(tmp_path / "adding_T10_rnn" / "none"))


def test_sweep_run_names():
    config = copy.get_config()
    config.model.init = "chrono"
    assert sweep.run_name(config) == "copy_T100_lstm_chrono"
    assert sweep.run_name(digits.get_config()) == "digits_lstm_default"


def test_report_reads_a_killed_run_from_its_last_evaluation(tmp_path):
    folder = tmp_path / "copy_killed"
    os.makedirs(folder)
    config = copy.get_config()
    config.task.kwargs.T = 500
    (folder / "config.json").write_text(config.to_json_best_effort())
    with open(folder / "eval.jsonl", "w") as file:
        for step, losses in ((500, [0.05, 0.04]), (1000, [0.02, 0.03])):
            record = {"step": step, "loss": sum(losses) / 2, "loss_per_seed": losses}
            record.update(accuracy=0.5, accuracy_per_seed=[0.6, 0.4])
            file.write(json.dumps(record) + "\n")
    ((_, summary),) = report.find_runs(str(tmp_path))
    assert summary["steps_run"] == 1000 and not summary["finished"]
    assert summary["eval"]["loss"]["per_seed"] == [0.02, 0.03]
    assert summary["baseline_loss"] == pytest.approx(10 * np.log(8) / 520)
    assert not summary["solved"]
    text = report.write_report(str(tmp_path))
    assert "| copy_killed | copy | 500 | lstm |" in text
    assert "| 1000 (stopped) |" in text and "0.0250 ± 0.0050" in text


def test_sweep_skips_inits_a_cell_does_not_have(tmp_path, capsys):
    config = copy.get_config()
    summaries = sweep.sweep(config, str(tmp_path), cells=["rnn"], inits=["chrono", "forget_bias"])
    assert summaries == [] and os.listdir(tmp_path) == []
    out = capsys.readouterr().out
    assert "skipped cell=rnn, init=chrono: init='chrono' needs a gated cell" in out
    assert "skipped cell=rnn, init=forget_bias: init='forget_bias' needs cell='lstm'" in out


def test_report_finds_runs_under_a_path_naming_checkpoints(tmp_path):
    # Only the Orbax "checkpoints" folders inside a run are skipped, not a workdir whose
    # path happens to contain the word.
    run = tmp_path / "checkpoints_of_sweeps" / "adding_T100_lstm_default"
    os.makedirs(run / "checkpoints" / "100")
    (run / "summary.json").write_text(json.dumps({"task": "adding"}))
    (run / "checkpoints" / "100" / "summary.json").write_text(json.dumps({"task": "decoy"}))
    assert report.find_runs(str(tmp_path)) == [(str(run), {"task": "adding"})]


@pytest.mark.parametrize("cell", ["mingru", "slstm"])
def test_gradient_norms_of_cells_whose_v_is_not_h_by_gates(key, cell):
    # minGRU has no V; the sLSTM's V is (heads, dh, 4 dh): h's width comes from the carry.
    task = get_task("adding", T=5)
    params = model_init(key, cell=cell, input_size=2, output_size=1, hidden_size=4)
    norms = diagnostics.hidden_grad_norms(params, task, task.make_batch(jax.random.PRNGKey(0), 3))
    assert norms.shape == (4,)
    assert np.all(np.isfinite(np.asarray(norms))) and float(norms[-1]) > 0


def test_the_sweep_command_trains_each_run_in_a_child_and_writes_the_report(tmp_path):
    # Each run in a child process of its own (rerun from its checkpoint if it stalls);
    # the parent writes the report of them all.
    root = str(tests.ROOT)
    workdir = tmp_path / "sweep"
    args = [
        sys.executable,
        "-m",
        "experiments.sweep",
        "--config=configs/adding.py:smoke",
        f"--workdir={workdir}",
        "--cells=rnn,gru",
        "--config.num_steps=25",
    ]
    proc = subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert [line.split(":")[0] for line in proc.stdout.splitlines() if ": loss " in line] == [
        "adding_T20_rnn_default",
        "adding_T20_gru_default",
    ]
    assert (workdir / "report.md").exists()
    for cell in ("rnn", "gru"):
        with open(workdir / f"adding_T20_{cell}_default" / "summary.json") as file:
            assert json.load(file)["finished"]


COMMAND_LINES = [
    "experiments/cli.py",
    "experiments/diagnostics.py",
    "experiments/local_cluster.py",
    "experiments/main.py",
    "experiments/report.py",
    "experiments/run.py",
    "experiments/sweep.py",
    *sorted(
        os.path.relpath(os.path.join(folder, name), ROOT)
        for folder in [os.path.join(ROOT, "experiments", "science")]
        for name in os.listdir(folder)
        if name.endswith(".py")
    ),
]


@pytest.mark.parametrize("path", COMMAND_LINES)
def test_command_lines_import_at_the_top_and_only_public_rnncells(path):
    # An import of experiments inside a function hides a cycle; a private rnncells name
    # (a part beginning with "_") may change with no notice.
    import ast

    with open(os.path.join(ROOT, path), encoding="utf-8") as file:
        tree = ast.parse(file.read())
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    for function in functions:
        for node in ast.walk(function):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            assert not any(m.split(".")[0] == "experiments" for m in modules), (
                f"{path}:{node.lineno} imports {modules} inside {function.name}"
            )
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rnncells"):
            names = [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.startswith("rnncells"):
                assert not any(p.startswith("_") for p in name.split(".")), f"{path}: {name}"
