"""What every command line of ``experiments/`` shares: one-line errors (those of
``rnncells.training.cli``), and child runs that are rerun after a stall.

An error the user can fix (`rnncells.training.errors.RunError`) prints one ``error: ...``
line, and where useful a ``hint: ...`` line, to stderr and exits with the error's status
(2; 3 for a non-finite loss; 130 or 143 for a run stopped by SIGINT or SIGTERM); a
`RunWarning` prints one ``warning: ...`` line and the run goes on. A run that stalls
exits with 4 (`rnncells.training.stall`); `run_resuming_stalls` reruns such a child
process, which resumes from its checkpoint, a bounded number of times.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys

from rnncells.training.cli import one_line, user_errors

__all__ = [
    "STALL_RETRIES",
    "one_line",
    "resume_command",
    "run_resuming_stalls",
    "user_errors",
]

STALL_RETRIES = 2
"""How many times `run_resuming_stalls` reruns a stalled child before it gives up."""


def resume_command(module: str, args: list[str]) -> str:
    """The shell command that runs ``python -m module`` again with ``args`` (quoted), in
    this interpreter: what a stopped run prints to resume it."""
    return " ".join(shlex.quote(a) for a in [sys.executable, "-m", module, *args])


def run_resuming_stalls(command: list[str], label: str, retries: int = STALL_RETRIES) -> int:
    """Runs ``command`` (a child that resumes from its checkpoints) until it ends other
    than by a stall, at most ``1 + retries`` times; returns its last exit status.

    Each rerun says so on one line. The first runs as the first did, so the run ends
    bit for bit as an uninterrupted one; the later ones run with XLA:CPU's YNN fusions off
    (`rnncells.training.stall.YNN_OFF_FLAG`, unless ``XLA_FLAGS`` sets that option), whose
    rounding differs in the last bits (a run that stalled twice alike may hit the known
    hang of those fusions).
    SIGTERM sent to this process is passed on to the child (Ctrl-C reaches both from the
    terminal), and the child's status, 130 or 143, is returned once it has stopped.
    """
    from rnncells.training.stall import YNN_OFF_FLAG, is_stall_status

    env = dict(os.environ)
    status = 0
    for attempt in range(1 + retries):
        proc = subprocess.Popen(command, env=env)

        def forward(signum, frame, proc=proc):
            proc.send_signal(signum)

        previous = signal.signal(signal.SIGTERM, forward)
        try:
            while True:
                try:
                    status = proc.wait()
                    break
                except KeyboardInterrupt:  # the child got it too, and stops by itself
                    continue
        finally:
            signal.signal(signal.SIGTERM, previous)
        if not is_stall_status(status):
            return status
        if attempt == retries:
            break
        flags = env.get("XLA_FLAGS", "")
        turned_off = ""
        if attempt >= 1 and "ynn_fusion_type" not in flags:
            env["XLA_FLAGS"] = f"{flags} {YNN_OFF_FLAG}".strip()
            turned_off = ", XLA:CPU's YNN fusions off"
        print(
            f"{label}: stalled (exit status {status}); rerun {attempt + 1} of {retries} "
            f"resumes it from its newest checkpoint{turned_off}",
            file=sys.stderr,
            flush=True,
        )
    print(
        f"error: {label} stalled {1 + retries} times (exit status {status}); its stacks are "
        "in its workdir's stall.txt",
        file=sys.stderr,
        flush=True,
    )
    return status
