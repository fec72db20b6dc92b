#include "interpolate.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "blocks.h"
#include "parallel.h"

namespace gocor {
namespace {

// Pixel costs are quantised to 1/kCostUnits px so that the geodesic distances are integers (exact,
// reproducible, and a bucket queue instead of a heap). An axial step sums two pixel costs, so a
// distance unit is 1/(2 kCostUnits) px. 1/32 px keeps the quantisation error of a flat pixel at 0
// and of any pixel under 1/64 px, far below what moves a Voronoi boundary by a pixel.
constexpr int kCostUnits = 32;
constexpr double kDistToPixels = 1.0 / (2 * kCostUnits);
constexpr uint32_t kUnreached = std::numeric_limits<uint32_t>::max();

inline uint32_t step_axial(uint32_t cp, uint32_t cq) {
  return cp + cq;
}
inline uint32_t step_diagonal(uint32_t cp, uint32_t cq) {
  return (1448u * (cp + cq) + 512u) >> 10;
}

std::string format_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

[[noreturn]] void fail(ErrorCode code, const std::string& what) {
  throw Error(code, "flow_interpolate: " + what);
}

void check_size(int H, int W) {
  if (H <= 0 || W <= 0) {
    fail(ErrorCode::Shape, "expected a positive size but received H=" + std::to_string(H) +
                               " W=" + std::to_string(W));
  }
  // The padded grid is indexed with int32.
  if (static_cast<int64_t>(H + 2) * (W + 2) > std::numeric_limits<int32_t>::max()) {
    fail(ErrorCode::TooLarge,
         "image of " + std::to_string(H) + "x" + std::to_string(W) + " pixels is too large");
  }
}

// The pixel grid padded by one pixel on every side, (H + 2, W + 2).
struct Grid {
  int H, W, Wp;
  int32_t size() const { return (H + 2) * Wp; }
  int32_t at(int x, int y) const { return (y + 1) * Wp + x + 1; }
};

// A pixel's state in the geodesic Voronoi diagram: (distance << 32) | seed. One 64-bit compare
// orders candidates by distance then seed index, and one load reads both. Border pixels hold
// distance 0 and seed 0xFFFFFFFF (-1): no relaxation improves them, so Dijkstra's inner loop needs
// no bounds checks.
constexpr uint64_t kBorderKey = 0xFFFFFFFFull;
inline uint32_t key_dist(uint64_t key) {
  return static_cast<uint32_t>(key >> 32);
}
inline int32_t key_seed(uint64_t key) {
  return static_cast<int32_t>(static_cast<uint32_t>(key));
}

constexpr size_t kPrefetch = 8;

// Dial's bucket queue over the padded grid for the multi-source Dijkstra below: buckets of pixel
// indices in a ring longer than the heaviest step, so that every pending distance lies within one
// ring length of the bucket being emptied.
struct Buckets {
  std::vector<std::vector<int32_t>> ring;
  uint32_t mask;
  int64_t pending = 0;
  explicit Buckets(uint32_t wmax) {
    uint32_t r = 1;
    while (r <= wmax) r <<= 1;
    ring.resize(r);
    mask = r - 1;
  }
  void push(uint32_t d, int32_t p) {
    ring[d & mask].push_back(p);
    ++pending;
  }
};

// The largest step between two pixels of the padded grid.
uint32_t max_step(const Grid& g, const uint16_t* cost) {
  uint32_t cmax = 1;
  for (int y = 0; y < g.H; ++y) {
    const uint16_t* row = cost + g.at(0, y);
    for (int x = 0; x < g.W; ++x) cmax = std::max<uint32_t>(cmax, row[x]);
  }
  return std::max(step_axial(cmax, cmax), step_diagonal(cmax, cmax));
}

// Empties the queue from distance `cur` on: each pixel still at the distance it was queued at
// relaxes its 8 neighbours. kBounded: only pixels of padded indices [lo, hi) are relaxed (a band
// of rows, whose neighbours above and below belong to another band). kRequeue: a pixel improved
// to its own distance with a smaller seed is queued again (needed when pixels hold keys that were
// never queued, see voronoi_padded); without it, such a pixel is already queued at that distance.
// `feed`, when non-null, adds the pixels due at each distance (sorted (distance, pixel) pairs)
// before that distance's bucket is emptied. A bucket's pixels lie all over the grid: their keys
// and costs are prefetched kPrefetch entries ahead.
template <bool kBounded, bool kRequeue>
void dijkstra(const Grid& g, const uint16_t* cost, uint64_t* key, Buckets& q, uint32_t cur,
              int32_t lo, int32_t hi, const std::vector<std::pair<uint32_t, int32_t>>* feed) {
  const int32_t Wp = g.Wp;
  const int32_t axial[4] = {-1, 1, -Wp, Wp};
  const int32_t diagonal[4] = {-Wp - 1, -Wp + 1, Wp - 1, Wp + 1};
  const uint32_t span = static_cast<uint32_t>(hi - lo);
  size_t fed = 0;
  const size_t nfeed = feed ? feed->size() : 0;
  for (;; ++cur) {
    if (q.pending == 0) {
      if (fed == nfeed) break;
      cur = (*feed)[fed].first;  // nothing queued before the next fed distance
    }
    while (fed < nfeed && (*feed)[fed].first == cur) q.push(cur, (*feed)[fed++].second);
    std::vector<int32_t>& bucket = q.ring[cur & q.mask];
    for (size_t k = 0; k < bucket.size(); ++k) {
      const int32_t p = bucket[k];
      if (k + kPrefetch < bucket.size()) {  // the rows of its 8 neighbours, and its cost
        const int32_t f = bucket[k + kPrefetch];
        __builtin_prefetch(key + f - Wp);
        __builtin_prefetch(key + f);
        __builtin_prefetch(key + f + Wp);
        __builtin_prefetch(cost + f);
      }
      if (key_dist(key[p]) != cur) continue;  // improved after it was queued here
      const uint64_t seed = static_cast<uint32_t>(key[p]);
      const uint32_t cp = cost[p];
      auto relax = [&](int32_t nq, uint32_t w) {
        if (kBounded && static_cast<uint32_t>(nq - lo) >= span) return;
        const uint32_t nd = cur + w;
        const uint64_t nk = (static_cast<uint64_t>(nd) << 32) | seed;
        if (nk < key[nq]) {
          if (kRequeue || key_dist(key[nq]) != nd) q.push(nd, nq);
          key[nq] = nk;
        }
      };
      for (int32_t off : axial) relax(p + off, step_axial(cp, cost[p + off]));
      for (int32_t off : diagonal) relax(p + off, step_diagonal(cp, cost[p + off]));
    }
    q.pending -= static_cast<int64_t>(bucket.size());
    bucket.clear();
  }
}

// Rows per band of the parallel Voronoi diagram, at least: below, the fix-up of the cuts outweighs
// the band's own work.
constexpr int kVoronoiBandRows = 64;

// Multi-source Dijkstra with Dial's bucket queue over the padded grid. cost (padded), interior
// values >= 1; seeds (n) padded indices; key (padded) receives per pixel the lexicographically
// smallest (distance, seed index). Relaxing with that pair order is exact, ties included: along a
// shortest path from the winning seed no other seed can do better at any pixel.
// With several threads the rows are cut into bands, each band's diagram made on its own (paths
// confined to the band), and a second Dijkstra from the pixels on both sides of every cut carries
// the paths that cross it. The key of every pixel is then still the smallest (distance, seed) over
// all paths -- the unique fixed point of the relaxation, which the serial queue also reaches -- so
// the result does not depend on the thread count: at the end no edge can improve its head (an edge
// inside a band held at the band's end and its tail's key has not changed, or its tail was queued
// again and relaxed it; an edge across a cut has its tail on the cut, queued in the second pass),
// and every key is that of a path.
// `bands` (1 .. H) row bands run on up to `threads` threads.
void voronoi_padded(const Grid& g, const uint16_t* cost, const int32_t* seeds, int n, uint64_t* key,
                    int bands, int threads) {
  std::fill(key, key + g.size(), kBorderKey);
  for (int y = 0; y < g.H; ++y) {
    const int32_t row = g.at(0, y);
    std::fill(key + row, key + row + g.W, ~uint64_t{0});
  }
  if (n == 0) return;
  const uint32_t wmax = max_step(g, cost);
  for (int i = 0; i < n; ++i) {
    const int32_t p = seeds[i];
    if (key[p] >> 32 == 0) continue;  // a duplicate: the smaller index keeps the pixel
    key[p] = static_cast<uint32_t>(i);
  }
  bands = std::clamp(bands, 1, g.H);
  if (bands == 1) {
    Buckets q(wmax);
    for (int i = 0; i < n; ++i) {
      if (static_cast<uint32_t>(key[seeds[i]]) == static_cast<uint32_t>(i)) q.push(0, seeds[i]);
    }
    dijkstra<false, false>(g, cost, key, q, 0, 0, 0, nullptr);
    return;
  }
  // Band b: rows [b H / bands, (b + 1) H / bands).
  auto band_row = [&](int b) { return static_cast<int>(int64_t(b) * g.H / bands); };
  parallel_for(bands, threads, [&](int64_t b) {
    const int32_t lo = g.at(-1, band_row(int(b))), hi = g.at(-1, band_row(int(b) + 1));
    Buckets q(wmax);
    for (int i = 0; i < n; ++i) {
      const int32_t p = seeds[i];
      if (p >= lo && p < hi && static_cast<uint32_t>(key[p]) == static_cast<uint32_t>(i)) {
        q.push(0, p);
      }
    }
    dijkstra<true, false>(g, cost, key, q, 0, lo, hi, nullptr);
  });
  // The cuts: the rows on both sides of each, fed in order of distance.
  std::vector<std::pair<uint32_t, int32_t>> feed;
  for (int b = 1; b < bands; ++b) {
    for (int y = band_row(b) - 1; y <= band_row(b); ++y) {
      const int32_t row = g.at(0, y);
      for (int32_t p = row; p < row + g.W; ++p) {
        if (key[p] != ~uint64_t{0}) feed.emplace_back(key_dist(key[p]), p);
      }
    }
  }
  std::sort(feed.begin(), feed.end());
  Buckets q(wmax);
  if (!feed.empty()) dijkstra<false, true>(g, cost, key, q, feed.front().first, 0, 0, &feed);
}

// Fails when a distance could overflow: a shortest path is never longer than max(H, W) steps of
// the heaviest kind.
void check_distance_range(int H, int W, uint32_t cmax) {
  const uint64_t wmax = std::max(step_axial(cmax, cmax), step_diagonal(cmax, cmax));
  if (static_cast<uint64_t>(std::max(H, W) + 1) * wmax >= kUnreached) {
    fail(ErrorCode::TooLarge, "geodesic distances of a " + std::to_string(H) + "x" +
                                  std::to_string(W) + " image with costs up to " +
                                  std::to_string(cmax) + " overflow 32 bits");
  }
}

// 1-D Gaussian blur of a row of n values with clamped borders: src is read through a copy padded
// by `radius` on both sides, so the tap loop has no branches and vectorises.
void blur_line(const float* src, int n, const std::vector<float>& taps, float* pad, float* dst) {
  const int radius = static_cast<int>(taps.size() / 2);
  std::fill(pad, pad + radius, src[0]);
  std::copy(src, src + n, pad + radius);
  std::fill(pad + radius + n, pad + 2 * radius + n, src[n - 1]);
  std::fill(dst, dst + n, 0.f);
  for (int k = 0; k <= 2 * radius; ++k) {
    const float t = taps[k];
    const float* s = pad + k;
    for (int i = 0; i < n; ++i) dst[i] += t * s[i];
  }
}

// Edge cost map (padded grid, 1/kCostUnits px): 1 + edge_cost * min(1, |grad|^2 / edge_scale^2)
// of the smoothed image, the gradient taken as the largest over channels. Border pixels get 0.
void edge_cost_map(const float* image, int C, const Grid& g, const InterpOptions& o, uint16_t* cost,
                   const Exec& ex) {
  const int H = g.H, W = g.W;
  const size_t HW = static_cast<size_t>(H) * W;
  const int radius = o.edge_sigma > 0 ? static_cast<int>(std::ceil(3 * o.edge_sigma)) : 0;
  std::vector<float> taps(2 * radius + 1, 1.f);
  if (radius > 0) {
    double sum = 0;
    for (int k = -radius; k <= radius; ++k) {
      taps[k + radius] = static_cast<float>(std::exp(-0.5 * k * k / (o.edge_sigma * o.edge_sigma)));
      sum += taps[k + radius];
    }
    for (float& t : taps) t = static_cast<float>(t / sum);
  }
  WorkVector<float> tmp(HW), smooth(HW), grad2(HW, 0.f);
  for (int c = 0; c < C; ++c) {
    const float* src = image + c * HW;
    parallel_chunks(H, ex.threads, 16, [&](int64_t y0, int64_t y1) {
      std::vector<float> pad(W + 2 * radius);
      for (int64_t y = y0; y < y1; ++y) {
        blur_line(src + y * W, W, taps, pad.data(), tmp.data() + y * W);
      }
    });
    // Vertical pass a whole row at a time: contiguous and vectorised.
    parallel_chunks(H, ex.threads, 16, [&](int64_t y0, int64_t y1) {
      for (int64_t y = y0; y < y1; ++y) {
        float* d = smooth.data() + y * W;
        std::fill(d, d + W, 0.f);
        for (int k = -radius; k <= radius; ++k) {
          const int64_t yy = std::min<int64_t>(H - 1, std::max<int64_t>(0, y + k));
          const float* s = tmp.data() + yy * W;
          const float t = taps[k + radius];
          for (int x = 0; x < W; ++x) d[x] += t * s[x];
        }
      }
    });
    // Central differences; at the border the clamped neighbour repeats the border pixel, which
    // halves the one-sided difference.
    parallel_chunks(H, ex.threads, 16, [&](int64_t y0, int64_t y1) {
      for (int64_t y = y0; y < y1; ++y) {
        const float* up = smooth.data() + (y > 0 ? y - 1 : y) * W;
        const float* mid = smooth.data() + y * W;
        const float* down = smooth.data() + (y + 1 < H ? y + 1 : y) * W;
        float* g2 = grad2.data() + y * W;
        auto at = [&](int x, float gx) {
          const float gy = 0.5f * (down[x] - up[x]);
          g2[x] = std::max(g2[x], gx * gx + gy * gy);
        };
        at(0, 0.5f * (mid[std::min(1, W - 1)] - mid[0]));
        for (int x = 1; x < W - 1; ++x) at(x, 0.5f * (mid[x + 1] - mid[x - 1]));
        if (W > 1) at(W - 1, 0.5f * (mid[W - 1] - mid[W - 2]));
      }
    });
    check_cancel(ex);
  }
  std::fill(cost, cost + g.size(), uint16_t{0});
  const float inv_scale2 = 1.f / (o.edge_scale * o.edge_scale);
  const float scale = kCostUnits * o.edge_cost;
  // With keep_valid, out may be flow: each pixel is read (its trust, its flow) before it is
  // written, and no other pixel's flow is read here.
  parallel_chunks(H, ex.threads, 16, [&](int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; ++y) {
      const float* g2 = grad2.data() + static_cast<size_t>(y) * W;
      uint16_t* row = cost + g.at(0, static_cast<int>(y));
      for (int x = 0; x < W; ++x) {
        const float strength = std::min(1.f, g2[x] * inv_scale2);
        row[x] = static_cast<uint16_t>(kCostUnits + static_cast<int>(scale * strength + 0.5f));
      }
    }
  });
}

// Whether pixel i's flow is trusted: valid and finite (flow (2, HW)).
inline bool trusted(const float* flow, const uint8_t* valid, size_t HW, size_t i) {
  return valid[i] != 0 && std::isfinite(flow[i]) && std::isfinite(flow[HW + i]);
}

// The seeds of pick_seeds' row of cells starting at pixel row y0, appended to out.
template <class Usable>
void pick_seed_row(const Grid& g, int s, int y0, const Usable& usable, std::vector<int32_t>& out) {
  const int H = g.H, W = g.W;
  for (int x0 = 0; x0 < W; x0 += s) {
    const int cx = x0 + s / 2, cy = y0 + s / 2;
    if (cx < W && cy < H && usable(cx, cy)) {
      out.push_back(g.at(cx, cy));
      continue;
    }
    int best = -1;
    int64_t best_d2 = 0;
    for (int y = y0; y < std::min(H, y0 + s); ++y) {
      for (int x = x0; x < std::min(W, x0 + s); ++x) {
        if (!usable(x, y)) continue;
        const int64_t d2 =
            static_cast<int64_t>(x - cx) * (x - cx) + static_cast<int64_t>(y - cy) * (y - cy);
        if (best < 0 || d2 < best_d2) {
          best = g.at(x, y);
          best_d2 = d2;
        }
      }
    }
    if (best >= 0) out.push_back(best);
  }
}

// Seeds (padded indices): per seed_stride cell the valid pixel nearest to the cell centre, ties to
// the first in raster order; the last row and column of cells may be partial. Rows of cells are
// picked in parallel and joined in order.
std::vector<int32_t> pick_seeds(const Grid& g, const float* flow, const uint8_t* valid, int s,
                                const Exec& ex) {
  const int H = g.H, W = g.W;
  const size_t HW = static_cast<size_t>(H) * W;
  auto usable = [&](int x, int y) {
    return trusted(flow, valid, HW, static_cast<size_t>(y) * W + x);
  };
  std::vector<std::vector<int32_t>> rows((H + s - 1) / s);
  parallel_chunks(static_cast<int64_t>(rows.size()), ex.threads, 4, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) pick_seed_row(g, s, static_cast<int>(r) * s, usable, rows[r]);
  });
  std::vector<int32_t> seeds;
  for (const std::vector<int32_t>& r : rows) seeds.insert(seeds.end(), r.begin(), r.end());
  return seeds;
}

