// Flow read-out, resampling and warping on the GPU: twins of cpp/core/flow.cpp's flow_resample,
// flow_warp, flow_from_global_volume, flow_from_local_volume, flow_warp_image, flow_median3 and
// flow_refine_symmetric, and of match.cpp's global_consistency_fill. Coordinates are computed in
// double as on the CPU, and all arithmetic uses explicitly rounded multiplies and adds in the CPU's
// order (__fmul_rn / __fadd_rn, __dmul_rn / __dadd_rn: the CPU build, baseline x86-64, has no FMA,
// while this library is compiled with --fmad=true, which would fuse a * b + c in float and double),
// so equal inputs give equal outputs to the last bit.
// Every device entry takes a batch of B independent fields laid out one after another.
#include <cmath>

#include "cuda_util.cuh"
#include "flow.h"
#include "gocor_cuda.h"
#include "gocor_cuda_device.cuh"

namespace gocor {
namespace cuda {
namespace {

struct Bilinear {
  long long i00, i01, i10, i11;
  float w00, w01, w10, w11;
};

__device__ __forceinline__ Bilinear bilinear_taps(double gx, double gy, int H, int W) {
  gx = fmin(fmax(gx, 0.0), double(W - 1));
  gy = fmin(fmax(gy, 0.0), double(H - 1));
  const int x0 = min(int(gx), W - 1), y0 = min(int(gy), H - 1);
  const int x1 = min(x0 + 1, W - 1), y1 = min(y0 + 1, H - 1);
  const float fx = float(gx - x0), fy = float(gy - y0);
  const float ax = __fsub_rn(1.f, fx), ay = __fsub_rn(1.f, fy);
  return {(long long)y0 * W + x0, (long long)y0 * W + x1, (long long)y1 * W + x0,
          (long long)y1 * W + x1, __fmul_rn(ax, ay),      __fmul_rn(fx, ay),
          __fmul_rn(ax, fy),      __fmul_rn(fx, fy)};
}

__device__ __forceinline__ float read(const float* __restrict__ p, const Bilinear& b) {
  float s = __fmul_rn(b.w00, __ldg(p + b.i00));
  s = __fadd_rn(s, __fmul_rn(b.w01, __ldg(p + b.i01)));
  s = __fadd_rn(s, __fmul_rn(b.w10, __ldg(p + b.i10)));
  return __fadd_rn(s, __fmul_rn(b.w11, __ldg(p + b.i11)));
}

// Pixel coordinate of cell coordinate g on a grid of stride s: (g + 0.5) s - 0.5, not fused.
__device__ __forceinline__ double centre(double g, double s) {
  return __dsub_rn(__dmul_rn(g + 0.5, s), 0.5);
}

__device__ __forceinline__ float parabola(float sm, float s0, float sp) {
  const float den = __fadd_rn(__fsub_rn(sm, 2 * s0), sp);
  if (!(den < 0)) return 0.f;
  return fminf(fmaxf(__fdiv_rn(__fmul_rn(0.5f, __fsub_rn(sm, sp)), den), -0.5f), 0.5f);
}

// in (B, planes, gi) -> out (B, planes, go), bilinear in pixel coordinates.
__global__ void resample_kernel(const float* __restrict__ in, FlowGrid gi, float* __restrict__ out,
                                FlowGrid go, int planes) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  const int i = blockIdx.y;
  const long long b = blockIdx.z;
  if (j >= go.W) return;
  const long long Ni = (long long)gi.H * gi.W, No = (long long)go.H * go.W;
  const double py = centre(i, go.sy);
  const double gy = (py + 0.5) / gi.sy - 0.5;
  const double px = centre(j, go.sx);
  const Bilinear t = bilinear_taps((px + 0.5) / gi.sx - 0.5, gy, gi.H, gi.W);
  const long long o = (long long)i * go.W + j;
  for (int c = 0; c < planes; ++c) {
    out[(b * planes + c) * No + o] = read(in + (b * planes + c) * Ni, t);
  }
}

// feat_b (B, C, gb), flow (B, 2, ga) -> out (B, C, ga).
__global__ void warp_kernel(const float* __restrict__ feat_b, int C, FlowGrid gb,
                            const float* __restrict__ flow, FlowGrid ga, float* __restrict__ out) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  const int i = blockIdx.y;
  const long long b = blockIdx.z;
  if (j >= ga.W) return;
  const long long Na = (long long)ga.H * ga.W, Nb = (long long)gb.H * gb.W;
  const long long o = (long long)i * ga.W + j;
  const float* f = flow + b * 2 * Na;
  float* dst = out + b * C * Na + o;
  const double px = centre(j, ga.sx) + double(f[o]);
  const double py = centre(i, ga.sy) + double(f[Na + o]);
  const double gx = (px + 0.5) / gb.sx - 0.5, gy = (py + 0.5) / gb.sy - 0.5;
  if (!(gx >= -0.5 && gx <= gb.W - 0.5 && gy >= -0.5 && gy <= gb.H - 0.5)) {
    for (int c = 0; c < C; ++c) dst[c * Na] = 0.f;
    return;
  }
  const Bilinear t = bilinear_taps(gx, gy, gb.H, gb.W);
  const float* src = feat_b + b * C * Nb;
  for (int c = 0; c < C; ++c) dst[c * Na] = read(src + c * Nb, t);
}

// volume (B, Gb cells, Ga cells) -> flow (B, 2, Ga), peak (B, Ga) or null.
__global__ void global_readout_kernel(const float* __restrict__ volume, FlowGrid ga, FlowGrid gb,
                                      float* __restrict__ flow, float* __restrict__ peak) {
  const long long Na = (long long)ga.H * ga.W, M = (long long)gb.H * gb.W;
  const long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const long long b = blockIdx.y;
  if (r >= Na) return;
  const float* v = volume + b * M * Na + r;
  long long best = 0;
  float bv = v[0];
  for (long long t = 1; t < M; ++t) {
    const float x = v[t * Na];
    if (x > bv) {
      bv = x;
      best = t;
    }
  }
  const int ty = int(best / gb.W), tx = int(best % gb.W);
  auto at = [&](int y, int x) { return v[((long long)y * gb.W + x) * Na]; };
  const float dx = (tx > 0 && tx + 1 < gb.W) ? parabola(at(ty, tx - 1), bv, at(ty, tx + 1)) : 0.f;
  const float dy = (ty > 0 && ty + 1 < gb.H) ? parabola(at(ty - 1, tx), bv, at(ty + 1, tx)) : 0.f;
  const int ry = int(r / ga.W), rx = int(r % ga.W);
  // tx + dx is a float sum on the CPU (int + float), then widened.
  const double pbx = centre(__fadd_rn(float(tx), dx), gb.sx);
  const double pby = centre(__fadd_rn(float(ty), dy), gb.sy);
  const double pax = centre(rx, ga.sx), pay = centre(ry, ga.sy);
  flow[b * 2 * Na + r] = float(pbx - pax);
  flow[b * 2 * Na + Na + r] = float(pby - pay);
  if (peak != nullptr) peak[b * Na + r] = bv;
}

// volume (B, D, H, W) -> residual (B, 2, H, W) in cells, confidence (B, H, W) or null.
__global__ void local_readout_kernel(const float* __restrict__ volume, int R, int H, int W,
                                     float* __restrict__ residual, float* __restrict__ confidence) {
  const long long N = (long long)H * W;
  const long long o = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const long long b = blockIdx.y;
  if (o >= N) return;
  const int S = 2 * R + 1, D = S * S;
  const float* v = volume + b * D * N + o;
  int best = 0;
  float bv = v[0];
  for (int k = 1; k < D; ++k) {
    const float x = v[k * N];
    if (x > bv) {
      bv = x;
      best = k;
    }
  }
  const int by = best / S, bx = best % S;
  auto at = [&](int y, int x) { return v[(long long)(y * S + x) * N]; };
  const float dx = (bx > 0 && bx + 1 < S) ? parabola(at(by, bx - 1), bv, at(by, bx + 1)) : 0.f;
  const float dy = (by > 0 && by + 1 < S) ? parabola(at(by - 1, bx), bv, at(by + 1, bx)) : 0.f;
  residual[b * 2 * N + o] = __fadd_rn(float(bx - R), dx);
  residual[b * 2 * N + N + o] = __fadd_rn(float(by - R), dy);
  if (confidence == nullptr) return;
  float second = -INFINITY;
  for (int k = 0; k < D; ++k) {
    const int ky = k / S, kx = k % S;
    if (abs(ky - by) <= 1 && abs(kx - bx) <= 1) continue;
    second = fmaxf(second, v[(long long)k * N]);
  }
  float c = 0.f;
  if (bv > 0) {
    c = second <= 0 ? 1.f : fminf(fmaxf(__fsub_rn(1.f, __fdiv_rn(second, bv)), 0.f), 1.f);
  }
  confidence[b * N + o] = c;
}

// b (B, C, Hb, Wb), flow (B, 2, H, W) -> out (B, C, H, W), mask (B, H, W) or null.
__global__ void warp_image_kernel(const float* __restrict__ img, int C, int Hb, int Wb,
                                  const float* __restrict__ flow, int H, int W,
                                  float* __restrict__ out, float* __restrict__ mask) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  const int i = blockIdx.y;
  const long long b = blockIdx.z;
  if (j >= W) return;
  const long long N = (long long)H * W, Nb = (long long)Hb * Wb;
  const long long o = (long long)i * W + j;
  const double x = j + double(flow[b * 2 * N + o]), y = i + double(flow[b * 2 * N + N + o]);
  const bool inside = x >= -0.5 && x <= Wb - 0.5 && y >= -0.5 && y <= Hb - 0.5;
  if (mask != nullptr) mask[b * N + o] = inside ? 1.f : 0.f;
  float* dst = out + b * C * N + o;
  if (!inside) {
    for (int c = 0; c < C; ++c) dst[c * N] = 0.f;
    return;
  }
  const Bilinear t = bilinear_taps(x, y, Hb, Wb);
  for (int c = 0; c < C; ++c) dst[c * N] = read(img + (b * C + c) * Nb, t);
}

