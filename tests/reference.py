"""An independent NumPy implementation of every cell, written from the equations.

Each step takes the seed's per-gate weights as a dict ``{gate name: (W, V, b)}`` with
W (D, H), V (H, H), b (H,), works on float64 NumPy arrays of shape (*batch, D) and
(*batch, H), and returns the new carry and the output like the library's steps do.
Nothing here imports rnncells: a bug in the library cannot cancel out of a comparison.

LSTM (gates i, f, g, o):
    f = σ(x W_f + h V_f + b_f),  i = σ(x W_i + h V_i + b_i),  o = σ(x W_o + h V_o + b_o)
    C~ = tanh(x W_g + h V_g + b_g),  C = f C_prev + i C~,  h = o tanh(C)
GRU, reset before (gates r, z, h; z writes):
    z = σ(x W_z + h V_z + b_z),  r = σ(x W_r + h V_r + b_r)
    h~ = tanh(x W_h + (r h) V_h + b_h),  h = (1 - z) h_prev + z h~
GRU, reset after: h~ = tanh(x W_h + b_h + r (h V_h + b_hn)), the rest as above.
RNN: h = tanh(x W + h V + b).

The LSTM family (``family_step``), from each paper's equations:
Peephole LSTM: i = σ(x W_i + h V_i + p_i C_prev + b_i), f likewise with p_f,
    C = f C_prev + i C~, o = σ(x W_o + h V_o + p_o C + b_o), h = o tanh(C).
CIFG LSTM (gates f, g, o): i = 1 - f, otherwise the LSTM.
LN LSTM: (a_i, a_f, a_g, a_o) = LN(x W; γ_x) + LN(h V; γ_h) + b, LN over all 4H entries
    in the fused order (i, f, g, o); C as the LSTM's; h = σ(a_o) tanh(LN(C; γ_c, β_c)).
LN GRU (reset before): (u_r, u_z, u_h) = LN(x W; γ_x) over 3H; (r, z) = σ((u_r, u_z) +
    LN(h V_rz; γ_h[:2H]) + (b_r, b_z)); h~ = tanh(u_h + LN((r h) V_h; γ_h[2H:]) + b_h).
IRNN: h = relu(x W + h V + b).
"""

from __future__ import annotations

import numpy as np


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _pre(gates, name, x, h):
    """x W_name + h V_name + b_name."""
    W, V, b = (np.asarray(w, np.float64) for w in gates[name])
    return x @ W + h @ V + b


def lstm_step(gates, carry, x):
    """carry = (h, c); returns ((h, c), h)."""
    h_prev, c_prev = (np.asarray(a, np.float64) for a in carry)
    x = np.asarray(x, np.float64)
    f = sigmoid(_pre(gates, "f", x, h_prev))
    i = sigmoid(_pre(gates, "i", x, h_prev))
    c_tilde = np.tanh(_pre(gates, "g", x, h_prev))
    c = f * c_prev + i * c_tilde
    o = sigmoid(_pre(gates, "o", x, h_prev))
    h = o * np.tanh(c)
    return (h, c), h


def gru_step(gates, carry, x, *, b_hn=None):
    """The seed's GRU (reset before), or reset after when ``b_hn`` is given; carry = (h,)."""
    (h_prev,) = (np.asarray(a, np.float64) for a in carry)
    x = np.asarray(x, np.float64)
    z = sigmoid(_pre(gates, "z", x, h_prev))
    r = sigmoid(_pre(gates, "r", x, h_prev))
    W_h, V_h, b_h = (np.asarray(w, np.float64) for w in gates["h"])
    if b_hn is None:
        h_tilde = np.tanh(x @ W_h + (r * h_prev) @ V_h + b_h)
    else:
        h_tilde = np.tanh(x @ W_h + b_h + r * (h_prev @ V_h + np.asarray(b_hn, np.float64)))
    h = (1.0 - z) * h_prev + z * h_tilde
    return (h,), h


def rnn_step(gates, carry, x):
    """carry = (h,); returns ((h,), h)."""
    (h_prev,) = (np.asarray(a, np.float64) for a in carry)
    h = np.tanh(_pre(gates, "h", np.asarray(x, np.float64), h_prev))
    return (h,), h


