"""Pallas kernels of the fused layer: each loop of a layer (forward, backward) in one launch.

``unroll(..., kernel="pallas")`` runs the fused layer (``fused.py``) with its two loops
replaced by one Pallas kernel each; everything around them is the fused layer's own code,
so the two kernels compute the same function with the same ``jax.custom_vjp``:

- before the forward kernel: x @ W + b for all steps, one matmul (``fused._gates_in``);
- the forward kernel runs all T steps and writes y_t, the final carry and, when the layer
  is differentiated, what the backward needs: the arrays the cell's ``FusedCell`` saves
  (the gate activations), the carried h (with lengths) and each later carry field's
  previous value (the LSTM's C_{t-1});
- the backward kernel runs the T steps in reverse carrying dh (and dC) and writes dA_t
  (and the other per-step outputs the cell's ``FusedCell.grads`` reads);
- after it: dW, dV, db and dx as single large matmuls (``fused._backward``'s tail and the
  cell's ``FusedCell.grads``).

Grid and what stays on chip (written for the Triton backend of Pallas on GPUs; the grid
is one axis over blocks of ``block_b`` batch rows, each program runs its rows through all
T steps):

- V (H, G*H), in the compute dtype, is loaded once per program, as G blocks (H, H), before
  the time loop and held in registers across all T steps (the compiler spills what does
  not fit to local memory); the carries (block_b, H) stay in registers too. Only x_t W + b
  (forward), dy_t and the saved activations (backward) are read per step, and y_t and the
  saved arrays (forward) or dA_t (backward) written.
- Limits on a GPU (``unsupported``): H a power of two >= 16 (Triton's tensors have
  power-of-two sizes, and its matmuls need 16 rows and columns) and V at most
  ``MAX_V_BYTES`` = 256 KiB: H <= 128 for the LSTM and both GRUs, in fp32 and in bf16
  (H = 256 needs 768 KiB to 1 MiB in fp32). The batch is padded to a multiple of
  ``GPU_BLOCK_B`` = 16 rows. Above the limits ``unroll`` runs the XLA layer: silently
  for ``kernel=None``, with a ``RuntimeWarning`` naming the limit for
  ``kernel="pallas"``. A larger H would need V split over programs that exchange h_t
  every step (a grid-wide barrier), which these kernels do not do.
- Warps per program: enough that V takes about 128 registers per thread (4 to 16: 16 for
  the fp32 LSTM at H = 128), a first guess for the GPU benchmark to confirm.
- In fp32 the kernel's matmuls run at full fp32 precision (Triton's "ieee"), as the
  benchmark demands; ``compute_dtype=bfloat16`` holds V in bf16 (half the bytes) and
  multiplies in bf16 with fp32 accumulation.

On a CPU the same kernels run with ``interpret=True`` (Pallas's interpreter: the kernel
as plain JAX), so CI tests them; there the block is ``CPU_BLOCK_B`` = 2 rows, so that the
tests' tiny batches span several programs and a padded last block. On other backends
(TPU) ``unroll`` runs the XLA layer.

The equations are the cell's: its ``BlockCell`` (``unit.py``, held by its
``CellSpec.blocks`` and written in its own file) restates its ``FusedCell``'s step and
backward step on per-gate (B, H) blocks, which a kernel can hold in registers.
``tests/engine/test_pallas.py`` checks the kernels against the XLA layer in values and
gradients.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from rnncells._engine.unit import BlockCell

MAX_V_BYTES = 256 * 1024  # V held per program on a GPU: the LSTM's at H = 128 in fp32
GPU_BLOCK_B = 16  # batch rows per program on a GPU: the least M of a Triton matmul
CPU_BLOCK_B = 2  # in interpret mode: tiny test batches still span several programs
MIN_HIDDEN = 16  # the least K and N of a Triton matmul


# ----------------------------------------------------------------------------- choices


class Options(NamedTuple):
    """How the kernels run: interpreted (CPU) or compiled by Triton (GPU)."""

    interpret: bool
    block_b: int  # batch rows per program
    num_warps: int  # Triton warps per program (0 when interpreted)


def v_bytes(params: Any, compute_dtype: Any = None) -> int:
    """Bytes of V as a kernel holds it: (H, G*H) in the compute dtype."""
    dtype = jnp.dtype(params.V.dtype if compute_dtype is None else compute_dtype)
    return math.prod(params.V.shape) * dtype.itemsize


def unsupported(
    blocks: BlockCell | None,
    params: Any,
    compute_dtype: Any = None,
    backend: str | None = None,
) -> str | None:
    """Why the kernels cannot run the layer of ``params``, of a cell whose kernel blocks
    are ``blocks``, on ``backend`` (JAX's default when None); None when they can. Any shape
    runs interpreted on a CPU."""
    backend = jax.default_backend() if backend is None else backend
    if blocks is None:
        return f"{type(params).__name__} has no Pallas kernel"
    if backend == "cpu":
        return None
    if backend != "gpu":
        return f"the kernels are written for GPUs (Triton), and the backend is {backend!r}"
    hidden = params.V.shape[0]
    if hidden < MIN_HIDDEN or hidden & (hidden - 1):
        return (
            f"hidden size {hidden} is not a power of two >= {MIN_HIDDEN} "
            "(Triton's tensor sizes are powers of two)"
        )
    size = v_bytes(params, compute_dtype)
    if size > MAX_V_BYTES:
        return (
            f"V ({params.V.shape[0]} x {params.V.shape[1]}, {size // 1024} KiB in "
            f"{jnp.dtype(compute_dtype or params.V.dtype).name}) exceeds the "
            f"{MAX_V_BYTES // 1024} KiB one program holds on chip"
        )
    return None


def options(params: Any, compute_dtype: Any = None, backend: str | None = None) -> Options:
    """The kernels' options for ``params`` on ``backend`` (JAX's default when None)."""
    backend = jax.default_backend() if backend is None else backend
    if backend == "cpu":
        return Options(interpret=True, block_b=CPU_BLOCK_B, num_warps=0)
    # Warps so that V takes about 128 registers (512 bytes) per thread: 4 to 16.
    warps = -(-v_bytes(params, compute_dtype) // (32 * 512))
    return Options(interpret=False, block_b=GPU_BLOCK_B, num_warps=_pow2_clip(warps, 4, 16))


def _pow2_clip(n: int, low: int, high: int) -> int:
    return min(max(1 << max(n - 1, 0).bit_length(), low), high)


def pad_batch(block_b: int, xs, carry0, lengths):
    """Pads the batch (axis 1 of xs (T, B, D), axis 0 of the carries and lengths) with
    zero rows to a multiple of ``block_b``. Padded rows have length 0 when lengths are
    given; without, they run on zeros. The caller drops them from the results."""
    batch = xs.shape[1]
    extra = -batch % block_b
    if not extra:
        return xs, carry0, lengths
    xs = jnp.pad(xs, ((0, 0), (0, extra), (0, 0)))
    carry0 = tuple(jnp.pad(leaf, ((0, extra), (0, 0))) for leaf in carry0)
    if lengths is not None:
        lengths = jnp.pad(lengths, (0, extra))
    return xs, carry0, lengths


# ----------------------------------------------------------------------------- kernels


def _take(refs, n):
    """The first ``n`` of ``refs`` and the rest."""
    return list(refs[:n]), refs[n:]


def _load_blocks(ref, t, width, hidden):
    """Step t's ``width`` (B, H) blocks of a (T, B, width * H) ref."""
    return [ref[t, :, pl.ds(k * hidden, hidden)] for k in range(width)]


