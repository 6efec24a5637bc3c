"""The generic fused layer: a cell's body, given x_t @ W + b, run with a layer-wide backward
and no hand-written derivative.

A cell that gives ``CellSpec.cell``, its step's body given ``gx = x_t @ W + b``
(``cell(params, carry, gx) -> (carry, y)``), and has no ``FusedCell`` runs here under
``unroll(..., fused=True)``. What the scan's autodiff does per step, this layer does once
for the whole layer where it can:

- the input projection ``x @ W + b`` of all steps is one matmul before the forward loop;
- the forward loop runs the body and keeps the carries each step started from (the
  projection is kept already);
- the backward loop runs in reverse, and per step takes the body's vector-Jacobian product
  at the kept carry and projection (``jax.vjp``: the body is run again inside it), for the
  carry, the projection (dA_t = d gx_t) and the parameters the body reads besides W and b
  (summed in the loop);
- dW = sum_t x_t^T dA_t, db = sum_t dA_t and dx_t = dA_t W^T leave the loop as single
  large matmuls, and so does dV where the cell declares ``CellSpec.linear_v``: its body
  adds a term linear in V, ``carry[0] @ params.V`` (True) or ``linear_v(V, h_{t-1})``, to
  gx and reads V nowhere else. Then d(term_t) = dA_t, V is held constant in the per-step
  product, and dV = sum_t h_{t-1}^T dA_t (or the term's vector-Jacobian product in V over
  all steps at once) is one product after the loop.

At unroll 1 (the CPU default) both loops read each step's slices one iteration ahead, and
the backward writes dA_t over slot t of the projection, as the fused layer does
(``fused._prefetch_scan``). Under ``remat`` nothing of size T B G H is kept: the backward
forms x_t @ W + b again per step and the weight gradients accumulate in the loop.

``compute_dtype`` applies to the matmuls outside the body (x @ W, dW, dV, dx); the body
runs in the parameters' dtype, as the cell wrote it. ``lengths`` freeze each carry past its
sequence's length and zero its outputs, as in ``unroll``; a frozen step passes its carry's
gradient straight through. Reverse runs are reordered by the caller
(``rnncells.unrolling``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnncells._engine.fused import _cast, _col, _prefetch_scan, _shift_in, _valid
from rnncells._engine.unit import mm, mm_tn


class Config(NamedTuple):
    """Static choices of one generic fused unroll (hashable: one compiled layer each)."""

    body: Callable  # the cell's CellSpec.cell
    state: type  # the carry NamedTuple
    # The body adds carry[0] @ V (True) or linear_v(V, carry[0]) to gx, and reads V
    # nowhere else; False: V is differentiated per step with the body.
    linear_v: bool | Callable
    masked: bool  # whether lengths are given
    unroll: int  # lax.scan unroll factor of both loops
    remat: bool  # keep only the carries; the backward forms x_t @ W + b again
    # Without remat: "carries" (keep the projection and the carries, run the body again
    # in the backward) or "residuals" (keep what JAX's scan autodiff keeps).
    saves: str
    compute_dtype: str | None  # dtype of the matmuls outside the body


def supports(params: Any) -> bool:
    """Whether the generic layer can hoist ``params``' input projection: a 2-D ``W`` and a
    1-D ``b`` as wide as W's columns (or no ``b``)."""
    W: Any = getattr(params, "W", None)
    b: Any = getattr(params, "b", None)
    if getattr(W, "ndim", 0) != 2:
        return False
    return b is None or (getattr(b, "shape", None) == (W.shape[1],))


