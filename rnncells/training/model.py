"""The sequence model trained on the tasks: input map -> recurrent stack -> linear readout.

    e_t = onehot(x_t) | E[x_t] | x_t          token ids (one-hot / learned) or real inputs
    h^1..h^L = stack_unroll(layers, e)        the core's recurrent layers
    y_t = h^L_t @ W_out + b_out               per-step outputs, (B, T, output_size)

Params are a plain pytree (`ModelParams`), so they vmap over seeds, shard, and checkpoint
without wrappers.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

import rnncells as rc
from rnncells import cells as _cells

__all__ = [
    "EMBEDDINGS",
    "INITS",
    "ModelParams",
    "cell_init_kwargs",
    "cell_names",
    "embed_inputs",
    "hidden_states",
    "init_mismatch",
    "model_apply",
    "model_init",
]

_SEED_CELLS = ("rnn", "gru", "gru_reset_after", "lstm")  # listed first, in this order
INITS = ("default", "forget_bias", "chrono")
EMBEDDINGS = ("onehot", "learned")


class ModelParams(NamedTuple):
    """Parameters of `model_apply`.

    embed: (vocab_size, embed_size) learned embedding, or None when the inputs are
        real-valued or one-hot encoded.
    layers: tuple of the core's per-layer params (LSTMParams, GRUParams, ...).
    W_out: (width of the last layer's output, output_size) readout weights.
    b_out: (output_size,) readout bias.
    """

    embed: jax.Array | None
    layers: tuple[Any, ...]
    W_out: jax.Array
    b_out: jax.Array


def cell_names() -> tuple[str, ...]:
    """The values ``model.cell`` takes: every registered cell (``rnncells.cells``), the
    seed's four first ("rnn", "gru", "gru_reset_after", "lstm")."""
    registered = _cells.cell_names()
    return tuple(n for n in _SEED_CELLS if n in registered) + tuple(
        n for n in registered if n not in _SEED_CELLS
    )


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def _cells_with(option: str) -> list[str]:
    """The cells whose init takes ``option`` (``CellSpec.options``)."""
    return [n for n in cell_names() if option in _cells.cell_spec_by_name(n).options]


def init_mismatch(cell: str, init: str) -> str | None:
    """Why ``init`` does not apply to ``cell`` (a sentence), or None when it does.

    ``forget_bias`` needs a cell whose init takes ``forget_bias`` (the LSTM family),
    ``chrono`` one whose init takes ``chrono_t_max`` (the gated cells).
    """
    if cell not in cell_names():
        return None  # an unknown cell is reported as such
    if init == "forget_bias" and cell not in _cells_with("forget_bias"):
        names = [repr(n) for n in _cells_with("forget_bias")]
        listed = ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]
        return f"init='forget_bias' needs cell={listed}, got cell={cell!r}"
    if init == "chrono" and cell not in _cells_with("chrono_t_max"):
        gated = ", ".join(_cells_with("chrono_t_max"))
        return f"init='chrono' needs a gated cell ({gated}), got cell={cell!r}"
    return None


def cell_init_kwargs(
    cell: str, init: str, *, forget_bias: float = 1.0, chrono_t_max: float = 0.0
) -> dict[str, Any]:
    """Keyword arguments for the core's init function for a cell and an init scheme.

    ``default`` is the core's default (LSTM b_f = 1, GRU/RNN zero biases; each cell's
    init's defaults); ``forget_bias`` sets the LSTM family's constant b_f to
    ``forget_bias`` (0 gives the plain all-zero-bias initialisation); ``chrono`` is
    Tallec & Ollivier's chrono init with ``chrono_t_max`` (gated cells only).

    Raises:
        ValueError: unknown cell or init, or an init the cell does not have.
    """
    _check_choice("cell", cell, cell_names())
    _check_choice("init", init, INITS)
    mismatch = init_mismatch(cell, init)
    if mismatch is not None:
        raise ValueError(mismatch)
    kwargs: dict[str, Any] = {"reset_after": True} if cell == "gru_reset_after" else {}
    if init == "forget_bias":
        kwargs["forget_bias"] = float(forget_bias)
    elif init == "chrono":
        if not chrono_t_max > 2:
            raise ValueError(f"chrono_t_max must be > 2 for init='chrono', got {chrono_t_max!r}")
        kwargs["chrono_t_max"] = float(chrono_t_max)
    return kwargs


