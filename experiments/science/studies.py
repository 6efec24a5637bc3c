"""The studies' rows: a config file plus overrides per row, and what the papers found.

`STUDIES` gives every study's rows in table order; `all_rows` and `select` pick them by
study, machine kind or name. A row's resolved config (`Run.make_config`) runs `NUM_SEEDS`
seeds at once for its fixed step budget, never stopped early. `COST_ROWS` names the rows
the GRU-against-LSTM cost table compares.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable, Iterable
from typing import Any

RESULTS = os.path.join("experiments", "results", "science")
"""The folder of the per-row JSON results, ``<study>/<row>.json``."""
NUM_SEEDS = 5


@dataclasses.dataclass(frozen=True)
class Run:
    """One row of a study: a config file, its overrides, and what the papers found.

    Attributes:
        study: the study's name (the results subfolder).
        name: the row's name (its workdir and JSON file).
        config: the config file, e.g. ``configs/adding.py``.
        overrides: ``(dotted key, value)`` pairs applied to the file's config.
        label: the row's name in tables and plots, e.g. ``"LSTM (b_f = 1)"``.
        paper: the papers' outcome for this row, "" where they make no claim.
        expect: ``"solve"``, ``"beat"`` (beats the constant predictor) or ``"fail"``:
            the papers' outcome in the terms `outcome` measures; ``"worse"`` or
            ``"same"``: the papers' finding against the study's reference row (by the
            paired test); None where no claim.
        where: ``"cpu"`` or ``"gpu"``: which committed command trains the row.
    """

    study: str
    name: str
    config: str
    overrides: tuple[tuple[str, Any], ...]
    label: str
    paper: str = ""
    expect: str | None = None
    where: str = "cpu"

    def make_config(self):
        """The row's resolved config: the file's, `NUM_SEEDS` seeds, no early stop, then
        the overrides."""
        module = importlib.import_module(self.config[: -len(".py")].replace("/", "."))
        config = module.get_config()
        config.num_seeds = NUM_SEEDS
        config.seed = 0
        config.progress = False
        # Every row runs its whole budget: rows stopped early would be compared at
        # different step counts (and learning rates, under a decaying schedule).
        config.early_stop = False
        for key, value in self.overrides:
            node = config
            *parents, leaf = key.split(".")
            for part in parents:
                node = node[part]
            node[leaf] = value
        return config

    def value(self, key: str) -> Any:
        """The value of a dotted key in the row's config."""
        node = self.make_config()
        for part in key.split("."):
            node = node[part]
        return node

    def command(self) -> str:
        """The command that trains and scores this row alone."""
        return f"python -m experiments.science --study={self.study} --only={self.name}"


# --- the studies -------------------------------------------------------------------------

ADDING_T = (100, 200, 400, 750, 1000)
COPY_T = (100, 200, 500, 1000)


def _adding_rows() -> list[Run]:
    # (name, label, overrides, paper outcome per T: {T: (text, expect)}); the papers'
    # settings differ from these rows' (32 units, Adam 1e-2 cosine, 10,000 steps, batch
    # 32): Arjovsky et al. ran 128 units, RMSProp 1e-3, clipping 1, batch 20 (the
    # "arjovsky" rows); Le et al. SGD with clipping for about 10^6 iterations, at
    # T = 150/200/300/400 (no T=100).
    arj = "Arjovsky et al. 2016"
    cells = [
        (
            "rnn",
            "tanh RNN",
            (("model.cell", "rnn"),),
            {t: (f"never beats the baseline ({arj})", "fail") for t in (100, 200, 400, 750)},
        ),
        (
            "irnn",
            "IRNN (Adam 1e-4, budget-limited)",
            # Adam's first steps move every weight by about the learning rate, so V = I
            # gets a spectral radius above 1 that T steps raise to the power T: at the
            # others' 1e-2 a seed's loss became inf within 4 steps at T=200 and within
            # 2 at T=400; at 1e-3 a seed's loss reached 3.4e3 in the first 50 steps at
            # T=400; at 1e-4 the largest loss of the first 200 steps is 1.3. Le et al.'s
            # IRNN needed about 10^6 SGD iterations: 10,000 steps test a budget, not
            # their claim, so no outcome is compared.
            (("model.cell", "irnn"), ("optim.learning_rate", 1e-4)),
            {
                **{t: (f"never beats the baseline ({arj})", None) for t in (100, 750)},
                200: (f"solves after ~10^6 SGD steps (Le et al.); never beats it ({arj})", None),
                400: (f"solves, unverified (Le et al.); never beats the baseline ({arj})", None),
            },
        ),
        ("gru", "GRU", (("model.cell", "gru"),), {}),
        (
            "gru_h37",
            "GRU, 37 units (LSTM's parameters)",
            (("model.cell", "gru"), ("model.hidden_size", 37)),
            {},
        ),
        (
            "lstm",
            "LSTM (b_f = 1)",
            (("model.cell", "lstm"),),
            {
                **{
                    t: (f"beats the baseline convincingly ({arj})", "beat") for t in (100, 200, 400)
                },
                750: (f"beats the baseline, MSE not near 0 ({arj})", "beat"),
            },
        ),
        (
            "lstm_chrono",
            "LSTM (chrono)",
            (("model.cell", "lstm"), ("model.init", "chrono")),
            {},
        ),
    ]
    rows = []
    for T in ADDING_T:
        for name, label, overrides, papers in cells:
            text, expect = papers.get(T, ("", None))
            rows.append(
                Run(
                    study="adding",
                    name=f"adding_T{T}_{name}",
                    config="configs/adding.py",
                    overrides=(
                        ("task.kwargs.T", T),
                        ("num_steps", 10_000),
                        ("eval_every", 500),
                        ("checkpoint_every", 500),
                        ("eval_batch_size", 1000),
                        *overrides,
                    ),
                    label=label,
                    paper=text,
                    expect=expect,
                    # T = 750 and 1000: 14-19 min a row on 2 CPU cores (5 seeds, 32 units)
                    where="cpu",
                )
            )
    return rows


