// Global GOCor (spec 4) on the GPU, the twin of gocor_global_cpu. Batched over B throughout.
//
// Per iteration (N reference positions, M = N query positions, C channels):
//   S = W F           SGEMM whose epilogue turns scores into E = J*rho and J (N x N each); the
//                     scores, sigma, rho themselves never reach memory
//   gradR = E F^T     SGEMM
//   Q = W G, P = R^T R Q, gradQ = P G^T   (query term)
//   Gf = grad F       SGEMM whose epilogue only returns row sums of (J*Gf)^2 (den, reference part)
//   Gq = grad G, <Gq, R^T R Gq>           (den, query part: ||R(grad g)||^2 without forming R)
//   alpha per batch element (or per filter), then the update; all in stream order, no host sync.
// R^T R is applied as one 4-D stencil of 5x5 (reference) x 5x5 (query) taps whose weights are
// precomputed from W1, W2 on the device. Zero padding makes the composite differ from a plain
// convolution only at grid edges; each axis position falls into one of four edge classes (first,
// last, both, neither), and a kernel is precomputed for every class pair, so the composite is
// exact:
//   (R^T R)  = sum_{o,i,i'} (C2_oi^T C2_oi') (x) (C1_i^T C1_i'),
//   coefficient of X[p+d] in (C_u^T C_v X)[p] = sum_{a valid at p} u[a] v[a+d],
// with a valid unless (p == 0 and a == 2) or (p == n-1 and a == 0) on either axis.
// That is 625 multiply-adds per element instead of the 9*I*(1+O) = 2448 of applying R_theta.
#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "cuda_util.cuh"
#include "dist_table.cuh"
#include "gocor_cuda.h"
#include "gocor_cuda_device.cuh"
#include "sgemm.cuh"

