// Edge-aware flow interpolation tests: the geodesic Voronoi diagram against a plain per-seed
// Dijkstra, exact reproduction of constant and affine flows, the whole pipeline against a plain
// one (flat costs), edge awareness on a two-region image,
// thread independence, bad input; then a timing at 1024x436 (printed, not asserted).
// Prints one line per check and "N passed, M failed"; exits non-zero on a failure.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "interpolate.h"
#include "parallel.h"
#include "support/harness.h"
#include "support/test_data.h"

namespace {

using gocor_test::expect_throws;
using gocor_test::report;

// Uniform numbers in [0, 1), drawn in order from n values of gocor_test::random_vec (splitmix64);
// drawing more than n throws (std::out_of_range), which main reports as a failure.
class Uniform {
 public:
  Uniform(size_t n, uint64_t seed) : v_(gocor_test::random_vec(n, seed)) {}
  double next() { return 0.5 * (static_cast<double>(v_.at(i_++)) + 1.0); }
  int below(int n) { return std::min(n - 1, static_cast<int>(next() * n)); }

 private:
  std::vector<float> v_;
  size_t i_ = 0;
};

// ---- geodesic Voronoi against a straightforward reference ---------------------------------------

// Single-source Dijkstra over the whole grid, the minimum picked by a linear scan (slow on
// purpose), with the step costs as documented in interpolate.h.
std::vector<uint64_t> dijkstra_plain(const std::vector<uint16_t>& cost, int H, int W, int src) {
  const uint64_t inf = std::numeric_limits<uint64_t>::max();
  std::vector<uint64_t> d(H * W, inf);
  std::vector<char> done(H * W, 0);
  d[src] = 0;
  for (;;) {
    int p = -1;
    for (int i = 0; i < H * W; ++i) {
      if (!done[i] && d[i] != inf && (p < 0 || d[i] < d[p])) p = i;
    }
    if (p < 0) break;
    done[p] = 1;
    const int px = p % W, py = p / W;
    for (int dy = -1; dy <= 1; ++dy) {
      for (int dx = -1; dx <= 1; ++dx) {
        const int qx = px + dx, qy = py + dy;
        if ((dx == 0 && dy == 0) || qx < 0 || qy < 0 || qx >= W || qy >= H) continue;
        const int q = qy * W + qx;
        const uint64_t sum = static_cast<uint64_t>(cost[p]) + cost[q];
        const uint64_t w = (dx != 0 && dy != 0) ? (1448 * sum + 512) / 1024 : sum;
        d[q] = std::min(d[q], d[p] + w);
      }
    }
  }
  return d;
}

void test_voronoi(const char* name, const std::vector<uint16_t>& cost, int H, int W,
                  const std::vector<int32_t>& seeds) {
  const int n = static_cast<int>(seeds.size());
  std::vector<uint64_t> best(H * W, std::numeric_limits<uint64_t>::max());
  std::vector<int32_t> best_seed(H * W, -1);
  for (int s = 0; s < n; ++s) {
    const std::vector<uint64_t> d = dijkstra_plain(cost, H, W, seeds[s]);
    for (int i = 0; i < H * W; ++i) {
      if (d[i] < best[i]) {  // strict: ties stay with the smaller seed index
        best[i] = d[i];
        best_seed[i] = s;
      }
    }
  }
  // The serial queue and the banded one (the rows cut into 2, 3 and 7 bands, cuts crossed by
  // the paths of the seeds' cells).
  int label_diff = 0, dist_diff = 0, ties = 0;
  for (int bands : {1, 2, 3, 7}) {
    std::vector<int32_t> nearest(H * W);
    std::vector<uint32_t> dist(H * W);
    gocor::flow_interpolate_voronoi(cost.data(), H, W, seeds.data(), n, nearest.data(), dist.data(),
                                    bands);
    for (int i = 0; i < H * W; ++i) {
      label_diff += nearest[i] != best_seed[i];
      dist_diff += dist[i] != best[i];
    }
  }
  // How many pixels had a tie to break (so the check covers the tie rule).
  for (int s = 0; s < n; ++s) {
    const std::vector<uint64_t> d = dijkstra_plain(cost, H, W, seeds[s]);
    for (int i = 0; i < H * W; ++i) ties += s != best_seed[i] && d[i] == best[i];
  }
  char buf[160];
  std::snprintf(buf, sizeof(buf),
                "label mismatches=%d distance mismatches=%d (%dx%d, %d seeds, "
                "%d tied pixel-seed pairs; 1, 2, 3 and 7 bands)",
                label_diff, dist_diff, W, H, n, ties);
  report(label_diff == 0 && dist_diff == 0, name, buf);
}

void test_voronoi_cases() {
  const int H = 30, W = 40;
  Uniform rng(24 + H * W, 11);
  std::vector<int32_t> seeds;
  for (int i = 0; i < 24; ++i) seeds.push_back(rng.below(H * W));
  seeds.push_back(seeds[3]);  // a duplicate: the smaller index must keep the pixel

  std::vector<uint16_t> random_cost(H * W);
  for (uint16_t& c : random_cost) c = static_cast<uint16_t>(32 + rng.below(32 * 30));
  test_voronoi("voronoi_random_costs", random_cost, H, W, seeds);

  // Flat costs: many equal distances, so the tie rule decides most boundaries.
  test_voronoi("voronoi_flat_costs_ties", std::vector<uint16_t>(H * W, 32), H, W, seeds);

  // A wall of high cost with one gap, as an edge map with a break in it would give.
  std::vector<uint16_t> wall(H * W, 32);
  for (int y = 0; y < H; ++y) {
    if (y < 12 || y > 14) wall[y * W + 20] = 32 * 31;
  }
  test_voronoi("voronoi_wall_with_gap", wall, H, W, {5 * W + 5, 25 * W + 35, 2 * W + 30, 20 * W});
}

// ---- interpolation ------------------------------------------------------------------------------

struct Field {
  int C, H, W;
  std::vector<float> image, flow;
  std::vector<uint8_t> valid;
  Field(int c, int h, int w) : C(c), H(h), W(w), image(c * h * w), flow(2 * h * w), valid(h * w) {}
  float& u(int x, int y) { return flow[y * W + x]; }
  float& v(int x, int y) { return flow[H * W + y * W + x]; }
};

std::vector<float> interpolate(const Field& f, const gocor::InterpOptions& o, int threads = 1) {
  std::vector<float> out(2 * f.H * f.W);
  gocor::Exec ex;
  ex.threads = threads;
  gocor::flow_interpolate_cpu(f.image.data(), f.C, f.H, f.W, f.flow.data(), f.valid.data(),
                              out.data(), o, ex);
  return out;
}

// A smooth shaded image with a bright rectangle and mild noise: edges inside, none everywhere.
void fill_scene(Field& f, uint64_t seed) {
  Uniform rng(static_cast<size_t>(f.C) * f.H * f.W, seed);
  for (int c = 0; c < f.C; ++c) {
    for (int y = 0; y < f.H; ++y) {
      for (int x = 0; x < f.W; ++x) {
        float v = 0.3f + 0.2f * std::sin(0.05f * x + 0.3f * c) * std::cos(0.07f * y);
        if (x > f.W / 3 && x < 2 * f.W / 3 && y > f.H / 4 && y < 3 * f.H / 4) v += 0.4f;
        f.image[(c * f.H + y) * f.W + x] = v + 0.02f * static_cast<float>(rng.next() - 0.5);
      }
    }
  }
}

void test_constant_flow() {
  for (bool affine : {true, false}) {
    // Not multiples of the seed stride: the last row and column of cells are partial.
    Field f(3, 47, 65);
    fill_scene(f, 3);
    Uniform rng(f.H * f.W, 5);
    for (int y = 0; y < f.H; ++y) {
      for (int x = 0; x < f.W; ++x) {
        f.valid[y * f.W + x] = rng.next() < 0.5;
        // Invalid pixels carry garbage the interpolation must not read.
        f.u(x, y) = f.valid[y * f.W + x] ? 2.5f : 1e6f;
        f.v(x, y) = f.valid[y * f.W + x] ? -1.25f : -1e6f;
      }
    }
    gocor::InterpOptions o;
    o.affine = affine;
    const std::vector<float> out = interpolate(f, o);
    double worst = 0;
    for (int i = 0; i < f.H * f.W; ++i) {
      worst = std::max({worst, std::fabs(out[i] - 2.5), std::fabs(out[f.H * f.W + i] + 1.25)});
    }
    char buf[96];
    std::snprintf(buf, sizeof(buf), "max_abs=%.3g (65x47, 50%% invalid, tol 1e-4)", worst);
    report(worst <= 1e-4, affine ? "constant_flow_affine" : "constant_flow_average", buf);
  }
}

void test_affine_flow() {
  Field f(3, 72, 96);
  fill_scene(f, 7);
  Uniform rng(f.H * f.W, 9);
  auto u_of = [](double x, double y) { return 1.5 + 0.02 * x - 0.03 * y; };
  auto v_of = [](double x, double y) { return -2.0 + 0.01 * x + 0.015 * y; };
  for (int y = 0; y < f.H; ++y) {
    for (int x = 0; x < f.W; ++x) {
      f.valid[y * f.W + x] = rng.next() >= 0.7;
      f.u(x, y) = static_cast<float>(u_of(x, y));
      f.v(x, y) = static_cast<float>(v_of(x, y));
    }
  }
  const std::vector<float> out = interpolate(f, gocor::InterpOptions{});
  double worst = 0;
  for (int y = 0; y < f.H; ++y) {
    for (int x = 0; x < f.W; ++x) {
      const int i = y * f.W + x;
      worst = std::max(
          {worst, std::fabs(out[i] - u_of(x, y)), std::fabs(out[f.H * f.W + i] - v_of(x, y))});
    }
  }
  char buf[96];
  std::snprintf(buf, sizeof(buf), "max_abs=%.3g (96x72, 70%% invalid, tol 1e-3)", worst);
  report(worst <= 1e-3, "affine_flow_affine_fit", buf);
}

// Two regions split at x = W/2: left dark and textured, flow (+5, 0); right bright, flow (-3, 2).
// Pixels with x in [W/2 - band_left, W/2 + band_right) are invalid. Returns the fraction of that
// band whose output lies within 0.5 px of its own region's flow.
double two_region_fraction(int band_left, int band_right, float edge_cost) {
  Field f(1, 80, 160);
  Uniform rng(f.H * f.W, 21);
  const int mid = f.W / 2;
  for (int y = 0; y < f.H; ++y) {
    for (int x = 0; x < f.W; ++x) {
      const bool left = x < mid;
      f.image[y * f.W + x] = left ? 0.25f + 0.2f * static_cast<float>(rng.next() - 0.5)
                                  : 0.85f + 0.02f * static_cast<float>(rng.next() - 0.5);
      f.u(x, y) = left ? 5.f : -3.f;
      f.v(x, y) = left ? 0.f : 2.f;
      f.valid[y * f.W + x] = x < mid - band_left || x >= mid + band_right;
    }
  }
  gocor::InterpOptions o;
  o.edge_cost = edge_cost;
  const std::vector<float> out = interpolate(f, o);
  int good = 0, total = 0;
  for (int y = 0; y < f.H; ++y) {
    for (int x = mid - band_left; x < mid + band_right; ++x) {
      const int i = y * f.W + x;
      const float du = out[i] - f.u(x, y), dv = out[f.H * f.W + i] - f.v(x, y);
      good += std::sqrt(du * du + dv * dv) <= 0.5f;
      ++total;
    }
  }
  return static_cast<double>(good) / total;
}

// The whole pipeline written out plainly, for a flat cost map (edge_cost 0: every pixel costs 32,
// whatever the image), from the rules documented in interpolate.h: seeds per cell, plain per-seed
// Dijkstra for the Voronoi cells, the seed graph from every boundary pair, a plain Dijkstra per
// seed on that graph for the K nearest (ties to the smaller index), and the weighted fit solved in
// double from its normal equations. Returns the (2, H, W) flow.
std::vector<double> interpolate_reference(const Field& f, int stride, int K, double alpha,
                                          bool affine) {
  const int H = f.H, W = f.W;
  std::vector<int32_t> seeds;
  for (int y0 = 0; y0 < H; y0 += stride) {
    for (int x0 = 0; x0 < W; x0 += stride) {
      const int cx = x0 + stride / 2, cy = y0 + stride / 2;
      int best = -1, best_d2 = 0;
      for (int y = y0; y < std::min(H, y0 + stride); ++y) {
        for (int x = x0; x < std::min(W, x0 + stride); ++x) {
          const int d2 = (x - cx) * (x - cx) + (y - cy) * (y - cy);
          if (f.valid[y * W + x] && (best < 0 || d2 < best_d2)) {
            best = y * W + x;
            best_d2 = d2;
          }
        }
      }
      if (best >= 0) seeds.push_back(best);
    }
  }
  const int n = static_cast<int>(seeds.size());
  const std::vector<uint16_t> cost(H * W, 32);
  std::vector<uint64_t> dist(H * W, std::numeric_limits<uint64_t>::max());
  std::vector<int> label(H * W, -1);
  for (int s = 0; s < n; ++s) {
    const std::vector<uint64_t> d = dijkstra_plain(cost, H, W, seeds[s]);
    for (int i = 0; i < H * W; ++i) {
      if (d[i] < dist[i]) {
        dist[i] = d[i];
        label[i] = s;
      }
    }
  }
  const uint64_t inf = std::numeric_limits<uint64_t>::max();
  std::vector<uint64_t> edge(static_cast<size_t>(n) * n, inf);  // symmetric, min weight
  for (int p = 0; p < H * W; ++p) {
    for (int q = 0; q < H * W; ++q) {
      const int dx = std::abs(p % W - q % W), dy = std::abs(p / W - q / W);
      if (dx > 1 || dy > 1 || label[p] == label[q]) continue;
      const uint64_t step = dx + dy == 2 ? (1448 * 64 + 512) / 1024 : 64;
      const uint64_t w = dist[p] + step + dist[q];
      uint64_t& e = edge[static_cast<size_t>(label[p]) * n + label[q]];
      e = std::min(e, w);
    }
  }
  std::vector<double> out(2 * H * W);
  std::vector<double> model(6 * n);  // u0, dudx, dudy, v0, dvdx, dvdy about the seed
  for (int a = 0; a < n; ++a) {
    std::vector<uint64_t> d(n, inf);
    std::vector<char> done(n, 0);
    d[a] = 0;
    std::vector<std::pair<uint64_t, int>> order;  // (distance, seed), settled in this order
    for (;;) {
      int b = -1;
      for (int i = 0; i < n; ++i) {
        if (!done[i] && d[i] != inf && (b < 0 || d[i] < d[b])) b = i;
      }
      if (b < 0) break;
      done[b] = 1;
      order.push_back({d[b], b});
      for (int c = 0; c < n; ++c) {
        if (edge[static_cast<size_t>(b) * n + c] != inf) {
          d[c] = std::min(d[c], d[b] + edge[static_cast<size_t>(b) * n + c]);
        }
      }
    }
    std::sort(order.begin(), order.end());
    order.resize(std::min<size_t>(order.size(), K));
    const double ax = seeds[a] % W, ay = seeds[a] / W;
    // Normal equations of the weighted fit of [1, x - ax, y - ay] (3x3), both flow planes.
    double A[3][3] = {}, bu[3] = {}, bv[3] = {};
    double sw = 0, swu = 0, swv = 0, sx = 0, sy = 0, sxx = 0, sxy = 0, syy = 0;
    for (const auto& [dd, b] : order) {
      const double w = std::exp(-alpha * static_cast<double>(dd) / 64);
      const double r[3] = {1, seeds[b] % W - ax, seeds[b] / W - ay};
      const double u = f.flow[seeds[b]], v = f.flow[H * W + seeds[b]];
      for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) A[i][j] += w * r[i] * r[j];
        bu[i] += w * r[i] * u;
        bv[i] += w * r[i] * v;
      }
      sw += w;
      swu += w * u;
      swv += w * v;
      sx += w * r[1];
      sy += w * r[2];
      sxx += w * r[1] * r[1];
      sxy += w * r[1] * r[2];
      syy += w * r[2] * r[2];
    }
    double* m = &model[6 * a];
    m[0] = swu / sw;
    m[3] = swv / sw;
    const double mx = sx / sw, my = sy / sw;
    const double cxx = sxx / sw - mx * mx, cxy = sxy / sw - mx * my, cyy = syy / sw - my * my;
    const double lambda_min =
        0.5 * (cxx + cyy - std::sqrt((cxx - cyy) * (cxx - cyy) + 4 * cxy * cxy));
    if (affine && order.size() >= 3 && lambda_min >= 0.05 * stride * stride) {
      // Cramer's rule on the 3x3 system.
      auto det3 = [](const double M[3][3]) {
        return M[0][0] * (M[1][1] * M[2][2] - M[1][2] * M[2][1]) -
               M[0][1] * (M[1][0] * M[2][2] - M[1][2] * M[2][0]) +
               M[0][2] * (M[1][0] * M[2][1] - M[1][1] * M[2][0]);
      };
      const double D = det3(A);
      for (int plane = 0; plane < 2; ++plane) {
        const double* rhs = plane == 0 ? bu : bv;
        for (int k = 0; k < 3; ++k) {
          double M[3][3];
          for (int i = 0; i < 3; ++i) {
            for (int j = 0; j < 3; ++j) M[i][j] = j == k ? rhs[i] : A[i][j];
          }
          m[3 * plane + k] = det3(M) / D;
        }
      }
    } else {
      m[1] = m[2] = m[4] = m[5] = 0;
    }
  }
  for (int i = 0; i < H * W; ++i) {
    const double* m = &model[6 * label[i]];
    const double dx = i % W - seeds[label[i]] % W, dy = i / W - seeds[label[i]] / W;
    out[i] = m[0] + m[1] * dx + m[2] * dy;
    out[H * W + i] = m[3] + m[4] * dx + m[5] * dy;
  }
  return out;
}

