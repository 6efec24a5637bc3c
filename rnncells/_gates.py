"""Per-gate views of fused parameters: the seed's W, V, b for one gate, by name."""

from __future__ import annotations

from typing import NamedTuple

import jax


class GateWeights(NamedTuple):
    """One gate's weights in the seed's notation: a = x @ W + h @ V + b."""

    W: jax.Array  # (input_size, hidden_size)
    V: jax.Array  # (hidden_size, hidden_size)
    b: jax.Array  # (hidden_size,)


def gate_slice(params, gate_names: tuple[str, ...], name: str) -> GateWeights:
    """Slices the block of gate ``name`` out of fused (D, G*H), (H, G*H), (G*H,) weights."""
    if name not in gate_names:
        raise ValueError(
            f"gate name must be one of {list(gate_names)} for {type(params).__name__}, got {name!r}"
        )
    hidden = params.V.shape[0]
    k = gate_names.index(name)
    sl = slice(k * hidden, (k + 1) * hidden)
    return GateWeights(params.W[:, sl], params.V[:, sl], params.b[sl])
