// Edge-aware sparse-to-dense interpolation on the GPU: the twin of cpp/core/interpolate.cpp's
// flow_interpolate, step for step. The edge cost map repeats the CPU's float operations in its
// order (rounded.cuh), so the integer costs are the CPU's. The geodesic Voronoi diagram is the
// same fixed point reached another way: the CPU settles pixels from a bucket queue (Dial), the GPU
// relaxes every pixel against its 8 neighbours until a sweep changes nothing. Distances are
// integers and a pixel's key is (distance << 32) | seed, compared as one 64-bit number, so the
// tie rule is the CPU's (equal distance: the smaller seed index) and the fixed point, the
// lexicographically smallest (distance, seed) over all seeds, is exact. The seed graph is the
// CPU's set of pairs with the same minimum weights (a hash table with atomic minima instead of the
// raster scan; its rows are in another order, which the K-nearest search does not see: it settles
// seeds in (distance, index) order whatever the order of the edges). Per seed the K nearest seeds
// by Dijkstra (one thread, a small hash map of the seeds it reached, scanned for the nearest) and
// the weighted fit in double in the CPU's order. What is not bit-exact: the fit's weight exp(-alpha
// d) is float(exp(double)), correctly rounded, where glibc's expf may differ by its last bit; see
// the parity rows for the tolerance that follows.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "cuda_util.cuh"
#include "gocor_cuda.h"
#include "gocor_cuda_device.cuh"
#include "interpolate.h"
#include "rounded.cuh"
#include "separable.cuh"