void test_against_reference() {
  for (bool affine : {false, true}) {
    Field f(1, 22, 29);
    fill_scene(f, 13);
    Uniform rng(3 * f.H * f.W, 17);
    for (int i = 0; i < f.H * f.W; ++i) {
      f.valid[i] = rng.next() >= 0.3;
      f.flow[i] = static_cast<float>(4 * rng.next() - 2);
      f.flow[f.H * f.W + i] = static_cast<float>(4 * rng.next() - 2);
    }
    gocor::InterpOptions o;
    o.edge_cost = 0;
    o.num_neighbors = 9;
    o.affine = affine;
    const std::vector<float> got = interpolate(f, o);
    const std::vector<double> ref =
        interpolate_reference(f, o.seed_stride, o.num_neighbors, o.alpha, affine);
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(got[i] - ref[i]));
    char buf[120];
    std::snprintf(buf, sizeof(buf), "max_abs=%.3g vs the plain pipeline (29x22, K 9, tol 1e-4)",
                  worst);
    report(worst <= 1e-4, affine ? "reference_pipeline_affine" : "reference_pipeline_average", buf);
  }
}

void test_edge_awareness() {
  const float edge_cost = gocor::InterpOptions{}.edge_cost;
  char buf[160];
  const double sym = two_region_fraction(20, 20, edge_cost);
  std::snprintf(buf, sizeof(buf), "%.4f of the 20+20 px band within 0.5 px (>= 0.95)", sym);
  report(sym >= 0.95, "edge_aware_symmetric_band", buf);
  // Off-centre band (30 px left, 10 px right of the edge): Euclidean nearest seeds are on the
  // wrong side for a third of the left part, so this separates geodesic from Euclidean.
  const double asym = two_region_fraction(30, 10, edge_cost);
  const double eucl = two_region_fraction(30, 10, 0.f);
  std::snprintf(buf, sizeof(buf), "%.4f of the 30+10 px band within 0.5 px (>= 0.95)", asym);
  report(asym >= 0.95, "edge_aware_offset_band", buf);
  std::snprintf(buf, sizeof(buf),
                "Euclidean (edge_cost 0) gets %.4f of the same band (< 0.95: the case is "
                "discriminative)",
                eucl);
  report(eucl < 0.95, "edge_aware_offset_band_euclidean_fails", buf);
}

