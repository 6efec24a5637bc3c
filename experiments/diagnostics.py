"""What the cells do inside: gate activations over time, and gradient flow through time.

    python -m experiments.diagnostics --workdir=runs/main

reads every run under ``workdir`` (as written by ``experiments.run`` / ``sweep`` /
``main``) and writes:

* ``gates_<run>.png`` for each gated cell: the gates f, i, o (LSTM) or z, r (GRU) of the
  trained model (seed 0) over time for one example, as unit x time heatmaps, with the
  task's input drawn above (for the adding problem the two markers: a trained LSTM's
  forget gate holds near 1 between them).
* ``gradient_flow.png``: ||dL/dh_t|| (mean over a batch) against t, on a log axis, for
  every run at initialisation (dashed) and after training (solid).
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib
import ml_collections
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import rnncells as rc  # noqa: E402
from rnncells.training import build, final_params  # noqa: E402
from rnncells.training.model import ModelParams, embed_inputs  # noqa: E402

# Gates drawn per cell, in the seed's names; the candidate (g / h) is not a gate.
DRAWN_GATES = {"lstm": ("f", "i", "o"), "gru": ("z", "r")}


def gate_activations(layer: Any, xs: jax.Array) -> dict[str, jax.Array]:
    """Sigmoid gate activations of one recurrent layer along a sequence.

    The one place outside the core that evaluates gates: it re-runs the core's unroll
    for h_t, then applies each gate's own pre-activation from the core's per-gate
    weights, ``a_t = sigmoid(x_t @ W_gate + h_{t-1} @ V_gate + b_gate)`` with
    ``rc.gate(layer, name)``. This is the same expression for LSTM i, f, o and GRU r, z
    (both reset placements: b_hn only enters the candidate).

    Args:
        layer: LSTMParams, GRUParams or GRUResetAfterParams.
        xs: (T, D) inputs of one example.

    Returns:
        {gate name: (T, H) activations} for the gates in ``DRAWN_GATES``.
    """
    spec = rc.cell_spec(layer)
    family = "gru" if spec.name.startswith("gru") else spec.name
    _, hs = rc.unroll(spec.step, layer, xs)
    h_prev = jnp.concatenate([jnp.zeros_like(hs[:1]), hs[:-1]], axis=0)
    out = {}
    for name in DRAWN_GATES[family]:
        w = rc.gate(layer, name)
        out[name] = jax.nn.sigmoid(xs @ w.W + h_prev @ w.V + w.b.reshape(1, -1))
    return out


def hidden_grad_norms(params: ModelParams, task, batch) -> jax.Array:
    """||dL/dh_t|| for t = 0 .. T-2, mean over the batch, for a one-layer model.

    A zero perturbation d_t is added to the carried state h_t before step t + 1 (the
    state h of LSTMState / GRUState / RNNState); the gradient of the task's loss with
    respect to d_t is the total derivative dL/dh_t through all later steps.

    Args:
        params: ModelParams of one seed with a single recurrent layer.
        task: the `Task` the loss comes from.
        batch: a `Batch` of the task.

    Returns:
        (T - 1,) gradient norms.

    Raises:
        ValueError: the model has more than one layer.
    """
    if len(params.layers) != 1:
        raise ValueError(f"params must have one recurrent layer, got {len(params.layers)}")
    layer = params.layers[0]
    step = rc.step_for(layer)
    xs = embed_inputs(params, batch.inputs, task.vocab_size)
    B, T, D = xs.shape
    H = rc.init_carry(layer, (B,)).h.shape[-1]  # h's width (not V's rows for every cell)

    def perturbed_step(p, carry, xd):
        x, d = xd[..., :D], xd[..., D:]
        return step(p, carry._replace(h=carry.h + d), x)

    def loss(ds):
        xd = jnp.concatenate([xs, ds], axis=-1)
        carry = rc.init_carry(layer, (B,))
        _, hs = rc.unroll(perturbed_step, layer, xd, carry)
        ys = hs @ params.W_out + params.b_out.reshape(1, 1, -1)
        return task.loss(ys, batch)

    grads = jax.grad(loss)(jnp.zeros((B, T, H), jnp.float32))
    # grads[:, t] perturbs the carry entering step t, i.e. h_{t-1}.
    return jnp.mean(jnp.linalg.norm(grads, axis=-1), axis=0)[1:]


def load_runs(workdir: str) -> list[tuple[str, ml_collections.ConfigDict]]:
    """(folder, config) of every run with a checkpoint under ``workdir``."""
    runs = []
    for root, dirs, files in os.walk(workdir):
        if "config.json" in files and "checkpoints" in dirs:
            with open(os.path.join(root, "config.json"), encoding="utf-8") as file:
                runs.append((root, ml_collections.ConfigDict(json.load(file))))
    return sorted(runs, key=lambda item: item[0])


def _seed0(tree):
    return jax.tree.map(lambda x: x[0], tree)


GATE_PLOT_CELLS = ("lstm", "gru", "gru_reset_after")
"""The cells whose gates `plot_gates` draws."""


def plot_gates(folder: str, config, params: ModelParams, task, path: str) -> bool:
    """Heatmaps of the gates of the first layer for one example.

    False (nothing drawn) for a cell whose gates are not σ(x W + h V + b) of its per-gate
    weights: the tanh RNN and the IRNN have none, and the rest of the LSTM family
    (peepholes, layer norms, coupled gates) computes them otherwise.
    """
    if config.model.cell not in GATE_PLOT_CELLS:
        return False
    batch = task.make_batch(jax.random.PRNGKey(1), 1)
    xs = embed_inputs(params, batch.inputs, task.vocab_size)[0]
    acts = gate_activations(params.layers[0], xs)
    inputs = np.asarray(batch.inputs[0])
    rows = len(acts) + 1
    fig, axes = plt.subplots(
        rows,
        1,
        figsize=(9, 1.6 * rows + 0.6),
        sharex=True,
        layout="constrained",
        gridspec_kw={"height_ratios": [0.6] + [1] * len(acts)},
    )
    if inputs.ndim == 2 and task.name.startswith("adding"):
        axes[0].plot(inputs[:, 0], lw=0.8, label="value")
        axes[0].plot(inputs[:, 1], lw=1.2, label="marker")
        axes[0].set_xlim(-0.5, len(inputs) - 0.5)
        axes[0].legend(fontsize=7, loc="upper right")
        markers = np.flatnonzero(inputs[:, 1] == 1)
    else:
        axes[0].imshow(inputs.reshape(len(inputs), -1).T, aspect="auto", cmap="Greys")
        markers = []
    axes[0].set_ylabel("input")
    for ax, (name, act) in zip(axes[1:], acts.items(), strict=True):
        image = ax.imshow(
            np.asarray(act).T,
            aspect="auto",
            cmap="viridis",
            vmin=0,
            vmax=1,
            interpolation="nearest",
        )
        for m in markers:
            ax.axvline(m, color="r", lw=0.8)
        ax.set_ylabel(f"{name} (unit)")
    fig.colorbar(image, ax=list(axes), pad=0.01, label="activation")
    axes[-1].set_xlabel("t")
    axes[0].set_title(f"{os.path.basename(folder)}: gate activations (trained, seed 0)")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def up_to_date(workdir: str) -> list[str]:
    """The plots `write_diagnostics` would draw, when every one exists and is newer than
    every run's summary (so drawing them again would give the same); else []."""
    loaded = [(f, config) for f, config in load_runs(workdir) if config.model.num_layers == 1]
    runs = [folder for folder, _ in loaded]
    if not runs:
        return []
    paths = [
        os.path.join(workdir, f"gates_{os.path.basename(f)}.png")
        for f, config in loaded
        if config.model.cell in GATE_PLOT_CELLS
    ]
    paths.append(os.path.join(workdir, "gradient_flow.png"))
    if not all(os.path.exists(p) for p in paths):
        return []
    newest_run = max(os.path.getmtime(os.path.join(f, "summary.json")) for f in runs)
    return paths if min(os.path.getmtime(p) for p in paths) >= newest_run else []


