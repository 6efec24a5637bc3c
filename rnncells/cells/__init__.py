"""The cells: one file each, and the registry that every generic part of rnncells reads.

Each built-in cell lives in one module of this package that holds everything about it:
its params and carry NamedTuples, its init, its step, its body given ``x @ W + b``, its
``CellSpec`` and, where it has them, its fused unit (``FusedCell``) and its Pallas kernel
blocks (``BlockCell``), both held by the spec:

- ``lstm``, ``gru`` (the reset-before and the reset-after forms), ``rnn``: the seed's
  cells, with fused units (the GRUs and the LSTM also with kernel blocks);
- ``cifg_lstm``, ``irnn``, ``ln_gru``, ``ln_lstm``, ``peephole_lstm``,
  ``lstm_ablations`` (Greff et al.'s five ablations), ``lstmp``, ``mingru``,
  ``minlstm``, ``slstm``: the family.

``BUILTIN_CELLS`` registers them, in this order (the order of ``cell_names()``: the
seed's four, then the family by module name); ``register_cell`` adds a user's own.
"""

from __future__ import annotations

from rnncells._engine.unit import BlockCell, FusedCell
from rnncells.cells import (
    cifg_lstm,
    gru,
    irnn,
    ln_gru,
    ln_lstm,
    lstm,
    lstm_ablations,
    lstmp,
    mingru,
    minlstm,
    peephole_lstm,
    rnn,
    slstm,
)
from rnncells.cells._registry import (
    CellSpec,
    cell_names,
    cell_spec,
    cell_spec_by_name,
    gate,
    init_carry,
    register_cell,
    same_size_zeros,
    standard_spec,
    step_for,
)

BUILTIN_CELLS: tuple[CellSpec, ...] = (
    lstm.SPEC,
    gru.SPEC,
    gru.RESET_AFTER_SPEC,
    rnn.SPEC,
    cifg_lstm.SPEC,
    irnn.SPEC,
    ln_gru.SPEC,
    ln_lstm.SPEC,
    peephole_lstm.SPEC,
    *lstm_ablations.SPECS,
    lstmp.SPEC,
    mingru.SPEC,
    minlstm.SPEC,
    slstm.SPEC,
)

for _spec in BUILTIN_CELLS:
    register_cell(_spec)
del _spec

__all__ = [
    "BUILTIN_CELLS",
    "BlockCell",
    "CellSpec",
    "FusedCell",
    "cell_names",
    "cell_spec",
    "cell_spec_by_name",
    "gate",
    "init_carry",
    "register_cell",
    "same_size_zeros",
    "standard_spec",
    "step_for",
]