// A 3-channel scene of H x W whose pixels are valid with probability 0.7, with a smooth flow plus
// uniform noise: u = 3 sin(0.05 x) + n, v = 2 cos(0.04 y) + n.
Field noisy_field(int H, int W, int scene, int seed) {
  Field f(3, H, W);
  fill_scene(f, scene);
  Uniform rng(3 * f.H * f.W, seed);
  for (int y = 0; y < f.H; ++y) {
    for (int x = 0; x < f.W; ++x) {
      f.valid[y * f.W + x] = rng.next() >= 0.3;
      f.u(x, y) = static_cast<float>(3 * std::sin(0.05 * x) + rng.next());
      f.v(x, y) = static_cast<float>(2 * std::cos(0.04 * y) + rng.next());
    }
  }
  return f;
}

void test_no_seed_and_threads() {
  Field f(1, 20, 30);
  fill_scene(f, 1);
  for (int i = 0; i < 2 * f.H * f.W; ++i) f.flow[i] = 0.1f * static_cast<float>(i % 17);
  const std::vector<float> out = interpolate(f, gocor::InterpOptions{});
  report(std::memcmp(out.data(), f.flow.data(), out.size() * sizeof(float)) == 0,
         "no_valid_seed_copies_flow", "(30x20, all invalid)");

  const Field g = noisy_field(150, 200, 4, 8);
  const std::vector<float> one = interpolate(g, gocor::InterpOptions{}, 1);
  const std::vector<float> all = interpolate(g, gocor::InterpOptions{}, 0);
  gocor::InterpOptions small;
  small.num_neighbors = 1;
  small.seed_stride = 1;
  const std::vector<float> one_s = interpolate(g, small, 1);
  const std::vector<float> all_s = interpolate(g, small, 0);
  report(std::memcmp(one.data(), all.data(), one.size() * sizeof(float)) == 0 &&
             std::memcmp(one_s.data(), all_s.data(), one_s.size() * sizeof(float)) == 0,
         "threads_bitwise_equal",
         "(200x150, 1 thread vs the pool; stride 4 K 32 and stride 1 K 1)");

  // A tall image: as many row bands as the pool has threads, up to 8 (64 rows each at least), for
  // the banded Voronoi diagram and the seed graph built from every band's pairs at once
  // (scripts/test-cpp.js runs this program a second time with a pool of 6 threads, so that more
  // than two bands run on any machine). Both with and without keep_valid (the final fill's).
  const Field t = noisy_field(520, 96, 6, 10);
  gocor::InterpOptions kv;
  kv.keep_valid = true;
  bool same = true;
  for (const gocor::InterpOptions& o : {gocor::InterpOptions{}, kv}) {
    const std::vector<float> a1 = interpolate(t, o, 1);
    const std::vector<float> an = interpolate(t, o, 0);
    same = same && std::memcmp(a1.data(), an.data(), a1.size() * sizeof(float)) == 0;
  }
  char buf[128];
  std::snprintf(buf, sizeof(buf),
                "(96x520, 1 thread vs a pool of %d: up to %d bands; keep_valid off and on)",
                gocor::pool_size(), std::min(gocor::pool_size(), 520 / 64));
  report(same, "threads_bitwise_equal_bands", buf);
}