// src (B, 2, H, W) -> dst (B, 2, H, W): 3x3 median (the middle of the n in-grid values, as
// nth_element(v, v + n/2, v + n) picks).
__global__ void median3_kernel(const float* __restrict__ src, float* __restrict__ dst, int H,
                               int W) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  const int i = blockIdx.y;
  const long long plane = blockIdx.z;
  if (j >= W) return;
  const float* p = src + plane * H * W;
  float v[9];
  int n = 0;
  for (int y = max(i - 1, 0); y <= min(i + 1, H - 1); ++y)
    for (int x = max(j - 1, 0); x <= min(j + 1, W - 1); ++x) v[n++] = p[(long long)y * W + x];
  for (int a = 1; a < n; ++a) {  // insertion sort of at most 9 values
    const float key = v[a];
    int c = a - 1;
    while (c >= 0 && v[c] > key) {
      v[c + 1] = v[c];
      --c;
    }
    v[c + 1] = key;
  }
  dst[plane * H * W + (long long)i * W + j] = v[n / 2];
}

// feat_a (B, C, ga), feat_b (B, C, gb), flow (B, 2, ga) updated in place. A cell's update reads
// only its own flow, so all iterations run in one thread.
__global__ void refine_kernel(const float* __restrict__ feat_a, FlowGrid ga,
                              const float* __restrict__ feat_b, FlowGrid gb, int C,
                              float* __restrict__ flow, int iterations) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  const int i = blockIdx.y;
  const long long b = blockIdx.z;
  if (j >= ga.W) return;
  const long long Na = (long long)ga.H * ga.W, Nb = (long long)gb.H * gb.W;
  const long long o = (long long)i * ga.W + j;
  const float* fa = feat_a + b * C * Na;
  const float* fb = feat_b + b * C * Nb;
  float* f = flow + b * 2 * Na;
  constexpr double h = 0.5;
  float u = f[o], v = f[Na + o];
  for (int it = 0; it < iterations; ++it) {
    float score[3][3];
    bool ok = true;
    for (int dy = -1; dy <= 1 && ok; ++dy) {
      for (int dx = -1; dx <= 1; ++dx) {
        const double ax = __dsub_rn(j, __dmul_rn(0.5 * dx, h));
        const double ay = __dsub_rn(i, __dmul_rn(0.5 * dy, h));
        const double px =
            __dadd_rn(centre(ax, ga.sx) + double(u), __dmul_rn(__dmul_rn(dx, h), ga.sx));
        const double py =
            __dadd_rn(centre(ay, ga.sy) + double(v), __dmul_rn(__dmul_rn(dy, h), ga.sy));
        const double bx = (px + 0.5) / gb.sx - 0.5, by = (py + 0.5) / gb.sy - 0.5;
        if (!(bx >= 0 && bx <= gb.W - 1 && by >= 0 && by <= gb.H - 1)) {
          ok = false;
          break;
        }
        const Bilinear ta = bilinear_taps(ax, ay, ga.H, ga.W);
        const Bilinear tb = bilinear_taps(bx, by, gb.H, gb.W);
        float acc = 0.f;
        for (int c = 0; c < C; ++c) {
          acc = __fadd_rn(acc, __fmul_rn(read(fa + c * Na, ta), read(fb + c * Nb, tb)));
        }
        score[dy + 1][dx + 1] = acc;
      }
    }
    if (!ok) continue;
    const float s0 = score[1][1];
    if (s0 < score[1][0] || s0 < score[1][2] || s0 < score[0][1] || s0 < score[2][1]) {
      int by = 1, bx = 1;
      for (int y = 0; y < 3; ++y)
        for (int x = 0; x < 3; ++x)
          if (score[y][x] > score[by][bx]) by = y, bx = x;
      u = __fadd_rn(u, float(__dmul_rn(__dmul_rn(bx - 1, h), ga.sx)));
      v = __fadd_rn(v, float(__dmul_rn(__dmul_rn(by - 1, h), ga.sy)));
      continue;
    }
    u = __fadd_rn(u, float(__dmul_rn(__dmul_rn(parabola(score[1][0], s0, score[1][2]), h), ga.sx)));
    v = __fadd_rn(v, float(__dmul_rn(__dmul_rn(parabola(score[0][1], s0, score[2][1]), h), ga.sy)));
  }
  f[o] = u;
  f[Na + o] = v;
}

