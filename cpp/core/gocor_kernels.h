// Internal building blocks of the CPU GOCor (not part of the public API): the packed float32 GEMM
// (gemm.h) and the fused 4-D operator R_theta^T R_theta of the global query term (spec 4.4/4.5).
#pragma once

#include <cstdint>
#include <vector>

#include "blocks.h"
#include "gemm.h"
#include "gocor.h"
#include "simd.h"

namespace gocor {
namespace gocor_detail {

// The SIMD layer's names as the GOCor kernels use them.
using simd::loadu;
using simd::storeu;

// P = R_theta^T R_theta on an N x N score matrix X[r][t] (r: reference position, t: query
// position, both on the same H x W grid). R_theta = K2 (reference axes, I->O) o K1 (query axes,
// 1->I) collapses to O four-dimensional 3x3x3x3 kernels Kc[o] = sum_i W2[o,i] (x) W1[i], so P is
// one 5x5x5x5 correlation whose taps depend only on which 3x3 offsets stay inside the grid at the
// output position (zero padding of both convolutions, exactly). Taps per class are precomputed.
class RtROperator {
 public:
  RtROperator(const GlobalGocorParams& p, int H, int W);
  // x, y (N x N, row-major [r][t]); y = P x. scratch is resized as needed (padded copy of x).
  void apply(const float* x, float* y, WorkVector<float>& scratch, int threads) const {
    apply(x, static_cast<int64_t>(H_) * W_, y, static_cast<int64_t>(H_) * W_, scratch, threads);
  }
  // The same with row strides: x row r at x + r * ldx, y row r at y + r * ldy (>= N each). With
  // half, y is not P x but h with <x, h> = <x, P x>, at half the cost (the quadratic form only).
  void apply(const float* x, int64_t ldx, float* y, int64_t ldy, WorkVector<float>& scratch,
             int threads, bool half = false) const;
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

// Which form gocor_global_cpu computes (gocor_global.cpp): kAuto chooses by the FLOP count. Tests
// force each form to check both against the float64 reference. Process-wide.
enum class GlobalForm { kAuto, kDirect, kGram };
void global_form_force(GlobalForm form);

}  // namespace gocor_detail
}  // namespace gocor
