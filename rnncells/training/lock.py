"""One run per workdir: an exclusive lock on ``workdir/.lock`` for the life of a run.

The lock is ``fcntl.flock`` on the open file, so the kernel drops it when the process
ends however it ends: a lock left by a killed run never blocks its resumption. The file
holds the holder's pid, for the error of the run that is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator

from rnncells.training.errors import WorkdirLockedError

LOCK_FILE = ".lock"


def _holder(fd: int) -> str:
    """The pid written by the lock's holder ("unknown" if it has not written it yet)."""
    for _ in range(20):  # the holder writes its pid just after taking the lock
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        if text:
            return text
        time.sleep(0.05)
    return "unknown"


@contextlib.contextmanager
def workdir_lock(workdir: str) -> Iterator[None]:
    """Holds the exclusive lock of ``workdir`` (which must exist) inside the ``with`` block.

    Raises:
        WorkdirLockedError: another process (or another open of the lock in this one)
            holds it, naming the holder's pid.
    """
    path = os.path.join(workdir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkdirLockedError(
                f"workdir {workdir} is in use by another run (pid {_holder(fd)}); "
                "one run per workdir",
                hint="wait for that run to end, or use another --workdir",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
