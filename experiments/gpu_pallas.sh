#!/usr/bin/env bash
# Issue 14 on one GPU, in one run of at most about 11 minutes (one H100):
#
#     bash experiments/gpu_pallas.sh OUTDIR            # a machine with one GPU
#     QUICK=1 bash experiments/gpu_pallas.sh OUTDIR    # a dry run of every step on a CPU
#
# 1. Correctness on the GPU, the Pallas kernels compiled by Triton (not interpreted):
#    tests/engine/test_pallas.py in full (kernel="pallas" equals kernel="xla" in values and
#    gradients: LSTM, GRU, reset-after GRU; fp32, fp64 with lengths, reverse and NaN
#    padding, bf16 compute, several programs), and tests/engine/test_fused.py's GPU subset
#    (the fused layer against autodiff of the plain scan, check_grads, bf16).
# 2. The benchmark with today's code at the sizes of record (long, small, medium, large,
#    xl; LSTM and reset-after GRU): rc_xla (the fused layer's XLA scans at the GPU's
#    default unroll 8, what kernel=None runs today), rc_pallas (the Pallas kernels), both
#    again with compute_dtype=bfloat16, and PyTorch's cuDNN nn.LSTM / nn.GRU; fp32 at
#    full precision everywhere (JAX "highest", TF32 off in PyTorch); training step and
#    forward alone, medians; compile seconds of each training step (the GPU backend is
#    started before, by the GEMM probe). The Pallas kernels run only up to H = 128 (V up
#    to 256 KiB): at medium, large and xl they are skipped with that reason.
# 3. rc_xla and rc_pallas (and torch, for the ratio) again at long, small and medium with XLA's command buffers
#    (CUDA graphs) extended to while loops, the first of CMDBUF_FLAGS that XLA accepts.
# 2b. minGRU and minLSTM, the parallel scan against the sequential one
#    (bench_cells, B = 8, H = 128, T = 256/1024/4096), for their kernel=None on a GPU.
# 4. OUTDIR/summary.md: the targets of issue 14 met or missed (bench --targets) and the
#    rows for rnncells._engine.choice.KERNEL_FIGURES (bench --figures), for each run,
#    and the minGRU/minLSTM rows for PARALLEL_FIGURES (bench_cells --figures).
#
# Files in OUTDIR: gpu_info.txt, tests_pallas.txt, tests_fused.txt, bench_gpu.json / .md,
# bench_cmdbuf.json / .md, summary.md. Each step has its own time limit (seconds; the
# environment variables below override them), so a slow step leaves the others theirs.
set -u
OUT=${1:?usage: bash experiments/gpu_pallas.sh OUTDIR}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
QUICK=${QUICK:-0}
TESTS_PALLAS_S=${TESTS_PALLAS_S:-120}
TESTS_FUSED_S=${TESTS_FUSED_S:-75}
BENCH_S=${BENCH_S:-300}
CMDBUF_S=${CMDBUF_S:-90}
MIN_S=${MIN_S:-45}
SIZES=${SIZES:-long,small,medium,large,xl}
IMPLS=rc_xla,rc_pallas,rc_xla_bf16,rc_pallas_bf16,torch
# Tried in order; the first that XLA starts with is used (an unknown flag stops XLA).
CMDBUF_FLAGS=(
  "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL --xla_gpu_graph_min_graph_size=1"
  "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL"
  "--xla_gpu_enable_command_buffer=FUSION,CUSTOM_CALL,WHILE,CONDITIONAL"
)
BENCH_EXTRA=()
PYTEST_PALLAS=()
PYTEST_FUSED=(-k "equals_generic_scan or check_grads or bfloat16")
if [ "$QUICK" = 1 ]; then  # tiny sizes, 2 repetitions, the quick tests: the plumbing only
  BENCH_EXTRA=(--quick)
  PYTEST_PALLAS=(-k "errors or lower or figures or bench")
  PYTEST_FUSED=(-k "check_grads")
fi

echo "== 0. machine"
{
  date -u
  git log -1 --format='commit %H %cd' 2>/dev/null
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
  $PY -c "import jax; print('jax', jax.__version__, jax.default_backend(), jax.devices())"
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available(), 'cudnn', torch.backends.cudnn.version())"
} 2>&1 | tee "$OUT/gpu_info.txt"
BACKEND=$($PY -c "import jax; print(jax.default_backend())" 2>/dev/null)
if [ "$BACKEND" != gpu ] && [ "$QUICK" != 1 ]; then
  echo "JAX's backend is '$BACKEND', not gpu: stopping (QUICK=1 for a dry run on a CPU)"
  exit 2
