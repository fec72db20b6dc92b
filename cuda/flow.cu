// Flow read-out, resampling, warping and the checks of the image pipeline on the GPU: twins of
// cpp/core/flow.cpp's flow_resample, flow_warp, flow_from_global_volume, flow_from_local_volume,
// flow_warp_image, flow_median3, flow_refine_symmetric, flow_volume_aggregate, flow_consistency
// and flow_texture_mask. Coordinates are computed in double as on the CPU, and all arithmetic uses
// explicitly rounded multiplies and adds in the CPU's order (__fmul_rn / __fadd_rn, __dmul_rn /
// __dadd_rn: the CPU build, baseline x86-64, has no FMA, while this library is compiled with
// --fmad=true, which would fuse a * b + c in float and double), so equal inputs give equal outputs
// to the last bit. The exceptions are flow_volume_aggregate and the window means inside
// flow_texture_mask (which uses it): the CPU keeps running sums over the window, the GPU sums each
// window afresh (both in double), so the two may differ in the last bit.
// Every device entry takes a batch of B independent fields laid out one after another.
#include <cmath>
#include <cstdint>

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

// This thread's cell of a (B, ., ga) launch (grid: columns of 128 threads, rows, items) that
// reads a grid gb: column j, row i, item b, the two grids' cell counts and the cell's offset o.
struct GridCell {
  int j, i;
  long long b, Na, Nb, o;
};
__device__ __forceinline__ GridCell grid_cell(const FlowGrid& ga, const FlowGrid& gb) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x, i = blockIdx.y;
  return {
      j, i, blockIdx.z, (long long)ga.H * ga.W, (long long)gb.H * gb.W, (long long)i * ga.W + j};
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
  const auto [j, i, b, Na, Nb, o] = grid_cell(ga, gb);
  if (j >= ga.W) return;
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

constexpr int kDotLanes = 16;  // flow.cpp's bilinear_dot

// feat_a (B, C, ga), feat_b (B, C, gb), flow (B, 2, ga) updated in place. A cell's update reads
// only its own flow, so all iterations run in one thread.

__global__ void refine_kernel(const float* __restrict__ feat_a, FlowGrid ga,
                              const float* __restrict__ feat_b, FlowGrid gb, int C,
                              float* __restrict__ flow, int iterations) {
  const auto [j, i, b, Na, Nb, o] = grid_cell(ga, gb);
  if (j >= ga.W) return;
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
        // The CPU's bilinear_dot: channel c into lane c % 16, then the lanes added pairwise.
        float lane[kDotLanes] = {};
        for (int c0 = 0; c0 < C; c0 += kDotLanes) {
#pragma unroll
          for (int k = 0; k < kDotLanes; ++k) {
            const int c = c0 + k;
            if (c < C) {
              lane[k] = __fadd_rn(lane[k], __fmul_rn(read(fa + c * Na, ta), read(fb + c * Nb, tb)));
            }
          }
        }
#pragma unroll
        for (int w = kDotLanes / 2; w > 0; w /= 2) {
#pragma unroll
          for (int k = 0; k < w; ++k) lane[k] = __fadd_rn(lane[k], lane[k + w]);
        }
        score[dy + 1][dx + 1] = lane[0];
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

// ---- flow_volume_aggregate ----

// volume (P, H, W) -> rows (P, H, W): the sum of each in-grid row window, in double.
__global__ void aggregate_rows_kernel(const float* __restrict__ volume, double* __restrict__ rows,
                                      int H, int W, int r) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y;
  if (x >= W) return;
  const long long row = ((long long)blockIdx.z * H + y) * W;
  double s = 0;
  for (int k = max(0, x - r); k <= min(W - 1, x + r); ++k)
    s = __dadd_rn(s, double(volume[row + k]));
  rows[row + x] = s;
}

