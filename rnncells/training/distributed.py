"""Multi-process runs on JAX's own runtime: one process per host, one global mesh.

A run on several processes (hosts, or GPUs under SLURM, or a TPU pod slice) is the same
program on each of them, in lockstep (JAX's multi-controller model):

    initialize(...)            jax.distributed.initialize with the given coordinator,
                               process count and id; else what JAX detects (SLURM, Open
                               MPI, Kubernetes, Cloud TPU); else one process as before
    build(config)              the "data" mesh spans jax.devices(), every process's
                               devices; each step's batch is split over them, and each
                               device computes only its own rows of it (see
                               `rnncells.training.parallel`)
    train(config, workdir)     every process trains; process 0 alone takes the workdir
                               lock and writes metrics, evaluations, the summary and
                               the checkpoints' extra files; Orbax writes each
                               checkpoint from all processes together

The helpers below are the few points where processes must agree: `barrier`,
`broadcast` (process 0's value to all) and `all_agree`. With one process they return at
once, so single-process runs are unchanged.

A process that dies stops the others: the coordination service misses its heartbeats for
``heartbeat_timeout_s`` (or the others lose the coordinator at once when process 0
dies) and terminates every other process with "the JAX distributed service detected
fatal errors ... another task died". The same command then resumes from the last
checkpoint, like any killed run.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.experimental import multihost_utils

from rnncells.training.errors import ConfigError

DEFAULT_HEARTBEAT_TIMEOUT_S = 100
"""JAX's default: a process silent this long is declared dead and the others stop."""

DEFAULT_INITIALIZATION_TIMEOUT_S = 300
"""JAX's default: how long processes wait for all of them to connect."""

DEFAULT_SHUTDOWN_TIMEOUT_S = 300
"""JAX's default: how long a process that ends waits for the others to end too."""


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    cluster_detection_method: str | None = None,
    heartbeat_timeout_s: int = DEFAULT_HEARTBEAT_TIMEOUT_S,
    initialization_timeout_s: int = DEFAULT_INITIALIZATION_TIMEOUT_S,
    shutdown_timeout_s: int = DEFAULT_SHUTDOWN_TIMEOUT_S,
) -> int:
    """Joins a multi-process run (``jax.distributed.initialize``), or stays one process.

    Call it before anything else uses JAX. With all three of ``coordinator_address``,
    ``num_processes`` and ``process_id`` given, those are used and cluster detection is
    off (so every local device stays visible to this process). With none given, JAX
    detects a cluster (SLURM, Open MPI, Kubernetes, Cloud TPU; see
    ``jax.distributed.initialize``): under SLURM that is one process per task, each
    seeing one local GPU. With none given and no cluster found, or a SLURM or Open MPI
    job of a single task (which JAX would confine to one GPU), nothing happens: one
    process with every local device, as before. CPU collectives use gloo, so processes
    of CPU devices work too (`experiments.local_cluster`).

    Args:
        coordinator_address: ``host:port`` of process 0, reachable from every process.
        num_processes: how many processes take part.
        process_id: this process's index in ``0 .. num_processes - 1``.
        cluster_detection_method: passed to JAX: None tries every detector, a name
            (``"slurm"``, ``"mpi4py"``, ...) uses that one, ``"deactivate"`` none.
        heartbeat_timeout_s: a process silent this long counts as dead, and the other
            processes stop (JAX's default: 100).
        initialization_timeout_s: how long to wait for every process to connect.
        shutdown_timeout_s: how long a process that ends waits for the others to end.

    Returns:
        The number of processes (1 when no multi-process run was asked for or found).

    Raises:
        ConfigError: some but not all of the three settings were given and the rest
            could not be detected, or they are out of range.
    """
    if jax.distributed.is_initialized():
        return jax.process_count()
    given = (coordinator_address, num_processes, process_id)
    if all(v is not None for v in given) and cluster_detection_method is None:
        cluster_detection_method = "deactivate"
    nothing_asked = all(v is None for v in given) and not os.environ.get("JAX_COORDINATOR_ADDRESS")
    if nothing_asked and cluster_detection_method is None and _single_task_job():
        return 1
    # Processes of CPU devices exchange data through gloo (GPUs use NCCL, TPUs their ICI).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address,
            num_processes,
            process_id,
            cluster_detection_method=cluster_detection_method,
            heartbeat_timeout_seconds=int(heartbeat_timeout_s),
            initialization_timeout=int(initialization_timeout_s),
            shutdown_timeout_seconds=int(shutdown_timeout_s),
        )
    except (ValueError, TypeError) as error:
        if nothing_asked and "coordinator_address should be defined" in str(error):
            return 1  # no cluster detected: one process, as before
        raise ConfigError(
            "multi-process settings: --coordinator_address, --num_processes and "
            f"--process_id (given: {', '.join(map(repr, given))}): {error}",
            hint="give all three (or none, to let JAX detect the cluster)",
        ) from None
    return jax.process_count()


def _single_task_job() -> bool:
    """Whether SLURM or Open MPI says this job step has one task (the variables JAX's
    detection reads for the process count)."""
    return any(os.environ.get(name) == "1" for name in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"))


def process_count() -> int:
    """How many processes take part in this run (1 unless `initialize` joined more)."""
    return jax.process_count()


def is_primary() -> bool:
    """Whether this is process 0, the one that writes a run's files."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier ``name`` (at once with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def broadcast(value: int) -> int:
    """Process 0's ``value`` on every process (an int32; ``value`` as is with one)."""
    if jax.process_count() == 1:
        return int(value)
    return int(multihost_utils.broadcast_one_to_all(np.asarray(value, np.int32)))


def all_agree(flag: bool) -> bool:
    """True on every process when ``flag`` is true on every process, else False on all."""
    if jax.process_count() == 1:
        return bool(flag)
    flags = multihost_utils.process_allgather(np.asarray(bool(flag), np.int32))
    return bool(np.all(flags))
