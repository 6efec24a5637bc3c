#!/usr/bin/env bash
# The GPU figures in experiments/results/gpu/, from one run on a single-GPU machine:
#
#     bash experiments/gpu.sh OUTDIR [BENCH_SECONDS] [COPY_SECONDS]
#
# 1. a check that the library's jitted code is correct on the GPU (the fused layer
#    against autodiff of the plain scan in fp32 and fp64, bf16 compute);
# 2. the benchmark harness on the GPU: rnncells (fused; unroll 8; bf16 compute)
#    against PyTorch's cuDNN nn.LSTM / nn.GRU, JAX's cuDNN LSTM (jax.experimental.rnn),
#    Flax nn.RNN and Equinox, all in full fp32 (TF32 off), sizes of the CPU table plus xl;
#    JSON after every size;
# 3. copy memory at T=500 (Tallec & Ollivier's headline setting: LSTM, 128 units):
#    standard init (all biases 0) and chrono init trained side by side, two processes,
#    stopped after COPY_SECONDS; metrics and config of each run are kept.
#
# Each part has its own time limit, so a slow part leaves the others their time.
set -u
OUT=${1:?usage: bash experiments/gpu.sh OUTDIR [BENCH_SECONDS] [COPY_SECONDS]}
BENCH_S=${2:-230}
COPY_S=${3:-200}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $PY -c "import jax, torch, flax, equinox, optax; print('jax', jax.__version__, jax.devices()); print('torch', torch.__version__, torch.version.cuda, 'cudnn', torch.backends.cudnn.version()); print('flax', flax.__version__, 'equinox', equinox.__version__, 'optax', optax.__version__)"
} 2>&1 | tee "$OUT/gpu_info.txt"

echo "== 1. correctness on the GPU"
timeout -k 5 75 $PY -m pytest -q -p no:cacheprovider tests/engine/test_fused.py \
  -k "equals_generic_scan or check_grads or bfloat16" 2>&1 | tail -n 15 | tee "$OUT/gpu_tests.txt"

echo "== 2. benchmark"
timeout -k 5 "$BENCH_S" $PY -m experiments.bench --sizes small,medium,large,long,xl \
  --impls rnncells,rc_u8,rc_bf16,cudnn,torch,flax,eqx \
  --out "$OUT/bench_gpu.json" 2>&1 | tee "$OUT/bench_gpu.md"

pkill -f "experiments.bench --child" 2>/dev/null  # a size cut off by the limit

echo "== 3. copy T=500, standard vs chrono"
COMMON=(--config=configs/copy.py --config.task.kwargs.T=500 --config.model.hidden_size=128
  --config.model.unroll=8 --config.num_steps=100000 --config.log_every=100
  --config.eval_every=500 --config.checkpoint_every=1000 --config.progress=False
  --report=False)
export XLA_PYTHON_CLIENT_PREALLOCATE=false
timeout -k 15 -s INT "$COPY_S" $PY -m experiments.run "${COMMON[@]}" --workdir=/tmp/copy_T500_std \
  > "$OUT/copy_std.log" 2>&1 &
timeout -k 15 -s INT "$COPY_S" $PY -m experiments.run "${COMMON[@]}" --workdir=/tmp/copy_T500_chrono \
  --config.model.init=chrono > "$OUT/copy_chrono.log" 2>&1 &
wait
tar czf "$OUT/copy_T500.tgz" --exclude=checkpoints -C /tmp copy_T500_std copy_T500_chrono
tail -n 3 "$OUT"/copy_*.log
for run in std chrono; do
  echo "$run: $(grep -c . /tmp/copy_T500_$run/*.jsonl 2>/dev/null | tr '\n' ' ')"
done
