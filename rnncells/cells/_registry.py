"""The cell registry: ``CellSpec``, ``register_cell`` and the lookups by params type or name.

A cell is a unit: its params and carry NamedTuples, its step, its init, its gate names,
its input checks, its zero carry, and where it has them its fused unit and its kernel
blocks, all described by one ``CellSpec`` in the cell's own file
(``rnncells/cells/<name>.py``) and registered once. Everything generic (``unroll`` and the
engines, ``init_carry``, ``gate``, ``step_for``, ``stack_init`` / ``stack_unroll``, the
Flax modules, the training model) looks the cell up here, by the type of its params or by
its name, reads what it needs from the spec, and never branches on a cell's name.

``rnncells.cells`` registers the built-in cells as one tuple, ``BUILTIN_CELLS``; a user's
cell is a module of its own that ends with one call::

    register_cell(standard_spec("my_rnn", MyParams, RNNState, my_step, my_init, ("h",)))
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnncells import _checks
from rnncells._engine.unit import BlockCell, FusedCell
from rnncells._gates import GateWeights, gate_slice


def _w_rows(params: Any) -> int | None:
    """D of params whose W is (D, ...); None when there is no such W."""
    W: Any = getattr(params, "W", None)
    return W.shape[0] if getattr(W, "ndim", 0) == 2 else None


def _v_rows(params: Any) -> int | None:
    """The output size of params whose V is (H, ...) and whose output is h; else None."""
    V: Any = getattr(params, "V", None)
    return V.shape[0] if getattr(V, "ndim", 0) == 2 else None


class CellSpec(NamedTuple):
    """The parts of a cell, as the generic code (unroll, layers, modules, training) uses them.

    Every callable receives the cell's own params NamedTuple. Hooks that only read
    shapes and dtypes (``zero_carry``, ``input_size``, ``output_size``) are also called
    with abstract params (``jax.ShapeDtypeStruct`` leaves), e.g. by the linen modules to
    build a carry before any params exist.

    Attributes:
      name: the registry name (``"lstm"``, ``"peephole_lstm"``, ...): what ``stack_init``,
        the Flax modules and ``model.cell=NAME`` accept.
      params: the params NamedTuple type; the registry's key (one cell per type).
      state: the carry NamedTuple type (several cells may share one, e.g. ``LSTMState``).
      step: ``step(params, carry, x) -> (carry, y)``, checking its inputs.
      init: ``init(key, input_size, hidden_size, **options) -> params``.
      gates: gate names in the fused order of the params' blocks.
      check_params: ``check_params(params)``: raises ValueError / TypeError naming the
        field (``params.W``) when the params are not this cell's shapes and one dtype.
      check_inputs: ``check_inputs(params, carry, x, x_name="x")``: ``check_params``,
        then the carry's type, shapes and dtype and x's last dimension and dtype; what
        the step checks. ``unroll`` calls it with ``x_name="xs"``.
      zero_carry: ``zero_carry(params, batch_shape) -> carry`` of zeros, ``batch_shape``
        a tuple of ints. Fields may differ in size.
      options: the keyword options ``init`` takes besides ``dtype`` (e.g.
        ``("forget_bias", "chrono_t_max")``); the Flax modules and the training model
        pass only these.
      input_size: ``input_size(params) -> D``, the last dimension of x_t.
      output_size: ``output_size(params)``, the last dimension of the step's output y_t
        (the next layer's input size in a stack).
      gate: ``gate(params, name) -> GateWeights``; None slices the fused (W, V, b)
        blocks of ``gates`` (``rnncells.gate``).
      cell: the step's body given the input projection ``gx = x @ W + b``
        (``cell(params, carry, gx) -> (carry, y)``); None when the cell has none. A cell
        with a body and no ``fused`` unit runs as the generic fused layer
        (``rnncells._engine.generic``): x @ W + b hoisted out of the loop, the body's
        vector-Jacobian product per step in the backward loop, dW and db after it. Its
        params need W (D, N) and b (N,) (or no b).
      linear_v: True: the body adds ``carry[0] @ params.V`` to gx and reads V nowhere
        else (the seed's layout; the LSTMP's carry[0] is its projection r). A callable
        ``linear_v(V, h) -> (*batch, N)``, linear in V: the body adds
        ``linear_v(params.V, carry[0])`` to gx and reads V nowhere else (the sLSTM's
        block-diagonal heads). The generic fused layer then forms dV after the loop, as
        one product over all steps, instead of per step. A wrong declaration gives a
        wrong dV: the conformance suite (``tests/cells/test_conformance.py``) compares
        it with the scan's.
      cell_saves: what the generic fused layer keeps from its forward loop for the
        backward (without remat): "carries" (the carries and the projection; the
        backward runs the body again inside each step's product, and both loops read
        their slices one step ahead: faster for a cheap body) or "residuals" (what JAX's
        scan autodiff keeps of the body: faster for a body with dear elementwise work,
        the sLSTM's exponentials). Chosen per cell from ``experiments.bench_cells``.
      fused: the cell's fused unit (``FusedCell``: its forward step, its backward step
        from saved activations, and how its gradients are formed), with which ``unroll``
        runs the cell as one fused layer with a hand-written backward; None runs the scan
        of the step.
      blocks: the cell's Pallas kernel blocks (``BlockCell``: the fused unit restated on
        per-gate (B, H) blocks), with which ``unroll(..., kernel="pallas")`` runs the
        fused layer's loops as kernels; None for a cell without kernels. Needs ``fused``.
      parallel_unroll: for a cell whose recurrence is parallel in time (gates from x_t
        only, e.g. minGRU, minLSTM), ``parallel_unroll(params, carry, xs, lengths) ->
        (final_carry, ys)``, run by ``unroll`` instead of the scan (``unroll(...,
        fused=False)`` runs the sequential step, which stays its reference). ``xs`` is
        time-major (T, *batch, D) with the steps past each length already set to 0;
        ``lengths`` is None or an int32 (*batch,) array; it runs forwards (``unroll``
        reverses each valid prefix around it) and must freeze each carry and zero each
        output past its length, like the scan. None for a sequential cell.
    """

    name: str
    params: type
    state: type
    step: Callable
    init: Callable
    gates: tuple[str, ...]
    check_params: Callable
    check_inputs: Callable
    zero_carry: Callable
    options: tuple[str, ...] = ()
    input_size: Callable = _w_rows
    output_size: Callable = _v_rows
    gate: Callable | None = None
    cell: Callable | None = None
    linear_v: bool | Callable = False
    cell_saves: str = "carries"
    fused: FusedCell | None = None
    parallel_unroll: Callable | None = None
    blocks: BlockCell | None = None


_SPECS: dict[type, CellSpec] = {}  # params type -> spec, in registration order
_BY_NAME: dict[str, CellSpec] = {}


def _is_namedtuple_type(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, tuple) and hasattr(value, "_fields")


def register_cell(spec: CellSpec) -> CellSpec:
    """Registers a cell, so that every generic part of rnncells knows it.

    After this, ``unroll(spec.step, params, xs)`` checks and runs it (the carry defaults
    to ``spec.zero_carry``), ``init_carry``, ``gate`` and ``step_for`` take its params,
    ``stack_init(key, spec.name, ...)``, the Flax modules (``rnncells.nnx.make_layer``,
    ``rnncells.linen.Layer``) and the training config's ``model.cell`` take its name.

    Args:
      spec: the cell's CellSpec (see ``standard_spec`` for cells in the seed's W, V, b
        layout).

    Returns:
      ``spec``, unchanged.

    Raises:
      TypeError: ``spec`` is not a CellSpec, its params or state is not a NamedTuple
        type, a hook is not callable, ``fused`` is not a FusedCell or None, or
        ``blocks`` not a BlockCell or None.
      ValueError: its name is empty or taken, its params type is registered already, it
        has ``blocks`` without ``fused``, or its fused unit's carry type is not its
        ``state`` (refused here rather than at its first ``unroll``).

    Example:
      >>> register_cell(standard_spec("tanh2", Tanh2Params, RNNState, tanh2_step,
      ...                             tanh2_init, ("h",)))
    """
    if not isinstance(spec, CellSpec):
        raise TypeError(f"spec must be a CellSpec, got {type(spec).__name__}")
    if not isinstance(spec.name, str) or not spec.name:
        raise ValueError(f"spec.name must be a non-empty string, got {spec.name!r}")
    for field in ("params", "state"):
        if not _is_namedtuple_type(getattr(spec, field)):
            raise TypeError(f"spec.{field} must be a NamedTuple type, got {getattr(spec, field)!r}")
    for field in ("step", "init", "check_params", "check_inputs", "zero_carry"):
        if not callable(getattr(spec, field)):
            raise TypeError(f"spec.{field} must be callable, got {getattr(spec, field)!r}")
    for field in ("input_size", "output_size", "gate", "cell", "parallel_unroll"):
        value = getattr(spec, field)
        if value is not None and not callable(value):
            raise TypeError(f"spec.{field} must be callable or None, got {value!r}")
    if not isinstance(spec.gates, tuple) or not all(isinstance(g, str) for g in spec.gates):
        raise TypeError(f"spec.gates must be a tuple of gate names, got {spec.gates!r}")
    if not isinstance(spec.options, tuple) or not all(isinstance(o, str) for o in spec.options):
        raise TypeError(f"spec.options must be a tuple of option names, got {spec.options!r}")
    if spec.fused is not None and not isinstance(spec.fused, FusedCell):
        raise TypeError(
            f"spec.fused must be a FusedCell (the cell's fused unit) or None, got {spec.fused!r}"
        )
    if spec.blocks is not None and not isinstance(spec.blocks, BlockCell):
        raise TypeError(
            f"spec.blocks must be a BlockCell (the cell's kernel blocks) or None, got "
            f"{spec.blocks!r}"
        )
    if not (isinstance(spec.linear_v, bool) or callable(spec.linear_v)):
        raise TypeError(
            f"spec.linear_v must be a bool or a callable linear_v(V, h), got {spec.linear_v!r}"
        )
    if spec.cell_saves not in ("carries", "residuals"):
        raise ValueError(
            f"spec.cell_saves must be 'carries' or 'residuals', got {spec.cell_saves!r}"
        )
    if spec.linear_v and spec.cell is None:
        raise ValueError(
            "spec.linear_v declares how the body spec.cell reads V, and the "
            f"{spec.name!r} cell has no body (cell=None)"
        )
    if spec.blocks is not None and spec.fused is None:
        raise ValueError(
            "spec.blocks needs spec.fused: the kernels run the fused layer's loops, and "
            f"the {spec.name!r} cell has no fused unit (fused=None)"
        )
    if spec.fused is not None and spec.fused.state is not spec.state:
        raise ValueError(
            f"spec.fused.state must be the cell's carry type {spec.state.__name__}, got "
            f"{spec.fused.state.__name__}"
        )
    if spec.name in _BY_NAME:
        raise ValueError(f"a cell named {spec.name!r} is registered already")
    if spec.params in _SPECS:
        raise ValueError(
            f"{spec.params.__name__} is registered already, as the "
            f"{_SPECS[spec.params].name!r} cell"
        )
    _SPECS[spec.params] = spec
    _BY_NAME[spec.name] = spec
    return spec


def _unregister(name: str) -> None:
    """Removes a registered cell (for tests that register a cell of their own)."""
    spec = _BY_NAME.pop(name)
    del _SPECS[spec.params]


def cell_names() -> tuple[str, ...]:
    """The names of the registered cells, in registration order."""
    return tuple(_BY_NAME)


def spec_of_type(params_type: type) -> CellSpec | None:
    """The spec of the registered cell whose params type is ``params_type``; None if none."""
    return _SPECS.get(params_type)


def registered_steps() -> frozenset:
    """The step functions of the registered cells."""
    return frozenset(spec.step for spec in _SPECS.values())


def specs_of_step(step: Callable) -> tuple[CellSpec, ...]:
    """The specs of the registered cells whose step is ``step`` (the GRU has two)."""
    return tuple(spec for spec in _SPECS.values() if spec.step is step)


def cell_spec(params: Any) -> CellSpec:
    """The CellSpec of a registered cell's params object; TypeError for anything else."""
    spec = _SPECS.get(type(params))
    if spec is None:
        names = ", ".join(t.__name__ for t in _SPECS)
        raise TypeError(f"params must be one of {names}, got {type(params).__name__}")
    return spec