def unroll(step, carry, xs, *, lengths=None, reverse=False):
    """Packed-sequence unroll of a one-example ``step(carry, x)`` by plain loops.

    Args:
      step: ``step(carry, x) -> (carry, y)`` for one example (x of shape (D,)).
      carry: tuple of arrays (*batch, H), the initial carry.
      xs: (*batch, T, D).
      lengths: (*batch,) ints, or None for full length T.
      reverse: run each example's valid prefix from its last valid step to its first.

    Returns:
      (final carry tuple, ys (*batch, T, H)), ys zero past each length and in input
      time order; the final carry is the one after the last valid step.
    """
    xs = np.asarray(xs, np.float64)
    batch_shape, num_steps = xs.shape[:-2], xs.shape[-2]
    carry = tuple(np.array(c, np.float64) for c in carry)
    lengths = np.full(batch_shape, num_steps) if lengths is None else np.asarray(lengths)
    ys = None
    for idx in np.ndindex(*batch_shape):
        c = tuple(part[idx] for part in carry)
        steps = range(int(lengths[idx]))
        for t in reversed(steps) if reverse else steps:
            c, y = step(c, xs[idx + (t,)])
            if ys is None:
                ys = np.zeros(batch_shape + (num_steps, y.shape[-1]))
            ys[idx + (t,)] = y
        for part, value in zip(carry, c, strict=True):
            part[idx] = value
    if ys is None:  # every length is 0: the output width is the carry's
        ys = np.zeros(batch_shape + (num_steps, carry[0].shape[-1]))
    return carry, ys


# Fused layouts as documented: W (D, G*H), V (H, G*H), b (G*H,), gate blocks in this order.
LSTM_ORDER = ("i", "f", "g", "o")
GRU_ORDER = ("r", "z", "h")
RNN_ORDER = ("h",)


def random_gates(rng, names, input_size, hidden_size, *, scale=0.6):
    """Random per-gate (W, V, b) with distinct non-zero biases, float64."""
    gates = {}
    for name in names:
        W = rng.uniform(-scale, scale, (input_size, hidden_size))
        V = rng.uniform(-scale, scale, (hidden_size, hidden_size))
        b = rng.uniform(0.1, 0.9, hidden_size) * rng.choice([-1.0, 1.0], hidden_size)
        gates[name] = (W, V, b)
    return gates


def fuse(gates, order):
    """(W, V, b) fused over gates in ``order``: the documented storage layout."""
    W = np.concatenate([gates[n][0] for n in order], axis=1)
    V = np.concatenate([gates[n][1] for n in order], axis=1)
    b = np.concatenate([gates[n][2] for n in order])
    return W, V, b


def make(kind, rng, input_size, hidden_size, *, dtype=np.float64):
    """Random weights of cell ``kind`` and the reference step that uses them.

    Args:
      kind: "lstm", "gru" (reset before), "gru_reset_after" or "rnn".
      rng: numpy Generator.
      input_size, hidden_size: D and H.
      dtype: the weights are rounded to this dtype (then held in float64), so the
        reference sees exactly the values a library run in ``dtype`` sees.

    Returns:
      (gates, fused, step): per-gate {name: (W, V, b)}; the fused arrays (W, V, b) in the
      documented gate order, plus b_hn for "gru_reset_after"; ``step(carry, x)``.
    """
    names = {"lstm": LSTM_ORDER, "rnn": RNN_ORDER}.get(kind, GRU_ORDER)
    gates = random_gates(rng, names, input_size, hidden_size)
    gates = {n: tuple(np.asarray(a, dtype).astype(np.float64) for a in g) for n, g in gates.items()}
    fused = fuse(gates, names)
    if kind == "lstm":
        return gates, fused, lambda c, x: lstm_step(gates, c, x)
    if kind == "gru":
        return gates, fused, lambda c, x: gru_step(gates, c, x)
    if kind == "gru_reset_after":
        b_hn = np.asarray(rng.uniform(-0.9, 0.9, hidden_size), dtype).astype(np.float64)
        return gates, fused + (b_hn,), lambda c, x: gru_step(gates, c, x, b_hn=b_hn)
    if kind == "rnn":
        return gates, fused, lambda c, x: rnn_step(gates, c, x)
    raise ValueError(f"unknown kind {kind!r}")


# --- the LSTM family --------------------------------------------------------------------

LN_EPSILON = 1e-5


def layer_norm(z, gain, bias=0.0):
    """γ (z - mean) / sqrt(var + ε) + β over the last axis, by the textbook formula."""
    z = np.asarray(z, np.float64)
    mean = z.mean(axis=-1, keepdims=True)
    var = ((z - mean) ** 2).mean(axis=-1, keepdims=True)
    return gain * (z - mean) / np.sqrt(var + LN_EPSILON) + bias


def _as64(*arrays):
    return tuple(np.asarray(a, np.float64) for a in arrays)


def peephole_lstm_step(gates, peepholes, carry, x):
    """``peepholes`` = {"i": p_i, "f": p_f, "o": p_o}; carry = (h, c)."""
    h_prev, c_prev = _as64(*carry)
    (x,) = _as64(x)
    p_i, p_f, p_o = _as64(peepholes["i"], peepholes["f"], peepholes["o"])
    i = sigmoid(_pre(gates, "i", x, h_prev) + p_i * c_prev)
    f = sigmoid(_pre(gates, "f", x, h_prev) + p_f * c_prev)
    c = f * c_prev + i * np.tanh(_pre(gates, "g", x, h_prev))
    o = sigmoid(_pre(gates, "o", x, h_prev) + p_o * c)
    h = o * np.tanh(c)
    return (h, c), h


