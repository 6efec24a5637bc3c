"""Starts N processes of one run on this machine, as a cluster would start them on N hosts.

    python -m experiments.local_cluster --num_processes=2 [--devices_per_process=2] \
        [--module=experiments.run] -- --config=configs/adding.py:smoke --workdir=runs/x

Each process runs ``python -m MODULE ARGS --coordinator_address=localhost:PORT
--num_processes=N --process_id=I`` on CPU with ``devices_per_process`` host devices of its
own (``JAX_NUM_CPU_DEVICES``), the processes exchanging data through gloo, so a run sees N
x devices_per_process devices over N processes, exactly as on N hosts. It is for tests
and for trying a multi-process launch before booking a cluster (where SLURM starts the
processes instead: ``experiments/slurm_example.sbatch``); it is not a launcher for real
hosts.

Each line a process prints is prefixed with ``[I]`` and written to ``process<I>.log`` in
``--process_logs`` (default ``<workdir>.logs``); the terminal shows the run's own lines and
leaves out the runtime's dumps (``Filter``: gloo's and the coordination service's logs,
native stack traces, a traceback's frames), saying how many it left out. The command
exits with status 0 when every process does, else with the status of the first one that
failed (128 + the signal number for a process killed by a signal); when one fails the
others stop by themselves
(JAX's heartbeat, ``--heartbeat_timeout_s`` of the run), and any still running
``--grace_s`` seconds later are killed. Rerunning the same command resumes the run.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

from experiments import extra

extra.require_extra("python -m experiments.local_cluster")

from absl import app, flags  # noqa: E402

from experiments.cli import user_errors  # noqa: E402


def free_port() -> int:
    """A TCP port that was free a moment ago, for the coordinator."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def process_env(devices_per_process: int, base: dict | None = None) -> dict:
    """The environment of one local process: CPU only, its own host devices, gloo."""
    env = dict(os.environ if base is None else base)
    # The count is JAX's own setting; an inherited XLA flag for it would only confuse.
    xla_flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", env.get("XLA_FLAGS", ""))
    env["XLA_FLAGS"] = xla_flags.strip()
    env.update(
        JAX_PLATFORMS="cpu",
        JAX_NUM_CPU_DEVICES=str(devices_per_process),
        JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
    )
    return env


def start(
    num_processes: int,
    args: list[str],
    *,
    module: str = "experiments.run",
    devices_per_process: int = 2,
    port: int | None = None,
    env: dict | None = None,
    cwd: str | None = None,
    **popen_kwargs,
) -> list[subprocess.Popen]:
    """Starts the processes of one run; returns them, process 0 first.

    Args:
        num_processes: N >= 1.
        args: the module's arguments (the multi-process flags are added).
        module: the program each process runs (``python -m module``); it must take
            ``--coordinator_address``, ``--num_processes`` and ``--process_id``.
        devices_per_process: host CPU devices of each process.
        port: the coordinator's port on localhost (default: a free one).
        env: the base environment (default: this process's).
        cwd: the processes' working directory.
        **popen_kwargs: passed to `subprocess.Popen` (e.g. ``stdout=subprocess.PIPE``).
    """
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    if devices_per_process < 1:
        raise ValueError(f"devices_per_process must be >= 1, got {devices_per_process}")
    port = free_port() if port is None else port
    process_environment = process_env(devices_per_process, env)
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                module,
                *args,
                f"--coordinator_address=localhost:{port}",
                f"--num_processes={num_processes}",
                f"--process_id={i}",
            ],
            env=process_environment,
            cwd=cwd,
            **popen_kwargs,
        )
        for i in range(num_processes)
    ]


def exit_status(returncode: int) -> int:
    """A process's return code as a shell exit status (128 + signal for a signal)."""
    return 128 - returncode if returncode < 0 else returncode


def describe(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with status {returncode}"


def wait(processes: list[subprocess.Popen], grace_s: float) -> int:
    """Waits for every process; once one fails, kills those still running after
    ``grace_s`` seconds. Returns 0, or the exit status of the first that failed."""
    first_failure: tuple[int, int] | None = None  # (process index, return code)
    deadline = None
    while True:
        running = False
        for i, process in enumerate(processes):
            code = process.poll()
            if code is None:
                running = True
            elif code != 0 and first_failure is None:
                first_failure = (i, code)
                deadline = time.monotonic() + grace_s
        if not running:
            break
        if deadline is not None and time.monotonic() > deadline:
            for i, process in enumerate(processes):
                if process.poll() is None:
                    print(f"local_cluster: process {i} still running, killed", file=sys.stderr)
                    process.kill()
            deadline = None
        time.sleep(0.1)
    if first_failure is None:
        return 0
    i, code = first_failure
    print(f"local_cluster: process {i} {describe(code)} (the first to fail)", file=sys.stderr)
    return exit_status(code)


_NOISE = re.compile(r"^\[Gloo\] Rank \d+ is connected to")
"""gloo prints a line per process and communicator: left out of the terminal."""

_RUNTIME_LOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\]")
"""The header of an XLA / JAX runtime log line (gloo, the coordination service)."""

_DUMP_START = ("*** Check failure stack trace", "Fatal Python error:")