// Seeds joined when their Voronoi cells touch (8-neighbours), in compressed rows. An edge weighs
// the shortest geodesic path through the common boundary, min over boundary pairs (p, q) of
// dist(p) + step(p, q) + dist(q), capped at max_weight: the K-nearest search settles at most K
// seeds, so with max_weight = (2^32 - 1) / K its path sums fit 32 bits without saturating adds
// (a capped edge is 65000 px or more, far beyond any weight exp(-alpha d) that counts).
struct SeedEdge {
  int32_t to;
  uint32_t weight;
};
struct SeedGraph {
  std::vector<int64_t> start;  // (n + 1)
  std::vector<SeedEdge> edges;
  int max_degree = 0;
};

// Set of undirected seed pairs (a < b) with the smallest weight seen for each: open addressing
// with linear probing, kept at most half full. A pair's probe starts in a block of slots owned by
// a (plus a few bits of b): the raster scan meets seeds in roughly increasing order, so its
// lookups stay in a small, cached window of the table instead of missing all over it.
class PairSet {
 public:
  explicit PairSet(int n) : n_bits_(1) {
    while ((1 << n_bits_) < n) ++n_bits_;
    rehash(size_t{8} << n_bits_);
  }

  void add(int32_t a, int32_t b, uint32_t w) {
    if (b < a) std::swap(a, b);
    const uint64_t k = (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b);
    size_t i = slot(a, b);
    while (keys_[i] != kEmpty && keys_[i] != k) i = (i + 1) & mask_;
    if (keys_[i] == k) {
      weights_[i] = std::min(weights_[i], w);
      return;
    }
    keys_[i] = k;
    weights_[i] = w;
    if (++size_ * 2 > keys_.size()) rehash(2 * keys_.size());
  }