namespace gocor {
namespace cuda {
namespace {

constexpr int kClasses = 16;  // edge classes of a 2-D position (4 per axis)
constexpr int kTaps = 25;     // 5x5 taps of C^T C

__host__ __device__ inline int edge_class(int p, int n) {
  return (p == 0 ? 1 : 0) | (p == n - 1 ? 2 : 0);
}

// Is filter tap index a (0..2) valid for an axis position of edge class cls?
__device__ inline bool tap_valid(int a, int cls) {
  if ((cls & 1) && a == 2) return false;
  if ((cls & 2) && a == 0) return false;
  return true;
}

// pair[which][cls][i*I+i'][25] (double): which 0 = query axes (W1, one output channel),
// 1 = reference axes (W2 summed over its O outputs). Thread per (which, cls, i, i', d).
__global__ void rtr_pair_kernel(const float* __restrict__ w1, const float* __restrict__ w2, int I,
                                int O, double* __restrict__ pair) {
  const long long n = 2LL * kClasses * I * I * kTaps;
  const long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  if (idx >= n) return;
  const int d = idx % kTaps;
  const int ii2 = (idx / kTaps) % (I * I);
  const int cls = (idx / (kTaps * I * I)) % kClasses;
  const int which = idx / ((long long)kTaps * I * I * kClasses);
  const int i = ii2 / I, i2 = ii2 % I;
  const int dy = d / 5 - 2, dx = d % 5 - 2;
  const int cy = cls / 4, cx = cls % 4;
  double acc = 0;
  const int outs = which == 0 ? 1 : O;
  for (int o = 0; o < outs; ++o) {
    const float* u = which == 0 ? w1 + i * 9 : w2 + (o * I + i) * 9;
    const float* v = which == 0 ? w1 + i2 * 9 : w2 + (o * I + i2) * 9;
    for (int ay = 0; ay < 3; ++ay) {
      const int by = ay + dy;
      if (by < 0 || by > 2 || !tap_valid(ay, cy)) continue;
      for (int ax = 0; ax < 3; ++ax) {
        const int bx = ax + dx;
        if (bx < 0 || bx > 2 || !tap_valid(ax, cx)) continue;
        acc += double(u[ay * 3 + ax]) * double(v[by * 3 + bx]);
      }
    }
  }
  pair[idx] = acc;
}

// kc[(cr*16+cq)*625 + dr*25 + dt] = sum_{i,i'} ref_pair[cr][ii'][dr] * query_pair[cq][ii'][dt].
__global__ void rtr_compose_kernel(const double* __restrict__ pair, int I, float* __restrict__ kc) {
  const int n = kClasses * kClasses * kTaps * kTaps;
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= n) return;
  const int dt = idx % kTaps, dr = (idx / kTaps) % kTaps;
  const int cq = (idx / (kTaps * kTaps)) % kClasses, cr = idx / (kTaps * kTaps * kClasses);
  const int II = I * I;
  const double* qp = pair + (long long)cq * II * kTaps;
  const double* rp = pair + (long long)(kClasses + cr) * II * kTaps;
  double acc = 0;
  for (int k = 0; k < II; ++k) acc += rp[k * kTaps + dr] * qp[k * kTaps + dt];
  kc[idx] = static_cast<float>(acc);
}

// The stencil's block shape. A group of (T/4)^2 threads owns one reference position r and a T x T
// tile of query positions (4 x 4 per thread); a block of 256 threads holds 256 / (T/4)^2 groups, so
// small grids (16 x 16 at GLU-Net's coarsest level) still fill the block. T = 64, 32 or 16.
int rtr_tile(int H, int W) {
  const int n = std::max(H, W);
  return n > 32 ? 64 : (n > 16 ? 32 : 16);
}

int rtr_ntiles(int H, int W) {
  const int T = rtr_tile(H, W);
  return ((H + T - 1) / T) * ((W + T - 1) / T);
}

template <int T>
struct RtrCfg {
  static constexpr int kGT = (T / 4) * (T / 4);  // threads per group
  static constexpr int kG = 256 / kGT;           // groups (reference positions) per block
  // Plane of one source row of X around the tile: T + 4 rows, and 4 halo columns on each side
  // (2 are used) so that 16-byte chunks of X land 16-byte aligned.
  static constexpr int kPW = T + 8, kPH = T + 4, kPlane = kPW * kPH;
  // Grid-border outputs per thread, at most.
  static constexpr int kBorder = (4 * T + kGT - 1) / kGT;
  static constexpr size_t kSmemBytes = (2 * kG * kPlane + 2 * kG * kTaps) * sizeof(float);
};

// X (B, N, M) over the (H,W) x (H,W) grid -> optionally Y = R^T R X (B, N, M) and per-group partial
// sums of X . (R^T R X) in partial[(b * ntiles + blockIdx.y) * N + r]. Grid (N / G, tiles, B).
// For each of the 25 reference taps dr the source plane X[r + dr] (and the 25 interior weights)
// is staged by cp.async into one of two buffers while the other is in use. Every output is first
// computed with the interior weights (query class 0, exact away from the query-grid border);
// outputs on the query-grid border, at most 4T per tile, are computed again by their own thread
// with their own edge class's weights, so no warp diverges in the 400-FMA inner block.
template <int T>
__global__ void __launch_bounds__(256, 2)
    rtr_apply_kernel(const float* __restrict__ X, float* __restrict__ Y,
                     float* __restrict__ partial, const float* __restrict__ kc, int H, int W,
                     bool vec) {
  using Cfg = RtrCfg<T>;
  constexpr int G = Cfg::kG, GT = Cfg::kGT, PW = Cfg::kPW, PH = Cfg::kPH, PL = Cfg::kPlane;
  constexpr int TPR = T / 4;  // threads per tile row
  extern __shared__ __align__(16) float smem[];
  float* planes = smem;            // [2][G][PL]
  float* wts = smem + 2 * G * PL;  // [2][G][25]
  __shared__ int s_ry[G], s_rx[G], s_cr[G];
  __shared__ float s_red[8];

  const int N = H * W, M = N;
  const int tid = threadIdx.x, grp = tid / GT, lt = tid % GT;
  const int b = blockIdx.z;
  const int tiles_x = (W + T - 1) / T;
  const int ty0 = (blockIdx.y / tiles_x) * T, tx0 = (blockIdx.y % tiles_x) * T;
  const float* Xb = X + (long long)b * N * M;
  if (tid < G) {
    const int r = blockIdx.x * G + tid;
    const int ry = r < N ? r / W : -1000, rx = r < N ? r % W : -1000;  // -1000: no sources
    s_ry[tid] = ry;
    s_rx[tid] = rx;
    s_cr[tid] = r < N ? edge_class(ry, H) * 4 + edge_class(rx, W) : 0;
  }
  __syncthreads();
  const int r = blockIdx.x * G + grp;
  const int cr = s_cr[grp];
  const float* kc_r = kc + (long long)cr * kClasses * kTaps * kTaps;

  auto src_row = [&](int g, int dr, long long* off) {
    const int sy = s_ry[g] + dr / 5 - 2, sx = s_rx[g] + dr % 5 - 2;
    *off = (long long)(sy * W + sx) * M;
    return sy >= 0 && sy < H && sx >= 0 && sx < W;
  };
  auto load = [&](int dr, int buf) {
    float* pb = planes + buf * G * PL;
    if (vec) {
      constexpr int CPR = PW / 4, CPP = PH * CPR;  // chunks per row, per plane
      for (int i = tid; i < G * CPP; i += 256) {
        const int g = i / CPP, rem = i - g * CPP, hy = rem / CPR, cx = rem - hy * CPR;
        long long off;
        const bool ok = src_row(g, dr, &off);
        const int gy = ty0 - 2 + hy, gx = tx0 - 4 + cx * 4;
        const bool in = ok && gy >= 0 && gy < H && gx >= 0 && gx < W;
        cp_async16(pb + g * PL + hy * PW + cx * 4, in ? Xb + off + gy * W + gx : Xb, in ? 16 : 0);
      }
    } else {
      for (int i = tid; i < G * PL; i += 256) {
        const int g = i / PL, rem = i - g * PL, hy = rem / PW, hx = rem - hy * PW;
        long long off;
        const bool ok = src_row(g, dr, &off);
        const int gy = ty0 - 2 + hy, gx = tx0 - 4 + hx;
        const bool in = ok && gy >= 0 && gy < H && gx >= 0 && gx < W;
        cp_async4(pb + g * PL + hy * PW + hx, in ? Xb + off + gy * W + gx : Xb, in ? 4 : 0);
      }
    }
    float* wb = wts + buf * G * kTaps;
    for (int i = tid; i < G * kTaps; i += 256) {  // G * 25 is 400 when T = 16
      const int g = i / kTaps, k = i % kTaps;
      cp_async4(wb + g * kTaps + k, kc + ((long long)s_cr[g] * kClasses * kTaps + dr) * kTaps + k,
                4);
    }
  };

  // This thread's interior block and its grid-border outputs (deterministic enumeration: the
  // border rows of the tile, then the border columns minus the rows already listed).
  const int py = lt / TPR, px = lt % TPR;
  const int oy = ty0 + py * 4, ox = tx0 + px * 4;
  const int nr = min(T, H - ty0), nc = min(T, W - tx0);  // tile rows/cols inside the grid
  const bool top = ty0 == 0, bottom = ty0 + nr == H && H > 1;
  const bool left = tx0 == 0, right = tx0 + nc == W && W > 1;
  const int nbr = (top ? 1 : 0) + (bottom ? 1 : 0), nbc = (left ? 1 : 0) + (right ? 1 : 0);
  const int nb = nbr * nc + nbc * (nr - nbr);
  int bpos[Cfg::kBorder], bcls[Cfg::kBorder];
  float bacc[Cfg::kBorder];
#pragma unroll
  for (int k = 0; k < Cfg::kBorder; ++k) {
    const int i = lt + k * GT;
    int ly = -1, lx = 0;
    if (i < nbr * nc) {
      ly = (i / nc == 0 && top) ? 0 : nr - 1;
      lx = i % nc;
    } else if (i < nb) {
      const int j = i - nbr * nc, rows = nr - nbr;
      lx = (j / rows == 0 && left) ? 0 : nc - 1;
      ly = j % rows + (top ? 1 : 0);
    }
    bpos[k] = ly < 0 ? -1 : ly * PW + lx;
    bcls[k] = ly < 0 ? 0 : edge_class(ty0 + ly, H) * 4 + edge_class(tx0 + lx, W);
    bacc[k] = 0.f;
  }

  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;

  load(0, 0);
  cp_async_commit();
  for (int dr = 0; dr < kTaps; ++dr) {
    cp_async_wait<0>();
    __syncthreads();
    if (dr + 1 < kTaps) load(dr + 1, (dr + 1) & 1);
    cp_async_commit();
    long long unused;
    if (!src_row(grp, dr, &unused)) continue;  // uniform over the group: no source row
    const float* pl = planes + ((dr & 1) * G + grp) * PL;
    const float* wk = wts + ((dr & 1) * G + grp) * kTaps;
    float wv[kTaps];
#pragma unroll
    for (int k = 0; k < kTaps; ++k) wv[k] = wk[k];
#pragma unroll
    for (int pr = 0; pr < 8; ++pr) {
      const float* row = pl + (py * 4 + pr) * PW + px * 4;
      const float2 lo = *reinterpret_cast<const float2*>(row + 2);
      const float4 mid = *reinterpret_cast<const float4*>(row + 4);
      const float2 hi = *reinterpret_cast<const float2*>(row + 8);
      const float v[8] = {lo.x, lo.y, mid.x, mid.y, mid.z, mid.w, hi.x, hi.y};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int a = pr - i;
        if (a < 0 || a >= 5) continue;
#pragma unroll
        for (int c = 0; c < 5; ++c)
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(wv[a * 5 + c], v[j + c], acc[i][j]);
      }
    }
#pragma unroll
    for (int k = 0; k < Cfg::kBorder; ++k) {
      if (bpos[k] < 0) continue;
      const float* kb = kc_r + ((long long)bcls[k] * kTaps + dr) * kTaps;
      const float* p = pl + bpos[k] + 2;
      float s = bacc[k];
#pragma unroll
      for (int a = 0; a < 5; ++a)
#pragma unroll
        for (int c = 0; c < 5; ++c) s = fmaf(__ldg(kb + a * 5 + c), p[a * PW + c], s);
      bacc[k] = s;
    }
  }

