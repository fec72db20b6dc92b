// Dense Inverse Search refinement on the GPU: the twin of cpp/core/dis.cpp's flow_refine_dis,
// step for step: the pyramids, the area-averaged seed, per scale the inverse search of every
// patch (one thread each; with spatial propagation, two sweeps of one block per stripe of 32
// patch rows, its rows walked as an anti-diagonal wavefront), the densification (one thread per
// pixel, its covering patches in the CPU's order) and the variational refinement (warp,
// linearisation, red-black SOR sweeps over the plain pixel grid: a pixel of colour (x + y) & 1
// reads only the other colour, as in the CPU's checkerboard layout), then the upsampling to the
// next scale.
// Rounding: every float operation is the CPU's, in its order, rounded on its own (rounded.cuh),
// and the sums over a patch are kept in four lanes (column mod 4) added pairwise at the end, as
// the CPU's 4-lane (portable) kernels do; the reciprocal square root is the CPU's bit guess with
// three Newton steps. So the GPU gives the bits of the CPU twin run at the portable SIMD level;
// at its AVX2 level the CPU sums 8 lanes and fuses multiply-adds, which changes its own results
// in rounding only (dis.h states how much); the parity rows compare against both.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "cuda_util.cuh"
#include "dis.h"
#include "gocor_cuda.h"
#include "gocor_cuda_device.cuh"
#include "rounded.cuh"

namespace gocor {
namespace cuda {
namespace {

// dis.cpp's constants.
constexpr float kGrey = 255.f;
constexpr float kEps2 = 1e-6f;
constexpr float kZeta2 = (1.f / kGrey) * (1.f / kGrey);
constexpr float kSorOmega = 1.9f;
constexpr float kDiagFloor = 1e-6f;
constexpr int kLanes = 4;  // the portable kernels' vector width

__device__ __forceinline__ int clampi(int v, int lo, int hi) {
  return v < lo ? lo : (hi < v ? hi : v);
}
__device__ __forceinline__ float clampf(float v, float lo, float hi) {
  return v < lo ? lo : (hi < v ? hi : v);
}
// floor(x) as the CPU's floor_int: truncation, one less when that rounded up.
__device__ __forceinline__ int floor_int(float x) {
  const int i = int(x);
  return i - (float(i) > x);
}
// The CPU's rsqrt: a guess from the bits and three Newton steps.
__device__ __forceinline__ float rsqrt_newton(float x) {
  float y = __int_as_float(0x5f375a86 - (__float_as_int(x) >> 1));
  const float hx = rn::mul(x, 0.5f);
  for (int i = 0; i < 3; ++i) y = rn::mul(y, rn::sub(1.5f, rn::mul(rn::mul(hx, y), y)));
  return y;
}
// Sum of four lanes as the CPU's hsum: (l0 + l2) + (l1 + l3).
__device__ __forceinline__ float hsum(const float (&l)[kLanes]) {
  return rn::add(rn::add(l[0], l[2]), rn::add(l[1], l[3]));
}

// A dense (h, w) plane on the device.
struct Plane {
  float* p;
  int h, w;
  __device__ float at(int y, int x) const { return p[size_t(y) * w + x]; }
  __device__ float& at(int y, int x) { return p[size_t(y) * w + x]; }
  // Border-replicated read.
  __device__ float clamped(int y, int x) const {
    return at(clampi(y, 0, h - 1), clampi(x, 0, w - 1));
  }
};

// ---- pyramids ----------------------------------------------------------------------------------

// [1 3 3 1] / 8 of a, b, c, d in the CPU's order.
__device__ __forceinline__ float binomial(float a, float b, float c, float d) {
  return rn::mul(0.125f, rn::add(rn::add(a, rn::mul(3.f, rn::add(b, c))), d));
}

// in (h, w) -> out (h, (w + 1) / 2): the horizontal half of dis.cpp's downsample.
__global__ void down_rows_kernel(Plane in, Plane out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y;
  if (i >= out.w) return;
  const int x = 2 * i;
  out.at(y, i) =
      binomial(in.clamped(y, x - 1), in.at(y, x), in.clamped(y, x + 1), in.clamped(y, x + 2));
}

// in (h, w2) -> out ((h + 1) / 2, w2): the vertical half.
__global__ void down_cols_kernel(Plane in, Plane out) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x, i = blockIdx.y;
  if (x >= out.w) return;
  const int y = 2 * i;
  out.at(i, x) =
      binomial(in.clamped(y - 1, x), in.at(y, x), in.clamped(y + 1, x), in.clamped(y + 2, x));
}

// Central differences with replicated borders.
__global__ void gradients_kernel(Plane img, Plane gx, Plane gy) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y;
  if (x >= img.w) return;
  gx.at(y, x) = rn::mul(0.5f, rn::sub(img.clamped(y, x + 1), img.clamped(y, x - 1)));
  gy.at(y, x) = rn::mul(0.5f, rn::sub(img.clamped(y + 1, x), img.clamped(y - 1, x)));
}

// One flow component (H, W) -> (h, w): the mean over each f x f block, divided by f.
__global__ void area_down_kernel(const float* __restrict__ in, int H, int W, Plane out, int f) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x, i = blockIdx.y;
  if (j >= out.w) return;
  const int y0 = i * f, y1 = min(y0 + f, H), x0 = j * f, x1 = min(x0 + f, W);
  float s = 0;
  for (int y = y0; y < y1; ++y) {
    for (int x = x0; x < x1; ++x) s = rn::add(s, in[size_t(y) * W + x]);
  }
  out.at(i, j) = rn::div(s, rn::mul(float(f), float((y1 - y0) * (x1 - x0))));
}

