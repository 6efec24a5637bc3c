"""Fused unrolls of the built-in cells with a hand-written backward pass for the whole layer.

``fused_scan`` computes exactly what ``jax.lax.scan`` of the public step computes (the
equations of ``lstm.py``, ``gru.py`` and ``rnn.py``), but its gradient is a
``jax.custom_vjp`` written for the unrolled layer, as fused RNN kernels do:

- the forward scan saves what the backward needs (the gate activations and the carries;
  the LSTM's C_t is recomputed from them), or, under ``remat``, only the carries, and
  the backward recomputes the gates per step;
- the backward scan runs in reverse, carries only dh (and dc for the LSTM) and emits the
  per-step gate pre-activation gradients dA_t;
- the time-parallel work then leaves the loop as single large matmuls:
  dV = sum_t h_{t-1}^T dA_t, dW = sum_t x_t^T dA_t, db = sum_t dA_t, dx_t = dA_t W^T.

At unroll 1 (the CPU default) a training run also computes x @ W for all steps as one
matmul before the forward loop, writes each step's activations over its slot of that
array, and writes the backward's dA_t over the activations of step t: one (T, B, G*H)
array serves all three, and XLA never fills a new one with zeros. Both loops read each
step's slices one iteration ahead into their carry, because XLA:CPU runs elementwise
kernels that slice an array at the loop index several times slower (bench.md, "Backward
loop").

Sequences are time-major (T, B, ...) with one flattened batch axis; ``lengths`` freezes
each carry past its sequence's length and zeroes its outputs, as in ``unroll``. Reverse
runs are handled by the caller (``unrolling.py``) by reordering time outside this module.

Values equal the plain scan up to floating-point rounding: the sigmoid is evaluated as
0.5 * tanh(0.5 * a) + 0.5, which is the same function.

Optional ``compute_dtype`` (e.g. bfloat16) runs every matmul on inputs cast to it, with
accumulation, carries, gate arithmetic, parameters and gradients in the parameters' dtype.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnncells.gru import GRUParams, GRUResetAfterParams, GRUState
from rnncells.lstm import LSTMParams, LSTMState
from rnncells.rnn import RNNParams, RNNState

_KINDS = {LSTMParams: "lstm", GRUParams: "gru", GRUResetAfterParams: "gru_ra", RNNParams: "rnn"}


class Config(NamedTuple):
    """Static choices of one fused unroll (hashable: one compiled layer per config)."""

    kind: str  # "lstm", "gru" (reset-before), "gru_ra" (reset-after) or "rnn"
    masked: bool  # whether lengths are given
    unroll: int  # lax.scan unroll factor of both loops
    remat: bool  # save only carries; the backward recomputes the gates
    compute_dtype: str | None  # matmul input dtype name, None for the parameters' dtype
    hoist: bool  # training at unroll 1: x @ W for all steps in one matmul before the loop
    tanh_sigmoid: bool  # sigmoid(a) as 0.5 * tanh(0.5 * a) + 0.5
    gate_block: bool  # LSTM: all four gates as one tanh over the (B, 4H) block
    concat_x: bool  # LSTM/RNN: one matmul [x_t, h] @ [W; V] per step, and dx_t in the loop


def default_config(params, xs_tm, *, masked, unroll, remat, compute_dtype) -> Config:
    """The layer's choices; the fixed ones were measured side by side with ``python -m
    experiments.bench --impls rnncells,rc_nohoist,rc_logistic,rc_noblock,rc_concat`` (bench.md).
    """
    return Config(
        kind=_KINDS[type(params)],
        masked=masked,
        unroll=unroll,  # the user's, or rnncells.default_unroll (8 on a GPU, 1 on a CPU)
        remat=remat,
        compute_dtype=None if compute_dtype is None else jnp.dtype(compute_dtype).name,
        hoist=True,  # one large matmul, and no zero-filled array for the activations
        tanh_sigmoid=True,  # XLA:CPU's tanh is a cheap polynomial; logistic needs exp + divide
        gate_block=True,  # one fusion makes the saved activations: fewer kernels per step
        concat_x=False,  # in-loop dx_t was slower at the long size (D = 8)
    )


def fused_scan(params, carry, xs_tm, lengths=None, *, config: Config | None = None, **kw):
    """Runs a built-in cell over time-major ``xs_tm`` (T, *batch, D) with the fused layer.

    Args:
      params: LSTMParams, GRUParams, GRUResetAfterParams or RNNParams.
      carry: the cell's state NamedTuple, leaves (*batch, H).
      xs_tm: inputs (T, *batch, D).
      lengths: optional (*batch,) int valid lengths (already checked).
      config: the static choices; None takes ``default_config`` with ``kw`` (masked is
        set from ``lengths``).

    Returns:
      (final_carry, ys_tm) as ``jax.lax.scan`` of the masked public step returns them.
    """
    if config is None:
        config = default_config(params, xs_tm, masked=lengths is not None, **kw)
    num_steps, batch_shape = xs_tm.shape[0], tuple(xs_tm.shape[1:-1])
    batch = math.prod(batch_shape)
    hidden = params.V.shape[0]
    xs = xs_tm.reshape((num_steps, batch, xs_tm.shape[-1]))
    h0 = carry.h.reshape((batch, hidden))
    c0 = carry.c.reshape((batch, hidden)) if config.kind == "lstm" else None
    lens = None if lengths is None else lengths.reshape((batch,))
    h, c, ys = _layer(config)(params, h0, c0, xs, lens)
    ys = ys.reshape((num_steps,) + batch_shape + (hidden,))
    h = h.reshape(batch_shape + (hidden,))
    if config.kind == "lstm":
        return LSTMState(h, c.reshape(batch_shape + (hidden,))), ys
    state = GRUState if config.kind in ("gru", "gru_ra") else RNNState
    return state(h), ys


# ----------------------------------------------------------------------------- helpers


def _mm(a, b, cd, out_dtype):
    """a @ b with inputs cast to the compute dtype ``cd`` and the result in ``out_dtype``."""
    if cd is None:
        return a @ b
    return jnp.matmul(a.astype(cd), b.astype(cd), preferred_element_type=out_dtype)


def _mm_tn(a, b, cd, out_dtype):
    """a^T @ b over the leading axis: (N, P), (N, Q) -> (P, Q), one large matmul."""
    if cd is not None:
        a, b = a.astype(cd), b.astype(cd)
    dims = (((0,), (0,)), ((), ()))
    return jax.lax.dot_general(a, b, dims, preferred_element_type=out_dtype)


def _row(v, ndim):
    """(N,) -> (1, ..., 1, N) so it adds to a (..., N) array without rank promotion."""
    return v.reshape((1,) * (ndim - 1) + v.shape)


def _sigmoid(a, tanh_form):
    if tanh_form:
        return 0.5 * jnp.tanh(0.5 * a) + 0.5  # one tanh, cheaper than exp + divide on CPU
    return jax.nn.sigmoid(a)


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


# ----------------------------------------------------------------------------- cells
# Each cell has: _fwd_<kind>(cfg, p, h, c, gx) -> (h_new, c_new, saved) for one step
# (gx = x_t @ W + b), and _bwd_<kind>(cfg, p, dh, dc, residuals of the step) ->
# (dh_prev, dc_prev, dA) with dA the gradient w.r.t. the gate pre-activations gx.


def _lstm_acts(a, hidden, tanh_form):
    i = _sigmoid(a[:, :hidden], tanh_form)
    f = _sigmoid(a[:, hidden : 2 * hidden], tanh_form)
    g = jnp.tanh(a[:, 2 * hidden : 3 * hidden])
    o = _sigmoid(a[:, 3 * hidden :], tanh_form)
    return i, f, g, o


def _lstm_block_consts(hidden, dtype):
    """Per-column constants of the (i, f, g, o) block: act = tanh(s a) s + o; act' = (act+p)(q-act).

    With s = 1/2, o = 1/2 this is the sigmoid (derivative act (1 - act)); with s = 1,
    o = 0 the tanh of the candidate g (derivative (1 + g)(1 - g)).
    """
    ones = np.ones((hidden,), np.float64)
    scale = np.concatenate([ones / 2, ones / 2, ones, ones / 2])
    offset = np.concatenate([ones / 2, ones / 2, 0 * ones, ones / 2])
    plus = np.concatenate([0 * ones, 0 * ones, ones, 0 * ones])
    return tuple(jnp.asarray(v[None], dtype) for v in (scale, offset, plus))


def _lstm_gates(cfg, a, hidden):
    """The (B, 4H) activations [i, f, g, o] of the pre-activations a."""
    if cfg.gate_block:
        scale, offset, _ = _lstm_block_consts(hidden, a.dtype)
        return jnp.tanh(a * scale) * scale + offset
    return jnp.concatenate(_lstm_acts(a, hidden, cfg.tanh_sigmoid), axis=-1)


def _lstm_fwd(cfg, V, h, c, gx, hidden, cd):
    a = gx if V is None else gx + _mm(h, V, cd, gx.dtype)  # V None: gx holds the h term
    if cfg.gate_block:
        acts = _lstm_gates(cfg, a, hidden)
        i, f, g, o = (acts[:, k * hidden : (k + 1) * hidden] for k in range(4))
        c_new = f * c + i * g
        return o * jnp.tanh(c_new), c_new, acts
    i, f, g, o = _lstm_acts(a, hidden, cfg.tanh_sigmoid)
    c_new = f * c + i * g
    h_new = o * jnp.tanh(c_new)
    return h_new, c_new, (i, f, g, o)


def _lstm_bwd_block(VT, dh, dc, acts, c_prev, hidden, cd):
    """The LSTM step's backward from the (B, 4H) activation block, c_t recomputed."""
    i, f, g, o = (acts[:, k * hidden : (k + 1) * hidden] for k in range(4))
    th = jnp.tanh(f * c_prev + i * g)
    dc_t = dc + dh * o * (1 - th * th)
    _, _, plus = _lstm_block_consts(hidden, acts.dtype)
    dact = jnp.concatenate([dc_t * g, dc_t * c_prev, dc_t * i, dh * th], axis=-1)
    dA = dact * (acts + plus) * (1 - acts)
    return _mm(dA, VT, cd, dh.dtype), dc_t * f, dA


