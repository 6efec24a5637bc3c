"""The GRU against the LSTM: parameters, FLOPs and time of one training step.

`train_flops` counts a training step's matrix products by hand; `measure_cost` times a
step of every `COST_ROWS` row on this machine (``python -m experiments.science --cost``).
"""

from __future__ import annotations

import os
import time
from typing import Any

from experiments.science.studies import COST_ROWS, all_rows


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