// (u, v) of a coarser level -> (out_u, out_v): bilinear at x_coarse = (x + 0.5) / f - 0.5
// (border clamped), vectors times f.
__global__ void upsample_kernel(Plane u, Plane v, Plane out_u, Plane out_v, int f) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y;
  if (x >= out_u.w) return;
  const float inv = 1.f / float(f);
  const float X = clampf(rn::sub(rn::mul(rn::add(float(x), 0.5f), inv), 0.5f), 0.f, float(u.w - 1));
  const float Y = clampf(rn::sub(rn::mul(rn::add(float(y), 0.5f), inv), 0.5f), 0.f, float(u.h - 1));
  const int x0 = min(int(X), u.w - 1), x1 = min(x0 + 1, u.w - 1);
  const int y0 = min(int(Y), u.h - 1), y1 = min(y0 + 1, u.h - 1);
  const float ax = rn::sub(X, float(x0)), ay = rn::sub(Y, float(y0));
  for (int k = 0; k < 2; ++k) {
    const Plane& in = k == 0 ? u : v;
    const float t = rn::lerp(in.at(y0, x0), in.at(y0, x1), ax);
    const float d = rn::lerp(in.at(y1, x0), in.at(y1, x1), ax);
    (k == 0 ? out_u : out_v).at(y, x) = rn::mul(float(f), rn::lerp(t, d, ay));
  }
}

// ---- patch inverse search ----------------------------------------------------------------------

struct PatchFlow {
  float u, v, offset;
};

// Where a block of cols x rows of b is read from (X, Y): dis.cpp's block_taps (without `inside`:
// the border-clamped read below equals the direct one inside b).
struct Taps {
  int ix, iy;
  float ax, ay;
};

__device__ __forceinline__ Taps block_taps(const Plane& b, float X, float Y, int cols, int rows) {
  X = clampf(X, rn::sub(-float(cols), 1.f), float(b.w));
  Y = clampf(Y, rn::sub(-float(rows), 1.f), float(b.h));
  const int ix = floor_int(X), iy = floor_int(Y);
  return {ix, iy, rn::sub(X, float(ix)), rn::sub(Y, float(iy))};
}

// b at (ix + c, iy + r) + the fractions, borders replicated.
__device__ __forceinline__ float block_read(const Plane& b, const Taps& t, int r, int c) {
  const float top =
      rn::lerp(b.clamped(t.iy + r, t.ix + c), b.clamped(t.iy + r, t.ix + c + 1), t.ax);
  const float bottom =
      rn::lerp(b.clamped(t.iy + r + 1, t.ix + c), b.clamped(t.iy + r + 1, t.ix + c + 1), t.ax);
  return rn::lerp(top, bottom, t.ay);
}

// Every patch sum visits rows, then columns in lanes of 4 (column c in lane c % 4), as the CPU's
// 4-lane kernels do.
template <class Fn>
__device__ __forceinline__ void patch_lanes(int p, Fn&& fn) {
  for (int r = 0; r < p; ++r) {
    for (int c = 0; c < p; ++c) fn(r, c, c % kLanes);
  }
}

// dis.cpp's patch_mean: the mean of the scale's flow (fu, fv) over the patch at (x0, y0).
__device__ PatchFlow patch_mean(const Plane& fu, const Plane& fv, int x0, int y0, int p) {
  float su[kLanes] = {}, sv[kLanes] = {};
  patch_lanes(p, [&](int r, int c, int l) {
    su[l] = rn::add(su[l], fu.at(y0 + r, x0 + c));
    sv[l] = rn::add(sv[l], fv.at(y0 + r, x0 + c));
  });
  const float inv = 1.f / float(p * p);
  return {rn::mul(hsum(su), inv), rn::mul(hsum(sv), inv), 0.f};
}

// A's patch at (x0, y0) against b read at (x0 + u, y0 + v): the sum of e = b - a, the
// mean-normalised SSD, and the sums of a's gradients times e (one evaluation of search_patch).
struct PatchEval {
  float sum_e, ssd, bx, by;
};

__device__ PatchEval patch_eval(const Plane& a, const Plane& agx, const Plane& agy, const Plane& b,
                                int x0, int y0, int p, float u, float v) {
  const int pc = (p + kLanes - 1) / kLanes * kLanes, n = p * p;
  const Taps tp = block_taps(b, rn::add(float(x0), u), rn::add(float(y0), v), pc, p);
  float se[kLanes] = {}, see[kLanes] = {}, bx[kLanes] = {}, by[kLanes] = {};
  patch_lanes(p, [&](int r, int c, int l) {
    const float e = rn::sub(block_read(b, tp, r, c), a.at(y0 + r, x0 + c));
    se[l] = rn::add(se[l], e);
    see[l] = rn::add(see[l], rn::mul(e, e));
    bx[l] = rn::add(bx[l], rn::mul(agx.at(y0 + r, x0 + c), e));
    by[l] = rn::add(by[l], rn::mul(agy.at(y0 + r, x0 + c), e));
  });
  const float sum_e = hsum(se);
  return {sum_e, rn::sub(hsum(see), rn::div(rn::mul(sum_e, sum_e), float(n))), hsum(bx), hsum(by)};
}

