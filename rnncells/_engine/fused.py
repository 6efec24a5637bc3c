"""The fused layer: a cell's unroll with a hand-written backward pass for the whole layer.

``fused_scan`` computes exactly what ``jax.lax.scan`` of the cell's step computes (the
equations of its file in ``rnncells/cells/``), but its gradient is a
``jax.custom_vjp`` written for the unrolled layer, as fused RNN kernels do:

- the forward scan saves what the backward needs (the gate activations and the carries),
  or, under ``remat``, only the carries, and the backward recomputes the gates per step;
- the backward scan runs in reverse, carries only the carry gradients (dh, and dc for
  the LSTM) and emits the per-step gate pre-activation gradients dA_t;
- the time-parallel work then leaves the loop as single large matmuls:
  dV = sum_t h_{t-1}^T dA_t, dW = sum_t x_t^T dA_t, db = sum_t dA_t, dx_t = dA_t W^T.

Two parts, so that a cell is one unit:

- Each cell brings a ``FusedCell`` (``unit.py``), defined in its own file beside its
  equations and held by its ``CellSpec.fused``: its forward step (``activations`` of the
  gates from h_{t-1} and x_t W + b, then ``update`` of the carry), which activations it
  saves, its backward step from them, and how dV (and any other parameter's gradient) is
  formed from the loop's outputs. ``unroll`` passes it here with the config.
- The driver here owns what all cells share and never looks at which cell it runs: the
  loops, lengths (a carry frozen past its sequence's length, zero outputs, the carry
  gradient passed straight through), remat, the prefetching in-place loop
  (``_prefetch_scan``), x @ W for all steps before the loop, the out-of-loop matmuls for
  dW, db and dx, and ``compute_dtype``.

At unroll 1 (the CPU default) a training run without remat, of a cell that saves
activations, also computes x @ W for all steps as one matmul before the forward loop,
writes each step's activations over its slot of that array, and writes the backward's
dA_t (and the cell's other ``overwrite`` outputs) over the activations of step t: one
(T, B, G*H) array serves all three, and XLA never fills a new one with zeros. Both loops
read each step's slices one iteration ahead into their carry, because XLA:CPU runs
elementwise kernels that slice an array at the loop index several times slower (bench.md,
"Backward loop"). At unroll > 1 (the GPU default) both loops are plain scans with stacked
outputs.

Sequences are time-major (T, B, ...) with one flattened batch axis; ``lengths`` freezes
each carry past its sequence's length and zeroes its outputs, as in ``unroll``. Reverse
runs are handled by the caller (``rnncells.unrolling``) by reordering time outside this
module.

A unit may replace x_t @ W + b by a term of its own (``FusedCell.inputs``; the LN cells'
LN(x_t W; γ_x) + b). Training at unroll 1 without remat (the CPU default), the layer forms
it for all steps at once before the forward loop; at unroll > 1 or under remat the
forward forms it per step. Its vector-Jacobian product is taken for all T * B rows at
once after the backward loop (per step inside it under remat), from which dW and dx
follow as above.

Values equal the plain scan up to floating-point rounding: the sigmoid is evaluated as
0.5 * tanh(0.5 * a) + 0.5, which is the same function.

Optional ``compute_dtype`` (e.g. bfloat16) runs every matmul on inputs cast to it, with
accumulation, carries, gate arithmetic, parameters and gradients in the parameters' dtype.

``Config.kernel`` chooses how the two loops run: "xla" (the scans above) or "pallas"
(``pallas.py``, with the cell's ``BlockCell``: each loop one Pallas kernel, V held on chip
across all steps, interpreted on a CPU). Everything around the loops is this module's, for
both: x @ W for all steps before the forward loop, the residuals, and dW, dV, db and dx
after the backward loop. The Pallas kernels need the batch in blocks of rows: ``fused_scan``
pads it with zero rows of length 0 and drops them from the results.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnncells._engine import pallas as _pallas
from rnncells._engine.unit import BlockCell, FusedCell, mm, mm_tn
from rnncells._math import row


class Config(NamedTuple):
    """Static choices of one fused unroll (hashable: one compiled layer per config)."""

    cell: FusedCell  # the cell's fused unit (its CellSpec.fused)
    masked: bool  # whether lengths are given
    unroll: int  # lax.scan unroll factor of both loops
    remat: bool  # save only carries; the backward recomputes the gates
    compute_dtype: str | None  # matmul input dtype name, None for the parameters' dtype
    kernel: str = "xla"  # the loops: "xla" (lax.scan) or "pallas" (pallas.py)
    pallas: _pallas.Options | None = None  # how the Pallas kernels run (kernel="pallas")
    blocks: BlockCell | None = None  # the cell's kernel blocks (kernel="pallas")


def default_config(
    params,
    cell: FusedCell,
    *,
    masked,
    unroll,
    remat,
    compute_dtype,
    kernel="xla",
    blocks: BlockCell | None = None,
    backend=None,
) -> Config:
    """The layer's choices for ``params`` of a cell with the fused unit ``cell`` and the
    caller's options.

    ``kernel`` is "xla" or "pallas" (already checked and chosen by ``unroll``); for
    "pallas", ``blocks`` is the cell's ``BlockCell`` and ``backend`` (JAX's default when
    None) decides whether the kernels are interpreted (CPU) or compiled (GPU), and their
    block of batch rows.
    """
    if not isinstance(cell, FusedCell):
        raise TypeError(f"cell must be a FusedCell, got {type(cell).__name__}")
    if kernel not in ("xla", "pallas"):
        raise ValueError(f"kernel must be 'xla' or 'pallas' here, got {kernel!r}")
    if kernel == "pallas" and remat:
        raise ValueError("the Pallas kernels save the activations: remat needs kernel='xla'")
    if kernel == "pallas" and blocks is None:
        raise ValueError("kernel='pallas' needs the cell's kernel blocks, got blocks=None")
    return Config(
        cell=cell,
        masked=masked,
        unroll=unroll,  # the user's, or rnncells.default_unroll (8 on a GPU, 1 on a CPU)
        remat=remat,
        compute_dtype=None if compute_dtype is None else jnp.dtype(compute_dtype).name,
        kernel=kernel,
        pallas=_pallas.options(params, compute_dtype, backend) if kernel == "pallas" else None,
        blocks=blocks if kernel == "pallas" else None,
    )


def fused_scan(
    cell: FusedCell, params, carry, xs_tm, lengths=None, *, config: Config | None = None, **kw
):
    """Runs a cell over time-major ``xs_tm`` (T, *batch, D) with the fused layer.

    Args:
      cell: the cell's fused unit (its ``CellSpec.fused``).
      params: the cell's params (W (D, G*H), V (H, G*H), b (G*H,) and what its unit reads).
      carry: the cell's state NamedTuple, leaves (*batch, H).
      xs_tm: inputs (T, *batch, D).
      lengths: optional (*batch,) int valid lengths (already checked).
      config: the static choices; None takes ``default_config`` with ``kw`` (masked is
        set from ``lengths``).

    Returns:
      (final_carry, ys_tm) as ``jax.lax.scan`` of the masked public step returns them.
    """
    if config is None:
        config = default_config(params, cell, masked=lengths is not None, **kw)
    state = config.cell.state
    num_steps, batch_shape = xs_tm.shape[0], tuple(xs_tm.shape[1:-1])
    batch = math.prod(batch_shape)
    xs = xs_tm.reshape((num_steps, batch, xs_tm.shape[-1]))
    # Carry fields may differ in width (the LSTMP's r and c): each keeps its own.
    carry0 = tuple(leaf.reshape((batch, leaf.shape[-1])) for leaf in carry)
    lens = None if lengths is None else lengths.reshape((batch,))
    if config.kernel == "pallas":  # whole blocks of rows; the padding has length 0
        assert config.pallas is not None  # default_config sets it for kernel="pallas"
        xs, carry0, lens = _pallas.pad_batch(config.pallas.block_b, xs, carry0, lens)
    final, ys = _layer(config)(params, carry0, xs, lens)
    if xs.shape[1] != batch:
        final, ys = tuple(leaf[:batch] for leaf in final), ys[:, :batch]
    ys = ys.reshape((num_steps,) + batch_shape + ys.shape[-1:])
    return state(*(leaf.reshape(batch_shape + leaf.shape[-1:]) for leaf in final)), ys


# ----------------------------------------------------------------------------- helpers


def _col(mask):
    """(B,) bool -> (B, 1)."""
    return mask.reshape(mask.shape + (1,))


def _shift_in(first, seq):
    """The sequence of previous values: [first, seq[0], ..., seq[T-2]] (T, B, H)."""
    return jnp.concatenate([first[None], seq[:-1]], axis=0)


def _prefetch_scan(body, carry, seq, overwrite, num_steps, *, reverse, before_write=None):
    """``jax.lax.scan`` of ``body(carry, slices) -> (carry, out)`` over the (T, ...) arrays
    of ``seq``, with ``unroll=1``, faster on XLA:CPU.

    Each step's slices are read one iteration ahead into the loop carry, so that the step's
    kernels read plain arrays: XLA:CPU runs an elementwise kernel that slices an array at
    the loop index several times slower (bench.md, "Backward loop"). For each ``k: name``
    of ``overwrite``, step t writes ``out[name]`` (as wide as ``seq[k]``) over slot t of
    ``seq[k]``, which no later step reads, instead of stacking it into a new array that XLA
    would first fill with zeros; the overwritten arrays come back as ``outs[name]``. The
    next read is taken from the array the write returns, which orders it after the write,
    so XLA updates in place. ``before_write(t, carry, out)`` may edit ``out`` first.
    """
    seq = dict(seq)
    bufs = {k: seq.pop(k) for k in overwrite if k in seq}
    last = num_steps - 1

    def read(t, bufs):
        arrays = {**seq, **bufs}
        return {k: jax.lax.dynamic_index_in_dim(v, t, 0, keepdims=False) for k, v in arrays.items()}

    def step(state, t):
        carry, cur, bufs = state
        carry, out = body(carry, cur)
        if before_write is not None:
            out = before_write(t, carry, out)
        bufs = {
            k: jax.lax.dynamic_update_index_in_dim(b, out.pop(overwrite[k]), t, 0)
            for k, b in bufs.items()
        }
        nxt = jnp.maximum(t - 1, 0) if reverse else jnp.minimum(t + 1, last)
        return (carry, read(nxt, bufs), bufs), out

    init = (carry, read(last if reverse else 0, bufs), bufs)
    (carry, _, bufs), outs = jax.lax.scan(step, init, jnp.arange(num_steps), reverse=reverse)
    outs.update({overwrite[k]: b for k, b in bufs.items()})
    return carry, outs


# ----------------------------------------------------------------------------- layer


def _valid(lengths, num_steps):
    """(T, B) bool: step t lies within its sequence's length."""
    return jnp.arange(num_steps, dtype=lengths.dtype)[:, None] < lengths[None, :]