// ---- global_consistency_fill (match.cpp): cyclic-consistency check and median fill ----
// volume (B, Nb, Na) as read by global_readout_kernel. Step 1, per query cell t: back[t] = the
// first reference cell with the largest score in row t (std::max_element's pick).
__global__ void fill_back_kernel(const float* __restrict__ volume, long long Na, long long Nb,
                                 int* __restrict__ back) {
  const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const long long b = blockIdx.y;
  if (t >= Nb) return;
  const float* row = volume + (b * Nb + t) * Na;
  long long best = 0;
  float bv = row[0];
  for (long long r = 1; r < Na; ++r) {
    if (bv < row[r]) {
      bv = row[r];
      best = r;
    }
  }
  back[b * Nb + t] = int(best);
}

// Step 2, per reference cell r: its best query cell t (the arg-max of the read-out), kept when
// back[t] lies within one cell of r; kept cells are counted per item (integer atomics: exact).
__global__ void fill_keep_kernel(const float* __restrict__ volume, FlowGrid ga, long long Nb,
                                 const int* __restrict__ back, int* __restrict__ keep,
                                 int* __restrict__ kept) {
  const long long Na = (long long)ga.H * ga.W;
  const long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const long long b = blockIdx.y;
  if (r >= Na) return;
  const float* v = volume + b * Nb * Na + r;
  long long fwd = 0;
  float bv = v[0];
  for (long long t = 1; t < Nb; ++t) {
    if (v[t * Na] > bv) {
      bv = v[t * Na];
      fwd = t;
    }
  }
  const long long rb = back[b * Nb + fwd];
  const bool k = llabs(rb / ga.W - r / ga.W) <= 1 && llabs(rb % ga.W - r % ga.W) <= 1;
  keep[b * Na + r] = k ? 1 : 0;
  if (k) atomicAdd(kept + b, 1);
}

// The value of rank m (0-based, ascending) among the kept cells of the window rows y0..y1, columns
// x0..x1 of plane p: what nth_element(u, u + m, u + n) leaves at u[m], found by counting (no list).
__device__ float window_rank(const float* __restrict__ p, const int* __restrict__ keep, int W,
                             int y0, int y1, int x0, int x1, int m) {
  for (int y = y0; y <= y1; ++y) {
    for (int x = x0; x <= x1; ++x) {
      const long long s = (long long)y * W + x;
      if (!keep[s]) continue;
      const float c = p[s];
      int less = 0, equal = 0;
      for (int yy = y0; yy <= y1; ++yy) {
        for (int xx = x0; xx <= x1; ++xx) {
          const long long q = (long long)yy * W + xx;
          if (!keep[q]) continue;
          less += p[q] < c;
          equal += p[q] == c;
        }
      }
      if (less <= m && m < less + equal) return c;
    }
  }
  return NAN;  // unreachable for finite flows
}