  template <typename Fn>
  void for_each(Fn fn) const {
    for (size_t i = 0; i < keys_.size(); ++i) {
      if (keys_[i] != kEmpty) {
        fn(static_cast<int32_t>(keys_[i] >> 32), static_cast<int32_t>(keys_[i] & 0xFFFFFFFFu),
           weights_[i]);
      }
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  size_t slot(int32_t a, int32_t b) const {
    return ((static_cast<size_t>(a) << spread_bits_) + (static_cast<uint32_t>(b) & 7u)) & mask_;
  }
  void rehash(size_t capacity) {
    std::vector<uint64_t> keys(capacity, kEmpty);
    std::vector<uint32_t> weights(capacity);
    mask_ = capacity - 1;
    spread_bits_ = 0;
    while ((size_t{1} << (spread_bits_ + n_bits_)) < capacity) ++spread_bits_;
    for (size_t i = 0; i < keys_.size(); ++i) {
      if (keys_[i] == kEmpty) continue;
      size_t j = slot(static_cast<int32_t>(keys_[i] >> 32), static_cast<int32_t>(keys_[i]));
      while (keys[j] != kEmpty) j = (j + 1) & mask_;
      keys[j] = keys_[i];
      weights[j] = weights_[i];
    }
    keys_.swap(keys);
    weights_.swap(weights);
  }

  std::vector<uint64_t> keys_;
  std::vector<uint32_t> weights_;
  size_t size_ = 0, mask_ = 0;
  int n_bits_, spread_bits_ = 0;
};

// The boundary pixel pairs of rows [y0, y1) into pairs (see seed_graph).
void boundary_pairs(const Grid& g, const uint16_t* cost, const uint64_t* key, uint32_t max_weight,
                    int y0, int y1, PairSet& pairs) {
  const int32_t Wp = g.Wp;
  const int32_t forward[4] = {1, Wp - 1, Wp, Wp + 1};
  for (int y = y0; y < y1; ++y) {
    int32_t last_a[4] = {-1, -1, -1, -1}, last_b[4] = {-1, -1, -1, -1};
    uint32_t last_w[4] = {0, 0, 0, 0};
    const int32_t row = g.at(0, y);
    for (int32_t p = row; p < row + g.W; ++p) {
      const int32_t a = key_seed(key[p]);
      // Most pixels lie inside their cell: one combined test instead of four branches.
      if ((key_seed(key[p + forward[0]]) == a) & (key_seed(key[p + forward[1]]) == a) &
          (key_seed(key[p + forward[2]]) == a) & (key_seed(key[p + forward[3]]) == a)) {
        continue;
      }
      for (int d = 0; d < 4; ++d) {
        const int32_t q = p + forward[d];
        const int32_t b = key_seed(key[q]);
        if (b == a || b < 0) continue;
        const uint32_t step =
            d == 0 || d == 2 ? step_axial(cost[p], cost[q]) : step_diagonal(cost[p], cost[q]);
        const uint64_t w64 = static_cast<uint64_t>(key_dist(key[p])) + step + key_dist(key[q]);
        const uint32_t w = static_cast<uint32_t>(std::min<uint64_t>(w64, max_weight));
        if (a == last_a[d] && b == last_b[d]) {
          last_w[d] = std::min(last_w[d], w);
          continue;
        }
        if (last_a[d] >= 0) pairs.add(last_a[d], last_b[d], last_w[d]);
        last_a[d] = a;
        last_b[d] = b;
        last_w[d] = w;
      }
    }
    for (int d = 0; d < 4; ++d) {
      if (last_a[d] >= 0) pairs.add(last_a[d], last_b[d], last_w[d]);
    }
  }
}

// `bands` row bands (1 .. H) scanned on up to `threads` threads.
SeedGraph seed_graph(const Grid& g, const uint16_t* cost, const uint64_t* key, int n,
                     uint32_t max_weight, int bands, int threads) {
  // Boundary pixel pairs in raster order, each unordered pair once (the 4 forward neighbours).
  // A cell boundary repeats the same seed pair along its length, so a pair equal to the last one
  // of its direction is merged on the spot, which spares most set lookups.
  // Each band collects its pairs in a set of its own (made by the thread that fills it: first
  // written on its own core), and the rows are built from all the sets at once: each band counts
  // and then writes its pairs' edges into its own slots of every row, in parallel. With several
  // bands a pair whose cell boundary crosses a cut is found by two of them: each row then keeps
  // the smallest weight of a repeated neighbour. The same edges and weights for any number of
  // bands, in another order within the rows, which the K-nearest search does not depend on (it
  // settles seeds in order of (distance, seed index)). Merging the band sets into one set first
  // was serial, and on a 1282x1110 pair its table and the copies made the graph slower on two
  // threads than on one (84 against 58 ms).
  bands = std::clamp(bands, 1, g.H);
  std::vector<PairSet> band_pairs(bands, PairSet(1));
  // deg[b][i]: band b's edges of seed i, then band b's next slot in row i.
  std::vector<std::vector<int64_t>> deg(bands);
  parallel_for(bands, threads, [&](int64_t b) {
    band_pairs[b] = PairSet(n / bands + 1);
    boundary_pairs(g, cost, key, max_weight, static_cast<int>(b * g.H / bands),
                   static_cast<int>((b + 1) * g.H / bands), band_pairs[b]);
    deg[b].assign(n, 0);
    band_pairs[b].for_each([&](int32_t a, int32_t c, uint32_t) {
      ++deg[b][a];
      ++deg[b][c];
    });
  });
  std::vector<int64_t> start(n + 1, 0);
  for (int i = 0; i < n; ++i) {
    int64_t at = start[i];
    for (int b = 0; b < bands; ++b) {
      const int64_t d = deg[b][i];
      deg[b][i] = at;
      at += d;
    }
    start[i + 1] = at;
  }
  std::vector<SeedEdge> edges(start[n]);
  parallel_for(bands, threads, [&](int64_t b) {
    std::vector<int64_t>& slot = deg[b];
    band_pairs[b].for_each([&](int32_t a, int32_t c, uint32_t w) {
      edges[slot[a]++] = {c, w};
      edges[slot[c]++] = {a, w};
    });
    band_pairs[b] = PairSet(1);
  });
  // Each row's repeated neighbours merged (smallest weight; one band finds each pair once), rows
  // then packed.
  std::vector<int32_t> kept(n);
  parallel_chunks(n, threads, 1024, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      SeedEdge* r = edges.data() + start[i];
      const int m = static_cast<int>(start[i + 1] - start[i]);
      if (bands == 1) {
        kept[i] = m;
        continue;
      }
      std::sort(r, r + m, [](const SeedEdge& x, const SeedEdge& y) {
        return x.to != y.to ? x.to < y.to : x.weight < y.weight;
      });
      int k = 0;
      for (int j = 0; j < m; ++j) {
        if (k > 0 && r[k - 1].to == r[j].to) continue;  // a repeat: the first has the least weight
        r[k++] = r[j];
      }
      kept[i] = k;
    }
  });
  // Packed in place, rows in order (each moves left or stays): no second edge list at the peak.
  SeedGraph sg;
  sg.start.assign(n + 1, 0);
  for (int i = 0; i < n; ++i) {
    sg.max_degree = std::max(sg.max_degree, kept[i]);
    sg.start[i + 1] = sg.start[i] + kept[i];
    if (sg.start[i] != start[i]) {
      std::copy_n(edges.data() + start[i], kept[i], edges.data() + sg.start[i]);
    }
  }
  edges.resize(sg.start[n]);
  sg.edges = std::move(edges);
  return sg;
}

