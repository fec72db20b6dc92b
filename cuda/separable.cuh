// Separable filters: a row pass and a column pass in which every output is the sum, in order, of
// its taps' weight times sample, each product and sum rounded on its own as on the CPU (no fused
// multiply-add). A Taps object calls f(i, weight) for the source samples i of output o, in order,
// given the source and output lengths: BlurTaps here, the resampler's in features.cu.
#pragma once

#include <algorithm>

#include "cuda_util.cuh"

namespace gocor {
namespace cuda {

constexpr int kMaxBlurTaps = 511;  // blur kernels travel as a kernel parameter (cell <= ~70)

__device__ __forceinline__ float madd(float acc, float a, float b) {
  return __fadd_rn(acc, __fmul_rn(a, b));
}

// A kernel of 2r + 1 taps k over border-replicated samples: output o reads o - r .. o + r.
struct BlurTaps {
  int r;
  float k[kMaxBlurTaps];
  template <typename F>
  __device__ void operator()(int n, int /*n_out*/, int o, F f) const {
    for (int i = 0; i <= 2 * r; ++i) f(min(max(o + i - r, 0), n - 1), k[i]);
  }
};

// src (rows, W) -> dst (rows, w); rows in a grid-stride loop (any count fits the grid).
template <typename Taps>
__global__ void filter_rows_kernel(const float* __restrict__ src, float* __restrict__ dst,
                                   long long rows, int W, int w, Taps t) {
  const int o = blockIdx.x * blockDim.x + threadIdx.x;
  if (o >= w) return;
  for (long long r = (long long)blockIdx.y * blockDim.y + threadIdx.y; r < rows;
       r += (long long)gridDim.y * blockDim.y) {
    const float* row = src + r * W;
    float acc = 0.f;
    t(W, w, o, [&](int i, float k) { acc = madd(acc, k, __ldg(row + i)); });
    dst[r * w + o] = acc;
  }
}

// src (P, H, w) -> dst (P, h, w).
template <typename Taps>
__global__ void filter_cols_kernel(const float* __restrict__ src, float* __restrict__ dst, int H,
                                   int w, int h, Taps t) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x;
  const int o = blockIdx.y;
  const long long plane = blockIdx.z;
  if (x >= w) return;
  const float* base = src + plane * H * w + x;
  float acc = 0.f;
  t(H, h, o, [&](int i, float k) { acc = madd(acc, k, __ldg(base + (long long)i * w)); });
  dst[(plane * h + o) * w + x] = acc;
}

// planes (P, H, W) -> (P, h, w) through tmp (P, H, w): the row pass, then the column pass.
template <typename Taps>
void filter_separable(const float* src, float* tmp, float* dst, long long planes, int H, int W,
                      int h, int w, const Taps& t, cudaStream_t st) {
  const dim3 rb(32, 8), rg(ceil_div(w, 32), std::min(ceil_div(planes * H, 8), 65535u));
  filter_rows_kernel<<<rg, rb, 0, st>>>(src, tmp, planes * H, W, w, t);
  check_launch("filter_rows_kernel");
  filter_cols_kernel<<<dim3(ceil_div(w, 128), h, unsigned(planes)), 128, 0, st>>>(tmp, dst, H, w, h,
                                                                                  t);
  check_launch("filter_cols_kernel");
}

}  // namespace cuda
}  // namespace gocor
