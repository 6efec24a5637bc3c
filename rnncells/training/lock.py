"""One run per workdir: an exclusive lock on ``workdir/.lock`` for the life of a run.

The lock is ``fcntl.flock`` on the open file, so the kernel drops it when the process
ends however it ends: a lock left by a killed run never blocks its resumption. The file
holds the holder's pid, for the error of the run that is refused.

A run of several processes (`rnncells.training.distributed`) is one run: process 0 alone
takes the lock (the others may be on other hosts, where a lock on a shared filesystem
would not even exclude each other) and tells the others whether it got it, so they all go
on together or all stop with the same `WorkdirLockedError`. When any process dies, JAX
stops the others, process 0 among them, and its lock goes with it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator

from rnncells.training import distributed
from rnncells.training.errors import WorkdirLockedError

__all__ = [
    "LOCK_FILE",
    "workdir_lock",
]

LOCK_FILE = ".lock"

_FREE = 0
"""What process 0 tells the others when it holds the lock (else the holder's pid, or -1)."""


def _holder(fd: int) -> str:
    """The pid written by the lock's holder ("unknown" if it has not written it yet)."""
    for _ in range(20):  # the holder writes its pid just after taking the lock
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        if text:
            return text
        time.sleep(0.05)
    return "unknown"


def _take(path: str) -> tuple[int | None, str | None]:
    """(fd holding the lock, None), or (None, the holder's pid) when another holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        return None, holder
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return fd, None


def _refused(workdir: str, holder: str) -> WorkdirLockedError:
    return WorkdirLockedError(
        f"workdir {workdir} is in use by another run (pid {holder}); one run per workdir",
        hint="wait for that run to end, or use another --workdir",
    )


@contextlib.contextmanager
def workdir_lock(workdir: str) -> Iterator[None]:
    """Holds the exclusive lock of ``workdir`` (which must exist) inside the ``with`` block.

    In a multi-process run every process enters it; process 0 holds the lock.

    Raises:
        WorkdirLockedError: another process (or another open of the lock in this one)
            holds it, naming the holder's pid; in a multi-process run, on every process.
    """
    path = os.path.join(workdir, LOCK_FILE)
    fd, holder = _take(path) if distributed.is_primary() else (None, None)
    if distributed.process_count() > 1:
        # Every process learns process 0's outcome, so all go on or all stop.
        outcome = _FREE if holder is None else int(holder) if holder.isdigit() else -1
        outcome = distributed.broadcast(outcome)
        if outcome != _FREE:
            holder = str(outcome) if outcome > 0 else "unknown"
    if holder is not None:
        raise _refused(workdir, holder)
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock
