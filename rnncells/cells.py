"""What each built-in cell is made of, looked up from its params type.

Every params NamedTuple tells which step, cell body, carry type and gate names belong
to it, so no flag is repeated at call time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax.numpy as jnp

from rnncells import _checks
from rnncells._gates import GateWeights, gate_slice
from rnncells.gru import GRU_GATES, GRUParams, GRUResetAfterParams, GRUState, gru_cell, gru_step
from rnncells.lstm import LSTM_GATES, LSTMParams, LSTMState, lstm_cell, lstm_step
from rnncells.rnn import RNN_GATES, RNNParams, RNNState, rnn_cell, rnn_step


class CellSpec(NamedTuple):
    """The parts of a built-in cell."""

    name: str
    step: Callable  # step(params, carry, x) -> (carry, y), with input checks
    cell: Callable  # cell(params, carry, gx) -> (carry, y), gx = x @ W + b precomputed
    state: type  # the carry NamedTuple
    gates: tuple[str, ...]  # gate names in fused order


_SPECS: dict[type, CellSpec] = {
    LSTMParams: CellSpec("lstm", lstm_step, lstm_cell, LSTMState, LSTM_GATES),
    GRUParams: CellSpec("gru", gru_step, gru_cell, GRUState, GRU_GATES),
    GRUResetAfterParams: CellSpec("gru_reset_after", gru_step, gru_cell, GRUState, GRU_GATES),
    RNNParams: CellSpec("rnn", rnn_step, rnn_cell, RNNState, RNN_GATES),
}
BUILTIN_STEPS = frozenset(spec.step for spec in _SPECS.values())


def cell_spec(params: Any) -> CellSpec:
    """The CellSpec of a built-in params object; TypeError for anything else."""
    spec = _SPECS.get(type(params))
    if spec is None:
        names = ", ".join(t.__name__ for t in _SPECS)
        raise TypeError(f"params must be one of {names}, got {type(params).__name__}")
    return spec


def step_for(params: Any) -> Callable:
    """The step function that belongs to a built-in params object."""
    return cell_spec(params).step


def init_carry(params: Any, batch_shape: Sequence[int] | int = ()) -> Any:
    """The zero carry of a built-in cell.

    Args:
      params: LSTMParams, GRUParams, GRUResetAfterParams or RNNParams.
      batch_shape: leading batch dimensions of the carry (an int is one dimension).

    Returns:
      LSTMState(h, c), GRUState(h) or RNNState(h), each field zeros of shape
      (*batch_shape, hidden_size) in the parameters' dtype.

    Example:
      >>> carry = init_carry(lstm_init(jax.random.key(0), 2, 8), batch_shape=(4,))
      >>> carry.h.shape, carry.c.shape
      ((4, 8), (4, 8))
    """
    spec = cell_spec(params)
    batch_shape = _checks.check_batch_shape(batch_shape)
    zeros = jnp.zeros(batch_shape + (params.V.shape[0],), params.W.dtype)
    return spec.state(*([zeros] * len(spec.state._fields)))


def gate(params: Any, name: str) -> GateWeights:
    """The seed's per-gate weights W, V, b of one gate of a built-in cell, by name.

    Gate names: LSTM i, f, g, o; GRU r, z, h (h is the candidate h~); RNN h.

    Raises:
      ValueError: unknown gate name for this cell.
    """
    return gate_slice(params, cell_spec(params).gates, name)
