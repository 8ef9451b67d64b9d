#!/usr/bin/env bash
# Compile every csrc/cuda/*.cu file (compile only: no GPU needed, no linking) against the
# installed torch headers, with the flags setup.py and torch.utils.cpp_extension use, and
# summarise ptxas's -v report: registers, spills, stack and static shared memory per kernel
# and arch, in the table bench/bench_compile.py gives for the Triton kernels.
# Exits non-zero if any file fails; a kernel that spills is named on stderr (csrc/ has
# its own owners: the Triton kernels' test is the one that fails on spills).
#   bash bench/compile_cuda.sh            # all files
#   ARCHS="80 90" bash bench/compile_cuda.sh
set -euo pipefail
cd "$(dirname "$0")/.."

NVCC=${NVCC:-nvcc}
PYTHON=${PYTHON:-python}
ARCHS=${ARCHS:-"80 90"}
command -v "$NVCC" >/dev/null || { echo "compile_cuda.sh: $NVCC not found" >&2; exit 1; }

# torch's include dirs and its C++ ABI flag, exactly as torch.utils.cpp_extension builds.
# A CPU-only torch wheel lacks the generated c10/cuda/impl/cuda_cmake_macros.h (it only
# defines C10_CUDA_BUILD_SHARED_LIBS, which matters on Windows), hence
# -DC10_CUDA_NO_CMAKE_CONFIGURE_FILE below; a CUDA wheel ships the file and ignores it.
mapfile -t TORCH_INFO < <("$PYTHON" - <<'PY'
import torch
import torch.utils.cpp_extension as ext
print(" ".join("-I" + p for p in ext.include_paths()))
print(int(torch._C._GLIBCXX_USE_CXX11_ABI))
PY
)
INCLUDES=${TORCH_INFO[0]}
ABI=${TORCH_INFO[1]}
CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$(command -v "$NVCC")")")}
[ -d "$CUDA_HOME/include" ] || CUDA_HOME=/usr/local/cuda

GENCODE=()
for a in $ARCHS; do GENCODE+=("-gencode=arch=compute_${a},code=sm_${a}"); done

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
shopt -s nullglob
files=(csrc/cuda/*.cu)
if [ ${#files[@]} -eq 0 ]; then echo "compile_cuda.sh: no csrc/cuda/*.cu files"; exit 0; fi

status=0
logs=()
for f in "${files[@]}"; do
  log="$OUT/$(basename "$f").log"
  logs+=("$log")
  # shellcheck disable=SC2086  # INCLUDES is a list of -I flags
  if "$NVCC" -c "$f" -o "$OUT/$(basename "$f").o" -std=c++17 -O3 --use_fast_math \
      $INCLUDES -I"$CUDA_HOME/include" \
      -D_GLIBCXX_USE_CXX11_ABI="$ABI" -DFASTDARTS_WITH_CUDA -DTORCH_EXTENSION_NAME=_C \
      -DTORCH_API_INCLUDE_EXTENSION_H -DC10_CUDA_NO_CMAKE_CONFIGURE_FILE \
      -D__CUDA_NO_HALF_CONVERSIONS__ -lineinfo \
      -D__CUDA_NO_HALF2_OPERATORS__ --expt-relaxed-constexpr --expt-extended-lambda \
      -Xcompiler -fPIC -Xptxas -v "${GENCODE[@]}" 2> "$log"; then
    echo "ok    $f"
  else
    echo "FAIL  $f" >&2
    status=1
  fi
  # everything but ptxas's per-kernel report (warnings, errors) still reaches stderr
  grep -Ev '^ptxas info|bytes stack frame' "$log" >&2 || true
done
echo
"$PYTHON" bench/bench_compile.py --summarize-ptxas "${logs[@]}"
exit $status