def generic_scan(
    body: Callable,
    state: type,
    params,
    carry,
    xs_tm,
    lengths=None,
    *,
    linear_v: bool | Callable = False,
    saves: str = "carries",
    unroll: int = 1,
    remat: bool = False,
    compute_dtype=None,
):
    """Runs a cell's ``body`` over time-major ``xs_tm`` (T, *batch, D) with the generic layer.

    Args:
      body: ``body(params, carry, gx) -> (carry, y)``, gx = x_t @ W + b.
      state: the carry's NamedTuple type.
      params: the cell's params (a NamedTuple with W (D, N) and b (N,) or no b).
      carry: the carry, leaves (*batch, width).
      xs_tm: inputs (T, *batch, D).
      lengths: optional (*batch,) int valid lengths (already checked).
      linear_v: see ``Config.linear_v``.
      saves: see ``Config.saves``.
      unroll, remat, compute_dtype: as in ``unroll``.

    Returns:
      (final_carry, ys_tm) as ``jax.lax.scan`` of the masked step returns them.
    """
    cfg = Config(
        body=body,
        state=state,
        linear_v=linear_v,
        masked=lengths is not None,
        unroll=unroll,
        remat=remat,
        saves=saves,
        compute_dtype=None if compute_dtype is None else jnp.dtype(compute_dtype).name,
    )
    num_steps, batch_shape = xs_tm.shape[0], tuple(xs_tm.shape[1:-1])
    batch = math.prod(batch_shape)
    xs = xs_tm.reshape((num_steps, batch, xs_tm.shape[-1]))
    carry0 = tuple(leaf.reshape((batch, leaf.shape[-1])) for leaf in carry)
    lens = None if lengths is None else lengths.reshape((batch,))
    final, ys = _layer(cfg)(params, carry0, xs, lens)
    ys = ys.reshape((num_steps,) + batch_shape + ys.shape[-1:])
    final = state(*(leaf.reshape(batch_shape + leaf.shape[-1:]) for leaf in final))
    return final, ys


# ----------------------------------------------------------------------------- pieces


def _cd(cfg: Config):
    return None if cfg.compute_dtype is None else jnp.dtype(cfg.compute_dtype)


def _bias(params):
    return getattr(params, "b", None)


def _project(params, x, cd):
    """x @ W + b over the leading rows of x (..., D) -> (..., N), W's dtype out."""
    lead = x.shape[:-1]
    gx = mm(x.reshape((-1, x.shape[-1])), params.W, cd, params.W.dtype)
    b = _bias(params)
    gx = gx if b is None else gx + b[None]
    return gx.reshape(lead + gx.shape[-1:])


def _held(cfg: Config) -> tuple[str, ...]:
    """The params fields held constant in the per-step product: W (the body gets x_t @ W
    in gx and reads no W), and V under ``linear_v``. The bias is not held: a body may read
    it (the LN cells take it off gx again), and its per-step gradient is only (N,)."""
    return ("W", "V") if cfg.linear_v else ("W",)


def _free(cfg: Config, params) -> dict:
    """The params fields the per-step product differentiates."""
    return {f: getattr(params, f) for f in params._fields if f not in _held(cfg)}


def _run_body(cfg: Config, params, carry, gx, valid_t):
    """One masked step: (new carry tuple, y)."""
    new, y = cfg.body(params, cfg.state(*carry), gx)
    new = tuple(new)
    if cfg.masked:
        m = _col(valid_t)
        new = tuple(jnp.where(m, n, old) for n, old in zip(new, carry, strict=True))
        y = jnp.where(m, y, jnp.zeros_like(y))
    return new, y


# ----------------------------------------------------------------------------- loops


def _scan_body(cfg: Config, params, carry0, seq, keep_h: bool):
    """``jax.lax.scan`` of the masked body over ``seq`` ("gx" given, or "x" projected per
    step; "valid" when masked): (final carry, ys, carried h per step or None)."""
    cd = _cd(cfg)

    def body(carry, s):
        gx = s["gx"] if "gx" in s else _project(params, s["x"], cd)
        new, y = _run_body(cfg, params, carry, gx, s.get("valid"))
        return new, (y, new[0] if keep_h else None)

    final, (ys, hs) = jax.lax.scan(body, carry0, seq, unroll=cfg.unroll)
    return final, ys, hs


def _sequence(cfg: Config, lengths, num_steps, **arrays) -> dict:
    seq = dict(arrays)
    if cfg.masked:
        seq["valid"] = _valid(lengths, num_steps)
    return seq


def _forward_saved(cfg: Config, params, carry0, xs, lengths):
    """The training forward without remat: x @ W + b for all steps at once, then the scan
    of the body under ``jax.vjp`` in the body's free parameters, the initial carry and
    the projection (W, and V under ``linear_v``, held constant), so that JAX keeps what
    the per-step products need. Returns ((final, ys), residuals)."""
    gx = _project(params, xs, _cd(cfg))
    seq = _sequence(cfg, lengths, xs.shape[0], gx=gx)
    held = {f: getattr(params, f) for f in _held(cfg)}

    def run(free, carry0, gx):
        p = params._replace(**held, **free)
        final, ys, hs = _scan_body(cfg, p, carry0, dict(seq, gx=gx), keep_h=bool(cfg.linear_v))
        return (final, ys), hs

    out, vjp, hs = jax.vjp(run, _free(cfg, params), carry0, gx, has_aux=True)
    return out, (params, carry0, xs, hs, vjp)