def _cast(a, cd):
    return a if cd is None else a.astype(cd)


def _gate_in(cell: FusedCell, params, x, cd):
    """x_t @ W + b for one step (B, G*H), or the cell's ``inputs`` of x_t @ W."""
    if cell.inputs is not None:
        return cell.inputs(params, mm(x, params.W, cd, params.W.dtype))
    return mm(x, params.W, cd, params.W.dtype) + row(params.b, 2)


def _inputs_of(cell: FusedCell, params, xw):
    """The gates' input term of all steps from x @ W (T, B, G*H)."""
    if cell.inputs is None:
        return xw + row(params.b, 3)
    return cell.inputs(params, xw)


def _gates_in(params, xs, cd):
    """x @ W for all steps at once: (T, B, G*H) (b is added in the loop)."""
    num_steps, batch, _ = xs.shape
    gx = mm(xs.reshape((num_steps * batch, -1)), params.W, cd, params.W.dtype)
    return gx.reshape((num_steps, batch, -1))


def _forward(cell: FusedCell, cfg: Config, params, carry0, xs, lengths, save):
    """The forward loop: (final carry, outs), outs["y"] the outputs (T, B, H); ``save``
    adds what the backward needs: the carried h where it differs from y, each other carry
    field's previous value as "<field>_prev", and (without remat) the cell's saved arrays.
    """
    cd = None if cfg.compute_dtype is None else jnp.dtype(cfg.compute_dtype)
    fields = cell.state._fields
    num_steps = xs.shape[0]
    p = params._replace(V=_cast(params.V, cd))  # V cast once, outside the loop
    if cfg.kernel == "pallas":
        blocks = cfg.blocks
        assert blocks is not None  # default_config sets it for kernel="pallas"
        gx = _inputs_of(cell, params, _gates_in(params, xs, cd))
        lens = lengths if cfg.masked else None
        consts = blocks.consts(params)
        return _pallas.forward(blocks, fields, cfg.pallas, p.V, consts, carry0, gx, lens, save)
    # Training at unroll 1: x @ W for all steps is one matmul before the loop, and each
    # step writes its activations (as wide as x @ W) over its slot of that array, which
    # no later step reads: no per-step x @ W, and no new (T, B, G*H) array that XLA
    # would first fill with zeros. Forward-only and remat runs keep O(B H) memory.
    hoist = save and not cfg.remat and cfg.unroll == 1 and bool(cell.saved)
    seq = _gates_in(params, xs, cd) if hoist else xs
    if hoist and cell.inputs is not None:  # the cell's input term, for all steps at once
        seq = cell.inputs(params, seq)
    valid = _valid(lengths, num_steps) if cfg.masked else None

    def body(carry, inp):
        s, valid_t = inp
        if not hoist:
            gx = _gate_in(cell, params, s, cd)
        else:
            gx = s + row(params.b, 2) if cell.inputs is None else s
        acts = cell.activations(p, carry if cell.reads_carry else carry[0], gx, cd)
        new = cell.update(acts, carry)
        y = new[0]
        if cfg.masked:
            m = _col(valid_t)
            new = tuple(jnp.where(m, n, old) for n, old in zip(new, carry, strict=True))
            y = jnp.where(m, y, jnp.zeros_like(y))
        out = {"y": y}
        if save:
            if cfg.masked or cfg.remat:
                out["h"] = new[0]  # the carried h (ys are zeros past the length)
            for name, old in zip(fields[1:], carry[1:], strict=True):
                out[name + "_prev"] = old  # the state this step started from
            if not cfg.remat:
                out.update(cell.save(acts))
        return new, out

    if not hoist:
        return jax.lax.scan(body, carry0, (seq, valid), unroll=cfg.unroll)
    slices = {"gx": seq, **({"valid": valid} if cfg.masked else {})}
    return _prefetch_scan(
        lambda carry, s: body(carry, (s["gx"], s.get("valid"))),
        carry0,
        slices,
        {"gx": cell.saved[0]},  # each step's activations over its slot of x @ W
        num_steps,
        reverse=False,
    )