def cifg_lstm_step(gates, carry, x):
    """Gates f, g, o; i = 1 - f. carry = (h, c)."""
    h_prev, c_prev = _as64(*carry)
    (x,) = _as64(x)
    f = sigmoid(_pre(gates, "f", x, h_prev))
    i = 1.0 - f
    c = f * c_prev + i * np.tanh(_pre(gates, "g", x, h_prev))
    h = sigmoid(_pre(gates, "o", x, h_prev)) * np.tanh(c)
    return (h, c), h


def ln_lstm_step(fused, carry, x):
    """``fused`` = (W (D, 4H), V (H, 4H), b, γ_x, γ_h (4H,), γ_c, β_c (H,)), gate blocks
    (i, f, g, o). carry = (h, c)."""
    W, V, b, g_x, g_h, g_c, b_c = _as64(*fused)
    h_prev, c_prev = _as64(*carry)
    (x,) = _as64(x)
    a = layer_norm(x @ W, g_x) + layer_norm(h_prev @ V, g_h) + b
    a_i, a_f, a_g, a_o = np.split(a, 4, axis=-1)
    c = sigmoid(a_f) * c_prev + sigmoid(a_i) * np.tanh(a_g)
    h = sigmoid(a_o) * np.tanh(layer_norm(c, g_c, b_c))
    return (h, c), h


def ln_gru_step(fused, carry, x):
    """``fused`` = (W (D, 3H), V (H, 3H), b, γ_x, γ_h (3H,)), gate blocks (r, z, h).
    carry = (h,)."""
    W, V, b, g_x, g_h = _as64(*fused)
    (h_prev,) = _as64(*carry)
    (x,) = _as64(x)
    H = V.shape[0]
    u = layer_norm(x @ W, g_x)
    rz = sigmoid(u[..., : 2 * H] + layer_norm(h_prev @ V[:, : 2 * H], g_h[: 2 * H]) + b[: 2 * H])
    r, z = rz[..., :H], rz[..., H:]
    v_h = layer_norm((r * h_prev) @ V[:, 2 * H :], g_h[2 * H :])
    h_tilde = np.tanh(u[..., 2 * H :] + v_h + b[2 * H :])
    h = (1.0 - z) * h_prev + z * h_tilde
    return (h,), h


def irnn_step(gates, carry, x):
    """carry = (h,); h = relu(x W + h V + b)."""
    (h_prev,) = _as64(*carry)
    h = np.maximum(_pre(gates, "h", np.asarray(x, np.float64), h_prev), 0.0)
    return (h,), h


FAMILY_ORDER = {
    "peephole_lstm": LSTM_ORDER,
    "cifg_lstm": ("f", "g", "o"),
    "ln_lstm": LSTM_ORDER,
    "ln_gru": GRU_ORDER,
    "irnn": RNN_ORDER,
}


def make_family(kind, rng, input_size, hidden_size, *, dtype=np.float64):
    """Random weights of a family cell ``kind`` and the reference step that uses them.

    Every parameter is random and non-zero (gains near 1, biases and peepholes of both
    signs), rounded to ``dtype`` and held in float64.

    Returns:
      (fields, step): the params' fields in the documented order (W, V, b, then the
      cell's own vectors), and ``step(carry, x)``.
    """
    H = hidden_size

    def cast(a):
        return np.asarray(a, dtype).astype(np.float64)

    gates = random_gates(rng, FAMILY_ORDER[kind], input_size, hidden_size)
    gates = {n: tuple(cast(a) for a in g) for n, g in gates.items()}
    fused = fuse(gates, FAMILY_ORDER[kind])
    G = len(FAMILY_ORDER[kind])

    def signed(n, low=0.1, high=0.9):
        return cast(rng.uniform(low, high, n) * rng.choice([-1.0, 1.0], n))

    if kind == "peephole_lstm":
        p = {n: signed(H) for n in ("i", "f", "o")}
        return fused + (p["i"], p["f"], p["o"]), lambda c, x: peephole_lstm_step(gates, p, c, x)
    if kind == "cifg_lstm":
        return fused, lambda c, x: cifg_lstm_step(gates, c, x)
    if kind == "ln_lstm":
        extra = (
            cast(rng.uniform(0.5, 1.5, G * H)),
            cast(rng.uniform(0.5, 1.5, G * H)),
            cast(rng.uniform(0.5, 1.5, H)),
            signed(H),
        )
        fields = fused + extra
        return fields, lambda c, x: ln_lstm_step(fields, c, x)
    if kind == "ln_gru":
        fields = fused + (cast(rng.uniform(0.5, 1.5, G * H)), cast(rng.uniform(0.5, 1.5, G * H)))
        return fields, lambda c, x: ln_gru_step(fields, c, x)
    if kind == "irnn":
        return fused, lambda c, x: irnn_step(gates, c, x)
    raise ValueError(f"unknown kind {kind!r}")
