"""The Pallas kernels (``unroll(..., kernel="pallas")``) equal the fused layer's XLA loops.

On a CPU the kernels run in Pallas's interpreter, with blocks of 2 batch rows, so the
batch of 3 spans two programs and a padded block; on a GPU they are compiled by Triton
(blocks of 16 rows), and H is 16, the least the GPU kernels take. Interpreted kernels are
slow to compile: shapes are tiny and each test compiles few layers.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnncells as rc
from rnncells import unrolling
from rnncells._engine import choice
from rnncells._engine import fused as _fused
from rnncells._engine import pallas as _pallas
from rnncells.layers import Bidirectional
from tests.conftest import assert_tree_allclose

KINDS = ("lstm", "gru", "gru_ra")
ON_GPU = jax.default_backend() == "gpu"
D, T, B = 3, 6, 3
H = 16 if ON_GPU else 8  # a GPU kernel needs H a power of two >= 16


def make_params(key, kind, dtype=jnp.float32, hidden=H):
    """Random params with distinct non-zero biases."""
    k_init, k_noise = jax.random.split(key)
    if kind == "lstm":
        params = rc.lstm_init(k_init, D, hidden, dtype=dtype)
    else:
        params = rc.gru_init(k_init, D, hidden, reset_after=kind == "gru_ra", dtype=dtype)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(k_noise, len(leaves))
    leaves = [
        x + 0.5 * jax.random.normal(k, x.shape, dtype) for x, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree.unflatten(tree, leaves)


def random_carry(key, params, batch, dtype):
    zero = rc.init_carry(params, (batch,))
    keys = jax.random.split(key, len(zero))
    return type(zero)(
        *(0.5 * jax.random.normal(k, z.shape, dtype) for k, z in zip(keys, zero, strict=True))
    )


def values_and_grads(params, xs, carry, **kwargs):
    """Outputs, final carry and the gradients of a loss of both w.r.t. params, xs, carry."""
    step = rc.step_for(params)

    def loss(params, xs, carry):
        final, ys = rc.unroll(step, params, xs, carry, **kwargs)
        weights = jnp.arange(ys.size, dtype=ys.dtype).reshape(ys.shape) / ys.size
        total = jnp.sum(jnp.sin(ys) * weights) + sum(jnp.sum(jnp.cos(c)) for c in final)
        return total, (final, ys)

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))
    (_, aux), grads = grad(params, xs, carry)
    return aux, grads


def both_kernels(key, kind, dtype=jnp.float32, batch=B, nan_from=None, **kwargs):
    """values_and_grads with kernel="pallas" and "xla"; xs is NaN from step ``nan_from`` of
    the second sequence on (padding, with lengths)."""
    k_p, k_x, k_c = jax.random.split(key, 3)
    params = make_params(k_p, kind, dtype)
    xs = jax.random.normal(k_x, (batch, T, D), dtype)
    if nan_from is not None:
        xs = xs.at[1, nan_from:].set(jnp.nan)
    carry = random_carry(k_c, params, batch, dtype)
    pallas = values_and_grads(params, xs, carry, kernel="pallas", **kwargs)
    xla = values_and_grads(params, xs, carry, kernel="xla", **kwargs)
    return pallas, xla


# fp32 without lengths; fp64 with lengths (one of them 0), reverse and NaN padding.
SETTINGS = {
    "fp32": dict(dtype=jnp.float32, tol=1e-5),
    "fp64-lengths-reverse": dict(
        dtype=jnp.float64, tol=1e-12, lengths=jnp.array([T, 0, 4]), reverse=True, nan_from=0
    ),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("setting", SETTINGS)
def test_pallas_equals_xla_in_values_and_gradients(key, kind, setting):
    kwargs = dict(SETTINGS[setting])
    tol = kwargs.pop("tol")
    pallas, xla = both_kernels(key, kind, **kwargs)
    assert jax.tree.leaves(pallas)[0].dtype == kwargs["dtype"]
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(pallas))  # padding is inert
    assert_tree_allclose(pallas, xla, rtol=tol, atol=tol)


def test_pallas_bfloat16_compute(key):
    """bf16 matmul inputs, fp32 accumulation, as the XLA layer; not the fp32 result."""
    lengths = jnp.array([T, 2, 5])
    pallas, xla = both_kernels(key, "lstm", lengths=lengths, compute_dtype=jnp.bfloat16)
    assert jax.tree.map(lambda x: x.dtype, pallas) == jax.tree.map(lambda x: x.dtype, xla)
    assert_tree_allclose(pallas, xla, rtol=2e-2, atol=2e-2)
    k_p, k_x, k_c = jax.random.split(key, 3)
    params = make_params(k_p, "lstm")
    xs = jax.random.normal(k_x, (B, T, D), jnp.float32)
    carry = random_carry(k_c, params, B, jnp.float32)
    full = rc.unroll(rc.lstm_step, params, xs, carry, lengths=lengths, kernel="xla")
    diffs = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), pallas[0], full)
    assert max(jax.tree.leaves(diffs)) > 1e-4  # the matmuls did run in bfloat16


@pytest.mark.skipif(not ON_GPU, reason="B = 3 spans two interpreted programs already")
def test_pallas_several_programs_on_the_gpu(key):
    batch = 2 * _pallas.GPU_BLOCK_B + 1
    lengths = jnp.arange(batch) % (T + 1)
    pallas, xla = both_kernels(key, "lstm", batch=batch, lengths=lengths)
    assert_tree_allclose(pallas, xla, rtol=1e-5, atol=1e-5)


def test_stack_bidirectional_and_modules_pass_kernel_through(key, monkeypatch):
    """Traced only (no compile): every layer reaches the forward kernel."""
    calls = []
    forward = _pallas.forward
    monkeypatch.setattr(_pallas, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    xs = jnp.ones((B, T, D), jnp.float32)
    layers = rc.stack_init(key, "gru", D, H, num_layers=2, bidirectional=True)
    jax.eval_shape(lambda x: rc.stack_unroll(layers, x, kernel="pallas"), xs)
    assert len(calls) == 4
    pair = Bidirectional(*layers[0])
    jax.eval_shape(lambda x: rc.bidirectional_unroll(None, pair, x, kernel="pallas"), xs)
    assert len(calls) == 6
    nnx = pytest.importorskip("flax.nnx")
    rc_nnx = pytest.importorskip("rnncells.nnx")
    layer = rc_nnx.LSTM(D, H, num_layers=2, kernel="pallas", rngs=nnx.Rngs(0))
    jax.eval_shape(layer, xs)
    assert len(calls) == 8
    linen = pytest.importorskip("rnncells.linen")
    module = linen.GRU(H, reset_after=True, kernel="pallas")
    variables = jax.eval_shape(module.init, key, xs)
    jax.eval_shape(module.apply, variables, xs)
    assert len(calls) == 10


def test_kernel_none_is_xla_without_gpu_figures(key, monkeypatch):
    params = make_params(key, "lstm")
    assert choice.KERNEL_FIGURES == ()  # no GPU has measured the kernels yet
    for backend in ("cpu", "gpu", "tpu"):
        assert unrolling.default_kernel(params, 8, 2048, backend=backend) == "xla"
    # With figures, the nearest measured shape of the same backend and cell decides.
    row = choice.KernelFigure("cpu", "test", "lstm", 8, 2048, H, None, 2.0, 1.0)
    slower = row._replace(batch=256, steps=256, xla_ms=1.0, pallas_ms=2.0)
    monkeypatch.setattr(choice, "KERNEL_FIGURES", (row, slower))
    assert unrolling.default_kernel(params, 4, 1000, backend="cpu") == "pallas"
    assert unrolling.default_kernel(params, 200, 300, backend="cpu") == "xla"
    assert unrolling.default_kernel(params, 4, 1000, jnp.bfloat16, backend="cpu") == "xla"
    assert unrolling.default_kernel(make_params(key, "gru"), 4, 1000, backend="cpu") == "xla"
    calls = []
    forward = _pallas.forward
    monkeypatch.setattr(_pallas, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    xs = jnp.ones((4, 1000, D), jnp.float32)
    jax.eval_shape(lambda x: rc.unroll(rc.lstm_step, params, x), xs)  # kernel=None
    assert len(calls) == int(jax.default_backend() == "cpu")


def test_gpu_limits_and_the_fallback_with_a_warning(key, monkeypatch):
    lstm = make_params(key, "lstm", hidden=16)

    def pallas_reason(params, cd=None, backend=None):
        return rc.kernel_support(params, cd, backend)["pallas"]

    assert pallas_reason(lstm, None, "cpu") is None  # interpreted: any shape
    assert pallas_reason(lstm, None, "gpu") is None
    assert "power of two" in pallas_reason(make_params(key, "lstm", hidden=24), None, "gpu")
    assert "power of two" in pallas_reason(make_params(key, "gru", hidden=8), None, "gpu")
    big = jax.eval_shape(lambda: rc.lstm_init(key, 8, 256))
    assert "1024 KiB" in pallas_reason(big, None, "gpu")
    long = jax.eval_shape(lambda: rc.lstm_init(key, 8, 128))  # the long size: 256 KiB
    assert pallas_reason(long, None, "gpu") is None
    assert pallas_reason(long, jnp.bfloat16, "gpu") is None
    assert "GPUs" in pallas_reason(lstm, None, "tpu")
    rnn = rc.rnn_init(key, D, 16)
    assert rc.kernel_support(rnn, backend="gpu") == {
        "xla": None,
        "pallas": "RNNParams has no Pallas kernel",
    }
    ln_lstm = rc.stack_init(key, "ln_lstm", D, H)[0]  # a fused unit without kernels
    assert rc.kernel_support(ln_lstm) == {
        "xla": None,
        "pallas": "LNLSTMParams has no Pallas kernel",
    }
    mingru = rc.stack_init(key, "mingru", D, H)[0]
    assert all("has no fused layer" in why for why in rc.kernel_support(mingru).values())
    assert _pallas.options(long, None, "gpu") == _pallas.Options(False, 16, 16)
    assert _pallas.options(lstm, None, "cpu") == _pallas.Options(True, 2, 0)
    # kernel="pallas" where the kernels cannot run: the XLA layer, and a warning saying why.
    monkeypatch.setattr(_pallas, "unsupported", lambda *a: "a test's reason")
    xs = jnp.ones((B, T, D), jnp.float32)
    calls = []
    monkeypatch.setattr(_pallas, "forward", lambda *a, **k: calls.append(1))
    with pytest.warns(RuntimeWarning, match="a test's reason.*running kernel='xla'"):
        jax.eval_shape(lambda x: rc.unroll(rc.lstm_step, lstm, x, kernel="pallas"), xs)
    assert not calls


def test_kernel_errors(key):
    params = make_params(key, "gru")
    xs = jnp.ones((B, T, D), jnp.float32)
    for bad in ("cuda", "PALLAS", 1, True):
        with pytest.raises(
            ValueError,
            match=r"kernel must be None or one of 'xla', 'pallas', 'parallel', 'sequential', got",
        ):
            rc.unroll(rc.gru_step, params, xs, kernel=bad)
    with pytest.raises(ValueError, match="kernel must be"):
        rc.stack_unroll((params,), xs, kernel="triton")
    rnn = rc.rnn_init(key, D, H)
    with pytest.raises(ValueError, match=r"Pallas kernels \(lstm, gru, gru_reset_after\).*'rnn'"):
        rc.unroll(rc.rnn_step, rnn, xs, kernel="pallas")
    peephole = rc.stack_init(key, "peephole_lstm", D, H)[0]
    with pytest.raises(ValueError, match="'peephole_lstm' cell has none"):
        rc.unroll(rc.step_for(peephole), peephole, xs, kernel="pallas")
    user = lambda p, c, x: rc.gru_step(p, c, x)  # noqa: E731
    with pytest.raises(ValueError, match="not a registered cell's step"):
        rc.unroll(user, params, xs, rc.init_carry(params, (B,)), kernel="pallas")
    with pytest.raises(ValueError, match="no remat"):
        rc.unroll(rc.gru_step, params, xs, kernel="pallas", remat=True)
    with pytest.raises(ValueError, match="needs fused=True"):
        rc.unroll(rc.gru_step, params, xs, kernel="pallas", fused=False)
    nnx = pytest.importorskip("flax.nnx")
    rc_nnx = pytest.importorskip("rnncells.nnx")
    with pytest.raises(ValueError, match="kernel must be"):
        rc_nnx.GRU(D, H, kernel="fast", rngs=nnx.Rngs(0))
    # Cells without kernels still run with kernel None or "xla".
    for kernel in (None, "xla"):
        rc.unroll(rc.rnn_step, rnn, xs, kernel=kernel)


def test_block_units_write_what_the_fused_units_read():
    """The kernels' saved arrays and outputs carry the names the FusedCell parts use."""
    with_blocks = [rc.cell_spec_by_name(n) for n in rc.cell_names()]
    with_blocks = [spec for spec in with_blocks if spec.blocks is not None]
    assert [spec.name for spec in with_blocks] == ["lstm", "gru", "gru_reset_after"]
    for spec in with_blocks:
        blocks, unit = spec.blocks, spec.fused
        assert [name for name, _ in blocks.saved] == list(unit.saved)
        fields = unit.state._fields
        assert set(blocks.reads) <= {"h_prev"} | {f + "_prev" for f in fields[1:]}