def cell_spec_by_name(name: str) -> CellSpec:
    """The CellSpec of the registered cell called ``name``.

    Raises:
      ValueError: no registered cell has that name (the message lists them).
    """
    spec = _BY_NAME.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"cell must be one of {list(cell_names())}, got {name!r}")
    return spec


# How messages name the cells that take a common option (any other: "the cells").
_OPTION_CELLS = {"chrono_t_max": "gated cells", "forget_bias": "cells with a forget gate"}


def option_error(cell: str, option: str, value: Any) -> str:
    """The one message for an init option the cell ``cell`` does not take.

    It names the cell, the option and its value, the options the cell's init does take
    (``CellSpec.options`` and dtype), and the cells that take the option, e.g. "option
    'forget_bias' does not apply to the 'gru' cell, whose init takes reset_after,
    chrono_t_max, dtype: forget_bias applies to cells with a forget gate (lstm, ...), got
    2.0 for 'gru'". ``stack_init``, the Flax modules and their shared ``init_kwargs`` all
    raise it (``check_init_options``).
    """
    takes = ", ".join(cell_spec_by_name(cell).options + ("dtype",))
    having = [n for n in cell_names() if option in _BY_NAME[n].options]
    if not having:
        where = "no registered cell"
    elif len(having) == 1:
        where = f"the {having[0].upper()} only"
    else:
        where = f"{_OPTION_CELLS.get(option, 'the cells')} ({', '.join(having)})"
    return (
        f"option {option!r} does not apply to the {cell!r} cell, whose init takes {takes}: "
        f"{option} applies to {where}, got {value!r} for {cell!r}"
    )


