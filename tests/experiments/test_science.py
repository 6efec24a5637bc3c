"""The science harness: statistics, test-set scoring, the per-row JSON and the tables."""

import json
import math
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("scipy")
pytest.importorskip("matplotlib")

from experiments import science  # noqa: E402
from experiments.science import report, scoring, stats  # noqa: E402

# --- statistics ---------------------------------------------------------------------------


def test_t_interval_is_the_student_t_interval():
    x = [1.0, 2.0, 4.0, 3.0, 5.0]
    mean, low, high = stats.t_interval(x)
    # t_{0.975, 4} = 2.776445105; sd (ddof 1) = sqrt(2.5)
    half = 2.776445105 * math.sqrt(2.5) / math.sqrt(5)
    assert mean == pytest.approx(3.0)
    assert low == pytest.approx(3.0 - half, rel=1e-8)
    assert high == pytest.approx(3.0 + half, rel=1e-8)


def test_t_interval_of_one_value_has_no_spread_and_bad_input_is_named():
    mean, low, high = stats.t_interval([0.5])
    assert mean == 0.5 and math.isnan(low) and math.isnan(high)
    with pytest.raises(ValueError, match="values"):
        stats.t_interval([])
    with pytest.raises(ValueError, match="confidence"):
        stats.t_interval([1.0, 2.0], confidence=1.5)


def test_log_interval_stays_positive_where_the_linear_one_does_not():
    x = [1e-3, 2e-3, 0.17, 0.16, 1e-3]
    assert stats.t_interval(x)[1] < 0
    geo, low, high = stats.log_t_interval(x)
    assert 0 < low < geo < high
    assert geo == pytest.approx(10 ** np.mean(np.log10(x)))
    with pytest.raises(ValueError, match=">= 0"):
        stats.log_t_interval([0.1, -1e-3])
    with pytest.raises(ValueError, match=">= 0"):
        stats.log_t_interval([0.1, float("nan")])


def test_paired_t_test_against_the_t_statistic_by_hand():
    a = np.array([0.10, 0.20, 0.15, 0.30, 0.25])
    b = np.array([0.12, 0.21, 0.19, 0.33, 0.26])
    d = np.log10(a) - np.log10(b)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(d.size))
    from scipy.stats import t as student

    assert stats.paired_t_test(a, b) == pytest.approx(2 * student.sf(abs(t), d.size - 1))
    assert stats.paired_t_test(a, a) == 1.0
    assert stats.paired_t_test(a, a * 10) == 0.0  # a constant shift: no spread at all
    assert math.isnan(stats.paired_t_test([0.1], [0.2]))
    with pytest.raises(ValueError, match="pair up"):
        stats.paired_t_test(a, b[:3])


def test_holm_adjusts_in_order_and_keeps_nan():
    adjusted = stats.holm([0.01, 0.04, math.nan, 0.03])
    assert adjusted[0] == pytest.approx(0.03)
    assert adjusted[3] == pytest.approx(0.06)
    assert adjusted[1] == pytest.approx(0.06)  # 1 x 0.04, raised to keep the order
    assert math.isnan(adjusted[2])


def test_zero_losses_stay_finite_in_log_space():
    geo, low, high = stats.log_t_interval([0.0, 1e-3, 2e-3, 0.0, 1e-3])
    assert 0 < low <= geo <= high < 1
    assert 0 <= stats.paired_t_test([0.0, 0.0, 1e-3], [0.1, 0.2, 0.1]) <= 1


# --- rows, scoring and the JSON -------------------------------------------------------------


