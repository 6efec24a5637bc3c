"""Tables and plots of the science studies, rebuilt from their committed JSON alone.

    python -m experiments.science --report

writes the summary table at the head of ``experiments/results/README.md`` (between the
``science`` markers), one ``README.md`` per study under ``experiments/results/science/``
(per-seed values, steps to solve, paired tests) and the studies' plots. A row with no JSON
yet is listed as pending with the command that makes it.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import defaultdict
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.science import stats, studies  # noqa: E402

BEGIN, END = "<!-- science:begin -->", "<!-- science:end -->"
GPU_SCRIPT = "experiments/gpu_science.sh"


def load(results: str, row: studies.Run) -> dict[str, Any] | None:
    """The JSON of ``row`` under ``results``, None when it has not run yet or diverged
    (``diverged``)."""
    result = _load_any(results, row)
    return None if result is None or result.get("diverged") else result


def _load_any(results: str, row: studies.Run) -> dict[str, Any] | None:
    path = os.path.join(results, row.study, f"{row.name}.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def diverged(results: str, row: studies.Run) -> str | None:
    """The training loop's message where ``row``'s loss became NaN or infinite (the run
    stopped there, with no test scores), else None."""
    result = _load_any(results, row)
    return None if result is None else result.get("diverged")


def _g(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.3g}"


def interval(values) -> str:
    """``mean [low, high]``: the mean and its Student-t 95% interval."""
    mean, low, high = stats.t_interval(values)
    return f"{_g(mean)} [{_g(low)}, {_g(high)}]"


BEAT_FRACTION = 0.5
"""A seed beats the baseline when its test loss is under this fraction of the constant
predictor's on the same sequences (a loss 0.3% under it is no memory)."""


def outcome(result: dict[str, Any]) -> str:
    """Seed by seed: ``solves`` (every seed meets the task's ``solved`` on the test set),
    ``beats the baseline`` (every seed's loss is under `BEAT_FRACTION` of the constant
    predictor's on the same sequences), ``fails`` (no seed's is), else ``mixed: k/n
    below half`` with k the seeds whose loss is."""
    test = result["test"]
    per = test["per_seed"]
    if all(per["solved"]):
        return "solves"
    below = sum(v < BEAT_FRACTION * test["constant_loss"] for v in per["loss"])
    if below == len(per["loss"]):
        return "beats the baseline"
    if below == 0:
        return "fails"
    return f"mixed: {below}/{len(per['loss'])} below half"


def agree(row: studies.Run, observed: str, comparison: tuple[float, float] | None = None) -> str:
    """Whether ``observed`` matches the papers' outcome of ``row`` ("-" where none).

    For ``expect`` "worse" or "same" the verdict reads ``comparison``, ``(p, d)`` of the
    row's paired test against its reference (`paired_tests`): "worse" agrees when
    p < 0.05 and the row's log loss is higher (d > 0); for "same", 5 seeds cannot show
    equality, so the verdict is "consistent (no significant difference)" when p >= 0.05
    and "no" otherwise. A ``mixed`` outcome agrees only "partly" with any claim.
    """
    if row.expect is None:
        return "-"
    if row.expect in ("worse", "same"):
        if comparison is None or math.isnan(comparison[0]):
            return "-"
        p, d = comparison
        significant = p < 0.05
        if row.expect == "same":
            return "no" if significant else "consistent (no significant difference)"
        return "yes" if significant and d > 0 else "no"
    if observed.startswith("mixed"):
        return "partly"
    if row.expect == "beat" and observed == "solves":
        return "yes (better)"
    wanted = {"solve": "solves", "beat": "beats the baseline", "fail": "fails"}[row.expect]
    return "yes" if observed == wanted else "no"


def _T(row: studies.Run) -> str:
    config = row.make_config()
    T = config.task.kwargs.get("T")
    if config.task.name == "digits":
        return "permuted" if config.task.kwargs.get("permute") else "sequential"
    return str(T)