namespace gocor {
namespace cuda {
namespace {

// The CPU's units (interpolate.cpp): costs in 1/32 px, a distance unit is 1/64 px.
constexpr int kCostUnits = 32;
constexpr double kDistToPixels = 1.0 / (2 * kCostUnits);
constexpr uint32_t kUnreached = 0xFFFFFFFFu;
constexpr unsigned long long kNoKey = ~0ull;

__host__ __device__ inline uint32_t step_axial(uint32_t cp, uint32_t cq) {
  return cp + cq;
}
__host__ __device__ inline uint32_t step_diagonal(uint32_t cp, uint32_t cq) {
  return (1448u * (cp + cq) + 512u) >> 10;
}

[[noreturn]] void fail(ErrorCode code, const std::string& what) {
  throw Error(code, "flow_interpolate: " + what);
}

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

// The CPU's checks, in its order and with its messages.
void check_args(const float* image, int C, int H, int W, const float* flow, const uint8_t* valid,
                const float* out, const InterpOptions& o) {
  const std::string hw = std::to_string(H) + "x" + std::to_string(W);
  if (C != 1 && C != 3) {
    fail(ErrorCode::Shape, "expected 1 or 3 image channels but received C=" + std::to_string(C));
  } else if (H <= 0 || W <= 0) {
    fail(ErrorCode::Shape, "expected a positive size but received H=" + std::to_string(H) +
                               " W=" + std::to_string(W));
  } else if (int64_t(H + 2) * (W + 2) > std::numeric_limits<int32_t>::max()) {
    fail(ErrorCode::TooLarge, "image of " + hw + " pixels is too large");  // as the CPU's limit
  }
  if (image == nullptr || flow == nullptr || valid == nullptr || out == nullptr) {
    fail(ErrorCode::InvalidArg, "image, flow, valid and out must not be null");
  }
  const size_t bytes = 2 * size_t(H) * W * sizeof(float);
  const uintptr_t o0 = reinterpret_cast<uintptr_t>(out), f0 = reinterpret_cast<uintptr_t>(flow);
  if (o0 < f0 + bytes && f0 < o0 + bytes && !(o.keep_valid && out == flow)) {
    fail(ErrorCode::InvalidArg, "out must not overlap flow (unless it is flow, with keep_valid)");
  }
  // (name, value, lowest, lowest allowed, highest, integer, expected): the CPU's ranges.
  struct Range {
    const char* name;
    double v, lo;
    bool lo_open;
    double hi;
    bool integer;
    const char* expected;
  };
  for (const Range& r :
       {Range{"seed_stride", double(o.seed_stride), 1, false, 256, true,
              "integer between 1 and 256"},
        Range{"num_neighbors", double(o.num_neighbors), 1, false, 1024, true,
              "integer between 1 and 1024"},
        Range{"alpha", o.alpha, 0, false, INFINITY, false, "finite number >= 0"},
        Range{"edge_sigma", o.edge_sigma, 0, false, 20, false, "number between 0 and 20"},
        Range{"edge_scale", o.edge_scale, 0, true, INFINITY, false, "finite number > 0"},
        Range{"edge_cost", o.edge_cost, 0, false, 1000, false, "number between 0 and 1000"}}) {
    if (!((r.lo_open ? r.v > r.lo : r.v >= r.lo) && r.v <= r.hi && std::isfinite(r.v))) {
      fail(ErrorCode::InvalidArg,
           std::string("expected ") + r.expected + " for " + r.name + " but received " +
               (r.integer ? std::to_string(static_cast<long long>(r.v)) : number(r.v)));
    }
  }
  const uint32_t cmax = static_cast<uint32_t>(std::lround(kCostUnits * (1 + o.edge_cost)));
  const uint64_t wmax = std::max(step_axial(cmax, cmax), step_diagonal(cmax, cmax));
  if (static_cast<uint64_t>(std::max(H, W) + 1) * wmax >= kUnreached) {
    fail(ErrorCode::TooLarge, "geodesic distances of a " + hw + " image with costs up to " +
                                  std::to_string(cmax) + " overflow 32 bits");
  }
}

// ---- edge cost map -----------------------------------------------------------------------------

// The CPU's taps: a Gaussian of edge_sigma (radius ceil(3 sigma) <= 60, 0 for no blur) normalised
// in double, rounded to float.
BlurTaps edge_taps(float sigma) {
  BlurTaps t{};
  t.r = sigma > 0 ? static_cast<int>(std::ceil(3 * sigma)) : 0;
  t.k[0] = 1.f;
  if (t.r > 0) {
    double sum = 0;
    for (int k = -t.r; k <= t.r; ++k) {
      t.k[k + t.r] = static_cast<float>(std::exp(-0.5 * k * k / (sigma * sigma)));
      sum += t.k[k + t.r];
    }
    for (int k = 0; k <= 2 * t.r; ++k) t.k[k] = static_cast<float>(t.k[k] / sum);
  }
  return t;
}

// grad2 = max(grad2, |central difference gradient of smooth|^2); one-sided halves at borders.
__global__ void edge_gradient_kernel(const float* __restrict__ smooth, float* __restrict__ grad2,
                                     int H, int W) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y;
  if (x >= W) return;
  const float* up = smooth + size_t(y > 0 ? y - 1 : y) * W;
  const float* mid = smooth + size_t(y) * W;
  const float* down = smooth + size_t(y + 1 < H ? y + 1 : y) * W;
  float gx;
  if (x == 0) {
    gx = rn::mul(0.5f, rn::sub(mid[min(1, W - 1)], mid[0]));
  } else if (x == W - 1) {
    gx = rn::mul(0.5f, rn::sub(mid[W - 1], mid[W - 2]));
  } else {
    gx = rn::mul(0.5f, rn::sub(mid[x + 1], mid[x - 1]));
  }
  const float gy = rn::mul(0.5f, rn::sub(down[x], up[x]));
  const float v = rn::add(rn::mul(gx, gx), rn::mul(gy, gy));
  float& g = grad2[size_t(y) * W + x];
  if (g < v) g = v;
}

__global__ void edge_cost_kernel(const float* __restrict__ grad2, long long N, float inv_scale2,
                                 float scale, uint16_t* __restrict__ cost) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= N) return;
  const float s = rn::mul(grad2[i], inv_scale2);
  const float strength = s < 1.f ? s : 1.f;  // std::min(1.f, s)
  cost[i] =
      static_cast<uint16_t>(kCostUnits + static_cast<int>(rn::add(rn::mul(scale, strength), 0.5f)));
}

// ---- seeds -------------------------------------------------------------------------------------

