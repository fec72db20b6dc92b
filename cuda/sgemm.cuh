// Batched float32 SGEMM with a fused epilogue: C[b] (M x N) = A[b] (M x K) * B[b] (K x N).
// Plain FFMA (exact mode: no TF32), 128x128 block tiles, BK = 8, 256 threads, 8x8 outputs per
// thread in registers, double-buffered shared memory with register prefetch of the next tile.
// The epilogue functor sees each thread's rows four columns at a time, so the same kernel writes
// a plain volume, GOCor's residual maps, or only row sums of a function of the product.
#pragma once

#include <cuda_runtime.h>

#include "cuda_util.cuh"

namespace gocor {
namespace cuda {

// How an operand is stored. For A (M x K): kRowMajor is A[m*ld + k], kColMajor is A[k*ld + m].
// For B (K x N): kRowMajor is B[k*ld + n], kColMajor is B[n*ld + k].
enum class Layout { kRowMajor, kColMajor };

struct GemmArgs {
  int M, N, K;
  const float* A;
  const float* B;
  int lda, ldb;
  long long strideA, strideB;  // elements between batch elements
  float* rowpart;              // optional (batch, M, gridDim.x) per-row partial sums of ep's value
};

constexpr int kGemmBM = 128, kGemmBN = 128, kGemmBK = 8, kGemmThreads = 256;
constexpr int kGemmPad = 4;  // keeps rows 16-byte aligned and spreads transposed stores over banks

// ep(b, m, n0, v[4]) handles C[b][m][n0..n0+3] (columns >= N must be ignored by ep) and returns a
// float added into the row's partial sum (ignored when rowpart is null).
template <Layout LA, Layout LB, typename Ep>
__global__ void __launch_bounds__(kGemmThreads, 2) sgemm_kernel(GemmArgs g, Ep ep) {
  __shared__ __align__(16) float As[2][kGemmBK][kGemmBM + kGemmPad];
  __shared__ __align__(16) float Bs[2][kGemmBK][kGemmBN + kGemmPad];

  const int tid = threadIdx.x;
  const int b = blockIdx.z;
  const int m0 = blockIdx.y * kGemmBM;
  const int n0 = blockIdx.x * kGemmBN;
  const float* A = g.A + b * g.strideA;
  const float* B = g.B + b * g.strideB;

  // Loader mapping: each thread moves 4 elements of A and 4 of B per k-tile, chosen so that a
  // warp's loads touch contiguous memory for either layout.
  float ra[4], rb[4];
  auto load_a = [&](int k0) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      int kk, mm;
      if (LA == Layout::kColMajor) {
        kk = tid / 32;
        mm = (tid % 32) + 32 * j;
      } else {
        kk = tid % 8;
        mm = tid / 8 + 32 * j;
      }
      const int m = m0 + mm, k = k0 + kk;
      float v = 0.f;
      if (m < g.M && k < g.K) {
        v = LA == Layout::kColMajor ? __ldg(A + (long long)k * g.lda + m)
                                    : __ldg(A + (long long)m * g.lda + k);
      }
      ra[j] = v;
    }
  };
  auto load_b = [&](int k0) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      int kk, nn;
      if (LB == Layout::kRowMajor) {
        kk = tid / 32;
        nn = (tid % 32) + 32 * j;
      } else {
        kk = tid % 8;
        nn = tid / 8 + 32 * j;
      }
      const int n = n0 + nn, k = k0 + kk;
      float v = 0.f;
      if (n < g.N && k < g.K) {
        v = LB == Layout::kRowMajor ? __ldg(B + (long long)k * g.ldb + n)
                                    : __ldg(B + (long long)n * g.ldb + k);
      }
      rb[j] = v;
    }
  };
  auto store_tiles = [&](int buf) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (LA == Layout::kColMajor) {
        As[buf][tid / 32][(tid % 32) + 32 * j] = ra[j];
      } else {
        As[buf][tid % 8][tid / 8 + 32 * j] = ra[j];
      }
      if (LB == Layout::kRowMajor) {
        Bs[buf][tid / 32][(tid % 32) + 32 * j] = rb[j];
      } else {
        Bs[buf][tid % 8][tid / 8 + 32 * j] = rb[j];
      }
    }
  };

  const int ty = tid / 16, tx = tid % 16;
  float acc[8][8];
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i][j] = 0.f;

  const int num_k = (g.K + kGemmBK - 1) / kGemmBK;
  load_a(0);
  load_b(0);
  store_tiles(0);
  __syncthreads();
  for (int kt = 0; kt < num_k; ++kt) {
    const int buf = kt & 1;
    const bool more = kt + 1 < num_k;
    if (more) {
      load_a((kt + 1) * kGemmBK);
      load_b((kt + 1) * kGemmBK);
    }
#pragma unroll
    for (int k = 0; k < kGemmBK; ++k) {
      const float4 a0 = *reinterpret_cast<const float4*>(&As[buf][k][ty * 4]);
      const float4 a1 = *reinterpret_cast<const float4*>(&As[buf][k][64 + ty * 4]);
      const float4 b0 = *reinterpret_cast<const float4*>(&Bs[buf][k][tx * 4]);
      const float4 b1 = *reinterpret_cast<const float4*>(&Bs[buf][k][64 + tx * 4]);
      const float av[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
      const float bv[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    if (more) store_tiles(buf ^ 1);
    __syncthreads();
  }

  // Epilogue: rows ty*4+i and 64+ty*4+i, columns tx*4.. and 64+tx*4..
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int m = m0 + (i < 4 ? ty * 4 + i : 64 + ty * 4 + (i - 4));
    float part = 0.f;
    if (m < g.M) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int n = n0 + h * 64 + tx * 4;
        if (n < g.N) {
          const float v[4] = {acc[i][h * 4], acc[i][h * 4 + 1], acc[i][h * 4 + 2],
                              acc[i][h * 4 + 3]};
          part += ep(b, m, n, v);
        }
      }
    }
    if (g.rowpart != nullptr) {
      // The 16 threads sharing these rows are 16 consecutive lanes of one warp.
#pragma unroll
      for (int off = 8; off > 0; off >>= 1) part += __shfl_xor_sync(0xffffffffu, part, off);
      if (tx == 0 && m < g.M) {
        g.rowpart[((long long)b * g.M + m) * gridDim.x + blockIdx.x] = part;
      }
    }
  }
}

