// Batched float32 SGEMM with a fused epilogue: C[b] (M x N) = A[b] (M x K) * B[b] (K x N).
// Plain FFMA (exact mode: no TF32), 128x128 block tiles, BK = 8, 256 threads, 8x8 outputs per
// thread in registers. Global -> shared moves are cp.async into a 4-stage ring, so no loader
// registers stay live across the FMA loop (the old register prefetch spilled under the 128-register
// cap that two blocks per multiprocessor need) and three k-tiles are in flight while one is used.
// Each output's k-sum runs k = 0, 1, ..., K-1 with one fmaf per term, the order of the CPU twin.
// The epilogue functor sees each thread's rows four columns at a time, so the same kernel writes
// a plain volume, GOCor's residual maps, or only row sums of a function of the product.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

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

constexpr int kGemmBM = 128, kGemmBN = 128, kGemmBK = 8, kGemmThreads = 256, kGemmStages = 4;
constexpr int kGemmPad = 4;  // keeps rows 16-byte aligned and spreads transposed stores over banks

// cp.async of 4 or 16 bytes; bytes beyond src_bytes are zero-filled (src_bytes = 0: all zero, and
// the source is not read). cp.async exists from sm_80 on; older targets (sm_75) copy synchronously,
// which keeps the same ring logic correct (the data is simply there before the wait).
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
__device__ __forceinline__ void cp_async4(float* smem, const float* gmem, int src_bytes) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(gmem),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async16(float* smem, const float* gmem, int src_bytes) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::);
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
#else
__device__ __forceinline__ void cp_async4(float* smem, const float* gmem, int src_bytes) {
  *smem = src_bytes >= 4 ? *gmem : 0.f;
}
__device__ __forceinline__ void cp_async16(float* smem, const float* gmem, int src_bytes) {
#pragma unroll
  for (int i = 0; i < 4; ++i) smem[i] = src_bytes >= 4 * (i + 1) ? gmem[i] : 0.f;
}
__device__ __forceinline__ void cp_async_commit() {}
template <int N>
__device__ __forceinline__ void cp_async_wait() {}
#endif

// Stages one BK x 128 slab of an operand into dst[k][i] (i along M for A, along N for B).
// contiguous: element (k, i) is at src[k*ld + i] (A col-major, B row-major), else src[i*ld + k].
// vec: contiguous, ld % 4 == 0 and src 16-byte aligned, so 16-byte copies are legal.
template <bool kContiguous>
__device__ __forceinline__ void gemm_stage(float (*dst)[kGemmBM + kGemmPad], const float* src,
                                           int ld, int i0, int k0, int I, int K, bool vec,
                                           int tid) {
  if (kContiguous) {
    const int kk = tid / 32, k = k0 + kk;
    if (vec) {
      const int ii = (tid % 32) * 4, i = i0 + ii;
      int bytes = 0;
      const float* p = src;
      if (k < K && i < I) {
        bytes = 4 * min(4, I - i);
        p = src + (long long)k * ld + i;
      }
      cp_async16(&dst[kk][ii], p, bytes);
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int ii = (tid % 32) + 32 * j, i = i0 + ii;
        const bool in = k < K && i < I;
        cp_async4(&dst[kk][ii], in ? src + (long long)k * ld + i : src, in ? 4 : 0);
      }
    }
  } else {
    // A warp covers 4 rows of 8 consecutive k; the transposed stores hit 32 distinct banks.
    // One base pointer and a fixed row step keep the address registers few.
    const int kk = tid % 8, k = k0 + kk, ib = i0 + tid / 8;
    const float* p = src + (long long)ib * ld + k;
    const long long step = 32LL * ld;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const bool in = k < K && ib + 32 * j < I;
      cp_async4(&dst[kk][tid / 8 + 32 * j], in ? p + j * step : src, in ? 4 : 0);
    }
  }
}

