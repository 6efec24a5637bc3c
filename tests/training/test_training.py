"""Training layer: loss falls, no recompilation, vmap over seeds, 4-device sharding, NaN stop."""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from jax._src import dispatch, monitoring

import tests
from configs.common import base_config
from rnncells.training import (
    ConfigError,
    NonFiniteLossError,
    build,
    cell_init_kwargs,
    make_optimizer,
    make_schedule,
    model_apply,
    model_init,
    train,
)
from rnncells.training import loop as loop_lib
from rnncells.training.metrics import read_jsonl
from tests.conftest import assert_tree_allclose

ROOT = str(tests.ROOT)

# Its many train() calls compile the same few programs: each is compiled once.
pytestmark = pytest.mark.usefixtures("compilation_cache")


def tiny_config(**overrides):
    """Adding problem with T=5 and 4 hidden units: compiles and runs in a few seconds."""
    c = base_config()
    c.task.kwargs.T = 5
    c.model.hidden_size = 4
    c.optim.learning_rate = 1e-2
    c.batch_size = 16
    c.num_steps = 40
    c.num_seeds = 2
    c.log_every = 10
    c.eval_every = 20
    c.checkpoint_every = 20
    c.eval_batch_size = 32
    c.progress = False
    c.early_stop = False
    for key, value in overrides.items():
        target = c
        *parents, leaf = key.split(".")
        for p in parents:
            target = target[p]
        target[leaf] = value
    return c


@pytest.fixture(scope="module")
def two_seeds():
    """A built tiny setup with two seeds (seed 3 and 4), shared to compile only once."""
    return build(tiny_config(seed=3, num_seeds=2))


def test_loss_falls_and_train_chunk_compiles_once(two_seeds):
    state = two_seeds.init_state()
    state, metrics = two_seeds.train_chunk(state)  # first call traces and compiles
    losses = [float(np.mean(metrics["loss"]))]
    compiles = []

    def listener(event, duration, **kwargs):
        if event == dispatch.BACKEND_COMPILE_EVENT:
            compiles.append(event)

    monitoring.register_event_duration_secs_listener(listener)
    try:
        for _ in range(5):
            state, metrics = two_seeds.train_chunk(state)
            losses.append(float(np.mean(metrics["loss"])))
    finally:
        monitoring.unregister_event_duration_listener(listener)
    assert compiles == []
    assert losses[-1] < 0.5 * losses[0], losses
    assert np.all(np.asarray(state.step) == 60)


@pytest.fixture(scope="module")
def two_seeds_two_chunks(two_seeds):
    """Params and metrics of the two-seed setup after two chunks (20 steps)."""
    state = two_seeds.init_state()
    for _ in range(2):
        state, metrics = two_seeds.train_chunk(state)
    return state.params, metrics