  float dot = 0.f;
  const bool rvalid = r < N;
  float* Yr = Y != nullptr ? Y + (long long)b * N * M + (long long)r * M : nullptr;
  const float* xr = Xb + (long long)r * M;
  if (rvalid) {
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int ty = oy + i, tx = ox + j;
        const bool border = ty == 0 || ty == H - 1 || tx == 0 || tx == W - 1;
        if (ty < H && tx < W && !border) {
          const int t = ty * W + tx;
          if (Yr != nullptr) Yr[t] = acc[i][j];
          if (partial != nullptr) dot = fmaf(__ldg(xr + t), acc[i][j], dot);
        }
      }
#pragma unroll
    for (int k = 0; k < Cfg::kBorder; ++k) {
      if (bpos[k] < 0) continue;
      const int ly = bpos[k] / PW, lx = bpos[k] % PW;
      const int t = (ty0 + ly) * W + tx0 + lx;
      if (Yr != nullptr) Yr[t] = bacc[k];
      if (partial != nullptr) dot = fmaf(__ldg(xr + t), bacc[k], dot);
    }
  }
  if (partial == nullptr) return;  // uniform over the block
    // Fixed-order reduction over the group: lanes within a warp, then the group's warps in order.
#pragma unroll
  for (int off = (GT < 32 ? GT : 32) / 2; off > 0; off >>= 1)
    dot += __shfl_xor_sync(0xffffffffu, dot, off);
  if (GT <= 32) {
    if (lt == 0 && rvalid) partial[((long long)b * gridDim.y + blockIdx.y) * N + r] = dot;
    return;
  }
  if (tid % 32 == 0) s_red[tid / 32] = dot;
  __syncthreads();
  if (lt == 0 && rvalid) {
    float s = 0.f;
    for (int w = 0; w < GT / 32; ++w) s += s_red[grp * (GT / 32) + w];
    partial[((long long)b * gridDim.y + blockIdx.y) * N + r] = s;
  }
}