// keep_valid: the trusted pixels (valid and finite) keep their own flow bit for bit, the others
// get exactly the values of the full interpolation (only their seeds are fitted).
void test_keep_valid() {
  Field g(3, 150, 200);
  fill_scene(g, 5);
  Uniform rng(3 * g.H * g.W, 9);
  for (int y = 0; y < g.H; ++y) {
    for (int x = 0; x < g.W; ++x) {
      // Untrusted: 10 % scattered and a block, as occlusions leave them.
      g.valid[y * g.W + x] = rng.next() >= 0.1 && !(x > 120 && x < 150 && y > 40 && y < 90);
      g.u(x, y) = static_cast<float>(3 * std::sin(0.05 * x) + rng.next());
      g.v(x, y) = static_cast<float>(2 * std::cos(0.04 * y) + rng.next());
    }
  }
  g.u(7, 9) = NAN;  // valid but not finite: untrusted
  gocor::InterpOptions o;
  o.affine = false;
  const std::vector<float> full = interpolate(g, o, 1);
  o.keep_valid = true;
  const size_t N = static_cast<size_t>(g.H) * g.W;
  size_t kept = 0, filled = 0, wrong = 0;
  for (int threads : {1, 0}) {
    const std::vector<float> got = interpolate(g, o, threads);
    // In place (out = flow, which keep_valid allows): the same bits.
    std::vector<float> in_place = g.flow;
    gocor::Exec ex;
    ex.threads = threads;
    gocor::flow_interpolate_cpu(g.image.data(), g.C, g.H, g.W, in_place.data(), g.valid.data(),
                                in_place.data(), o, ex);
    wrong += std::memcmp(in_place.data(), got.data(), got.size() * sizeof(float)) != 0;
    for (size_t i = 0; i < N; ++i) {
      const bool trusted =
          g.valid[i] != 0 && std::isfinite(g.flow[i]) && std::isfinite(g.flow[N + i]);
      const float* want = trusted ? g.flow.data() : full.data();
      const bool same = std::memcmp(&got[i], &want[i], sizeof(float)) == 0 &&
                        std::memcmp(&got[N + i], &want[N + i], sizeof(float)) == 0;
      wrong += !same;
      (trusted ? kept : filled) += threads == 1;
    }
  }
  char buf[160];
  std::snprintf(buf, sizeof(buf),
                "%zu trusted pixels kept, %zu untrusted equal to the full interpolation, %zu "
                "differ (1 thread and the pool; 200x150)",
                kept, filled, wrong);
  report(wrong == 0 && kept > 0 && filled > 0, "keep_valid_bitwise", buf);
}