def test_vmap_over_seeds_equals_separate_runs(two_seeds_two_chunks):
    params, metrics = two_seeds_two_chunks
    one = build(tiny_config(seed=4, num_seeds=1))  # the second seed, run on its own
    single = one.init_state()
    for _ in range(2):
        single, single_metrics = one.train_chunk(single)
    assert_tree_allclose(
        jax.tree.map(lambda x: x[1], params),
        jax.tree.map(lambda x: x[0], single.params),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(metrics["loss"][:, 1], single_metrics["loss"][:, 0], rtol=1e-5)


def test_the_seed_loops_agree_and_auto_maps_on_one_cpu(two_seeds, two_seeds_two_chunks):
    """seed_loop "map" (lax.map, the default on one CPU device) and "vmap" train the same
    seeds to the same values up to rounding."""
    from rnncells.training import make_mesh

    one_cpu = make_mesh(jax.devices()[:1])
    assert loop_lib.seed_loop(tiny_config(), one_cpu) == "map"
    assert loop_lib.seed_loop(tiny_config(seed_loop="vmap"), one_cpu) == "vmap"
    params, metrics = two_seeds_two_chunks  # "auto": map
    batched = build(tiny_config(seed=3, num_seeds=2, seed_loop="vmap"))
    state = batched.init_state()
    for _ in range(2):
        state, vmap_metrics = batched.train_chunk(state)
    assert_tree_allclose(state.params, params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vmap_metrics["loss"], metrics["loss"], rtol=1e-5)
    np.testing.assert_allclose(
        batched.evaluate(state.params)["loss"], two_seeds.evaluate(params)["loss"], rtol=1e-5
    )


SHARDED_SCRIPT = textwrap.dedent(
    """
    import os, sys, json
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax, numpy as np
    sys.path.insert(0, {root!r})
    from tests.training.test_training import tiny_config  # also applies the tests' jax settings
    from rnncells.training import build, make_mesh
    assert len(jax.devices()) == 4, jax.devices()
    setup = build(tiny_config(seed=3, num_seeds=2), mesh=make_mesh(jax.devices()))
    state = setup.init_state()
    for _ in range(2):
        state, metrics = setup.train_chunk(state)
    print(json.dumps({{
        "params": [np.asarray(x).tolist() for x in jax.tree.leaves(state.params)],
        "param_devices": len(state.params.W_out.sharding.device_set),
        "loss": np.asarray(metrics["loss"]).tolist(),
    }}))
    """
)


def test_four_device_sharding_matches_one_device(tmp_path, two_seeds_two_chunks):
    """The batch split over 4 host CPU devices gives the one-device result."""
    script = tmp_path / "sharded.py"
    script.write_text(SHARDED_SCRIPT.format(root=ROOT))
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["param_devices"] == 4
    params, metrics = two_seeds_two_chunks
    for a, b in zip(out["params"], jax.tree.leaves(params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["loss"], metrics["loss"], rtol=1e-4)


def _poisoned_get_task(name, **kwargs):
    """The real task, but about one batch in eight has a NaN input (chosen by its key)."""
    task = loop_lib.get_task.__wrapped__(name, **kwargs)

    def make_batch(key, batch_size):
        batch = task.make_batch(key, batch_size)
        poison = jax.random.uniform(jax.random.fold_in(key, 7), (), jnp.float32) < 0.125
        inputs = jnp.where(poison, jnp.full_like(batch.inputs, jnp.nan), batch.inputs)
        return batch._replace(inputs=inputs)

    return dataclasses.replace(task, make_batch=make_batch)


def test_a_log_gets_progress_lines_where_a_terminal_gets_a_bar(tmp_path, monkeypatch, capsys):
    """Under pytest stderr is not a terminal, as in a log file: progress is lines, one at
    the start and one per chunk here (the interval set to 0), each with the step and loss."""
    monkeypatch.setattr(loop_lib, "PROGRESS_LINE_S", 0.0)
    train(tiny_config(progress=True, num_steps=20), str(tmp_path / "run"))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("adding")]
    assert lines[0] == "adding lstm: starting at step 0 of 20 (the first chunk compiles)"
    assert [line.split(",")[0] for line in lines[1:]] == [
        "adding lstm: step 10 of 20",
        "adding lstm: step 20 of 20",
    ]
    assert all(re.search(r", loss \d+\.\d{4}$", line) for line in lines[1:])
    train(tiny_config(progress=True, num_steps=40), str(tmp_path / "run"))
    err = capsys.readouterr().err
    assert "adding lstm: resuming at step 20 of 40 (the first chunk compiles)" in err


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real = loop_lib.get_task
    _poisoned_get_task.__wrapped__ = real
    monkeypatch.setattr(loop_lib, "get_task", _poisoned_get_task)
    # eval_every = num_steps: no evaluation is compiled before the NaN stops the run.
    config = tiny_config(
        num_seeds=1, num_steps=400, log_every=2, eval_every=400, checkpoint_every=2
    )
    with pytest.raises(
        NonFiniteLossError,
        match=r"loss became nan at step (\d+).*kept the last "
        r"good checkpoint step (\d+)",
    ) as info:
        train(config, str(tmp_path))
    bad, kept = map(int, re.search(r"step (\d+).*step (\d+)", str(info.value)).groups())
    assert kept < bad
    ckpts = sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit())
    assert ckpts[-1] == kept
    restored = ocp.StandardCheckpointer().restore(
        str(tmp_path / "checkpoints" / str(kept) / "default")
    )
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(restored["params"]))
    assert not os.path.exists(tmp_path / "summary.json")


