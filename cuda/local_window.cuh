// Building blocks of the local (windowed) kernels: one thread per pixel of a 16-wide tile, the
// (2R+1)^2 per-pixel window values in shared memory (column per thread), and the neighbouring
// features staged through shared memory eight channels at a time with a zero halo, which is what
// makes "zero outside the image" free. Used by corr_local, its adjoint, and local GOCor.
#pragma once

#include <cuda_runtime.h>

#include "cuda_util.cuh"

namespace gocor {
namespace cuda {

constexpr int kWinTX = 16;  // tile width (threads in x)
constexpr int kWinCC = 8;   // channels per staged chunk

struct WinTile {
  int R, HY, HX;  // radius, halo rows and columns
  int tid, nt;    // thread index in the block, threads per block
  int ty, tx;     // pixel inside the tile
  int y, x;       // pixel in the image
  bool inside;    // the pixel exists (edge tiles are partial)
  long long p;    // y*W + x (valid when inside)
};

__device__ inline WinTile win_tile(int R, int H, int W) {
  WinTile t;
  t.R = R;
  t.HY = blockDim.y + 2 * R;
  t.HX = kWinTX + 2 * R;
  t.tx = threadIdx.x;
  t.ty = threadIdx.y;
  t.tid = t.ty * kWinTX + t.tx;
  t.nt = blockDim.y * kWinTX;
  t.y = blockIdx.y * blockDim.y + t.ty;
  t.x = blockIdx.x * kWinTX + t.tx;
  t.inside = t.y < H && t.x < W;
  t.p = (long long)t.y * W + t.x;
  return t;
}

// Shared-memory layout: [halo: kWinCC x HY x HX][window: D x nt].
__host__ __device__ inline size_t win_smem_floats(int R, int ty_threads) {
  const size_t hy = ty_threads + 2 * R, hx = kWinTX + 2 * R, D = (2 * R + 1) * (2 * R + 1);
  return kWinCC * hy * hx + D * ty_threads * kWinTX;
}

// Stages channels [c0, c0+kWinCC) of feat (C,H,W) around the tile, zeros outside image/channels.
__device__ inline void win_load_halo(float* halo, const WinTile& t, const float* feat, int c0,
                                     int C, int H, int W) {
  const int plane = t.HY * t.HX;
  const int y0 = blockIdx.y * blockDim.y - t.R, x0 = blockIdx.x * kWinTX - t.R;
  for (int i = t.tid; i < kWinCC * plane; i += t.nt) {
    const int cc = i / plane, rem = i - cc * plane;
    const int hy = rem / t.HX, hx = rem - hy * t.HX;
    const int gy = y0 + hy, gx = x0 + hx, c = c0 + cc;
    float v = 0.f;
    if (c < C && gy >= 0 && gy < H && gx >= 0 && gx < W) {
      v = __ldg(feat + ((long long)c * H + gy) * W + gx);
    }
    halo[i] = v;
  }
}

// Loads the halo of channels c0 .. c0 + kWinCC - 1 of feat; every thread of the block calls it.
__device__ __forceinline__ void win_sync_halo(float* halo, const WinTile& t, const float* feat,
                                              int c0, int C, int H, int W) {
  __syncthreads();
  win_load_halo(halo, t, feat, c0, C, H, W);
  __syncthreads();
}

// fn(k, h) for every window offset k = (dy+R)(2R+1) + (dx+R), h pointing at the halo sample of
// p + d_k in the first loaded channel (channel cc at h[cc * HY * HX]).
template <typename Fn>
__device__ __forceinline__ void win_each(const float* halo, const WinTile& t, Fn fn) {
  const int S = 2 * t.R + 1;
  int k = 0;
  for (int dy = 0; dy < S; ++dy) {
    const float* hrow = halo + (t.ty + dy) * t.HX + t.tx;
    for (int dx = 0; dx < S; ++dx, ++k) fn(k, hrow + dx);
  }
}

// win[k*nt + tid] = sum_c src[c, p] * feat[c, p + d_k]  (unscaled), k = (dy+R)(2R+1) + (dx+R).
// src and feat are one batch element's (C,H,W). Every thread of the block must call it.
__device__ inline void win_scores(float* halo, float* win, const WinTile& t, const float* src,
                                  const float* feat, int C, int H, int W) {
  const int S = 2 * t.R + 1, D = S * S, plane = t.HY * t.HX;
  for (int k = 0; k < D; ++k) win[k * t.nt + t.tid] = 0.f;
  const long long HW = (long long)H * W;
  for (int c0 = 0; c0 < C; c0 += kWinCC) {
    win_sync_halo(halo, t, feat, c0, C, H, W);
    float v[kWinCC];
#pragma unroll
    for (int cc = 0; cc < kWinCC; ++cc) {
      v[cc] = (t.inside && c0 + cc < C) ? src[(c0 + cc) * HW + t.p] : 0.f;
    }
    win_each(halo, t, [&](int k, const float* h) {
      float a = win[k * t.nt + t.tid];
#pragma unroll
      for (int cc = 0; cc < kWinCC; ++cc) a = fmaf(v[cc], h[cc * plane], a);
      win[k * t.nt + t.tid] = a;
    });
  }
}

// For every channel c: sink(c, sum_k win[k] * feat[c, p + d_k]) (unscaled); the adjoint pass.
template <typename Sink>
__device__ inline void win_adjoint(float* halo, const float* win, const WinTile& t,
                                   const float* feat, int C, int H, int W, Sink sink) {
  const int plane = t.HY * t.HX;
  for (int c0 = 0; c0 < C; c0 += kWinCC) {
    win_sync_halo(halo, t, feat, c0, C, H, W);
    float g[kWinCC];
#pragma unroll
    for (int cc = 0; cc < kWinCC; ++cc) g[cc] = 0.f;
    win_each(halo, t, [&](int k, const float* h) {
      const float coef = win[k * t.nt + t.tid];
#pragma unroll
      for (int cc = 0; cc < kWinCC; ++cc) g[cc] = fmaf(coef, h[cc * plane], g[cc]);
    });
    if (t.inside) {
#pragma unroll
      for (int cc = 0; cc < kWinCC; ++cc)
        if (c0 + cc < C) sink(c0 + cc, g[cc]);
    }
  }
}

// Threads in y per block: the most of {8, 4, 2, 1} whose shared memory fits the device.
int win_tile_rows(int R, size_t* smem_bytes);

}  // namespace cuda
}  // namespace gocor