// dis.cpp's search_patch: inverse-compositional Gauss-Newton on the mean-normalised SSD of a's
// patch at (x0, y0), from (u0, v0), at most max_iters steps.
__device__ PatchFlow search_patch(const Plane& a, const Plane& agx, const Plane& agy,
                                  const Plane& b, int x0, int y0, int p, int max_iters, float u0,
                                  float v0) {
  const int n = p * p;
  float sgx[kLanes] = {}, sgy[kLanes] = {};
  patch_lanes(p, [&](int r, int c, int l) {
    sgx[l] = rn::add(sgx[l], agx.at(y0 + r, x0 + c));
    sgy[l] = rn::add(sgy[l], agy.at(y0 + r, x0 + c));
  });
  const float mgx = rn::div(hsum(sgx), float(n)), mgy = rn::div(hsum(sgy), float(n));
  float vxx[kLanes] = {}, vxy[kLanes] = {}, vyy[kLanes] = {};
  patch_lanes(p, [&](int r, int c, int l) {
    const float cx = rn::sub(agx.at(y0 + r, x0 + c), mgx),
                cy = rn::sub(agy.at(y0 + r, x0 + c), mgy);
    vxx[l] = rn::add(vxx[l], rn::mul(cx, cx));
    vxy[l] = rn::add(vxy[l], rn::mul(cx, cy));
    vyy[l] = rn::add(vyy[l], rn::mul(cy, cy));
  });
  float hxx = hsum(vxx), hxy = hsum(vxy), hyy = hsum(vyy);
  const float lam = rn::add(rn::mul(1e-3f, rn::add(hxx, hyy)), 1e-12f);
  hxx = rn::add(hxx, lam);
  hyy = rn::add(hyy, lam);
  const float inv_det = rn::div(1.f, rn::sub(rn::mul(hxx, hyy), rn::mul(hxy, hxy)));
  const float ixx = rn::mul(hyy, inv_det), ixy = rn::mul(-hxy, inv_det),
              iyy = rn::mul(hxx, inv_det);

  PatchFlow start{u0, v0, 0.f}, best = start;
  float best_ssd = 0, u = u0, v = v0;
  int iters = max_iters;
  for (int it = 0;; ++it) {
    const PatchEval ev = patch_eval(a, agx, agy, b, x0, y0, p, u, v);
    if (it == 0) {
      start.offset = rn::div(ev.sum_e, float(n));
      best = start;
      best_ssd = ev.ssd;
    } else if (ev.ssd < best_ssd) {
      best = {u, v, rn::div(ev.sum_e, float(n))};
      best_ssd = ev.ssd;
    }
    if (it >= iters) break;
    const float gx = rn::sub(ev.bx, rn::mul(mgx, ev.sum_e));
    const float gy = rn::sub(ev.by, rn::mul(mgy, ev.sum_e));
    const float du = rn::add(rn::mul(ixx, gx), rn::mul(ixy, gy));
    const float dv = rn::add(rn::mul(ixy, gx), rn::mul(iyy, gy));
    u = rn::sub(u, du);
    v = rn::sub(v, dv);
    if (fabsf(rn::sub(u, u0)) > float(p) || fabsf(rn::sub(v, v0)) > float(p)) return start;
    if (rn::add(rn::mul(du, du), rn::mul(dv, dv)) < 1e-4f) iters = it + 1;
  }
  return best;
}

// dis.cpp's search_row for the patch at (xs[j], ys[i]): the search from the mean flow over the
// patch, one thread per patch.
__global__ void search_kernel(Plane a, Plane agx, Plane agy, Plane b, Plane fu, Plane fv,
                              const int* __restrict__ xs, int nx, const int* __restrict__ ys,
                              int ny, int p, int max_iters, PatchFlow* __restrict__ out) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= nx * ny) return;
  const int x0 = xs[t % nx], y0 = ys[t / nx];
  const PatchFlow m = patch_mean(fu, fv, x0, y0, p);
  out[t] = search_patch(a, agx, agy, b, x0, y0, p, max_iters, m.u, m.v);
}

// Patch rows per stripe of the spatial propagation (dis.cpp's kStripe): one block each.
constexpr int kStripe = 32;

