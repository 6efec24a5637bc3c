"""Runs one experiment from a config file.

    python -m experiments.run --config=configs/adding.py --workdir=runs/x \
        [--config.model.cell=gru --config.task.kwargs.T=200 ...]

``--config=FILE:ARG`` passes ARG to the file's ``get_config`` (e.g. ``:smoke``). An
unknown key or a value of the wrong type in an override stops with an error naming it.
The resolved config is saved as ``workdir/config.json``; the same command on a workdir
that holds a checkpoint resumes from it. After training, the report (table and plots)
of the workdir is written.

An error the user can fix (a bad config value, a workdir in use by another run, a config
unlike the saved run's, a run that cannot be resumed, a non-finite loss) prints one
``error: ...`` line, and where useful a ``hint: ...`` line, to stderr and exits with
status 2 (3 for a non-finite loss); damage a run works around prints a ``warning: ...``
line and the run goes on.
"""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from collections.abc import Iterator

from absl import app, flags, logging
from ml_collections import config_flags


def run(config, workdir: str, report: bool = True) -> dict:
    """Trains ``config`` in ``workdir`` and (optionally) writes its report; returns the summary."""
    from rnncells.training import train

    summary = train(config, workdir)
    if report:
        from experiments import report as report_lib

        report_lib.write_report(workdir)
    return summary


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Runs the block as a command: a `RunError` becomes one ``error:`` line (and a
    ``hint:`` line) on stderr and ``sys.exit(error.exit_code)``, with no traceback; a
    `RunWarning` prints as one ``warning:`` line. Other exceptions (bugs) pass through."""
    from rnncells.training.errors import RunError, RunWarning

    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, RunWarning):
            print(f"warning: {_one_line(message)}", file=sys.stderr, flush=True)
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    except RunError as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        if error.hint:
            print(f"hint: {_one_line(error.hint)}", file=sys.stderr)
        sys.exit(error.exit_code)
    finally:
        warnings.showwarning = previous


def _parse_flags(argv):
    """absl's flag parsing, with a one-line error for an unknown ``--config.*`` key.

    (ml_collections reports an unknown override key as an AttributeError traceback.)
    """
    try:
        return app.parse_flags_with_usage(argv)
    except AttributeError as error:
        hint = str(error).strip("'").replace("\\'", "'").replace("\\n", " ")
        sys.exit(f"error: a --config.* override names a key the config does not have: {hint}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
    with user_errors():
        summary = run(_CONFIG.value, _WORKDIR.value, _REPORT.value)
    print(json.dumps({k: summary[k] for k in ("task", "cell", "steps_run", "solved")}))
    print(json.dumps({"eval": summary["eval"]}))


if __name__ == "__main__":
    # Flags are defined only when run as a program, so the module imports without them.
    _CONFIG = config_flags.DEFINE_config_file(
        "config", None, "experiment config file", lock_config=True
    )
    _WORKDIR = flags.DEFINE_string("workdir", None, "folder for metrics, checkpoints, plots")
    _REPORT = flags.DEFINE_bool("report", True, "write the table and plots after training")
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main, flags_parser=_parse_flags)