// Per seed_stride cell (raster order) the pixel y * W + x of its seed, or -1: the centre when
// usable, else the usable pixel nearest to it, ties to the first in raster order.
__global__ void pick_seeds_kernel(const float* __restrict__ flow, const uint8_t* __restrict__ valid,
                                  int H, int W, int s, int ncx, int ncells,
                                  int32_t* __restrict__ cell_seed) {
  const int cell = blockIdx.x * blockDim.x + threadIdx.x;
  if (cell >= ncells) return;
  const size_t HW = size_t(H) * W;
  auto usable = [&](int x, int y) {
    const size_t i = size_t(y) * W + x;
    return valid[i] != 0 && isfinite(flow[i]) && isfinite(flow[HW + i]);
  };
  const int x0 = (cell % ncx) * s, y0 = (cell / ncx) * s, cx = x0 + s / 2, cy = y0 + s / 2;
  if (cx < W && cy < H && usable(cx, cy)) {
    cell_seed[cell] = cy * W + cx;
    return;
  }
  int best = -1;
  long long best_d2 = 0;
  for (int y = y0; y < min(H, y0 + s); ++y) {
    for (int x = x0; x < min(W, x0 + s); ++x) {
      if (!usable(x, y)) continue;
      const long long d2 = (long long)(x - cx) * (x - cx) + (long long)(y - cy) * (y - cy);
      if (best < 0 || d2 < best_d2) {
        best = y * W + x;
        best_d2 = d2;
      }
    }
  }
  cell_seed[cell] = best;
}

// ---- geodesic Voronoi diagram ------------------------------------------------------------------

__global__ void voronoi_seed_kernel(const int32_t* __restrict__ seeds, int n,
                                    unsigned long long* key) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) key[seeds[i]] = static_cast<unsigned long long>(static_cast<uint32_t>(i));
}

// One sweep: every pixel takes the smallest (distance, seed) its 8 neighbours offer. Keys only
// decrease and each is the length of a real path, so sweeps in any order and with any mix of
// old and new neighbour values reach the one fixed point. Candidates past 32 bits are dropped:
// no shortest distance is that long (check_args), so none is lost.
__global__ void voronoi_relax_kernel(const uint16_t* __restrict__ cost, int H, int W,
                                     unsigned long long* key, int* changed) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y;
  if (x >= W || y >= H) return;
  const size_t p = size_t(y) * W + x;
  const unsigned long long own = key[p];
  unsigned long long best = own;
  const uint32_t cp = cost[p];
  for (int dy = -1; dy <= 1; ++dy) {
    const int yy = y + dy;
    if (yy < 0 || yy >= H) continue;
    for (int dx = -1; dx <= 1; ++dx) {
      const int xx = x + dx;
      if ((dx == 0 && dy == 0) || xx < 0 || xx >= W) continue;
      const size_t q = size_t(yy) * W + xx;
      const unsigned long long kq = key[q];
      if (kq == kNoKey) continue;
      const uint32_t cq = cost[q];
      const uint64_t nd =
          (kq >> 32) + (dx == 0 || dy == 0 ? step_axial(cp, cq) : step_diagonal(cp, cq));
      if (nd >= kUnreached) continue;
      const unsigned long long cand = (nd << 32) | (kq & 0xFFFFFFFFull);
      if (cand < best) best = cand;
    }
  }
  if (best < own) {
    key[p] = best;
    *changed = 1;
  }
}

// ---- seed graph --------------------------------------------------------------------------------

struct SeedEdge {
  int32_t to;
  uint32_t weight;
};

__device__ inline unsigned long long pair_hash(unsigned long long k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull;
  k ^= k >> 33;
  return k;
}