def test_every_row_builds_a_valid_config_with_five_seeds():
    from rnncells.training.validation import validate

    rows = science.all_rows()
    assert len({row.name for row in rows}) == len(rows)
    for row in rows:
        config = row.make_config()
        validate(config)
        assert config.num_seeds == science.NUM_SEEDS >= 5
        assert config.time_limit_s == 0  # fixed step budgets, not wall-clock limits
        assert config.early_stop is False  # every row runs its whole budget
    adding = {row.name: row for row in science.all_rows("adding")}
    assert {r.value("task.kwargs.T") for r in adding.values()} == {100, 200, 400, 750, 1000}
    assert adding["adding_T1000_lstm"].where == "cpu"  # 14-19 min a row on 2 cores
    # The papers' facts (REFERENCES.md): Arjovsky et al.'s LSTM beats the baseline to
    # T=750 and their tanh RNN never does; Le et al.'s IRNN ran ~10^6 SGD steps (no
    # outcome compared with these budget-limited rows), and neither ran T=1000.
    assert [adding[f"adding_T{t}_lstm"].expect for t in (100, 200, 400, 750)] == ["beat"] * 4
    assert adding["adding_T750_rnn"].expect == "fail"
    assert all(adding[f"adding_T{t}_irnn"].expect is None for t in (100, 200, 400, 750))
    assert all(adding[f"adding_T1000_{c}"].paper == "" for c in ("rnn", "lstm", "irnn"))
    arj = {row.name: row for row in science.all_rows("arjovsky")}
    lstm = arj["arjovsky_adding_T750_lstm"]
    assert [lstm.value(k) for k in ("model.hidden_size", "optim.optimizer", "batch_size")] == [
        128,
        "rmsprop",
        20,
    ]
    assert lstm.value("optim.learning_rate") == 1e-3 and lstm.value("optim.clip_norm") == 1
    assert {r.value("task.kwargs.T") for r in arj.values() if "copy" in r.name} == {
        100,
        200,
        300,
        500,
    }
    assert arj["arjovsky_copy_T100_lstm40_b1"].expect == "beat"
    assert arj["arjovsky_copy_T300_lstm40_b1"].expect == "fail"
    lr = science.all_rows("lr")
    assert len(lr) == len(science.LR_CELLS) * len(science.LR_GRID)
    assert all(row.value("eval_every") == 100 for row in lr)  # steps to solve within 1%
    with pytest.raises(ValueError, match="study"):
        science.all_rows("nope")


@pytest.fixture
def small_test_set(monkeypatch):
    monkeypatch.setattr(scoring, "TEST_SEQUENCES", 2000)
    monkeypatch.setattr(scoring, "TEST_CHUNK", 500)