def _backward_saved(cfg: Config, res, cts):
    """Gradients of (params, carry0, xs, lengths) from ``_forward_saved``'s residuals: the
    loop's products by JAX, then dW, db, dV and dx over all T * B rows at once."""
    params, carry0, xs, hs, vjp = res
    dfree, dcarry0, dgx = vjp(cts)
    h_prev = None if hs is None else _shift_in(carry0[0], hs)
    return _after_loop(cfg, params, carry0, xs, h_prev, dgx, dcarry0, dfree)


def _params_grads(params, hoisted: dict, dfree: dict):
    """The params-typed gradient: the hoisted sums and the body's own (the bias has both)."""
    if "b" in hoisted:
        dfree = dict(dfree, b=dfree["b"] + hoisted.pop("b"))
    return params._replace(**hoisted, **dfree)


def _forward_carries(cfg: Config, params, carry0, xs, lengths):
    """The training forward that keeps the projection and the carries (the backward runs
    the body again per step): x @ W + b for all steps at once, then the scan of the body,
    reading each step's slices one iteration ahead (``fused._prefetch_scan``) at unroll 1.
    Returns ((final, ys), residuals)."""
    gx = _project(params, xs, _cd(cfg))
    seq = _sequence(cfg, lengths, xs.shape[0], gx=gx)

    def body(carry, s):
        new, y = _run_body(cfg, params, carry, s["gx"], s.get("valid"))
        return new, {"y": y, "carry": new}

    if cfg.unroll == 1:
        final, outs = _prefetch_scan(body, carry0, seq, {}, xs.shape[0], reverse=False)
    else:
        final, outs = jax.lax.scan(body, carry0, seq, unroll=cfg.unroll)
    return (final, outs["y"]), (params, carry0, xs, lengths, outs["carry"], gx)


def _backward_carries(cfg: Config, res, cts):
    """Gradients from ``_forward_carries``' residuals: the reverse loop takes the body's
    product per step at the kept carry and projection, and writes dA_t over slot t of the
    projection at unroll 1; dW, db, dV and dx leave it over all T * B rows at once."""
    params, carry0, xs, lengths, carries, gx = res
    dcarry_T, dys = cts
    prevs = tuple(_shift_in(c0, c) for c0, c in zip(carry0, carries, strict=True))
    seq = _sequence(cfg, lengths, xs.shape[0], dy=dys, gx=gx)
    seq.update({f"prev{i}": p for i, p in enumerate(prevs)})

    def body(loop, s):
        dcarry, dfree = loop
        prev = tuple(s[f"prev{i}"] for i in range(len(prevs)))
        dprev, dgx, df = _step_vjp(cfg, params, prev, s["gx"], dcarry, s["dy"], s.get("valid"))
        return (dprev, jax.tree.map(jnp.add, dfree, df)), {"dgx": dgx}

    init = (tuple(dcarry_T), jax.tree.map(jnp.zeros_like, _free(cfg, params)))
    if cfg.unroll == 1:
        (dcarry0, dfree), outs = _prefetch_scan(
            body, init, seq, {"gx": "dgx"}, xs.shape[0], reverse=True
        )
    else:
        (dcarry0, dfree), outs = jax.lax.scan(body, init, seq, reverse=True, unroll=cfg.unroll)
    h_prev = prevs[0]
    return _after_loop(cfg, params, carry0, xs, h_prev, outs["dgx"], dcarry0, dfree)


def _after_loop(cfg: Config, params, carry0, xs, h_prev, dgx, dcarry0, dfree):
    """dW, db, dV and dx over all T * B rows at once, and the params-typed gradient."""
    rows = xs.shape[0] * xs.shape[1]
    dA = dgx.reshape((rows, -1))
    h_rows = None if h_prev is None else h_prev.reshape((rows, -1))
    hoisted = _hoisted_grads(cfg, params, xs.reshape((rows, -1)), h_rows, dA, params.W.dtype)
    dxs = mm(dA, _cast(params.W, _cd(cfg)).T, _cd(cfg), params.W.dtype).reshape(xs.shape)
    return _params_grads(params, hoisted, dfree), tuple(dcarry0), dxs, None