@pytest.mark.parametrize("kind", KINDS)
def test_kernels_lower_to_triton_for_the_gpu(key, kind):
    """Without a GPU: the compiled kernels (forward and backward, with lengths, fp32 and
    bf16) lower to Triton IR for CUDA, which checks Triton's shape and op limits."""
    params = make_params(key, kind, hidden=16)
    xs = jax.ShapeDtypeStruct((T, B, D), jnp.float32)
    carry = rc.init_carry(params, (B,))
    lengths = jnp.array([T, 0, 4])
    for cd in (None, jnp.bfloat16):

        def loss(params, xs, carry, cd=cd):
            spec = rc.cell_spec(params)
            cfg = _fused.default_config(
                params,
                spec.fused,
                blocks=spec.blocks,
                masked=True,
                unroll=1,
                remat=False,
                compute_dtype=cd,
                kernel="pallas",
                backend="gpu",
            )
            final, ys = _fused.fused_scan(cfg.cell, params, carry, xs, lengths, config=cfg)
            return jnp.sum(ys) + sum(jnp.sum(c) for c in final)

        triton = jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")
        grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
        exported = jax.export.export(grad, platforms=("cuda",), disabled_checks=[triton])
        text = exported(params, xs, carry).mlir_module()
        assert text.count("__gpu$xla.gpu.triton") == 2  # the forward and backward kernels