// rows (P, H, W) -> volume (P, H, W): the column window of the row sums over the number of cells.
__global__ void aggregate_cols_kernel(const double* __restrict__ rows, float* __restrict__ volume,
                                      int H, int W, int r) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y;
  if (x >= W) return;
  const double* plane = rows + (long long)blockIdx.z * H * W;
  const int y0 = max(0, y - r), y1 = min(H - 1, y + r);
  double s = 0;
  for (int k = y0; k <= y1; ++k) s = __dadd_rn(s, plane[(long long)k * W + x]);
  const int nx = min(W - 1, x + r) - max(0, x - r) + 1;
  volume[((long long)blockIdx.z * H + y) * W + x] = float(__ddiv_rn(s, double(nx * (y1 - y0 + 1))));
}

// ---- flow_consistency ----

// fwd (B, 2, H, W), bwd (B, 2, Hb, Wb) -> valid (B, H, W) and error (B, H, W), each or null.
__global__ void consistency_kernel(const float* __restrict__ fwd, int H, int W,
                                   const float* __restrict__ bwd, int Hb, int Wb, float abs_tol,
                                   float rel_tol, uint8_t* __restrict__ valid,
                                   float* __restrict__ error) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y;
  const long long b = blockIdx.z;
  if (x >= W) return;
  const long long N = (long long)H * W, Nb = (long long)Hb * Wb, i = (long long)y * W + x;
  const float* f = fwd + b * 2 * N;
  const float* g = bwd + b * 2 * Nb;
  const float u = f[i], v = f[N + i];
  const double bx = __dadd_rn(double(x), double(u)), by = __dadd_rn(double(y), double(v));
  float e = INFINITY;
  bool ok = false;
  if (bx > -0.5 && by > -0.5 && bx < Wb - 0.5 && by < Hb - 0.5) {
    const Bilinear t = bilinear_taps(bx, by, Hb, Wb);
    const float bu = read(g, t), bv = read(g + Nb, t);
    const float ex = __fadd_rn(u, bu), ey = __fadd_rn(v, bv);
    const float e2 = __fadd_rn(__fmul_rn(ex, ex), __fmul_rn(ey, ey));
    e = __fsqrt_rn(e2);
    const float m2 =
        __fadd_rn(__fadd_rn(__fadd_rn(__fmul_rn(u, u), __fmul_rn(v, v)), __fmul_rn(bu, bu)),
                  __fmul_rn(bv, bv));
    ok = e2 <= __fadd_rn(__fmul_rn(abs_tol, abs_tol), __fmul_rn(__fmul_rn(rel_tol, rel_tol), m2));
  }
  if (error != nullptr) error[b * N + i] = e;
  if (valid != nullptr) valid[b * N + i] = ok;
}

// ---- flow_texture_mask ----

// gray (B, H, W) -> prod (B, 3, H, W): gx^2, gy^2 and gx gy of the central differences (the
// clamped neighbour at the border).
__global__ void structure_products_kernel(const float* __restrict__ gray, float* __restrict__ prod,
                                          int H, int W) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y;
  const long long b = blockIdx.z;
  if (x >= W) return;
  const long long N = (long long)H * W;
  const float* g = gray + b * N;
  const long long row = (long long)y * W, up = (long long)max(y - 1, 0) * W,
                  down = (long long)min(y + 1, H - 1) * W;
  const float gx = __fmul_rn(0.5f, __fsub_rn(g[row + min(x + 1, W - 1)], g[row + max(x - 1, 0)]));
  const float gy = __fmul_rn(0.5f, __fsub_rn(g[down + x], g[up + x]));
  float* p = prod + b * 3 * N + row + x;
  p[0] = __fmul_rn(gx, gx);
  p[N] = __fmul_rn(gy, gy);
  p[2 * N] = __fmul_rn(gx, gy);
}