// Step 3, per rejected cell r (items with fewer than 3 or all cells kept are left alone): the
// median of the kept cells in the smallest square window (radius k >= 1) holding at least 3 of
// them. Only rejected cells are written and only kept cells are read, so it works in place.
__global__ void fill_median_kernel(FlowGrid ga, const int* __restrict__ keep,
                                   const int* __restrict__ kept, float* __restrict__ flow) {
  const long long Na = (long long)ga.H * ga.W;
  const long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const long long b = blockIdx.y;
  if (r >= Na) return;
  const int nk = kept[b];
  const int* kp = keep + b * Na;
  if (nk < 3 || nk == Na || kp[r]) return;
  const int ry = int(r / ga.W), rx = int(r % ga.W);
  const int K = max(ga.H, ga.W);
  int y0 = 0, y1 = 0, x0 = 0, x1 = 0, n = 0;
  for (int k = 1; k < K; ++k) {
    y0 = max(ry - k, 0);
    y1 = min(ry + k, ga.H - 1);
    x0 = max(rx - k, 0);
    x1 = min(rx + k, ga.W - 1);
    n = 0;
    for (int y = y0; y <= y1; ++y)
      for (int x = x0; x <= x1; ++x) n += kp[(long long)y * ga.W + x];
    if (n >= 3) break;
  }
  float* f = flow + b * 2 * Na;
  const float u = window_rank(f, kp, ga.W, y0, y1, x0, x1, n / 2);
  const float v = window_rank(f + Na, kp, ga.W, y0, y1, x0, x1, n / 2);
  f[r] = u;
  f[Na + r] = v;
}

struct FillLayout {
  size_t back, keep, kept, total;
};

FillLayout fill_layout(const FlowGrid& ga, const FlowGrid& gb, int B) {
  auto a256 = [](size_t x) { return (x + 255) / 256 * 256; };
  FillLayout l{};
  l.back = 0;
  l.keep = a256(size_t(B) * gb.H * gb.W * 4);
  l.kept = l.keep + a256(size_t(B) * ga.H * ga.W * 4);
  l.total = l.kept + a256(size_t(B) * 4);
  return l;
}

// ---- flow_refine_photometric (flow.cpp), operation for operation --------------------------------

// Box mean over the in-image part of the row / column window (planes, H, W); double sums as
// box_mean.
__global__ void box_rows_kernel(const float* __restrict__ src, float* __restrict__ dst, int H,
                                int W, int r) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y;
  if (x >= W) return;
  const float* row = src + ((long long)blockIdx.z * H + y) * W;
  const int x0 = max(0, x - r), x1 = min(W - 1, x + r);
  double s = 0;
  for (int k = x0; k <= x1; ++k) s = __dadd_rn(s, double(row[k]));
  dst[((long long)blockIdx.z * H + y) * W + x] = float(__ddiv_rn(s, double(x1 - x0 + 1)));
}

__global__ void box_cols_kernel(const float* __restrict__ src, float* __restrict__ dst, int H,
                                int W, int r) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y;
  if (x >= W) return;
  const float* plane = src + (long long)blockIdx.z * H * W;
  const int y0 = max(0, y - r), y1 = min(H - 1, y + r);
  double s = 0;
  for (int k = y0; k <= y1; ++k) s = __dadd_rn(s, double(plane[(long long)k * W + x]));
  dst[((long long)blockIdx.z * H + y) * W + x] = float(__ddiv_rn(s, double(y1 - y0 + 1)));
}

__global__ void sub_kernel(float* __restrict__ z, const float* __restrict__ m, long long n) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) z[i] = __fsub_rn(z[i], m[i]);
}

// read_inside of flow.cpp.
__device__ __forceinline__ bool read_inside(const float* __restrict__ img, int H, int W, double x,
                                            double y, float* v) {
  if (!(x >= 0 && y >= 0 && x <= W - 1 && y <= H - 1)) return false;
  *v = read(img, bilinear_taps(x, y, H, W));
  return true;
}

// Per pixel: gradient and linearised difference products -> prod (B, 5, H, W) (zero outside b).
__global__ void photo_prod_kernel(const float* __restrict__ A, const float* __restrict__ Bc,
                                  const float* __restrict__ flow, float* __restrict__ prod, int H,
                                  int W, int Hb, int Wb) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y;
  const long long b = blockIdx.z;
  if (x >= W) return;
  const long long P = (long long)H * W, i = (long long)y * W + x;
  const float* a = A + b * P;
  const float* bc = Bc + b * (long long)Hb * Wb;
  const float* f = flow + b * 2 * P;
  float* pr = prod + b * 5 * P;
  for (int k = 0; k < 5; ++k) pr[k * P + i] = 0.f;
  const double bx = __dadd_rn(double(x), double(f[i])), by = __dadd_rn(double(y), double(f[P + i]));
  float w0;
  if (!read_inside(bc, Hb, Wb, bx, by, &w0)) return;
  float l = w0, r = w0, u = w0, d = w0;
  read_inside(bc, Hb, Wb, __dsub_rn(bx, 1.0), by, &l);
  read_inside(bc, Hb, Wb, __dadd_rn(bx, 1.0), by, &r);
  read_inside(bc, Hb, Wb, bx, __dsub_rn(by, 1.0), &u);
  read_inside(bc, Hb, Wb, bx, __dadd_rn(by, 1.0), &d);
  const float ax = (x > 0 && x + 1 < W) ? __fmul_rn(0.5f, __fsub_rn(a[i + 1], a[i - 1])) : 0.f;
  const float ay = (y > 0 && y + 1 < H) ? __fmul_rn(0.5f, __fsub_rn(a[i + W], a[i - W])) : 0.f;
  const float gx = __fmul_rn(0.5f, __fadd_rn(__fmul_rn(0.5f, __fsub_rn(r, l)), ax));
  const float gy = __fmul_rn(0.5f, __fadd_rn(__fmul_rn(0.5f, __fsub_rn(d, u)), ay));
  const float t =
      __fsub_rn(__fsub_rn(w0, a[i]), __fadd_rn(__fmul_rn(gx, f[i]), __fmul_rn(gy, f[P + i])));
  pr[i] = __fmul_rn(gx, gx);
  pr[P + i] = __fmul_rn(gx, gy);
  pr[2 * P + i] = __fmul_rn(gy, gy);
  pr[3 * P + i] = __fmul_rn(gx, t);
  pr[4 * P + i] = __fmul_rn(gy, t);
}