// A seed's flow model, valid over its Voronoi cell: flow(x, y) = (u, v) + J (x - cx, y - cy).
struct Model {
  float cx, cy, u, v, dudx, dudy, dvdx, dvdy;
};

// Binary min-heap of uint64 keys with room for `capacity` and a sentinel (the largest key) after
// the last element, so that picking the smaller child needs no bounds test (and no branch).
class MinHeap {
 public:
  explicit MinHeap(size_t capacity) : h_(capacity + 1, ~uint64_t{0}) {}
  bool empty() const { return n_ == 0; }
  void clear() {
    n_ = 0;
    h_[0] = ~uint64_t{0};
  }
  void push(uint64_t v) {
    size_t i = n_++;
    h_[n_] = ~uint64_t{0};
    while (i > 0) {
      const size_t parent = (i - 1) / 2;
      if (h_[parent] <= v) break;
      h_[i] = h_[parent];
      i = parent;
    }
    h_[i] = v;
  }
  uint64_t pop() {
    const uint64_t top = h_[0];
    const uint64_t v = h_[--n_];
    h_[n_] = ~uint64_t{0};
    size_t i = 0;
    for (;;) {
      size_t c = 2 * i + 1;
      if (c >= n_) break;
      c += h_[c + 1] < h_[c];
      if (v <= h_[c]) break;
      h_[i] = h_[c];
      i = c;
    }
    h_[i] = v;
    return top;
  }

