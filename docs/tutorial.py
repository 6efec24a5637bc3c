# %% [markdown]
# # Tutorial: the LSTM and the GRU, from the vanishing gradient up
#
# This page is a notebook: the site runs it on every build, so every number and figure
# below is what the code printed. It follows the lecture the library implements:
#
# 1. the plain RNN's recurrence, and why its gradient vanishes, measured;
# 2. the LSTM's gates and cell state, as the equations write them;
# 3. the GRU's update and reset gates, and which way z points in each framework;
# 4. training all three on the adding problem, then the gradient again, and the gates;
# 5. the same cells as Flax NNX and linen modules, and a PyTorch model converted.
#
# It needs the `docs` extra (`pip install -e ".[docs]"`: Flax, matplotlib, Optax and
# PyTorch; see [Install](../install/)) and runs in about a minute on two CPU cores.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import rnncells as rc

T, H, D = 100, 32, 2  # sequence length, hidden units, input features
key = jax.random.key(0)
k_rnn, k_gru, k_lstm, k_x = jax.random.split(key, 4)
params = {
    "rnn": rc.rnn_init(k_rnn, D, H),
    "gru": rc.gru_init(k_gru, D, H),  # the seed's reset-before GRU
    "lstm": rc.lstm_init(k_lstm, D, H),  # forget-gate bias 1
}
xs = jax.random.uniform(k_x, (T, D))  # one sequence, time-major

# %% [markdown]
# ## 1. The plain RNN, and its vanishing gradient
#
# The plain RNN carries one vector and squashes it at every step:
#
# $$h_t = \tanh(W x_t + V h_{t-1} + b).$$
#
# The gradient that reaches step $t$ from the last step is a product of $T - t$
# Jacobians, $\partial h_T / \partial h_t = \prod_{s=t+1}^{T} \mathrm{diag}(1 -
# h_s^2)\, V^\top$: unless $V$'s gain and the tanh's slope stay exactly at one, the product
# shrinks (or grows) geometrically with $T - t$.
#
# A step in rnncells has the shape `step(params, carry, x) -> (carry, y)`, so
# `jax.lax.scan` runs it as it is. To measure $\|\partial h_T / \partial h_t\|$ for every
# $t$ at once, add a perturbation $e_t$ (zero) to the state entering each step and take the
# Jacobian of $h_T$ with respect to all the $e_t$.


# %%
def jacobian_norms(step, p, xs, field="h"):
    """||dh_T / dh_t||_F for t = 0 .. T-1 (h_t: the state after step t; ``field="c"``
    measures the LSTM's cell state instead)."""

    def final_state(es):
        def body(carry, inputs):
            x, e = inputs
            # perturb the state on its way into step t
            carry = carry._replace(**{field: getattr(carry, field) + e})
            return step(p, carry, x)

        carry, _ = jax.lax.scan(body, rc.init_carry(p), (xs, es))
        return getattr(carry, field)

    jac = jax.jacrev(final_state)(jnp.zeros((xs.shape[0], H)))  # (H, T, H)
    # The perturbation at step t + 1 acts on h_t; the last one (on h_{T-1}) is index T - 1.
    return jnp.sqrt(jnp.sum(jac**2, axis=(0, 2)))[1:]


def gradient_plot(norms, title):
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, n in norms.items():
        ax.semilogy(np.arange(1, len(n) + 1)[::-1], n, label=name)
    ax.set_xlabel("T - t (steps back from the end)")
    ax.set_ylabel("||dh_T / dh_t||  (C: ||dC_T / dC_t||)")
    ax.set_title(title)
    ax.legend()
    return fig


at_init = {name: jacobian_norms(rc.step_for(p), p, xs) for name, p in params.items()}
for name, n in at_init.items():
    print(f"{name:5s} at init: ||dh_T/dh_t|| = {float(n[-1]):.3g} one step back, "
          f"{float(n[-50]):.3g} 50 steps back")
gradient_plot(at_init, "Gradient reaching h_t from h_T, at initialisation");