// Window sums (B, 5, H, W) -> each pixel's least-squares flow, where well conditioned.
__global__ void photo_solve_kernel(const float* __restrict__ sum, float* __restrict__ flow,
                                   long long P) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const long long b = blockIdx.y;
  if (i >= P) return;
  const float* s = sum + b * 5 * P;
  float* f = flow + b * 2 * P;
  const double sxx = s[i], sxy = s[P + i], syy = s[2 * P + i], sxt = s[3 * P + i],
               syt = s[4 * P + i];
  const double det = __dsub_rn(__dmul_rn(sxx, syy), __dmul_rn(sxy, sxy)), tr = __dadd_rn(sxx, syy);
  if (!(tr >= 1e-6 && det > __dmul_rn(__dmul_rn(1e-3, tr), tr))) return;
  const double u = -__ddiv_rn(__dsub_rn(__dmul_rn(syy, sxt), __dmul_rn(sxy, syt)), det);
  const double v = -__ddiv_rn(__dsub_rn(__dmul_rn(sxx, syt), __dmul_rn(sxy, sxt)), det);
  if (fabs(__dsub_rn(u, double(f[i]))) > 1 || fabs(__dsub_rn(v, double(f[P + i]))) > 1) return;
  f[i] = float(u);
  f[P + i] = float(v);
}

void box_mean_planes(const float* d_src, float* d_tmp, float* d_dst, int planes, int H, int W,
                     int r, cudaStream_t st) {
  dim3 block(128), grid(ceil_div(W, 128), H, planes);
  box_rows_kernel<<<grid, block, 0, st>>>(d_src, d_tmp, H, W, r);
  check_launch("box_rows_kernel");
  box_cols_kernel<<<grid, block, 0, st>>>(d_tmp, d_dst, H, W, r);
  check_launch("box_cols_kernel");
}

// gray (B, H, W) -> local contrast (B, H, W); d_tmp, d_m: B*H*W floats each.
void local_contrast(const float* d_gray, float* d_out, float* d_tmp, float* d_m, int B, int H,
                    int W, cudaStream_t st) {
  box_mean_planes(d_gray, d_tmp, d_out, B, H, W, 1, st);
  box_mean_planes(d_out, d_tmp, d_m, B, H, W, 4, st);
  const long long n = (long long)B * H * W;
  sub_kernel<<<ceil_div(n, 256), 256, 0, st>>>(d_out, d_m, n);
  check_launch("sub_kernel");
}

void check_grid(const FlowGrid& g, const char* what) {
  if (g.H <= 0 || g.W <= 0 || !(g.sx > 0) || !(g.sy > 0)) {
    throw Error(ErrorCode::Shape, std::string(what) + ": grid sizes and strides must be positive");
  }
}

void check_batch(int B, const char* what) {
  if (B <= 0) throw Error(ErrorCode::Shape, std::string(what) + ": batch must be positive");
}

}  // namespace
}  // namespace cuda