// One sweep of dis.cpp's propagate_stripe over the patch rows [i0, i1) of block i0 / kStripe,
// forward (top left first; starts: the mean flow over the patch) or backward (bottom right first;
// starts: the forward sweep's results); `iters` steps each. A patch starts from a neighbour's
// flow when that neighbour's SSD is below `ratio` times its start's, or when both are at most
// `flat` (dis_propagation_rule). A patch depends only on its already swept neighbours in its row
// and the row before it, so thread k of the block takes the k-th swept row of the stripe and its
// m-th patch at step k + m: each anti-diagonal runs in parallel after the two neighbours it reads,
// and every patch sees the inputs it has in the CPU's sequential walk. patches (ny, nx) is read and
// written in place.
__global__ void propagate_kernel(Plane a, Plane agx, Plane agy, Plane b, Plane fu, Plane fv,
                                 const int* __restrict__ xs, int nx, const int* __restrict__ ys,
                                 int ny, int p, bool backward, int iters, float ratio, float flat,
                                 PatchFlow* patches) {
  const int i0 = blockIdx.x * kStripe, i1 = min(i0 + kStripe, ny), k = threadIdx.x;
  const int d = backward ? 1 : -1;  // towards the swept neighbours
  const int steps = nx + (i1 - i0) - 1;
  for (int step = 0; step < steps; ++step) {
    const int m = step - k;
    if (i0 + k < i1 && m >= 0 && m < nx) {
      const int i = backward ? i1 - 1 - k : i0 + k, j = backward ? nx - 1 - m : m;
      const int x0 = xs[j], y0 = ys[i];
      PatchFlow& cur = patches[size_t(i) * nx + j];
      PatchFlow start = backward ? cur : patch_mean(fu, fv, x0, y0, p);
      float best = patch_eval(a, agx, agy, b, x0, y0, p, start.u, start.v).ssd;
      auto consider = [&](const PatchFlow& n) {
        const float ssd = patch_eval(a, agx, agy, b, x0, y0, p, n.u, n.v).ssd;
        if (ssd < rn::mul(ratio, best) || (ssd <= flat && best <= flat)) best = ssd, start = n;
      };
      if (j + d >= 0 && j + d < nx) consider(patches[size_t(i) * nx + j + d]);
      if (k > 0) consider(patches[size_t(i + d) * nx + j]);
      cur = search_patch(a, agx, agy, b, x0, y0, p, iters, start.u, start.v);
    }
    __syncthreads();  // this step's patches are written before the next step reads them
  }
}

// dis.cpp's densify_row for one pixel: the patches covering it in (row, column) order, each
// weighted by 1 / max(1, |b(x + u_i) - a(x) - offset_i| in 0..255 units).
__global__ void densify_kernel(Plane a, Plane b, const PatchFlow* __restrict__ patches,
                               const int* __restrict__ xs, int nx, const int* __restrict__ ys,
                               int ny, int p, Plane fu, Plane fv) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y;
  if (x >= a.w) return;
  const int pc = (p + kLanes - 1) / kLanes * kLanes;
  const float ax = a.at(y, x);
  float acc_u = 0.f, acc_v = 0.f, acc_w = 0.f;
  for (int i = 0; i < ny; ++i) {
    if (ys[i] <= y - p || ys[i] > y) continue;
    for (int j = 0; j < nx; ++j) {
      const int c = x - xs[j];
      if (c < 0 || c >= p) continue;
      const PatchFlow f = patches[i * nx + j];
      const Taps tp = block_taps(b, rn::add(float(xs[j]), f.u), rn::add(float(y), f.v), pc, 1);
      const float d =
          rn::mul(fabsf(rn::sub(rn::sub(block_read(b, tp, 0, c), ax), f.offset)), kGrey);
      const float wt = rn::div(1.f, 1.f > d ? 1.f : d);
      acc_u = rn::add(acc_u, rn::mul(wt, f.u));
      acc_v = rn::add(acc_v, rn::mul(wt, f.v));
      acc_w = rn::add(acc_w, wt);
    }
  }
  fu.at(y, x) = rn::div(acc_u, acc_w);
  fv.at(y, x) = rn::div(acc_v, acc_w);
}

// ---- variational refinement --------------------------------------------------------------------

// b, its x and y differences at the match (x + u, y + v), and 1 where the match lies inside b:
// dis.cpp's warp_row for one pixel.
__global__ void var_warp_kernel(Plane b, Plane fu, Plane fv, Plane out_b, Plane out_gx,
                                Plane out_gy, Plane out_in) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y;
  if (x >= fu.w) return;
  const float X = rn::add(fu.at(y, x), float(x)), Y = rn::add(float(y), fv.at(y, x));
  out_in.at(y, x) = X >= 0.f && Y >= 0.f && X <= float(b.w - 1) && Y <= float(b.h - 1) ? 1.f : 0.f;
  const float sx0 = X > -2.f ? X : -2.f, sy0 = Y > -2.f ? Y : -2.f;
  const float sx = sx0 < float(b.w + 1) ? sx0 : float(b.w + 1);
  const float sy = sy0 < float(b.h) ? sy0 : float(b.h);
  const int ix = floor_int(sx), iy = floor_int(sy);
  const float ax = rn::sub(sx, float(ix)), ay = rn::sub(sy, float(iy));
  auto tap = [&](int j, int i) { return b.clamped(iy - 1 + j, ix - 1 + i); };
  float h0[4], hm[2], hp[2];
  for (int j = 0; j < 4; ++j) h0[j] = rn::lerp(tap(j, 1), tap(j, 2), ax);
  for (int j = 1; j < 3; ++j) {
    hm[j - 1] = rn::lerp(tap(j, 0), tap(j, 1), ax);
    hp[j - 1] = rn::lerp(tap(j, 2), tap(j, 3), ax);
  }
  out_b.at(y, x) = rn::lerp(h0[1], h0[2], ay);
  out_gx.at(y, x) = rn::mul(0.5f, rn::sub(rn::lerp(hp[0], hp[1], ay), rn::lerp(hm[0], hm[1], ay)));
  out_gy.at(y, x) = rn::mul(0.5f, rn::sub(rn::lerp(h0[2], h0[3], ay), rn::lerp(h0[0], h0[1], ay)));
}

// The nine planes of the linearised, normalised constancy terms (dis.cpp's linearise_band).
struct Lin {
  float* p[9];
};

