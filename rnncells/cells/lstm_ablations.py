"""Greff et al. (2017)'s LSTM variants: the vanilla (peephole) LSTM with one part removed.

"LSTM: A Search Space Odyssey" compares the vanilla LSTM (``rnncells.cells.peephole_lstm``)
with eight variants that each change one thing. Five of them remove a part, and are the
cells of this module (the changed equation of ``rnncells.cells.peephole_lstm`` in each):

    lstm_nig   no input gate            i_t  = 1
    lstm_nfg   no forget gate           f_t  = 1
    lstm_nog   no output gate           o_t  = 1
    lstm_niaf  no input activation      C~_t = W_g x_t + V_g h_{t-1} + b_g     (no tanh)
    lstm_noaf  no output activation     h_t  = o_t ⊙ C_t                      (no tanh)

Of the others, "no peepholes" is the seed's ``lstm`` and "coupled input and forget gate"
is ``cifg_lstm`` (which, unlike Greff's CIFG, has no peepholes).

Every variant keeps the vanilla LSTM's parameters, ``PeepholeLSTMParams``' fields in the
same layout (fused (i, f, g, o) blocks and three peepholes), so one init serves all and
``gate(params, name)`` reads them the same way; the weights of a removed gate (and its
peephole) are in the pytree but the step never reads them, so their gradient is exactly
zero and they never change. Each variant has a params type of its own (a subclass), as
the registry looks a cell up by its params' type. The carry is ``LSTMState(h, c)``.
``unroll`` runs them as the fused layer with the peephole LSTM's hand-written unit
(``peephole_fused``, its gates removed or replaced; ``fused=False``: the scan of the step).

References:
  Greff, Srivastava, Koutník, Steunebrink & Schmidhuber 2017, "LSTM: A search space
  odyssey", IEEE TNNLS 28(10), https://arxiv.org/abs/1503.04069 (Section III, the
  variants NIG, NFG, NOG, NIAF, NOAF).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnncells import _checks
from rnncells._math import add_bias, row, sigmoid, tanh
from rnncells.cells._registry import standard_spec
from rnncells.cells.lstm import LSTMState
from rnncells.cells.peephole_lstm import (
    _VECTORS,
    PEEPHOLE_LSTM_GATES,
    PeepholeLSTMParams,
    peephole_fused,
    peephole_lstm_init,
)

__all__ = [
    "ABLATIONS",
    "NFGParams",
    "NIAFParams",
    "NIGParams",
    "NOAFParams",
    "NOGParams",
    "SPECS",
    "ablated_lstm_init",
    "ablated_lstm_step",
]

ABLATIONS = {
    "lstm_nig": "no input gate (i_t = 1)",
    "lstm_nfg": "no forget gate (f_t = 1)",
    "lstm_nog": "no output gate (o_t = 1)",
    "lstm_niaf": "no input activation (C~_t without tanh)",
    "lstm_noaf": "no output activation (h_t = o_t ⊙ C_t)",
}
"""The variants' registry names and what each removes."""


class NIGParams(PeepholeLSTMParams):
    """``lstm_nig`` parameters (the vanilla LSTM's; ``W_i``, ``V_i``, ``b_i``, ``p_i`` unused)."""

    __slots__ = ()


class NFGParams(PeepholeLSTMParams):
    """``lstm_nfg`` parameters (the vanilla LSTM's; ``W_f``, ``V_f``, ``b_f``, ``p_f`` unused)."""

    __slots__ = ()


class NOGParams(PeepholeLSTMParams):
    """``lstm_nog`` parameters (the vanilla LSTM's; ``W_o``, ``V_o``, ``b_o``, ``p_o`` unused)."""

    __slots__ = ()


class NIAFParams(PeepholeLSTMParams):
    """``lstm_niaf`` parameters (the vanilla LSTM's, all used)."""

    __slots__ = ()


class NOAFParams(PeepholeLSTMParams):
    """``lstm_noaf`` parameters (the vanilla LSTM's, all used)."""

    __slots__ = ()


_TYPES: dict[str, type[PeepholeLSTMParams]] = {
    "lstm_nig": NIGParams,
    "lstm_nfg": NFGParams,
    "lstm_nog": NOGParams,
    "lstm_niaf": NIAFParams,
    "lstm_noaf": NOAFParams,
}


