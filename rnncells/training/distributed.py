"""Multi-process runs on JAX's own runtime: one process per host, one global mesh.

A run on several processes (hosts, or GPUs under SLURM, or a TPU pod slice) is the same
program on each of them, in lockstep (JAX's multi-controller model):

    initialize(...)            jax.distributed.initialize with the given coordinator,
                               process count and id (their address checked first, see
                               below); else what JAX detects (SLURM, Open MPI,
                               Kubernetes, Cloud TPU); else one process as before
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

A start that cannot work stops before JAX's runtime starts, with a `ConfigError` naming
the coordinator's address (JAX itself would kill the interpreter: a segfault for a port
in use, SIGABRT and a misleading "another task died" for a missing coordinator or an
unknown host). With the three settings given, `initialize` checks that the address is
HOST:PORT, that the host resolves, in process 0 (which hosts the coordinator service)
that the port can be bound, and in every other process that the coordinator accepts a
connection within ``initialization_timeout_s`` (it may start a little later). The checks
cannot close every race: a port found free can be taken before JAX binds it.
"""

from __future__ import annotations

import errno
import math
import os
import re
import socket
import time
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from rnncells.training.errors import ConfigError

__all__ = [
    "DEFAULT_HEARTBEAT_TIMEOUT_S",
    "DEFAULT_INITIALIZATION_TIMEOUT_S",
    "DEFAULT_SHUTDOWN_TIMEOUT_S",
    "all_agree",
    "barrier",
    "broadcast",
    "initialize",
    "is_primary",
    "process_count",
]

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

    With the three settings given, and before JAX starts (whose failures here end the
    interpreter), the address is checked: it must be ``HOST:PORT`` with a port in 1 ..
    65535 (an IPv6 host in brackets, ``[::1]:PORT``), and the host must resolve. Process
    0, which hosts the coordinator service on that port (on every interface, or on
    ``JAX_COORDINATOR_BIND_ADDRESS`` when set), must be able to bind it (with
    SO_REUSEADDR, as gRPC does: a port a finished run left in TIME_WAIT is free). Every
    other process tries to connect to the coordinator until ``initialization_timeout_s``
    has passed (process 0 may start later), and gives JAX what is left of that time.

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
            could not be detected, or they are out of range; or the coordinator's
            address is malformed, its host does not resolve, its port is in use on
            process 0's host, or (in another process) nothing accepted a connection
            there within ``initialization_timeout_s``.
    """
    if jax.distributed.is_initialized():
        return jax.process_count()
    given = (coordinator_address, num_processes, process_id)
    if all(v is not None for v in given) and cluster_detection_method is None:
        cluster_detection_method = "deactivate"
    nothing_asked = all(v is None for v in given) and not os.environ.get("JAX_COORDINATOR_ADDRESS")
    if nothing_asked and cluster_detection_method is None and _single_task_job():
        return 1
    if (
        isinstance(coordinator_address, str)
        and isinstance(num_processes, int)
        and isinstance(process_id, int)
        and 0 <= process_id < num_processes  # else JAX's own check says what is wrong
    ):
        initialization_timeout_s = _check_coordinator(
            coordinator_address, process_id, initialization_timeout_s
        )
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


_ADDRESS = re.compile(r"(?:\[(?P<ipv6>[^\[\]\s]+)\]|(?P<host>[^:\[\]\s]+)):(?P<port>[0-9]+)")
"""HOST:PORT, an IPv6 host in brackets (what gRPC takes, and JAX splits at the last ':')."""

_CONNECT_RETRY_S = 0.2
"""How often a process other than 0 tries again to reach a coordinator not yet there."""


def _check_coordinator(address: str, process_id: int, timeout_s: float) -> int:
    """The checks of a start with the coordinator at ``address`` (see `initialize`),
    before JAX's runtime starts: raises `ConfigError`, or returns the initialization
    timeout (in whole seconds) left to give JAX."""
    host, port = _parse_address("coordinator_address", address)
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:  # gaierror; an IDNA error for a bad name
        raise ConfigError(
            f"coordinator_address {address}: the host {host!r} cannot be resolved on "
            f"this host ({_reason(error)}); every process connects to the coordinator "
            "(process 0) there",
            hint="give process 0's host name as every host knows it, or its IP address",
        ) from None
    if process_id == 0:
        _check_port_free(address, port)
        return max(1, math.ceil(timeout_s))
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=min(max(remaining, 0.1), 5)):
                return max(1, math.ceil(deadline - time.monotonic()))
        except OSError as error:
            last = error
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ConfigError(
                f"coordinator_address {address}: nothing accepted a connection there "
                f"within initialization_timeout_s={timeout_s:g} (last try: {_reason(last)}); "
                f"process {process_id} expects process 0's coordinator to listen there",
                hint="start process 0 with the same --coordinator_address (it hosts the "
                "coordinator); check that host and port are process 0's and that this "
                "host can reach them, or give a longer --initialization_timeout_s",
            )
        time.sleep(min(_CONNECT_RETRY_S, remaining))


def _parse_address(name: str, address: str) -> tuple[str, int]:
    """``address`` (the setting ``name``) as (host, port), or a `ConfigError`."""
    match = _ADDRESS.fullmatch(address)
    port = int(match["port"]) if match else 0
    if match and 1 <= port <= 65535:
        return match["ipv6"] or match["host"], port
    head, colon, tail = address.rpartition(":")
    if not colon:
        what = "it has no port"
    elif not re.fullmatch(r"[0-9]+", tail):
        what = f"the port {tail!r} is not a number"
    elif match:
        what = f"port {port} is out of range"
    elif not head:
        what = "the host is empty"
    else:
        what = f"the host {head!r} is not a name, an IPv4 address or a bracketed IPv6 one"
    raise ConfigError(
        f"{name} {address}: expected HOST:PORT with a port in 1..65535 (an IPv6 host in "
        f"brackets, as in [::1]:1234), but {what}",
        hint="give process 0's host name or IP address and a port, the same in every "
        "process, e.g. --coordinator_address=10.0.0.1:1234",
    )


def _check_port_free(address: str, port: int) -> None:
    """Whether process 0 can bind the coordinator's port where JAX's service will: on
    every interface (IPv6 and IPv4, else IPv4), or on JAX_COORDINATOR_BIND_ADDRESS.

    The socket is closed again at once, before JAX binds the port (a race this cannot
    close). SO_REUSEADDR, as gRPC sets it, lets a port in TIME_WAIT bind while one held
    by any other socket still fails; SO_REUSEPORT, which gRPC also sets, is left unset,
    so that a port another coordinator shares with it counts as in use, as it is."""
    bind_address = os.environ.get("JAX_COORDINATOR_BIND_ADDRESS")
    if bind_address:
        host, port = _parse_address("JAX_COORDINATOR_BIND_ADDRESS", bind_address)
        where = f"{bind_address} (JAX_COORDINATOR_BIND_ADDRESS)"
    else:
        host, where = "::", f"[::]:{port}"
    candidates: list[tuple[socket.AddressFamily, tuple[Any, ...]]]
    if host == "::":  # the wildcard: dual-stack IPv6, else IPv4 where IPv6 is off
        candidates = [(socket.AF_INET6, ("::", port)), (socket.AF_INET, ("0.0.0.0", port))]
    else:
        try:
            info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as error:
            raise ConfigError(
                f"JAX_COORDINATOR_BIND_ADDRESS {bind_address}: the host {host!r} does not "
                f"resolve ({_reason(error)})",
                hint="unset it (process 0 then listens on every interface) or give an "
                "address of this host",
            ) from None
        candidates = [(family, sockaddr) for family, _, _, _, sockaddr in info[:1]]
    failure: OSError | None = None
    for family, sockaddr in candidates:
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as no_family:  # no IPv6 on this host: gRPC falls back to IPv4
            failure = no_family
            continue
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and sockaddr[0] == "::":
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            try:
                sock.bind(sockaddr)
                return
            except OSError as failed:
                failure = failed
                if failed.errno not in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                    break  # IPv6 present but off also falls back; anything else is final
    assert failure is not None
    if failure.errno == errno.EADDRINUSE:
        what = f"port {port} is in use on this host"
        hint = (
            "stop what holds it (an earlier run still running?) or give every process "
            "another port, one free on process 0's host"
        )
    else:
        what = f"port {port} cannot be bound on this host ({_reason(failure)})"
        hint = "give every process another port (one above 1024 needs no privileges)"
    raise ConfigError(
        f"coordinator_address {address}: {what} (process 0 hosts the coordinator, "
        f"which listens on {where})",
        hint=hint,
    )


def _reason(error: BaseException) -> str:
    """An OS error's own words (its strerror), without the errno prefix."""
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


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
