#!/usr/bin/env bash
# No-GPU check of the CUDA twins flow_interpolate_cuda and flow_refine_dis_cuda: their kernels are
# compiled as host C++ (test/gpu/emulate/: a stand-in cuda_runtime.h, launches rewritten into loops
# over blocks and threads) and compared with the CPU twins (emulate_main.cpp). It checks the
# twins' logic and rounding order; what only a GPU shows (concurrency, memory) is for run.sh.
# Needs the CPU core objects of a build (default build-test, from node scripts/test-cpp.js).
# Usage (repository root): bash test/gpu/emulate.sh
set -eu -o pipefail
cd "$(dirname "$0")/../.."
BUILD="${GOCOR_EMULATE_BUILD_DIR:-build-test}"
CORE="$BUILD/CMakeFiles/gocor_core.dir/cpp/core"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
PY="$(command -v /usr/bin/python3 || command -v python3)"
for f in cuda/*.cuh; do cp "$f" "$TMP/"; done
"$PY" test/gpu/emulate/transform.py cuda/separable.cuh "$TMP/separable.cuh"
for f in interpolate dis; do "$PY" test/gpu/emulate/transform.py "cuda/$f.cu" "$TMP/$f.cpp"; done
# The device is always there; error names (dispatch.cpp's, which needs the real backend) only
# appear in failure messages.
cat >"$TMP/probe.cpp" <<'CPP'
#include "cuda_util.cuh"
namespace gocor {
namespace cuda {
void require_device() {}
}  // namespace cuda
const char* error_code_name(ErrorCode) { return "ERR_GOCOR_(emulated)"; }
}  // namespace gocor
CPP
# Core objects the twins and the driver need (the CPU twins, threads, SIMD level, errors).
objs=()
for o in interpolate dis parallel correlation corr_portable corr_avx2 corr_avx512; do
  objs+=("$CORE/$o.cpp.o")
done
g++ -std=c++17 -O2 -ffp-contract=off -DGOCOR_WITH_CUDA=1 -I"$TMP" -Itest/gpu/emulate -Icuda \
  -Icpp/core -Itest/cpp "$TMP/interpolate.cpp" "$TMP/dis.cpp" "$TMP/probe.cpp" \
  test/gpu/emulate/emulate_main.cpp test/cpp/support/harness.cpp \
  test/cpp/support/test_data.cpp "${objs[@]}" -lpthread -o "$TMP/emulate"
"$TMP/emulate"