template <Layout LA, Layout LB, typename Ep>
void launch_sgemm(const GemmArgs& g, int batch, const Ep& ep, cudaStream_t stream) {
  if (g.M <= 0 || g.N <= 0 || batch <= 0) return;
  dim3 grid(ceil_div(g.N, kGemmBN), ceil_div(g.M, kGemmBM), batch);
  if (grid.y > 65535u || grid.z > 65535u) {
    throw Error(ErrorCode::TooLarge, "the CUDA SGEMM grid is too large for this shape");
  }
  sgemm_kernel<LA, LB, Ep><<<grid, kGemmThreads, 0, stream>>>(g, ep);
  check_launch("sgemm_kernel");
}

inline int gemm_col_blocks(int N) {
  return (N + kGemmBN - 1) / kGemmBN;
}

// Plain store into C[b][m][n] (row-major, ldc = N, batch stride strideC).
struct StoreEp {
  float* C;
  int N;
  long long strideC;
  __device__ float operator()(int b, int m, int n, const float (&v)[4]) const {
    float* row = C + b * strideC + (long long)m * N;
    if (n + 3 < N && ((reinterpret_cast<size_t>(row + n) & 15) == 0)) {
      __stcs(reinterpret_cast<float4*>(row + n), make_float4(v[0], v[1], v[2], v[3]));
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j)
        if (n + j < N) row[n + j] = v[j];
    }
    return 0.f;
  }
};

}  // namespace cuda
}  // namespace gocor