fi

echo "== 1. correctness on the GPU"
timeout -k 5 "$TESTS_PALLAS_S" $PY -m pytest -q -p no:cacheprovider -rfEs --durations=5 \
  tests/engine/test_pallas.py "${PYTEST_PALLAS[@]}" 2>&1 | tail -n 40 | tee "$OUT/tests_pallas.txt"
timeout -k 5 "$TESTS_FUSED_S" $PY -m pytest -q -p no:cacheprovider -rfE \
  tests/engine/test_fused.py "${PYTEST_FUSED[@]}" 2>&1 | tail -n 15 | tee "$OUT/tests_fused.txt"

echo "== 2. benchmark: $SIZES"
# timeout signals its whole process group: the size's child process stops with it.
timeout -k 10 "$BENCH_S" $PY -m experiments.bench --sizes "$SIZES" --cells lstm,gru \
  --impls "$IMPLS" --size-timeout 150 "${BENCH_EXTRA[@]}" --out "$OUT/bench_gpu.json" \
  2>&1 | tee "$OUT/bench_gpu.md"

echo "== 2b. minGRU and minLSTM: parallel scan against the sequential one"
timeout -k 10 "$MIN_S" $PY -m experiments.bench_cells --cells mingru,minlstm \
  "${BENCH_EXTRA[@]}" --json "$OUT/bench_cells_gpu.json" 2>&1 | tee "$OUT/bench_cells_gpu.md"

echo "== 3. command buffers for loops"
PROBE='import jax, jax.numpy as jnp
f = jax.jit(lambda x: jax.lax.fori_loop(0, 4, lambda i, y: jnp.tanh(y) * 2.0, x))
print(f(jnp.ones(8)).block_until_ready()[0])'
CHOSEN=""
for flags in "${CMDBUF_FLAGS[@]}"; do
  if XLA_FLAGS="$flags" timeout -k 5 60 $PY -c "$PROBE" > /dev/null 2>&1; then
    CHOSEN=$flags
    break
  fi
  echo "XLA refused: $flags"
done
if [ -n "$CHOSEN" ]; then
  echo "XLA_FLAGS=$CHOSEN" | tee "$OUT/bench_cmdbuf.md"
  XLA_FLAGS="$CHOSEN" timeout -k 10 "$CMDBUF_S" $PY -m experiments.bench \
    --sizes long,small,medium --cells lstm,gru --impls rc_xla,rc_pallas,torch --size-timeout 60 \
    "${BENCH_EXTRA[@]}" --out "$OUT/bench_cmdbuf.json" 2>&1 | tee -a "$OUT/bench_cmdbuf.md"
else
  echo "no command-buffer flags accepted by this XLA" | tee "$OUT/bench_cmdbuf.md"
fi

echo "== 4. summary"
{
  GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
  echo "# Issue 14: ${GPU_NAME:-$BACKEND}, $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD 2>/dev/null)"
  echo
  echo "Command: bash experiments/gpu_pallas.sh OUTDIR (QUICK=$QUICK)"
  echo "tests/engine/test_pallas.py: $(tail -n 1 "$OUT/tests_pallas.txt")"
  echo "tests/engine/test_fused.py (GPU subset): $(tail -n 1 "$OUT/tests_fused.txt")"
  echo "Command buffers: ${CHOSEN:-none accepted}"
  for run in bench_gpu bench_cmdbuf; do
    [ -f "$OUT/$run.json" ] || continue
    echo
    echo "## $run: targets (fp32 against PyTorch cuDNN, TF32 off)"
    echo
    $PY -m experiments.bench --targets "$OUT/$run.json" 2>&1
    echo
    echo "## $run: rows for rnncells._engine.choice.KERNEL_FIGURES"
    echo
    echo '```python'
    $PY -m experiments.bench --figures "$OUT/$run.json" 2>&1
    echo '```'
  done
  if [ -f "$OUT/bench_cells_gpu.json" ]; then
    echo
    echo "## minGRU and minLSTM: rows for rnncells._engine.choice.PARALLEL_FIGURES"
    echo
    echo '```python'
    $PY -m experiments.bench_cells --figures "$OUT/bench_cells_gpu.json" 2>&1
    echo '```'
  fi
} > "$OUT/summary.md"
cat "$OUT/summary.md"