def _nan_update_at(step):
    """An Optax transform that turns the update of optimiser step ``step`` (1-based) into NaN."""

    def update(updates, count, params=None):
        del params
        scale = jnp.where(count == step - 1, jnp.nan, 1.0).astype(jnp.float32)
        return jax.tree.map(lambda u: u * scale, updates), count + 1

    return optax.GradientTransformation(lambda params: jnp.zeros((), jnp.int32), update)


def test_state_blown_up_in_the_last_step_of_a_chunk_is_not_saved(tmp_path, monkeypatch):
    # Step 10 ends a chunk and is a checkpoint step; its loss is finite (computed before the
    # update) but its update makes the params NaN. Nothing non-finite may be saved, and the
    # message may not claim a checkpoint that does not exist.
    real = loop_lib.make_optimizer
    monkeypatch.setattr(
        loop_lib,
        "make_optimizer",
        lambda *args, **kwargs: optax.chain(_nan_update_at(10), real(*args, **kwargs)),
    )
    config = tiny_config(num_seeds=1, num_steps=40, log_every=10, checkpoint_every=10)
    with pytest.raises(NonFiniteLossError, match=r"step 10\b.*no checkpoint was saved yet"):
        train(config, str(tmp_path))
    assert not [d for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()]
    assert not os.path.exists(tmp_path / "summary.json")


def _nan_eval_get_task(name, **kwargs):
    """The real task, but the evaluation batch (size 32; training uses 16) is all NaN."""
    task = loop_lib.get_task.__wrapped__(name, **kwargs)

    def make_batch(key, batch_size):
        batch = task.make_batch(key, batch_size)
        if batch_size == 32:
            batch = batch._replace(inputs=jnp.full_like(batch.inputs, jnp.nan))
        return batch

    return dataclasses.replace(task, make_batch=make_batch)


def test_nonfinite_eval_metric_stops_the_run(tmp_path, monkeypatch):
    _nan_eval_get_task.__wrapped__ = loop_lib.get_task
    monkeypatch.setattr(loop_lib, "get_task", _nan_eval_get_task)
    config = tiny_config(num_seeds=1, eval_batch_size=32, checkpoint_every=10)
    with pytest.raises(
        NonFiniteLossError,
        match=r"held-out loss became nan at step 20 .*checkpoint step 10 ",
    ):
        train(config, str(tmp_path))
    assert sorted(d for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()) == ["10"]
    assert not os.path.exists(tmp_path / "summary.json")


def test_model_shapes_and_inits(key):
    @jax.jit
    def forward(key):  # one compiled program instead of many eager ops
        params = model_init(
            key,
            cell="lstm",
            input_size=10,
            output_size=10,
            hidden_size=5,
            vocab_size=10,
            embedding="learned",
            embed_size=4,
            init="chrono",
            chrono_t_max=30.0,
        )
        return params, model_apply(params, jnp.zeros((3, 7), jnp.int32), vocab_size=10)

    params, ys = forward(key)
    assert ys.shape == (3, 7, 10)
    b_i, b_f = np.asarray(params.layers[0].b[:5]), np.asarray(params.layers[0].b[5:10])
    # Chrono: b_f ~ log U[1, T_max - 1] per unit and b_i = -b_f (the other inits give a
    # constant b_f and b_i = 0).
    assert np.all((b_f >= 0) & (b_f <= np.log(29.0) + 1e-6))
    assert np.ptp(b_f) > 0.1
    np.testing.assert_array_equal(b_i, -b_f)
    assert cell_init_kwargs("gru_reset_after", "default") == {"reset_after": True}
    with pytest.raises(ValueError, match="cell must be one of"):
        cell_init_kwargs("transformer", "default")
    with pytest.raises(ValueError, match="init='chrono' needs a gated cell"):
        cell_init_kwargs("rnn", "chrono", chrono_t_max=10.0)