namespace cuda_dev {

void flow_resample(const float* d_in, const FlowGrid& gi, float* d_out, const FlowGrid& go, int B,
                   int planes, void* stream) {
  cuda::check_grid(gi, "flow_resample");
  cuda::check_grid(go, "flow_resample");
  cuda::check_batch(B, "flow_resample");
  dim3 block(128), grid(cuda::ceil_div(go.W, 128), go.H, B);
  cuda::resample_kernel<<<grid, block, 0, static_cast<cudaStream_t>(stream)>>>(d_in, gi, d_out, go,
                                                                               planes);
  cuda::check_launch("resample_kernel");
}

void flow_warp(const float* d_feat_b, int C, const FlowGrid& gb, const float* d_flow,
               const FlowGrid& ga, float* d_out, int B, void* stream) {
  cuda::check_grid(ga, "flow_warp");
  cuda::check_grid(gb, "flow_warp");
  cuda::check_batch(B, "flow_warp");
  dim3 block(128), grid(cuda::ceil_div(ga.W, 128), ga.H, B);
  cuda::warp_kernel<<<grid, block, 0, static_cast<cudaStream_t>(stream)>>>(d_feat_b, C, gb, d_flow,
                                                                           ga, d_out);
  cuda::check_launch("warp_kernel");
}

void flow_from_global_volume(const float* d_volume, const FlowGrid& ga, const FlowGrid& gb,
                             float* d_flow, float* d_peak, int B, void* stream) {
  cuda::check_grid(ga, "flow_from_global_volume");
  cuda::check_grid(gb, "flow_from_global_volume");
  cuda::check_batch(B, "flow_from_global_volume");
  dim3 block(128), grid(cuda::ceil_div((long long)ga.H * ga.W, 128), B);
  cuda::global_readout_kernel<<<grid, block, 0, static_cast<cudaStream_t>(stream)>>>(
      d_volume, ga, gb, d_flow, d_peak);
  cuda::check_launch("global_readout_kernel");
}

void flow_from_local_volume(const float* d_volume, int R, int H, int W, float* d_residual,
                            float* d_confidence, int B, void* stream) {
  if (R < 0 || H <= 0 || W <= 0) throw Error(ErrorCode::Shape, "flow_from_local_volume: bad sizes");
  cuda::check_batch(B, "flow_from_local_volume");
  dim3 block(128), grid(cuda::ceil_div((long long)H * W, 128), B);
  cuda::local_readout_kernel<<<grid, block, 0, static_cast<cudaStream_t>(stream)>>>(
      d_volume, R, H, W, d_residual, d_confidence);
  cuda::check_launch("local_readout_kernel");
}

void flow_warp_image(const float* d_b, int C, int Hb, int Wb, const float* d_flow, int H, int W,
                     float* d_out, float* d_mask, int B, void* stream) {
  if (C <= 0 || Hb <= 0 || Wb <= 0 || H <= 0 || W <= 0) {
    throw Error(ErrorCode::Shape, "flow_warp_image: sizes must be positive");
  }
  cuda::check_batch(B, "flow_warp_image");
  dim3 block(128), grid(cuda::ceil_div(W, 128), H, B);
  cuda::warp_image_kernel<<<grid, block, 0, static_cast<cudaStream_t>(stream)>>>(
      d_b, C, Hb, Wb, d_flow, H, W, d_out, d_mask);
  cuda::check_launch("warp_image_kernel");
}

void flow_median3(const float* d_src, float* d_dst, int H, int W, int B, void* stream) {
  if (H <= 0 || W <= 0) throw Error(ErrorCode::Shape, "flow_median3: sizes must be positive");
  cuda::check_batch(B, "flow_median3");
  dim3 block(128), grid(cuda::ceil_div(W, 128), H, 2 * B);
  cuda::median3_kernel<<<grid, block, 0, static_cast<cudaStream_t>(stream)>>>(d_src, d_dst, H, W);
  cuda::check_launch("median3_kernel");
}

size_t photometric_workspace_bytes(int B, int H, int W, int Hb, int Wb) {
  const size_t Pa = size_t(H) * W, Pb = size_t(Hb) * Wb, M = std::max(Pa, Pb);
  return 4 * (2 * Pa + 2 * Pb + 5 * Pa + 5 * Pa + 5 * M) * size_t(B);
}

void flow_refine_photometric(const float* d_img_a, const float* d_img_b, int C, int H, int W,
                             int Hb, int Wb, float* d_flow, int iterations, int radius,
                             void* d_workspace, int B, void* stream) {
  if (H <= 0 || W <= 0 || Hb <= 0 || Wb <= 0 || radius < 0 || iterations < 0 || C <= 0) {
    throw Error(ErrorCode::Shape, "flow_refine_photometric: bad sizes");
  }
  cuda::check_batch(B, "flow_refine_photometric");
  if (iterations == 0) return;
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  const long long Pa = (long long)H * W, Pb = (long long)Hb * Wb, M = std::max(Pa, Pb);
  float* ws = static_cast<float*>(d_workspace);
  float* ga = ws;
  float* A = ga + B * Pa;
  float* gb = A + B * Pa;
  float* Bc = gb + B * Pb;
  float* prod = Bc + B * Pb;
  float* sum = prod + 5 * B * Pa;
  float* tmp = sum + 5 * B * Pa;  // 5 * B * M floats
  image_gray(d_img_a, B, C, H, W, ga, st);
  image_gray(d_img_b, B, C, Hb, Wb, gb, st);
  cuda::local_contrast(ga, A, tmp, tmp + B * M, B, H, W, st);
  cuda::local_contrast(gb, Bc, tmp, tmp + B * M, B, Hb, Wb, st);
  for (int it = 0; it < iterations; ++it) {
    dim3 block(128), grid(cuda::ceil_div(W, 128), H, B);
    cuda::photo_prod_kernel<<<grid, block, 0, st>>>(A, Bc, d_flow, prod, H, W, Hb, Wb);
    cuda::check_launch("photo_prod_kernel");
    cuda::box_mean_planes(prod, tmp, sum, 5 * B, H, W, radius, st);
    cuda::photo_solve_kernel<<<dim3(cuda::ceil_div(Pa, 256), B), 256, 0, st>>>(sum, d_flow, Pa);
    cuda::check_launch("photo_solve_kernel");
  }
}

size_t global_fill_workspace_bytes(const FlowGrid& ga, const FlowGrid& gb, int B) {
  return cuda::fill_layout(ga, gb, B).total;
}

void global_consistency_fill(const float* d_volume, const FlowGrid& ga, const FlowGrid& gb,
                             float* d_flow, void* d_workspace, int B, void* stream) {
  cuda::check_grid(ga, "global_consistency_fill");
  cuda::check_grid(gb, "global_consistency_fill");
  cuda::check_batch(B, "global_consistency_fill");
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  const cuda::FillLayout l = cuda::fill_layout(ga, gb, B);
  char* ws = static_cast<char*>(d_workspace);
  int* back = reinterpret_cast<int*>(ws + l.back);
  int* keep = reinterpret_cast<int*>(ws + l.keep);
  int* kept = reinterpret_cast<int*>(ws + l.kept);
  const long long Na = (long long)ga.H * ga.W, Nb = (long long)gb.H * gb.W;
  cuda::check(cudaMemsetAsync(kept, 0, size_t(B) * 4, st), "cudaMemsetAsync");
  cuda::fill_back_kernel<<<dim3(cuda::ceil_div(Nb, 128), B), 128, 0, st>>>(d_volume, Na, Nb, back);
  cuda::check_launch("fill_back_kernel");
  const dim3 grid(cuda::ceil_div(Na, 128), B);
  cuda::fill_keep_kernel<<<grid, 128, 0, st>>>(d_volume, ga, Nb, back, keep, kept);
  cuda::check_launch("fill_keep_kernel");
  cuda::fill_median_kernel<<<grid, 128, 0, st>>>(ga, keep, kept, d_flow);
  cuda::check_launch("fill_median_kernel");
}

void flow_refine_symmetric(const float* d_feat_a, const FlowGrid& ga, const float* d_feat_b,
                           const FlowGrid& gb, int C, float* d_flow, int iterations, int B,
                           void* stream) {
  cuda::check_grid(ga, "flow_refine_symmetric");
  cuda::check_grid(gb, "flow_refine_symmetric");
  cuda::check_batch(B, "flow_refine_symmetric");
  if (iterations <= 0) return;
  dim3 block(64), grid(cuda::ceil_div(ga.W, 64), ga.H, B);
  cuda::refine_kernel<<<grid, block, 0, static_cast<cudaStream_t>(stream)>>>(
      d_feat_a, ga, d_feat_b, gb, C, d_flow, iterations);
  cuda::check_launch("refine_kernel");
}

}  // namespace cuda_dev