__global__ void var_linearise_kernel(Plane a, Plane agx, Plane agy, Plane bw, Plane bgx, Plane bgy,
                                     Plane in, Plane fu, Plane fv, Lin lin) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y;
  const int w = a.w, h = a.h;
  if (x >= w) return;
  const int yu = max(y - 1, 0), yd = min(y + 1, h - 1);
  const bool ml = x > 0, mr = x + 1 < w;
  const float gxa_c = agx.at(y, x), gya_c = agy.at(y, x);
  const float gxa_l = ml ? agx.at(y, x - 1) : gxa_c, gxa_r = mr ? agx.at(y, x + 1) : gxa_c;
  const float gya_l = ml ? agy.at(y, x - 1) : gya_c, gya_r = mr ? agy.at(y, x + 1) : gya_c;
  const float gxb_c = bgx.at(y, x), gyb_c = bgy.at(y, x);
  const float ix = rn::mul(0.5f, rn::add(gxa_c, gxb_c)), iy = rn::mul(0.5f, rn::add(gya_c, gyb_c));
  const float ixx = rn::mul(
      0.25f, rn::sub(rn::add(rn::sub(gxa_r, gxa_l), bgx.clamped(y, x + 1)), bgx.clamped(y, x - 1)));
  const float iyy = rn::mul(
      0.25f, rn::sub(rn::add(rn::sub(agy.at(yd, x), agy.at(yu, x)), bgy.at(yd, x)), bgy.at(yu, x)));
  float sxy = rn::sub(agx.at(yd, x), agx.at(yu, x));
  sxy = rn::sub(rn::add(sxy, bgx.at(yd, x)), bgx.at(yu, x));
  sxy = rn::sub(rn::add(sxy, gya_r), gya_l);
  sxy = rn::sub(rn::add(sxy, bgy.clamped(y, x + 1)), bgy.clamped(y, x - 1));
  const float ixy = rn::mul(0.125f, sxy);
  const float m = in.at(y, x), f1 = fu.at(y, x), f2 = fv.at(y, x);
  auto norm = [&](float p, float q) {
    return rn::mul(m, rsqrt_newton(rn::add(rn::add(rn::mul(p, p), rn::mul(q, q)), kZeta2)));
  };
  // n (g - a - p f1 - q f2), n p, n q
  auto term = [&](float* const* out, float n, float g, float p, float q) {
    const size_t i = size_t(y) * w + x;
    out[0][i] = rn::mul(n, rn::sub(rn::sub(g, rn::mul(p, f1)), rn::mul(q, f2)));
    out[1][i] = rn::mul(n, p);
    out[2][i] = rn::mul(n, q);
  };
  term(lin.p, norm(ix, iy), rn::sub(bw.at(y, x), a.at(y, x)), ix, iy);
  term(lin.p + 3, norm(ixx, ixy), rn::sub(gxb_c, gxa_c), ixx, ixy);
  term(lin.p + 6, norm(ixy, iyy), rn::sub(gyb_c, gya_c), ixy, iyy);
}

// A pixel's flow and its four neighbours' (border indices clamped: their edges have weight 0).
struct Stencil {
  float own, left, right, up, down;
};

__device__ __forceinline__ Stencil stencil(const Plane& f, int y, int x) {
  return {f.at(y, x), f.clamped(y, x - 1), f.clamped(y, x + 1), f.clamped(y - 1, x),
          f.clamped(y + 1, x)};
}

// Psi'(|grad w|^2): dis.cpp's smoothness_weight.
__device__ __forceinline__ float smoothness_weight(const Stencil& u, const Stencil& v, float l,
                                                   float r, float mu, float md) {
  auto d = [&](const Stencil& s, float m1, float a1, float b1, float m2, float a2, float b2) {
    return rn::mul(0.5f, rn::add(rn::mul(m1, rn::sub(a1, b1)), rn::mul(m2, rn::sub(a2, b2))));
  };
  const float ux = d(u, r, u.right, u.own, l, u.own, u.left);
  const float uy = d(u, md, u.down, u.own, mu, u.own, u.up);
  const float vx = d(v, r, v.right, v.own, l, v.own, v.left);
  const float vy = d(v, md, v.down, v.own, mu, v.own, v.up);
  float s = rn::add(rn::mul(ux, ux), rn::mul(uy, uy));
  s = rn::add(rn::add(rn::add(s, rn::mul(vx, vx)), rn::mul(vy, vy)), kEps2);
  return rn::mul(0.5f, rsqrt_newton(s));
}

struct SorArgs {
  Plane fu, fv, psi;
  Lin lin;
  float alpha, gamma, delta;
};

// Colour c's smoothness weights at the current flow (before the first half-sweep).
__global__ void var_weights_kernel(SorArgs s, int c) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y;
  const int w = s.fu.w, h = s.fu.h;
  if (x >= w || ((x + y) & 1) != c) return;
  s.psi.at(y, x) =
      smoothness_weight(stencil(s.fu, y, x), stencil(s.fv, y, x), x > 0 ? 1.f : 0.f,
                        x + 1 < w ? 1.f : 0.f, y > 0 ? 1.f : 0.f, y + 1 < h ? 1.f : 0.f);
}