def _forward_remat(cfg: Config, params, carry0, xs, lengths):
    """The training forward under remat: the scan with x_t @ W + b per step, keeping only
    the carries each step ends with. Returns ((final, ys), residuals)."""
    seq = _sequence(cfg, lengths, xs.shape[0], x=xs)

    def body(carry, s):
        new, y = _run_body(cfg, params, carry, _project(params, s["x"], _cd(cfg)), s.get("valid"))
        return new, (y, new)

    final, (ys, carries) = jax.lax.scan(body, carry0, seq, unroll=cfg.unroll)
    return (final, ys), (params, carry0, xs, lengths, carries)


def _step_vjp(cfg: Config, params, carry_prev, gx, dnew, dy, valid_t):
    """The body's vector-Jacobian product at one step: (dcarry_prev, dgx, dfree)."""
    held = {f: getattr(params, f) for f in _held(cfg)}

    def call(free, carry, gx):
        return _run_body(cfg, params._replace(**held, **free), carry, gx, valid_t)

    _, vjp = jax.vjp(call, _free(cfg, params), carry_prev, gx)
    dfree, dprev, dgx = vjp((dnew, dy))
    return dprev, dgx, dfree


def _backward_remat(cfg: Config, res, cts):
    """Gradients under remat, memory O(carry) per step: the reverse loop forms each step's
    x_t @ W + b again and takes the body's product there; the weight gradients accumulate
    in the loop and dx_t leaves it."""
    cd = _cd(cfg)
    params, carry0, xs, lengths, carries = res
    dcarry_T, dys = cts
    dtype = params.W.dtype
    prevs = tuple(_shift_in(c0, c) for c0, c in zip(carry0, carries, strict=True))
    seq = _sequence(cfg, lengths, xs.shape[0], dy=dys, x=xs, prevs=prevs)
    fields = [*_held(cfg), *(["b"] if "b" in params._fields else [])]
    acc0 = {f: jnp.zeros_like(getattr(params, f)) for f in fields}
    zero_free = jax.tree.map(jnp.zeros_like, _free(cfg, params))

    def body(loop, s):
        dcarry, dfree, acc = loop
        gx = _project(params, s["x"], cd)
        dprev, dgx, df = _step_vjp(cfg, params, s["prevs"], gx, dcarry, s["dy"], s.get("valid"))
        h_prev = s["prevs"][0]
        acc = jax.tree.map(jnp.add, acc, _hoisted_grads(cfg, params, s["x"], h_prev, dgx, dtype))
        dx = mm(dgx, _cast(params.W, cd).T, cd, dtype)
        return (dprev, jax.tree.map(jnp.add, dfree, df), acc), dx

    init = (tuple(dcarry_T), zero_free, acc0)
    (dcarry0, dfree, hoisted), dxs = jax.lax.scan(body, init, seq, reverse=True, unroll=cfg.unroll)
    return _params_grads(params, hoisted, dfree), tuple(dcarry0), dxs, None


def _hoisted_grads(cfg: Config, params, x, h_prev, dA, dtype) -> dict:
    """The gradients that leave the loop as sums over rows: dW = x^T dA, db = sum dA
    (added to the body's own db), and dV = h_prev^T dA under ``linear_v``."""
    cd = _cd(cfg)
    out = {"W": mm_tn(x, dA, cd, dtype)}
    if "b" in params._fields:
        out["b"] = jnp.sum(dA, axis=0)
    term = cfg.linear_v
    if term is True:
        out["V"] = mm_tn(h_prev, dA, cd, dtype)
    elif callable(term):  # the term's product in V, over all rows at once
        _, term_vjp = jax.vjp(lambda V: term(V, h_prev), params.V)
        out["V"] = term_vjp(dA.astype(params.V.dtype))[0]
    return out


@functools.cache
def _layer(cfg: Config):
    """The custom_vjp layer (params, carry0, xs, lengths) -> (final carry, ys)."""

    @jax.custom_vjp
    def layer(params, carry0, xs, lengths):
        seq = _sequence(cfg, lengths, xs.shape[0], x=xs)
        final, ys, _ = _scan_body(cfg, params, carry0, seq, keep_h=False)
        return final, ys

    forward, backward = {
        "remat": (_forward_remat, _backward_remat),
        "carries": (_forward_carries, _backward_carries),
        "residuals": (_forward_saved, _backward_saved),
    }["remat" if cfg.remat else cfg.saves]

    def layer_fwd(params, carry0, xs, lengths):
        return forward(cfg, params, carry0, xs, lengths)

    def layer_bwd(res, cts):
        return backward(cfg, res, cts)

    layer.defvjp(layer_fwd, layer_bwd)
    return layer
