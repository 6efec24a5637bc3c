"""Runs one experiment from a config file.

    python -m experiments.run --config=configs/adding.py --workdir=runs/x \
        [--config.model.cell=gru --config.task.kwargs.T=200 ...]

``--config=FILE:ARG`` passes ARG to the file's ``get_config`` (e.g. ``:smoke``). An
unknown key or a value of the wrong type in an override stops with an error naming it.
The resolved config is saved as ``workdir/config.json``; the same command on a workdir
that holds a checkpoint resumes from it. After training, the report (table and plots)
of the workdir is written.
"""

from __future__ import annotations

import json
import sys

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
    from rnncells.training import NonFiniteLossError

    try:
        summary = run(_CONFIG.value, _WORKDIR.value, _REPORT.value)
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(3)
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
