"""rnncells: LSTM, GRU and RNN cells for JAX as pure functions over NamedTuple params.

The seed's cells (LSTM, GRU in both reset placements, tanh RNN) and the LSTM family
(peephole, CIFG, layer-normalised LSTM and GRU, IRNN, LSTMP, Greff et al.'s ablations),
the sLSTM, and the parallel-in-time minGRU and minLSTM: each one file in ``rnncells.cells``,
which registers them.

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
from rnncells.cells.cifg_lstm import (
    CIFGLSTMParams,
    cifg_lstm_gate,
    cifg_lstm_init,
    cifg_lstm_step,
)
from rnncells.cells.gru import (
    GRUParams,
    GRUResetAfterParams,
    GRUState,
    gru_cell,
    gru_gate,
    gru_init,
    gru_step,
)
from rnncells.cells.irnn import IRNNParams, irnn_gate, irnn_init, irnn_step
from rnncells.cells.ln_gru import LNGRUParams, ln_gru_gate, ln_gru_init, ln_gru_step
from rnncells.cells.ln_lstm import LNLSTMParams, ln_lstm_gate, ln_lstm_init, ln_lstm_step
from rnncells.cells.lstm import LSTMParams, LSTMState, lstm_cell, lstm_gate, lstm_init, lstm_step
from rnncells.cells.lstm_ablations import ablated_lstm_init, ablated_lstm_step
from rnncells.cells.lstmp import LSTMPParams, lstmp_gate, lstmp_init, lstmp_step
from rnncells.cells.mingru import MinGRUParams, mingru_gate, mingru_init, mingru_step
from rnncells.cells.minlstm import (
    MinLSTMParams,
    MinLSTMState,
    minlstm_gate,
    minlstm_init,
    minlstm_step,
)
from rnncells.cells.peephole_lstm import (
    PeepholeLSTMParams,
    peephole_lstm_gate,
    peephole_lstm_init,
    peephole_lstm_step,
)
from rnncells.cells.rnn import RNNParams, RNNState, rnn_cell, rnn_gate, rnn_init, rnn_step
from rnncells.cells.slstm import SLSTMParams, SLSTMState, slstm_gate, slstm_init, slstm_step
from rnncells.layers import Bidirectional, bidirectional_unroll, stack_init, stack_unroll
from rnncells.unrolling import default_kernel, default_unroll, kernel_support, unroll

__version__ = "0.2.0"

__all__ = [
    "Bidirectional",
    "CIFGLSTMParams",
    "CellSpec",
    "GRUParams",
    "GRUResetAfterParams",
    "GRUState",
    "GateWeights",
    "IRNNParams",
    "LNGRUParams",
    "LNLSTMParams",
    "LSTMPParams",
    "LSTMParams",
    "LSTMState",
    "MinGRUParams",
    "MinLSTMParams",
    "MinLSTMState",
    "PeepholeLSTMParams",
    "RNNParams",
    "RNNState",
    "SLSTMParams",
    "SLSTMState",
    "ablated_lstm_init",
    "ablated_lstm_step",
    "bidirectional_unroll",
    "cell_names",
    "cell_spec",
    "cell_spec_by_name",
    "cifg_lstm_gate",
    "cifg_lstm_init",
    "cifg_lstm_step",
    "default_kernel",
    "default_unroll",
    "gate",
    "gru_cell",
    "gru_gate",
    "gru_init",
    "gru_step",
    "init_carry",
    "irnn_gate",
    "irnn_init",
    "irnn_step",
    "kernel_support",
    "ln_gru_gate",
    "ln_gru_init",
    "ln_gru_step",
    "ln_lstm_gate",
    "ln_lstm_init",
    "ln_lstm_step",
    "lstm_cell",
    "lstm_gate",
    "lstm_init",
    "lstm_step",
    "lstmp_gate",
    "lstmp_init",
    "lstmp_step",
    "mingru_gate",
    "mingru_init",
    "mingru_step",
    "minlstm_gate",
    "minlstm_init",
    "minlstm_step",
    "peephole_lstm_gate",
    "peephole_lstm_init",
    "peephole_lstm_step",
    "register_cell",
    "rnn_cell",
    "rnn_gate",
    "rnn_init",
    "rnn_step",
    "slstm_gate",
    "slstm_init",
    "slstm_step",
    "stack_init",
    "stack_unroll",
    "standard_spec",
    "step_for",
    "unroll",
]