def _store_blocks(ref, t, blocks, hidden):
    """Writes (B, H) blocks side by side into step t of a (T, B, len(blocks) * H) ref."""
    for k, block in enumerate(blocks):
        ref[t, :, pl.ds(k * hidden, hidden)] = block.astype(ref.dtype)


def _specs(block_b, num_steps):
    """BlockSpec makers: per-step arrays (T, B, w) and per-row arrays (B, w) in blocks of
    ``block_b`` rows, and whole arrays that every program reads."""

    def seq(width):
        return pl.BlockSpec((num_steps, block_b, width), lambda i: (0, i, 0))

    def rows(width):
        return pl.BlockSpec((block_b, width), lambda i: (i, 0))

    def whole(shape):
        return pl.BlockSpec(shape, lambda i: (0,) * len(shape))

    return seq, rows, whole


def _call(kernel, name, opts, batch, in_specs, out_shape, out_specs):
    """``pl.pallas_call`` over the batch blocks: interpreted, or compiled by Triton."""
    extra: dict[str, Any] = {}
    if not opts.interpret:
        from jax.experimental.pallas import triton as plt  # only on a GPU

        extra["compiler_params"] = plt.CompilerParams(num_warps=opts.num_warps)
    return pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(batch // opts.block_b,),
        in_specs=in_specs,
        out_specs=out_specs,
        interpret=opts.interpret,
        name=name,
        **extra,
    )