// Window means (B, 3, H, W) of gx^2, gy^2, gx gy -> textured (B, H, W): the measure of the
// structure tensor (its smaller eigenvalue or its trace), in double, is at least t.
__global__ void texture_measure_kernel(const float* __restrict__ mean, long long N, double t,
                                       bool trace, uint8_t* __restrict__ textured) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const long long b = blockIdx.y;
  if (i >= N) return;
  const float* m = mean + b * 3 * N;
  const double a = m[i], c = m[N + i], xy = m[2 * N + i];
  if (trace) {
    textured[b * N + i] = __dadd_rn(a, c) >= t;
    return;
  }
  const double d = __dsub_rn(a, c);
  const double root = __dsqrt_rn(__dadd_rn(__dmul_rn(__dmul_rn(0.25, d), d), __dmul_rn(xy, xy)));
  textured[b * N + i] = __dsub_rn(__dmul_rn(0.5, __dadd_rn(a, c)), root) >= t;
}

void check_grid(const FlowGrid& g, const char* what) {
  if (g.H <= 0 || g.W <= 0 || !(g.sx > 0) || !(g.sy > 0)) {
    throw Error(ErrorCode::Shape, std::string(what) + ": grid sizes and strides must be positive");
  }
}

void check_batch(int B, const char* what) {
  if (B <= 0) throw Error(ErrorCode::Shape, std::string(what) + ": batch must be positive");
}

// The CPU twins' checks (flow.cpp), with their messages.
void check_aggregate(int D, int H, int W, int radius) {
  if (D <= 0 || H <= 0 || W <= 0 || radius < 0) {
    throw Error(ErrorCode::Shape, "flow_volume_aggregate: sizes must be positive");
  }
}

void check_consistency(int H, int W, int Hb, int Wb, float abs_tol, float rel_tol) {
  if (H <= 0 || W <= 0 || Hb <= 0 || Wb <= 0 || !(abs_tol >= 0) || !(rel_tol >= 0)) {
    throw Error(ErrorCode::Shape, "flow_consistency: sizes must be positive, tolerances >= 0");
  }
}

void check_texture(int H, int W, int radius, float min_gradient) {
  if (H <= 0 || W <= 0 || radius < 0 || !(min_gradient >= 0)) {
    throw Error(ErrorCode::Shape, "flow_texture_mask: sizes must be positive");
  }
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

size_t volume_aggregate_workspace_bytes(int D, int H, int W, int B) {
  return sizeof(double) * size_t(B) * D * H * W;
}

void flow_volume_aggregate(float* d_volume, int D, int H, int W, int radius, void* d_workspace,
                           int B, void* stream) {
  cuda::check_aggregate(D, H, W, radius);
  cuda::check_batch(B, "flow_volume_aggregate");
  if (radius == 0) return;
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  double* rows = static_cast<double*>(d_workspace);
  const dim3 block(128), grid(cuda::ceil_div(W, 128), H, unsigned(B) * D);
  cuda::aggregate_rows_kernel<<<grid, block, 0, st>>>(d_volume, rows, H, W, radius);
  cuda::check_launch("aggregate_rows_kernel");
  cuda::aggregate_cols_kernel<<<grid, block, 0, st>>>(rows, d_volume, H, W, radius);
  cuda::check_launch("aggregate_cols_kernel");
}

void flow_consistency(const float* d_fwd, int H, int W, const float* d_bwd, int Hb, int Wb,
                      float abs_tol, float rel_tol, uint8_t* d_valid, float* d_error, int B,
                      void* stream) {
  cuda::check_consistency(H, W, Hb, Wb, abs_tol, rel_tol);
  cuda::check_batch(B, "flow_consistency");
  const dim3 block(128), grid(cuda::ceil_div(W, 128), H, B);
  cuda::consistency_kernel<<<grid, block, 0, static_cast<cudaStream_t>(stream)>>>(
      d_fwd, H, W, d_bwd, Hb, Wb, abs_tol, rel_tol, d_valid, d_error);
  cuda::check_launch("consistency_kernel");
}

size_t texture_mask_workspace_bytes(int H, int W, int B) {
  // the three product planes, and the row sums of their window means (as flow_volume_aggregate)
  return (sizeof(float) + sizeof(double)) * 3 * size_t(B) * H * W;
}

void flow_texture_mask(const float* d_gray, int H, int W, int radius, float min_gradient,
                       TextureMeasure measure, uint8_t* d_textured, void* d_workspace, int B,
                       void* stream) {
  cuda::check_texture(H, W, radius, min_gradient);
  cuda::check_batch(B, "flow_texture_mask");
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  const long long N = (long long)H * W;
  float* mean = static_cast<float*>(d_workspace);
  double* rows = reinterpret_cast<double*>(mean + 3 * B * N);
  cuda::structure_products_kernel<<<dim3(cuda::ceil_div(W, 128), H, B), 128, 0, st>>>(d_gray, mean,
                                                                                      H, W);
  cuda::check_launch("structure_products_kernel");
  // The products' window means in place, with flow_volume_aggregate's kernels (as flow.cpp).
  if (radius > 0) {
    const dim3 block(128), grid(cuda::ceil_div(W, 128), H, 3u * unsigned(B));
    cuda::aggregate_rows_kernel<<<grid, block, 0, st>>>(mean, rows, H, W, radius);
    cuda::check_launch("aggregate_rows_kernel");
    cuda::aggregate_cols_kernel<<<grid, block, 0, st>>>(rows, mean, H, W, radius);
    cuda::check_launch("aggregate_cols_kernel");
  }
  const double t = double(min_gradient) * min_gradient;  // as flow.cpp (a host multiply)
  cuda::texture_measure_kernel<<<dim3(cuda::ceil_div(N, 256), B), 256, 0, st>>>(
      mean, N, t, measure == TextureMeasure::Gradient, d_textured);
  cuda::check_launch("texture_measure_kernel");
}

}  // namespace cuda_dev

