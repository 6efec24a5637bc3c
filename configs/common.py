"""The defaults every experiment config starts from (all keys exist, so overrides of
unknown keys fail and values keep their types)."""

import ml_collections


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
    c.optim.optimizer = "adam"  # adam | rmsprop
    c.optim.learning_rate = 1e-3
    c.optim.schedule = "constant"  # constant | cosine | warmup_cosine
    c.optim.warmup_steps = 0
    c.optim.clip_norm = 1.0  # global-norm clipping, as in the papers; 0 disables
    c.optim.rmsprop_decay = 0.9
    c.batch_size = 32
    c.num_steps = 1000
    c.num_seeds = 3  # trained at once with vmap; figures are mean ± std over seeds
    c.seed = 0  # seed s of num_seeds uses PRNGKey(seed + s): 0 <= seed <= 2**31 - num_seeds
    c.log_every = 50  # steps per compiled chunk and per metrics flush
    c.eval_every = 250
    c.eval_batch_size = 500
    c.checkpoint_every = 250
    c.early_stop = True
    c.time_limit_s = 0.0  # stop (checkpointed, resumable) after this many seconds; 0: none
    c.progress = True
    c.data_parallel = True  # shard the batch over all devices
    return c
