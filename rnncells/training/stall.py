"""The stall guard: a run whose phase makes no progress for too long stops by itself.

A compiled XLA call can block forever (a hang inside the runtime: the main thread waits
in ``BlockUntilReady`` and neither Ctrl-C nor a time limit reaches it). The training loop
runs every phase that can block (the restore, each chunk of steps, each evaluation, each
save) inside ``guard.phase(name, step)``; a thread of the guard watches the clock:

    with StallGuard(workdir, timeout_s=0.0, resume_from=describe_checkpoint) as guard:
        with guard.phase("chunk", step):
            state, metrics = train_chunk(state)       # a stall here ...

... and when a phase outlives its limit the guard writes every thread's Python stack
(and, where ``gdb`` is installed, every thread's native stack) to ``workdir/stall.txt``
and to stderr, prints one ``error:`` line (the phase, the step, the seconds waited, the
newest intact checkpoint) and a ``hint:`` line (how to resume), and ends the process at
once with exit status `STALL_EXIT_CODE` (4). The kernel drops the workdir's lock with
the process; checkpoints are written whole or not at all, so nothing is damaged and the
same command resumes from the newest intact checkpoint.

Limits: the automatic limit of a phase derives from its own measured time: `FIRST_CALL_S`
for its first call in this process, then ``max(MIN_LIMIT_S, LIMIT_FACTOR x the slowest
earlier call of the same phase)``: a healthy run whose chunk took 20 s is stopped after
300 s of no progress, one whose chunk took 60 s after 600 s. ``timeout_s > 0`` replaces
it, except where a phase's first call compiles (a chunk, an evaluation, the first save)
or reads files (the restore): those never get less than the automatic limit.

The fallback: when the stuck call holds the Python lock, the guard's thread cannot run.
The guard therefore also arms the kernel's interval timer (``SIGALRM``) for the limit
plus a grace (`FALLBACK_GRACE_S`); if the thread has not ended the process by then, the signal
does, with no Python code running: ``faulthandler`` writes every thread's Python stack to
``workdir/stall.txt`` and the process dies of ``SIGALRM`` (exit status 142 in a shell,
-14 from ``subprocess``). The fallback is armed only where ``SIGALRM`` is unused.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import TextIO

__all__ = [
    "FALLBACK_EXIT_SIGNAL",
    "FALLBACK_GRACE_S",
    "FIRST_CALL_S",
    "LIMIT_FACTOR",
    "MIN_LIMIT_S",
    "STACK_FILE",
    "STALL_EXIT_CODE",
    "YNN_OFF_FLAG",
    "StallGuard",
    "is_stall_status",
]

STALL_EXIT_CODE = 4
"""The exit status of a process the guard stopped (2: a user error, 3: a non-finite loss)."""

FALLBACK_EXIT_SIGNAL = signal.SIGALRM
"""The signal that ends a stalled process whose guard thread could not run."""

FIRST_CALL_S = 1800.0
"""Automatic limit of a phase's first call in a process (it compiles, too)."""

MIN_LIMIT_S = 300.0
"""Automatic limit of a later call: at least this ..."""

LIMIT_FACTOR = 10.0
"""... and at least this many times the slowest earlier call of the same phase."""

FALLBACK_GRACE_S = 30.0
"""Seconds after a phase's limit at which the kernel's ``SIGALRM`` ends the process if the
guard's thread has not (the thread needs the Python lock; the signal does not); a tenth
of the limit where that is shorter, and at least 1 s."""

STACK_FILE = "stall.txt"
"""In the workdir: the stacks of a stalled run (appended to, one report per stall)."""

YNN_OFF_FLAG = "--xla_cpu_experimental_ynn_fusion_type="
"""The XLA flag (in ``XLA_FLAGS``, set before JAX starts) that turns XLA:CPU's YNN
(YNNPACK) fusions off: jaxlib 0.10's are known to hang on some programs (jax-ml/jax#39257).
They are faster (``experiments/results/bench.md``), so they stay on by default; a run that
stalled is rerun with them off."""

NATIVE_STACK_TIMEOUT_S = 60.0
"""gdb is killed after this long (reading a JAX process's stacks takes about 6 s here)."""


