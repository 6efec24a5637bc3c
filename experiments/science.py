"""The long-dependency studies with fixed step budgets, 5 seeds and 10,000 test sequences.

    python -m experiments.science --study=adding --where=cpu   # train, then score
    python -m experiments.science --report                     # tables and plots

Each study is a list of `Run` rows (task, T, cell, init, optimiser), all trained from a
config file plus overrides, with 5 seeds at once (``vmap``), for a fixed number of steps
(``num_steps``, never stopped early, so every row of a table is compared after the same
number of steps, and a rerun on any machine gives the same table). ``where`` says where
the committed command runs a row: ``cpu`` rows fit a CPU working day, ``gpu`` rows are
in ``experiments/gpu_science.sh``.

After a row's training finishes, its final parameters are scored on a test set of 10,000
sequences drawn from a key of its own (`TEST_KEY`), the same sequences for every row of
one task and T, and disjoint in key from training and from the in-training evaluation:
per seed the loss, the task's metric, the fraction of sequences that meet the per-sequence
criterion (`CRITERIA`; for the adding problem Hochreiter & Schmidhuber's ``|error| <
0.04``), whether every sequence meets it, the project's ``solved``, and the first
evaluation step at which the seed met ``solved`` during training. The constant (memoryless)
predictor is scored on the same sequences. One JSON per row goes to
``experiments/results/science/<study>/<row>.json``; ``--report`` rebuilds every table and
plot from those files alone (`experiments/results/science/README.md` explains them).

A row's training resumes from its checkpoints (``--time_limit_s`` stops each row after so
many seconds, resumable), and a row whose JSON exists is skipped. Each row trains in a
child process of its own under the stall guard (`rnncells.training.stall`): a row that
stalls is rerun from its checkpoint up to `experiments.cli.STALL_RETRIES` times, then
reported as stalled while the other rows go on (``--in_process`` trains in this process,
with no reruns).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from absl import app, flags, logging

RESULTS = os.path.join("experiments", "results", "science")
NUM_SEEDS = 5
TEST_SEQUENCES = 10_000
TEST_CHUNK = 1_000
TEST_KEY = 0x7E575E7
"""Seed of the test sets: chunk i of a task's test set is drawn with
``fold_in(PRNGKey(TEST_KEY), i)``; training uses ``PRNGKey(seed + s)`` and the in-training
evaluation ``fold_in(PRNGKey(seed), 0x5EED)``."""


MIN_ROW_S = 60
"""Under ``--budget_s``, a row starts only with at least this many seconds left (its
compilation and scoring are not counted in the budget)."""


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
        ("adding_T200", "configs/adding.py", (("task.kwargs.T", 200), ("num_steps", 10_000))),
        (
            "copy_T100",
            "configs/copy.py",
            (("task.kwargs.T", 100), ("model.init", "default"), ("num_steps", 10_000)),
        ),
        ("digits", "configs/digits.py", ()),
    )
    common = (("eval_every", 500), ("checkpoint_every", 500), ("eval_batch_size", 1000))
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


# --- the GRU against the LSTM: cost ---------------------------------------------------------

COST_ROWS = (
    ("adding_T100_lstm", "adding_T100_gru", "adding_T100_gru_h37"),
    ("adding_T200_lstm", "adding_T200_gru", "adding_T200_gru_h37"),
    ("adding_T400_lstm", "adding_T400_gru", "adding_T400_gru_h37"),
    ("digits_sequential_lstm", "digits_sequential_gru", "digits_sequential_gru_h74"),
)
"""The rows of the GRU-against-LSTM cost table: per task, the LSTM, the GRU of equal
hidden size and the GRU of (about) equal parameter count."""


def train_flops(config, task) -> int:
    """Matrix-product FLOPs of one training step of one seed, counted by hand: forward
    ``2 G H (D + H)`` per sequence step for the cell's G gate blocks and ``2 H O`` for
    the per-step readout, times 3 for forward and backward (the backward pass computes
    the input and weight gradients, two products of the forward's size each), times
    ``batch_size * T``. Elementwise work is left out."""
    from rnncells.cells import cell_spec_by_name

    G = len(cell_spec_by_name(config.model.cell).gates)
    H, D, O = config.model.hidden_size, task.input_size, task.output_size
    per_step = 2 * G * H * (D + H) + 2 * H * O
    return 3 * config.batch_size * task.seq_len * per_step


def measure_cost(repeats: int = 7, steps: int = 10) -> dict[str, Any]:
    """Parameters, FLOPs and the median time of one training step (one seed, the row's
    batch) of every `COST_ROWS` row on this machine; the rows of a task are timed in
    turn, repeat by repeat, so load on the machine touches them alike."""
    import jax
    import numpy as np

    from rnncells.training.loop import build

    by_name = {row.name: row for row in all_rows()}
    out: dict[str, Any] = {"device": jax.devices()[0].device_kind, "rows": {}}
    out["load_average_before"] = os.getloadavg()
    for names in COST_ROWS:
        chunks = {}
        for name in names:
            config = by_name[name].make_config()
            config.num_seeds, config.log_every = 1, steps
            setup = build(config)
            state = setup.init_state()
            params = jax.tree.leaves(state.params)
            state = jax.block_until_ready(setup.train_chunk(state)[0])  # compile
            chunks[name] = (setup.train_chunk, state)
            out["rows"][name] = {
                "cell": config.model.cell,
                "hidden_size": config.model.hidden_size,
                "params": int(sum(p.size for p in params)),
                "train_flops": train_flops(config, setup.task),
                "seconds": [],
            }
        for _ in range(repeats):
            for name, (chunk, state) in chunks.items():
                tick = time.perf_counter()
                jax.block_until_ready(chunk(state))
                out["rows"][name]["seconds"].append((time.perf_counter() - tick) / steps)
        for name in names:
            out["rows"][name]["median_s_per_step"] = float(np.median(out["rows"][name]["seconds"]))
    out["load_average_after"] = os.getloadavg()
    return out


# --- scoring on the test set -------------------------------------------------------------


def _last(ys, batch):
    from rnncells.tasks._common import last_step

    return last_step(ys, batch.lengths)


def _adding_passes(ys, batch):
    import jax.numpy as jnp

    from rnncells.tasks.adding import SUCCESS_TOLERANCE

    return jnp.abs(_last(ys, batch)[:, 0] - batch.targets[:, 0]) < SUCCESS_TOLERANCE


def _copy_passes(ys, batch):
    import jax.numpy as jnp

    from rnncells.tasks._common import predicted_class

    correct = predicted_class(ys, batch.targets) == batch.targets
    if batch.mask is None:  # fixed copy: the last ten steps recall the data
        return jnp.all(correct[:, -10:], axis=1)
    return jnp.all(correct | (batch.mask == 0), axis=1)


def _digits_passes(ys, batch):

    from rnncells.tasks._common import predicted_class

    return predicted_class(_last(ys, batch), batch.targets) == batch.targets


CRITERIA: dict[str, tuple[str, Callable]] = {
    "adding": ("|error| < 0.04 (Hochreiter & Schmidhuber)", _adding_passes),
    "adding_hs": ("|error| < 0.04 (Hochreiter & Schmidhuber)", _adding_passes),
    "copy": ("all 10 symbols recalled", _copy_passes),
    "variable_copy": ("all 10 symbols recalled", _copy_passes),
    "digits": ("label right", _digits_passes),
}
"""Per task: the per-sequence criterion's description and ``(ys, batch) -> (B,) bool``."""


def constant_outputs(task_name: str, task, batch):
    """The outputs ``(B, seq_len, output_size)`` of the task's best memoryless predictor:
    adding 1 (the mean target), adding_hs 0.5, copy and variable copy the memoryless
    logits of `rnncells.tasks.copy`, digits uniform logits."""
    import jax.numpy as jnp

    from rnncells.tasks import copy as copy_task

    B = batch.targets.shape[0]
    shape = (B, task.seq_len, task.output_size)
    if task_name == "adding":
        return jnp.ones(shape, jnp.float32)
    if task_name == "adding_hs":
        return jnp.full(shape, 0.5, jnp.float32)
    if task_name == "copy":
        return copy_task.memoryless_logits(B, task.seq_len - 20)
    if task_name == "variable_copy":
        return copy_task.variable_memoryless_logits(batch.inputs)
    if task_name == "digits":
        return jnp.zeros(shape, jnp.float32)
    raise ValueError(f"no constant predictor for task {task_name!r}")


def test_batches(task, task_name: str) -> list:
    """The test set: the task's fixed test set if it has one (digits), else
    `TEST_SEQUENCES` sequences in chunks of `TEST_CHUNK`, drawn from `TEST_KEY`."""
    import jax

    if task.test_batch is not None:
        return [task.test_batch()]
    key = jax.random.PRNGKey(TEST_KEY)
    return [
        task.make_batch(jax.random.fold_in(key, i), TEST_CHUNK)
        for i in range(TEST_SEQUENCES // TEST_CHUNK)
    ]


def score(config, params) -> dict[str, Any]:
    """Per seed test metrics of ``params`` (leading seed axis) on the task's test set,
    and the constant predictor's on the same sequences (see the module docstring)."""
    import jax
    import numpy as np

    from rnncells.tasks import get_task
    from rnncells.training.model import model_apply

    task_name = config.task.name
    task = get_task(task_name, **dict(config.task.kwargs))
    criterion_text, passes = CRITERIA[task_name]
    batches = test_batches(task, task_name)
    apply = jax.jit(functools.partial(model_apply, vocab_size=task.vocab_size))

    @jax.jit
    def one_chunk(p, batch):
        ys = apply(p, batch.inputs, lengths=batch.lengths)
        return task.metric(ys, batch), passes(ys, batch)

    num_seeds = jax.tree.leaves(params)[0].shape[0]
    sizes = np.array([b.targets.shape[0] for b in batches], dtype=float)
    per_seed: dict[str, list] = {}
    for s in range(num_seeds):
        p = jax.tree.map(lambda x, s=s: x[s], params)
        sums: dict[str, float] = {}
        passed = []
        for batch, size in zip(batches, sizes, strict=True):
            metrics, ok = jax.device_get(one_chunk(p, batch))
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v) * size
            passed.append(np.asarray(ok))
        ok_all = np.concatenate(passed)
        for k, v in sums.items():
            per_seed.setdefault(k, []).append(v / sizes.sum())
        per_seed.setdefault("criterion_fraction", []).append(float(ok_all.mean()))
        per_seed.setdefault("criterion_all", []).append(bool(ok_all.all()))
    metric_names = [k for k in per_seed if k not in ("criterion_fraction", "criterion_all")]
    per_seed["solved"] = [
        bool(task.solved({k: per_seed[k][s] for k in metric_names})) for s in range(num_seeds)
    ]
    constant = 0.0
    for batch, size in zip(batches, sizes, strict=True):
        ys = constant_outputs(task_name, task, batch)
        constant += float(jax.device_get(task.metric(ys, batch))["loss"]) * size
    return {
        "num_sequences": int(sizes.sum()),
        "test_key": None if task.test_batch is not None else TEST_KEY,
        "criterion": criterion_text,
        "per_seed": per_seed,
        "constant_loss": constant / sizes.sum(),
        "analytic_baseline": float(task.baseline_loss),
    }


def steps_to_solve(config, workdir: str) -> list[int | None]:
    """Per seed, the first in-training evaluation step at which the seed met the task's
    ``solved`` (None: never within the run). Resolved to ``eval_every`` steps; a
    scheduled evaluation lost from ``eval.jsonl`` is named by `missing_evaluations`."""
    from rnncells.tasks import get_task

    task = get_task(config.task.name, **dict(config.task.kwargs))
    first: list[int | None] = [None] * config.num_seeds
    for record in scheduled_evaluations(config, workdir):
        names = [k[: -len("_per_seed")] for k in record if k.endswith("_per_seed")]
        for s in range(config.num_seeds):
            if first[s] is None and task.solved({k: record[f"{k}_per_seed"][s] for k in names}):
                first[s] = int(record["step"])
    return first


def seconds_to_solve(config, workdir: str, steps: list[int | None]) -> list[float | None]:
    """Per seed, the training seconds (the chunks' own times from ``metrics.jsonl``,
    evaluations and saves left out) up to its step in ``steps``."""
    from rnncells.training.metrics import read_jsonl

    elapsed, total = {}, 0.0
    for record in read_jsonl(os.path.join(workdir, "metrics.jsonl")):
        total += 1.0 / record["steps_per_sec"]
        elapsed[record["step"]] = total
    return [None if step is None else elapsed.get(step) for step in steps]


def missing_evaluations(config, workdir: str, steps_run: int) -> list[int]:
    """The scheduled evaluation steps up to ``steps_run`` that ``eval.jsonl`` lacks (its
    steps to solve may then read a later evaluation than the first that solved)."""
    present = {r["step"] for r in scheduled_evaluations(config, workdir)}
    expected = set(range(config.eval_every, steps_run + 1, config.eval_every))
    return sorted(expected - present)


def scheduled_evaluations(config, workdir: str) -> list[dict]:
    """The run's in-training evaluations at scheduled steps (every ``eval_every`` and the
    last): an evaluation a time limit added where it stopped a run is left out, so the
    figures do not depend on where a run was cut and resumed."""
    from rnncells.training.metrics import read_jsonl

    return [
        r
        for r in read_jsonl(os.path.join(workdir, "eval.jsonl"))
        if r["step"] % config.eval_every == 0 or r["step"] == config.num_steps
    ]


def eval_curve(config, workdir: str) -> dict[str, list]:
    """The in-training held-out loss per seed at each scheduled evaluation."""
    records = scheduled_evaluations(config, workdir)
    return {
        "step": [int(r["step"]) for r in records],
        "loss_per_seed": [[float(v) for v in r["loss_per_seed"]] for r in records],
    }


DIGITS_LAST_PIXELS = (8, 16, 32, 64)
"""The linear baselines of the digits rows read the last k pixels of each sequence."""


def digits_linear_baselines() -> dict[str, Any]:
    """Test accuracy of logistic regression (scikit-learn, L2, C=1) on the last k pixels
    of each digit, in reading order and in the permuted order, trained on the rows'
    1500-image training split and scored on their 297-image test split: what a model
    with no memory beyond k steps can reach."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from rnncells.tasks import digits

    out: dict[str, Any] = {"model": "sklearn LogisticRegression(C=1.0, max_iter=5000)"}
    for permute in (False, True):
        train, test = digits.train_set(permute=permute), digits.test_set(permute=permute)
        x_train, x_test = np.asarray(train.inputs)[..., 0], np.asarray(test.inputs)[..., 0]
        y_train, y_test = np.asarray(train.targets), np.asarray(test.targets)
        scores = {}
        for k in DIGITS_LAST_PIXELS:
            model = LogisticRegression(C=1.0, max_iter=5000)
            model.fit(x_train[:, -k:], y_train)
            scores[str(k)] = float(model.score(x_test[:, -k:], y_test))
        out["permuted" if permute else "sequential"] = scores
    return out


def environment() -> dict[str, Any]:
    """What a rerun elsewhere needs to compare with: the jax and jaxlib versions, the CPU
    model and count, the XLA flags, Python's version and the repository's commit."""
    import platform
    import subprocess

    import jax
    import jaxlib

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            rows = [line.split(":", 1) for line in file if line.startswith("model name")]
        names = [name.strip() for _, name in rows]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = None, None
    return {
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "backend": jax.default_backend(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "python": platform.python_version(),
        "commit": commit,
        "uncommitted_changes": dirty,
    }


def train_and_score(row: Run, workdir: str, results: str, time_limit_s: float = 0.0):
    """Trains ``row`` in ``workdir/<study>/<name>`` (or resumes it) and, once finished,
    writes its JSON to ``results/<study>/<name>.json``; returns that path, or None when the
    time limit stopped the run first."""
    import jax

    from rnncells.training import train
    from rnncells.training.loop import final_params

    config = row.make_config()
    config.time_limit_s = float(time_limit_s)
    folder = os.path.join(workdir, row.study, row.name)
    tick = time.perf_counter()
    summary = train(config, folder, command=row.command())
    if not summary["finished"]:
        return None
    params = final_params(config, folder)
    solve_steps = steps_to_solve(config, folder)
    missing = missing_evaluations(config, folder, summary["steps_run"])
    if missing:
        print(
            f"warning: {row.name}: eval.jsonl lacks the scheduled evaluations of steps "
            f"{', '.join(map(str, missing))}; its steps to solve read the next ones",
            file=sys.stderr,
        )
    result = {
        "study": row.study,
        "name": row.name,
        "label": row.label,
        "command": row.command(),
        "config": config.to_dict(),
        "task": config.task.name,
        "T": config.task.kwargs.get("T"),
        "seeds": list(range(config.seed, config.seed + config.num_seeds)),
        "num_steps": config.num_steps,
        "steps_run": summary["steps_run"],
        "stopped_early": summary["stopped_early"],
        "steps_to_solve": solve_steps,
        "seconds_to_solve": seconds_to_solve(config, folder, solve_steps),
        "missing_evaluations": missing,
        "test": score(config, params),
        "eval_curve": eval_curve(config, folder),
        "device": jax.devices()[0].device_kind,
        "environment": environment(),
        "train_wall_s_last_call": summary["wall_s_this_process"],
        "score_and_train_wall_s": time.perf_counter() - tick,
    }
    path = os.path.join(results, row.study, f"{row.name}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    from rnncells.training.metrics import write_json

    write_json(path, result)
    return path


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


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    from experiments import science_report
    from experiments.cli import STALL_RETRIES, run_resuming_stalls, user_errors
    from rnncells.training.stall import is_stall_status

    if _COST.value:
        result = measure_cost()
        path = os.path.join(_RESULTS.value, "cost.json")
        from rnncells.training.metrics import write_json

        write_json(path, result)
        for name, r in result["rows"].items():
            print(
                f"{name:30s} params {r['params']:7d}  FLOPs/step {r['train_flops']:.3g}  "
                f"{1e3 * r['median_s_per_step']:.2f} ms/step"
            )
        print("wrote", path)
        return
    if _DIGITS_BASELINES.value:
        from rnncells.training.metrics import write_json

        path = os.path.join(_RESULTS.value, "digits", "linear_baselines.json")
        write_json(path, {**digits_linear_baselines(), "environment": environment()})
        print("wrote", path)
        return
    if _REPORT.value:
        for path in science_report.write_all(_RESULTS.value):
            print("wrote", path)
        return
    # --list shows every row unless --where is given; training defaults to the CPU rows.
    where = "all" if _LIST.value and not flags.FLAGS["where"].present else _WHERE.value
    try:
        rows = select(_STUDY.value, where, _ONLY.value)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    if _LIST.value:
        for row in rows:
            done = os.path.exists(os.path.join(_RESULTS.value, row.study, f"{row.name}.json"))
            print(f"{row.name:40s} {row.where}  {'done' if done else 'pending'}  {row.label}")
        return
    failed: list[str] = []
    stalled: list[str] = []
    start = time.perf_counter()
    for row in rows:
        path = os.path.join(_RESULTS.value, row.study, f"{row.name}.json")
        if os.path.exists(path):
            print(f"{row.name}: done ({path})", flush=True)
            continue
        tick = time.perf_counter()
        limit = _TIME_LIMIT.value
        if _BUDGET.value > 0:
            left = _BUDGET.value - (tick - start)
            if left < MIN_ROW_S:
                print(f"{row.name}: not started, under {MIN_ROW_S} s of --budget_s left")
                continue
            limit = left if limit <= 0 else min(limit, left)
        if not _IN_PROCESS.value:
            # The row in a child process of its own, rerun from its checkpoint if it
            # stalls (a stuck compiled call cannot be stopped inside a process).
            status = run_resuming_stalls(_row_command(row, limit), row.name)
            if status in (130, 143):  # SIGINT or SIGTERM: the child said how to resume
                raise SystemExit(status)
            if is_stall_status(status):
                stalled.append(row.name)
            elif status != 0:
                failed.append(row.name)
            continue
        try:
            with user_errors():
                written = train_and_score(row, _WORKDIR.value, _RESULTS.value, limit)
        except SystemExit:  # the row's error is printed; the other rows go on
            failed.append(row.name)
            continue
        took = time.perf_counter() - tick
        if written is None:
            print(f"{row.name}: stopped at the time limit after {took:.0f} s; rerun to resume")
            continue
        with open(written, encoding="utf-8") as file:
            result = json.load(file)
        loss = result["test"]["per_seed"]["loss"]
        print(
            f"{row.name}: test loss {sum(loss) / len(loss):.4g} (constant "
            f"{result['test']['constant_loss']:.4g}), solved "
            f"{sum(result['test']['per_seed']['solved'])}/{len(loss)}, "
            f"steps {result['steps_run']}, {took:.0f} s -> {written}",
            flush=True,
        )
    if _IN_PROCESS.value and failed:
        raise SystemExit(2)  # the parent counts it
    if not _IN_PROCESS.value:
        print("tables and plots: python -m experiments.science --report")
    if stalled:
        print(
            f"error: {len(stalled)} rows stalled {1 + STALL_RETRIES} times: "
            f"{', '.join(stalled)}; rerun the command to resume them"
        )
    if failed:
        print(f"error: {len(failed)} rows stopped with an error: {', '.join(failed)}")
    if failed or stalled:
        raise SystemExit(2)


def _row_command(row: Run, time_limit_s: float) -> list[str]:
    """The child process that trains and scores ``row`` alone, in this process's folders."""
    return [
        sys.executable,
        "-m",
        "experiments.science",
        f"--only={row.name}",
        f"--workdir={_WORKDIR.value}",
        f"--results={_RESULTS.value}",
        f"--time_limit_s={time_limit_s}",
        "--in_process",
    ]


if __name__ == "__main__":
    _STUDY = flags.DEFINE_enum("study", None, list(STUDIES), "the study to run (default: all)")
    _WHERE = flags.DEFINE_enum(
        "where", "cpu", ["cpu", "gpu", "all"], "run the rows planned for this machine kind"
    )
    _ONLY = flags.DEFINE_list("only", None, "run exactly these rows (names as in --list)")
    _LIST = flags.DEFINE_bool("list", False, "list the selected rows and whether each is done")
    _REPORT = flags.DEFINE_bool(
        "report", False, "rebuild every table and plot from the committed JSON and exit"
    )
    _DIGITS_BASELINES = flags.DEFINE_bool(
        "digits_baselines",
        False,
        "fit logistic regression on the digits' last k pixels, write linear_baselines.json",
    )
    _COST = flags.DEFINE_bool(
        "cost",
        False,
        "time one training step of the GRU and LSTM rows of COST_ROWS here, write cost.json",
    )
    _WORKDIR = flags.DEFINE_string("workdir", "runs/science", "folder of the training runs")
    _RESULTS = flags.DEFINE_string("results", RESULTS, "folder of the per-row JSON results")
    _TIME_LIMIT = flags.DEFINE_float(
        "time_limit_s", 0.0, "stop each row after this many seconds (resumable); 0: none"
    )
    _IN_PROCESS = flags.DEFINE_bool(
        "in_process",
        False,
        "train the rows in this process (default: each in a child process, rerun from its "
        "checkpoint when it stalls)",
    )
    _BUDGET = flags.DEFINE_float(
        "budget_s",
        0.0,
        "stop (resumable) once this call has trained this many seconds in all; 0: none",
    )
    app.run(main)
