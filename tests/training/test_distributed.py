"""Multi-process training on this machine: 2 real processes x 2 host devices each.

The processes are started as a cluster would start them (`experiments.local_cluster`:
CPU devices, gloo collectives, a coordinator on localhost). A run on them must equal the
same run on 1 process x 4 devices up to the float rounding of the gradient all-reduce
(its partial sums are added in another order), each device must draw only its own rows
of every batch, and a process killed with SIGKILL must stop the other within a bounded
time, after which the same command resumes to the uninterrupted run's results.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import tests
from experiments import local_cluster
from rnncells.training import distributed
from rnncells.training.errors import ConfigError
from rnncells.training.metrics import read_jsonl
from tests.conftest import assert_tree_allclose

ROOT = str(tests.ROOT)

# The fault tests' tiny run: T=5, 4 hidden units, batch 16, 40 steps, a checkpoint every
# 10. Over 4 devices each holds 4 of the 16 rows of a batch.
TINY = {
    "task.kwargs.T": 5,
    "model.hidden_size": 4,
    "batch_size": 16,
    "num_steps": 40,
    "log_every": 10,
    "checkpoint_every": 10,
    "eval_every": 20,
    "eval_batch_size": 32,
    "early_stop": False,
}
ARGS = [
    "--config=configs/adding.py:smoke",
    *(f"--config.{k}={v}" for k, v in TINY.items()),
    "--report=False",
]
HEARTBEAT_S = 5
"""The runs' --heartbeat_timeout_s: a killed process is noticed within this time."""

STOP_BOUND_S = 60
"""A killed process's partner must have exited within this time (heartbeat + abort)."""

RTOL, ATOL = 1e-5, 1e-6
"""2 x 2 against 1 x 4 devices: the same batches and per-device sums; only the order in
which the all-reduce adds the devices' partial gradients differs (seen: relative 4e-6 on
parameters, 1e-6 on losses, after 40 float32 steps)."""


def _env(tmp_path):
    """CPU only, and one compilation cache for every process (reruns skip compiling)."""
    return dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    )


def _start_cluster(workdir, env, logs):
    """The tiny run on 2 processes x 2 devices, as `experiments.local_cluster` starts
    them; their output goes to files in ``logs`` (a full pipe would stall a process)."""
    port = local_cluster.free_port()
    args = [*ARGS, f"--workdir={workdir}", f"--heartbeat_timeout_s={HEARTBEAT_S}"]
    return [
        _popen(
            [
                "-m",
                "experiments.run",
                *args,
                f"--coordinator_address=localhost:{port}",
                "--num_processes=2",
                f"--process_id={i}",
            ],
            local_cluster.process_env(2, env),
            logs / f"process{i}",
        )
        for i in range(2)
    ]


def _popen(args, env, log):
    """``python ARGS`` started with its stdout and stderr in ``log``.out and ``log``.err."""
    with open(f"{log}.out", "w") as out, open(f"{log}.err", "w") as err:
        return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=out, stderr=err)


GLOO_WORDS = frozenset(
    "[Gloo] Rank is connected to peer ranks. Expected number of connected peer ranks is :".split()
)


def _without_gloo(text):
    """``text`` less gloo's own messages about its connections. Gloo's threads write them
    unsynchronised, so one message can break into another anywhere, even between a rank and
    its number: what is left once gloo's words and bare numbers are taken out is the
    process's own output."""
    text = text.replace("[Gloo]", " ")  # its tag, also where it ran into a number
    return " ".join(
        token for token in text.split() if token not in GLOO_WORDS and not token.isdigit()
    )


def _read(path):
    with open(path, encoding="utf-8") as file:
        return file.read()


def _logs(workdir):
    """metrics.jsonl (without the timing) and eval.jsonl of a run."""
    metrics = [
        {k: v for k, v in r.items() if k != "steps_per_sec"}
        for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    ]
    return metrics, read_jsonl(os.path.join(workdir, "eval.jsonl"))