 private:
  std::vector<uint64_t> h_;
  size_t n_ = 0;
};

// Per-thread scratch of the seed-graph Dijkstra. state[b] = (tag << 32) | distance, with tag
// 2^32 - 2 - a for run a. Runs of one scratch go in increasing a, so a state left by an earlier
// run is larger than any candidate of the current one: relaxing is a single 64-bit min, and
// nothing is cleared between runs. A settled seed's distance is set to 0, which no candidate
// beats (edges weigh >= 2).
struct KnnScratch {
  std::vector<uint64_t> state;
  MinHeap heap;
  std::vector<int32_t> nb;       // (K) the neighbours found, nearest first
  std::vector<uint32_t> nbd;     // (K) their distances
  std::vector<uint64_t> better;  // (max degree) improved neighbours of the seed being settled
  int count = 0;
  // A run settles at most K seeds and queues at most max_degree entries for each.
  KnnScratch(int n, int K, int max_degree)
      : state(n, ~uint64_t{0}),
        heap(static_cast<size_t>(K) * max_degree + 1),
        nb(K),
        nbd(K),
        better(max_degree) {}
};

// The K seeds nearest to seed a on the seed graph (a itself first, at 0), into s.nb / s.nbd;
// ties go to the smaller seed index (the heap orders (distance << 32) | seed).
void nearest_seeds(const SeedGraph& sg, int a, int K, KnnScratch& s) {
  const uint64_t tag = static_cast<uint64_t>(0xFFFFFFFEu - static_cast<uint32_t>(a)) << 32;
  const int64_t* start = sg.start.data();
  const SeedEdge* edges = sg.edges.data();
  uint64_t* state = s.state.data();
  uint64_t* better = s.better.data();
  int32_t* nb = s.nb.data();
  uint32_t* nbd = s.nbd.data();
  MinHeap& heap = s.heap;
  int count = 0;
  heap.clear();
  heap.push(static_cast<uint32_t>(a));
  state[a] = tag;
  while (!heap.empty()) {
    const uint64_t top = heap.pop();
    const int32_t b = key_seed(top);
    const uint32_t db = key_dist(top);
    if (db != static_cast<uint32_t>(state[b])) continue;  // stale: improved or settled
    nb[count] = b;
    nbd[count] = db;
    if (++count == K) break;
    state[b] = tag;
    // Whether a neighbour improves is data-dependent and would mispredict as a branch, so the
    // relaxation has none: states take the min, improved neighbours are appended to `better` by
    // advancing its count, and only those are queued afterwards.
    const int64_t e0 = start[b], e1 = start[b + 1];
    int improved = 0;
    for (int64_t e = e0; e < e1; ++e) {
      const SeedEdge x = edges[e];
      const uint32_t nd = db + x.weight;  // no overflow: see seed_graph's max_weight
      const uint64_t candidate = tag | nd;
      const uint64_t known = state[x.to];
      state[x.to] = std::min(known, candidate);
      better[improved] = (static_cast<uint64_t>(nd) << 32) | static_cast<uint32_t>(x.to);
      improved += candidate < known;
    }
    for (int i = 0; i < improved; ++i) heap.push(better[i]);
  }
  s.count = count;
}

