"""The defaults every experiment config starts from (all keys exist, so overrides of
unknown keys fail and values keep their types)."""

import ml_collections

__all__ = [
    "DESCRIPTIONS",
    "base_config",
    "describe",
]


def base_config() -> ml_collections.ConfigDict:
    """Defaults shared by all experiments; each config file overrides what it needs."""
    c = ml_collections.ConfigDict()
    c.task = ml_collections.ConfigDict({"name": "adding", "kwargs": {"T": 100}})
    c.model = ml_collections.ConfigDict()
    c.model.cell = "lstm"  # rnn | gru | gru_reset_after | lstm
    c.model.hidden_size = 64
    c.model.num_layers = 1
    c.model.init = "default"  # default | forget_bias | chrono
    c.model.forget_bias = 1.0  # b_f for init=forget_bias (0 gives all-zero biases)
    c.model.chrono_t_max = 0.0  # 0: 3T/2 for copy, T otherwise (Tallec & Ollivier 2018)
    c.model.embedding = "onehot"  # token tasks: onehot | learned
    c.model.embed_size = 0
    c.model.unroll = 0  # scan unroll factor; 0: rnncells.default_unroll (8 on a GPU, 1 on a CPU)
    c.optim = ml_collections.ConfigDict()
    c.optim.optimizer = "adam"  # adam | rmsprop | sgd
    c.optim.learning_rate = 1e-3
    c.optim.schedule = "constant"  # constant | cosine | warmup_cosine
    c.optim.warmup_steps = 0
    c.optim.clip_norm = 1.0  # global-norm clipping, as in the papers; 0 disables
    c.optim.rmsprop_decay = 0.9
    c.optim.momentum = 0.0  # sgd only; 0: plain SGD
    c.batch_size = 32
    c.num_steps = 1000
    c.num_seeds = 3  # trained in one program (seed_loop); figures are mean ± std over seeds
    c.seed = 0  # seed s of num_seeds uses PRNGKey(seed + s): 0 <= seed <= 2**31 - num_seeds
    c.log_every = 50  # steps per compiled chunk and per metrics flush
    c.eval_every = 250
    c.eval_batch_size = 500
    c.checkpoint_every = 250
    c.early_stop = True
    c.time_limit_s = 0.0  # stop (checkpointed, resumable) after this many seconds; 0: none
    c.stall_timeout_s = 0.0  # a phase with no progress this long stops the run (exit 4); 0: auto
    c.progress = True
    c.tensorboard = False  # also write the metrics to workdir/tensorboard (tensorboardX)
    c.data_parallel = True  # shard the batch over all devices
    c.seed_loop = "auto"  # auto | vmap | map: how the seeds' steps run (auto: map on one CPU)
    return c


DESCRIPTIONS = {
    "task.name": "the task: adding | adding_hs | copy | variable_copy | digits",
    "task.kwargs": "the task's own arguments, e.g. T (sequence length); digits: permute",
    "model.cell": "the recurrent cell (any registered name: rnn, gru, gru_reset_after, lstm, ...)",
    "model.hidden_size": "units per layer",
    "model.num_layers": "stacked recurrent layers",
    "model.init": "bias init: default (the cell's own) | forget_bias | chrono",
    "model.forget_bias": "b_f for init=forget_bias (0 gives all-zero biases)",
    "model.chrono_t_max": "chrono init's T_max; 0: 3T/2 for copy, T otherwise (Tallec & Ollivier)",
    "model.embedding": "token tasks' input map: onehot | learned",
    "model.embed_size": "width of a learned embedding (embedding=learned needs it >= 1)",
    "model.unroll": "lax.scan unroll factor; 0: rnncells.default_unroll (8 on a GPU, 1 on a CPU)",
    "optim.optimizer": "adam | rmsprop | sgd",
    "optim.learning_rate": "peak learning rate (finite, > 0)",
    "optim.schedule": "constant | cosine | warmup_cosine (over num_steps)",
    "optim.warmup_steps": "linear warm-up steps of warmup_cosine",
    "optim.clip_norm": "global-norm gradient clipping, as in the papers; 0 disables it",
    "optim.rmsprop_decay": "RMSProp's decay of the squared-gradient average",
    "optim.momentum": "SGD's momentum in [0, 1); 0 is plain SGD (Le et al.'s IRNN)",
    "batch_size": "sequences per step and seed (divisible by the number of devices)",
    "num_steps": "optimiser steps (a multiple of log_every)",
    "num_seeds": "seeds trained in one program (see seed_loop); figures are mean and spread "
    "over them",
    "seed": "seed s of num_seeds uses PRNGKey(seed + s): 0 <= seed <= 2**31 - num_seeds",
    "log_every": "steps per compiled chunk and per metrics flush",
    "eval_every": "steps between held-out evaluations (a multiple of log_every)",
    "eval_batch_size": "held-out sequences for tasks without a fixed test set",
    "checkpoint_every": "steps between checkpoints (a multiple of log_every)",
    "early_stop": "stop once every seed solves the task at a scheduled evaluation",
    "time_limit_s": "stop (checkpointed, resumable) after this many seconds; 0: no limit",
    "stall_timeout_s": "seconds a restore, chunk, evaluation or save may make no progress "
    "before the run stops, resumable (exit status 4, stacks in workdir/stall.txt); 0: 30 min "
    "for a phase's first call, then max(300 s, 10x its slowest earlier call)",
    "progress": "show progress: a bar on a terminal, a line every 30 s in a log",
    "tensorboard": "also write the metrics to workdir/tensorboard (needs tensorboardX)",
    "data_parallel": "shard the batch over all devices",
    "seed_loop": "how each seed's step and evaluation run: vmap (all seeds as one batched "
    "program) | map (one seed after another, lax.map) | auto (map on one CPU device, where "
    "XLA runs the batched matmuls slower; vmap elsewhere)",
}
"""What each key means, for ``python -m experiments.run --show_config`` (a test checks that
every key of ``base_config`` has an entry)."""


def describe(config: ml_collections.ConfigDict) -> str:
    """Every key of ``config`` with its value and meaning, one per line."""
    lines = []

    def walk(node, prefix):
        for key in sorted(node.keys()):
            value, name = node[key], prefix + key
            if isinstance(value, ml_collections.ConfigDict) and name not in DESCRIPTIONS:
                walk(value, name + ".")
                continue
            if isinstance(value, ml_collections.ConfigDict):
                value = value.to_dict()
            lines.append((f"{name} = {value!r}", DESCRIPTIONS.get(name, "")))

    walk(config, "")
    width = max(len(left) for left, _ in lines)
    return "\n".join(f"{left:<{width}}  # {m}" if m else left for left, m in lines)