// ---- host-pointer twins ------------------------------------------------------------------------

void flow_resample_cuda(const float* flow_in, const FlowGrid& gi, float* flow_out,
                        const FlowGrid& go, const Exec& ex) {
  cuda::check_grid(gi, "flow_resample");
  cuda::check_grid(go, "flow_resample");
  cuda::require_device();
  check_cancel(ex);
  const size_t ni = 2 * size_t(gi.H) * gi.W, no = 2 * size_t(go.H) * go.W;
  cuda::Stream st;
  cuda::DeviceBuffer<float> d_in(ni), d_out(no);
  cuda::to_device(d_in.get(), flow_in, ni, st.get());
  cuda_dev::flow_resample(d_in.get(), gi, d_out.get(), go, 1, 2, st.get());
  cuda::to_host(flow_out, d_out.get(), no, st.get());
  st.sync();
}

void flow_warp_cuda(const float* feat_b, int C, const FlowGrid& gb, const float* flow,
                    const FlowGrid& ga, float* out, const Exec& ex) {
  cuda::check_grid(ga, "flow_warp");
  cuda::check_grid(gb, "flow_warp");
  if (C <= 0) throw Error(ErrorCode::Shape, "flow_warp: C must be positive");
  cuda::require_device();
  check_cancel(ex);
  const size_t Na = size_t(ga.H) * ga.W, Nb = size_t(gb.H) * gb.W;
  cuda::Stream st;
  cuda::DeviceBuffer<float> d_f(size_t(C) * Nb), d_flow(2 * Na), d_out(size_t(C) * Na);
  cuda::to_device(d_f.get(), feat_b, size_t(C) * Nb, st.get());
  cuda::to_device(d_flow.get(), flow, 2 * Na, st.get());
  cuda_dev::flow_warp(d_f.get(), C, gb, d_flow.get(), ga, d_out.get(), 1, st.get());
  cuda::to_host(out, d_out.get(), size_t(C) * Na, st.get());
  st.sync();
}

void flow_from_global_volume_cuda(const float* volume, const FlowGrid& ga, const FlowGrid& gb,
                                  float* flow, float* peak, const Exec& ex) {
  cuda::check_grid(ga, "flow_from_global_volume");
  cuda::check_grid(gb, "flow_from_global_volume");
  cuda::require_device();
  check_cancel(ex);
  const size_t Na = size_t(ga.H) * ga.W, M = size_t(gb.H) * gb.W;
  cuda::Stream st;
  cuda::DeviceBuffer<float> d_v(M * Na), d_flow(2 * Na), d_peak(peak ? Na : 0);
  cuda::to_device(d_v.get(), volume, M * Na, st.get());
  cuda_dev::flow_from_global_volume(d_v.get(), ga, gb, d_flow.get(), d_peak.get(), 1, st.get());
  cuda::to_host(flow, d_flow.get(), 2 * Na, st.get());
  if (peak) cuda::to_host(peak, d_peak.get(), Na, st.get());
  st.sync();
}

void flow_from_local_volume_cuda(const float* volume, int R, int H, int W, float* residual,
                                 float* confidence, const Exec& ex) {
  if (R < 0 || H <= 0 || W <= 0) throw Error(ErrorCode::Shape, "flow_from_local_volume: bad sizes");
  cuda::require_device();
  check_cancel(ex);
  const size_t N = size_t(H) * W, D = size_t(2 * R + 1) * (2 * R + 1);
  cuda::Stream st;
  cuda::DeviceBuffer<float> d_v(D * N), d_res(2 * N), d_conf(confidence ? N : 0);
  cuda::to_device(d_v.get(), volume, D * N, st.get());
  cuda_dev::flow_from_local_volume(d_v.get(), R, H, W, d_res.get(), d_conf.get(), 1, st.get());
  cuda::to_host(residual, d_res.get(), 2 * N, st.get());
  if (confidence) cuda::to_host(confidence, d_conf.get(), N, st.get());
  st.sync();
}

