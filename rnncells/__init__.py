"""rnncells: LSTM, GRU and tanh RNN cells for JAX as pure functions over NamedTuple params.

import rnncells as rc
params = rc.lstm_init(key, input_size=2, hidden_size=128)
carry, ys = rc.unroll(rc.lstm_step, params, xs)          # xs: (batch, time, 2)
"""

from rnncells._gates import GateWeights
from rnncells.cells import (
    CellSpec,
    cell_names,
    cell_spec,
    cell_spec_by_name,
    gate,
    init_carry,
    register_cell,
    standard_spec,
    step_for,
)
from rnncells.gru import (
    GRUParams,
    GRUResetAfterParams,
    GRUState,
    gru_cell,
    gru_gate,
    gru_init,
    gru_step,
)
from rnncells.layers import Bidirectional, bidirectional_unroll, stack_init, stack_unroll
from rnncells.lstm import LSTMParams, LSTMState, lstm_cell, lstm_gate, lstm_init, lstm_step
from rnncells.rnn import RNNParams, RNNState, rnn_cell, rnn_gate, rnn_init, rnn_step
from rnncells.unrolling import default_unroll, unroll

__version__ = "0.1.0"

__all__ = [
    "Bidirectional",
    "CellSpec",
    "GRUParams",
    "GRUResetAfterParams",
    "GRUState",
    "GateWeights",
    "LSTMParams",
    "LSTMState",
    "RNNParams",
    "RNNState",
    "bidirectional_unroll",
    "default_unroll",
    "cell_names",
    "cell_spec",
    "cell_spec_by_name",
    "gate",
    "gru_cell",
    "gru_gate",
    "gru_init",
    "gru_step",
    "init_carry",
    "lstm_cell",
    "lstm_gate",
    "lstm_init",
    "lstm_step",
    "register_cell",
    "rnn_cell",
    "rnn_gate",
    "rnn_init",
    "rnn_step",
    "stack_init",
    "stack_unroll",
    "standard_spec",
    "step_for",
    "unroll",
]
