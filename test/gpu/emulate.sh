#!/usr/bin/env bash
# No-GPU run of the parity rows of the CUDA twins flow_interpolate_cuda and flow_refine_dis_cuda:
# their kernels are compiled as host C++ (test/gpu/emulate/: a stand-in cuda_runtime.h, launches
# rewritten into loops over blocks and threads, the _rn intrinsics as plain IEEE operations) and
# linked into the parity program, which then runs their rows of the table against the CPU twins
# as on a GPU. It checks the twins' logic, rounding order and the rows' tolerances; what only a
# GPU shows (concurrency, memory, the device's exp) is for run.sh.
# Needs a built core (default build-test, from node scripts/test-cpp.js; a CUDA or a CPU build).
# Usage (repository root): bash test/gpu/emulate.sh
set -eu -o pipefail
cd "$(dirname "$0")/../.."
BUILD="${GOCOR_EMULATE_BUILD_DIR:-build-test}"
OPS=(flow_interpolate flow_refine_dis)
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
PY="$(command -v /usr/bin/python3 || command -v python3)"
cp cuda/*.cuh "$TMP/"
"$PY" test/gpu/emulate/transform.py cuda/separable.cuh "$TMP/separable.cuh"
for f in interpolate dis; do "$PY" test/gpu/emulate/transform.py "cuda/$f.cu" "$TMP/$f.cpp"; done
"$PY" test/gpu/emulate/stubs.py cuda/gocor_cuda.h "$TMP/stubs.cpp" "${OPS[@]}"
g++ -std=c++17 -O2 -ffp-contract=off -DGOCOR_WITH_CUDA=1 -I"$TMP" -Itest/gpu/emulate -Icuda \
  -Icpp/core -Itest/cpp "$TMP/interpolate.cpp" "$TMP/dis.cpp" "$TMP/stubs.cpp" \
  test/cpp/cuda_parity_main.cpp test/cpp/support/*.cpp "$BUILD/libgocor_core.a" -lpthread \
  -o "$TMP/parity"
status=0
for op in "${OPS[@]}"; do "$TMP/parity" --op "$op" || status=1; done
exit $status