def test_optimizer_and_schedule_errors():
    sched = make_schedule("warmup_cosine", 1e-2, 100, warmup_steps=10)
    assert float(sched(10)) == pytest.approx(1e-2)
    assert float(make_schedule("cosine", 1e-2, 100)(100)) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="schedule must be one of"):
        make_schedule("step", 1e-2, 100)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        make_optimizer("lamb", sched)
    with pytest.raises(ValueError, match="clip_norm must be >= 0"):
        make_optimizer("adam", sched, clip_norm=-1.0)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_is_optax_sgd_after_clipping(momentum):
    params = {"w": jnp.array([1.0, -2.0]), "v": jnp.array([[0.5]])}
    grads = {"w": jnp.array([3.0, 4.0]), "v": jnp.array([[0.0]])}  # global norm 5
    ours = make_optimizer(
        "sgd", make_schedule("constant", 0.1, 10), clip_norm=1.0, momentum=momentum
    )
    theirs = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1, momentum=momentum or None))
    state_a, state_b = ours.init(params), theirs.init(params)
    for _ in range(3):  # momentum shows from the second step on
        update_a, state_a = ours.update(grads, state_a, params)
        update_b, state_b = theirs.update(grads, state_b, params)
        assert_tree_allclose(update_a, update_b, rtol=0, atol=0)
    np.testing.assert_allclose(
        update_a["w"], -0.1 * np.array([0.6, 0.8]) * (1 + 0.9 + 0.81 if momentum else 1), rtol=1e-6
    )
    with pytest.raises(ValueError, match=r"config.optim.momentum must be a number in \[0, 1\)"):
        build(tiny_config(**{"optim.optimizer": "sgd", "optim.momentum": 1.0}))


def test_config_values_are_checked():
    with pytest.raises(ValueError, match="config.checkpoint_every must be a multiple"):
        build(tiny_config(checkpoint_every=15))
    with pytest.raises(ValueError, match="config.num_seeds must be a positive integer"):
        build(tiny_config(num_seeds=0))
    with pytest.raises(ValueError, match="config.batch_size must be a positive integer"):
        build(tiny_config(batch_size=0))
    with pytest.raises(ValueError, match="init must be one of"):
        build(tiny_config(**{"model.init": "xavier"}))


@pytest.mark.parametrize(
    "key, value, expected",
    [
        (
            "seed",
            -1,
            r"config.seed must be an integer in \[0, 2147483646\] \(num_seeds=2\), got -1",
        ),
        ("seed", 2**31, r"config.seed must be an integer in \[0, 2147483646\]"),
        ("optim.learning_rate", float("inf"), r"config.optim.learning_rate must be a finite"),
        ("optim.learning_rate", float("nan"), r"config.optim.learning_rate must be a finite"),
        ("optim.learning_rate", 0.0, r"config.optim.learning_rate must be a finite number > 0"),
        ("optim.clip_norm", float("inf"), r"config.optim.clip_norm must be a finite number >= 0"),
        ("optim.rmsprop_decay", 1.0, r"config.optim.rmsprop_decay must be a number in \[0, 1\)"),
        ("optim.warmup_steps", -1, r"config.optim.warmup_steps must be an integer >= 0"),
        (
            "optim.optimizer",
            "lamb",
            r"config.optim.optimizer must be one of \['adam', 'rmsprop', 'sgd'\]",
        ),
        ("optim.momentum", -0.1, r"config.optim.momentum must be a number in \[0, 1\)"),
        ("optim.schedule", "step", r"config.optim.schedule must be one of"),
        (
            "model.cell",
            "foo",
            # every registered cell, the seed's four first
            r"config.model.cell must be one of "
            r"\['rnn', 'gru', 'gru_reset_after', 'lstm'(, '\w+')*\], got 'foo'",
        ),
        ("model.hidden_size", 0, r"config.model.hidden_size must be a positive integer"),
        ("model.num_layers", 0, r"config.model.num_layers must be a positive integer"),
        ("model.forget_bias", float("nan"), r"config.model.forget_bias must be a finite number"),
        ("model.chrono_t_max", -1.0, r"config.model.chrono_t_max must be a finite number >= 0"),
        ("model.unroll", -1, r"config.model.unroll must be an integer >= 0"),
        ("model.embedding", "bag", r"config.model.embedding must be one of"),
        ("task.name", "sorting", r"config.task.name must be one of"),
        ("task.kwargs.T", 1, r"config.task.kwargs: T must be"),
        ("time_limit_s", float("nan"), r"config.time_limit_s must be a finite number >= 0"),
        ("time_limit_s", float("inf"), r"config.time_limit_s must be a finite number >= 0"),
        ("model.hidden_sise", 3, r"config.model.hidden_sise is not a key of the training config"),
        ("seed_loop", "pmap", r"config.seed_loop must be one of \['auto', 'vmap', 'map'\]"),
    ],
)
def test_every_config_value_is_validated(key, value, expected):
    with pytest.raises(ConfigError, match=expected):
        build(tiny_config(**{key: value}))