LR_GRID = (
    ("adam1e-3", "Adam 1e-3", (("optim.learning_rate", 1e-3),)),
    ("adam3e-3", "Adam 3e-3", (("optim.learning_rate", 3e-3),)),
    ("adam1e-2", "Adam 1e-2", ()),
    ("adam3e-2", "Adam 3e-2", (("optim.learning_rate", 3e-2),)),
    # Added once the GRU and both LSTMs picked 3e-2, then the grid's largest rate.
    ("adam1e-1", "Adam 1e-1", (("optim.learning_rate", 1e-1),)),
    (
        "rmsprop1e-3",
        "RMSProp 1e-3",
        (("optim.optimizer", "rmsprop"), ("optim.learning_rate", 1e-3)),
    ),
)
"""The learning-rate study's rates (adding T=200; configs/adding.py's cosine schedule
and clipping at 1 for all; RMSProp with decay 0.9 as Arjovsky et al.)."""

LR_CELLS = (
    ("gru", "GRU", (("model.cell", "gru"),)),
    ("lstm", "LSTM (b_f = 1)", (("model.cell", "lstm"),)),
    ("lstm_chrono", "LSTM (chrono)", (("model.cell", "lstm"), ("model.init", "chrono"))),
)


def _lr_rows() -> list[Run]:
    """Each cell at each rate of `LR_GRID` on adding T=200: a cell's best rate is chosen by
    its held-out loss in training (its own evaluation key, 1000 sequences), and the cells
    are compared at their best rates on the test set. Evaluations every 100 steps (1% of
    the budget) resolve the steps to solve."""
    rows = []
    for cell, cell_label, cell_overrides in LR_CELLS:
        for rate, rate_label, rate_overrides in LR_GRID:
            rows.append(
                Run(
                    study="lr",
                    name=f"lr_T200_{cell}_{rate}",
                    config="configs/adding.py",
                    overrides=(
                        ("task.kwargs.T", 200),
                        ("num_steps", 10_000),
                        ("eval_every", 100),
                        ("checkpoint_every", 500),
                        ("eval_batch_size", 1000),
                        *cell_overrides,
                        *rate_overrides,
                    ),
                    label=f"{cell_label}, {rate_label}",
                )
            )
    return rows