# %% [markdown]
# At initialisation all three lose the gradient geometrically, and the gated cells no
# less than the tanh RNN: the GRU's update gate starts near $\sigma(0) = 1/2$, so its
# state is halved at each step, and the LSTM's cell state is multiplied by a forget gate
# near $\sigma(1) \approx 0.73$. (The tanh RNN starts with an orthogonal $V$, whose gain is
# one; only the tanh's slope shrinks it.) The difference is what training can do about
# it. In the tanh RNN the factor per step is $\mathrm{diag}(1 - h_s^2) V^\top$: keeping it
# at one needs $V$'s spectrum and every unit's slope at one together. In the gated cells
# the factor is a gate, and a gate near one is one bias away. Section 4 measures the same
# norms after training.
#
# ## 2. The LSTM: gates and cell state
#
# The LSTM keeps a cell state $C_t$ beside $h_t$ and writes to it through gates:
#
# $$\begin{aligned}
# f_t &= \sigma(W_f x_t + V_f h_{t-1} + b_f) &&\text{forget gate}\\
# i_t &= \sigma(W_i x_t + V_i h_{t-1} + b_i) &&\text{input gate}\\
# \tilde C_t &= \tanh(W_g x_t + V_g h_{t-1} + b_g) &&\text{candidate}\\
# C_t &= f_t \odot C_{t-1} + i_t \odot \tilde C_t\\
# o_t &= \sigma(W_o x_t + V_o h_{t-1} + b_o) &&\text{output gate}\\
# h_t &= o_t \odot \tanh(C_t)
# \end{aligned}$$
#
# The params hold the four gates fused, in the order (i, f, g, o), so one matmul computes
# them all; `rc.gate(params, name)` gives one gate's $W$, $V$, $b$ as the equations name
# them. Below, the equations written out by hand with those views give exactly the
# library's step.

# %%
p = params["lstm"]
W_f, V_f, b_f = rc.gate(p, "f")
W_i, V_i, b_i = rc.gate(p, "i")
W_g, V_g, b_g = rc.gate(p, "g")
W_o, V_o, b_o = rc.gate(p, "o")
print("W_f", W_f.shape, "V_f", V_f.shape, "b_f", b_f.shape, "b_f starts at", float(b_f[0]))

state = rc.LSTMState(h=jnp.full((H,), 0.1), c=jnp.full((H,), -0.2))
x = xs[0]
f = jax.nn.sigmoid(x @ W_f + state.h @ V_f + b_f)
i = jax.nn.sigmoid(x @ W_i + state.h @ V_i + b_i)
g = jnp.tanh(x @ W_g + state.h @ V_g + b_g)
o = jax.nn.sigmoid(x @ W_o + state.h @ V_o + b_o)
c = f * state.c + i * g
h = o * jnp.tanh(c)
new_state, y = rc.lstm_step(p, state, x)
print("by hand == lstm_step:", bool(jnp.allclose(h, new_state.h, atol=1e-6)),
      bool(jnp.allclose(c, new_state.c, atol=1e-6)))
print(f"mean forget gate at init: {float(f.mean()):.2f} (sigmoid(1) = 0.73: remember by default)")

# %% [markdown]
# Along $C$ the gradient is multiplied by $f_t$ at each step, not by a weight matrix and a
# tanh slope. With the forget bias at 1 the gates start near 0.73 and learning can open
# them towards 1, so information, and its gradient, can survive hundreds of steps.
# (`lstm_init(..., chrono_t_max=T)` draws the biases so that forget times spread up to
# $T$; Tallec & Ollivier 2018.)
#
# ## 3. The GRU: update and reset gates, and which way z points
#
# The seed's GRU (Chung et al. 2014) merges the cell and the hidden state:
#
# $$\begin{aligned}
# z_t &= \sigma(W_z x_t + V_z h_{t-1} + b_z) &&\text{update gate}\\
# r_t &= \sigma(W_r x_t + V_r h_{t-1} + b_r) &&\text{reset gate}\\
# \tilde h_t &= \tanh(W_h x_t + V_h (r_t \odot h_{t-1}) + b_h)\\
# h_t &= (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t
# \end{aligned}$$
#
# Here z near 1 *takes the new candidate*. PyTorch, Flax, Equinox and Keras write the
# other way round, $h_t = z'_t \odot h_{t-1} + (1 - z'_t) \odot \tilde h_t$: their
# $z'$ near 1 *keeps* the old state. Since $1 - \sigma(a) = \sigma(-a)$, the two are the
# same function with the update gate's weights negated, which is what the converters do.
# They also put the reset gate *after* the recurrent matmul,
# $r_t \odot (V_h h_{t-1} + b_{hn})$: a different function family, which rnncells
# offers as `gru_init(..., reset_after=True)`.

# %%
import torch  # noqa: E402