// One half-sweep over the pixels of colour c: dis.cpp's sweep_row for one pixel.
__global__ void var_sweep_kernel(SorArgs s, int c) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y;
  const int w = s.fu.w, h = s.fu.h;
  if (x >= w || ((x + y) & 1) != c) return;
  const float el = x > 0 ? 1.f : 0.f, er = x + 1 < w ? 1.f : 0.f;
  const float mu = y > 0 ? 1.f : 0.f, md = y + 1 < h ? 1.f : 0.f;
  const Stencil u = stencil(s.fu, y, x), v = stencil(s.fv, y, x);
  const float pc = smoothness_weight(u, v, el, er, mu, md);
  s.psi.at(y, x) = pc;
  const size_t i = size_t(y) * w + x;
  float l[9];
  for (int t = 0; t < 9; ++t) l[t] = s.lin.p[t][i];
  auto res = [&](int t) {
    return rn::add(rn::add(l[t], rn::mul(l[t + 1], u.own)), rn::mul(l[t + 2], v.own));
  };
  const float rc = res(0), rx = res(3), ry = res(6);
  const float wc = rn::mul(0.5f * s.delta, rsqrt_newton(rn::add(rn::mul(rc, rc), kEps2)));
  const float wg = rn::mul(0.5f * s.gamma,
                           rsqrt_newton(rn::add(rn::add(rn::mul(rx, rx), rn::mul(ry, ry)), kEps2)));
  // wc l[i] l[j] + wg (l[i + 3] l[j + 3] + l[i + 6] l[j + 6])
  auto data = [&](int i1, int j1) {
    return rn::add(
        rn::mul(rn::mul(wc, l[i1]), l[j1]),
        rn::mul(wg, rn::add(rn::mul(l[i1 + 3], l[j1 + 3]), rn::mul(l[i1 + 6], l[j1 + 6]))));
  };
  const float d11 = data(1, 1), d12 = data(1, 2), d22 = data(2, 2), d1 = data(1, 0),
              d2 = data(2, 0);
  const Stencil ps = stencil(s.psi, y, x);
  const float ha = 0.5f * s.alpha;
  const float sl = rn::mul(rn::mul(ha, rn::add(pc, ps.left)), el);
  const float sr = rn::mul(rn::mul(ha, rn::add(pc, ps.right)), er);
  const float su = rn::mul(rn::mul(rn::mul(ha, rn::add(pc, ps.up)), mu), 1.f);
  const float sd = rn::mul(rn::mul(rn::mul(ha, rn::add(pc, ps.down)), md), 1.f);
  const float sum = rn::add(rn::add(rn::add(sl, sr), su), sd);
  auto pull = [&](const Stencil& f, float d) {
    float n = rn::add(rn::mul(sl, f.left), rn::mul(sr, f.right));
    n = rn::add(rn::add(n, rn::mul(su, f.up)), rn::mul(sd, f.down));
    return rn::sub(n, d);
  };
  const float n1 = pull(u, d1), n2 = pull(v, d2);
  const float a11 = rn::add(rn::add(d11, sum), kDiagFloor),
              a22 = rn::add(rn::add(d22, sum), kDiagFloor);
  const float inv_det = rn::div(1.f, rn::sub(rn::mul(a11, a22), rn::mul(d12, d12)));
  const float nu = rn::mul(rn::sub(rn::mul(a22, n1), rn::mul(d12, n2)), inv_det);
  const float nv = rn::mul(rn::sub(rn::mul(a11, n2), rn::mul(d12, n1)), inv_det);
  s.fu.at(y, x) = rn::add(u.own, rn::mul(kSorOmega, rn::sub(nu, u.own)));
  s.fv.at(y, x) = rn::add(v.own, rn::mul(kSorOmega, rn::sub(nv, v.own)));
}

__global__ void non_finite_kernel(const float* __restrict__ v, long long n,
                                  int* __restrict__ flag) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n && !isfinite(v[i])) *flag = 1;
}

// ---- orchestration -----------------------------------------------------------------------------

void check_args(const float* gray_a, int H, int W, const float* gray_b, int Hb, int Wb,
                const float* flow, const DisOptions& o) {
  const std::string fn = "flow_refine_dis";
  if (H <= 0 || W <= 0 || Hb <= 0 || Wb <= 0) {
    throw Error(ErrorCode::Shape, fn + ": image sizes must be positive, got a " +
                                      std::to_string(H) + "x" + std::to_string(W) + ", b " +
                                      std::to_string(Hb) + "x" + std::to_string(Wb));
  }
  if (gray_a == nullptr || gray_b == nullptr || flow == nullptr) {
    throw Error(ErrorCode::InvalidArg, fn + ": null image or flow pointer");
  }
  auto bad = [&](const char* name, const std::string& value, const std::string& range) {
    throw Error(ErrorCode::InvalidArg,
                fn + ": expected " + range + " for " + name + " but received " + value);
  };
  struct Int {
    const char* name;
    int v, lo, hi;
    const char* range;
  };
  for (const Int& i :
       {Int{"patch_size", o.patch_size, 2, 128, "an integer in 2 .. 128"},
        Int{"patch_stride", o.patch_stride, 1, o.patch_size, "an integer in 1 .. patch_size"},
        Int{"finest_scale", o.finest_scale, 0, 20, "an integer in 0 .. 20"},
        Int{"coarsest_scale", o.coarsest_scale, o.finest_scale, 20,
            "an integer in finest_scale .. 20"},
        Int{"grad_iters", o.grad_iters, 0, 10000, "an integer in 0 .. 10000"},
        Int{"var_iters", o.var_iters, 0, 10000, "an integer in 0 .. 10000"}}) {
    if (i.v < i.lo || i.v > i.hi) bad(i.name, std::to_string(i.v), i.range);
  }
  for (const auto& [name, v] : {std::pair<const char*, float>{"var_alpha", o.var_alpha},
                                {"var_gamma", o.var_gamma},
                                {"var_delta", o.var_delta}}) {
    if (!(v >= 0) || !std::isfinite(v)) bad(name, std::to_string(v), "a finite number >= 0");
  }
}