def read_json(path):
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def tiny_row(**extra):
    overrides = {
        "task.kwargs.T": 20,
        "model.hidden_size": 8,
        "num_steps": 100,
        "log_every": 25,
        "eval_every": 50,
        "checkpoint_every": 50,
        "eval_batch_size": 64,
        "model.cell": "gru",
        **extra,
    }
    return science.Run(
        study="adding",
        name="adding_T20_tiny",
        config="configs/adding.py",
        overrides=tuple(overrides.items()),
        label="GRU",
        paper="solves (someone)",
        expect="solve",
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny row trained and scored on 2000 test sequences: (workdir, JSON path)."""
    root = tmp_path_factory.mktemp("tiny")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(scoring, "TEST_SEQUENCES", 2000)
        patch.setattr(scoring, "TEST_CHUNK", 500)
        path = science.train_and_score(tiny_row(), str(root / "runs"), str(root / "res"))
    return root / "runs", path


def test_train_and_score_writes_every_figure_per_seed(tiny_run, tmp_path, small_test_set):
    runs, path = tiny_run
    result = read_json(path)
    per = result["test"]["per_seed"]
    assert result["seeds"] == [0, 1, 2, 3, 4] and result["steps_run"] == 100
    assert result["missing_evaluations"] == []
    assert len(result["seconds_to_solve"]) == 5
    assert result["environment"]["jax"] and result["environment"]["cpu_count"] >= 1
    assert result["seed_loop"] == "map"  # "auto" on one CPU device
    assert result["test"]["num_sequences"] == 2000
    for key in ("loss", "success_rate", "criterion_fraction", "criterion_all", "solved"):
        assert len(per[key]) == 5, key
    # The per-sequence criterion and the task's own success_rate are the same numbers,
    # computed two ways.
    np.testing.assert_allclose(per["criterion_fraction"], per["success_rate"], atol=1e-6)
    assert per["criterion_all"] == [f == 1.0 for f in per["criterion_fraction"]]
    # Always predicting 1 on 2000 sequences: 1/6 up to sampling error.
    assert result["test"]["constant_loss"] == pytest.approx(1 / 6, abs=0.01)
    assert len(result["eval_curve"]["step"]) == 2 and len(result["steps_to_solve"]) == 5
    # The seeds are distinct runs, and the rerun of a finished row returns the same.
    assert len(set(per["loss"])) == 5
    again = science.train_and_score(tiny_row(), str(runs), str(tmp_path / "r2"))
    assert read_json(again)["test"] == result["test"]


def test_copy_constant_predictor_scores_the_analytic_baseline(small_test_set):
    from rnncells.tasks import get_task

    config = science.Run(
        "copy", "c", "configs/copy.py", (("task.kwargs.T", 30), ("model.hidden_size", 4)), "x"
    ).make_config()
    task = get_task("copy", T=30)
    batch = science.test_batches(task, "copy")[0]
    ys = science.constant_outputs("copy", task, batch)
    assert float(task.metric(ys, batch)["loss"]) == pytest.approx(task.baseline_loss, rel=1e-5)
    assert config.task.kwargs.T == 30


def test_test_sets_are_the_same_for_every_row_and_its_chunks_distinct(small_test_set):
    from rnncells.tasks import get_task

    task = get_task("adding", T=20)
    a = science.test_batches(task, "adding")
    b = science.test_batches(task, "adding")
    assert len(a) == 4 and all(
        np.array_equal(x.inputs, y.inputs) for x, y in zip(a, b, strict=True)
    )
    rows = np.concatenate([np.asarray(x.inputs).reshape(500, -1) for x in a])
    assert len(np.unique(rows, axis=0)) == 2000  # every chunk drawn from a key of its own


def test_copy_criteria_read_the_recall_steps():
    import jax
    import jax.numpy as jnp

    from rnncells.tasks import get_task

    for name in ("copy", "variable_copy"):
        task = get_task(name, T=12)
        batch = task.make_batch(jax.random.PRNGKey(1), 6)
        perfect = jax.nn.one_hot(batch.targets, 10) * 20.0
        assert bool(jnp.all(science.CRITERIA[name][1](perfect, batch)))
        # One recalled symbol wrong in sequence 0: only that sequence fails.
        recall = np.flatnonzero(np.asarray(batch.targets[0]))  # data symbols are 1..8
        wrong = np.asarray(batch.targets).copy()
        wrong[0, recall[3]] = wrong[0, recall[3]] % 8 + 1
        passes = np.asarray(science.CRITERIA[name][1](jax.nn.one_hot(wrong, 10) * 20.0, batch))
        assert passes.tolist() == [False] + [True] * 5
        ys = science.constant_outputs(name, task, batch)
        assert float(task.metric(ys, batch)["loss"]) == pytest.approx(task.baseline_loss, rel=1e-5)


def test_steps_to_solve_reads_each_seed_from_the_eval_log(tmp_path):
    config = tiny_row(num_steps=100).make_config()
    config.num_seeds = 3
    records = [
        {"step": 50, "loss_per_seed": [0.2, 0.005, 0.2], "success_rate_per_seed": [0, 1, 0]},
        # Where a time limit cut the run: not a scheduled evaluation, so not counted.
        {"step": 75, "loss_per_seed": [0.001, 0.004, 0.001], "success_rate_per_seed": [1, 1, 1]},
        {"step": 100, "loss_per_seed": [0.009, 0.004, 0.2], "success_rate_per_seed": [0, 1, 0]},
    ]
    with open(tmp_path / "eval.jsonl", "w") as file:
        file.writelines(json.dumps(r) + "\n" for r in records)
    assert science.steps_to_solve(config, str(tmp_path)) == [100, 50, None]
    assert science.eval_curve(config, str(tmp_path))["step"] == [50, 100]
    assert science.missing_evaluations(config, str(tmp_path), 100) == []
    # A lost record is named (its seed's steps to solve would read a later evaluation).
    with open(tmp_path / "eval.jsonl", "w") as file:
        file.writelines(json.dumps(r) + "\n" for r in records[1:])
    assert science.missing_evaluations(config, str(tmp_path), 100) == [50]
    assert science.steps_to_solve(config, str(tmp_path)) == [100, 100, None]


def test_seconds_to_solve_add_the_chunks_times(tmp_path):
    config = tiny_row(num_steps=100).make_config()
    records = [{"step": s, "steps_per_sec": 10.0 if s <= 50 else 5.0} for s in range(1, 101)]
    with open(tmp_path / "metrics.jsonl", "w") as file:
        file.writelines(json.dumps(r) + "\n" for r in records)
    seconds = science.seconds_to_solve(config, str(tmp_path), [50, 100, None])
    assert seconds[0] == pytest.approx(5.0) and seconds[1] == pytest.approx(15.0)
    assert seconds[2] is None


def test_digits_linear_baselines_are_what_the_pixels_alone_give():
    base = science.digits_linear_baselines()
    for order in ("sequential", "permuted"):
        scores = [base[order][str(k)] for k in science.DIGITS_LAST_PIXELS]
        assert scores == sorted(scores)  # more pixels, no worse
        assert 0.95 < scores[-1] <= 1.0  # all 64 pixels: about 0.98
        assert 0.8 < base[order]["32"] < 0.95  # the last 32 alone: 0.87-0.90


# --- tables ----------------------------------------------------------------------------------


def fake_result(losses, solved, constant=0.1667):
    n = len(losses)
    return {
        "test": {
            "per_seed": {
                "loss": losses,
                "solved": solved,
                "criterion_all": [False] * n,
                "criterion_fraction": [0.5] * n,
            },
            "constant_loss": constant,
        }
    }


def test_outcome_and_agreement():
    row = tiny_row()
    assert report.outcome(fake_result([0.001] * 5, [True] * 5)) == "solves"
    beats = fake_result([0.05, 0.06, 0.04, 0.05, 0.07], [False] * 5)
    assert report.outcome(beats) == "beats the baseline"
    mixed = fake_result([0.17, 0.16, 0.17, 0.01, 0.17], [False] * 5)
    assert report.outcome(mixed) == "mixed: 1/5 below half"
    # 0.3% under the constant predictor is not beating it.
    assert report.outcome(fake_result([0.166] * 5, [False] * 5)) == "fails"
    assert report.agree(row, "solves") == "yes"
    assert report.agree(row, "fails") == "no"
    assert report.agree(row, "mixed: 1/5 below half") == "partly"
    worse = science.Run("ablation", "x", "configs/adding.py", (), "x", expect="worse")
    same = science.Run("ablation", "x", "configs/adding.py", (), "x", expect="same")
    assert report.agree(worse, "fails", (0.01, 0.5)) == "yes"
    assert report.agree(worse, "fails", (0.01, -0.5)) == "no"  # better, not worse
    assert report.agree(worse, "fails", (0.2, 0.5)) == "no"
    assert report.agree(same, "fails", (0.2, 0.5)).startswith("consistent")
    assert report.agree(same, "fails", (0.01, 0.5)) == "no"
    assert report.agree(same, "fails", None) == "-"
    beat_row = science.Run("adding", "x", "configs/adding.py", (), "x", expect="beat")
    assert report.agree(beat_row, "solves") == "yes (better)"
    assert report.agree(science.Run("a", "x", "configs/adding.py", (), "x"), "fails") == "-"


def test_report_from_json_alone(tiny_run, tmp_path, monkeypatch):
    results = tmp_path / "results" / "science"
    row = tiny_row()
    monkeypatch.setitem(science.STUDIES, "adding", lambda: [row])
    (results / "adding").mkdir(parents=True)
    shutil.copy(tiny_run[1], results / "adding" / f"{row.name}.json")
    readme = tmp_path / "results" / "README.md"
    readme.write_text("# Reproductions\n\nolder sections\n")
    written = report.write_all(str(results))
    text = readme.read_text()
    assert text.startswith("# Reproductions\n\n" + report.BEGIN)
    assert "older sections" in text
    assert "adding_T20_tiny.json" in text and "pending" in text  # copy and digits rows
    assert os.path.join(str(results), "adding", "README.md") in written
    study = (results / "adding" / "README.md").read_text()
    assert "python -m experiments.science --study=adding --where=cpu" in study
    # Rebuilding again replaces the block instead of adding a second one.
    report.write_all(str(results))
    assert readme.read_text().count(report.BEGIN) == 1


def test_committed_summary_matches_committed_json():
    readme = os.path.join("experiments", "results", "README.md")
    with open(readme, encoding="utf-8") as file:
        text = file.read()
    if report.BEGIN not in text:
        pytest.fail("experiments/results/README.md has no science summary")
    assert report.summary_table(science.RESULTS) in text, (
        "the committed summary table differs from what the committed JSON gives: run "
        "python -m experiments.science --report"
    )


def test_train_flops_counted_by_hand():
    from rnncells.tasks import get_task

    by_name = {row.name: row for row in science.all_rows()}
    config = by_name["adding_T100_lstm"].make_config()
    task = get_task("adding", T=100)
    # LSTM, D=2, H=32, O=1, B=32, T=100: 3 * 32 * 100 * (2*4*32*34 + 2*32*1)
    assert science.train_flops(config, task) == 84_172_800
    gru = by_name["adding_T100_gru"].make_config()
    assert science.train_flops(gru, task) == 3 * 32 * 100 * (2 * 3 * 32 * 34 + 2 * 32)


def test_equal_parameter_grus_have_about_the_lstms_parameters():
    import jax

    from rnncells.tasks import get_task
    from rnncells.training.model import model_init

    def count(row):
        c = row.make_config()
        task = get_task(c.task.name, **dict(c.task.kwargs))
        params = model_init(
            jax.random.PRNGKey(0),
            cell=c.model.cell,
            input_size=task.input_size,
            output_size=task.output_size,
            hidden_size=c.model.hidden_size,
        )
        return sum(p.size for p in jax.tree.leaves(params))

    by_name = {row.name: row for row in science.all_rows()}
    for lstm, gru, gru_equal in science.COST_ROWS:
        n_lstm, n_gru, n_equal = (count(by_name[n]) for n in (lstm, gru, gru_equal))
        assert n_gru < 0.8 * n_lstm
        assert abs(n_equal - n_lstm) / n_lstm < 0.02, (lstm, n_lstm, n_equal)


def test_cost_table_from_a_cost_json(tmp_path):
    rows = {}
    for names in science.COST_ROWS:
        for k, name in enumerate(names):
            rows[name] = {
                "cell": "lstm",
                "hidden_size": 32,
                "params": 100 + k,
                "train_flops": 1e6,
                "seconds": [0.01 * (k + 1)] * 3,
                "median_s_per_step": 0.01 * (k + 1),
            }
    cost = {"device": "cpu", "rows": rows, "load_average_before": [1, 1, 1]}
    cost["load_average_after"] = [1, 1, 1]
    (tmp_path / "cost.json").write_text(json.dumps(cost))
    text = report.cost_table(str(tmp_path))
    assert text.count("## ") == len(science.COST_ROWS)
    assert "| 2.00 |" in text and "pending" in text  # the time ratio; rows not run here
    assert report.cost_table(str(tmp_path / "none")) is None


def test_paired_tests_pair_each_row_with_its_reference(tmp_path):
    copy_rows = {row.name: row for row in science.all_rows("copy")}
    members = [r for r in copy_rows.values() if r.name.startswith("copy_T100_")]
    ref = report.reference_for
    assert ref(copy_rows["copy_T100_lstm_b0_rmsprop"], members).name == (
        "copy_T100_lstm_chrono_rmsprop"
    )
    assert ref(copy_rows["copy_T100_lstm_b1_adam"], members).name == "copy_T100_lstm_chrono_adam"
    assert ref(copy_rows["copy_T100_lstm_chrono_adam"], members).name == (
        "copy_T100_lstm_chrono_rmsprop"
    )
    assert ref(copy_rows["copy_T100_lstm_chrono_rmsprop"], members) is None
    # Two rows written as JSON: the b0 row's loss is 10x the chrono row's, seed by seed.
    results = tmp_path / "science"
    (results / "copy").mkdir(parents=True)
    base = np.array([0.01, 0.02, 0.015, 0.03, 0.012])
    for name, losses in (
        ("copy_T100_lstm_chrono_rmsprop", base),
        ("copy_T100_lstm_b0_rmsprop", base * 10 * [1, 1.1, 0.9, 1, 1.05]),
    ):
        (results / "copy" / f"{name}.json").write_text(
            json.dumps({"test": {"per_seed": {"loss": list(losses)}}})
        )
    tests = report.paired_tests("copy", str(results))
    assert set(tests) == {"copy_T100_lstm_b0_rmsprop"}
    p, d = tests["copy_T100_lstm_b0_rmsprop"]
    assert p < 1e-4 and d == pytest.approx(1.0, abs=0.05)


def test_learning_rate_study_picks_each_cells_rate_on_held_out_loss(tmp_path):
    # Held-out loss falls with the rate index for the GRU and rises for the LSTMs; the
    # test losses disagree on purpose (selection must not read them).
    rates = [rate for rate, _, _ in science.LR_GRID]
    for cell, _, _ in science.LR_CELLS:
        for k, rate in enumerate(rates):
            held = 10.0 ** (-k if cell == "gru" else k - 6)
            test = {"gru": 1e-3, "lstm": 1e-4, "lstm_chrono": 1e-5}[cell] * (1 + 0.1 * k)
            seeds = [1.0, 1.1, 0.9, 1.05, 0.95]
            result = {
                "eval_curve": {"loss_per_seed": [[1.0] * 5, [held * f for f in seeds]]},
                "test": {"per_seed": {"loss": [test * f for f in seeds[:: 1 if k else -1]]}},
                "steps_to_solve": [300, 200, 400, 300, 300] if cell == "gru" else [900] * 5,
            }
            path = tmp_path / "lr" / f"lr_T200_{cell}_{rate}.json"
            path.parent.mkdir(exist_ok=True)
            path.write_text(json.dumps(result))
            if cell == "lstm_chrono" and k == 1:
                break  # chrono: two rates run so far
    best = report.best_rates(str(tmp_path))
    assert best["gru"]["best"] == rates[-1] and best["gru"]["complete"]
    assert best["lstm"]["best"] == rates[0]
    assert best["lstm_chrono"]["best"] == rates[0] and not best["lstm_chrono"]["complete"]
    lines = report.best_rates_section(str(tmp_path))
    assert any("waits for every rate" in line for line in lines)
    assert sum("pending" in line for line in lines) == 1  # chrono's row lists its pending rates
    del best["lstm_chrono"]
    tests = report.best_rate_tests(str(tmp_path), best)
    ((a, b, d, p),) = tests
    assert (a, b) == ("gru", "lstm")
    last = 1 + 0.1 * (len(rates) - 1)  # the GRU's test loss factor at its best (last) rate
    assert d == pytest.approx(np.log10(1e-3 * last) - np.log10(1e-4 * 1.0))
    assert p < 1e-3  # a constant shift in log10 over 5 seeds
    # The verdict paragraph, from the JSON and cost.json alone.
    cost = {
        f"adding_T200_{c}": {"params": n, "train_flops": f, "median_s_per_step": sec}
        for c, n, f, sec in (("gru", 3, 6.0, 0.004), ("lstm", 4, 8.0, 0.005))
    }
    (tmp_path / "cost.json").write_text(json.dumps({"rows": cost}))
    (text,) = report.verdict(str(tmp_path), best, tests)
    assert "GRU RMSProp 1e-3, LSTM (b_f = 1) Adam 1e-3" in text
    assert f"{10 * last:.1f}x higher than the LSTM (b_f = 1)'s" in text
    assert "0.75x the LSTM's parameters (3 against 4) and 0.75x its FLOPs" in text
    assert "0.80x its CPU time per step (4.00 against 5.00 ms" in text
    assert "GRU 300 (1.2 s), LSTM (b_f = 1) 900 (4.5 s)" in text
    assert "holds only where the table above shows no significant difference" in text
    assert "grid's largest" not in text  # no best rate at the largest Adam rate here


def test_a_row_that_diverges_is_recorded_and_never_picked(tmp_path):
    """A row whose loss becomes non-finite writes a JSON that says so (no test scores);
    the tables show it as diverged, and the lr study never picks that rate."""
    row = tiny_row(**{"optim.learning_rate": 1e30, "num_steps": 50, "eval_every": 25})
    path = science.train_and_score(row, str(tmp_path / "runs"), str(tmp_path / "res"))
    result = read_json(path)
    assert result["test"] is None and result["diverged"].startswith("loss became")
    assert "training stopped" not in result["diverged"]  # no local paths
    assert report.load(str(tmp_path / "res"), row) is None
    assert report.diverged(str(tmp_path / "res"), row) == result["diverged"]
    # In the lr study: the GRU's largest rate diverged, the others ran.
    rates = [rate for rate, _, _ in science.LR_GRID]
    lr = {r.name: r for r in science.all_rows("lr")}
    for k, rate in enumerate(rates):
        name = f"lr_T200_gru_{rate}"
        out = tmp_path / "lr" / "lr" / f"{name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        if rate == "adam1e-1":
            out.write_text(json.dumps({"diverged": "loss became nan at step 7 (seed 3)"}))
            continue
        held = [10.0 ** -(k + 1)] * 5
        out.write_text(
            json.dumps(
                {
                    "eval_curve": {"loss_per_seed": [[1.0] * 5, held]},
                    "test": {"per_seed": {"loss": held}},
                    "steps_to_solve": [100] * 5,
                }
            )
        )
    assert report.diverged(str(tmp_path / "lr"), lr["lr_T200_gru_adam1e-1"])
    best = report.best_rates(str(tmp_path / "lr"))["gru"]
    assert best["complete"] and best["held_out"]["adam1e-1"] == float("inf")
    assert best["best"] == max((r for r in rates if r != "adam1e-1"), key=lambda r: rates.index(r))
    lines = report.best_rates_section(str(tmp_path / "lr"))
    assert any("| GRU |" in line and "diverged" in line for line in lines)