// mu[b][c] = mean_s f[b][c][s]. Grid (C, B).
__global__ void mean_kernel(const float* __restrict__ f, int N, float* __restrict__ mu) {
  __shared__ double red[256];
  const int c = blockIdx.x, b = blockIdx.y, C = gridDim.x;
  const float* row = f + ((long long)b * C + c) * N;
  double s = 0;
  for (int i = threadIdx.x; i < N; i += blockDim.x) s += row[i];
  red[threadIdx.x] = s;
  __syncthreads();
  for (int off = blockDim.x / 2; off > 0; off >>= 1) {
    if (threadIdx.x < off) red[threadIdx.x] += red[threadIdx.x + off];
    __syncthreads();
  }
  if (threadIdx.x == 0) mu[b * C + c] = static_cast<float>(red[0] / N);
}

// Flexible context-aware initialiser (spec 4.2): w (B,N,C) from f (B,C,N), mu (B,C).
__global__ void init_filter_kernel(const float* __restrict__ f, const float* __restrict__ mu,
                                   const float* __restrict__ fg, const float* __restrict__ bg,
                                   int C, int N, float* __restrict__ w) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y;
  if (r >= N) return;
  const float* fb = f + (long long)b * C * N;
  const float* m = mu + b * C;
  double a = 0, bb = 0, cc = 0;
  for (int c = 0; c < C; ++c) {
    const double fv = fb[(long long)c * N + r], mv = m[c];
    a += fv * fv;
    bb += mv * mv;
    cc += fv * mv;
  }
  const double det = fmax(a * bb - cc * cc, 1e-6);
  float* wr = w + ((long long)b * N + r) * C;
  for (int c = 0; c < C; ++c) {
    const double fv = fb[(long long)c * N + r], mv = m[c];
    wr[c] =
        static_cast<float>(((fg[c] * bb - bg[c] * cc) * fv - (fg[c] * cc - bg[c] * a) * mv) / det);
  }
}

// out[row] = sum_c x[row][c]^2 over rows of length C; one warp per row, fixed order.
__global__ void row_sqnorm_kernel(const float* __restrict__ x, long long rows, int C,
                                  float* __restrict__ out) {
  const long long row = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const float* xr = x + row * C;
  float s = 0.f;
  for (int c = lane; c < C; c += 32) s = fmaf(xr[c], xr[c], s);
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  if (lane == 0) out[row] = s;
}

// Step length per batch element (query term on) or per filter (off). Grid B, 256 threads.
__global__ void alpha_kernel(const float* __restrict__ rownum, const float* __restrict__ rowden,
                             int nbx, const float* __restrict__ qden, int nq, int N, float lam,
                             float slr, bool per_batch, float* __restrict__ alpha) {
  __shared__ double red_num[256], red_den[256];
  const int b = blockIdx.x, tid = threadIdx.x;
  if (!per_batch) {
    for (int r = tid; r < N; r += blockDim.x) {
      const double num = rownum[(long long)b * N + r];
      double den = 0;
      for (int k = 0; k < nbx; ++k) den += rowden[((long long)b * N + r) * nbx + k];
      den = fmax(den + lam * num, 1e-8) + slr * num;
      alpha[(long long)b * N + r] = static_cast<float>(num / den);
    }
    return;
  }
  double num = 0, den = 0;
  for (int r = tid; r < N; r += blockDim.x) {
    num += rownum[(long long)b * N + r];
    for (int k = 0; k < nbx; ++k) den += rowden[((long long)b * N + r) * nbx + k];
  }
  for (int i = tid; i < nq; i += blockDim.x) den += qden[(long long)b * nq + i];
  red_num[tid] = num;
  red_den[tid] = den;
  __syncthreads();
  for (int off = blockDim.x / 2; off > 0; off >>= 1) {
    if (tid < off) {
      red_num[tid] += red_num[tid + off];
      red_den[tid] += red_den[tid + off];
    }
    __syncthreads();
  }
  const double n = red_num[0];
  const double d = fmax(red_den[0] + lam * n, 1e-8) + slr * n;
  const float a = static_cast<float>(n / d);
  for (int r = tid; r < N; r += blockDim.x) alpha[(long long)b * N + r] = a;
}

// w -= step * alpha[row] * grad, over (B*N) rows of C.
__global__ void update_kernel(float* __restrict__ w, const float* __restrict__ grad,
                              const float* __restrict__ alpha, long long total, int C, float step) {
  const long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  if (i >= total) return;
  w[i] = fmaf(-step * alpha[i / C], grad[i], w[i]);
}

// Epilogue of S = W F: E = J*rho and J, returning sum rho^2 (the reference loss) for the row.
struct ResidualEp {
  float* E;
  float* J;
  const DistEntry* tab;  // (H*W) indexed by |dy|*W + |dx|
  int N, W;
  __device__ float operator()(int b, int m, int n, float4 v4) const {
    const int ry = m / W, rx = m - ry * W;
    int sy = n / W, sx = n - sy * W;  // walked along the row instead of four divisions
    const float v[4] = {v4.x, v4.y, v4.z, v4.w};
    float ev[4] = {0.f, 0.f, 0.f, 0.f}, jv4[4] = {0.f, 0.f, 0.f, 0.f};
    float loss = 0.f;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (n + j < N) {
        const DistEntry e = tab[abs(ry - sy) * W + abs(rx - sx)];
        const float sc = v[j];
        const float sg = sc > 0.f ? 1.f : (sc < 0.f ? -1.f : 0.f);
        const float jv = e.v * fmaf(e.hm, sg, e.hp);
        const float rho = e.v * (fmaf(e.hm, fabsf(sc), e.hp * sc) - e.y);
        ev[j] = jv * rho;
        jv4[j] = jv;
        loss = fmaf(rho, rho, loss);
      }
      if (++sx == W) {
        sx = 0;
        ++sy;
      }
    }
    const long long at = ((long long)b * N + m) * N + n;
    store_row4(E + at, n, N, make_float4(ev[0], ev[1], ev[2], ev[3]));
    store_row4(J + at, n, N, make_float4(jv4[0], jv4[1], jv4[2], jv4[3]));
    return loss;
  }
};