// Boundary pixel pairs (p and its 4 forward neighbours, as the CPU's raster scan) into a set of
// seed pairs a < b keeping the smallest dist(p) + step(p, q) + dist(q), capped at max_weight.
__global__ void seed_pairs_kernel(const uint16_t* __restrict__ cost,
                                  const unsigned long long* __restrict__ key, int H, int W,
                                  uint32_t max_weight, unsigned long long* __restrict__ table_key,
                                  uint32_t* __restrict__ table_weight, unsigned long long mask) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y;
  if (x >= W) return;
  const size_t p = size_t(y) * W + x;
  const unsigned long long kp = key[p];
  const int32_t a = static_cast<int32_t>(static_cast<uint32_t>(kp));
  const int fdx[4] = {1, -1, 0, 1}, fdy[4] = {0, 1, 1, 1};
  for (int d = 0; d < 4; ++d) {
    const int xx = x + fdx[d], yy = y + fdy[d];
    if (xx < 0 || xx >= W || yy >= H) continue;
    const size_t q = size_t(yy) * W + xx;
    const unsigned long long kq = key[q];
    const int32_t b = static_cast<int32_t>(static_cast<uint32_t>(kq));
    if (b == a || b < 0) continue;
    const uint32_t step =
        d == 0 || d == 2 ? step_axial(cost[p], cost[q]) : step_diagonal(cost[p], cost[q]);
    const uint64_t w64 = (kp >> 32) + step + (kq >> 32);
    const uint32_t w = static_cast<uint32_t>(w64 < max_weight ? w64 : max_weight);
    const unsigned long long k =
        (static_cast<unsigned long long>(min(a, b)) << 32) | static_cast<uint32_t>(max(a, b));
    for (unsigned long long h = pair_hash(k) & mask;; h = (h + 1) & mask) {
      const unsigned long long prev = atomicCAS(&table_key[h], kNoKey, k);
      if (prev == kNoKey || prev == k) {
        atomicMin(&table_weight[h], w);
        break;
      }
    }
  }
}

__global__ void seed_degree_kernel(const unsigned long long* __restrict__ table_key,
                                   long long slots, int* __restrict__ degree) {
  const long long h = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (h >= slots || table_key[h] == kNoKey) return;
  atomicAdd(&degree[table_key[h] >> 32], 1);
  atomicAdd(&degree[table_key[h] & 0xFFFFFFFFull], 1);
}

__global__ void seed_edges_kernel(const unsigned long long* __restrict__ table_key,
                                  const uint32_t* __restrict__ table_weight, long long slots,
                                  unsigned long long* __restrict__ fill,
                                  SeedEdge* __restrict__ edges) {
  const long long h = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (h >= slots || table_key[h] == kNoKey) return;
  const int32_t a = int32_t(table_key[h] >> 32), b = int32_t(table_key[h] & 0xFFFFFFFFull);
  const uint32_t w = table_weight[h];
  edges[atomicAdd(&fill[a], 1ull)] = {b, w};
  edges[atomicAdd(&fill[b], 1ull)] = {a, w};
}

// ---- K nearest seeds and the fits --------------------------------------------------------------

struct Model {
  float cx, cy, u, v, dudx, dudy, dvdx, dvdy;
};

// One thread's scratch for the K-nearest search: an open-addressing map seed -> best distance
// (kSettled once settled) and the list of its used slots, sized for one search (it reaches at
// most 1 + (K - 1) max_degree seeds), and the K neighbours found.
constexpr unsigned long long kSettled = 1ull << 33, kNotYet = 1ull << 32;

struct KnnScratch {
  int32_t* map_seed;
  unsigned long long* map_dist;
  int32_t* used;
  int32_t* nb;
  uint32_t* nbd;
  int map_mask;
};

struct KnnLayout {
  int reach, map_slots, K;
  __host__ __device__ size_t per_thread() const {
    return size_t(map_slots) * 12 + size_t(reach) * 4 + size_t(K) * 8;
  }
};

KnnLayout knn_layout(int K, int max_degree) {
  KnnLayout l;
  l.K = K;
  l.reach = ((K - 1) * std::max(max_degree, 1) + 2) &
            ~1;  // even: keeps the next thread's map 8-byte aligned
  l.map_slots = 1;
  while (l.map_slots < 2 * l.reach) l.map_slots <<= 1;
  return l;
}

__device__ inline KnnScratch knn_scratch(char* base, const KnnLayout& l, int t) {
  char* p = base + size_t(t) * l.per_thread();
  KnnScratch s;
  s.map_dist = reinterpret_cast<unsigned long long*>(p);
  s.map_seed = reinterpret_cast<int32_t*>(p + size_t(l.map_slots) * 8);
  s.used = s.map_seed + l.map_slots;
  s.nb = s.used + l.reach;
  s.nbd = reinterpret_cast<uint32_t*>(s.nb + l.K);
  s.map_mask = l.map_slots - 1;
  return s;
}