// Top-left corners of patches of size p along n >= p pixels (dis.cpp's patch_starts).
std::vector<int> patch_starts(int n, int p, int stride) {
  std::vector<int> s;
  for (int v = 0; v + p <= n; v += stride) s.push_back(v);
  if (s.back() + p < n) s.push_back(n - p);
  return s;
}

// Device planes that live for one call.
class Planes {
 public:
  Plane make(int h, int w) {
    store_.emplace_back(size_t(h) * w);
    return Plane{store_.back().get(), h, w};
  }

 private:
  std::vector<DeviceBuffer<float>> store_;
};

struct Level {
  Plane img, gx, gy;
};

dim3 rows_grid(int w, int h) {
  return dim3(ceil_div(w, 128), h);
}

std::vector<Level> pyramid(const float* d_img, int H, int W, int top, bool with_gradients,
                           Planes& planes, cudaStream_t st) {
  std::vector<Level> levels(size_t(top) + 1);
  levels[0].img = Plane{const_cast<float*>(d_img), H, W};  // read only
  for (int s = 1; s <= top; ++s) {
    const Plane in = levels[size_t(s) - 1].img;
    const Plane tmp = planes.make(in.h, (in.w + 1) / 2), out = planes.make((in.h + 1) / 2, tmp.w);
    down_rows_kernel<<<rows_grid(tmp.w, tmp.h), 128, 0, st>>>(in, tmp);
    check_launch("down_rows_kernel");
    down_cols_kernel<<<rows_grid(out.w, out.h), 128, 0, st>>>(tmp, out);
    check_launch("down_cols_kernel");
    levels[size_t(s)].img = out;
  }
  if (with_gradients) {
    for (Level& l : levels) {
      l.gx = planes.make(l.img.h, l.img.w);
      l.gy = planes.make(l.img.h, l.img.w);
      gradients_kernel<<<rows_grid(l.img.w, l.img.h), 128, 0, st>>>(l.img, l.gx, l.gy);
      check_launch("gradients_kernel");
    }
  }
  return levels;
}

template <typename T>
T* upload_vec(const std::vector<T>& v, std::vector<DeviceBuffer<T>>& keep, cudaStream_t st) {
  keep.emplace_back(v.size());
  to_device(keep.back().get(), v.data(), v.size(), st);
  return keep.back().get();
}