def _backward(cell: FusedCell, cfg: Config, res, cts):
    """The backward pass: gradients of (params, carry0, xs, lengths)."""
    cd = None if cfg.compute_dtype is None else jnp.dtype(cfg.compute_dtype)
    params, carry0, xs, lengths, hs, prevs, saved = res
    dcarry_T, dys = cts
    num_steps = xs.shape[0]
    dtype = params.V.dtype
    V = _cast(params.V, cd)
    VT = V.T
    p = params._replace(V=V)
    hs_prev = _shift_in(carry0[0], hs)
    if cfg.kernel == "pallas":
        # The loop in one kernel (pallas.py); what follows it is shared.
        blocks = cfg.blocks
        assert blocks is not None  # default_config sets it for kernel="pallas"
        reads = {"h_prev": hs_prev, **prevs}
        dcarry0, outs = _pallas.backward(
            blocks,
            cell.state._fields,
            cfg.pallas,
            V,
            blocks.consts(params),
            tuple(dcarry_T),
            dys,
            saved,
            {k: reads[k] for k in blocks.reads},
            lengths if cfg.masked else None,
        )
        return _grads_after_loop(cell, cfg, params, xs, hs_prev, dcarry0, outs)
    seq = {"dy": dys, **prevs}
    if cfg.remat or "h_prev" in cell.reads:
        seq["h_prev"] = hs_prev
    if cfg.remat:
        seq["x"] = xs
    else:
        seq.update(saved)  # the gate activations
    if cfg.masked:
        seq["valid"] = _valid(lengths, num_steps)
    if "h_t" in cell.reads:
        seq["h_t"] = hs
    recompute = cfg.remat and bool(cell.saved)  # a cell that saves nothing reads carries
    W = _cast(params.W, cd)

    consts = cell.consts(params) if cell.consts is not None else {}

    def body(dcarry, s):
        if consts:
            s = {**s, **consts}
        dh = dcarry[0]
        dcell = (dh + s["dy"],) + tuple(dcarry[1:])
        if cfg.masked:
            m = _col(s["valid"])
            dcell = tuple(jnp.where(m, d, jnp.zeros_like(d)) for d in dcell)
        if recompute:
            prev = s["h_prev"]
            if cell.reads_carry:  # the carry the step started from
                prev = (prev, *(s[f + "_prev"] for f in cell.state._fields[1:]))
            acts = cell.activations(p, prev, _gate_in(cell, params, s["x"], cd), cd)
        else:
            acts = cell.load(s)
        dprev, out = cell.backward(VT, dcell, acts, s, cd)
        if cfg.masked:
            # A frozen step passes its carry's gradient straight through.
            dprev = tuple(
                dp + jnp.where(m, jnp.zeros_like(d), d) for dp, d in zip(dprev, dcarry, strict=True)
            )
        return dprev, out

    if cfg.remat:
        # Memory O(carry): the weight gradients accumulate in the loop, dx_t leaves it.
        def remat_body(carry, s):
            dcarry, acc = carry
            dcarry, out = body(dcarry, s)
            grads, dxw = _weight_grads(cell, cd, params, s["x"], s["h_prev"], out)
            acc = jax.tree.map(jnp.add, acc, grads)
            return (dcarry, acc), mm(dxw, W.T, cd, dtype)

        init = (dcarry_T, jax.tree.map(jnp.zeros_like, params))
        (dcarry0, grads), dxs = jax.lax.scan(remat_body, init, seq, reverse=True, unroll=cfg.unroll)
        return grads, dcarry0, dxs, None

    def tie_dA(t, dcarry, out):
        """The carry gradient ``cell.tie`` (the LSTM's dc_{t-1} = dc_t f_t, the GRU's
        dh_{t-1} = dh_t (1 - z_t) + ...) reads the activations without leading to dA_t. A
        select that never takes it orders those reads before the write, so XLA need not
        copy the carried activations every step."""
        tie = dcarry[cell.tie]
        reps = out["dA"].shape[-1] // tie.shape[-1]
        return dict(out, dA=jnp.where(t < 0, jnp.tile(tie, (1, reps)), out["dA"]))

    if cfg.unroll > 1:
        # Within an unrolled iteration XLA fuses the slices into the steps' kernels and
        # would copy a buffer that is read and overwritten there: plain stacked outputs.
        dcarry0, outs = jax.lax.scan(body, dcarry_T, seq, reverse=True, unroll=cfg.unroll)
    else:
        overwrite = dict(cell.overwrite)  # e.g. dA_t over the activations, as wide
        dcarry0, outs = _prefetch_scan(
            body,
            dcarry_T,
            seq,
            overwrite,
            num_steps,
            reverse=True,
            before_write=tie_dA if overwrite else None,
        )
    return _grads_after_loop(cell, cfg, params, xs, hs_prev, dcarry0, outs)