def _arjovsky_rows() -> list[Run]:
    """Arjovsky et al. 2016's own settings, as far as they are known: adding with 128
    units, RMSProp 1e-3 (decay 0.9), clipping at 1, batch 20, a constant rate; copy with
    a 40-unit LSTM (b_f = 0, b_f = 1, chrono) and a GRU of about its parameters (47
    units), RMSProp 1e-3, batch 20. 10,000 steps each. Their IRNN ran "with incredibly
    low learning rates", not given, so it has no row here."""
    arj = "Arjovsky et al. 2016"
    rmsprop = (
        ("optim.optimizer", "rmsprop"),
        ("optim.learning_rate", 1e-3),
        ("optim.rmsprop_decay", 0.9),
        ("optim.clip_norm", 1.0),
        ("optim.schedule", "constant"),
        ("batch_size", 20),
        ("num_steps", 10_000),
        ("eval_every", 100),
        ("checkpoint_every", 500),
        ("eval_batch_size", 1000),
    )
    rows = []
    adding_cells = (
        ("rnn", "tanh RNN", (("model.cell", "rnn"),), "never beats the baseline", "fail"),
        ("gru", "GRU", (("model.cell", "gru"),), "", None),
        ("lstm", "LSTM (b_f = 1)", (("model.cell", "lstm"),), "beats it convincingly", "beat"),
    )
    for T in (100, 200, 400, 750):
        for name, label, overrides, claim, expect in adding_cells:
            if name == "lstm" and T == 750:
                claim = "beats the baseline, MSE not near 0"
            rows.append(
                Run(
                    study="arjovsky",
                    name=f"arjovsky_adding_T{T}_{name}",
                    config="configs/adding.py",
                    overrides=(
                        ("task.kwargs.T", T),
                        ("model.hidden_size", 128),
                        *rmsprop,
                        *overrides,
                    ),
                    label=label,
                    paper=f"{claim} ({arj})" if claim else "",
                    expect=expect,
                )
            )
    copy_cells = (
        ("lstm40_b0", "LSTM 40 (b_f = 0)", (("model.forget_bias", 0.0),)),
        ("lstm40_b1", "LSTM (b_f = 1)", (("model.forget_bias", 1.0),)),
        ("lstm40_chrono", "LSTM 40 (chrono)", (("model.init", "chrono"),)),
        (
            "gru47",
            "GRU 47 (LSTM 40's parameters)",
            (("model.cell", "gru"), ("model.init", "default")),
        ),
    )
    for T in (100, 200, 300, 500):
        for name, label, overrides in copy_cells:
            paper, expect = "", None
            if name == "lstm40_b1":  # their LSTM's init is not given; b_f = 1 is the usual
                if T == 100:
                    paper, expect = f"beats the baseline ({arj})", "beat"
                else:
                    paper, expect = f"does not beat the baseline ({arj})", "fail"
            rows.append(
                Run(
                    study="arjovsky",
                    name=f"arjovsky_copy_T{T}_{name}",
                    config="configs/copy.py",
                    overrides=(
                        ("task.kwargs.T", T),
                        ("model.hidden_size", 47 if name == "gru47" else 40),
                        ("model.init", "forget_bias"),
                        *rmsprop,
                        *overrides,
                    ),
                    label=label,
                    paper=paper,
                    expect=expect,
                )
            )
    return rows


def _copy_rows() -> list[Run]:
    to = "Tallec & Ollivier 2018"
    inits = [
        ("b0", "b_f = 0", (("model.init", "forget_bias"), ("model.forget_bias", 0.0))),
        ("b1", "b_f = 1", (("model.init", "forget_bias"), ("model.forget_bias", 1.0))),
        ("chrono", "chrono", (("model.init", "chrono"),)),
    ]
    optimizers = [
        (
            "rmsprop",
            "RMSProp 1e-3",
            (("optim.optimizer", "rmsprop"), ("optim.learning_rate", 1e-3)),
        ),
        ("adam", "Adam 3e-3", (("optim.optimizer", "adam"), ("optim.learning_rate", 3e-3))),
    ]
    rows = []
    for task, lengths in (("copy", COPY_T), ("variable_copy", (100,))):
        for T in lengths:
            for opt, opt_label, opt_overrides in optimizers:
                for init, init_label, init_overrides in inits:
                    paper, expect = "", None
                    if task == "copy" and T in (500, 1000) and init == "chrono":
                        paper, expect = f"chrono drives the loss to ~0 ({to})", "solve"
                    elif task == "copy" and T in (500, 1000):
                        paper, expect = f"standard init stays at the baseline ({to})", "fail"
                    rows.append(
                        Run(
                            study="copy",
                            name=f"{task}_T{T}_lstm_{init}_{opt}",
                            config="configs/copy.py",
                            overrides=(
                                ("task.name", task),
                                ("task.kwargs.T", T),
                                ("model.hidden_size", 128),
                                ("num_steps", 20_000),
                                ("eval_every", 1000),
                                ("checkpoint_every", 1000),
                                ("eval_batch_size", 1000),
                                *init_overrides,
                                *opt_overrides,
                            ),
                            label=f"LSTM ({init_label}, {opt_label})",
                            paper=paper,
                            expect=expect,
                            # 128 units, batch 128, 20,000 steps: ~1.5 h a row on 2
                            # CPU cores at T=100 already, beyond a CPU working day for
                            # the 12 rows under 500.
                            where="gpu",
                        )
                    )
    return rows


def _digits_rows() -> list[Run]:
    rows = []
    for permute in (False, True):
        for name, label, overrides in (
            ("rnn", "tanh RNN", (("model.cell", "rnn"),)),
            ("gru", "GRU", (("model.cell", "gru"),)),
            (
                "gru_h74",
                "GRU, 74 units (LSTM's parameters)",
                (("model.cell", "gru"), ("model.hidden_size", 74)),
            ),
            ("lstm", "LSTM (b_f = 1)", (("model.cell", "lstm"),)),
        ):
            rows.append(
                Run(
                    study="digits",
                    name=f"digits_{'permuted' if permute else 'sequential'}_{name}",
                    config="configs/digits.py",
                    overrides=(("task.kwargs.permute", permute), *overrides),
                    label=label,
                )
            )
    return rows


