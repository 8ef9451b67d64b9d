#!/usr/bin/env bash
# One call on the GPU machine (device tool): build the CUDA extension, run the
# whole test suite on the GPU (GPU tests included), run the benchmarks, and
# leave logs + JSON + a short table under $OUT (bench/results/ locally).
#   device run: bash bench/gpu_check.sh            (about 6-9 minutes)
#   options:    QUICK=1 skips the benchmarks; NO_BUILD=1 reuses an in-place build
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/local}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
PY=${PY:-python3}

{
  echo "# fastdarts GPU check, $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
  $PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda)"
} | tee "$OUT/env.txt"

if [ "${NO_BUILD:-0}" != 1 ]; then
  start=$(date +%s)
  FORCE_CUDA=1 $PY setup.py build_ext --inplace >"$OUT/build.log" 2>&1 \
    && echo "build: ok in $(( $(date +%s) - start )) s" || { echo "build: FAILED (see build.log)"; tail -30 "$OUT/build.log"; }
fi
$PY -c "import fastdarts; print('backends on cuda:', fastdarts.available_backends('cuda'))" | tee -a "$OUT/env.txt"

# correctness first: the whole suite, on the GPU machine (GPU tests run here)
$PY -m pytest -q -p no:cacheprovider tests 2>&1 | tee "$OUT/tests.log" | tail -25

if [ "${QUICK:-0}" != 1 ]; then
  $PY bench/bench_mixed_sum.py --device cuda 2>&1 | tee "$OUT/bench_mixed_sum.txt" | tail -40
  $PY bench/bench_architect.py --device cuda --json "$OUT/bench_architect.json" 2>&1 \
    | tee "$OUT/bench_architect.txt" | tail -14
  if [ -f bench/bench_rnn_node.py ]; then
    $PY bench/bench_rnn_node.py --device cuda 2>&1 | tee "$OUT/bench_rnn_node.txt" | tail -20
  fi
fi
echo "results in $OUT"