def _mask_col(lengths):
    """(B,) lengths -> (B, 1) int32, read per program as a column."""
    return lengths.astype(jnp.int32).reshape((-1, 1))


def forward(cell, fields, opts, V, consts, carry0, gx, lengths, save):
    """The forward loop in one kernel.

    Args:
      cell: the BlockCell.
      fields: the carry's field names (h first).
      opts: Options.
      V: (H, G*H) in the compute dtype.
      consts: the cell's (1, H) rows.
      carry0: tuple of (B, H) carry fields, B a multiple of opts.block_b.
      gx: x_t W + b for all steps (T, B, G*H), the parameters' dtype.
      lengths: None, or (B,) int valid lengths.
      save: also write what the backward needs.

    Returns:
      (final carry tuple, outs) as ``fused._forward`` returns them: outs["y"] (T, B, H)
      and, with ``save``, "h" (the carried h, with lengths only), "<field>_prev" for every
      field after h, and the cell's saved arrays.
    """
    num_steps, batch, _ = gx.shape
    hidden, gates = V.shape[0], cell.gates
    dtype = gx.dtype
    cd = None if V.dtype == dtype else V.dtype
    masked = lengths is not None
    seq, rows, whole = _specs(opts.block_b, num_steps)
    # Per-step outputs (name, width in H blocks).
    seqs = [("y", 1)]
    if save:
        seqs += [("h", 1)] if masked else []
        seqs += [(f + "_prev", 1) for f in fields[1:]] + list(cell.saved)

    def kernel(*refs):
        (gx_ref, v_ref), refs = _take(refs, 2)
        const_refs, refs = _take(refs, len(consts))
        carry_refs, refs = _take(refs, len(fields))
        len_refs, refs = _take(refs, int(masked))
        seq_refs, final_refs = _take(refs, len(seqs))
        out = dict(zip([n for n, _ in seqs], seq_refs, strict=True))
        Vb = [v_ref[:, pl.ds(k * hidden, hidden)] for k in range(gates)]  # on chip, all T steps
        cb = [ref[...] for ref in const_refs]
        lens = len_refs[0][...] if masked else None  # (B, 1)

        def step(t, carry):
            gxb = _load_blocks(gx_ref, t, gates, hidden)
            new, saved = cell.forward(Vb, cb, carry, gxb, cd)
            new = tuple(leaf.astype(dtype) for leaf in new)
            y = new[0]
            if masked:
                m = t < lens
                new = tuple(jnp.where(m, n, o) for n, o in zip(new, carry, strict=True))
                y = jnp.where(m, y, jnp.zeros_like(y))
            out["y"][t] = y
            if save:
                if masked:
                    out["h"][t] = new[0]
                for f, old in zip(fields[1:], carry[1:], strict=True):
                    out[f + "_prev"][t] = old
                for name, blocks in saved.items():
                    _store_blocks(out[name], t, blocks, hidden)
            return new

        init = tuple(ref[...] for ref in carry_refs)
        final = jax.lax.fori_loop(jnp.int32(0), jnp.int32(num_steps), step, init)
        for ref, leaf in zip(final_refs, final, strict=True):
            ref[...] = leaf

    args = [gx, V, *consts, *carry0] + ([_mask_col(lengths)] if masked else [])
    in_specs = [seq(gates * hidden), whole(V.shape)] + [whole(c.shape) for c in consts]
    in_specs += [rows(hidden) for _ in fields] + ([rows(1)] if masked else [])
    out_shape = [jax.ShapeDtypeStruct((num_steps, batch, w * hidden), dtype) for _, w in seqs]
    out_shape += [jax.ShapeDtypeStruct((batch, hidden), dtype) for _ in fields]
    out_specs = [seq(w * hidden) for _, w in seqs] + [rows(hidden) for _ in fields]
    call = _call(kernel, "rnncells_forward", opts, batch, in_specs, out_shape, out_specs)
    results = call(*args)
    outs = dict(zip([n for n, _ in seqs], results[: len(seqs)], strict=True))
    return tuple(results[len(seqs) :]), outs