// A seed: its pixel and its flow.
struct Seed {
  float x, y, u, v;
};

// Weighted fit of the neighbours' flows. Moments are taken about the seed itself (coordinates of a
// few tens of pixels, so one pass in double loses nothing to cancellation), then centred on the
// weighted mean: the intercept is the weighted mean flow and the slopes solve a 2x2 system.
Model fit_seed(const KnnScratch& s, const Seed* seeds, float alpha, bool affine,
               double min_spread) {
  const int k = s.count;
  const Seed& a = seeds[s.nb[0]];
  const float decay = -alpha * static_cast<float>(kDistToPixels);
  double W = 0, sx = 0, sy = 0, su = 0, sv = 0;
  double sxx = 0, sxy = 0, syy = 0, sxu = 0, syu = 0, sxv = 0, syv = 0;
  for (int j = 0; j < k; ++j) {
    const Seed& b = seeds[s.nb[j]];
    const double w = std::exp(decay * static_cast<float>(s.nbd[j]));
    const double dx = b.x - a.x, dy = b.y - a.y, u = b.u, v = b.v;
    W += w;
    sx += w * dx;
    sy += w * dy;
    su += w * u;
    sv += w * v;
    sxx += w * dx * dx;
    sxy += w * dx * dy;
    syy += w * dy * dy;
    sxu += w * dx * u;
    syu += w * dy * u;
    sxv += w * dx * v;
    syv += w * dy * v;
  }
  const double mx = sx / W, my = sy / W, mu = su / W, mv = sv / W;
  Model m{static_cast<float>(a.x + mx),
          static_cast<float>(a.y + my),
          static_cast<float>(mu),
          static_cast<float>(mv),
          0.f,
          0.f,
          0.f,
          0.f};
  if (!affine || k < 3) return m;
  // Weighted covariances (divided by W).
  const double cxx = sxx / W - mx * mx, cxy = sxy / W - mx * my, cyy = syy / W - my * my;
  const double cxu = sxu / W - mx * mu, cyu = syu / W - my * mu;
  const double cxv = sxv / W - mx * mv, cyv = syv / W - my * mv;
  // Smallest eigenvalue of the position covariance: the neighbours' spread across their thinnest
  // direction.
  const double tr = cxx + cyy, det = cxx * cyy - cxy * cxy;
  const double lambda_min = 0.5 * (tr - std::sqrt(std::max(0.0, tr * tr - 4 * det)));
  if (!(lambda_min >= min_spread)) return m;
  const double inv = 1.0 / det;
  const double dudx = (cyy * cxu - cxy * cyu) * inv, dudy = (cxx * cyu - cxy * cxu) * inv;
  const double dvdx = (cyy * cxv - cxy * cyv) * inv, dvdy = (cxx * cyv - cxy * cxv) * inv;
  if (!std::isfinite(dudx + dudy + dvdx + dvdy)) return m;
  m.dudx = static_cast<float>(dudx);
  m.dudy = static_cast<float>(dudy);
  m.dvdx = static_cast<float>(dvdx);
  m.dvdy = static_cast<float>(dvdy);
  return m;
}