void test_bad_input() {
  using gocor::ErrorCode;
  Field f(3, 10, 12);
  std::vector<float> out(2 * 10 * 12);
  const gocor::Exec ex;
  auto call = [&](int C, int H, int W, const float* flow, const uint8_t* valid, float* o_,
                  const gocor::InterpOptions& o) {
    gocor::flow_interpolate_cpu(f.image.data(), C, H, W, flow, valid, o_, o, ex);
  };
  const gocor::InterpOptions d;
  expect_throws("bad_channels", ErrorCode::Shape,
                [&] { call(2, 10, 12, f.flow.data(), f.valid.data(), out.data(), d); });
  expect_throws("bad_height", ErrorCode::Shape,
                [&] { call(3, 0, 12, f.flow.data(), f.valid.data(), out.data(), d); });
  expect_throws("null_valid", ErrorCode::InvalidArg,
                [&] { call(3, 10, 12, f.flow.data(), nullptr, out.data(), d); });
  expect_throws("out_aliases_flow", ErrorCode::InvalidArg,
                [&] { call(3, 10, 12, f.flow.data(), f.valid.data(), f.flow.data() + 5, d); });
  expect_throws("out_is_flow_without_keep_valid", ErrorCode::InvalidArg,
                [&] { call(3, 10, 12, f.flow.data(), f.valid.data(), f.flow.data(), d); });
  gocor::InterpOptions keep;
  keep.keep_valid = true;
  expect_throws("out_overlaps_flow_with_keep_valid", ErrorCode::InvalidArg,
                [&] { call(3, 10, 12, f.flow.data(), f.valid.data(), f.flow.data() + 5, keep); });
  auto with = [&](const std::function<void(gocor::InterpOptions&)>& set) {
    gocor::InterpOptions o;
    set(o);
    call(3, 10, 12, f.flow.data(), f.valid.data(), out.data(), o);
  };
  expect_throws("bad_seed_stride", ErrorCode::InvalidArg,
                [&] { with([](gocor::InterpOptions& o) { o.seed_stride = 0; }); });
  expect_throws("bad_num_neighbors", ErrorCode::InvalidArg,
                [&] { with([](gocor::InterpOptions& o) { o.num_neighbors = 0; }); });
  expect_throws("bad_alpha", ErrorCode::InvalidArg,
                [&] { with([](gocor::InterpOptions& o) { o.alpha = std::nanf(""); }); });
  expect_throws("bad_edge_scale", ErrorCode::InvalidArg,
                [&] { with([](gocor::InterpOptions& o) { o.edge_scale = 0; }); });
  expect_throws("bad_edge_cost", ErrorCode::InvalidArg,
                [&] { with([](gocor::InterpOptions& o) { o.edge_cost = -1; }); });
  std::vector<uint16_t> cost(12, 1);
  std::vector<int32_t> nearest(12);
  std::vector<uint32_t> dist(12);
  const int32_t outside = 12, inside = 3;
  expect_throws("voronoi_seed_outside", ErrorCode::InvalidArg, [&] {
    gocor::flow_interpolate_voronoi(cost.data(), 3, 4, &outside, 1, nearest.data(), dist.data());
  });
  cost[7] = 0;
  expect_throws("voronoi_zero_cost", ErrorCode::InvalidArg, [&] {
    gocor::flow_interpolate_voronoi(cost.data(), 3, 4, &inside, 1, nearest.data(), dist.data());
  });
}