// Epilogue of the gradient products (B,N,C): grad = lam*w + prev + v, where prev is the value
// already in grad when accumulating (the reference part) and 0 otherwise; lam*w only when add_reg.
struct GradEp {
  float* grad;
  const float* w;
  int N, C;
  float lam;
  bool add_reg, accumulate;
  __device__ float operator()(int b, int m, int n, float4 v4) const {
    const long long base = ((long long)b * N + m) * C;
    const float v[4] = {v4.x, v4.y, v4.z, v4.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (n + j >= C) break;
      const long long i = base + n + j;
      float x = add_reg ? lam * w[i] : 0.f;
      if (accumulate) x += grad[i];
      grad[i] = x + v[j];
    }
    return 0.f;
  }
};

// Epilogue of Gf = grad F: returns sum_j (J * Gf)^2 for the row (den, reference part).
struct DenEp {
  const float* J;
  int N;
  __device__ float operator()(int b, int m, int n, float4 v4) const {
    const float* jr = J + ((long long)b * N + m) * N + n;
    float jv[4];
    if (n + 3 < N && (reinterpret_cast<size_t>(jr) & 15) == 0) {
      const float4 t = __ldcs(reinterpret_cast<const float4*>(jr));
      jv[0] = t.x;
      jv[1] = t.y;
      jv[2] = t.z;
      jv[3] = t.w;
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) jv[j] = n + j < N ? jr[j] : 0.f;
    }
    const float v[4] = {v4.x, v4.y, v4.z, v4.w};
    float s = 0.f;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (n + j >= N) break;
      const float q = jv[j] * v[j];
      s = fmaf(q, q, s);
    }
    return s;
  }
};

}  // namespace
}  // namespace cuda
}  // namespace gocor