// The CPU's nearest_seeds (a Dijkstra on the seed graph): the K seeds nearest to a in (distance,
// index) order, a itself first; returns how many were found. The CPU pops a heap; here each step
// scans the reached, unsettled seeds for the smallest (distance << 32) | index, which settles the
// same seeds in the same order.
__device__ int nearest_seeds(const long long* __restrict__ start,
                             const SeedEdge* __restrict__ edges, int a, int K,
                             const KnnScratch& s) {
  for (int h = 0; h <= s.map_mask; ++h) s.map_seed[h] = -1;
  int reached = 0, count = 0;
  // The slot of seed b, claimed (not yet reached) when absent.
  auto slot = [&](int32_t b) {
    int h = int((uint32_t(b) * 2654435761u) & uint32_t(s.map_mask));
    while (s.map_seed[h] != b && s.map_seed[h] >= 0) h = (h + 1) & s.map_mask;
    if (s.map_seed[h] < 0) {
      s.map_seed[h] = b;
      s.map_dist[h] = kNotYet;
      s.used[reached++] = h;
    }
    return h;
  };
  s.map_dist[slot(a)] = 0;
  while (count < K) {
    unsigned long long best = ~0ull;
    int bh = -1;
    for (int r = 0; r < reached; ++r) {
      const int h = s.used[r];
      if (s.map_dist[h] >= kNotYet) continue;
      const unsigned long long key = (s.map_dist[h] << 32) | uint32_t(s.map_seed[h]);
      if (key < best) best = key, bh = h;
    }
    if (bh < 0) break;
    const int32_t b = s.map_seed[bh];
    const uint32_t db = uint32_t(s.map_dist[bh]);
    s.map_dist[bh] = kSettled;
    s.nb[count] = b;
    s.nbd[count] = db;
    if (++count == K) break;
    for (long long e = start[b]; e < start[b + 1]; ++e) {
      const SeedEdge x = edges[e];
      const uint32_t nd = db + x.weight;  // no overflow: the weights are capped (seed_pairs_kernel)
      const int h = slot(x.to);
      if (s.map_dist[h] != kSettled && nd < s.map_dist[h]) s.map_dist[h] = nd;
    }
  }
  return count;
}

// The CPU's fit_seed, operation for operation in double.
__device__ Model fit_seed(const KnnScratch& s, int k, const float4* __restrict__ seeds, float decay,
                          bool affine, double min_spread) {
  const float4 a = seeds[s.nb[0]];
  double W = 0, sx = 0, sy = 0, su = 0, sv = 0;
  double sxx = 0, sxy = 0, syy = 0, sxu = 0, syu = 0, sxv = 0, syv = 0;
  for (int j = 0; j < k; ++j) {
    const float4 b = seeds[s.nb[j]];
    const double w = double(float(exp(double(rn::mul(decay, float(s.nbd[j]))))));
    const double dx = rn::sub(b.x, a.x), dy = rn::sub(b.y, a.y), u = b.z, v = b.w;
    const double wdx = rn::mul(w, dx), wdy = rn::mul(w, dy);
    W = rn::add(W, w);
    sx = rn::add(sx, wdx);
    sy = rn::add(sy, wdy);
    su = rn::add(su, rn::mul(w, u));
    sv = rn::add(sv, rn::mul(w, v));
    sxx = rn::add(sxx, rn::mul(wdx, dx));
    sxy = rn::add(sxy, rn::mul(wdx, dy));
    syy = rn::add(syy, rn::mul(wdy, dy));
    sxu = rn::add(sxu, rn::mul(wdx, u));
    syu = rn::add(syu, rn::mul(wdy, u));
    sxv = rn::add(sxv, rn::mul(wdx, v));
    syv = rn::add(syv, rn::mul(wdy, v));
  }
  const double mx = rn::div(sx, W), my = rn::div(sy, W), mu = rn::div(su, W), mv = rn::div(sv, W);
  Model m{float(rn::add(double(a.x), mx)),
          float(rn::add(double(a.y), my)),
          float(mu),
          float(mv),
          0.f,
          0.f,
          0.f,
          0.f};
  if (!affine || k < 3) return m;
  auto cov = [&](double s2, double p, double q) { return rn::sub(rn::div(s2, W), rn::mul(p, q)); };
  const double cxx = cov(sxx, mx, mx), cxy = cov(sxy, mx, my), cyy = cov(syy, my, my);
  const double cxu = cov(sxu, mx, mu), cyu = cov(syu, my, mu);
  const double cxv = cov(sxv, mx, mv), cyv = cov(syv, my, mv);
  const double tr = rn::add(cxx, cyy), det = rn::sub(rn::mul(cxx, cyy), rn::mul(cxy, cxy));
  const double disc = rn::sub(rn::mul(tr, tr), rn::mul(4.0, det));
  const double lambda_min = rn::mul(0.5, rn::sub(tr, sqrt(0.0 < disc ? disc : 0.0)));
  if (!(lambda_min >= min_spread)) return m;
  const double inv = rn::div(1.0, det);
  auto slope = [&](double p, double q, double r, double t) {
    return rn::mul(rn::sub(rn::mul(p, q), rn::mul(r, t)), inv);
  };
  const double dudx = slope(cyy, cxu, cxy, cyu), dudy = slope(cxx, cyu, cxy, cxu);
  const double dvdx = slope(cyy, cxv, cxy, cyv), dvdy = slope(cxx, cyv, cxy, cxv);
  if (!isfinite(rn::add(rn::add(rn::add(dudx, dudy), dvdx), dvdy))) return m;
  m.dudx = float(dudx);
  m.dudy = float(dudy);
  m.dvdx = float(dvdx);
  m.dvdy = float(dvdy);
  return m;
}