def is_stall_status(returncode: int | None) -> bool:
    """Whether a child process's ``returncode`` (as ``subprocess`` gives it) is a stall:
    the guard's exit status or death by the fallback's signal."""
    return returncode in (STALL_EXIT_CODE, -int(FALLBACK_EXIT_SIGNAL))


def _native_stacks(pid: int) -> str:
    """Every thread's native stack of process ``pid`` by gdb, or why there is none.

    gdb stops the process it reads, this one included: its output goes to a file, not a
    pipe this process would have to drain, and ``timeout`` (not this process's clock)
    ends a gdb that takes too long, which lets the process go on."""
    gdb = shutil.which("gdb")
    if gdb is None:
        return "(no native stack: gdb is not installed)\n"
    command = [gdb, "-p", str(pid), "-batch", "-nx", "-ex", "thread apply all bt"]
    killer = shutil.which("timeout")
    if killer is not None:
        command = [killer, "-s", "KILL", str(int(NATIVE_STACK_TIMEOUT_S)), *command]
    try:
        with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as out:
            done = subprocess.run(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
            out.seek(0)
            text = out.read()
    except OSError as error:
        return f"(no native stack: gdb failed: {error})\n"
    lines = [line for line in text.splitlines() if line.startswith(("Thread", "#"))]
    if not lines:
        return f"(no native stack: gdb exited {done.returncode}; {text.strip()[-300:]})\n"
    return "\n".join(lines) + "\n"


class StallGuard:
    """Stops the process when a guarded phase makes no progress for too long.

    Args:
        workdir: the run's folder (the stacks go to ``workdir/stall.txt``).
        timeout_s: every phase's limit in seconds; 0 derives it from the phase's
            measured time (see the module docstring).
        describe_checkpoint: returns the words for where the run can resume from, e.g.
            "the newest intact checkpoint is step 500 in runs/x/checkpoints" (called
            when the guard fires, from its thread).
        resume_hint: the ``hint:`` line's text (how to resume).
        primary: whether this process prints (process 0 of a multi-process run; the
            others write their stacks to ``stall.<process>.txt`` and exit alike).
        process_index: the process's index in a multi-process run.
        native_stacks: also read every thread's native stack with gdb, where installed.
        exit: how the process ends (``os._exit``; tests pass their own).
    """

    def __init__(
        self,
        workdir: str,
        timeout_s: float = 0.0,
        *,
        describe_checkpoint: Callable[[], str] = lambda: "",
        resume_hint: str = "run the same command again: it resumes from that checkpoint",
        primary: bool = True,
        process_index: int = 0,
        native_stacks: bool = True,
        exit: Callable[[int], None] = os._exit,
    ):
        if not timeout_s >= 0:
            raise ValueError(f"timeout_s must be >= 0 (0: automatic), got {timeout_s!r}")
        self.workdir = workdir
        self.timeout_s = float(timeout_s)
        self.describe_checkpoint = describe_checkpoint
        self.resume_hint = resume_hint
        self.primary = primary
        name = STACK_FILE if process_index == 0 else f"stall.{process_index}.txt"
        self.stack_path = os.path.join(workdir, name)
        self._exit = exit
        self.native_stacks = native_stacks
        self._slowest: dict[str, float] = {}
        self._lock = threading.Condition()
        # name, step, start, limit of the phase in progress
        self._current: tuple[str, int, float, float] | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self._fallback_file: TextIO | None = None
        self.fired = threading.Event()
        self.step = 0
        """The step of the newest phase entered (the steps the run had completed)."""

    # -- limits ------------------------------------------------------------------------

    def limit(self, name: str, *, compiles: bool = False) -> float:
        """The seconds a call of phase ``name`` may take now (see the module docstring);
        ``compiles``: the phase's first call compiles or waits on files."""
        first = name not in self._slowest
        automatic = FIRST_CALL_S if first else max(MIN_LIMIT_S, LIMIT_FACTOR * self._slowest[name])
        if compiles and first:
            return max(self.timeout_s, automatic)
        return self.timeout_s if self.timeout_s > 0 else automatic

    # -- the context -------------------------------------------------------------------

    def __enter__(self) -> StallGuard:
        self._thread = threading.Thread(target=self._watch, name="rnncells-stall-guard")
        self._thread.daemon = True
        self._thread.start()
        self._arm_fallback_handler()
        return self

    def __exit__(self, *exc_info) -> None:
        with self._lock:
            self._closed = True
            self._current = None
            self._lock.notify_all()
        self._disarm_fallback_handler()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @contextlib.contextmanager
    def phase(self, name: str, step: int, *, compiles: bool = False) -> Iterator[None]:
        """Guards the block as phase ``name`` at training step ``step``; ``compiles``: the
        phase's first call compiles or waits on files, so its limit is never below the
        automatic one."""
        limit = self.limit(name, compiles=compiles)
        self.step = step
        start = time.monotonic()
        with self._lock:
            self._current = (name, step, start, limit)
            self._lock.notify_all()
        self._set_timer(limit + max(1.0, min(FALLBACK_GRACE_S, 0.1 * limit)))
        try:
            yield
        finally:
            self._set_timer(0.0)
            took = time.monotonic() - start
            with self._lock:
                self._current = None
                self._lock.notify_all()
            self._slowest[name] = max(self._slowest.get(name, 0.0), took)

    # -- the watcher -------------------------------------------------------------------

    def _watch(self) -> None:
        with self._lock:
            while not self._closed:
                if self._current is None:
                    self._lock.wait()
                    continue
                name, step, start, limit = self._current
                left = start + limit - time.monotonic()
                if left > 0:
                    self._lock.wait(timeout=left)
                    continue
                break
            else:
                return
        self._fire(name, step, time.monotonic() - start, limit)

    def _fire(self, name: str, step: int, waited: float, limit: float) -> None:
        self._set_timer(0.0)  # this thread runs: the fallback is not needed
        where = self.describe_checkpoint()
        line = (
            f"error: the run stalled: phase '{name}' at step {step} made no progress for "
            f"{waited:.3g} s (limit {limit:.3g} s, config.stall_timeout_s)"
            + (f"; {where}" if where else "")
            + f"; the stacks are in {self.stack_path}"
        )
        hint = f"hint: {self.resume_hint}"
        try:
            with open(self.stack_path, "a", encoding="utf-8") as file:
                file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}\n")
                file.write(line + "\n\nPython stacks (every thread):\n")
                file.flush()
                faulthandler.dump_traceback(file, all_threads=True)
                if self.native_stacks:
                    file.write("\nNative stacks (every thread):\n")
                    file.write(_native_stacks(os.getpid()))
                file.write("\n")
        except OSError as error:  # a full or read-only disk: stderr still gets it all
            line += f" (could not write {self.stack_path}: {error.strerror})"
        if self.primary:
            sys.stderr.flush()
            try:
                faulthandler.dump_traceback(sys.stderr, all_threads=True)
            except (AttributeError, OSError, ValueError):  # a stderr without a descriptor
                for ident, frame in sys._current_frames().items():
                    sys.stderr.write(f"Thread {ident:#x}:\n")
                    sys.stderr.write("".join(traceback.format_stack(frame)))
            print(line, file=sys.stderr)
            print(hint, file=sys.stderr, flush=True)
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        self.fired.set()
        self._exit(STALL_EXIT_CODE)

    # -- the fallback ------------------------------------------------------------------

    def _fallback_usable(self) -> bool:
        return (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(FALLBACK_EXIT_SIGNAL) == signal.SIG_DFL
            and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
        )

    def _arm_fallback_handler(self) -> None:
        if not self._fallback_usable():
            return
        try:
            file = open(self.stack_path, "a", encoding="utf-8")  # noqa: SIM115
        except OSError:
            return
        # A C-level handler: it writes the stacks without the Python lock, then the
        # signal's default action (chain=True) ends the process.
        faulthandler.register(FALLBACK_EXIT_SIGNAL, file=file, all_threads=True, chain=True)
        self._fallback_file = file

    def _disarm_fallback_handler(self) -> None:
        if self._fallback_file is None:
            return
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        faulthandler.unregister(FALLBACK_EXIT_SIGNAL)
        self._fallback_file.close()
        self._fallback_file = None
        with contextlib.suppress(OSError):
            if os.path.getsize(self.stack_path) == 0:
                os.remove(self.stack_path)

    def _set_timer(self, seconds: float) -> None:
        if self._fallback_file is not None:
            signal.setitimer(signal.ITIMER_REAL, seconds)