def _weight_grads(cell: FusedCell, cd, params, x, hp, outs):
    """The params-typed gradient from rows of x_t, h_{t-1} and the loop's outputs, and
    the gradient of x_t @ W (dA_t, or through the cell's ``inputs``)."""
    dtype = params.V.dtype

    def tn(a, b):
        return mm_tn(a, b, cd, dtype)

    structure = jax.tree.structure(params)  # params' own type (a subclass, say)
    if cell.consts is not None:  # grads may read them too (the sLSTM's V, for its heads)
        outs = {**cell.consts(params), **outs}
    if cell.inputs is None:
        dW = mm_tn(x, outs["dA"], cd, dtype)
        db = jnp.sum(outs["dA"], axis=0)
        grads = cell.grads(dW, db, hp, outs, tn)
        return jax.tree.unflatten(structure, jax.tree.leaves(grads)), outs["dA"]
    # The input term's product for all rows at once: x @ W again, one matmul.
    _, vjp = jax.vjp(cell.inputs, params, mm(x, params.W, cd, dtype))
    d_inputs, dxw = vjp(outs["dA"])
    grads = cell.grads(tn(x, dxw), jnp.zeros_like(params.b), hp, outs, tn)
    grads = jax.tree.unflatten(structure, jax.tree.leaves(grads))
    return jax.tree.map(jnp.add, grads, d_inputs), dxw