def model_init(
    key: jax.Array,
    *,
    cell: str,
    input_size: int,
    output_size: int,
    hidden_size: int,
    num_layers: int = 1,
    vocab_size: int | None = None,
    embedding: str = "onehot",
    embed_size: int = 0,
    init: str = "default",
    forget_bias: float = 1.0,
    chrono_t_max: float = 0.0,
) -> ModelParams:
    """Initialises a model.

    Args:
        key: PRNG key.
        cell: "rnn", "gru" (reset before, z writes), "gru_reset_after", "lstm", or any
            other registered cell's name (``cell_names()``: "peephole_lstm",
            "cifg_lstm", "ln_lstm", "ln_gru", "irnn", ...).
        input_size: D of real-valued inputs, or the vocabulary size for token inputs.
        output_size: width of each output step.
        hidden_size: H of every recurrent layer.
        num_layers: depth of the recurrent stack.
        vocab_size: None for real inputs (B, T, D); an int for token ids (B, T).
        embedding: for token inputs, "onehot" (no parameters) or "learned".
        embed_size: width of a learned embedding.
        init: "default", "forget_bias" or "chrono" (see `cell_init_kwargs`).
        forget_bias: b_f for init="forget_bias".
        chrono_t_max: T_max for init="chrono".

    Returns:
        ModelParams.

    Raises:
        ValueError: unknown cell, init or embedding, or a size that is not positive.
    """
    kwargs = cell_init_kwargs(cell, init, forget_bias=forget_bias, chrono_t_max=chrono_t_max)
    _check_choice("embedding", embedding, EMBEDDINGS)
    for name, value in (("hidden_size", hidden_size), ("output_size", output_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    k_embed, k_layers, k_out = jax.random.split(key, 3)
    width = input_size
    embed = None
    if vocab_size is not None and embedding == "learned":
        if not isinstance(embed_size, int) or embed_size < 1:
            raise ValueError(f"embed_size must be a positive integer, got {embed_size!r}")
        embed = jax.random.normal(k_embed, (vocab_size, embed_size), jnp.float32)
        width = embed_size
    base = "gru" if cell == "gru_reset_after" else cell
    layers = rc.stack_init(k_layers, base, width, hidden_size, num_layers=num_layers, **kwargs)
    # The readout reads the last layer's output, which is not H wide for every cell (the
    # LSTMP's is its projection size).
    top = layers[-1]
    width_out = rc.cell_spec(top).output_size(top)
    scale = jnp.sqrt(jnp.asarray(1.0 / width_out, jnp.float32))
    W_out = jax.random.normal(k_out, (width_out, output_size), jnp.float32) * scale
    return ModelParams(embed, layers, W_out, jnp.zeros((output_size,), jnp.float32))


def embed_inputs(params: ModelParams, inputs: jax.Array, vocab_size: int | None) -> jax.Array:
    """The recurrent stack's input: real inputs as they are, token ids one-hot or embedded."""
    if vocab_size is None:
        return inputs.astype(jnp.float32)
    if params.embed is not None:
        return params.embed[inputs]
    return jax.nn.one_hot(inputs, vocab_size, dtype=jnp.float32)


def model_apply(
    params: ModelParams,
    inputs: jax.Array,
    *,
    vocab_size: int | None = None,
    lengths: jax.Array | None = None,
    unroll: int | None = None,
) -> jax.Array:
    """Per-step outputs of the model.

    Args:
        params: ModelParams.
        inputs: (B, T, D) float inputs, or (B, T) int token ids when ``vocab_size`` is set.
        vocab_size: None for real inputs, else the vocabulary size of the token ids.
        lengths: optional (B,) valid lengths (outputs past a length are the readout of 0).
        unroll: time steps per scan iteration (``lax.scan``'s ``unroll``); None:
            ``rnncells.default_unroll`` (8 on a GPU, 1 on a CPU).

    Returns:
        (B, T, output_size) outputs (regression values or logits).
    """
    xs = embed_inputs(params, inputs, vocab_size)
    _, hs = rc.stack_unroll(params.layers, xs, lengths=lengths, unroll=unroll)
    return hs @ params.W_out + params.b_out.reshape((1,) * (hs.ndim - 1) + (-1,))


def hidden_states(
    params: ModelParams, inputs: jax.Array, *, vocab_size: int | None = None
) -> jax.Array:
    """(B, T, H) outputs of the last recurrent layer (for diagnostics)."""
    _, hs = rc.stack_unroll(params.layers, embed_inputs(params, inputs, vocab_size))
    return hs
