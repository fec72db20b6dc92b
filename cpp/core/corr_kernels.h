// Internal interface between the correlation drivers (correlation.cpp, baseline ISA) and the SIMD
// kernels (corr_avx512.cpp, corr_avx2.cpp, corr_portable.cpp). Each kernel file compiles one body,
// corr_kernels.inc, for its own instruction set; the drivers pick one table at run time.
#pragma once

#include <cstdint>

namespace gocor {
namespace corr_detail {

enum class Simd { Portable = 0, Avx2 = 1, Avx512 = 2 };

// Best level this CPU supports, capped by the environment variable GOCOR_SIMD (read once).
Simd simd_detected();
// The level the kernels take now: simd_detected(), or a lower level forced by simd_force().
Simd simd_active();
// Tests use this to run every path on one machine. A level above simd_detected() is capped to it.
void simd_force(Simd level);
void simd_unforce();

// Arguments of the local correlation kernels for one batch element, read in place:
// ref and query (C, H, W).
struct LocalArgs {
  const float* ref;
  const float* query;
  int C, H, W, R;
};

struct Kernels {
  // C (m x n, row stride ldc) = or += A_panel (kc x MR, k-major, row stride lda) * B_panel (kc x
  // NR, k-major, row stride ldb); every row of both panels is read in full (MR and NR floats), only
  // the top-left m x n of C is written. acc=false overwrites, acc=true adds.
  void (*gemm_ukr)(int kc, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                   int64_t ldc, int m, int n, bool acc);
  int mr, nr;
  // out (D, H, W) of one batch element: rows y0 .. y0+nrows-1 (nrows 1 or 2), every displacement
  // whose query row y+dy lies inside the image. Displacements outside the image are left untouched.
  void (*local_rows)(const LocalArgs& a, float* out, int y0, int nrows);
};

const Kernels& kernels_portable();
const Kernels& kernels_avx2();
const Kernels& kernels_avx512();

}  // namespace corr_detail
}  // namespace gocor