void check_options(const InterpOptions& o) {
  if (o.seed_stride < 1 || o.seed_stride > 256) {
    fail(ErrorCode::InvalidArg, "expected integer between 1 and 256 for seed_stride but received " +
                                    std::to_string(o.seed_stride));
  }
  if (o.num_neighbors < 1 || o.num_neighbors > 1024) {
    fail(ErrorCode::InvalidArg,
         "expected integer between 1 and 1024 for num_neighbors but received " +
             std::to_string(o.num_neighbors));
  }
  if (!(o.alpha >= 0) || !std::isfinite(o.alpha)) {
    fail(ErrorCode::InvalidArg,
         "expected finite number >= 0 for alpha but received " + format_number(o.alpha));
  }
  if (!(o.edge_sigma >= 0 && o.edge_sigma <= 20)) {
    fail(ErrorCode::InvalidArg, "expected number between 0 and 20 for edge_sigma but received " +
                                    format_number(o.edge_sigma));
  }
  if (!(o.edge_scale > 0) || !std::isfinite(o.edge_scale)) {
    fail(ErrorCode::InvalidArg,
         "expected finite number > 0 for edge_scale but received " + format_number(o.edge_scale));
  }
  if (!(o.edge_cost >= 0 && o.edge_cost <= 1000)) {
    fail(ErrorCode::InvalidArg, "expected number between 0 and 1000 for edge_cost but received " +
                                    format_number(o.edge_cost));
  }
}

}  // namespace

void flow_interpolate_voronoi(const uint16_t* cost, int H, int W, const int32_t* seeds, int n,
                              int32_t* nearest, uint32_t* dist, int bands) {
  check_size(H, W);
  if (cost == nullptr || nearest == nullptr || dist == nullptr || (n > 0 && seeds == nullptr)) {
    fail(ErrorCode::InvalidArg, "cost, seeds, nearest and dist must not be null");
  }
  if (n < 0) fail(ErrorCode::InvalidArg, "expected n >= 0 but received " + std::to_string(n));
  const Grid g{H, W, W + 2};
  std::vector<uint16_t> cp(g.size(), 0);
  uint32_t cmax = 1;
  for (int y = 0; y < H; ++y) {
    for (int x = 0; x < W; ++x) {
      const uint16_t c = cost[static_cast<size_t>(y) * W + x];
      if (c == 0) {
        fail(ErrorCode::InvalidArg,
             "cost must be >= 1 but is 0 at x=" + std::to_string(x) + " y=" + std::to_string(y));
      }
      cp[g.at(x, y)] = c;
      cmax = std::max<uint32_t>(cmax, c);
    }
  }
  check_distance_range(H, W, cmax);
  std::vector<int32_t> sp(n);
  for (int i = 0; i < n; ++i) {
    if (seeds[i] < 0 || seeds[i] >= H * W) {
      fail(ErrorCode::InvalidArg, "seed " + std::to_string(i) + " = " + std::to_string(seeds[i]) +
                                      " lies outside the image");
    }
    sp[i] = g.at(seeds[i] % W, seeds[i] / W);
  }
  std::vector<uint64_t> key(g.size());
  voronoi_padded(g, cp.data(), sp.data(), n, key.data(), bands, bands);
  for (int y = 0; y < H; ++y) {
    for (int x = 0; x < W; ++x) {
      const uint64_t k = key[g.at(x, y)];
      nearest[static_cast<size_t>(y) * W + x] = n == 0 ? -1 : key_seed(k);
      dist[static_cast<size_t>(y) * W + x] = n == 0 ? kUnreached : key_dist(k);
    }
  }
}

