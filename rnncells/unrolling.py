"""Unrolling a step over time with ``jax.lax.scan``: lengths, reverse, remat.

``unroll(step, params, xs)`` is, for batch-first xs of shape (*batch, T, D), the loop

    ys = []
    for t in range(T):                      # t runs backwards when reverse=True
        carry, y = step(params, carry, xs[..., t, :])
        ys.append(y)
    return carry, stack(ys, axis=-2)        # ys in the original time order

with, when ``lengths`` is given, each sequence's carry frozen and its outputs zero past
its length, and ``reverse`` reversing only each sequence's valid prefix (PyTorch's
packed-sequence semantics).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.interpreters.ad
import jax.numpy as jnp

from rnncells import _checks
from rnncells._engine import choice
from rnncells._engine import fused as _fused
from rnncells._engine import generic as _generic
from rnncells._engine import pallas as _pallas
from rnncells.cells._registry import (
    CellSpec,
    cell_names,
    cell_spec,
    cell_spec_by_name,
    params_dtype,
    registered_steps,
    specs_of_step,
)

__all__ = ["default_kernel", "default_unroll", "kernel_support", "unroll"]


def unroll(
    step: Callable,
    params: Any,
    xs: jax.Array,
    carry: Any = None,
    *,
    lengths: jax.Array | None = None,
    reverse: bool = False,
    time_major: bool = False,
    unroll: int | None = None,
    remat: bool = False,
    compute_dtype: Any = None,
    fused: bool = True,
    kernel: str | None = None,
) -> tuple[Any, Any]:
    """Runs ``step`` over the time axis of ``xs``.

    The step of a registered cell (``rnncells.cells``: the built-in ones and any
    ``register_cell`` adds) is looked up with its params, which are checked first. The
    seed's steps (``lstm_step``, ``gru_step``, ``rnn_step``) run as one fused layer
    (``rnncells._engine``) whose backward pass is written for the whole unrolled layer: the
    backward loop carries only dh (and dc) and the weight and input gradients leave it as
    single large matmuls. Its values and gradients equal those of ``jax.lax.scan`` of the
    public step. A cell that is parallel in time runs its ``parallel_unroll``. Every other
    step (the other registered cells', a user's own) runs through ``jax.lax.scan`` as it is.

    Args:
      step: ``step(params, carry, x) -> (carry, y)``; a registered cell's step
        (``lstm_step``, ``gru_step``, ``rnn_step``, ``peephole_lstm_step``, ...) or a
        user's own.
      params: the step's parameters.
      xs: inputs, (*batch, T, D) or, with ``time_major``, (T, *batch, D).
      carry: initial carry; None gives ``init_carry(params, batch)`` for a registered
        cell's step (required for a user's step).
      lengths: optional int array of shape batch (any integer dtype): valid steps per
        sequence, in [0, T]. Past its length a sequence's carry is frozen and its
        outputs are zeros; the returned carry is the one after its last valid step.
        Padding is inert: inputs past a length (even NaN or inf) change no output, carry
        or gradient, and their own gradient is 0. Values outside [0, T] raise when known
        at trace time; traced ones (under ``jit``) are clipped to it.
      reverse: run from the last valid step to the first; outputs stay in input order.
      time_major: whether the time axis of ``xs`` and ``ys`` is the first one.
      unroll: ``jax.lax.scan``'s unroll factor. None (default): the library's choice,
        ``default_unroll(step)``: 8 for a fused cell's step on a GPU (its per-iteration
        launch cost dominates there; 1.2-1.9x faster training than 1 on an H100), else 1
        (on a 2-core CPU, 2 and 8 were no faster).
      remat: recompute each step in the backward pass (``jax.checkpoint``) instead of
        storing its intermediates: memory O(T * carry) instead of O(T * gates).
      compute_dtype: fused cells only: the dtype of every matmul's inputs, e.g.
        ``jnp.bfloat16`` for GPU and TPU; accumulation, gate arithmetic, carries,
        parameters and gradients stay in the parameters' dtype. None: the parameters' dtype.
      fused: run a cell that has a fused layer as that layer, and a parallel-in-time
        cell with its ``parallel_unroll`` (default). False runs every step through
        ``jax.lax.scan`` + autodiff like a user's step. The fused layer is a
        ``jax.custom_vjp``, which has no forward mode: under ``jax.jvp`` / ``jax.jacfwd``
        applied around this call ``unroll`` runs the plain scan by itself; where it cannot
        see the jvp (``jax.jvp(jax.jit(f))``, a ``lax.scan`` or ``jax.checkpoint`` body),
        pass False for forward mode.
      kernel: how a fused cell's layer runs. "xla": the fused layer's loops as
        ``jax.lax.scan``. "pallas": each loop as one Pallas kernel (the cell's
        ``CellSpec.blocks``: the LSTM and both GRU forms; V held on chip across all steps;
        on a CPU the kernels run in Pallas's interpreter, slowly, for tests), with the same
        values, gradients and ``custom_vjp``; not with remat. Where the kernels cannot run
        the layer (a GPU with H not a power of two >= 16 or V over 256 KiB; a TPU) it runs
        "xla" with a ``RuntimeWarning`` saying why. None (default): ``default_kernel``, the
        one measured faster for this backend and shape (the kernel table; "xla" until GPU
        figures exist). A parallel-in-time cell (minGRU, minLSTM): "parallel" runs its
        ``parallel_unroll`` (one associative scan over time), "sequential" the scan of
        its step; None (or "xla") the one measured faster on this backend
        (``default_kernel``: "sequential" on a CPU, 2.4-5.2x faster there,
        bench_cells.md). Any other
        step without a fused layer runs ``jax.lax.scan`` with None or "xla", and refuses
        the other names.

    Returns:
      (final_carry, ys): ys has the layout of xs with the step's output as last axis.

    Raises:
      TypeError: reverse, time_major, remat or fused not a bool.
      ValueError / TypeError: a registered cell's params of wrong shapes or mixed
        dtypes, xs of rank < 2, wrong input size or dtype, carry not matching, lengths of
        wrong shape or dtype or outside [0, T] (when concrete), compute_dtype not a
        floating dtype or given with a step that has no fused layer, kernel not None,
        "xla" or "pallas", or "pallas" for a step without Pallas kernels, with
        fused=False or with remat=True; a step run through ``jax.lax.scan`` (a user's
        step, or a registered cell's without a fused or parallel unroll) that does not
        return a pair (carry, y) whose carry has the structure (TypeError), shapes
        (ValueError) and dtypes (TypeError) of the carry it is given, checked on shapes
        with one ``jax.eval_shape`` of the step before the scan; the message names the
        step (its ``__qualname__``), the registered cell, and both carries.

    Example:
      >>> params = lstm_init(jax.random.key(0), input_size=2, hidden_size=16)
      >>> carry, ys = unroll(lstm_step, params, jnp.ones((4, 10, 2)))
      >>> ys.shape
      (4, 10, 16)
    """
    if not callable(step):
        raise TypeError(f"step must be callable, got {type(step).__name__}")
    reverse = _checks.check_bool("reverse", reverse)
    time_major = _checks.check_bool("time_major", time_major)
    remat = _checks.check_bool("remat", remat)
    fused = _checks.check_bool("fused", fused)
    kernel = _checks.check_kernel(kernel)
    _checks.check_array("xs", xs)
    layout = "(T, *batch, input_size)" if time_major else "(*batch, T, input_size)"
    _checks.check_min_rank("xs", xs, 2, layout)
    if unroll is None:
        unroll = default_unroll(step)
    unroll = _checks.check_positive_int("unroll", unroll)
    xs_tm = xs if time_major else jnp.moveaxis(xs, -2, 0)
    num_steps, batch_shape = xs_tm.shape[0], tuple(xs_tm.shape[1:-1])

    builtin = step in registered_steps()
    spec = None
    if builtin:
        spec = cell_spec(params)
        if step is not spec.step:
            raise TypeError(
                f"step {step.__name__} does not match params {type(params).__name__}: "
                f"expected {spec.step.__name__} (see step_for(params))"
            )
        spec.check_params(params)
        if carry is None:
            carry = spec.zero_carry(params, batch_shape)
        # Checked once here on shapes, so that errors name xs rather than one step's x.
        _checks.check_floating("xs", xs, params_dtype(params))
        _checks.check_last_dim("xs", xs, spec.input_size(params), "input_size")
        probe = jax.ShapeDtypeStruct(batch_shape + (xs.shape[-1],), xs.dtype)
        spec.check_inputs(params, carry, probe, x_name="xs")
    elif carry is None:
        raise ValueError("carry is required when step is not a built-in step (carry=None given)")
    if compute_dtype is not None:
        if spec is not None and not has_fused_layer(spec, params):
            raise ValueError(
                f"compute_dtype is only supported for cells with a fused layer, and the "
                f"{spec.name!r} cell has none (it runs through jax.lax.scan of its step): "
                f"pass compute_dtype=None, got {compute_dtype!r}"
            )
        if not (builtin and fused):
            raise ValueError(
                f"compute_dtype is only supported for built-in steps with fused=True, got "
                f"step {step!r}, fused={fused!r} "
                f"with compute_dtype={compute_dtype!r}"
            )
        if not jnp.issubdtype(jnp.dtype(compute_dtype), jnp.floating):
            raise TypeError(f"compute_dtype must be a floating dtype, got {compute_dtype!r}")
    if kernel == "pallas":
        _check_pallas(step, params, spec, fused, remat)
    if lengths is not None:
        lengths = _checks.check_lengths(lengths, batch_shape, num_steps)
        xs_tm = _zero_padding(xs_tm, lengths)

    nonempty = num_steps > 0 and math.prod(batch_shape) > 0
    # The cell's hand-written fused unit, else the generic fused layer of its body,
    # else its parallel-in-time unroll, else the scan of its step.
    use_fused = spec is not None and has_fused_layer(spec, params) and fused and nonempty
    parallel_unroll = None
    if spec is not None and spec.parallel_unroll is not None and not use_fused:
        batch = math.prod(batch_shape)
        mode = _parallel_kernel(kernel, spec, params, batch, num_steps, fused)
        if mode == "parallel" and nonempty:
            parallel_unroll = spec.parallel_unroll
    elif kernel in ("parallel", "sequential"):
        names = [n for n in cell_names() if cell_spec_by_name(n).parallel_unroll is not None]
        what = "a user's step" if spec is None else f"the {spec.name!r} cell"
        raise ValueError(
            f"kernel={kernel!r} chooses how a parallel-in-time cell ({', '.join(names)}) "
            f"runs, and {what} is not one: pass kernel=None, 'xla' or 'pallas'"
        )
    if use_fused and _under_forward_mode(params, carry, xs):
        if compute_dtype is not None:
            raise ValueError(
                "forward-mode autodiff (jax.jvp, jax.jacfwd) of unroll runs the plain scan, "
                f"which has no compute_dtype: pass compute_dtype=None, got {compute_dtype!r}"
            )
        use_fused = False  # a custom_vjp has no forward mode: the plain scan has one
    if use_fused:
        assert spec is not None  # use_fused says so
        layer_kernel = _layer_kernel(kernel, spec, params, xs_tm, remat, compute_dtype)
        try:
            carry, ys_tm = _fused_scan(
                spec,
                params,
                carry,
                xs_tm,
                lengths,
                reverse=reverse,
                unroll=unroll,
                remat=remat,
                compute_dtype=compute_dtype,
                kernel=layer_kernel,
            )
        except TypeError as error:
            if "forward-mode autodiff" not in str(error):
                raise
            raise TypeError(
                "forward-mode autodiff (jax.jvp, jax.jacfwd) reached the fused layer, a "
                "jax.custom_vjp, where unroll could not see it (e.g. jvp of a jit-compiled "
                "function): pass unroll(..., fused=False) for forward mode"
            ) from error
    elif parallel_unroll is not None:
        carry, ys_tm = _forward_only(parallel_unroll, params, carry, xs_tm, lengths, reverse)
    else:
        if num_steps > 0:
            _check_step_carry(step, spec, params, carry, xs_tm)
        carry, ys_tm = _scan(
            step, params, carry, xs_tm, lengths, reverse=reverse, unroll=unroll, remat=remat
        )
    ys = ys_tm if time_major else jax.tree.map(lambda y: jnp.moveaxis(y, 0, y.ndim - 2), ys_tm)
    return carry, ys


def default_unroll(step: Callable) -> int:
    """The scan unroll factor ``unroll(..., unroll=None)`` uses for ``step``.

    8 for the step of a cell with a fused unit when JAX's default backend is a GPU, else
    1. Measured with ``python -m experiments.bench`` (``rnncells`` against ``rc_u8``) for
    the seed's four: on an H100 unroll 8 trained 1.2-1.9x faster than 1 at every size
    measured; on a 2-core CPU, 2 and 8 were no faster. The family's units take the same
    default on a GPU unmeasured; the other cells' steps and a user's step keep 1.
    """
    return choice.unroll_for(any(spec.fused is not None for spec in specs_of_step(step)))


def default_kernel(
    params: Any,
    batch: int,
    num_steps: int,
    compute_dtype: Any = None,
    backend: str | None = None,
) -> str:
    """The kernel ``unroll(..., kernel=None)`` runs a cell's layer with.

    For a parallel-in-time cell (minGRU, minLSTM): "parallel" (its associative scan) or
    "sequential" (the scan of its step), the one measured faster in the library's table
    for this backend, cell and nearest shape; "parallel" on a backend with no figures.
    For a fused cell: among the measured training-step times of the library's kernel
    table (the fused layer's XLA scans against its Pallas kernels, per backend, cell and
    compute dtype), the row nearest in shape (log-distance in B, T and H) decides: "pallas" where it
    measured faster and the kernels can run this layer (``kernel_support``), else "xla".
    With no such row: "xla" (no GPU has measured the kernels yet, so "xla" everywhere).
    ``backend`` is JAX's default when None.
    """
    spec = cell_spec(params)
    if spec.parallel_unroll is not None and not has_fused_layer(spec, params):
        return choice.parallel_for(spec, batch, num_steps, spec.output_size(params), backend)
    return choice.kernel_for(spec, params, batch, num_steps, compute_dtype, backend)


def kernel_support(
    params: Any, compute_dtype: Any = None, backend: str | None = None
) -> dict[str, str | None]:
    """Which kernels can run the fused layer of a registered cell's ``params``.

    Args:
      params: a registered cell's params.
      compute_dtype: the ``unroll`` option of that name (None: the parameters' dtype).
      backend: "cpu", "gpu" or "tpu"; JAX's default when None.

    Returns:
      ``{"xla": reason, "pallas": reason}``, each reason None where the kernel runs the
      layer, else why not: the cell has no fused layer, no Pallas kernels, or the
      backend or shape is beyond the kernels' limits (on a GPU: H a power of two >= 16
      and V at most 256 KiB).

    Example:
      >>> kernel_support(lstm_init(jax.random.key(0), 2, 24), backend="gpu")["pallas"]
      'hidden size 24 is not a power of two >= 16 (...)'
    """
    spec = cell_spec(params)
    if not has_fused_layer(spec, params):
        reason = f"the {spec.name!r} cell has no fused layer (it runs jax.lax.scan of its step)"
        return {"xla": reason, "pallas": reason}
    return {"xla": None, "pallas": _pallas.unsupported(spec.blocks, params, compute_dtype, backend)}


def _check_pallas(step, params, spec, fused, remat) -> None:
    """Raises ValueError unless ``kernel="pallas"`` can apply to this call."""
    if spec is None or spec.fused is None or spec.blocks is None:
        names = [n for n in cell_names() if cell_spec_by_name(n).blocks is not None]
        what = (
            f"step {getattr(step, '__name__', step)!r} is not a registered cell's step"
            if spec is None
            else f"the {spec.name!r} cell has none"
        )
        raise ValueError(
            f"kernel='pallas' needs a cell with Pallas kernels ({', '.join(names)}), and "
            f"{what}: pass kernel=None or 'xla'"
        )
    if not fused:
        raise ValueError("kernel='pallas' runs the fused layer: it needs fused=True, got False")
    if remat:
        raise ValueError(
            "kernel='pallas' saves the activations and has no remat: pass remat=False, or "
            "kernel='xla' (or None) for remat"
        )


def _parallel_kernel(kernel, spec: CellSpec, params, batch, num_steps, fused) -> str:
    """How a parallel-in-time cell runs: "parallel" (its ``parallel_unroll``) or
    "sequential" (the scan of its step): ``kernel`` when it names one, "sequential" under
    fused=False, else the measured choice (``default_kernel``)."""
    if kernel in ("parallel", "sequential"):
        if not fused and kernel == "parallel":
            raise ValueError(
                "kernel='parallel' runs the parallel unroll, and fused=False runs the scan of "
                "the step: pass one of them"
            )
        return kernel
    if not fused:
        return "sequential"
    hidden = spec.output_size(params)
    return choice.parallel_for(spec, batch, num_steps, hidden)


def _layer_kernel(kernel, spec: CellSpec, params, xs_tm, remat, compute_dtype) -> str:
    """The kernel the fused layer runs: ``kernel``, or ``default_kernel`` for None; a
    forced "pallas" the backend cannot run becomes "xla" with a warning."""
    if kernel is None:
        if remat:
            return "xla"
        batch = math.prod(xs_tm.shape[1:-1])
        return choice.kernel_for(spec, params, batch, xs_tm.shape[0], compute_dtype)
    if kernel == "pallas":
        reason = _pallas.unsupported(spec.blocks, params, compute_dtype)
        if reason is not None:
            warnings.warn(
                f"kernel='pallas' cannot run this layer on the {jax.default_backend()} "
                f"backend ({reason}); running kernel='xla'",
                RuntimeWarning,
                stacklevel=3,
            )
            return "xla"
    return kernel


def _under_forward_mode(*trees: Any) -> bool:
    """True when a leaf of ``trees`` is being differentiated in forward mode (``jax.jvp``,
    ``jax.jacfwd``) by a transformation applied around this call.

    The fused layer is a ``jax.custom_vjp``, which JAX cannot differentiate forwards, so
    ``unroll`` then runs the plain scan. It looks through ``vmap`` to the innermost
    differentiation that wraps each leaf: a jvp tracer there means forward mode; a reverse
    one (``jax.grad``, ``jax.vjp``, also around a jvp: ``jax.hessian``) is served by the
    fused layer. What a transformation traces before the jvp (``jax.jvp(jax.jit(f))``,
    ``lax.scan`` or ``jax.checkpoint`` bodies) is invisible here.
    """
    jvp_tracer = getattr(jax.interpreters.ad, "JVPTracer", None)
    if jvp_tracer is None or not getattr(jax.config, "jax_use_direct_linearize", True):
        return False  # unknown tracers, or jax.grad itself traces with jvp tracers
    for leaf in jax.tree.leaves(trees):
        while isinstance(leaf, jax.core.Tracer):
            if isinstance(leaf, jvp_tracer):
                return True
            if hasattr(leaf, "tangent"):  # a reverse-mode (linearize) tracer
                break
            leaf = getattr(leaf, "val", None)  # a vmap tracer holds the value it batches
    return False


class _Shape(str):
    """A leaf's dtype and shape, ``float32(2, 4)``, printed without quotes in a tree."""

    def __repr__(self) -> str:
        return str(self)


def _describe(tree: Any) -> str:
    """A carry's structure, dtypes and shapes: ``LSTMState(h=float32(2, 4), c=...)``."""

    def leaf(x: Any) -> _Shape:
        return _Shape(f"{jnp.dtype(x.dtype).name}{_checks.shape_str(x.shape)}")

    return repr(jax.tree.map(leaf, tree))


def _step_name(step: Callable) -> str:
    return getattr(step, "__qualname__", None) or getattr(step, "__name__", None) or repr(step)


def _check_step_carry(step: Callable, spec: Any, params: Any, carry: Any, xs_tm: Any) -> None:
    """Raises unless one step returns a pair whose carry has the structure, shapes and
    dtypes of the carry it is given (what ``jax.lax.scan`` needs), naming the step and,
    for a registered cell, the cell. Runs on shapes only (``jax.eval_shape``).

    TypeError for another structure or dtype, ValueError for another shape.
    """

    given = jax.eval_shape(lambda c: c, carry)  # a Python scalar stays weakly typed
    x0 = jax.ShapeDtypeStruct(xs_tm.shape[1:], xs_tm.dtype)
    # params closed over, as in the scan's body: they may hold leaves that are not arrays.
    out = jax.eval_shape(lambda c, x: step(params, c, x), given, x0)
    name = _step_name(step)
    if spec is not None:
        name += f" (of the registered cell {spec.name!r})"
    if not isinstance(out, tuple) or len(out) != 2 or hasattr(out, "_fields"):
        raise TypeError(
            f"step {name} must return a pair (carry, y), got {type(out).__name__}"
            + (f" of length {len(out)}" if type(out) in (tuple, list) else "")
        )
    returned = out[0]
    what = (
        f"step {name} must return a carry of the structure, shapes and dtypes of the carry "
        f"it is given: expected {_describe(given)}, got {_describe(returned)}"
    )
    structure: Any = jax.tree.structure(given)
    if jax.tree.structure(returned) != structure:
        raise TypeError(what)
    pairs = list(zip(jax.tree.leaves(given), jax.tree.leaves(returned), strict=True))
    if any(tuple(a.shape) != tuple(b.shape) for a, b in pairs):
        raise ValueError(what)
    # A weakly typed carry (a Python float) takes the step's dtype, as in jax.lax.scan.
    if any(a.dtype != b.dtype and not a.weak_type for a, b in pairs):
        raise TypeError(what)


def _zero_padding(xs_tm: jax.Array, lengths: jax.Array) -> jax.Array:
    """(T, *batch, D) inputs with every step past its sequence's length set to 0.

    Padding must be inert: the frozen steps still feed their input to the cell and drop
    the result, and the backward pass multiplies their zero cotangent by the derivatives at
    a NaN or inf input (0 * NaN = NaN) into every weight gradient. One select before the
    loop; its own gradient at the padding is exactly 0.
    """
    num_steps = xs_tm.shape[0]
    t = jnp.arange(num_steps, dtype=lengths.dtype).reshape((num_steps,) + (1,) * lengths.ndim)
    valid = t < lengths.reshape((1,) + lengths.shape)
    return jnp.where(_expand_to(valid, xs_tm), xs_tm, jnp.zeros((), xs_tm.dtype))


def _expand_to(mask: jax.Array, leaf: jax.Array) -> jax.Array:
    """Reshapes a (*batch,) mask so it broadcasts against a (*batch, ...) leaf."""
    return mask.reshape(mask.shape + (1,) * (leaf.ndim - mask.ndim))


def _reverse_index(lengths: jax.Array, num_steps: int) -> jax.Array:
    """(T, *batch) time indices reversing each sequence's valid prefix; an involution."""
    t = jnp.arange(num_steps, dtype=lengths.dtype).reshape((num_steps,) + (1,) * lengths.ndim)
    lengths = lengths.reshape((1,) + lengths.shape)
    return jnp.where(t < lengths, lengths - 1 - t, t)


def _gather_time(tree: Any, index: jax.Array) -> Any:
    """Gathers every (T, *batch, ...) leaf of ``tree`` along time with a (T, *batch) index."""

    def gather(leaf):
        idx = index.reshape(index.shape + (1,) * (leaf.ndim - index.ndim))
        idx = jnp.broadcast_to(idx, index.shape + leaf.shape[index.ndim :])
        return jnp.take_along_axis(leaf, idx, axis=0)

    return jax.tree.map(gather, tree)


def _forward_only(run, params, carry, xs_tm, lengths, reverse, **kwargs):
    """``run(params, carry, xs_tm, lengths, **kwargs)``, a forward-only layer (fused or
    parallel in time), with reverse runs reordering each valid prefix around it."""
    if not reverse:
        return run(params, carry, xs_tm, lengths, **kwargs)
    if lengths is None:
        carry, ys = run(params, carry, xs_tm[::-1], None, **kwargs)
        return carry, jax.tree.map(lambda y: y[::-1], ys)
    index = _reverse_index(lengths, xs_tm.shape[0])
    carry, ys = run(params, carry, _gather_time(xs_tm, index), lengths, **kwargs)
    return carry, _gather_time(ys, index)


def has_fused_layer(spec: CellSpec, params: Any) -> bool:
    """Whether ``unroll`` runs the cell of ``spec`` as a fused layer: its hand-written
    fused unit (``spec.fused``), or the generic fused layer of its body (``spec.cell``,
    given ``params`` whose W and b the generic layer can hoist)."""
    if spec.fused is not None:
        return True
    return spec.cell is not None and _generic.supports(params)


def _fused_scan(spec: CellSpec, params, carry, xs_tm, lengths, *, reverse, kernel, **kwargs):
    """The fused layer of a cell: its fused unit's, else the generic layer of its body;
    reverse runs reorder time around it."""
    if spec.fused is not None:
        run = functools.partial(_fused.fused_scan, spec.fused, blocks=spec.blocks, kernel=kernel)
    else:
        assert kernel == "xla"  # _check_pallas refused "pallas" for a cell without blocks
        assert spec.cell is not None  # has_fused_layer said so
        run = functools.partial(
            _generic.generic_scan,
            spec.cell,
            spec.state,
            linear_v=spec.linear_v,
            saves=spec.cell_saves,
        )
    return _forward_only(run, params, carry, xs_tm, lengths, reverse, **kwargs)


def _scan(step, params, carry, xs_tm, lengths, *, reverse, unroll, remat):
    """Time-major scan of ``step`` with optional masking by lengths."""
    num_steps = xs_tm.shape[0]

    if lengths is None:

        def body(carry, x):
            return step(params, carry, x)

        if remat:
            body = jax.checkpoint(body)
        return jax.lax.scan(body, carry, xs_tm, reverse=reverse, unroll=unroll)

    if reverse:
        index = _reverse_index(lengths, num_steps)
        xs_tm = _gather_time(xs_tm, index)

    def masked_body(carry, inputs):
        t, x = inputs
        new_carry, y = step(params, carry, x)
        valid = t < lengths
        new_carry = jax.tree.map(
            lambda new, old: jnp.where(_expand_to(valid, new), new, old), new_carry, carry
        )
        y = jax.tree.map(lambda leaf: jnp.where(_expand_to(valid, leaf), leaf, 0), y)
        return new_carry, y

    if remat:
        masked_body = jax.checkpoint(masked_body)
    steps = jnp.arange(num_steps, dtype=lengths.dtype)
    carry, ys = jax.lax.scan(masked_body, carry, (steps, xs_tm), unroll=unroll)
    if reverse:
        ys = _gather_time(ys, index)
    return carry, ys