def write_diagnostics(workdir: str) -> list[str]:
    """Writes the gate heatmaps and the gradient-flow plot for the runs under ``workdir``."""
    written = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for folder, config in load_runs(workdir):
        if config.model.num_layers != 1:
            continue
        setup = build(config)
        task = setup.task
        trained = _seed0(final_params(config, folder))
        initial = _seed0(setup.init_state().params)
        batch = task.make_batch(jax.random.PRNGKey(2), 64)
        name = os.path.basename(folder)
        path = os.path.join(workdir, f"gates_{name}.png")
        if plot_gates(folder, config, trained, task, path):
            written.append(path)
        line = None
        grad_norms = jax.jit(functools.partial(hidden_grad_norms, task=task, batch=batch))
        for params, style in ((initial, "--"), (trained, "-")):
            norms = np.asarray(grad_norms(params))
            kwargs = {"color": line.get_color()} if line is not None else {}
            (line,) = ax.plot(
                np.maximum(norms, 1e-30),
                style,
                lw=1,
                label=f"{name} ({'init' if style == '--' else 'trained'})",
                **kwargs,
            )
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel("||dL/dh_t|| (batch mean)")
    ax.set_title("gradient flow: dashed at initialisation, solid after training")
    ax.legend(fontsize=6)
    fig.tight_layout()
    path = os.path.join(workdir, "gradient_flow.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written


def main(argv):
    del argv
    for path in write_diagnostics(_WORKDIR.value):
        print(path)


if __name__ == "__main__":
    from absl import app, flags, logging

    logging.set_verbosity(logging.WARNING)
    _WORKDIR = flags.DEFINE_string("workdir", None, "folder holding finished runs")
    flags.mark_flags_as_required(["workdir"])
    app.run(main)