void global_consistency_fill_cuda(const float* volume, const FlowGrid& ga, const FlowGrid& gb,
                                  float* flow, const Exec& ex) {
  cuda::check_grid(ga, "global_consistency_fill");
  cuda::check_grid(gb, "global_consistency_fill");
  cuda::require_device();
  check_cancel(ex);
  const size_t Na = size_t(ga.H) * ga.W, M = size_t(gb.H) * gb.W;
  cuda::Stream st;
  cuda::DeviceBuffer<float> d_v(M * Na), d_flow(2 * Na);
  cuda::DeviceBuffer<char> d_ws(cuda_dev::global_fill_workspace_bytes(ga, gb, 1));
  cuda::to_device(d_v.get(), volume, M * Na, st.get());
  cuda::to_device(d_flow.get(), flow, 2 * Na, st.get());
  cuda_dev::global_consistency_fill(d_v.get(), ga, gb, d_flow.get(), d_ws.get(), 1, st.get());
  cuda::to_host(flow, d_flow.get(), 2 * Na, st.get());
  st.sync();
}

void flow_warp_image_cuda(const float* b, int C, int Hb, int Wb, const float* flow, int H, int W,
                          float* out, float* mask, const Exec& ex) {
  if (C <= 0 || Hb <= 0 || Wb <= 0 || H <= 0 || W <= 0) {
    throw Error(ErrorCode::Shape, "flow_warp_image: sizes must be positive");
  }
  cuda::require_device();
  check_cancel(ex);
  const size_t N = size_t(H) * W, Nb = size_t(Hb) * Wb;
  cuda::Stream st;
  cuda::DeviceBuffer<float> d_b(size_t(C) * Nb), d_flow(2 * N), d_out(size_t(C) * N),
      d_mask(mask ? N : 0);
  cuda::to_device(d_b.get(), b, size_t(C) * Nb, st.get());
  cuda::to_device(d_flow.get(), flow, 2 * N, st.get());
  cuda_dev::flow_warp_image(d_b.get(), C, Hb, Wb, d_flow.get(), H, W, d_out.get(), d_mask.get(), 1,
                            st.get());
  cuda::to_host(out, d_out.get(), size_t(C) * N, st.get());
  if (mask) cuda::to_host(mask, d_mask.get(), N, st.get());
  st.sync();
}

void flow_median3_cuda(float* flow, int H, int W, const Exec& ex) {
  if (H <= 0 || W <= 0) throw Error(ErrorCode::Shape, "flow_median3: sizes must be positive");
  cuda::require_device();
  check_cancel(ex);
  const size_t n = 2 * size_t(H) * W;
  cuda::Stream st;
  cuda::DeviceBuffer<float> d_src(n), d_dst(n);
  cuda::to_device(d_src.get(), flow, n, st.get());
  cuda_dev::flow_median3(d_src.get(), d_dst.get(), H, W, 1, st.get());
  cuda::to_host(flow, d_dst.get(), n, st.get());
  st.sync();
}

void flow_refine_symmetric_cuda(const float* feat_a, const FlowGrid& ga, const float* feat_b,
                                const FlowGrid& gb, int C, float* flow, int iterations,
                                const Exec& ex) {
  cuda::check_grid(ga, "flow_refine_symmetric");
  cuda::check_grid(gb, "flow_refine_symmetric");
  if (C <= 0) throw Error(ErrorCode::Shape, "flow_refine_symmetric: C must be positive");
  cuda::require_device();
  check_cancel(ex);
  const size_t Na = size_t(ga.H) * ga.W, Nb = size_t(gb.H) * gb.W;
  cuda::Stream st;
  cuda::DeviceBuffer<float> d_a(size_t(C) * Na), d_b(size_t(C) * Nb), d_flow(2 * Na);
  cuda::to_device(d_a.get(), feat_a, size_t(C) * Na, st.get());
  cuda::to_device(d_b.get(), feat_b, size_t(C) * Nb, st.get());
  cuda::to_device(d_flow.get(), flow, 2 * Na, st.get());
  cuda_dev::flow_refine_symmetric(d_a.get(), ga, d_b.get(), gb, C, d_flow.get(), iterations, 1,
                                  st.get());
  cuda::to_host(flow, d_flow.get(), 2 * Na, st.get());
  st.sync();
}

void flow_refine_photometric_cuda(const float* gray_a, int H, int W, const float* gray_b, int Hb,
                                  int Wb, float* flow, int iterations, int radius, const Exec& ex) {
  if (H <= 0 || W <= 0 || Hb <= 0 || Wb <= 0 || radius < 0 || iterations < 0) {
    throw Error(ErrorCode::Shape, "flow_refine_photometric: bad sizes");
  }
  cuda::require_device();
  check_cancel(ex);
  const size_t Pa = size_t(H) * W, Pb = size_t(Hb) * Wb;
  cuda::Stream st;
  cuda::DeviceBuffer<float> d_a(Pa), d_b(Pb), d_flow(2 * Pa);
  cuda::DeviceBuffer<char> d_ws(cuda_dev::photometric_workspace_bytes(1, H, W, Hb, Wb));
  cuda::to_device(d_a.get(), gray_a, Pa, st.get());
  cuda::to_device(d_b.get(), gray_b, Pb, st.get());
  cuda::to_device(d_flow.get(), flow, 2 * Pa, st.get());
  cuda_dev::flow_refine_photometric(d_a.get(), d_b.get(), 1, H, W, Hb, Wb, d_flow.get(), iterations,
                                    radius, d_ws.get(), 1, st.get());
  cuda::to_host(flow, d_flow.get(), 2 * Pa, st.get());
  st.sync();
}

}  // namespace gocor