def _checkpoint(workdir, step=40):
    """The state saved at ``step``, read onto this process's one device (a checkpoint
    holds its writer's device layout, which this process does not have)."""
    path = os.path.join(workdir, "checkpoints", str(step), "default")
    checkpointer = ocp.StandardCheckpointer()
    tree = checkpointer.metadata(path).item_metadata
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
    return checkpointer.restore(path, target)


def _numbers(records):
    """The numeric values of log records, flattened in order (steps included)."""
    return np.concatenate(
        [np.ravel(np.asarray(r[k], np.float64)) for r in records for k in sorted(r)]
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The tiny run on 2 processes x 2 devices and on 1 process x 4 devices, trained at
    the same time: (two-process workdir, one-process workdir, folder of the logs)."""
    base = tmp_path_factory.mktemp("distributed")
    env = _env(base)
    two, one, logs = base / "two", base / "one", base / "logs"
    os.makedirs(logs)
    processes = _start_cluster(two, env, logs)
    single = subprocess.run(
        [sys.executable, "-m", "experiments.run", *ARGS, f"--workdir={one}"],
        cwd=ROOT,
        env=local_cluster.process_env(4, env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    for i, process in enumerate(processes):
        process.wait(timeout=300)
        assert process.returncode == 0, _read(logs / f"process{i}.err")[-3000:]
    return str(two), str(one), logs, env


def test_two_processes_train_like_one_process_on_four_devices(runs):
    two, one, logs, _ = runs
    (metrics_two, evals_two), (metrics_one, evals_one) = _logs(two), _logs(one)
    assert [r["step"] for r in metrics_two] == list(range(1, 41))  # written once, by process 0
    assert [r["step"] for r in evals_two] == [20, 40]
    np.testing.assert_allclose(_numbers(metrics_two), _numbers(metrics_one), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(_numbers(evals_two), _numbers(evals_one), rtol=RTOL, atol=ATOL)
    assert_tree_allclose(_checkpoint(two), _checkpoint(one), rtol=RTOL, atol=ATOL)
    # Orbax wrote the checkpoint from both processes; process 0 alone printed the summary.
    saved = os.path.join(two, "checkpoints", "40", "default")
    assert {"ocdbt.process_0", "ocdbt.process_1"} <= set(os.listdir(saved))
    assert "held-out loss" in _read(logs / "process0.out")
    assert _without_gloo(_read(logs / "process1.out")) == ""
    summary = json.loads(_read(os.path.join(two, "summary.json")))
    assert summary["finished"] and summary["steps_run"] == 40


SHAPES_SCRIPT = textwrap.dedent(
    """
    import collections, json, re, sys
    sys.path.insert(0, {root!r})
    flags = dict(arg[2:].split("=", 1) for arg in sys.argv[1:])
    from rnncells.training import build, distributed
    distributed.initialize(
        flags["coordinator_address"], int(flags["num_processes"]), int(flags["process_id"])
    )
    import jax
    from configs import adding
    config = adding.get_config("smoke")
    for key, value in {tiny!r}.items():
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    setup = build(config)
    hlo = setup.train_chunk.lower(setup.init_state()).compile().as_text()
    # The shapes, per device, of the ops that draw the batch (named after make_batch).
    shape = re.compile(r"\\s*(?:ROOT )?%\\S+ = \\w+\\[([\\d,]*)\\]")
    shapes = collections.Counter(
        m.group(1) for line in hlo.splitlines() if "make_batch" in line
        for m in [shape.match(line)] if m
    )
    print(json.dumps({{
        "devices": jax.device_count(),
        "local_devices": jax.local_device_count(),
        "shapes": sorted(shapes),
    }}))
    """
)


def test_each_device_draws_only_its_rows_of_every_batch(runs, tmp_path):
    """In the compiled step of each process the generator's ops have 4 rows (one
    device's share of 16), never 8 (a process's) or 16 (the batch); the values are those
    of the one-process run (previous test), so no process drew the global batch."""
    *_, env = runs
    script = tmp_path / "shapes.py"
    script.write_text(SHAPES_SCRIPT.format(root=ROOT, tiny=TINY))
    port = local_cluster.free_port()
    processes = [
        _popen(
            [
                str(script),
                f"--coordinator_address=localhost:{port}",
                "--num_processes=2",
                f"--process_id={i}",
            ],
            local_cluster.process_env(2, env),
            tmp_path / f"shapes{i}",
        )
        for i in range(2)
    ]
    for i, process in enumerate(processes):
        process.wait(timeout=300)
        assert process.returncode == 0, _read(tmp_path / f"shapes{i}.err")[-3000:]
        out = json.loads(_read(tmp_path / f"shapes{i}.out").strip().splitlines()[-1])
        assert (out["devices"], out["local_devices"]) == (4, 2)
        seeds, rows, T = 2, TINY["batch_size"] // 4, TINY["task.kwargs.T"]
        assert f"{seeds},{rows},{T}" in out["shapes"], out["shapes"]  # uniform values
        whole = {TINY["batch_size"], TINY["batch_size"] // 2}
        whole |= {n * T for n in whole}  # flattened (rows * T) bits
        drawn_whole = [s for s in out["shapes"] if whole & {int(d) for d in s.split(",") if d}]
        assert drawn_whole == [], out["shapes"]


def _lines(path):
    try:
        return _read(path).count("\n")
    except FileNotFoundError:
        return 0


def test_a_killed_process_stops_the_other_and_the_command_resumes(runs, tmp_path):
    two, _, _, env = runs
    workdir, logs = tmp_path / "run", tmp_path / "logs"
    os.makedirs(logs)
    processes = _start_cluster(workdir, env, logs)
    first = workdir / "checkpoints" / "10" / "rnncells_digest.json"
    deadline = time.monotonic() + 240
    while not first.exists() and all(p.poll() is None for p in processes):
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.01)
    victim, partner = processes[1], processes[0]  # process 0 hosts the coordinator
    victim.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    partner.wait(timeout=STOP_BOUND_S + 60)
    stopped_after = time.monotonic() - killed_at
    victim.wait()
    err = _read(logs / "process0.err")
    assert partner.returncode != 0, err[-3000:]
    assert stopped_after < STOP_BOUND_S, stopped_after
    assert "another task died" in err or "heartbeat" in err, err[-3000:]
    assert not (workdir / "summary.json").exists(), "the kill came after the run ended"

    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.local_cluster",
            "--num_processes=2",
            "--",
            *ARGS,
            f"--workdir={workdir}",
            f"--heartbeat_timeout_s={HEARTBEAT_S}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert re.search(r"^\[0\] .*40 of 40 steps", resumed.stdout, re.MULTILINE), resumed.stdout
    # The same processes and devices: exactly the uninterrupted run.
    assert _logs(workdir) == _logs(two)
    assert_tree_allclose(_checkpoint(workdir), _checkpoint(two), rtol=0, atol=0)
    with open(workdir / "summary.json") as a, open(os.path.join(two, "summary.json")) as b:
        assert json.load(a)["eval"] == json.load(b)["eval"]


def test_partial_multiprocess_flags_stop_with_one_error_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.run", *ARGS, f"--workdir={tmp_path / 'x'}"]
        + ["--num_processes=2"],
        cwd=ROOT,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert re.search(r"^error: multi-process settings: .*--process_id", proc.stderr, re.M)
    assert not (tmp_path / "x").exists()


# A failed start: what can be checked before JAX's runtime starts is checked there, and a
# bad address stops the command with one error line (JAX would kill the interpreter: a
# segfault for a port in use, SIGABRT and "another task died" for a missing coordinator
# or an unknown host).


def _start_alone(tmp_path, address, process_id, *extra):
    """One process of a 2-process run started on its own: (the finished process, seconds)."""
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.run",
            "--config=configs/adding.py:smoke",
            f"--workdir={tmp_path / 'run'}",
            f"--coordinator_address={address}",
            "--num_processes=2",
            f"--process_id={process_id}",
            *extra,
        ],
        cwd=ROOT,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc, time.monotonic() - started


def _one_error_line(proc, tmp_path, address):
    """The one ``error:`` line of a command that stopped with status 2 before JAX started
    (no traceback, no crash, no run folder); it names ``address``."""
    assert proc.returncode == 2, f"rc {proc.returncode}: {proc.stderr[-3000:]}"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and address in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Fatal" not in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "run").exists()
    return errors[0]


def test_a_port_in_use_stops_process_0_with_one_error_line(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        proc, _ = _start_alone(tmp_path, address, 0, "--initialization_timeout_s=5")
    error = _one_error_line(proc, tmp_path, address)
    assert "in use" in error, error


def test_a_missing_coordinator_stops_process_1_with_one_error_line(tmp_path):
    address = f"127.0.0.1:{local_cluster.free_port()}"  # nothing listens there
    proc, seconds = _start_alone(tmp_path, address, 1, "--initialization_timeout_s=1")
    error = _one_error_line(proc, tmp_path, address)
    assert "initialization_timeout_s=1" in error, error
    assert seconds < 60, seconds


@pytest.mark.parametrize("process_id", [0, 1])
def test_an_unresolvable_host_stops_with_one_error_line(tmp_path, process_id):
    address = "no-such-host.invalid:1234"
    proc, _ = _start_alone(tmp_path, address, process_id, "--initialization_timeout_s=1")
    error = _one_error_line(proc, tmp_path, address)
    assert "no-such-host.invalid" in error and "resolve" in error, error


@pytest.fixture
def jax_start(monkeypatch):
    """`jax.distributed.initialize` replaced by a recorder of its calls, so that
    `distributed.initialize` runs in this process up to where JAX would start."""
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))
    collectives = jax.config.jax_cpu_collectives_implementation
    yield calls
    jax.config.update("jax_cpu_collectives_implementation", collectives)


@pytest.mark.parametrize(
    "address",
    [
        "localhost",
        "localhost:",
        ":1234",
        "localhost:0",
        "localhost:65536",
        "localhost:http",
        "localhost:12 34",
        "::1:1234",
        "[::1:1234",
        "a:b:1234",
    ],
)
@pytest.mark.parametrize("process_id", [0, 1])
def test_a_malformed_coordinator_address_is_a_config_error(jax_start, address, process_id):
    with pytest.raises(ConfigError, match="HOST:PORT") as raised:
        distributed.initialize(address, 2, process_id, initialization_timeout_s=1)
    assert f"coordinator_address {address}:" in str(raised.value)
    assert raised.value.hint
    assert jax_start == []


def test_process_1_waits_for_a_coordinator_that_starts_later(jax_start):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as coordinator:
        coordinator.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        coordinator.bind(("127.0.0.1", 0))
        port = coordinator.getsockname()[1]
        listen = threading.Timer(0.5, coordinator.listen)  # refused until then
        listen.start()
        started = time.monotonic()
        try:
            assert distributed.initialize(f"127.0.0.1:{port}", 2, 1, initialization_timeout_s=30)
        finally:
            listen.cancel()
            listen.join()
    assert time.monotonic() - started >= 0.4
    [(args, kwargs)] = jax_start
    assert args == (f"127.0.0.1:{port}", 2, 1)
    # The wait counts against the timeout JAX is then given.
    assert 1 <= kwargs["initialization_timeout"] <= 30


def test_process_0_binds_a_port_that_a_finished_run_left_in_time_wait(jax_start):
    """A connection closed by the coordinator's side holds its port in TIME_WAIT for a
    minute; gRPC binds the port all the same (its listener and the connections it accepted
    set SO_REUSEADDR), so the check must not refuse it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC's does
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
    accepted.close()  # the server's side closes first: its port goes to TIME_WAIT
    client.close()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as plain:  # the premise
        with pytest.raises(OSError):
            plain.bind(("127.0.0.1", port))
    assert distributed.initialize(f"127.0.0.1:{port}", 2, 0, initialization_timeout_s=1) == 1
    assert len(jax_start) == 1