// ---- host-pointer twins ------------------------------------------------------------------------

void flow_resample_cuda(const float* flow_in, const FlowGrid& gi, float* flow_out,
                        const FlowGrid& go, const Exec& ex) {
  cuda::check_grid(gi, "flow_resample");
  cuda::check_grid(go, "flow_resample");
  cuda::HostCall call(ex);
  const size_t ni = 2 * size_t(gi.H) * gi.W, no = 2 * size_t(go.H) * go.W;
  cuda_dev::flow_resample(call.in(flow_in, ni), gi, call.out(flow_out, no), go, 1, 2,
                          call.stream());
  call.finish();
}

void flow_warp_cuda(const float* feat_b, int C, const FlowGrid& gb, const float* flow,
                    const FlowGrid& ga, float* out, const Exec& ex) {
  cuda::check_grid(ga, "flow_warp");
  cuda::check_grid(gb, "flow_warp");
  if (C <= 0) throw Error(ErrorCode::Shape, "flow_warp: C must be positive");
  cuda::HostCall call(ex);
  const size_t Na = size_t(ga.H) * ga.W, Nb = size_t(gb.H) * gb.W;
  cuda_dev::flow_warp(call.in(feat_b, size_t(C) * Nb), C, gb, call.in(flow, 2 * Na), ga,
                      call.out(out, size_t(C) * Na), 1, call.stream());
  call.finish();
}

void flow_from_global_volume_cuda(const float* volume, const FlowGrid& ga, const FlowGrid& gb,
                                  float* flow, float* peak, const Exec& ex) {
  cuda::check_grid(ga, "flow_from_global_volume");
  cuda::check_grid(gb, "flow_from_global_volume");
  cuda::HostCall call(ex);
  const size_t Na = size_t(ga.H) * ga.W, M = size_t(gb.H) * gb.W;
  cuda_dev::flow_from_global_volume(call.in(volume, M * Na), ga, gb, call.out(flow, 2 * Na),
                                    call.out(peak, Na), 1, call.stream());
  call.finish();
}

void flow_from_local_volume_cuda(const float* volume, int R, int H, int W, float* residual,
                                 float* confidence, const Exec& ex) {
  if (R < 0 || H <= 0 || W <= 0) throw Error(ErrorCode::Shape, "flow_from_local_volume: bad sizes");
  cuda::HostCall call(ex);
  const size_t N = size_t(H) * W, D = size_t(2 * R + 1) * (2 * R + 1);
  cuda_dev::flow_from_local_volume(call.in(volume, D * N), R, H, W, call.out(residual, 2 * N),
                                   call.out(confidence, N), 1, call.stream());
  call.finish();
}