def test_a_bad_config_leaves_no_workdir_behind(tmp_path):
    workdir = tmp_path / "new"
    with pytest.raises(ConfigError, match=r"config.model.cell must be one of"):
        train(tiny_config(**{"model.cell": "foo"}), str(workdir))
    assert not os.path.exists(workdir)


def test_time_limit_stops_checkpointed_and_the_same_call_resumes(tmp_path):
    limited, straight = str(tmp_path / "limited"), str(tmp_path / "straight")
    # A limit shorter than one chunk: the run stops after its first chunk of 10 steps.
    first = train(tiny_config(time_limit_s=1e-9), limited)
    assert first["steps_run"] == 10
    assert first["stopped_at_time_limit"] and not first["finished"]
    assert sorted(os.listdir(os.path.join(limited, "checkpoints"))) == ["10"]
    evals = read_jsonl(os.path.join(limited, "eval.jsonl"))
    assert [e["step"] for e in evals] == [10]  # evaluated where it stopped
    # The same call without a limit resumes from step 10 and ends like an uninterrupted run.
    resumed = train(tiny_config(), limited)
    assert resumed["steps_run"] == 40 and resumed["finished"]
    assert not resumed["stopped_at_time_limit"]
    reference = train(tiny_config(), straight)
    assert resumed["eval"] == reference["eval"]
    with pytest.raises(
        ValueError, match=r"time_limit_s must be a finite number >= 0 \(0: no limit\), got -1.0"
    ):
        train(tiny_config(time_limit_s=-1.0), str(tmp_path / "bad"))


EARLY = dict(
    early_stop=True,
    num_steps=400,
    eval_every=100,
    checkpoint_every=100,
    log_every=50,
    **{"model.hidden_size": 16},
)


@pytest.fixture(scope="module")
def early_stopped(tmp_path_factory):
    """An uninterrupted run that every seed solves at step 200 of 400 (evaluated every 100)."""
    workdir = str(tmp_path_factory.mktemp("early"))
    summary = train(tiny_config(**EARLY), workdir)
    assert summary["stopped_early"] and summary["steps_run"] == 200 and summary["finished"]
    return workdir, summary


def test_time_limited_calls_stop_early_where_an_uninterrupted_run_does(tmp_path, early_stopped):
    # A limit shorter than a chunk stops every call after one chunk of 50 steps, where the
    # run is evaluated too; only the scheduled evaluations (100, 200) may stop it early.
    straight_dir, straight = early_stopped
    workdir = str(tmp_path / "limited")
    for _ in range(4):
        summary = train(tiny_config(time_limit_s=1e-9, **EARLY), workdir)
    assert summary["stopped_early"] and summary["finished"]
    assert not summary["stopped_at_time_limit"]
    assert summary["steps_run"] == 200 and summary["eval"] == straight["eval"]
    assert_tree_allclose(
        loop_lib.final_params(tiny_config(**EARLY), workdir),
        loop_lib.final_params(tiny_config(**EARLY), straight_dir),
        rtol=0,
        atol=0,
    )
    assert train(tiny_config(**EARLY), workdir)["steps_run"] == 200  # finished: no more steps