def ablated_lstm_init(
    key: jax.Array,
    input_size: int,
    hidden_size: int,
    *,
    variant: str,
    forget_bias: float = 1.0,
    chrono_t_max: float | None = None,
    dtype=jnp.float32,
) -> PeepholeLSTMParams:
    """Initialises the parameters of one variant: exactly ``peephole_lstm_init``'s values
    (so every variant starts from the vanilla LSTM's weights for the same key), in the
    variant's params type.

    Args:
      key: PRNG key.
      input_size: D, the size of x_t.
      hidden_size: H, the size of h_t and C_t.
      variant: a name of ``ABLATIONS``, e.g. ``"lstm_nfg"``.
      forget_bias: constant forget-gate bias b_f.
      chrono_t_max: if given, chrono initialisation of b_f and b_i instead.
      dtype: floating dtype of all parameters.

    Returns:
      The variant's params: W (D, 4H), V (H, 4H), b (4H,), p_i, p_f, p_o (H,).

    Raises:
      ValueError: an unknown ``variant`` (naming the known ones), or what
        ``peephole_lstm_init`` raises.

    Example:
      >>> params = ablated_lstm_init(jax.random.key(0), 2, 8, variant="lstm_nog")
      >>> type(params).__name__, params.W.shape
      ('NOGParams', (2, 32))
    """
    if variant not in _TYPES:
        raise ValueError(f"variant must be one of {sorted(_TYPES)}, got {variant!r}")
    base = peephole_lstm_init(
        key,
        input_size,
        hidden_size,
        forget_bias=forget_bias,
        chrono_t_max=chrono_t_max,
        dtype=dtype,
    )
    return _TYPES[variant](*base)


def ablated_lstm_step(
    params: PeepholeLSTMParams, carry: LSTMState, x: jax.Array
) -> tuple[LSTMState, jax.Array]:
    """One step of the variant named by ``type(params)`` (equations in the module docstring).

    Args:
      params: NIGParams, NFGParams, NOGParams, NIAFParams or NOAFParams.
      carry: LSTMState with h and c of shape (*batch, H).
      x: input x_t of shape (*batch, D), the parameters' dtype.

    Returns:
      (LSTMState(h_t, C_t), h_t), h_t of shape (*batch, H).

    Raises:
      TypeError: params of another type (the vanilla ``PeepholeLSTMParams`` too: its
        step is ``peephole_lstm_step``), a wrong carry type, or dtype.
      ValueError: params of wrong shapes, x's last dimension is not D, or carry shapes
        don't match x's batch dims.
    """
    _checks.check_params_type("params", params, tuple(_TYPES.values()))
    _checks.check_step_inputs(params, carry, x, LSTMState, 4, vectors=_VECTORS)
    kind = type(params)
    with jax.named_scope(f"{kind.__name__[: -len('Params')].lower()}_lstm_step"):
        a = add_bias(x @ params.W, params.b) + carry.h @ params.V
        a_i, a_f, a_g, a_o = jnp.split(a, 4, axis=-1)
        one = jnp.ones_like(carry.c)
        i = one if kind is NIGParams else sigmoid(a_i + row(params.p_i, carry.c.ndim) * carry.c)
        f = one if kind is NFGParams else sigmoid(a_f + row(params.p_f, carry.c.ndim) * carry.c)
        g = a_g if kind is NIAFParams else tanh(a_g)
        c = f * carry.c + i * g
        o = one if kind is NOGParams else sigmoid(a_o + row(params.p_o, c.ndim) * c)
        h = o * (c if kind is NOAFParams else tanh(c))
        return LSTMState(h, c), h


def _init_for(name: str):
    def init(
        key, input_size, hidden_size, *, forget_bias=1.0, chrono_t_max=None, dtype=jnp.float32
    ):
        return ablated_lstm_init(
            key,
            input_size,
            hidden_size,
            variant=name,
            forget_bias=forget_bias,
            chrono_t_max=chrono_t_max,
            dtype=dtype,
        )

    init.__name__ = f"{name}_init"
    init.__doc__ = f"``ablated_lstm_init(..., variant={name!r})``: {ABLATIONS[name]}."
    return init


# Each variant's fused unit: the peephole LSTM's with its switch (peephole_lstm.py).
_ABLATED = {
    NIGParams: {"no_input_gate": True},
    NFGParams: {"no_forget_gate": True},
    NOGParams: {"no_output_gate": True},
    NIAFParams: {"linear_candidate": True},
    NOAFParams: {"linear_output": True},
}

# The five cells, in the order of ABLATIONS (one spec each, registered by rnncells.cells).
SPECS = tuple(
    standard_spec(
        name,
        params_type,
        LSTMState,
        ablated_lstm_step,
        _init_for(name),
        PEEPHOLE_LSTM_GATES,
        vectors=_VECTORS,
        options=("forget_bias", "chrono_t_max"),
        fused=peephole_fused(params_type, **_ABLATED[params_type]),
    )
    for name, params_type in _TYPES.items()
)
