"""Training on the long-dependency tasks: model, Optax optimisers, a resumable loop.

Needs the ``train`` extra (optax, orbax-checkpoint, ml_collections, tqdm)::

    from rnncells.training import train
    summary = train(config, workdir="runs/x")   # config: configs/adding.py get_config()

Without the extra, importing it raises a ModuleNotFoundError that names the missing module
and says ``pip install "rnncells[train]"``.
"""

try:  # the train extra: one message naming it, rather than the first bare import error
    import ml_collections  # noqa: F401
    import optax  # noqa: F401
    import orbax.checkpoint  # noqa: F401
    import tqdm  # noqa: F401
except ImportError as _error:
    raise ModuleNotFoundError(
        f"rnncells.training needs the train extra (optax, orbax-checkpoint, ml_collections, "
        f"absl-py, tqdm): {_error.name or _error} cannot be imported ({_error}); "
        'pip install "rnncells[train]"',
        name=_error.name,
    ) from _error

from rnncells.training.checkpoint import make_manager, restore, save
from rnncells.training.errors import (
    CheckpointError,
    ConfigError,
    CorruptFileError,
    MissingCheckpointError,
    NonFiniteLossError,
    ResumeError,
    RunError,
    RunWarning,
    WorkdirLockedError,
)
from rnncells.training.loop import (
    Setup,
    TrainState,
    build,
    final_params,
    train,
    validate,
)
from rnncells.training.metrics import mean_spread, read_jsonl
from rnncells.training.model import (
    INITS,
    ModelParams,
    cell_init_kwargs,
    cell_names,
    hidden_states,
    model_apply,
    model_init,
)
from rnncells.training.optim import make_optimizer, make_schedule
from rnncells.training.parallel import make_mesh

__all__ = [
    "INITS",
    "CheckpointError",
    "ConfigError",
    "CorruptFileError",
    "MissingCheckpointError",
    "ModelParams",
    "NonFiniteLossError",
    "ResumeError",
    "RunError",
    "RunWarning",
    "Setup",
    "TrainState",
    "WorkdirLockedError",
    "build",
    "cell_init_kwargs",
    "cell_names",
    "final_params",
    "hidden_states",
    "make_manager",
    "make_mesh",
    "make_optimizer",
    "make_schedule",
    "mean_spread",
    "model_apply",
    "model_init",
    "read_jsonl",
    "restore",
    "save",
    "train",
    "validate",
]
