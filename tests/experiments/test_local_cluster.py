"""``experiments.local_cluster``'s terminal output: the run's own lines and one line per
Python traceback; the runtime's dumps go to the processes' log files only."""

from experiments import local_cluster

# The partner of a killed process, as it printed (trimmed): a traceback from a failed
# collective, then the coordination service's logs, a native stack trace and Python's
# fatal-error dump.
PARTNER = """\
adding lstm: starting at step 0 of 400 (the first chunk compiles)
[Gloo] Rank 0 is connected to 1 peer ranks. Expected number of connected peer ranks is : 1
Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
  File "/work/main/rnncells/training/checkpoint.py", line 216, in save
    manager.save(step, args=ocp.args.StandardSave(state), force=True)
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^

jax.errors.JaxRuntimeError: UNKNOWN: Gloo AllGather failed: Connection closed by peer
E1207 23:06:01.984721   16882 coordination_service.cc:1520] Shutdown barrier has failed:
INTERNAL: Barrier failed because: task is set to ERROR: UNAVAILABLE: Task 1 heartbeat timeout.
This suggests that the workers are out of sync.
F1207 23:06:01.985383   16893 client.h:80] Terminating process because the JAX distributed
*** Check failure stack trace: ***
    @     0x7fe914240634  absl::lts_20260107::log_internal::LogMessage::SendToLog()
error: the run stopped at step 25
hint: rerun to resume
Fatal Python error: Aborted

Thread 0x00007fe91c412b80 (most recent call first):
  File "/work/main/.venv/lib/python3.11/site-packages/jax/_src/distributed.py", line 199 in shutdown
Extension modules: yaml._yaml, jaxlib.cpu_feature_guard
"""


def test_the_terminal_gets_the_runs_lines_and_each_tracebacks_last_line():
    kept = local_cluster.Filter()
    lines = PARTNER.splitlines(keepends=True)
    shown = [line.rstrip("\n") for line in lines if kept.shown(line)]
    assert shown == [
        "adding lstm: starting at step 0 of 400 (the first chunk compiles)",
        "jax.errors.JaxRuntimeError: UNKNOWN: Gloo AllGather failed: Connection closed by peer",
        "error: the run stopped at step 25",
        "hint: rerun to resume",
    ]
    assert kept.held == len(lines) - len(shown)


def test_a_traceback_ends_and_later_lines_show_again():
    kept = local_cluster.Filter()
    text = "Traceback (most recent call last):\n  File x\nValueError: bad\nstep 5\n"
    assert [line for line in text.splitlines(True) if kept.shown(line)] == [
        "ValueError: bad\n",
        "step 5\n",
    ]


def test_the_logs_go_beside_the_workdir_unless_given():
    assert local_cluster.log_dir(["--config=x", "--workdir=runs/a/"], None) == "runs/a.logs"
    assert local_cluster.log_dir(["--workdir=runs/a"], "elsewhere") == "elsewhere"
    assert local_cluster.log_dir(["--config=x"], None) == "local_cluster_logs"