class Filter:
    """Splits one process's output into what the terminal shows and what only its log
    file keeps.

    Every line goes to the log. The terminal gets the run's own lines; a Python traceback
    shows only its last line (the exception); the runtime's log lines (``_RUNTIME_LOG``)
    and everything after them, native stack traces and Python's fatal-error dumps are left
    out, but for the run's own ``error:`` and ``hint:`` lines. When a process is killed,
    its partner's coordination service prints some 100 such lines before it aborts."""

    def __init__(self):
        self.held = 0  # lines left out of the terminal
        self._traceback = False
        self._dump = False

    def shown(self, line: str) -> bool:
        """Whether the terminal shows ``line`` (one line, with its newline)."""
        if _NOISE.match(line):
            self.held += 1
            return False
        if line.startswith(("error:", "hint:")):
            return True
        if _RUNTIME_LOG.match(line) or line.startswith(_DUMP_START):
            self._dump = True
        if self._dump:
            self.held += 1
            return False
        if line.startswith("Traceback (most recent call last):"):
            self._traceback = True
        if self._traceback:
            if line[:1].isspace() or line.startswith("Traceback") or not line.strip():
                self.held += 1
                return False
            self._traceback = False  # the exception's line
        return True


def _forward(stream, prefix: str, out, log, lock, kept: Filter) -> None:
    for line in stream:
        with lock:
            log.write(prefix + line)
            log.flush()
        if kept.shown(line):
            out.write(prefix + line)
            out.flush()


def log_dir(args: list[str], given: str | None) -> str:
    """Where the processes' full output goes: ``given``, else ``<workdir>.logs`` beside
    the run's ``--workdir`` (not inside it: a workdir holds a run only), else
    ``local_cluster_logs``."""
    if given:
        return given
    for arg in args:
        if arg.startswith("--workdir=") and arg.split("=", 1)[1].strip("/"):
            return arg.split("=", 1)[1].rstrip("/") + ".logs"
    return "local_cluster_logs"


def _check_flags() -> None:
    """One ``error:`` line (exit status 2) for a flag value out of range, before any
    process starts."""
    from rnncells.training.errors import ConfigError

    for name, value in (
        ("num_processes", _NUM_PROCESSES.value),
        ("devices_per_process", _DEVICES.value),
    ):
        if value is None or value < 1:
            with user_errors():
                raise ConfigError(
                    f"--{name} must be an integer >= 1, got {value}",
                    hint=f"e.g. --{name}=2",
                )
    if _PORT.value is not None and not 0 < _PORT.value < 65536:
        with user_errors():
            raise ConfigError(
                f"--port must be in [1, 65535], got {_PORT.value}",
                hint="leave --port out for a free port",
            )
    if _GRACE.value is None or not _GRACE.value >= 0:
        with user_errors():
            raise ConfigError(
                f"--grace_s must be a number >= 0, got {_GRACE.value}", hint="e.g. --grace_s=150"
            )


def main(argv):
    _check_flags()
    args = list(argv[1:])
    logs = log_dir(args, _LOG_DIR.value)
    try:
        os.makedirs(logs, exist_ok=True)
        files = [
            open(os.path.join(logs, f"process{i}.log"), "a") for i in range(_NUM_PROCESSES.value)
        ]
    except OSError as error:
        from rnncells.training.errors import ConfigError

        with user_errors():
            raise ConfigError(
                f"--process_logs {logs} cannot hold the processes' logs: {error.strerror}",
                hint="pass --process_logs=DIR, a writable directory",
            ) from None
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    for f in files:
        f.write(f"--- local_cluster {stamp}: {' '.join(args)}\n")
    processes = start(
        _NUM_PROCESSES.value,
        args,
        module=_MODULE.value,
        devices_per_process=_DEVICES.value,
        port=_PORT.value,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    threads, filters = [], []
    for i, process in enumerate(processes):
        lock = threading.Lock()
        for stream, out in ((process.stdout, sys.stdout), (process.stderr, sys.stderr)):
            kept = Filter()
            filters.append(kept)
            thread = threading.Thread(
                target=_forward,
                args=(stream, f"[{i}] ", out, files[i], lock, kept),
                daemon=True,
            )
            thread.start()
            threads.append(thread)

    def stop(signum, frame):  # Ctrl-C or a scheduler's SIGTERM reaches every process
        for process in processes:
            if process.poll() is None:
                process.send_signal(signum)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    status = wait(processes, _GRACE.value)
    for thread in threads:
        thread.join(timeout=5)
    for f in files:
        f.close()
    held = sum(f.held for f in filters)
    if held:
        print(
            f"local_cluster: {held} lines of tracebacks and runtime logs left out here; every "
            f"process's full output is in {os.path.join(logs, 'process<I>.log')}",
            file=sys.stderr,
        )
    if status != 0:
        print("hint: rerun the same command to resume from the newest checkpoint", file=sys.stderr)
    sys.exit(status)


if __name__ == "__main__":
    _NUM_PROCESSES = flags.DEFINE_integer("num_processes", 2, "processes to start")
    _DEVICES = flags.DEFINE_integer("devices_per_process", 2, "host CPU devices per process")
    _MODULE = flags.DEFINE_string(
        "module", "experiments.run", "program to run: experiments.run, .sweep or .main"
    )
    _PORT = flags.DEFINE_integer("port", None, "coordinator port on localhost (default: free)")
    _LOG_DIR = flags.DEFINE_string(
        "process_logs",
        None,
        "where each process's full output goes, as process<I>.log (default: <workdir>.logs)",
    )
    _GRACE = flags.DEFINE_float(
        "grace_s",
        150.0,
        "after a process fails, kill the others still running this many seconds later",
    )
    app.run(main)
