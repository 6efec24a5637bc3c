#!/usr/bin/env bash
# The GPU rows of the science studies (experiments/science/studies.py, where="gpu": adding at
# T = 750 and 1000; every copy and variable-copy row; the ablation's copy rows), a
# slice at a time, resumable across machines:
#
#     bash experiments/gpu_science.sh OUTDIR [BUDGET_S]          # one GPU, default 360 s
#     QUICK=1 bash experiments/gpu_science.sh OUTDIR 60          # plumbing check on a CPU
#
# Rows run one after the other, 5 seeds each at once (vmap), until BUDGET_S seconds of
# training are spent; a row cut off by the budget stops at its last checkpoint. State
# travels in OUTDIR/science_state.tar.gz: the JSON of every finished row and the run
# folder of the row in progress (its checkpoints and logs, a few MiB). Unpack it in the
# repository root (it restores runs/science/ and experiments/results/science/) and
# carry runs/science to the next call, so that call goes on where this one stopped;
# finished rows are skipped. With the device tool of this project:
#     run(command='bash experiments/gpu_science.sh "$OUT" 360',
#         carry=["runs/science", ".whl"], timeout_s=600)
# (360 s of training, at most 150 s more for compiling and scoring, then the archive).
#
# The GPU image lacks ml_collections: carry its wheel in .whl/ (pure Python):
#     python -m pip download --no-deps -d .whl ml_collections
# and the script installs it into /tmp/site when it is missing.
#
# 53 rows: 12 adding (10,000 steps at most), 30 copy (20,000 steps, 128 units), 11
# ablation copy (10,000 steps, 64 units). Estimated from the T=500 copy figure of 57
# steps/s on an H100 (2 seeds) and ~30 ms per 5-seed adding step at T=1000: roughly 6
# to 8 hours of GPU time, so many calls; `python -m experiments.science --list
# --where=gpu` shows what is done.
set -u
OUT=${1:?usage: bash experiments/gpu_science.sh OUTDIR [BUDGET_S]}
BUDGET_S=${2:-360}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
QUICK=${QUICK:-0}

if ! $PY -c "import ml_collections" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || exit 2
  export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
{
  date -u
  git log -1 --format='commit %H %cd' 2>/dev/null
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>&1
  $PY -c "import jax; print('jax', jax.__version__, jax.default_backend(), jax.devices())"
} 2>&1 | tee "$OUT/gpu_info.txt"
BACKEND=$($PY -c "import jax; print(jax.default_backend())" 2>/dev/null)
if [ "$BACKEND" != gpu ] && [ "$QUICK" != 1 ]; then
  echo "JAX's backend is '$BACKEND', not gpu: stopping (QUICK=1 for a dry run on a CPU)"
  exit 2
fi

WHERE=(--where=gpu)
RESULTS=experiments/results/science
WORK=runs/science
if [ "$QUICK" = 1 ]; then  # a CPU: one small GPU row's plumbing, into scratch folders
  WHERE=(--only=adding_T750_gru)
  RESULTS=$OUT/quick_results
  WORK=$OUT/quick_runs
fi
set -o pipefail
# The budget counts training only; compiling and scoring a row come on top, so the
# python process gets BUDGET_S + 150 s before it is stopped (at its last checkpoint), and
# the archive below is written whatever happened.
timeout -k 10 $((BUDGET_S + 150)) $PY -m experiments.science "${WHERE[@]}" \
  --workdir="$WORK" --results="$RESULTS" --budget_s="$BUDGET_S" 2>&1 \
  | grep -v "^WARNING" | tee "$OUT/science_log.txt"
STATUS=$?

# Finished rows need only their JSON; the row in progress travels with its run folder.
UNFINISHED=()
for dir in "$WORK"/*/*/; do
  [ -d "$dir" ] || continue
  name=$(basename "$dir")
  study=$(basename "$(dirname "$dir")")
  [ -f "$RESULTS/$study/$name.json" ] || UNFINISHED+=("${dir%/}")
done
tar -czf "$OUT/science_state.tar.gz" "$RESULTS" "${UNFINISHED[@]}" 2>/dev/null
ls -la "$OUT"
exit $STATUS