__global__ void knn_fit_kernel(const long long* __restrict__ start,
                               const SeedEdge* __restrict__ edges, const float4* __restrict__ seeds,
                               int a0, int count, KnnLayout layout, char* scratch, float decay,
                               bool affine, double min_spread, Model* __restrict__ models) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= count) return;
  const KnnScratch s = knn_scratch(scratch, layout, t);
  const int k = nearest_seeds(start, edges, a0 + t, layout.K, s);
  models[a0 + t] = fit_seed(s, k, seeds, decay, affine, min_spread);
}

// Every pixel: the model of its Voronoi cell's seed, evaluated at the pixel (with keep_valid, a
// trusted pixel's own flow: valid and finite, as the CPU's). With keep_valid out may be flow (in
// place: a thread reads only its own pixel, before writing it), so neither is __restrict__.
__global__ void evaluate_kernel(const unsigned long long* __restrict__ key,
                                const Model* __restrict__ models, const float* flow,
                                const uint8_t* __restrict__ valid, bool keep_valid, int H, int W,
                                float* out) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y;
  if (x >= W) return;
  const size_t p = size_t(y) * W + x, HW = size_t(H) * W;
  if (keep_valid && valid[p] != 0 && isfinite(flow[p]) && isfinite(flow[HW + p])) {
    out[p] = flow[p];
    out[HW + p] = flow[HW + p];
    return;
  }
  const Model m = models[uint32_t(key[p])];
  const float dx = rn::sub(float(x), m.cx), dy = rn::sub(float(y), m.cy);
  out[p] = rn::add(rn::add(m.u, rn::mul(m.dudx, dx)), rn::mul(m.dudy, dy));
  out[HW + p] = rn::add(rn::add(m.v, rn::mul(m.dvdx, dx)), rn::mul(m.dvdy, dy));
}

__global__ void seed_values_kernel(const int32_t* __restrict__ seeds, int n,
                                   const float* __restrict__ flow, int W, size_t HW,
                                   float4* __restrict__ out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int p = seeds[i];
  out[i] = make_float4(float(p % W), float(p / W), flow[p], flow[HW + p]);
}

template <typename T>
std::vector<T> download_vec(const T* d, size_t n, cudaStream_t st) {
  std::vector<T> v(n);
  if (n > 0) to_host(v.data(), d, n, st);
  check(cudaStreamSynchronize(st), "cudaStreamSynchronize");
  return v;
}