void flow_interpolate_cpu(const float* image, int C, int H, int W, const float* flow,
                          const uint8_t* valid, float* out, const InterpOptions& o,
                          const Exec& ex) {
  if (C != 1 && C != 3) {
    fail(ErrorCode::Shape, "expected 1 or 3 image channels but received C=" + std::to_string(C));
  }
  check_size(H, W);
  if (image == nullptr || flow == nullptr || valid == nullptr || out == nullptr) {
    fail(ErrorCode::InvalidArg, "image, flow, valid and out must not be null");
  }
  const size_t HW = static_cast<size_t>(H) * W;
  const uintptr_t o0 = reinterpret_cast<uintptr_t>(out), f0 = reinterpret_cast<uintptr_t>(flow);
  if (o0 < f0 + 2 * HW * sizeof(float) && f0 < o0 + 2 * HW * sizeof(float) &&
      !(o.keep_valid && out == flow)) {
    fail(ErrorCode::InvalidArg, "out must not overlap flow (unless it is flow, with keep_valid)");
  }
  check_options(o);
  const Grid g{H, W, W + 2};
  check_distance_range(H, W, static_cast<uint32_t>(std::lround(kCostUnits * (1 + o.edge_cost))));

  const std::vector<int32_t> seeds = pick_seeds(g, flow, valid, o.seed_stride, ex);
  const int n = static_cast<int>(seeds.size());
  if (n == 0) {
    if (out != flow) std::copy_n(flow, 2 * HW, out);
    return;
  }

  WorkVector<uint16_t> cost(g.size());
  edge_cost_map(image, C, g, o, cost.data(), ex);
  WorkVector<uint64_t> key(g.size());
  // One band per thread (bands of kVoronoiBandRows rows at least).
  const int threads = ex.threads <= 0 ? pool_size() : std::min(ex.threads, pool_size());
  const int bands = std::min(threads, std::max(1, H / kVoronoiBandRows));
  voronoi_padded(g, cost.data(), seeds.data(), n, key.data(), bands, threads);
  check_cancel(ex);
  const SeedGraph sg =
      seed_graph(g, cost.data(), key.data(), n, kUnreached / static_cast<uint32_t>(o.num_neighbors),
                 bands, threads);
  check_cancel(ex);

  std::vector<Seed> seed(n);
  for (int i = 0; i < n; ++i) {
    const int x = seeds[i] % g.Wp - 1, y = seeds[i] / g.Wp - 1;
    const size_t p = static_cast<size_t>(y) * W + x;
    seed[i] = {static_cast<float>(x), static_cast<float>(y), flow[p], flow[HW + p]};
  }
  // The seeds to fit, in increasing order (KnnScratch's runs need it): every seed, or with
  // keep_valid those whose cells hold an untrusted pixel.
  std::vector<int32_t> fit;
  if (o.keep_valid) {
    // Each thread's band of rows flags its own copy; the copies are joined after.
    std::vector<std::vector<uint8_t>> needed(std::max(1, threads), std::vector<uint8_t>(n, 0));
    parallel_for(static_cast<int64_t>(needed.size()), threads, [&](int64_t t) {
      const int y0 = static_cast<int>(t * H / static_cast<int64_t>(needed.size()));
      const int y1 = static_cast<int>((t + 1) * H / static_cast<int64_t>(needed.size()));
      for (int y = y0; y < y1; ++y) {
        const uint64_t* row = key.data() + g.at(0, y);
        for (int x = 0; x < W; ++x) {
          if (!trusted(flow, valid, HW, static_cast<size_t>(y) * W + x)) {
            needed[t][key_seed(row[x])] = 1;
          }
        }
      }
    });
    for (size_t t = 1; t < needed.size(); ++t) {
      for (int a = 0; a < n; ++a) needed[0][a] |= needed[t][a];
    }
    for (int a = 0; a < n; ++a) {
      if (needed[0][a]) fit.push_back(a);
    }
  } else {
    fit.resize(n);
    for (int a = 0; a < n; ++a) fit[a] = a;
  }
  // Slopes need the neighbours to spread over 0.05 seed steps^2 across their thinnest direction
  // (a triangle of adjacent seeds spreads over 0.11): below, the fit extrapolates noise.
  const double min_spread = 0.05 * o.seed_stride * o.seed_stride;
  std::vector<Model> models(n);
  parallel_chunks(static_cast<int64_t>(fit.size()), ex.threads, 256, [&](int64_t i0, int64_t i1) {
    check_cancel(ex);
    KnnScratch s(n, o.num_neighbors, sg.max_degree);
    for (int64_t i = i0; i < i1; ++i) {
      nearest_seeds(sg, fit[i], o.num_neighbors, s);
      models[fit[i]] = fit_seed(s, seed.data(), o.alpha, o.affine, min_spread);
    }
  });
  check_cancel(ex);

  // With keep_valid, out may be flow: each pixel is read (its trust, its flow) before it is
  // written, and no other pixel's flow is read here.
  parallel_chunks(H, ex.threads, 16, [&](int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; ++y) {
      const uint64_t* row = key.data() + g.at(0, static_cast<int>(y));
      const size_t r = static_cast<size_t>(y) * W;
      float* ou = out + r;
      float* ov = out + HW + r;
      for (int x = 0; x < W; ++x) {
        if (o.keep_valid && trusted(flow, valid, HW, r + x)) {
          ou[x] = flow[r + x];
          ov[x] = flow[HW + r + x];
          continue;
        }
        const Model& m = models[key_seed(row[x])];
        const float dx = static_cast<float>(x) - m.cx, dy = static_cast<float>(y) - m.cy;
        ou[x] = m.u + m.dudx * dx + m.dudy * dy;
        ov[x] = m.v + m.dvdx * dx + m.dvdy * dy;
      }
    }
  });
}

size_t flow_interpolate_work_bytes(int C, int H, int W, const InterpOptions& o) {
  (void)C;  // the edge map is built one channel at a time into the same planes
  const size_t P = size_t(std::max(H, 0) + 2) * (std::max(W, 0) + 2);
  const int s = std::max(1, o.seed_stride);
  const size_t seeds = size_t((std::max(H, 0) + s - 1) / s) * ((std::max(W, 0) + s - 1) / s);
  // Per pixel: the uint16 cost map with the edge map's three float planes, later with the uint64
  // Voronoi keys. Per seed: its index, then the boundary pair set (8 to 16 slots of 12 bytes per
  // seed, twice that while it grows) or the seed graph (about 12 edges of 8 bytes), the seeds'
  // flows, models and one K-nearest search state per thread (8 bytes per seed each; up to 2),
  // with the list of seeds to fit and their flags (5).
  const size_t pixels = P * (2 + std::max(3 * 4, 8));
  const size_t per_seed = 4 + std::max<size_t>(2 * 16 * 12, 8 + 12 * 8 + 16 + 32 + 2 * 8 + 5);
  return pixels + seeds * per_seed;
}

}  // namespace gocor