def backward(cell, fields, opts, V, consts, dcarry_T, dys, saved, reads, lengths):
    """The backward loop in one kernel.

    Args:
      cell: the BlockCell.
      fields: the carry's field names (h first).
      opts: Options.
      V: (H, G*H) in the compute dtype.
      consts: the cell's (1, H) rows.
      dcarry_T: tuple of the final carry's gradients (B, H).
      dys: output gradients (T, B, H).
      saved: the forward's saved arrays by name, (T, B, width * H).
      reads: the (T, B, H) arrays named in ``cell.reads``, by name.
      lengths: None, or (B,) int valid lengths.

    Returns:
      (dcarry0 tuple, outs): outs["dA"] (T, B, G*H) and the cell's other outputs
      (``cell.outs``), the loop outputs ``fused._backward`` forms the gradients from.
    """
    num_steps, batch, hidden = dys.shape
    gates = cell.gates
    dtype = dys.dtype
    cd = None if V.dtype == dtype else V.dtype
    masked = lengths is not None
    seq, rows, whole = _specs(opts.block_b, num_steps)
    seqs = [("dA", gates), *cell.outs]

    def kernel(*refs):
        (dy_ref,), refs = _take(refs, 1)
        saved_refs, refs = _take(refs, len(cell.saved))
        read_refs, refs = _take(refs, len(cell.reads))
        (v_ref,), refs = _take(refs, 1)
        const_refs, refs = _take(refs, len(consts))
        dcarry_refs, refs = _take(refs, len(fields))
        len_refs, refs = _take(refs, int(masked))
        seq_refs, d0_refs = _take(refs, len(seqs))
        out = dict(zip([n for n, _ in seqs], seq_refs, strict=True))
        Vb = [v_ref[:, pl.ds(k * hidden, hidden)] for k in range(gates)]  # on chip, all T steps
        cb = [ref[...] for ref in const_refs]
        lens = len_refs[0][...] if masked else None  # (B, 1)

        def step(s, dcarry):
            t = num_steps - 1 - s
            dcell = (dcarry[0] + dy_ref[t],) + tuple(dcarry[1:])
            if masked:
                m = t < lens
                dcell = tuple(jnp.where(m, d, jnp.zeros_like(d)) for d in dcell)
            saved_t = {
                name: _load_blocks(ref, t, width, hidden)
                for (name, width), ref in zip(cell.saved, saved_refs, strict=True)
            }
            reads_t = {name: ref[t] for name, ref in zip(cell.reads, read_refs, strict=True)}
            dprev, outs = cell.backward(Vb, cb, dcell, saved_t, reads_t, cd)
            dprev = tuple(d.astype(dtype) for d in dprev)
            if masked:  # a frozen step passes its carry's gradient straight through
                dprev = tuple(
                    dp + jnp.where(m, jnp.zeros_like(d), d)
                    for dp, d in zip(dprev, dcarry, strict=True)
                )
            for name, blocks in outs.items():
                _store_blocks(out[name], t, blocks, hidden)
            return dprev

        init = tuple(ref[...] for ref in dcarry_refs)
        final = jax.lax.fori_loop(jnp.int32(0), jnp.int32(num_steps), step, init)
        for ref, leaf in zip(d0_refs, final, strict=True):
            ref[...] = leaf

    args = [dys, *(saved[n] for n, _ in cell.saved), *(reads[n] for n in cell.reads), V]
    args += [*consts, *dcarry_T] + ([_mask_col(lengths)] if masked else [])
    in_specs = [seq(hidden)] + [seq(w * hidden) for _, w in cell.saved]
    in_specs += [seq(hidden) for _ in cell.reads] + [whole(V.shape)]
    in_specs += [whole(c.shape) for c in consts] + [rows(hidden) for _ in fields]
    in_specs += [rows(1)] if masked else []
    out_shape = [jax.ShapeDtypeStruct((num_steps, batch, w * hidden), dtype) for _, w in seqs]
    out_shape += [jax.ShapeDtypeStruct((batch, hidden), dtype) for _ in fields]
    out_specs = [seq(w * hidden) for _, w in seqs] + [rows(hidden) for _ in fields]
    call = _call(kernel, "rnncells_backward", opts, batch, in_specs, out_shape, out_specs)
    results = call(*args)
    outs = dict(zip([n for n, _ in seqs], results[: len(seqs)], strict=True))
    return tuple(results[len(seqs) :]), outs