ABLATION_CELLS = (
    ("peephole_lstm", "vanilla LSTM (peepholes)", "the reference (Greff et al.'s vanilla)", None),
    ("lstm", "NP: no peepholes", "no significant change", "same"),
    ("cifg_lstm", "CIFG: coupled gates, no peepholes", "no significant change", "same"),
    ("lstm_nig", "NIG: no input gate", "worse", "worse"),
    ("lstm_nfg", "NFG: no forget gate", "worse, among the most", "worse"),
    ("lstm_nog", "NOG: no output gate", "worse", "worse"),
    ("lstm_niaf", "NIAF: no input activation", "worse", "worse"),
    ("lstm_noaf", "NOAF: no output activation", "worse, among the most", "worse"),
    ("gru", "GRU", "", None),
    ("mingru", "minGRU", "", None),
    ("minlstm", "minLSTM", "", None),
)
"""The ablation's cells: (cell, label, Greff et al. 2017's finding against the vanilla
LSTM, the finding as `Run.expect`: "worse" or "same" than the study's reference row)."""


def _ablation_rows() -> list[Run]:
    tasks = (
        (
            "adding_T200",
            "configs/adding.py",
            # Evaluated every 100 steps (1% of the budget), as the lr study: solve times
            # resolved. Digits keeps 500 (its rows began with it).
            (("task.kwargs.T", 200), ("num_steps", 10_000), ("eval_every", 100)),
        ),
        (
            "copy_T100",
            "configs/copy.py",
            (
                ("task.kwargs.T", 100),
                ("model.init", "default"),
                ("num_steps", 10_000),
                ("eval_every", 500),
            ),
        ),
        ("digits", "configs/digits.py", (("eval_every", 500),)),
    )
    common = (("checkpoint_every", 500), ("eval_batch_size", 1000))
    rows = []
    for task, config, overrides in tasks:
        for cell, label, finding, expect in ABLATION_CELLS:
            rows.append(
                Run(
                    study="ablation",
                    name=f"ablation_{task}_{cell}",
                    config=config,
                    overrides=(*overrides, *common, ("model.cell", cell)),
                    label=label,
                    paper=f"{finding} (Greff et al. 2017)" if finding else "",
                    expect=expect,
                    where="gpu" if task.startswith("copy") else "cpu",
                )
            )
    return rows


STUDIES: dict[str, Callable[[], list[Run]]] = {
    "adding": _adding_rows,
    "copy": _copy_rows,
    "digits": _digits_rows,
    "ablation": _ablation_rows,
    "lr": _lr_rows,
    "arjovsky": _arjovsky_rows,
}
"""Every study's rows, in table order."""

REFERENCE = {
    "adding": "LSTM (b_f = 1)",
    "arjovsky": "LSTM (b_f = 1)",
    "digits": "LSTM (b_f = 1)",
    "ablation": "vanilla LSTM (peepholes)",
}
"""The row each other row of a (task, T) group is compared with in the paired tests
(copy: the chrono row of the same optimiser)."""


def all_rows(study: str | None = None) -> list[Run]:
    """The rows of ``study`` (all studies for None).

    Raises:
        ValueError: an unknown study, naming the known ones.
    """
    if study is not None and study not in STUDIES:
        raise ValueError(f"study must be one of {sorted(STUDIES)}, got {study!r}")
    names = [study] if study else list(STUDIES)
    return [row for name in names for row in STUDIES[name]()]


def select(study: str | None, where: str | None, only: Iterable[str] | None) -> list[Run]:
    """The rows of ``study`` on ``where`` (both None: all), or exactly the rows named in
    ``only``.

    Raises:
        ValueError: a name in ``only`` that no study has.
    """
    rows = all_rows(study)
    if only:
        by_name = {row.name: row for row in all_rows()}
        missing = [n for n in only if n not in by_name]
        if missing:
            raise ValueError(f"--only names unknown rows {missing}; see --list")
        return [by_name[n] for n in only]
    return [row for row in rows if where in (None, "all", row.where)]


COST_ROWS = (
    ("adding_T100_lstm", "adding_T100_gru", "adding_T100_gru_h37"),
    ("adding_T200_lstm", "adding_T200_gru", "adding_T200_gru_h37"),
    ("adding_T400_lstm", "adding_T400_gru", "adding_T400_gru_h37"),
    ("digits_sequential_lstm", "digits_sequential_gru", "digits_sequential_gru_h74"),
)
"""The rows of the GRU-against-LSTM cost table: per task, the LSTM, the GRU of equal
hidden size and the GRU of (about) equal parameter count."""