namespace gocor {
namespace cuda {
namespace {

struct GlobalWorkspace {
  // byte offsets into one device allocation
  size_t grad, E, J, Q, P, mu, rowloss, rowden, rownum, wn, qpart, qloss, alpha, tab, fg, bg, w1,
      w2, pair, kc, total;
  int nbx, ntiles;
};

GlobalWorkspace global_workspace(const GocorGlobalShape& s, const GlobalGocorOptions& o, int I,
                                 int O, bool with_diag) {
  const size_t B = s.B, C = s.C, N = (size_t)s.H * s.W;
  GlobalWorkspace ws{};
  ws.nbx = gemm_col_blocks(static_cast<int>(N));
  ws.ntiles = rtr_ntiles(s.H, s.W);
  const bool q = o.apply_query_loss;
  size_t off = 0;
  auto take = [&](size_t bytes) {
    const size_t at = off;
    off += (bytes + 255) / 256 * 256;
    return at;
  };
  const size_t f = sizeof(float);
  ws.grad = take(B * N * C * f);
  ws.E = take(B * N * N * f);
  ws.J = take(B * N * N * f);
  ws.Q = take(q ? B * N * N * f : 0);
  ws.P = take(q ? B * N * N * f : 0);
  ws.mu = take(B * C * f);
  ws.rowloss = take(with_diag ? B * N * ws.nbx * f : 0);
  ws.rowden = take(B * N * ws.nbx * f);
  ws.rownum = take(B * N * f);
  ws.wn = take(with_diag ? B * N * f : 0);
  ws.qpart = take(q ? B * ws.ntiles * N * f : 0);
  ws.qloss = take(q && with_diag ? B * ws.ntiles * N * f : 0);
  ws.alpha = take(B * N * f);
  ws.tab = take(N * sizeof(DistEntry));
  ws.fg = take(C * f);
  ws.bg = take(C * f);
  ws.w1 = take((size_t)I * 9 * f);
  ws.w2 = take((size_t)O * I * 9 * f);
  ws.pair = take(q ? 2 * kClasses * (size_t)I * I * kTaps * sizeof(double) : 0);
  ws.kc = take(q ? (size_t)kClasses * kClasses * kTaps * kTaps * f : 0);
  ws.total = off;
  return ws;
}

void check_global_args(const GlobalGocorParams& p, const GlobalGocorOptions& o,
                       const GocorGlobalShape& s) {
  if (s.B <= 0 || s.C <= 0 || s.H <= 0 || s.W <= 0) {
    throw Error(ErrorCode::Shape, "gocor_global: B, C, H and W must be positive");
  }
  if (o.num_iter < 0) throw Error(ErrorCode::InvalidArg, "gocor_global: num_iter must be >= 0");
  if (p.target_fg.size() != (size_t)s.C || p.target_bg.size() != (size_t)s.C) {
    throw Error(ErrorCode::InvalidArg, "gocor_global: target_fg/target_bg must have C elements");
  }
  if (o.apply_query_loss) {
    const int I = p.reg_inter_dim, O = p.reg_output_dim;
    if (I <= 0 || O <= 0 || p.reg_weight1.size() != (size_t)I * 9 ||
        p.reg_weight2.size() != (size_t)O * I * 9) {
      throw Error(ErrorCode::InvalidArg,
                  "gocor_global: reg_weight1 must be (I,1,3,3) and reg_weight2 (O,I,3,3)");
    }
  }
  if ((long long)s.H * s.W > 65535LL * 128) {
    throw Error(ErrorCode::TooLarge, "gocor_global: too many reference positions for the GPU grid");
  }
}

// X (B,N,N) -> Y = R^T R X (optional) and per-group partials of <X, R^T R X> (optional).
template <int T>
void rtr_apply_t(const float* X, float* Y, float* partial, const float* kc,
                 const GocorGlobalShape& s, int ntiles, cudaStream_t stream) {
  using Cfg = RtrCfg<T>;
  const int N = s.H * s.W;
  check(cudaFuncSetAttribute(rtr_apply_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(Cfg::kSmemBytes)),
        "cudaFuncSetAttribute");
  dim3 grid(ceil_div(N, Cfg::kG), ntiles, s.B);
  // 16-byte chunks need rows of X (length N) and the tile origins 16-byte aligned.
  const bool vec = s.W % 4 == 0 && aligned16(X);
  rtr_apply_kernel<T><<<grid, 256, Cfg::kSmemBytes, stream>>>(X, Y, partial, kc, s.H, s.W, vec);
  check_launch("rtr_apply_kernel");
}

void rtr_apply(const float* X, float* Y, float* partial, const float* kc, const GocorGlobalShape& s,
               int ntiles, cudaStream_t stream) {
  switch (rtr_tile(s.H, s.W)) {
    case 64: rtr_apply_t<64>(X, Y, partial, kc, s, ntiles, stream); break;
    case 32: rtr_apply_t<32>(X, Y, partial, kc, s, ntiles, stream); break;
    default: rtr_apply_t<16>(X, Y, partial, kc, s, ntiles, stream); break;
  }
}

double sum_host(const std::vector<float>& v, size_t begin, size_t end) {
  double acc = 0;
  for (size_t i = begin; i < end; ++i) acc += v[i];
  return acc;
}

// Optional per-stage timing for the benchmark: an event is recorded on the stream before each
// stage; after the stream has finished, the gap to the next event is charged to that stage.
class StageClock {
 public:
  explicit StageClock(cudaStream_t s) : s_(s) {}
  ~StageClock() {
    for (cudaEvent_t e : ev_) cudaEventDestroy(e);
  }
  StageClock(const StageClock&) = delete;
  StageClock& operator=(const StageClock&) = delete;
  void mark(const char* stage) {
    cudaEvent_t e = nullptr;
    check(cudaEventCreate(&e), "cudaEventCreate");
    ev_.push_back(e);
    names_.emplace_back(stage);
    check(cudaEventRecord(e, s_), "cudaEventRecord");
  }
  // Milliseconds per stage name, summed over repeats, in order of first appearance.
  std::vector<std::pair<std::string, double>> totals() const {
    check(cudaStreamSynchronize(s_), "cudaStreamSynchronize");
    std::vector<std::pair<std::string, double>> out;
    for (size_t i = 0; i + 1 < ev_.size(); ++i) {
      float ms = 0.f;
      check(cudaEventElapsedTime(&ms, ev_[i], ev_[i + 1]), "cudaEventElapsedTime");
      auto it =
          std::find_if(out.begin(), out.end(), [&](const auto& x) { return x.first == names_[i]; });
      if (it == out.end()) {
        out.emplace_back(names_[i], ms);
      } else {
        it->second += ms;
      }
    }
    return out;
  }

