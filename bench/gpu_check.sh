#!/usr/bin/env bash
# The GPU check: everything fastdarts measures on a GPU, in two parts of about six
# minutes each (one command each, most important first), so that a short loan of a
# GPU machine gives the key figures even if only part 1 runs.
#
#   bash bench/gpu_check.sh 1   build the CUDA extension (in the background, into a
#                               temporary build dir) while the GPU tests run on the
#                               Triton/reference backends; then the GPU tests again
#                               with the CUDA backend, the Architect/search-step bench
#                               and the paper-shape CNN second-order search step,
#                               reference vs fused vs captured.
#   bash bench/gpu_check.sh 2   the rest: CNN first order, CNN second order with bf16 +
#                               channels_last (fused only), RNN first/second order on
#                               PTB-sized data, the mixed_sum and rnn_node kernel
#                               benches, memory at batch 64, training throughput, and
#                               the 1-rank overhead of the data-parallel path.  Part 2
#                               reuses part 1's build when the machine is still warm
#                               (NO_BUILD=1 skips the build; otherwise it rebuilds).
#
# Every step has its own timeout, so one slow step cannot eat the rest.  Results go
# to $OUT (default bench/results/local), with a short
# table at the end.  SMOKE=1 runs the same commands on the CPU at tiny sizes, to
# check the script itself without a GPU (CI-class machine: a few minutes).
set -uo pipefail
cd "$(dirname "$0")/.."
PART=${1:-1}
OUT=${OUT:-bench/results/local}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-12}
PY=${PY:-python3}
DATA=${DATA:-/tmp/fastdarts-fake-data}
SMOKE=${SMOKE:-0}
if [ "$SMOKE" = 1 ]; then
  DEV=cpu; unset TRITON_INTERPRET  # the interpreter would make --compare crawl
  CNN_SHAPE="--init_channels 2 --layers 3 --batch_size 8"; RNN_SHAPE="--emsize 16 --nhid 16 --nhidlast 16 --batch_size 8 --bptt 10"
  ARCH_SHAPE="--C 2 --layers 3 --batch 4 --hw 16 --reps 2"; ARCH_SHAPE_DP="--C 2 --layers 3 --batch 4 --hw 16 --rounds 2 --steps 1"; SMALL="--small"; IMGS=500; PTBS=0.02
  MEM_SHAPE="--C 2 --layers 3 --batch 2 --hw 16"; TRAIN_SHAPE="--batch 4 --C 4 --layers 3 --steps 1 --reps 1"
else
  DEV=cuda
  CNN_SHAPE="--init_channels 16 --layers 8 --batch_size 64"; RNN_SHAPE="--emsize 300 --nhid 300 --nhidlast 300 --batch_size 256 --bptt 35"
  ARCH_SHAPE=""; ARCH_SHAPE_DP=""; SMALL=""; IMGS=10000; PTBS=1.0
  MEM_SHAPE="--batch 64 --repeats 3 --modes shared checkpoint"; TRAIN_SHAPE=""
fi
SUMMARY="$OUT/summary_part$PART.txt"
: > "$SUMMARY"

step() {  # step NAME SECONDS CMD...: run with a timeout, log to $OUT/NAME.txt, record the outcome
  local name=$1 secs=$2; shift 2
  local t0=$(date +%s)
  timeout "$secs" "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  local what="ok"; [ $rc = 124 ] && what="TIMEOUT (${secs} s)"; [ $rc != 0 ] && [ $rc != 124 ] && what="FAILED rc=$rc"
  printf '%-28s %-18s %4d s\n' "$name" "$what" $(( $(date +%s) - t0 )) | tee -a "$SUMMARY"
  return 0
}

{
  echo "# fastdarts GPU check part $PART, $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
  $PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda)"
} | tee "$OUT/env_part$PART.txt"

[ -d "$DATA/cifar10" ] || $PY bench/make_fake_data.py "$DATA" --images-per-batch $IMGS --ptb-scale $PTBS >/dev/null