def _lstm_bwd(VT, dh, dc, acts, c_prev, c_t, cd):
    i, f, g, o = acts
    th = jnp.tanh(c_t)
    dc_t = dc + dh * o * (1 - th * th)
    da_i = dc_t * g * i * (1 - i)
    da_f = dc_t * c_prev * f * (1 - f)
    da_g = dc_t * i * (1 - g * g)
    da_o = dh * th * o * (1 - o)
    dA = jnp.concatenate([da_i, da_f, da_g, da_o], axis=-1)
    return _mm(dA, VT, cd, dh.dtype), dc_t * f, dA


def _gru_fwd(cfg, V, h, gx, hidden, cd):
    """Reset-before GRU (seed's form); z writes."""
    rz = _sigmoid(gx[:, : 2 * hidden] + _mm(h, V[:, : 2 * hidden], cd, gx.dtype), cfg.tanh_sigmoid)
    r, z = rz[:, :hidden], rz[:, hidden:]
    n = jnp.tanh(gx[:, 2 * hidden :] + _mm(r * h, V[:, 2 * hidden :], cd, gx.dtype))
    return h + z * (n - h), (r, z, n)


def _gru_bwd(VT, dh, acts, h_prev, hidden, cd):
    r, z, n = acts
    da_n = dh * z * (1 - n * n)
    drh = _mm(da_n, VT[2 * hidden :], cd, dh.dtype)
    da_r = drh * h_prev * r * (1 - r)
    da_z = dh * (n - h_prev) * z * (1 - z)
    da_rz = jnp.concatenate([da_r, da_z], axis=-1)
    dh_prev = dh * (1 - z) + drh * r + _mm(da_rz, VT[: 2 * hidden], cd, dh.dtype)
    return dh_prev, jnp.concatenate([da_rz, da_n], axis=-1)


