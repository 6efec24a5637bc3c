"""Runs one experiment from a config file.

    python -m experiments.run --config=configs/adding.py --workdir=runs/x \
        [--config.model.cell=gru --config.task.kwargs.T=200 ...]

``--config=FILE:ARG`` passes ARG to the file's ``get_config`` (e.g. ``:smoke``). An
unknown key or a value of the wrong type in an override stops with an error naming it.
``--show_config`` prints every key with its value (overrides applied) and meaning, and
exits. The resolved config is saved as ``workdir/config.json``; the same command on a
workdir that holds a checkpoint resumes from it, and says so on stderr ("resuming from
checkpoint step 50 of 100 in ..."); on a finished run it says so and prints its summary.
After training, the report (table and plots) of the workdir is written and a short
summary printed; a run stopped by ``time_limit_s`` says so and prints the command that
resumes it.

An error the user can fix (a bad config value, a workdir in use by another run, a config
unlike the saved run's, a run that cannot be resumed, a non-finite loss) prints one
``error: ...`` line, and where useful a ``hint: ...`` line, to stderr and exits with
status 2 (3 for a non-finite loss); damage a run works around prints a ``warning: ...``
line and the run goes on.

Several processes train one run together (one process per host or per GPU; see
``docs/distributed.md``) when started with ``--coordinator_address=HOST:PORT
--num_processes=N --process_id=I``, or with none of them under a cluster manager JAX
detects (SLURM, Open MPI, Kubernetes, Cloud TPU); without either it is one process.
Process 0 writes the run's files and prints; ``python -m experiments.local_cluster
--num_processes=N -- ARGS`` starts N such processes on this machine. A process that dies
stops the others within ``--heartbeat_timeout_s``; the same command resumes.
"""

from __future__ import annotations

import sys

from experiments import extra

extra.require_extra("python -m experiments.run")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from experiments import report as report_lib  # noqa: E402
from experiments.cli import resume_command, user_errors  # noqa: E402
from rnncells.training.cli import format_summary, parse_flags  # noqa: E402


def run(config, workdir: str, report: bool = True, command: str | None = None) -> dict:
    """Trains ``config`` in ``workdir`` and (optionally) writes its report; returns the summary.

    ``command``: the command line that resumes the run, for the messages of a stalled or
    interrupted run. In a multi-process run every process trains, and process 0 alone
    writes the report.
    """
    from rnncells.training import distributed, train

    summary = train(config, workdir, command=command)
    if report and distributed.is_primary():
        report_lib.write_report(workdir)
    return summary


def define_multiprocess_flags() -> None:
    """Defines the flags of a multi-process run (`start_processes` reads them)."""
    from rnncells.training import distributed

    flags.DEFINE_string(
        "coordinator_address",
        None,
        "multi-process run: host:port of process 0 (default: detected, else one process)",
    )
    flags.DEFINE_integer("num_processes", None, "multi-process run: how many processes")
    flags.DEFINE_integer("process_id", None, "multi-process run: this process's index")
    flags.DEFINE_string(
        "cluster_detection_method",
        None,
        "JAX's cluster detection when the three flags above are not given: "
        "default all detectors, or one (slurm, ompi, mpi4py, ...), or deactivate",
    )
    flags.DEFINE_integer(
        "heartbeat_timeout_s",
        distributed.DEFAULT_HEARTBEAT_TIMEOUT_S,
        "multi-process run: a process silent this long counts as dead and the others stop",
    )
    flags.DEFINE_integer(
        "initialization_timeout_s",
        distributed.DEFAULT_INITIALIZATION_TIMEOUT_S,
        "multi-process run: how long to wait for every process to connect",
    )
    flags.DEFINE_integer(
        "shutdown_timeout_s",
        distributed.DEFAULT_SHUTDOWN_TIMEOUT_S,
        "multi-process run: how long a finished process waits for the others at exit",
    )


def start_processes() -> int:
    """Joins the multi-process run the flags ask for or JAX detects (else one process);
    returns the number of processes. A bad combination exits with an ``error:`` line."""
    from rnncells.training import distributed

    values = flags.FLAGS
    with user_errors():
        return distributed.initialize(
            values.coordinator_address,
            values.num_processes,
            values.process_id,
            cluster_detection_method=values.cluster_detection_method,
            heartbeat_timeout_s=values.heartbeat_timeout_s,
            initialization_timeout_s=values.initialization_timeout_s,
            shutdown_timeout_s=values.shutdown_timeout_s,
        )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _SHOW_CONFIG.value:
        from rnncells.training.configs.common import describe

        print(describe(_CONFIG.value))
        return
    if _WORKDIR.value is None:
        raise app.UsageError("--workdir is required (the folder for the run's files)")
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
    start_processes()
    from rnncells.training import distributed

    with user_errors():
        summary = run(
            _CONFIG.value,
            _WORKDIR.value,
            _REPORT.value,
            resume_command("experiments.run", sys.argv[1:]),
        )
    if not distributed.is_primary():
        return  # process 0 prints
    print(format_summary(summary, _WORKDIR.value))
    if summary.get("stopped_at_time_limit"):
        print(
            f"stopped at the time limit (time_limit_s={_CONFIG.value.time_limit_s}) after "
            f"{summary['steps_run']} of {summary['num_steps']} steps, checkpointed; resume with:"
        )
        print("  " + resume_command("experiments.run", sys.argv[1:]))


if __name__ == "__main__":
    # Flags are defined only when run as a program, so the module imports without them.
    _CONFIG = config_flags.DEFINE_config_file(
        "config", None, "experiment config file", lock_config=True
    )
    _WORKDIR = flags.DEFINE_string("workdir", None, "folder for metrics, checkpoints, plots")
    _REPORT = flags.DEFINE_bool("report", True, "write the table and plots after training")
    _SHOW_CONFIG = flags.DEFINE_bool(
        "show_config", False, "print every config key with its value and meaning, and exit"
    )
    define_multiprocess_flags()
    flags.mark_flags_as_required(["config"])
    app.run(main, flags_parser=parse_flags)
