"""``python tests/stall_hook.py ARGS``: ``python -m experiments.run ARGS`` whose training
chunk number ``STALL_HOOK_AT`` (1-based) never finishes, as a hung XLA call would not.

The chunk's metrics pass through an ``io_callback`` that waits forever: on an event that
never fires (``STALL_HOOK_MODE=event``, the Python lock released, as a compiled call
blocked in the runtime), or in a C ``sleep`` called with the Python lock held
(``STALL_HOOK_MODE=gil``: no Python thread of the process can run, so only the guard's
fallback signal can end it). Once the wait begins, the file ``STALL_HOOK_MARKER`` is
created; with ``STALL_HOOK_ONCE=1`` a process that finds that file already there does not
stall (the rerun of a stalled run). A test-only hook: the library has none.

The callback runs on the thread that called the chunk (the main thread), so a signal's
KeyboardInterrupt is raised inside it and reaches the loop as the runtime's error; JAX's
log of that error is silenced here, as a real stuck call has no callback to log.
"""

import ctypes
import logging
import os
import runpy
import signal
import sys
import threading

# Run as a script, this file's folder comes first on sys.path, where tests/experiments/
# would hide the repository's experiments package: the repository comes first instead.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# SIGINT at its default, as in a terminal: a process started with SIGINT ignored (a
# background job of a non-interactive shell, whose ignore a test worker passes on) keeps
# it ignored, and the run rightly leaves an ignored signal alone.
signal.signal(signal.SIGINT, signal.default_int_handler)

import jax  # noqa: E402
from jax.experimental import io_callback  # noqa: E402

from rnncells.training import loop  # noqa: E402

AT = int(os.environ["STALL_HOOK_AT"])
MODE = os.environ.get("STALL_HOOK_MODE", "event")
MARKER = os.environ.get("STALL_HOOK_MARKER")
_never = threading.Event()
logging.getLogger("jax._src.callback").setLevel(logging.CRITICAL)


def _wait_forever(x):
    if MARKER:
        with open(MARKER, "w") as file:
            file.write("waiting\n")
    if MODE == "gil":
        ctypes.PyDLL(None).sleep(3600)  # PyDLL keeps the Python lock during the call
    else:
        _never.wait()
    return x


_block = jax.jit(lambda x: io_callback(_wait_forever, jax.ShapeDtypeStruct(x.shape, x.dtype), x))
_build = loop.build


def build(config, mesh=None):
    setup = _build(config, mesh)
    if os.environ.get("STALL_HOOK_ONCE") == "1" and MARKER and os.path.exists(MARKER):
        return setup
    calls = [0]

    def train_chunk(state):
        calls[0] += 1
        state, metrics = setup.train_chunk(state)
        if calls[0] == AT:
            metrics = dict(metrics, loss=_block(metrics["loss"]))
        return state, metrics

    return setup._replace(train_chunk=train_chunk)


loop.build = build
sys.argv = ["experiments.run", *sys.argv[1:]]
runpy.run_module("experiments.run", run_name="__main__", alter_sys=True)