def test_bench_records_skipped_and_failed_kernels_and_reports_targets(monkeypatch):
    """experiments.bench goes on past an implementation that cannot run or fails to build,
    and turns a run into issue 14's targets and KERNEL_FIGURES rows (no compile here)."""
    bench = pytest.importorskip("experiments.bench")

    def fails(*args):
        raise RuntimeError("the compiler refused the kernel")

    monkeypatch.setitem(bench.SIZES, "tiny", (2, 3, 4, 5))
    monkeypatch.setattr(bench, "gemm_rate", lambda: 1.0)
    monkeypatch.setitem(bench.BUILDERS, "rc_pallas", lambda *args: "V exceeds 256 KiB")
    monkeypatch.setitem(bench.BUILDERS, "rc_pallas_bf16", fails)
    monkeypatch.setitem(bench.BUILDERS, "torch", lambda *args: (lambda: None, lambda: None, None))
    result = bench.run_size("tiny", ["lstm"], ["rc_pallas", "rc_pallas_bf16", "torch"], reps=1)
    assert result["skipped"] == {"lstm": {"rc_pallas": "V exceeds 256 KiB"}}
    assert "the compiler refused" in result["errors"]["lstm"]["rc_pallas_bf16"]
    assert sorted(result["cells"]["lstm"]) == ["torch"]
    assert "skipped: rc_pallas: V exceeds 256 KiB" in bench.table(result)

    def row(train_ms, fwd_ms, compile_s=1.0):
        return {"train_s": train_ms / 1e3, "fwd_s": fwd_ms / 1e3, "compile_s": compile_s}

    cells = {
        "lstm": {
            "rc_xla": row(10, 4),
            "rc_pallas": row(5, 2, compile_s=6.0),
            "rc_xla_bf16": row(4, 2),
            "rc_pallas_bf16": row(3, 1),
            "torch": row(8, 3),
        }
    }
    run = {"results": [dict(size="large", B=8, T=2048, H=128, device="H100", cells=cells)]}
    (line,) = bench.targets_table(run).splitlines()[2:]
    assert line.startswith("| large | LSTM | 5.00 ms (rc_pallas) | 8.00 ms | 1.60x | >= 1.0x | yes")
    assert "| 1.67x (rc_pallas_bf16) | yes | 6.0 | no |" in line
    figures = bench.kernel_figures(run).splitlines()
    assert figures[0].strip() == (
        "KernelFigure('gpu', 'H100', 'lstm', 8, 2048, 128, None, 10.000, 5.000),"
    )
    assert figures[1].endswith("128, 'bfloat16', 4.000, 3.000),")
