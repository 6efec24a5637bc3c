"""Optional TensorBoard output: the metrics the JSON lines hold, once per step, and a
resume that purges what a killed process wrote past its checkpoint."""

import glob
import os
import struct

import pytest

from configs import adding
from rnncells.training import metrics, train
from rnncells.training.tensorboard import FOLDER

event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")

# Its train() calls compile the same few programs: each is compiled once.
pytestmark = pytest.mark.usefixtures("compilation_cache")


def _events(workdir):
    """Every Event in the run's event files, in file and write order."""
    out = []
    for path in sorted(glob.glob(os.path.join(workdir, FOLDER, "events.out.tfevents.*"))):
        with open(path, "rb") as file:
            data = file.read()
        pos = 0
        while pos < len(data):  # TFRecord: length, its crc, the record, its crc
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[pos + 12 : pos + 12 + length])
            out.append(event)
            pos += 12 + length + 4
    return out


def _scalars(events, tag):
    return [(e.step, v.simple_value) for e in events for v in e.summary.value if v.tag == tag]


def _config(**overrides):
    config = adding.get_config("smoke")
    config.num_steps, config.log_every, config.eval_every, config.checkpoint_every = 50, 25, 25, 25
    config.tensorboard = True
    for key, value in overrides.items():
        config[key] = value
    return config


def test_tensorboard_holds_the_jsonl_metrics(tmp_path):
    workdir = str(tmp_path / "run")
    train(_config(), workdir)
    events = _events(workdir)
    records = metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    losses = _scalars(events, "train/loss")
    assert [s for s, _ in losses] == [r["step"] for r in records] == list(range(1, 51))
    assert [v for _, v in losses] == pytest.approx([r["loss"] for r in records], rel=1e-6)
    evals = metrics.read_jsonl(os.path.join(workdir, "eval.jsonl"))
    assert [s for s, _ in _scalars(events, "eval/loss")] == [r["step"] for r in evals]


def test_resume_purges_what_a_killed_run_wrote_past_its_checkpoint(tmp_path):
    workdir = str(tmp_path / "run")
    stopped = train(_config(time_limit_s=1e-3), workdir)  # stops, checkpointed, at step 25
    assert stopped["steps_run"] == 25
    # A process killed after step 25's checkpoint had written events of later steps.
    import tensorboardX

    stray = tensorboardX.SummaryWriter(os.path.join(workdir, FOLDER))
    for step in range(26, 31):
        stray.add_scalar("train/loss", 123.0, step)
    stray.close()
    train(_config(), workdir)
    events = _events(workdir)
    # The resumed writer starts with TensorBoard's purge marker at the first new step:
    # TensorBoard drops every earlier-written event with step >= 26.
    starts = [e.step for e in events if e.HasField("session_log") and e.session_log.status == 1]
    assert 26 in starts
    after_purge = events[max(i for i, e in enumerate(events) if e.HasField("session_log")) :]
    assert [s for s, _ in _scalars(after_purge, "train/loss")] == list(range(26, 51))


def test_tensorboard_flag_must_be_a_bool(tmp_path):
    from rnncells.training.errors import ConfigError

    config = _config()
    with config.ignore_type():
        config.tensorboard = "yes"
    with pytest.raises(ConfigError, match="config.tensorboard must be True or False"):
        train(config, str(tmp_path / "run"))