def summary_table(results: str, link_prefix: str = "science") -> str:
    """The lead table: one line per row of every study (pending rows included)."""
    head = [
        "task",
        "T",
        "cell",
        "test loss, mean [95% CI]",
        "constant predictor",
        "solved",
        "per-sequence criterion",
        "papers",
        "agree?",
        "result",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    tests = {k: v for study in studies.STUDIES for k, v in paired_tests(study, results).items()}
    for row in studies.all_rows():
        result = load(results, row)
        task = row.value("task.name")
        if result is None and diverged(results, row):
            lines.append(
                f"| {task} | {_T(row)} | {row.label} | diverged: {diverged(results, row)} | | | | "
                f"{row.paper or '-'} | | `{row.command()}` |"
            )
            continue
        if result is None:
            pending = "GPU script" if row.where == "gpu" else "CPU"
            lines.append(
                f"| {task} | {_T(row)} | {row.label} | pending ({pending}) | | | | "
                f"{row.paper or '-'} | | `{row.command()}` |"
            )
            continue
        test = result["test"]
        per = test["per_seed"]
        n = len(per["loss"])
        crit = f"{sum(per['criterion_all'])}/{n} all; {np.mean(per['criterion_fraction']):.4f}"
        observed = outcome(result)
        link = f"[{row.name}]({link_prefix}/{row.study}/{row.name}.json)"
        lines.append(
            f"| {task} | {_T(row)} | {row.label} | {interval(per['loss'])} | "
            f"{test['constant_loss']:.4f} | {sum(per['solved'])}/{n} | {crit} | "
            f"{row.paper or '-'} | {agree(row, observed, tests.get(row.name))} ({observed}) | "
            f"{link} |"
        )
    return "\n".join(lines) + "\n"


FOOTNOTE = """\
How to read it. Each row: 5 seeds trained at once (rows with the same seed index share
the data stream), every row for its whole fixed step budget (no early stop; the study's
README gives the settings), then scored on 10,000 test sequences drawn from a key of
their own, the same for every row of a task and T (digits: the fixed 297-image test
split, all the data set holds). *test loss*: mean over seeds with a two-sided Student-t
95% interval (4 degrees of freedom). *constant predictor*: the best memoryless
predictor's loss on the same sequences (adding: always 1, analytic 1/6; copy:
10 ln 8 / (T + 20); variable copy: ln 8; digits: ln 10). *solved*: seeds meeting the
project's criterion on the test set (adding MSE < 0.01; copy >= 99% of symbols; digits
accuracy >= 0.9). *per-sequence criterion*: seeds for which every test sequence meets it,
then the mean fraction that does (adding: Hochreiter & Schmidhuber's |error| < 0.04;
copy: all 10 symbols recalled; digits: label right). *agree?*: the papers' outcome
against the observed one, judged seed by seed: *solves* (every seed solved), *beats the
baseline* (every seed under half the constant predictor's loss), *fails* (no seed
under half of it), *mixed: k/5 below half*; Greff et al.'s "worse" is a paired t-test on log10
loss against the vanilla LSTM, p < 0.05 after Holm's adjustment over the rows of its
table that have run (p-values move as pending rows land), and their "no significant
change" can only be *consistent* with 5 seeds, not shown. *pending*: not run yet; the
command (or `experiments/gpu_science.sh` for GPU rows) makes it. Digits (T=64) is a
short-range sanity task, not a long-dependency one: logistic regression on the 64 pixels
reaches about 0.98 test accuracy, on the last 32 alone 0.87-0.90
(`science/digits/README.md`).
"""


def _settings(members: list[studies.Run]) -> str:
    """The settings the rows share; a setting that differs between them is named as per
    row (each row's label says its own)."""
    configs = [row.make_config() for row in members]

    def one(get, text):
        values = {get(c) for c in configs}
        return text(configs[0]) if len(values) == 1 else None

    c = configs[0]
    parts = [
        f"config `{members[0].config}`" if len({r.config for r in members}) == 1 else None,
        one(lambda c: c.model.hidden_size, lambda c: f"{c.model.hidden_size} units"),
        one(lambda c: c.batch_size, lambda c: f"batch {c.batch_size}"),
        one(
            lambda c: (c.optim.optimizer, c.optim.learning_rate, c.optim.schedule),
            lambda c: f"{c.optim.optimizer} {c.optim.learning_rate:g} ({c.optim.schedule})",
        )
        or "optimiser per row (see the label)",
        f"clipping {c.optim.clip_norm:g}",
        one(lambda c: c.num_steps, lambda c: f"{c.num_steps} steps, no early stop"),
        one(
            lambda c: c.eval_every,
            lambda c: f"evaluated every {c.eval_every} steps (the resolution of steps to solve)",
        )
        or "evaluation interval per row",
    ]
    return ", ".join(p for p in parts if p)


def _versus(row: studies.Run, members: list[studies.Run], tests: dict) -> str:
    ref = reference_for(row, members)
    if ref is None or row.name not in tests:
        return "reference" if ref is None and row.study in studies.REFERENCE else "-"
    p, d = tests[row.name]
    way = "higher" if d > 0 else "lower"
    return f"{way} than {ref.label}, p = {p:.2g}"


def study_readme(study: str, results: str) -> str:
    """The study's README: commands, then per (task, T) group every row's per-seed
    figures and its paired test against its reference row (`reference_for`)."""
    out = [f"# Study: {study}", ""]
    out += [
        "Made by (CPU rows, then the GPU rows; a rerun skips rows whose JSON exists):",
        "",
        f"    python -m experiments.science --study={study} --where=cpu",
        f"    bash {GPU_SCRIPT} OUT_DIR   # the rows marked gpu",
        "",
        "Tables and plots (from the JSON here): `python -m experiments.science --report`. "
        f"{studies.NUM_SEEDS} seeds (0 to {studies.NUM_SEEDS - 1}) per row; each row's "
        "whole config is in its JSON under `config`. *paired test*: the row's log10 test "
        "loss against its reference's, seed by seed (same data stream), two-sided paired "
        "t-test, Holm-adjusted over the rows of the table. *diverged*: a seed's loss became "
        "NaN or infinite and the run stopped there (the 5 seeds train as one), so the row has "
        "no test scores.",
        "",
    ]
    if study == "ablation":
        out += [
            "One fixed setting per task, 5 seeds: every variant trains with the same "
            "optimiser, rate and budget as the vanilla LSTM. Greff et al. (2017) searched "
            "each variant's hyper-parameters on its own (a random search of 200 trials, on "
            "TIMIT, IAM Online and JSB Chorales; NIG, NOG and NIAF were worse on some data "
            'sets only), so a "worse" here says a variant is worse at this '
            'setting, not at its best one, and "consistent" says no difference was seen '
            "with 5 seeds.",
            "",
        ]
    tests = paired_tests(study, results)
    for (task, T), members in groups(study).items():
        out += [f"## {task}, {T}", "", f"Settings: {_settings(members)}.", ""]
        head = [
            "cell",
            "where",
            "steps run",
            "test loss mean [95% CI]",
            "geometric mean [95% CI]",
            "per seed",
            "solved",
            "steps to solve",
            "criterion all / mean fraction",
            "accuracy",
            "paired test",
        ]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        done = []
        for row in members:
            result = load(results, row)
            if result is None and diverged(results, row):
                out.append(
                    f"| {row.label} | {row.where} | diverged: {diverged(results, row)} |" + " |" * 8
                )
                continue
            if result is None:
                out.append(f"| {row.label} | {row.where} | pending: `{row.command()}` |" + " |" * 8)
                continue
            done.append(result)
            per = result["test"]["per_seed"]
            n = len(per["loss"])
            geo = stats.log_t_interval(per["loss"])
            acc = interval(per["accuracy"]) if "accuracy" in per else "-"
            solve_steps = ", ".join("-" if s is None else str(s) for s in result["steps_to_solve"])
            if result.get("missing_evaluations"):
                lost = ", ".join(map(str, result["missing_evaluations"]))
                solve_steps += f" (evaluations lost: {lost})"
            out.append(
                f"| {row.label} | {row.where} | {result['steps_run']} | {interval(per['loss'])} | "
                f"{_g(geo[0])} [{_g(geo[1])}, {_g(geo[2])}] | "
                f"{', '.join(f'{v:.3g}' for v in per['loss'])} | {sum(per['solved'])}/{n} | "
                f"{solve_steps} | {sum(per['criterion_all'])}/{n}; "
                f"{np.mean(per['criterion_fraction']):.4f} | {acc} | "
                f"{_versus(row, members, tests)} |"
            )
        if done:
            test = done[0]["test"]
            out += [
                "",
                f"Test set: {test['num_sequences']} sequences; constant predictor "
                f"{test['constant_loss']:.4f} on them (analytic {test['analytic_baseline']:.4f}); "
                f"criterion: {test['criterion']}. Devices: "
                f"{', '.join(sorted({r['device'] for r in done}))}.",
            ]
        out.append("")
    if study == "digits":
        out += digits_baselines(results)
    if study == "lr":
        out += best_rates_section(results)
    return "\n".join(out)


def best_rates(results: str) -> dict[str, dict[str, Any]]:
    """Per cell of the learning-rate study: every finished rate's held-out loss (the
    geometric mean over seeds of the in-training evaluation at the last step: its own
    key, never the test set) and the rate with the lowest, ``best``. A cell with no
    finished row is left out; ``complete`` says whether every rate of it has run."""
    out: dict[str, dict[str, Any]] = {}
    for cell, cell_label, _ in studies.LR_CELLS:
        held_out: dict[str, float] = {}
        for rate, _, _ in studies.LR_GRID:
            row = next(r for r in studies.all_rows("lr") if r.name == f"lr_T200_{cell}_{rate}")
            if diverged(results, row):  # a rate that diverged is never the best
                held_out[rate] = math.inf
                continue
            result = load(results, row)
            if result is None:
                continue
            last = result["eval_curve"]["loss_per_seed"][-1]
            held_out[rate] = float(10 ** np.mean(np.log10(np.maximum(last, stats.LOG_FLOOR))))
        if held_out and min(held_out.values()) < math.inf:  # not every rate diverged
            best = min(held_out, key=held_out.__getitem__)
            out[cell] = {
                "label": cell_label,
                "held_out": held_out,
                "best": best,
                "row": f"lr_T200_{cell}_{best}",
                "complete": len(held_out) == len(studies.LR_GRID),
            }
    return out


def best_rate_tests(results: str, best: dict[str, dict[str, Any]]) -> list[tuple]:
    """Every pair of cells at their best rates: (cell a, cell b, mean log10 test-loss
    difference a - b, paired t-test p Holm-adjusted over the pairs)."""
    by_name = {r.name: r for r in studies.all_rows("lr")}
    losses = {
        cell: load(results, by_name[b["row"]])["test"]["per_seed"]["loss"]  # type: ignore[index]
        for cell, b in best.items()
    }
    pairs = [(a, b) for i, a in enumerate(losses) for b in list(losses)[i + 1 :]]
    raw = [stats.paired_t_test(losses[a], losses[b]) for a, b in pairs]
    diffs = [float(np.mean(np.log10(losses[a]) - np.log10(losses[b]))) for a, b in pairs]
    return [(a, b, d, p) for (a, b), d, p in zip(pairs, diffs, stats.holm(raw), strict=True)]


def best_rates_section(results: str) -> list[str]:
    """The learning-rate study's selection and comparison, as README lines."""
    best = best_rates(results)
    rates = [label for _, label, _ in studies.LR_GRID]
    out = [
        "## Each cell at its best rate",
        "",
        "Held-out loss at the last step (geometric mean over the 5 seeds of the in-training "
        "evaluation: 1000 sequences of its own key, not the test set); the lowest picks "
        "the cell's rate (**bold**).",
        "",
        "| cell | " + " | ".join(rates) + " |",
        "|---|" + "---|" * len(rates),
    ]
    for cell, cell_label, _ in studies.LR_CELLS:
        held = best.get(cell, {}).get("held_out", {})
        cells = []
        for rate, _, _ in studies.LR_GRID:
            if rate not in held:
                text = "pending"
            else:
                text = "diverged" if held[rate] == math.inf else _g(held[rate])
            cells.append(f"**{text}**" if best.get(cell, {}).get("best") == rate else text)
        out.append(f"| {cell_label} | " + " | ".join(cells) + " |")
    if len(best) < 2 or not all(b["complete"] for b in best.values()):
        return [*out, "", "The comparison at the best rates waits for every rate to run.", ""]
    out += [
        "",
        "At those rates, the test loss (10,000 sequences), paired by seed: mean log10 "
        "difference and the paired t-test's p, Holm-adjusted over the pairs.",
        "",
        "| cells | mean log10(a) - log10(b) | p (Holm) |",
        "|---|---|---|",
    ]
    tests = best_rate_tests(results, best)
    for a, b, d, p in tests:
        out.append(f"| {best[a]['label']} vs {best[b]['label']} | {d:+.3f} | {p:.2g} |")
    return [*out, "", *verdict(results, best, tests), ""]


def _cost_rows(results: str) -> dict[str, dict[str, Any]]:
    path = os.path.join(results, "cost.json")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as file:
        return json.load(file)["rows"]


def verdict(results: str, best: dict[str, dict[str, Any]], tests: list[tuple]) -> list[str]:
    """The seed's claim, "the GRU performs like the LSTM with less computation", judged in
    one paragraph from the learning-rate study's JSON and ``cost.json``: quality at each
    cell's best rate, parameters, FLOPs and CPU time per training step, and steps and
    seconds to solve."""
    by_name = {r.name: r for r in studies.all_rows("lr")}
    rates = {rate: label for rate, label, _ in studies.LR_GRID}
    cost = _cost_rows(results)
    gru_cost, lstm_cost = cost.get("adding_T200_gru"), cost.get("adding_T200_lstm")
    quality, significantly_lower = [], []
    for a, b, d, p in tests:
        if "gru" not in (a, b):
            continue
        other, diff = (b, d) if a == "gru" else (a, -d)
        factor = 10 ** abs(diff)
        significantly_lower.append(p < 0.05 and diff < 0)
        if p < 0.05:
            word = "lower" if diff < 0 else "higher"
            quality.append(
                f"{factor:.1f}x {word} than the {best[other]['label']}'s (paired p {p:.2g}, Holm)"
            )
        else:
            quality.append(
                f"not significantly different from the {best[other]['label']}'s "
                f"(a {factor:.1f}x {'lower' if diff < 0 else 'higher'} geometric mean, "
                f"paired p {p:.2g}, Holm)"
            )
    solve = {}
    for cell, b in best.items():
        steps = load(results, by_name[b["row"]])["steps_to_solve"]  # type: ignore[index]
        solve[cell] = float(np.median([s for s in steps if s is not None])) if all(steps) else None
    picked = ", ".join(f"{b['label']} {rates[b['best']]}" for b in best.values())
    largest = [rate for rate, _, _ in studies.LR_GRID if rate.startswith("adam")][-1]
    edge = [b["label"] for b in best.values() if b["best"] == largest]
    out = [
        '**Verdict on "the GRU performs like the LSTM with less computation"** (adding, '
        f"T = 200, 32 units, 5 seeds, 10,000 steps). Each cell at its best rate ({picked}): "
        f"the GRU's test loss is {'; '.join(quality)}."
    ]
    if gru_cost and lstm_cost:
        ms = {c: 1e3 * cost[f"adding_T200_{c}"]["median_s_per_step"] for c in ("gru", "lstm")}
        out.append(
            f"It has {gru_cost['params'] / lstm_cost['params']:.2f}x the LSTM's parameters "
            f"({gru_cost['params']} against {lstm_cost['params']}) and "
            f"{gru_cost['train_flops'] / lstm_cost['train_flops']:.2f}x its FLOPs per "
            f"training step, but takes {ms['gru'] / ms['lstm']:.2f}x its CPU time per step "
            f"({ms['gru']:.2f} against {ms['lstm']:.2f} ms, `cost.md`): at 32 units a step "
            "is bound by its per-step overheads, not by FLOPs."
        )
        times = []
        for cell, steps in solve.items():
            if steps is None:
                times.append(f"the {best[cell]['label']} did not solve with every seed")
                continue
            seconds = steps * ms["gru" if cell == "gru" else "lstm"] / 1e3
            times.append(f"{best[cell]['label']} {steps:.0f} ({seconds:.1f} s)")
        out.append(
            "Median steps to solve (evaluated every 100 steps) and seconds at that time per "
            f"step: {', '.join(times)}."
        )
    lower = all("lower" in q and "not significantly" not in q for q in quality)
    if lower:
        out.append(
            "So on this task the GRU does not merely perform like the LSTM: at every cell's "
            "best rate it reaches a lower loss and solves sooner, with fewer parameters and "
            'FLOPs; "less computation" holds in FLOPs and parameters, not in CPU time at '
            "this size."
        )
    else:
        out.append(
            'So "performs like the LSTM" holds only where the table above shows no '
            'significant difference; "less computation" holds in FLOPs and parameters, '
            "not in CPU time at this size."
        )
    if edge:
        out.append(
            f"The best rate of {', '.join(edge)} is the grid's largest Adam rate, so a larger "
            "one may do better still; the comparison is at the rates this grid holds."
        )
    return [" ".join(out)]


def digits_baselines(results: str) -> list[str]:
    """The digits study's linear baselines (``--digits_baselines``), as README lines."""
    path = os.path.join(results, "digits", "linear_baselines.json")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as file:
        base = json.load(file)
    ks = list(base["sequential"])
    out = [
        "## Linear baselines: a short-range task",
        "",
        "Sequential digits are 64 steps of one pixel each: no long dependency. Logistic "
        "regression on the last k pixels alone (no memory beyond k steps; "
        f"{base['model']}, the rows' training and test splits), test accuracy:",
        "",
        "| pixel order | " + " | ".join(f"last {k}" for k in ks) + " |",
        "|---|" + "---|" * len(ks),
    ]
    for order in ("sequential", "permuted"):
        out.append(f"| {order} | " + " | ".join(f"{base[order][k]:.3f}" for k in ks) + " |")
    out += [
        "",
        "Made by `python -m experiments.science --digits_baselines`. The RNN rows above are "
        "read against these: a row below the 64-pixel figure has not used all it saw.",
        "",
    ]
    return out


def reference_for(row: studies.Run, members: list[studies.Run]) -> studies.Run | None:
    """The row ``row`` is compared with in its (task, T) group, None for the reference
    itself: the study's `studies.REFERENCE` row; in the copy study, a standard init is
    compared with chrono under the same optimiser, and chrono with Adam with chrono with
    RMSProp."""
    if row.study == "copy":
        if "chrono" not in row.name:
            target = row.name.rsplit("_", 2)[0] + "_chrono_" + row.name.rsplit("_", 1)[1]
        elif row.name.endswith("_adam"):
            target = row.name[: -len("_adam")] + "_rmsprop"
        else:
            return None
        return next((r for r in members if r.name == target), None)
    label = studies.REFERENCE.get(row.study)
    found = next((r for r in members if r.label == label), None)
    return None if found is row else found


def groups(study: str) -> dict[tuple[str, str], list[studies.Run]]:
    """The study's rows by (task, T), in table order."""
    out: dict[tuple[str, str], list[studies.Run]] = defaultdict(list)
    for row in studies.all_rows(study):
        out[(row.value("task.name"), _T(row))].append(row)
    return out


def paired_tests(study: str, results: str) -> dict[str, tuple[float, float]]:
    """Per row with a reference and both results: ``(p, d)``, the paired t-test's p-value
    on log10 test loss (pairs: the same seed), Holm-adjusted over the rows of its (task,
    T) group, and ``d`` the mean of log10(row) - log10(reference)."""
    out = {}
    for members in groups(study).values():
        names, p_raw, diffs = [], [], []
        for row in members:
            ref = reference_for(row, members)
            a, b = load(results, row), load(results, ref) if ref else None
            if a is None or b is None:
                continue
            x, y = a["test"]["per_seed"]["loss"], b["test"]["per_seed"]["loss"]
            names.append(row.name)
            p_raw.append(stats.paired_t_test(x, y))
            diffs.append(float(np.mean(np.log10(x) - np.log10(y))))
        for name, p, d in zip(names, stats.holm(p_raw), diffs, strict=True):
            out[name] = (p, d)
    return out


def plot_test_loss_vs_T(study: str, results: str, path: str) -> bool:
    """Test loss against T per row label: geometric mean with its log-space t interval as a
    band, each seed as a dot, the constant predictor dashed; False when under two T."""
    series: dict[str, list] = defaultdict(list)
    constant: dict[int, float] = {}
    for row in studies.all_rows(study):
        result = load(results, row)
        if (
            result is None
            or result["T"] is None
            or row.value("task.name") != "copy"
            and study == "copy"
        ):
            continue
        loss = result["test"]["per_seed"]["loss"]
        series[row.label].append((result["T"], loss))
        constant[result["T"]] = result["test"]["constant_loss"]
    if len(constant) < 2:
        return False
    fig, ax = plt.subplots(figsize=(8.6, 4.2))
    for k, (name, points) in enumerate(sorted(series.items())):
        points.sort(key=lambda p: p[0])
        ts = np.array([t for t, _ in points], dtype=float)
        cis = np.array([stats.log_t_interval(v) for _, v in points])
        shift = 1.0 + 0.015 * (k - len(series) / 2)  # side by side, not on top
        (line,) = ax.plot(ts * shift, cis[:, 0], marker="o", ms=3, label=name)
        if len(points[0][1]) > 1:
            ax.fill_between(ts * shift, cis[:, 1], cis[:, 2], color=line.get_color(), alpha=0.15)
        for t, values in points:
            ax.scatter([t * shift] * len(values), values, s=6, color=line.get_color(), alpha=0.6)
    ct = sorted(constant)
    ax.plot(ct, [constant[t] for t in ct], "k--", lw=1, label="constant predictor")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(ct, [str(t) for t in ct])
    ax.minorticks_off()
    ax.set_xlabel("T")
    ax.set_ylabel("test loss (10,000 sequences)")
    ax.set_title(
        f"{study}: test loss against T\n(line: geometric mean over seeds; band: its 95% t "
        "interval in log space; dots: seeds)",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_digits(results: str, path: str) -> bool:
    """Test accuracy per cell, sequential against permuted: each seed a dot, the mean with
    its t interval as an error bar; False before any digits row has run."""
    points = defaultdict(dict)
    for row in studies.all_rows("digits"):
        result = load(results, row)
        if result is not None:
            points[row.label][_T(row)] = result["test"]["per_seed"]["accuracy"]
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    orders = ["sequential", "permuted"]
    width = 0.8 / len(points)
    for k, (label, by_order) in enumerate(sorted(points.items())):
        for j, order in enumerate(orders):
            if order not in by_order:
                continue
            x = j + (k - (len(points) - 1) / 2) * width
            values = by_order[order]
            mean, low, high = stats.t_interval(values)
            color = f"C{k}"
            ax.errorbar(
                [x],
                [mean],
                yerr=[[mean - low], [high - mean]],
                fmt="o",
                color=color,
                capsize=3,
                label=label if j == 0 or orders[0] not in by_order else None,
            )
            ax.scatter([x + width / 4] * len(values), values, s=6, color=color, alpha=0.6)
    ax.set_xticks(range(len(orders)), orders)
    ax.set_ylabel("test accuracy (297 images)")
    ax.set_title(
        "digits: test accuracy, pixel order sequential and permuted\n"
        "(point and bar: mean and 95% t interval over seeds; dots: seeds)",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def cost_table(results: str) -> str | None:
    """The GRU against the LSTM (`studies.COST_ROWS`): parameters, FLOPs and time of a
    training step from ``cost.json``, steps to solve and test loss from the rows' JSON;
    None before ``cost.json`` exists."""
    path = os.path.join(results, "cost.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as file:
        cost = json.load(file)
    by_name = {row.name: row for row in studies.all_rows()}
    out = [
        "# The GRU against the LSTM: cost and result",
        "",
        "Is the GRU 'like the LSTM with less computation'? Per task: the LSTM, the GRU of "
        "the same hidden size and the GRU of about the same parameter count. *params*: "
        "per model (cell and readout). *FLOPs*: matrix products of one training step of "
        "one seed, counted by hand (`experiments.science.train_flops`). *time*: median "
        f"of {len(next(iter(cost['rows'].values()))['seconds'])} timings of one training "
        f"step (one seed, the row's batch) on {cost['device']}, the rows of a task timed "
        "in turn (load average "
        f"{cost['load_average_before'][0]:.1f} before, {cost['load_average_after'][0]:.1f} "
        "after). *steps to solve*: per seed, the first evaluation at which it met the "
        "task's criterion ('-': not within the run). *test loss*: as in the summary.",
        "",
        "Made by `python -m experiments.science --cost` (timings) and the studies' runs.",
        "",
    ]
    for names in studies.COST_ROWS:
        rows = [by_name[n] for n in names]
        reference = cost["rows"][names[0]]
        out += [f"## {rows[0].value('task.name')}, {_T(rows[0])}", ""]
        head = [
            "cell",
            "hidden",
            "params",
            "FLOPs / step",
            "time / step",
            "time vs LSTM",
            "steps to solve",
            "test loss mean [95% CI]",
            "solved",
            "paired test",
        ]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        tests = paired_tests(rows[0].study, results)
        members = groups(rows[0].study)[(rows[0].value("task.name"), _T(rows[0]))]
        for row in rows:
            c = cost["rows"][row.name]
            result = load(results, row)
            if result is None:
                loss = solve = solved = "pending"
            else:
                per = result["test"]["per_seed"]
                loss = interval(per["loss"])
                solve = ", ".join("-" if v is None else str(v) for v in result["steps_to_solve"])
                solved = f"{sum(per['solved'])}/{len(per['solved'])}"
            out.append(
                f"| {row.label} | {c['hidden_size']} | {c['params']} | {c['train_flops']:.3g} | "
                f"{1e3 * c['median_s_per_step']:.2f} ms | "
                f"{c['median_s_per_step'] / reference['median_s_per_step']:.2f} | {solve} | "
                f"{loss} | {solved} | {_versus(row, members, tests)} |"
            )
        out.append("")
    return "\n".join(out)


PLOTS = {
    "loss_vs_T.png": lambda study, results, path: (
        study in ("adding", "copy") and plot_test_loss_vs_T(study, results, path)
    ),
    "accuracy.png": lambda study, results, path: study == "digits" and plot_digits(results, path),
}
"""Each study folder's plots: file name -> ``draw(study, results, path)``, False when the
study has no such plot or its JSON holds too little to draw it."""


def write_lead(readme: str, text: str) -> None:
    """Puts ``text`` between the science markers of ``readme`` (after its title the first
    time)."""
    with open(readme, encoding="utf-8") as file:
        content = file.read()
    block = f"{BEGIN}\n{text}{END}"
    if BEGIN in content:
        content = re.sub(
            re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, content, flags=re.S
        )
    else:
        title, _, rest = content.partition("\n")
        content = f"{title}\n\n{block}\n{rest}"
    with open(readme, "w", encoding="utf-8") as file:
        file.write(content)


def write_all(results: str = studies.RESULTS) -> list[str]:
    """Rebuilds every study README, plot and the lead table from the JSON in ``results``;
    returns the paths written."""
    written = []
    for study in studies.STUDIES:
        folder = os.path.join(results, study)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "README.md")
        with open(path, "w", encoding="utf-8") as file:
            file.write(study_readme(study, results))
        written.append(path)
        for name, draw in PLOTS.items():
            plot = os.path.join(folder, name)
            if draw(study, results, plot):
                written.append(plot)
            elif os.path.exists(plot):
                os.remove(plot)  # nothing to draw from the JSON here (any more)
    cost = cost_table(results)
    if cost is not None:
        path = os.path.join(results, "cost.md")
        with open(path, "w", encoding="utf-8") as file:
            file.write(cost)
        written.append(path)
    lead = (
        "## Summary: the long-dependency studies (5 seeds, 10,000 test sequences; digits: "
        "its 297-image test split)\n\n"
        "Rebuilt from the JSON under `science/` by `python -m experiments.science --report`; "
        "each study's README (`science/<study>/README.md`) has its commands, per-seed values, "
        "steps to solve and paired tests; `science/cost.md` sets the GRU against the LSTM "
        "(parameters, FLOPs, time per step, steps to solve).\n\n"
        + summary_table(results)
        + "\n"
        + FOOTNOTE
    )
    readme = os.path.join(os.path.dirname(results.rstrip("/")), "README.md")
    if os.path.exists(readme):
        write_lead(readme, lead)
        written.append(readme)
    return written