// ep(b, m, n0, v) handles C[b][m][n0..n0+3] (columns >= N must be ignored by ep) and returns a
// float added into the row's partial sum (ignored when rowpart is null).
template <Layout LA, Layout LB, typename Ep>
__global__ void __launch_bounds__(kGemmThreads, 2)
    sgemm_kernel(GemmArgs g, Ep ep, bool vec_a, bool vec_b) {
  __shared__ __align__(16) float As[kGemmStages][kGemmBK][kGemmBM + kGemmPad];
  __shared__ __align__(16) float Bs[kGemmStages][kGemmBK][kGemmBN + kGemmPad];

  const int tid = threadIdx.x;
  const int b = blockIdx.z;
  const int m0 = blockIdx.y * kGemmBM;
  const int n0 = blockIdx.x * kGemmBN;
  const float* A = g.A + b * g.strideA;
  const float* B = g.B + b * g.strideB;
  constexpr bool kAc = LA == Layout::kColMajor, kBc = LB == Layout::kRowMajor;

  const int num_k = (g.K + kGemmBK - 1) / kGemmBK;
  auto stage = [&](int kt) {
    const int s = kt % kGemmStages;
    gemm_stage<kAc>(As[s], A, g.lda, m0, kt * kGemmBK, g.M, g.K, vec_a, tid);
    gemm_stage<kBc>(Bs[s], B, g.ldb, n0, kt * kGemmBK, g.N, g.K, vec_b, tid);
  };
  // Always commit a group (possibly empty) so that wait_group counts stay uniform.
#pragma unroll
  for (int s = 0; s < kGemmStages - 1; ++s) {
    if (s < num_k) stage(s);
    cp_async_commit();
  }

  const int ty = tid / 16, tx = tid % 16;
  float acc[8][8];
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i][j] = 0.f;

  for (int kt = 0; kt < num_k; ++kt) {
    cp_async_wait<kGemmStages - 2>();  // this thread's copies of tile kt have landed
    __syncthreads();                   // everyone's have; the slot of tile kt-1 is free again
    if (kt + kGemmStages - 1 < num_k) stage(kt + kGemmStages - 1);
    cp_async_commit();
    const int s = kt % kGemmStages;
#pragma unroll
    for (int k = 0; k < kGemmBK; ++k) {
      const float4 a0 = *reinterpret_cast<const float4*>(&As[s][k][ty * 4]);
      const float4 a1 = *reinterpret_cast<const float4*>(&As[s][k][64 + ty * 4]);
      const float4 b0 = *reinterpret_cast<const float4*>(&Bs[s][k][tx * 4]);
      const float4 b1 = *reinterpret_cast<const float4*>(&Bs[s][k][64 + tx * 4]);
      const float av[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
      const float bv[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
  }
  cp_async_wait<0>();

  // Epilogue: rows ty*4+i and 64+ty*4+i, columns tx*4.. and 64+tx*4..
  const bool want_part = g.rowpart != nullptr;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int m = m0 + (i < 4 ? ty * 4 + i : 64 + ty * 4 + (i - 4));
    float part = 0.f;
    if (m < g.M) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int n = n0 + h * 64 + tx * 4;
        if (n < g.N) {
          part += ep(
              b, m, n,
              make_float4(acc[i][h * 4], acc[i][h * 4 + 1], acc[i][h * 4 + 2], acc[i][h * 4 + 3]));
        }
      }
    }
    if (want_part) {
      // The 16 threads sharing these rows are 16 consecutive lanes of one warp.
#pragma unroll
      for (int off = 8; off > 0; off >>= 1) part += __shfl_xor_sync(0xffffffffu, part, off);
      if (tx == 0 && m < g.M) {
        g.rowpart[((long long)b * g.M + m) * gridDim.x + blockIdx.x] = part;
      }
    }
  }
}

inline bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15) == 0;
}

template <Layout LA, Layout LB, typename Ep>
void launch_sgemm(const GemmArgs& g, int batch, const Ep& ep, cudaStream_t stream) {
  if (g.M <= 0 || g.N <= 0 || batch <= 0) return;
  dim3 grid(ceil_div(g.N, kGemmBN), ceil_div(g.M, kGemmBM), batch);
  if (grid.y > 65535u || grid.z > 65535u) {
    throw Error(ErrorCode::TooLarge, "the CUDA SGEMM grid is too large for this shape");
  }
  // 16-byte copies need every row start of every batch element 16-byte aligned.
  const bool vec_a =
      LA == Layout::kColMajor && g.lda % 4 == 0 && g.strideA % 4 == 0 && aligned16(g.A);
  const bool vec_b =
      LB == Layout::kRowMajor && g.ldb % 4 == 0 && g.strideB % 4 == 0 && aligned16(g.B);
  sgemm_kernel<LA, LB, Ep><<<grid, kGemmThreads, 0, stream>>>(g, ep, vec_a, vec_b);
  check_launch("sgemm_kernel");
}

inline int gemm_col_blocks(int N) {
  return (N + kGemmBN - 1) / kGemmBN;
}

// Stores v into p[0..3], columns n..n+3 of a row of length N: one 16-byte streaming store when all
// four exist and p is aligned, else element by element.
__device__ __forceinline__ void store_row4(float* p, int n, int N, float4 v) {
  if (n + 3 < N && (reinterpret_cast<size_t>(p) & 15) == 0) {
    __stcs(reinterpret_cast<float4*>(p), v);
  } else {
    const float e[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if (n + j < N) p[j] = e[j];
  }
}

// Plain store into C[b][m][n] (row-major, ldc = N, batch stride strideC).
struct StoreEp {
  float* C;
  int N;
  long long strideC;
  __device__ float operator()(int b, int m, int n, float4 v) const {
    store_row4(C + b * strideC + (long long)m * N + n, n, N, v);
    return 0.f;
  }
};

}  // namespace cuda
}  // namespace gocor