def _gru_ra_fwd(cfg, V, b_hn, h, gx, hidden, cd):
    """Reset-after GRU (cuDNN placement, z writes)."""
    gh = _mm(h, V, cd, gx.dtype)
    rz = _sigmoid(gx[:, : 2 * hidden] + gh[:, : 2 * hidden], cfg.tanh_sigmoid)
    r, z = rz[:, :hidden], rz[:, hidden:]
    ghn = gh[:, 2 * hidden :] + _row(b_hn, 2)
    n = jnp.tanh(gx[:, 2 * hidden :] + r * ghn)
    return h + z * (n - h), (r, z, n, ghn)


def _gru_ra_bwd(VT, dh, acts, h_prev, cd):
    """Returns dh_prev, dA = [da_r, da_z, da_n] and dghn = da_n * r."""
    r, z, n, ghn = acts
    da_n = dh * z * (1 - n * n)
    da_r = da_n * ghn * r * (1 - r)
    da_z = dh * (n - h_prev) * z * (1 - z)
    dghn = da_n * r
    dgh = jnp.concatenate([da_r, da_z, dghn], axis=-1)
    dh_prev = dh * (1 - z) + _mm(dgh, VT, cd, dh.dtype)
    return dh_prev, jnp.concatenate([da_r, da_z, da_n], axis=-1), dghn


