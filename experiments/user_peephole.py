"""A cell written outside the package, as a user writes one: a peephole LSTM in 40 lines.

``register()`` registers it as the "user_peephole" cell with its body given
``gx = x_t @ W + b`` and ``linear_v=True`` (its recurrent term is h_{t-1} @ V added to
gx), so that ``rc.unroll`` runs it as the generic fused layer with no backward written
for it. ``experiments.bench_cells`` times it against its own scan; the tests check it
against the scan in fp64.

    i_t = σ(a_i + p_i ⊙ c_{t-1}),  f_t = σ(a_f + p_f ⊙ c_{t-1}),  g_t = tanh(a_g)
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t,  o_t = σ(a_o + p_o ⊙ c_t),  h_t = o_t ⊙ tanh(c_t)

with (a_i, a_f, a_g, a_o) = x_t W + h_{t-1} V + b.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

import rnncells as rc

NAME = "user_peephole"


class UserPeepholeParams(NamedTuple):
    W: jax.Array  # (D, 4H)
    V: jax.Array  # (H, 4H)
    b: jax.Array  # (4H,)
    p: jax.Array  # (3H,): p_i, p_f, p_o


def _row(v, like):
    """v (N,) as (1, ..., 1, N), of like's rank (no implicit rank promotion)."""
    return v.reshape((1,) * (like.ndim - 1) + v.shape)


def body(params: UserPeepholeParams, carry: rc.LSTMState, gx: jax.Array):
    """One step given gx = x_t @ W + b."""
    a_i, a_f, a_g, a_o = jnp.split(gx + carry.h @ params.V, 4, axis=-1)
    p_i, p_f, p_o = (_row(p, carry.c) for p in jnp.split(params.p, 3))
    c = jax.nn.sigmoid(a_f + p_f * carry.c) * carry.c
    c = c + jax.nn.sigmoid(a_i + p_i * carry.c) * jnp.tanh(a_g)
    h = jax.nn.sigmoid(a_o + p_o * c) * jnp.tanh(c)
    return rc.LSTMState(h, c), h


def step(params: UserPeepholeParams, carry: rc.LSTMState, x: jax.Array):
    """One step: the body of x_t @ W + b."""
    gx = x @ params.W
    return body(params, carry, gx + _row(params.b, gx))


def init(key, input_size, hidden_size, dtype=jnp.float32):
    k1, k2, k3 = jax.random.split(key, 3)
    return UserPeepholeParams(
        jax.random.normal(k1, (input_size, 4 * hidden_size), dtype) / input_size**0.5,
        jax.random.normal(k2, (hidden_size, 4 * hidden_size), dtype) / hidden_size**0.5,
        jnp.zeros((4 * hidden_size,), dtype),
        0.1 * jax.random.normal(k3, (3 * hidden_size,), dtype),
    )


def register() -> rc.CellSpec:
    """Registers the cell (once per process) and returns its spec."""
    if NAME in rc.cell_names():
        return rc.cell_spec_by_name(NAME)
    spec = rc.standard_spec(
        NAME,
        UserPeepholeParams,
        rc.LSTMState,
        step,
        init,
        ("i", "f", "g", "o"),
        vectors={"b": 4, "p": 3},
        cell=body,
        linear_v=True,
    )
    return rc.register_cell(spec)