build_ext() {  # into a temporary dir, then copy the .so in: the running tests never see half a file
  local lib=/tmp/fastdarts-build
  rm -rf "$lib"
  FORCE_CUDA=1 $PY setup.py build_ext --build-lib "$lib" > "$OUT/build.txt" 2>&1 \
    && cp "$lib"/fastdarts/_C*.so fastdarts/ && echo ok > "$OUT/build.rc" || echo failed > "$OUT/build.rc"
}

PROFILE="$PY -m fastdarts profile"
if [ "$PART" = 1 ]; then
  if [ "${NO_BUILD:-0}" != 1 ] && [ "$SMOKE" != 1 ]; then
    t0=$(date +%s); build_ext & BUILD=$!
  fi
  # GPU tests while the extension compiles (correctness only: no timing overlaps the build)
  step tests_gpu_triton 240 $PY -m pytest -q -p no:cacheprovider -m gpu tests
  if [ -n "${BUILD:-}" ]; then
    wait $BUILD
    printf '%-28s %-18s %4d s\n' build "$(cat "$OUT/build.rc")" $(( $(date +%s) - t0 )) | tee -a "$SUMMARY"
    step tests_gpu_with_cuda 180 $PY -m pytest -q -p no:cacheprovider -m gpu tests
  fi
  $PY -c "import fastdarts; print('backends:', fastdarts.available_backends('$DEV'))" | tee -a "$SUMMARY"
  step bench_architect 200 $PY bench/bench_architect.py --device $DEV --fused-model $ARCH_SHAPE --json "$OUT/bench_architect.json"
  step profile_cnn_2nd 200 $PROFILE cnn --data "$DATA/cifar10" $CNN_SHAPE --unrolled --device $DEV \
    --compare --warmup 2 --steps 4 --json "$OUT/profile_cnn_2nd.json"
else
  if [ "${NO_BUILD:-0}" != 1 ] && [ "$SMOKE" != 1 ] && ! $PY -c "import fastdarts._ext as e, sys; sys.exit(0 if e.built_with_cuda() else 1)" 2>/dev/null; then
    t0=$(date +%s); build_ext
    printf '%-28s %-18s %4d s\n' build "$(cat "$OUT/build.rc")" $(( $(date +%s) - t0 )) | tee -a "$SUMMARY"
  fi
  step profile_cnn_1st 120 $PROFILE cnn --data "$DATA/cifar10" $CNN_SHAPE --device $DEV \
    --compare --warmup 2 --steps 4 --json "$OUT/profile_cnn_1st.json"
  step profile_cnn_2nd_bf16_cl 100 $PROFILE cnn --data "$DATA/cifar10" $CNN_SHAPE --unrolled --device $DEV \
    --amp bf16 --channels_last --warmup 2 --steps 4 --json "$OUT/profile_cnn_2nd_bf16_cl.json"
  step profile_rnn_2nd 150 $PROFILE rnn --data "$DATA/ptb" $RNN_SHAPE --unrolled --device $DEV \
    --compare --warmup 1 --steps 3 --json "$OUT/profile_rnn_2nd.json"
  step profile_rnn_1st 90 $PROFILE rnn --data "$DATA/ptb" $RNN_SHAPE --device $DEV \
    --compare --warmup 1 --steps 3 --json "$OUT/profile_rnn_1st.json"
  step bench_mixed_sum 60 $PY bench/bench_mixed_sum.py --device $DEV $SMALL
  step bench_rnn_node 60 $PY bench/bench_rnn_node.py --device $DEV $SMALL
  step bench_memory 60 $PY bench/bench_memory.py --device $DEV $MEM_SHAPE
  step bench_distributed 90 $PY bench/bench_distributed.py --device $DEV $ARCH_SHAPE_DP --unrolled
  step bench_train 90 $PY bench/bench_train.py --device $DEV $TRAIN_SHAPE --json "$OUT/bench_train.json"
fi

echo "== part $PART summary ($OUT) =="
cat "$SUMMARY"
for f in "$OUT"/bench_architect.txt "$OUT"/profile_*.txt; do
  [ -f "$f" ] && { echo "--- $(basename "$f")"; tail -25 "$f"; }
done
