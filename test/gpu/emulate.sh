#!/usr/bin/env bash
# No-GPU run of the parity rows of the CUDA twins whose kernels a CPU can execute (the dense
# stages, the flow stages, the descriptor and resize, the networks' layers): their sources are
# compiled as host C++ (test/gpu/emulate/: a stand-in cuda_runtime.h, launches rewritten into
# loops over blocks and threads, block-synchronised kernels as fibers, the _rn intrinsics as plain
# IEEE operations) and linked into the parity program, which then runs their rows of the table
# against the CPU twins as on a GPU. It checks the twins' logic, rounding order and the rows' tolerances; what only a
# GPU shows (concurrency, memory, the device's exp and sqrt) is for run.sh.
# Needs the core of a CUDA build (default build-test, from `node scripts/test-cpp.js --cuda=ON`):
# its cuda_info() asks cuda_probe(), which the stand-ins answer with an (emulated) device.
# Usage (repository root): bash test/gpu/emulate.sh
set -eu -o pipefail
cd "$(dirname "$0")/../.."
BUILD="${GOCOR_EMULATE_BUILD_DIR:-build-test}"
# The emulated sources, and the ops whose rows run: every twin whose kernels are plain C++ with
# CUDA's indices (correlation and GOCor use warp intrinsics and inline PTX: run.sh only).
SOURCES=(interpolate dis features flow nn)
OPS=(flow_interpolate flow_refine_dis image_resize features_compute flow_warp flow_resample
  flow_median3 flow_from_global_volume flow_from_local_volume flow_warp_image
  flow_refine_symmetric flow_volume_aggregate flow_consistency flow_texture_mask
  nn::conv2d nn::conv_transpose2d nn::leaky_relu nn::warp nn::resize_bilinear nn::resize_area
  nn::maxpool2 nn::l2norm_channels nn::mutual_matching nn::gocor_local_f64)
if [ ! -f "$BUILD/libgocor_cuda.a" ]; then
  echo "emulate.sh: $BUILD is not a CUDA build (no libgocor_cuda.a); run" \
    "GOCOR_CUDA_ARCHITECTURES=90-real node scripts/test-cpp.js --cuda=ON first" >&2
  exit 2
fi
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
PY="$(command -v /usr/bin/python3 || command -v python3)"
cp cuda/*.cuh "$TMP/"
"$PY" test/gpu/emulate/transform.py cuda/separable.cuh "$TMP/separable.cuh"
cu=() cpp=()
for f in "${SOURCES[@]}"; do
  cu+=("cuda/$f.cu") cpp+=("$TMP/$f.cpp")
  "$PY" test/gpu/emulate/transform.py "cuda/$f.cu" "$TMP/$f.cpp"
done
"$PY" test/gpu/emulate/stubs.py cuda/gocor_cuda.h cpp/core "$TMP/stubs.cpp" "${cu[@]}"
g++ -std=c++17 -O2 -ffp-contract=off -DGOCOR_WITH_CUDA=1 -I"$TMP" -Itest/gpu/emulate -Icuda \
  -Icpp/core -Itest/cpp "${cpp[@]}" "$TMP/stubs.cpp" \
  test/cpp/cuda_parity_main.cpp test/cpp/support/*.cpp "$BUILD/libgocor_core.a" -lpthread \
  -o "$TMP/parity"
status=0
for op in "${OPS[@]}"; do "$TMP/parity" --op "$op" | tee -a "$TMP/log" || status=1; done
echo "emulated parity, ${#OPS[@]} ops: $(grep -c '^PASS' "$TMP/log") passed," \
  "$(grep -c '^FAIL' "$TMP/log") failed"
exit $status
