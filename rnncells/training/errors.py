"""Errors a user can fix, and the warning for data a run found damaged and worked around.

Every error a user can fix (a bad config, a workdir in use, a run that cannot be resumed
as it stands, a non-finite loss) is a `RunError`; its message names what is wrong and
where, ``hint`` (when set) says what to do, and ``exit_code`` is the status the command
line tools exit with (2, or 3 for a non-finite loss, 130 or 143 for a run stopped by
SIGINT or SIGTERM; a stalled run exits with 4, see `rnncells.training.stall`). Anything
else is a bug.

    RunError
    ├── ConfigError (also ValueError)          a config value, or a config unlike the saved run's
    ├── WorkdirLockedError                     another process is running in the workdir
    ├── ResumeError (also ValueError)          the workdir cannot be resumed as it stands
    │   ├── CorruptFileError                   a JSON / JSON-lines file has a damaged line
    │   └── CheckpointError                    a checkpoint is incomplete, corrupt or non-finite
    │       └── MissingCheckpointError (also FileNotFoundError)
    ├── NonFiniteLossError (also FloatingPointError)
    └── RunInterrupted                         Ctrl-C or SIGTERM stopped the run

`RunWarning` is the one warning category: a run went on past damaged data (fell back to
an older checkpoint, found records missing, recovered its config from a checkpoint).
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "CorruptFileError",
    "MissingCheckpointError",
    "NonFiniteLossError",
    "ResumeError",
    "RunError",
    "RunInterrupted",
    "RunWarning",
    "WorkdirLockedError",
]


class RunError(Exception):
    """An error the user can fix; ``hint`` says how, ``exit_code`` is the CLI's status."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class ConfigError(RunError, ValueError):
    """A config value is out of range or unknown, or differs from the run in the workdir."""


class WorkdirLockedError(RunError):
    """Another process holds the workdir's lock (one run per workdir)."""


class ResumeError(RunError, ValueError):
    """The workdir's files cannot be resumed from as they stand."""


class CorruptFileError(ResumeError):
    """A JSON or JSON-lines file of a run has a damaged line (the message names file and line)."""


class CheckpointError(ResumeError):
    """A checkpoint is incomplete, corrupt, non-finite or unlike the model; or none is intact."""


class MissingCheckpointError(CheckpointError, FileNotFoundError):
    """No checkpoint, or not the step asked for."""


class NonFiniteLossError(RunError, FloatingPointError):
    """The loss, the training state or a held-out metric became NaN or infinite.

    The run stopped before saving anything non-finite; its newest checkpoint is intact.
    """

    exit_code = 3


class RunWarning(UserWarning):
    """A run found damaged data and went on without it (the message says what and where)."""


class RunInterrupted(RunError):
    """SIGINT (Ctrl-C) or SIGTERM stopped the run between two of its steps' results.

    Nothing was lost: the run resumes from its newest checkpoint (the message names it).
    ``exit_code`` is 128 + the signal's number (130 for SIGINT, 143 for SIGTERM), as a
    shell reports a process the signal ended.
    """

    def __init__(self, message: str, *, signum: int, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.signum = signum
        self.exit_code = 128 + signum
