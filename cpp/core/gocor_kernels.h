// Internal building blocks of the CPU GOCor (not part of the public API): a packed float32 GEMM
// and the fused 4-D operator R_theta^T R_theta of the global query term (spec 4.4/4.5).
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "gocor.h"

// One entry point per ISA (explicit targets: GCC's target_clones("avx2,fma") would make separate
// "avx2" and "fma" clones), picked at run time by corr_detail::simd_active() (honours GOCOR_SIMD).
#if defined(__x86_64__) || defined(__i386__)
#define GOCOR_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,fma")))
#define GOCOR_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define GOCOR_TARGET_AVX512
#define GOCOR_TARGET_AVX2
#endif

namespace gocor {
namespace gocor_detail {

// Vector of `V`'s width read from / written to any float address.
template <class V>
inline __attribute__((always_inline)) V loadu(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <class V>
inline __attribute__((always_inline)) void storeu(float* p, V v) {
  std::memcpy(p, &v, sizeof(V));
}

// c (m x n, row stride ldc) = or += a (m x k, row stride lda) * b, where b is (k x n, row stride
// ldb) when b_trans is false, or b is given as its transpose (n x k, row stride ldb) when true.
// Rows of c are split over `threads` threads of the shared pool.
void gemm(int m, int n, int k, const float* a, int64_t lda, const float* b, int64_t ldb,
          bool b_trans, float* c, int64_t ldc, bool accumulate, int threads);

// P = R_theta^T R_theta on an N x N score matrix X[r][t] (r: reference position, t: query
// position, both on the same H x W grid). R_theta = K2 (reference axes, I->O) o K1 (query axes,
// 1->I) collapses to O four-dimensional 3x3x3x3 kernels Kc[o] = sum_i W2[o,i] (x) W1[i], so P is
// one 5x5x5x5 correlation whose taps depend only on which 3x3 offsets stay inside the grid at the
// output position (zero padding of both convolutions, exactly). Taps per class are precomputed.
class RtROperator {
 public:
  RtROperator(const GlobalGocorParams& p, int H, int W);
  // x, y (N x N, row-major [r][t]); y = P x. scratch is resized as needed (padded copy of x).
  void apply(const float* x, float* y, std::vector<float>& scratch, int threads) const;
  // Host memory of the operator for an H x W grid plus apply()'s scratch, in bytes (for the
  // memory limit).
  static size_t bytes(int H, int W);

 private:
  int H_, W_, Wp_, rs_;  // Wp_: W rounded up to 16; rs_: padded query-row stride (Wp_ + 4)
  // coef_[cls][tap][tx] for cls = (mask_ry * 8 + mask_rx) * 8 + mask_ty (sparse index below).
  std::vector<float> coef_;
  std::vector<int> cls_index_;  // 512 entries -> table number or -1
  const float* table(int ry, int rx, int ty) const;
};

}  // namespace gocor_detail
}  // namespace gocor