def _rnn_fwd(V, h, gx, cd):
    return jnp.tanh(gx if V is None else gx + _mm(h, V, cd, gx.dtype))


# ----------------------------------------------------------------------------- layer


@functools.cache
def _layer(cfg: Config):
    """The custom_vjp layer (params, h0, c0, xs, lengths) -> (h_T, c_T, ys) for ``cfg``."""
    cd = None if cfg.compute_dtype is None else jnp.dtype(cfg.compute_dtype)
    lstm = cfg.kind == "lstm"
    concat = cfg.concat_x and cfg.kind in ("lstm", "rnn")

    def gates_in(params, xs):
        """x @ W for all steps at once: (T, B, G*H) (b is added in the loop)."""
        num_steps, batch, _ = xs.shape
        gx = _mm(xs.reshape((num_steps * batch, -1)), params.W, cd, params.W.dtype)
        return gx.reshape((num_steps, batch, -1))

    def gate_in(params, x):
        return _mm(x, params.W, cd, params.W.dtype) + _row(params.b, 2)

    def forward(params, h0, c0, xs, lengths, save):
        """The forward loop; ``save`` selects what it stacks for the backward."""
        hidden = params.V.shape[0]
        num_steps = xs.shape[0]
        V = params.V if cd is None else params.V.astype(cd)
        if concat:
            WV = jnp.concatenate([params.W, params.V], axis=0)
            WV = WV if cd is None else WV.astype(cd)
        # Training at unroll 1: x @ W for all steps is one matmul before the loop, and each
        # step writes its activations (as wide as x @ W) over its slot of that array, which
        # no later step reads: no per-step x @ W, and no new (T, B, G*H) array that XLA
        # would first fill with zeros. Forward-only and remat runs keep O(B H) memory.
        hoist = save and cfg.hoist and not (concat or cfg.remat) and cfg.unroll == 1
        hoist = hoist and cfg.kind != "rnn"  # the plain RNN saves no activations
        seq = gates_in(params, xs) if hoist else xs
        if cfg.masked:
            valid = jnp.arange(num_steps, dtype=lengths.dtype)[:, None] < lengths[None, :]
            inputs = (seq, valid)
        else:
            inputs = (seq, None)

        def body(carry, inp):
            s, valid_t = inp
            h, c = carry
            if concat:
                xh = jnp.concatenate([s, h], axis=-1)
                gx = _mm(xh, WV, cd, h.dtype) + _row(params.b, 2)
            else:
                gx = s + _row(params.b, 2) if hoist else gate_in(params, s)
            V_in = None if concat else V
            if lstm:
                h_new, c_new, acts = _lstm_fwd(cfg, V_in, h, c, gx, hidden, cd)
            elif cfg.kind == "gru":
                h_new, acts = _gru_fwd(cfg, V, h, gx, hidden, cd)
            elif cfg.kind == "gru_ra":
                h_new, acts = _gru_ra_fwd(cfg, V, params.b_hn, h, gx, hidden, cd)
            else:
                h_new, acts = _rnn_fwd(V_in, h, gx, cd), ()
            y = h_new
            if cfg.masked:
                m = _col(valid_t)
                h_new = jnp.where(m, h_new, h)
                if lstm:
                    c_new = jnp.where(m, c_new, c)
                y = jnp.where(m, y, jnp.zeros_like(y))
            new_carry = (h_new, c_new if lstm else None)
            out = {"y": y}
            if save:
                if cfg.masked or cfg.remat:
                    out["h"] = h_new  # the carried h (ys are zeros past the length)
                if lstm:
                    out["c_prev"] = c  # the cell state this step started from
                if not cfg.remat and cfg.kind == "gru_ra":  # two arrays, each overwritten
                    out["acts"], out["ghn"] = jnp.concatenate(acts[:3], -1), acts[3]  # in bwd
                elif not cfg.remat and cfg.kind != "rnn":
                    out["acts"] = acts if isinstance(acts, jax.Array) else jnp.concatenate(acts, -1)
            return new_carry, out

        if not hoist:
            (h, c), outs = jax.lax.scan(body, (h0, c0), inputs, unroll=cfg.unroll)
            return h, c, outs

        slices = {"gx": seq, **({"valid": valid} if cfg.masked else {})}
        (h, c), outs = _prefetch_scan(
            lambda hc, s: body(hc, (s["gx"], s.get("valid"))),
            (h0, c0),
            slices,
            {"gx": "acts"},  # each step's activations over its slot of x @ W
            num_steps,
            reverse=False,
        )
        return h, c, outs

    @jax.custom_vjp
    def layer(params, h0, c0, xs, lengths):
        h, c, outs = forward(params, h0, c0, xs, lengths, save=False)
        return h, c, outs["y"]

    def layer_fwd(params, h0, c0, xs, lengths):
        h, c, outs = forward(params, h0, c0, xs, lengths, save=True)
        hs = outs.get("h", outs["y"])
        saved = {k: outs[k] for k in ("acts", "ghn") if k in outs}
        res = (params, h0, c0, xs, lengths, hs, outs.get("c_prev"), saved)
        return (h, c, outs["y"]), res

    def layer_bwd(res, cts):
        params, h0, c0, xs, lengths, hs, cs_prev, saved = res
        dh_T, dc_T, dys = cts
        hidden = params.V.shape[0]
        num_steps, batch, _ = xs.shape
        dtype = params.V.dtype
        V = params.V if cd is None else params.V.astype(cd)
        VT = V.T
        if concat:  # one matmul per step gives [dx_t, dh_{t-1}]
            WV = jnp.concatenate([params.W, params.V], axis=0)
            VT = (WV if cd is None else WV.astype(cd)).T
        input_size = xs.shape[-1]
        hs_prev = _shift_in(h0, hs)
        seq = {"dy": dys}
        if cfg.remat or cfg.kind in ("gru", "gru_ra"):
            seq["h_prev"] = hs_prev
        if lstm:
            seq["c_prev"] = cs_prev
        if cfg.remat:
            seq["x"] = xs
        else:
            seq.update(saved)  # the gate activations (none for the plain RNN)
        if cfg.masked:
            seq["valid"] = jnp.arange(num_steps, dtype=lengths.dtype)[:, None] < lengths[None, :]

        def recompute(s):
            """Gate activations of one step from x_t and h_{t-1} (remat)."""
            gx = gate_in(params, s["x"])
            if lstm:
                a = gx + _mm(s["h_prev"], V, cd, dtype)
                if cfg.gate_block:
                    return _lstm_gates(cfg, a, hidden)
                return _lstm_acts(a, hidden, cfg.tanh_sigmoid)
            if cfg.kind == "gru":
                return _gru_fwd(cfg, V, s["h_prev"], gx, hidden, cd)[1]
            if cfg.kind == "gru_ra":
                return _gru_ra_fwd(cfg, V, params.b_hn, s["h_prev"], gx, hidden, cd)[1]
            return ()

        def split(a, sizes):
            out, start = [], 0
            for size in sizes:
                out.append(a[:, start : start + size])
                start += size
            return tuple(out)

        def body(carry, s):
            dh, dc = carry
            dh_cell = dh + s["dy"]
            dc_cell = dc
            if cfg.masked:
                m = _col(s["valid"])
                zeros = jnp.zeros_like(dh)
                dh_cell = jnp.where(m, dh_cell, zeros)
                if lstm:
                    dc_cell = jnp.where(m, dc, zeros)
            if cfg.remat:
                act = recompute(s)
            elif cfg.kind == "gru_ra":
                act = split(s["acts"], (hidden,) * 3) + (s["ghn"],)
            elif lstm and cfg.gate_block:
                act = s["acts"]
            elif cfg.kind != "rnn":
                act = split(s["acts"], (hidden,) * (4 if lstm else 3))
            if lstm and cfg.gate_block:
                dh_prev, dc_prev, dA = _lstm_bwd_block(
                    VT, dh_cell, dc_cell, act, s["c_prev"], hidden, cd
                )
            elif lstm:
                i, f, g, _ = act
                c_t = f * s["c_prev"] + i * g
                dh_prev, dc_prev, dA = _lstm_bwd(VT, dh_cell, dc_cell, act, s["c_prev"], c_t, cd)
            elif cfg.kind == "gru":
                dh_prev, dA = _gru_bwd(VT, dh_cell, act, s["h_prev"], hidden, cd)
                dc_prev = None
            elif cfg.kind == "gru_ra":
                dh_prev, dA, dghn = _gru_ra_bwd(VT, dh_cell, act, s["h_prev"], cd)
                dc_prev = None
            else:
                h_t = s["h_t"]
                dA = dh_cell * (1 - h_t * h_t)
                dh_prev, dc_prev = _mm(dA, VT, cd, dtype), None
            out = {"dA": dA}
            if cfg.kind == "gru_ra":
                out["dghn"] = dghn
            if concat:
                out["dx"], dh_prev = dh_prev[:, :input_size], dh_prev[:, input_size:]
            if cfg.masked:
                # A frozen step passes its carry's gradient straight through.
                dh_prev = dh_prev + jnp.where(m, zeros, dh)
                if lstm:
                    dc_prev = dc_prev + jnp.where(m, zeros, dc)
            if cfg.kind == "gru":
                out["r"] = act[0]
            return (dh_prev, dc_prev), out

        if cfg.kind == "rnn":
            seq["h_t"] = hs
        W = params.W if cd is None else params.W.astype(cd)

        def weight_grads(x, hp, dA, r, dghn):
            """dW, dV, db (and db_hn) from rows of x_t, h_{t-1}, dA_t (and r_t or dghn_t)."""
            dW = _mm_tn(x, dA, cd, dtype)
            db = jnp.sum(dA, axis=0)
            if cfg.kind == "gru":
                dV = jnp.concatenate(
                    [
                        _mm_tn(hp, dA[:, : 2 * hidden], cd, dtype),
                        _mm_tn(r * hp, dA[:, 2 * hidden :], cd, dtype),
                    ],
                    axis=-1,
                )
                return GRUParams(dW, dV, db)
            if cfg.kind == "gru_ra":
                dgh = jnp.concatenate([dA[:, : 2 * hidden], dghn], axis=-1)
                return GRUResetAfterParams(
                    dW, _mm_tn(hp, dgh, cd, dtype), db, jnp.sum(dghn, axis=0)
                )
            return type(params)(dW, _mm_tn(hp, dA, cd, dtype), db)

        if cfg.remat:
            # Memory O(carry): the weight gradients accumulate in the loop, dx_t leaves it.
            def remat_body(carry, s):
                (dh, dc), acc = carry
                (dh, dc), out = body((dh, dc), s)
                step = weight_grads(s["x"], s["h_prev"], out["dA"], out.get("r"), out.get("dghn"))
                acc = jax.tree.map(jnp.add, acc, step)
                dx = out["dx"] if concat else _mm(out["dA"], W.T, cd, dtype)
                return ((dh, dc), acc), dx

            zeros = jax.tree.map(jnp.zeros_like, params)
            init = ((dh_T, dc_T if lstm else None), zeros)
            ((dh0, dc0), grads), dxs = jax.lax.scan(
                remat_body, init, seq, reverse=True, unroll=cfg.unroll
            )
            return grads, dh0, dc0, dxs, None

        carry0 = (dh_T, dc_T if lstm else None)

        def tie_dA(t, dhc, out):
            """The LSTM's dc_{t-1} = dc_t f_t and the GRU's dh_{t-1} = dh_t (1 - z_t) + ...
            read the activations without leading to dA_t. A select that never takes them
            orders those reads before the write, so XLA need not copy the carried
            activations every step."""
            tie = dhc[1] if lstm else dhc[0]
            reps = out["dA"].shape[-1] // tie.shape[-1]
            return dict(out, dA=jnp.where(t < 0, jnp.tile(tie, (1, reps)), out["dA"]))

        if cfg.unroll > 1:
            # Within an unrolled iteration XLA fuses the slices into the steps' kernels and
            # would copy a buffer that is read and overwritten there: plain stacked outputs.
            (dh0, dc0), outs = jax.lax.scan(body, carry0, seq, reverse=True, unroll=cfg.unroll)
        else:
            # The LSTM and the reset-after GRU write dA_t over the activations (and dghn_t
            # over ghn_t), which are as wide.
            overwrite = {"acts": "dA", "ghn": "dghn"} if lstm or cfg.kind == "gru_ra" else {}
            (dh0, dc0), outs = _prefetch_scan(
                body,
                carry0,
                seq,
                overwrite,
                num_steps,
                reverse=True,
                before_write=tie_dA if overwrite else None,
            )
        rows = num_steps * batch
        dA = outs["dA"].reshape((rows, -1))
        r, dghn = (outs[k].reshape((rows, hidden)) if k in outs else None for k in ("r", "dghn"))
        grads = weight_grads(xs.reshape((rows, -1)), hs_prev.reshape((rows, hidden)), dA, r, dghn)
        dxs = outs["dx"] if concat else _mm(dA, W.T, cd, dtype).reshape(xs.shape)
        return grads, dh0, dc0, dxs, None

    layer.defvjp(layer_fwd, layer_bwd)
    return layer