from rnncells import interop  # noqa: E402

torch.manual_seed(0)
torch_gru = torch.nn.GRU(D, H, batch_first=True)
(p_gru_torch,) = interop.from_torch(torch_gru)  # GRUResetAfterParams
W_z, V_z, b_z = rc.gate(p_gru_torch, "z")
W_z_torch = torch_gru.weight_ih_l0.detach().numpy()[H : 2 * H].T  # PyTorch's (r, z, n) blocks
print(type(p_gru_torch).__name__, "| our W_z == -PyTorch's W_z:",
      bool(np.allclose(W_z, -W_z_torch)))
xs_batch = jax.random.normal(k_x, (4, 20, D))
_, ys_ours = rc.unroll(rc.gru_step, p_gru_torch, xs_batch)
ys_torch, _ = torch_gru(torch.from_numpy(np.array(xs_batch)))
print("same outputs as torch.nn.GRU:",
      bool(np.allclose(ys_ours, ys_torch.detach().numpy(), atol=1e-5)))

# %% [markdown]
# ## 4. Training all three on the adding problem
#
# The adding problem (Hochreiter & Schmidhuber 1997; Le et al. 2015): each step carries a
# random number in $[0, 1]$ and a marker; exactly two steps are marked, one in each half
# of the sequence, and the target is the sum of the two marked numbers, read at the last
# step. Always predicting 1 scores MSE 1/6: a model must remember a number across up to
# $T$ steps to do better. `rnncells.tasks` generates the batches with `jax.random`.
#
# A model is a recurrent layer and a linear readout of its last output. The loop below is
# plain Optax; `rnncells.training.train` does the same from a config file, with several
# seeds at once, checkpoints and resumption.

# %%
from rnncells.tasks import get_task  # noqa: E402

task = get_task("adding", T=T)
print(f"task: adding T={T}, input {task.input_size}, baseline MSE {task.baseline_loss:.4f}")


INITS = {"rnn": rc.rnn_init, "gru": rc.gru_init, "lstm": rc.lstm_init}


def init_model(name, key):
    k_cell, k_out = jax.random.split(key)
    return {
        "cell": INITS[name](k_cell, D, H),
        "w": jax.random.normal(k_out, (H, 1)) / jnp.sqrt(H),
        "b": jnp.ones(1),  # start at the baseline: always predict 1
    }


def predict(model, inputs):
    step = rc.step_for(model["cell"])
    _, ys = rc.unroll(step, model["cell"], inputs)  # (B, T, H)
    return ys @ model["w"] + model["b"]  # (B, T, 1): the task reads the last step


def train_cell(name, num_steps=600, batch_size=64):
    model = init_model(name, jax.random.key(1))
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
    opt_state = optimizer.init(model)

    @jax.jit
    def update(model, opt_state, key):
        batch = task.make_batch(key, batch_size)
        loss, grads = jax.value_and_grad(lambda m: task.loss(predict(m, batch.inputs), batch))(
            model
        )
        updates, opt_state = optimizer.update(grads, opt_state, model)
        return optax.apply_updates(model, updates), opt_state, loss

    losses = []
    for k in jax.random.split(jax.random.key(2), num_steps):
        model, opt_state, loss = update(model, opt_state, k)
        losses.append(float(loss))
    return model, np.array(losses)


trained, curves = {}, {}
for name in params:
    trained[name], curves[name] = train_cell(name)
    print(f"{name:5s}: MSE over the last 50 steps {curves[name][-50:].mean():.4f}")

fig, ax = plt.subplots(figsize=(6, 3.5))
for name, losses in curves.items():
    ax.semilogy(np.convolve(losses, np.ones(20) / 20, mode="valid"), label=name)
ax.axhline(task.baseline_loss, color="gray", linestyle="--", label="predict 1 (1/6)")
ax.set_xlabel("training step")
ax.set_ylabel("MSE (running mean of 20)")
ax.set_title(f"Adding problem, T = {T}")
ax.legend();

# %% [markdown]
# The GRU and the LSTM fall far below the 1/6 of always predicting 1; the tanh RNN does
# not move from it. (`python -m experiments.main` runs the same comparison with three
# seeds per cell and writes a report; `experiments/results/` holds longer ones.)
#
# After training the picture has turned over. The tanh RNN's gradient from 50 steps back
# is orders of magnitude smaller than at initialisation. The GRU has learnt to hold its
# update gate shut where it must remember, and its gradient no longer decays. The LSTM's
# $h$ is read through its output gate, so $\|\partial h_T / \partial h_t\|$ stays small;
# the memory lives in the cell state, and $\|\partial C_T / \partial C_t\|$ (the
# "constant error carousel" of Hochreiter & Schmidhuber) carries the gradient across the
# whole sequence.