// The whole stage on device memory (see cuda_dev::flow_interpolate).
void interpolate_device(const float* d_image, int C, int H, int W, const float* d_flow,
                        const uint8_t* d_valid, float* d_out, const InterpOptions& o,
                        cudaStream_t st) {
  const size_t HW = size_t(H) * W;
  const dim3 row_block(128), row_grid(ceil_div(W, 128), H);

  // Seeds, compacted in cell order on the host (their index is the tie rule).
  const int s = o.seed_stride, ncx = (W + s - 1) / s, ncy = (H + s - 1) / s, ncells = ncx * ncy;
  DeviceBuffer<int32_t> d_cells(ncells);
  pick_seeds_kernel<<<ceil_div(ncells, 128), 128, 0, st>>>(d_flow, d_valid, H, W, s, ncx, ncells,
                                                           d_cells.get());
  check_launch("pick_seeds_kernel");
  std::vector<int32_t> seeds;
  for (int32_t c : download_vec(d_cells.get(), ncells, st)) {
    if (c >= 0) seeds.push_back(c);
  }
  const int n = int(seeds.size());
  if (n == 0) {
    if (d_out != d_flow) {
      check(cudaMemcpyAsync(d_out, d_flow, 2 * HW * sizeof(float), cudaMemcpyDeviceToDevice, st),
            "copy flow");
    }
    return;
  }
  DeviceBuffer<int32_t> d_seeds(n);
  to_device(d_seeds.get(), seeds.data(), n, st);

  // Edge cost map: each channel blurred (separable.cuh, the CPU's order), its gradient's largest
  // square over channels, quantised.
  const BlurTaps taps = edge_taps(o.edge_sigma);
  DeviceBuffer<float> d_tmp(HW), d_smooth(HW), d_grad2(HW);
  DeviceBuffer<uint16_t> d_cost(HW);
  check(cudaMemsetAsync(d_grad2.get(), 0, HW * sizeof(float), st), "cudaMemset");
  for (int c = 0; c < C; ++c) {
    filter_separable(d_image + c * HW, d_tmp.get(), d_smooth.get(), 1, H, W, H, W, taps, st);
    edge_gradient_kernel<<<row_grid, row_block, 0, st>>>(d_smooth.get(), d_grad2.get(), H, W);
    check_launch("edge_gradient_kernel");
  }
  const float inv_scale2 = 1.f / (o.edge_scale * o.edge_scale);
  const float scale = kCostUnits * o.edge_cost;
  edge_cost_kernel<<<ceil_div(HW, 256), 256, 0, st>>>(d_grad2.get(), HW, inv_scale2, scale,
                                                      d_cost.get());
  check_launch("edge_cost_kernel");

  // Voronoi: sweeps until one changes nothing (checked every kBatch sweeps).
  DeviceBuffer<unsigned long long> d_key(HW);
  DeviceBuffer<int> d_changed(1);
  check(cudaMemsetAsync(d_key.get(), 0xFF, HW * sizeof(unsigned long long), st), "cudaMemset");
  voronoi_seed_kernel<<<ceil_div(n, 128), 128, 0, st>>>(d_seeds.get(), n, d_key.get());
  check_launch("voronoi_seed_kernel");
  const dim3 tile(32, 8), tiles(ceil_div(W, 32), ceil_div(H, 8));
  constexpr int kBatch = 8;
  for (int changed = 1; changed != 0;) {
    check(cudaMemsetAsync(d_changed.get(), 0, sizeof(int), st), "cudaMemset");
    for (int i = 0; i < kBatch; ++i) {
      voronoi_relax_kernel<<<tiles, tile, 0, st>>>(d_cost.get(), H, W, d_key.get(),
                                                   d_changed.get());
      check_launch("voronoi_relax_kernel");
    }
    changed = download_vec(d_changed.get(), 1, st)[0];
  }

  // Seed graph in compressed rows.
  const uint32_t max_weight = kUnreached / static_cast<uint32_t>(o.num_neighbors);
  const unsigned long long pairs_bound =
      std::min<unsigned long long>(4ull * HW, (unsigned long long)n * (n - 1) / 2 + 1);
  unsigned long long slots = 16;
  while (slots < 2 * pairs_bound) slots <<= 1;
  DeviceBuffer<unsigned long long> d_table_key(slots);
  DeviceBuffer<uint32_t> d_table_weight(slots);
  check(cudaMemsetAsync(d_table_key.get(), 0xFF, slots * 8, st), "cudaMemset");
  check(cudaMemsetAsync(d_table_weight.get(), 0xFF, slots * 4, st), "cudaMemset");
  seed_pairs_kernel<<<row_grid, row_block, 0, st>>>(d_cost.get(), d_key.get(), H, W, max_weight,
                                                    d_table_key.get(), d_table_weight.get(),
                                                    slots - 1);
  check_launch("seed_pairs_kernel");
  DeviceBuffer<int> d_degree(n);
  check(cudaMemsetAsync(d_degree.get(), 0, n * sizeof(int), st), "cudaMemset");
  seed_degree_kernel<<<ceil_div(slots, 256), 256, 0, st>>>(d_table_key.get(), slots,
                                                           d_degree.get());
  check_launch("seed_degree_kernel");
  const std::vector<int> degree = download_vec(d_degree.get(), n, st);
  std::vector<long long> start(n + 1, 0);
  int max_degree = 0;
  for (int i = 0; i < n; ++i) {
    max_degree = std::max(max_degree, degree[i]);
    start[i + 1] = start[i] + degree[i];
  }
  DeviceBuffer<long long> d_start(n + 1);
  DeviceBuffer<unsigned long long> d_fill(n);
  DeviceBuffer<SeedEdge> d_edges(std::max<long long>(start[n], 1));
  to_device(d_start.get(), start.data(), n + 1, st);
  to_device(d_fill.get(), reinterpret_cast<const unsigned long long*>(start.data()), n, st);
  seed_edges_kernel<<<ceil_div(slots, 256), 256, 0, st>>>(d_table_key.get(), d_table_weight.get(),
                                                          slots, d_fill.get(), d_edges.get());
  check_launch("seed_edges_kernel");

  // K nearest and fits, in chunks of seeds that bound the per-thread scratch.
  DeviceBuffer<float4> d_seed_values(n);
  seed_values_kernel<<<ceil_div(n, 128), 128, 0, st>>>(d_seeds.get(), n, d_flow, W, HW,
                                                       d_seed_values.get());
  check_launch("seed_values_kernel");
  const KnnLayout layout = knn_layout(o.num_neighbors, max_degree);
  const size_t kScratchBudget = size_t(256) << 20;
  const int chunk =
      int(std::max<size_t>(1, std::min<size_t>(n, kScratchBudget / layout.per_thread())));
  DeviceBuffer<char> d_scratch(size_t(chunk) * layout.per_thread());
  DeviceBuffer<Model> d_models(n);
  const float decay = -o.alpha * static_cast<float>(kDistToPixels);
  const double min_spread = 0.05 * o.seed_stride * o.seed_stride;
  for (int a0 = 0; a0 < n; a0 += chunk) {
    const int count = std::min(chunk, n - a0);
    knn_fit_kernel<<<ceil_div(count, 64), 64, 0, st>>>(
        d_start.get(), d_edges.get(), d_seed_values.get(), a0, count, layout, d_scratch.get(),
        decay, o.affine, min_spread, d_models.get());
    check_launch("knn_fit_kernel");
  }
  evaluate_kernel<<<row_grid, row_block, 0, st>>>(d_key.get(), d_models.get(), d_flow, d_valid,
                                                  o.keep_valid, H, W, d_out);
  check_launch("evaluate_kernel");
  check(cudaStreamSynchronize(st), "cudaStreamSynchronize");  // the buffers above go out of scope
}

}  // namespace
}  // namespace cuda

namespace cuda_dev {

void flow_interpolate(const float* d_image, int C, int H, int W, const float* d_flow,
                      const uint8_t* d_valid, float* d_out, const InterpOptions& o, void* stream) {
  cuda::check_args(d_image, C, H, W, d_flow, d_valid, d_out, o);
  cuda::interpolate_device(d_image, C, H, W, d_flow, d_valid, d_out, o,
                           static_cast<cudaStream_t>(stream));
}

}  // namespace cuda_dev

void flow_interpolate_cuda(const float* image, int C, int H, int W, const float* flow,
                           const uint8_t* valid, float* out, const InterpOptions& o,
                           const Exec& ex) {
  cuda::check_args(image, C, H, W, flow, valid, out, o);
  cuda::HostCall call(ex);
  const size_t HW = size_t(H) * W;
  cuda::interpolate_device(call.in(image, size_t(C) * HW), C, H, W, call.in(flow, 2 * HW),
                           call.in(valid, HW), call.out(out, 2 * HW), o, call.stream());
  call.finish();
}

}  // namespace gocor