 private:
  cudaStream_t s_;
  std::vector<cudaEvent_t> ev_;
  std::vector<std::string> names_;
};

void gocor_global_device(const GlobalGocorParams& p, const GlobalGocorOptions& o,
                         const float* d_ref, const float* d_query, float* d_volume, float* d_w,
                         char* d_ws, const GocorGlobalShape& s, cudaStream_t stream, const Exec* ex,
                         std::vector<GocorIterDiag>* diag, StageClock* clock = nullptr) {
  auto mark = [&](const char* stage) {
    if (clock != nullptr) clock->mark(stage);
  };
  check_global_args(p, o, s);
  const bool q = o.apply_query_loss;
  const int I = q ? p.reg_inter_dim : 0, O = q ? p.reg_output_dim : 0;
  const int B = s.B, C = s.C, H = s.H, W = s.W, N = H * W, M = N;
  const GlobalWorkspace ws = global_workspace(s, o, I, O, diag != nullptr);
  auto fptr = [&](size_t off) { return reinterpret_cast<float*>(d_ws + off); };
  float *grad = fptr(ws.grad), *E = fptr(ws.E), *J = fptr(ws.J), *Qm = fptr(ws.Q), *Pm = fptr(ws.P),
        *mu = fptr(ws.mu), *rowloss = fptr(ws.rowloss), *rowden = fptr(ws.rowden),
        *rownum = fptr(ws.rownum), *wn = fptr(ws.wn), *qpart = fptr(ws.qpart),
        *qloss = fptr(ws.qloss), *alpha = fptr(ws.alpha), *fg = fptr(ws.fg), *bg = fptr(ws.bg),
        *w1 = fptr(ws.w1), *w2 = fptr(ws.w2), *kc = fptr(ws.kc);
  auto* tab = reinterpret_cast<DistEntry*>(d_ws + ws.tab);
  auto* pair = reinterpret_cast<double*>(d_ws + ws.pair);

  // Small parameter tables (host temporaries: synchronised before they go out of scope).
  std::vector<DistEntry> htab(N);
  for (int dy = 0; dy < H; ++dy)
    for (int dx = 0; dx < W; ++dx)
      htab[dy * W + dx] = dist_entry(p.dist, std::sqrt(double(dy * dy + dx * dx)));
  to_device(tab, htab.data(), N, stream);
  to_device(fg, p.target_fg.data(), C, stream);
  to_device(bg, p.target_bg.data(), C, stream);
  if (q) {
    to_device(w1, p.reg_weight1.data(), (size_t)I * 9, stream);
    to_device(w2, p.reg_weight2.data(), (size_t)O * I * 9, stream);
  }
  check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");

  mark("setup: R^T R taps");
  if (q) {
    const long long npair = 2LL * kClasses * I * I * kTaps;
    rtr_pair_kernel<<<ceil_div(npair, 256), 256, 0, stream>>>(w1, w2, I, O, pair);
    check_launch("rtr_pair_kernel");
    const int nkc = kClasses * kClasses * kTaps * kTaps;
    rtr_compose_kernel<<<ceil_div(nkc, 256), 256, 0, stream>>>(pair, I, kc);
    check_launch("rtr_compose_kernel");
  }

  // Initialiser.
  mark("initialiser");
  mean_kernel<<<dim3(C, B), 256, 0, stream>>>(d_ref, N, mu);
  check_launch("mean_kernel");
  init_filter_kernel<<<dim3(ceil_div(N, 128), B), 128, 0, stream>>>(d_ref, mu, fg, bg, C, N, d_w);
  check_launch("init_filter_kernel");

  const double reg =
      std::max(double(p.filter_reg) * p.filter_reg, double(p.min_filter_reg) * p.min_filter_reg);
  const float lam = static_cast<float>(reg);
  const float step = static_cast<float>(std::exp(double(p.log_step_length)));
  const long long NN = (long long)N * N, NC = (long long)N * C, CN = (long long)C * N;

  // Operand descriptions of the products (batch strides in elements; GemmArgs' field order).
  auto gemm_wf = [&](const float* A, const float* Bm, float* rowpart) {  // (N x C)(C x N)
    return GemmArgs{N, N, C, A, Bm, C, N, NC, CN, rowpart};
  };
  auto gemm_ef = [&](const float* A, const float* Bm) {  // (N x N)(N x C), B given as (C, N)
    return GemmArgs{N, C, N, A, Bm, N, N, NN, CN, nullptr};
  };
  constexpr Layout kR = Layout::kRowMajor, kC = Layout::kColMajor;
  const long long rows = (long long)B * N;

  if (diag != nullptr) diag->clear();
  std::vector<GocorIterDiag> iter_diag;
  for (int it = 0; it < o.num_iter; ++it) {
    if (ex != nullptr) check_cancel(*ex);
    if (diag != nullptr) {
      row_sqnorm_kernel<<<ceil_div(rows * 32, 256), 256, 0, stream>>>(d_w, rows, C, wn);
      check_launch("row_sqnorm_kernel");
    }
    // 1-2: reference term.
    mark("S = W F, residual epilogue (E, J)");
    launch_sgemm<kR, kR>(gemm_wf(d_w, d_ref, diag != nullptr ? rowloss : nullptr), B,
                         ResidualEp{E, J, tab, N, W}, stream);
    mark("gradR = E F^T");
    launch_sgemm<kR, kC>(gemm_ef(E, d_ref), B, GradEp{grad, d_w, N, C, lam, !q, false}, stream);
    // 4: query term.
    if (q) {
      mark("Q = W G");
      launch_sgemm<kR, kR>(gemm_wf(d_w, d_query, nullptr), B, StoreEp{Qm, M, NN}, stream);
      mark("P = R^T R Q (stencil)");
      rtr_apply(Qm, Pm, diag != nullptr ? qloss : nullptr, kc, s, ws.ntiles, stream);
      mark("gradQ = P G^T");
      launch_sgemm<kR, kC>(gemm_ef(Pm, d_query), B, GradEp{grad, d_w, N, C, lam, true, true},
                           stream);
    }
    // 6: step length.
    mark("|grad|^2, alpha, update");
    row_sqnorm_kernel<<<ceil_div(rows * 32, 256), 256, 0, stream>>>(grad, rows, C, rownum);
    check_launch("row_sqnorm_kernel");
    mark("Gf = grad F, den epilogue");
    launch_sgemm<kR, kR>(gemm_wf(grad, d_ref, rowden), B, DenEp{J, N}, stream);
    if (q) {
      mark("Gq = grad G");
      launch_sgemm<kR, kR>(gemm_wf(grad, d_query, nullptr), B, StoreEp{Qm, M, NN}, stream);
      mark("<Gq, R^T R Gq> (stencil, dot only)");
      rtr_apply(Qm, nullptr, qpart, kc, s, ws.ntiles, stream);
    }
    mark("|grad|^2, alpha, update");
    alpha_kernel<<<B, 256, 0, stream>>>(rownum, rowden, ws.nbx, qpart, q ? ws.ntiles * N : 0, N,
                                        lam, p.steplength_reg, q, alpha);
    check_launch("alpha_kernel");
    // 7: update.
    const long long total = (long long)B * N * C;
    update_kernel<<<ceil_div(total, 256), 256, 0, stream>>>(d_w, grad, alpha, total, C, step);
    check_launch("update_kernel");

    if (diag != nullptr) {
      std::vector<float> h_loss((size_t)B * N * ws.nbx), h_num((size_t)B * N), h_wn((size_t)B * N),
          h_alpha((size_t)B * N), h_q(q ? (size_t)B * ws.ntiles * N : 0);
      to_host(h_loss.data(), rowloss, h_loss.size(), stream);
      to_host(h_num.data(), rownum, h_num.size(), stream);
      to_host(h_wn.data(), wn, h_wn.size(), stream);
      to_host(h_alpha.data(), alpha, h_alpha.size(), stream);
      if (q) to_host(h_q.data(), qloss, h_q.size(), stream);
      check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
      for (int b = 0; b < B; ++b) {
        GocorIterDiag d;
        d.batch = b;
        d.iter = it;
        d.loss_ref = 0.5 * sum_host(h_loss, (size_t)b * N * ws.nbx, (size_t)(b + 1) * N * ws.nbx);
        d.loss_query =
            q ? 0.5 * sum_host(h_q, (size_t)b * ws.ntiles * N, (size_t)(b + 1) * ws.ntiles * N)
              : 0.0;
        d.loss_reg = 0.5 * reg * sum_host(h_wn, (size_t)b * N, (size_t)(b + 1) * N);
        d.grad_norm = std::sqrt(sum_host(h_num, (size_t)b * N, (size_t)(b + 1) * N));
        const auto a0 = h_alpha.begin() + (size_t)b * N, a1 = a0 + N;
        d.alpha = sum_host(h_alpha, (size_t)b * N, (size_t)(b + 1) * N) / N;
        d.alpha_min = *std::min_element(a0, a1);
        d.alpha_max = *std::max_element(a0, a1);
        iter_diag.push_back(d);
      }
    }
  }
  if (diag != nullptr) {
    // Batch-major order: entry b*num_iter + it.
    diag->resize(iter_diag.size());
    for (const GocorIterDiag& d : iter_diag) (*diag)[(size_t)d.batch * o.num_iter + d.iter] = d;
  }

  // Output (spec 4.6): volume[b][t][r] = w_r . g_t, A = query viewed (t, c), B = w viewed (c, r).
  GemmArgs g{};
  g.M = M;
  g.N = N;
  g.K = C;
  g.A = d_query;
  g.lda = M;
  g.strideA = (long long)C * M;
  g.B = d_w;
  g.ldb = C;
  g.strideB = NC;
  g.rowpart = nullptr;
  mark("output volume = G^T W");
  launch_sgemm<kC, kC>(g, B, StoreEp{d_volume, N, (long long)M * N}, stream);
  mark("end");
}

}  // namespace
}  // namespace cuda

void gocor_global_cuda(const GlobalGocorParams& p, const GlobalGocorOptions& o,
                       const float* reference, const float* query, float* volume, float* filter_out,
                       const GocorGlobalShape& s, const Exec& ex,
                       std::vector<GocorIterDiag>* diag) {
  cuda::check_global_args(p, o, s);
  cuda::HostCall call(ex);
  const size_t N = (size_t)s.H * s.W, nin = (size_t)s.B * s.C * N;
  const size_t nout = (size_t)s.B * N * N, nw = (size_t)s.B * N * s.C;
  const cuda::GlobalWorkspace ws =
      cuda::global_workspace(s, o, p.reg_inter_dim, p.reg_output_dim, diag != nullptr);
  // The filter is the iterate: a device buffer even when the caller does not want it back.
  float* d_w = filter_out != nullptr ? call.out(filter_out, nw) : call.scratch<float>(nw);
  cuda::gocor_global_device(p, o, call.in(reference, nin), call.in(query, nin),
                            call.out(volume, nout), d_w, call.scratch<char>(ws.total), s,
                            call.stream(), &ex, diag);
  call.finish();
}

namespace cuda_dev {

size_t gocor_global_workspace_bytes(const GocorGlobalShape& s, const GlobalGocorOptions& o) {
  // I and O only size the R_theta tables; the default 16 x 16 (and anything up to 64 x 64) fits.
  return cuda::global_workspace(s, o, 64, 64, false).total;
}

void gocor_global(const GlobalGocorParams& p, const GlobalGocorOptions& o, const float* d_ref,
                  const float* d_query, float* d_volume, float* d_filter, void* d_workspace,
                  const GocorGlobalShape& s, void* stream, std::vector<GocorIterDiag>* diag) {
  if (p.reg_inter_dim > 64 || p.reg_output_dim > 64 || diag != nullptr) {
    throw Error(ErrorCode::InvalidArg,
                "cuda_dev::gocor_global: I, O <= 64 and no diagnostics (use gocor_global_cuda)");
  }
  cuda::gocor_global_device(p, o, d_ref, d_query, d_volume, d_filter,
                            static_cast<char*>(d_workspace), s, static_cast<cudaStream_t>(stream),
                            nullptr, nullptr);
}

std::vector<std::pair<std::string, double>> gocor_global_stages(
    const GlobalGocorParams& p, const GlobalGocorOptions& o, const float* d_ref,
    const float* d_query, float* d_volume, float* d_filter, void* d_workspace,
    const GocorGlobalShape& s, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  cuda::StageClock clock(st);
  cuda::gocor_global_device(p, o, d_ref, d_query, d_volume, d_filter,
                            static_cast<char*>(d_workspace), s, st, nullptr, nullptr, &clock);
  return clock.totals();
}

}  // namespace cuda_dev
}  // namespace gocor