def test_killed_after_the_early_stop_checkpoint_does_not_train_on(tmp_path, early_stopped):
    # Killed after the final checkpoint, before summary.json: the restart re-evaluates the
    # restored params at their scheduled evaluation and stops there again.
    straight_dir, straight = early_stopped
    workdir = str(tmp_path / "killed")
    shutil.copytree(straight_dir, workdir)
    os.remove(os.path.join(workdir, "summary.json"))
    summary = train(tiny_config(**EARLY), workdir)
    assert summary["stopped_early"] and summary["steps_run"] == 200
    assert summary["eval"] == straight["eval"]
    assert [r["step"] for r in read_jsonl(os.path.join(workdir, "eval.jsonl"))] == [100, 200]


def test_torn_metrics_line_of_a_killed_run_is_dropped_on_resume(tmp_path):
    limited, straight = str(tmp_path / "limited"), str(tmp_path / "straight")
    train(tiny_config(time_limit_s=1e-9), limited)  # stops after 10 steps, checkpointed
    path = os.path.join(limited, "metrics.jsonl")
    with open(path, "a", encoding="utf-8") as file:
        file.write('{"step": 11, "loss": 0.')  # a record cut short by a kill
    assert [r["step"] for r in read_jsonl(path)] == list(range(1, 11))
    train(tiny_config(), limited)
    train(tiny_config(), straight)
    timeless = lambda records: [  # noqa: E731
        {k: v for k, v in r.items() if k != "steps_per_sec"} for r in records
    ]
    expected = timeless(read_jsonl(os.path.join(straight, "metrics.jsonl")))
    assert timeless(read_jsonl(path)) == expected and len(expected) == 40
    assert not os.path.exists(path + ".tmp")


def test_num_steps_changes_only_under_the_constant_schedule(tmp_path):
    train(tiny_config(num_steps=20, **{"optim.schedule": "cosine"}), str(tmp_path / "cos"))
    with pytest.raises(ValueError, match=r"num_steps: saved 20, now 40\).*optim.schedule='con"):
        train(tiny_config(num_steps=40, **{"optim.schedule": "cosine"}), str(tmp_path / "cos"))
    train(tiny_config(num_steps=20, **{"optim.schedule": "constant"}), str(tmp_path / "const"))
    resumed = train(
        tiny_config(num_steps=40, **{"optim.schedule": "constant"}), str(tmp_path / "const")
    )
    straight = train(
        tiny_config(num_steps=40, **{"optim.schedule": "constant"}), str(tmp_path / "s")
    )
    assert resumed["steps_run"] == 40 and resumed["eval"] == straight["eval"]


def test_a_run_saved_before_a_key_was_added_resumes_at_its_standing_value(tmp_path):
    """A config.json that lacks a key added since (optim.momentum, 0.0 standing for it)
    resumes under the default; a value other than the standing one is still refused."""
    workdir = str(tmp_path / "old")
    train(tiny_config(num_steps=20, **{"optim.schedule": "constant"}), workdir)
    path = os.path.join(workdir, loop_lib.CONFIG_FILE)
    with open(path) as f:
        saved = json.load(f)
    del saved["optim"]["momentum"]
    with open(path, "w") as f:
        json.dump(saved, f)
    with pytest.raises(ValueError, match=r"optim.momentum: saved None, now 0.5"):
        train(
            tiny_config(num_steps=40, **{"optim.schedule": "constant", "optim.momentum": 0.5}),
            workdir,
        )
    resumed = train(tiny_config(num_steps=40, **{"optim.schedule": "constant"}), workdir)
    assert resumed["steps_run"] == 40