void flow_warp_image_cuda(const float* b, int C, int Hb, int Wb, const float* flow, int H, int W,
                          float* out, float* mask, const Exec& ex) {
  if (C <= 0 || Hb <= 0 || Wb <= 0 || H <= 0 || W <= 0) {
    throw Error(ErrorCode::Shape, "flow_warp_image: sizes must be positive");
  }
  cuda::HostCall call(ex);
  const size_t N = size_t(H) * W, Nb = size_t(Hb) * Wb;
  cuda_dev::flow_warp_image(call.in(b, size_t(C) * Nb), C, Hb, Wb, call.in(flow, 2 * N), H, W,
                            call.out(out, size_t(C) * N), call.out(mask, N), 1, call.stream());
  call.finish();
}

void flow_median3_cuda(float* flow, int H, int W, const Exec& ex) {
  if (H <= 0 || W <= 0) throw Error(ErrorCode::Shape, "flow_median3: sizes must be positive");
  cuda::HostCall call(ex);
  const size_t n = 2 * size_t(H) * W;
  const float* d_src =
      call.in(static_cast<const float*>(flow), n);  // before out(): the median is not in place
  cuda_dev::flow_median3(d_src, call.out(flow, n), H, W, 1, call.stream());
  call.finish();
}

void flow_refine_symmetric_cuda(const float* feat_a, const FlowGrid& ga, const float* feat_b,
                                const FlowGrid& gb, int C, float* flow, int iterations,
                                const Exec& ex) {
  cuda::check_grid(ga, "flow_refine_symmetric");
  cuda::check_grid(gb, "flow_refine_symmetric");
  if (C <= 0) throw Error(ErrorCode::Shape, "flow_refine_symmetric: C must be positive");
  cuda::HostCall call(ex);
  const size_t Na = size_t(ga.H) * ga.W, Nb = size_t(gb.H) * gb.W;
  cuda_dev::flow_refine_symmetric(call.in(feat_a, size_t(C) * Na), ga,
                                  call.in(feat_b, size_t(C) * Nb), gb, C, call.inout(flow, 2 * Na),
                                  iterations, 1, call.stream());
  call.finish();
}

void flow_volume_aggregate_cuda(float* volume, int D, int H, int W, int radius, const Exec& ex) {
  cuda::check_aggregate(D, H, W, radius);
  cuda::HostCall call(ex);
  if (radius == 0) return;
  cuda_dev::flow_volume_aggregate(
      call.inout(volume, size_t(D) * H * W), D, H, W, radius,
      call.scratch<char>(cuda_dev::volume_aggregate_workspace_bytes(D, H, W, 1)), 1, call.stream());
  call.finish();
}

void flow_consistency_cuda(const float* fwd, int H, int W, const float* bwd, int Hb, int Wb,
                           float abs_tol, float rel_tol, uint8_t* valid, float* error,
                           const Exec& ex) {
  cuda::check_consistency(H, W, Hb, Wb, abs_tol, rel_tol);
  cuda::HostCall call(ex);
  const size_t N = size_t(H) * W, Nb = size_t(Hb) * Wb;
  cuda_dev::flow_consistency(call.in(fwd, 2 * N), H, W, call.in(bwd, 2 * Nb), Hb, Wb, abs_tol,
                             rel_tol, call.out(valid, N), call.out(error, N), 1, call.stream());
  call.finish();
}

void flow_texture_mask_cuda(const float* gray, int H, int W, int radius, float min_gradient,
                            TextureMeasure measure, uint8_t* textured, const Exec& ex) {
  cuda::check_texture(H, W, radius, min_gradient);
  cuda::HostCall call(ex);
  const size_t N = size_t(H) * W;
  cuda_dev::flow_texture_mask(
      call.in(gray, N), H, W, radius, min_gradient, measure, call.out(textured, N),
      call.scratch<char>(cuda_dev::texture_mask_workspace_bytes(H, W, 1)), 1, call.stream());
  call.finish();
}

}  // namespace gocor