void refine_device(const float* d_a, int H, int W, const float* d_b, int Hb, int Wb, float* d_flow,
                   const DisOptions& o, cudaStream_t st) {
  const size_t P = size_t(H) * W;
  {
    DeviceBuffer<int> d_flag(1);
    check(cudaMemsetAsync(d_flag.get(), 0, sizeof(int), st), "cudaMemset");
    non_finite_kernel<<<ceil_div(2 * P, 256), 256, 0, st>>>(d_flow, 2 * P, d_flag.get());
    check_launch("non_finite_kernel");
    int flag = 0;
    to_host(&flag, d_flag.get(), 1, st);
    check(cudaStreamSynchronize(st), "cudaStreamSynchronize");
    if (flag != 0) {
      throw Error(ErrorCode::InvalidArg, "flow_refine_dis: the seed flow has a non-finite value");
    }
  }
  const int p = o.patch_size, f = o.finest_scale;
  // Level sizes of a down to coarsest_scale, and the scale the search starts at (dis.cpp): the
  // coarsest <= coarsest_scale at least 2 patches across, else finest_scale.
  std::vector<int> hs(size_t(o.coarsest_scale) + 1, H), ws = std::vector<int>(hs.size(), W);
  for (size_t s = 1; s < hs.size(); ++s) hs[s] = (hs[s - 1] + 1) / 2, ws[s] = (ws[s - 1] + 1) / 2;
  int top = o.coarsest_scale;
  while (top > f && std::min(hs[size_t(top)], ws[size_t(top)]) < 2 * p) --top;
  if (std::min(hs[size_t(top)], ws[size_t(top)]) < p) return;  // smaller than a patch: unchanged

  Planes planes;
  const std::vector<Level> pa = pyramid(d_a, H, W, top, true, planes, st);
  const std::vector<Level> pb = pyramid(d_b, Hb, Wb, top, false, planes, st);
  Plane fu = planes.make(hs[size_t(top)], ws[size_t(top)]), fv = planes.make(fu.h, fu.w);
  area_down_kernel<<<rows_grid(fu.w, fu.h), 128, 0, st>>>(d_flow, H, W, fu, 1 << top);
  check_launch("area_down_kernel");
  area_down_kernel<<<rows_grid(fu.w, fu.h), 128, 0, st>>>(d_flow + P, H, W, fv, 1 << top);
  check_launch("area_down_kernel");
  std::vector<DeviceBuffer<int>> starts;
  for (int s = top; s >= f; --s) {
    const Level& a = pa[size_t(s)];
    const Plane b = pb[size_t(s)].img;
    const int h = a.img.h, w = a.img.w;
    const dim3 grid = rows_grid(w, h);
    if (s < top) {
      const Plane nu = planes.make(h, w), nv = planes.make(h, w);
      upsample_kernel<<<grid, 128, 0, st>>>(fu, fv, nu, nv, 2);
      check_launch("upsample_kernel");
      fu = nu;
      fv = nv;
    }
    const std::vector<int> xs = patch_starts(w, p, o.patch_stride),
                           ys = patch_starts(h, p, o.patch_stride);
    const int nx = int(xs.size()), ny = int(ys.size());
    const int* d_xs = upload_vec(xs, starts, st);
    const int* d_ys = upload_vec(ys, starts, st);
    DeviceBuffer<PatchFlow> d_patches(size_t(nx) * ny);
    if (o.spatial_propagation) {
      // dis.cpp: two sweeps with half of grad_iters each, dis_propagation_rule's ratio and flat.
      const DisPropagationRule rule = dis_propagation_rule(o.patch_size, s == f);
      for (int pass = 0; pass < 2; ++pass) {
        const int iters = pass == 0 ? o.grad_iters / 2 : o.grad_iters - o.grad_iters / 2;
        propagate_kernel<<<ceil_div(ny, kStripe), kStripe, 0, st>>>(
            a.img, a.gx, a.gy, b, fu, fv, d_xs, nx, d_ys, ny, p, pass == 1, iters, rule.ratio,
            rule.flat, d_patches.get());
        check_launch("propagate_kernel");
      }
    } else {
      search_kernel<<<ceil_div(nx * ny, 64), 64, 0, st>>>(
          a.img, a.gx, a.gy, b, fu, fv, d_xs, nx, d_ys, ny, p, o.grad_iters, d_patches.get());
      check_launch("search_kernel");
    }
    densify_kernel<<<grid, 128, 0, st>>>(a.img, b, d_patches.get(), d_xs, nx, d_ys, ny, p, fu, fv);
    check_launch("densify_kernel");
    if (o.var_iters > 0) {
      const Plane bw = planes.make(h, w), bgx = planes.make(h, w), bgy = planes.make(h, w),
                  in = planes.make(h, w);
      var_warp_kernel<<<grid, 128, 0, st>>>(b, fu, fv, bw, bgx, bgy, in);
      check_launch("var_warp_kernel");
      SorArgs sor{fu, fv, planes.make(h, w), {}, o.var_alpha, o.var_gamma, o.var_delta};
      for (float*& q : sor.lin.p) q = planes.make(h, w).p;
      var_linearise_kernel<<<grid, 128, 0, st>>>(a.img, a.gx, a.gy, bw, bgx, bgy, in, fu, fv,
                                                 sor.lin);
      check_launch("var_linearise_kernel");
      check(cudaMemsetAsync(sor.psi.p, 0, size_t(h) * w * sizeof(float), st), "cudaMemset");
      var_weights_kernel<<<grid, 128, 0, st>>>(sor, 1);
      check_launch("var_weights_kernel");
      for (int k = 0; k < o.var_iters; ++k) {
        for (int c = 0; c < 2; ++c) {
          var_sweep_kernel<<<grid, 128, 0, st>>>(sor, c);
          check_launch("var_sweep_kernel");
        }
      }
    }
    check(cudaStreamSynchronize(st), "cudaStreamSynchronize");  // d_patches goes out of scope
  }
  if (f > 0) {
    Plane ou{d_flow, H, W}, ov{d_flow + P, H, W};
    upsample_kernel<<<rows_grid(W, H), 128, 0, st>>>(fu, fv, ou, ov, 1 << f);
    check_launch("upsample_kernel");
  } else {
    check(cudaMemcpyAsync(d_flow, fu.p, P * sizeof(float), cudaMemcpyDeviceToDevice, st), "copy");
    check(cudaMemcpyAsync(d_flow + P, fv.p, P * sizeof(float), cudaMemcpyDeviceToDevice, st),
          "copy");
  }
  check(cudaStreamSynchronize(st), "cudaStreamSynchronize");  // the planes go out of scope
}

}  // namespace
}  // namespace cuda

namespace cuda_dev {

void flow_refine_dis(const float* d_gray_a, int H, int W, const float* d_gray_b, int Hb, int Wb,
                     float* d_flow, const DisOptions& o, void* stream) {
  cuda::check_args(d_gray_a, H, W, d_gray_b, Hb, Wb, d_flow, o);
  cuda::refine_device(d_gray_a, H, W, d_gray_b, Hb, Wb, d_flow, o,
                      static_cast<cudaStream_t>(stream));
}

}  // namespace cuda_dev

void flow_refine_dis_cuda(const float* gray_a, int H, int W, const float* gray_b, int Hb, int Wb,
                          float* flow, const DisOptions& o, const Exec& ex) {
  cuda::check_args(gray_a, H, W, gray_b, Hb, Wb, flow, o);
  cuda::HostCall call(ex);
  cuda::refine_device(call.in(gray_a, size_t(H) * W), H, W, call.in(gray_b, size_t(Hb) * Wb), Hb,
                      Wb, call.inout(flow, 2 * size_t(H) * W), o, call.stream());
  call.finish();
}

}  // namespace gocor