def _grads_after_loop(cell: FusedCell, cfg: Config, params, xs, hs_prev, dcarry0, outs):
    """What leaves the backward loop as single large matmuls over all T * B rows: dW, db,
    dV (and the cell's other parameter gradients, ``cell.grads``) and dx_t = dA_t W^T."""
    cd = None if cfg.compute_dtype is None else jnp.dtype(cfg.compute_dtype)
    dtype = params.V.dtype
    num_steps, batch, _ = xs.shape
    rows = num_steps * batch
    dA = outs.pop("dA").reshape((rows, -1))
    outs = {"dA": dA, **{k: v.reshape((rows, -1)) for k, v in outs.items()}}
    hp = hs_prev.reshape((rows, hs_prev.shape[-1]))  # h_{t-1}: H, or the LSTMP's P, wide
    grads, dxw = _weight_grads(cell, cd, params, xs.reshape((rows, -1)), hp, outs)
    dxs = mm(dxw, _cast(params.W, cd).T, cd, dtype).reshape(xs.shape)
    return grads, tuple(dcarry0), dxs, None


@functools.cache
def _layer(cfg: Config):
    """The custom_vjp layer (params, carry0, xs, lengths) -> (final carry, ys) for ``cfg``;
    carry0 is the tuple of the cell's carry fields, each (B, H)."""
    cell = cfg.cell

    @jax.custom_vjp
    def layer(params, carry0, xs, lengths):
        final, outs = _forward(cell, cfg, params, carry0, xs, lengths, save=False)
        return final, outs["y"]

    def layer_fwd(params, carry0, xs, lengths):
        final, outs = _forward(cell, cfg, params, carry0, xs, lengths, save=True)
        hs = outs.get("h", outs["y"])
        prevs = {f + "_prev": outs[f + "_prev"] for f in cell.state._fields[1:]}
        saved = {k: outs[k] for k in cell.saved if k in outs}
        return (final, outs["y"]), (params, carry0, xs, lengths, hs, prevs, saved)

    def layer_bwd(res, cts):
        return _backward(cell, cfg, res, cts)

    layer.defvjp(layer_fwd, layer_bwd)
    return layer