# %%
example = task.make_batch(jax.random.key(3), 1).inputs[0]  # (T, 2): one adding sequence
after = {
    name: jacobian_norms(rc.step_for(m["cell"]), m["cell"], example)
    for name, m in trained.items()
}
for name in params:
    print(f"{name:5s} 50 steps back: {float(at_init[name][-50]):.3g} at init (random inputs), "
          f"{float(after[name][-50]):.3g} after training (an adding sequence)")
lstm = trained["lstm"]["cell"]
after["lstm, C"] = jacobian_norms(rc.lstm_step, lstm, example, field="c")
print(f"lstm ||dC_T/dC_t|| 50 steps back after training: {float(after['lstm, C'][-50]):.3g}")
gradient_plot(after, "Gradient reaching h_t from h_T, after training");

# %% [markdown]
# ## Reading the gates
#
# The gates are functions of the inputs and the state, so they can be read off a trained
# model along a sequence: below, the trained LSTM's input, forget and output gates on one
# adding example, one row per unit. Look at what changes at the first marked step (red):
# before it the gates sit at middling values; from it on, many units' forget gates
# saturate near one and stay there (those units hold the first number until the end),
# and the input and output gates saturate at zero or one, shutting the holding units
# against new input.


# %%
def lstm_gates(p, xs):
    """(T, H) activations of the gates i, f, o of an LSTM along one sequence."""
    views = {g: rc.gate(p, g) for g in "ifo"}

    def body(state, x):
        gates = {g: jax.nn.sigmoid(x @ W + state.h @ V + b) for g, (W, V, b) in views.items()}
        state, _ = rc.lstm_step(p, state, x)
        return state, gates

    return jax.lax.scan(body, rc.init_carry(p), xs)[1]


gates = lstm_gates(trained["lstm"]["cell"], example)
marked = np.flatnonzero(np.asarray(example[:, 1]))
fig, axes = plt.subplots(3, 1, figsize=(7, 6), sharex=True)
for ax, g in zip(axes, "ifo", strict=True):
    image = ax.imshow(np.asarray(gates[g]).T, aspect="auto", vmin=0, vmax=1, cmap="viridis")
    ax.set_ylabel(f"{g}: unit")
    for t in marked:
        ax.axvline(t, color="red", linewidth=1)
axes[-1].set_xlabel("time step (red: the marked steps)")
fig.colorbar(image, ax=axes, label="gate activation")
print("marked steps:", marked.tolist())

# %% [markdown]
# ## 5. The same cells in Flax, and a PyTorch model converted
#
# The Flax modules hold the core's params and call the same pure functions, so they
# compute exactly what `rc.unroll` computes.

# %%
from flax import nnx  # noqa: E402

import rnncells.linen  # noqa: E402
import rnncells.nnx  # noqa: E402

layer = rnncells.nnx.LSTM(D, H, rngs=nnx.Rngs(0))
carries, ys_nnx = layer(xs_batch)
_, ys_core = rc.stack_unroll(layer.params, xs_batch)
print("NNX LSTM == stack_unroll of its params:", bool(jnp.array_equal(ys_nnx, ys_core)))

module = rnncells.linen.GRU(hidden_size=H)
variables = module.init(jax.random.key(0), xs_batch)
carries, ys_linen = module.apply(variables, xs_batch)
print("linen GRU output:", ys_linen.shape)

# %% [markdown]
# A PyTorch model's weights convert exactly, stacks and bidirectional layers included:

# %%
torch_lstm = torch.nn.LSTM(D, H, num_layers=2, bidirectional=True, batch_first=True)
layers = interop.from_torch(torch_lstm)  # a tuple of Bidirectional(LSTMParams, LSTMParams)
_, ys_ours = rc.stack_unroll(layers, xs_batch)
ys_torch, _ = torch_lstm(torch.from_numpy(np.array(xs_batch)))
print("2-layer bidirectional torch.nn.LSTM == stack_unroll:",
      bool(np.allclose(ys_ours, ys_torch.detach().numpy(), atol=1e-5)))