// ---- timing -------------------------------------------------------------------------------------

void time_interpolate() {
  const bool quick = std::getenv("GOCOR_TEST_QUICK") != nullptr;
  Field f(3, 436, 1024);
  Uniform rng(12 * 7 + 4 * f.H * f.W, 42);
  // Shaded background, a few flat objects each moving on its own, mild noise.
  struct Box {
    int x0, y0, x1, y1;
    float shade, u, v;
  };
  std::vector<Box> boxes;
  for (int i = 0; i < 12; ++i) {
    const int x0 = rng.below(900), y0 = rng.below(380);
    boxes.push_back({x0, y0, x0 + 40 + rng.below(200), y0 + 30 + rng.below(120),
                     static_cast<float>(rng.next()), static_cast<float>(20 * rng.next() - 10),
                     static_cast<float>(10 * rng.next() - 5)});
  }
  for (int y = 0; y < f.H; ++y) {
    for (int x = 0; x < f.W; ++x) {
      float shade = 0.4f + 0.2f * std::sin(0.01f * x) * std::cos(0.013f * y);
      float u = 2 + 0.005f * x, v = -1 + 0.003f * y;
      for (const Box& b : boxes) {
        if (x >= b.x0 && x < b.x1 && y >= b.y0 && y < b.y1) {
          shade = b.shade;
          u = b.u;
          v = b.v;
        }
      }
      for (int c = 0; c < 3; ++c) {
        f.image[(c * f.H + y) * f.W + x] =
            shade * (0.8f + 0.2f * c) + 0.03f * static_cast<float>(rng.next() - 0.5);
      }
      f.u(x, y) = u;
      f.v(x, y) = v;
      f.valid[y * f.W + x] = rng.next() >= 0.3;
    }
  }
  int invalid = 0;
  for (uint8_t v : f.valid) invalid += v == 0;
  // Wall time, and for one thread also CPU time (std::clock: the pool's workers sleep), which a
  // loaded machine inflates less.
  for (int threads : {1, 0}) {
    const int runs = quick ? 1 : 7;
    std::vector<double> wall, cpu;
    for (int r = 0; r < runs; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      const std::clock_t c0 = std::clock();
      interpolate(f, gocor::InterpOptions{}, threads);
      cpu.push_back(1e3 * static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC);
      wall.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(wall.begin(), wall.end());
    std::sort(cpu.begin(), cpu.end());
    char cpu_note[64] = "";
    if (threads == 1) {
      std::snprintf(cpu_note, sizeof(cpu_note), "; CPU median %.1f ms (min %.1f)", cpu[runs / 2],
                    cpu[0]);
    }
    std::printf(
        "TIME flow_interpolate 1024x436 RGB, %.0f%% invalid, stride 4, K 32, %s: wall "
        "median %.1f ms (min %.1f)%s, %d runs\n",
        100.0 * invalid / (f.H * f.W), threads == 1 ? "1 thread" : "all threads", wall[runs / 2],
        wall[0], cpu_note, runs);
  }
}

}  // namespace

int main() {
  try {
    test_voronoi_cases();
    test_constant_flow();
    test_affine_flow();
    test_against_reference();
    test_edge_awareness();
    test_no_seed_and_threads();
    test_keep_valid();
    test_bad_input();
    time_interpolate();
  } catch (const std::exception& e) {
    report(false, "unexpected_exception", e.what());
  }
  return gocor_test::finish();
}