def check_init_options(cell: str, options: dict[str, Any]) -> None:
    """Raises ValueError (``option_error``) for the first of ``options`` (name -> value)
    that the registered cell ``cell``'s init does not take (``CellSpec.options`` and
    dtype); ValueError for an unknown cell name."""
    spec = cell_spec_by_name(cell)
    for option, value in options.items():
        if option != "dtype" and option not in spec.options:
            raise ValueError(option_error(cell, option, value))


def params_dtype(params: Any) -> Any:
    """The dtype of a checked params object (every field has the first field's dtype)."""
    return jax.tree.leaves(params)[0].dtype


def same_size_zeros(state: type[Any]) -> Callable:
    """A ``zero_carry`` for carries whose fields are all (*batch, H), H = params.V.shape[0],
    in the dtype of params.W (the seed's cells and the cells in their layout)."""

    def zero_carry(params: Any, batch_shape: tuple[int, ...]) -> Any:
        zeros = jnp.zeros(tuple(batch_shape) + (params.V.shape[0],), params.W.dtype)
        return state(*([zeros] * len(state._fields)))

    zero_carry.__name__ = f"zero_{state.__name__}"
    return zero_carry


def standard_spec(
    name: str,
    params: type,
    state: type,
    step: Callable,
    init: Callable,
    gates: Sequence[str],
    *,
    vectors: dict[str, int] | None = None,
    **fields: Any,
) -> CellSpec:
    """The CellSpec of a cell in the seed's layout.

    Its params are W (D, G*H), V (H, G*H) and vectors whose lengths are multiples of H
    (``vectors``: field name -> multiple, the bias ``b`` included; None means
    ``{"b": G}``), all of one floating dtype; its carry fields are all (*batch, H); its
    output is h (H,). The checks are ``_checks.check_params`` and
    ``_checks.check_step_inputs``, so the messages are the seed cells'.

    Args:
      name: the registry name.
      params: the params NamedTuple type.
      state: the carry NamedTuple type.
      step: ``step(params, carry, x) -> (carry, y)``.
      init: ``init(key, input_size, hidden_size, **options) -> params``.
      gates: gate names in fused order (G = len(gates)).
      vectors: the params' fields after W and V with their lengths in units of H.
      **fields: further CellSpec fields (options, cell, gate, fused, ...).
    """
    gates = tuple(gates)
    num_gates = len(gates)
    check_params = functools.partial(_checks.check_params, num_gates=num_gates, vectors=vectors)
    check_inputs = functools.partial(
        _checks.check_step_inputs, state_type=state, num_gates=num_gates, vectors=vectors
    )
    return CellSpec(
        name=name,
        params=params,
        state=state,
        step=step,
        init=init,
        gates=gates,
        check_params=check_params,
        check_inputs=check_inputs,
        zero_carry=same_size_zeros(state),
        **fields,
    )


def step_for(params: Any) -> Callable:
    """The step function that belongs to a registered cell's params object."""
    return cell_spec(params).step


def init_carry(params: Any, batch_shape: Sequence[int] | int = ()) -> Any:
    """The zero carry of a registered cell.

    Args:
      params: a registered cell's params (LSTMParams, GRUParams, GRUResetAfterParams,
        RNNParams, PeepholeLSTMParams, ...).
      batch_shape: leading batch dimensions of the carry (an int is one dimension).

    Returns:
      The cell's carry of zeros in the parameters' dtype: LSTMState(h, c), GRUState(h)
      or RNNState(h) for the seed's cells, each field of shape (*batch_shape,
      hidden_size).

    Example:
      >>> carry = init_carry(lstm_init(jax.random.key(0), 2, 8), batch_shape=(4,))
      >>> carry.h.shape, carry.c.shape
      ((4, 8), (4, 8))
    """
    spec = cell_spec(params)
    batch_shape = _checks.check_batch_shape(batch_shape)
    return spec.zero_carry(params, batch_shape)


def gate(params: Any, name: str) -> GateWeights:
    """The seed's per-gate weights W, V, b of one gate of a registered cell, by name.

    Gate names: LSTM i, f, g, o; GRU r, z, h (h is the candidate h~); RNN h; each other
    cell's in its module docstring.

    Raises:
      ValueError: unknown gate name for this cell.
    """
    spec = cell_spec(params)
    if spec.gate is not None:
        return spec.gate(params, name)
    return gate_slice(params, spec.gates, name)
