// The matcher's small flow stages of flow.h against straightforward references written here:
// flow_volume_aggregate (a box mean per displacement plane), flow_consistency (forward-backward
// error and test) and flow_texture_mask (the structure tensor's smaller eigenvalue), plus
// match_images on an identity pair and an integer shift, and the pool's nested loops (parallel_for
// inside parallel_for: every index once, the waiting caller helping, errors rethrown), and the
// block pool the stages keep their planes in (blocks.h). Prints one line per case and
// "N passed, M failed".
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "blocks.h"
#include "common.h"
#include "flow.h"
#include "match.h"
#include "parallel.h"
#include "support/harness.h"
#include "support/test_data.h"

using gocor::Exec;

namespace {

using gocor_test::expect_throws;
using gocor_test::report;

// flow_volume_aggregate: each plane's mean over the in-grid part of the (2r+1)^2 box, in double.
void case_aggregate() {
  const int D = 5, H = 13, W = 17;
  for (int r : {0, 1, 2, 9}) {
    std::vector<float> vol = gocor_test::random_vec(size_t(D) * H * W, 11 + r), ref(vol.size());
    for (int d = 0; d < D; ++d)
      for (int y = 0; y < H; ++y)
        for (int x = 0; x < W; ++x) {
          double s = 0;
          int n = 0;
          for (int yy = std::max(0, y - r); yy <= std::min(H - 1, y + r); ++yy)
            for (int xx = std::max(0, x - r); xx <= std::min(W - 1, x + r); ++xx, ++n)
              s += vol[(size_t(d) * H + yy) * W + xx];
          ref[(size_t(d) * H + y) * W + x] = float(s / n);
        }
    for (int threads : {1, 2}) {
      std::vector<float> out = vol;
      Exec ex;
      ex.threads = threads;
      gocor::flow_volume_aggregate_cpu(out.data(), D, H, W, r, ex);
      double worst = 0;
      for (size_t i = 0; i < out.size(); ++i)
        worst = std::max(worst, double(std::fabs(out[i] - ref[i])));
      // Running sums in double, one float rounding at the end: within 2 ulp of values <= 1.
      report(worst <= 2.4e-7, "flow_volume_aggregate 5x13x17 radius " + std::to_string(r) +
                                  " threads " + std::to_string(threads) + ": max |err| " +
                                  std::to_string(worst));
    }
  }
  std::vector<float> v(4);
  expect_throws("flow_volume_aggregate rejects a negative radius", gocor::ErrorCode::Shape,
                [&] { gocor::flow_volume_aggregate_cpu(v.data(), 1, 2, 2, -1, Exec{}); });
}

// flow_consistency on flows with known answers: a constant flow and its exact inverse are
// consistent everywhere they land inside b; a wrong reverse flow is caught by the tolerance.
void case_consistency() {
  const int H = 20, W = 30, Hb = 24, Wb = 26;
  const size_t N = size_t(H) * W, Nb = size_t(Hb) * Wb;
  std::vector<float> fwd(2 * N), bwd(2 * Nb);
  std::fill(fwd.begin(), fwd.begin() + N, 3.5f);
  std::fill(fwd.begin() + N, fwd.end(), -2.25f);
  std::fill(bwd.begin(), bwd.begin() + Nb, -3.5f);
  std::fill(bwd.begin() + Nb, bwd.end(), 2.25f);
  // A patch of b whose reverse flow is off by (1, 0.5) px.
  for (int y = 5; y < 9; ++y)
    for (int x = 10; x < 14; ++x)
      bwd[size_t(y) * Wb + x] += 1.f, bwd[Nb + size_t(y) * Wb + x] += 0.5f;
  std::vector<uint8_t> valid(N);
  std::vector<float> err(N);
  gocor::flow_consistency_cpu(fwd.data(), H, W, bwd.data(), Hb, Wb, 0.5f, 0.f, valid.data(),
                              err.data(), Exec{});
  int wrong = 0;
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      const size_t i = size_t(y) * W + x;
      const double bx = x + 3.5, by = y - 2.25;
      const bool inside = bx > -0.5 && by > -0.5 && bx < Wb - 0.5 && by < Hb - 0.5;
      // Straightforward reference: the reverse flow read bilinearly (clamped) at the match.
      double e = std::numeric_limits<double>::infinity();
      if (inside) {
        const double cx = std::clamp(bx, 0.0, Wb - 1.0), cy = std::clamp(by, 0.0, Hb - 1.0);
        const int x0 = std::min(int(cx), Wb - 1), y0 = std::min(int(cy), Hb - 1);
        const int x1 = std::min(x0 + 1, Wb - 1), y1 = std::min(y0 + 1, Hb - 1);
        const double fx = cx - x0, fy = cy - y0;
        auto at = [&](int c, int yy, int xx) { return double(bwd[c * Nb + size_t(yy) * Wb + xx]); };
        auto bil = [&](int c) {
          return (1 - fy) * ((1 - fx) * at(c, y0, x0) + fx * at(c, y0, x1)) +
                 fy * ((1 - fx) * at(c, y1, x0) + fx * at(c, y1, x1));
        };
        e = std::hypot(3.5 + bil(0), -2.25 + bil(1));
      }
      const bool want = inside && e <= 0.5;
      if (valid[i] != want) ++wrong;
      if (inside ? std::fabs(err[i] - e) > 1e-5 : std::isfinite(err[i])) ++wrong;
    }
  report(wrong == 0, "flow_consistency 20x30 -> 24x26: error and test as the reference (" +
                         std::to_string(wrong) + " differ)");
  // Relative tolerance: the same pair with rel_tol large enough accepts the patch too.
  gocor::flow_consistency_cpu(fwd.data(), H, W, bwd.data(), Hb, Wb, 0.5f, 0.5f, valid.data(),
                              nullptr, Exec{});
  int accepted = 0, inside = 0;
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      const double bx = x + 3.5, by = y - 2.25;
      if (bx > -0.5 && by > -0.5 && bx < Wb - 0.5 && by < Hb - 0.5)
        ++inside, accepted += valid[size_t(y) * W + x];
    }
  report(accepted == inside,
         "flow_consistency: rel_tol 0.5 accepts a 1.1 px error on a 4.2 px flow");
  expect_throws("flow_consistency rejects an empty grid", gocor::ErrorCode::Shape, [&] {
    gocor::flow_consistency_cpu(fwd.data(), 0, W, bwd.data(), Hb, Wb, 1, 0, nullptr, nullptr,
                                Exec{});
  });
}

// flow_texture_mask: the smaller eigenvalue or the trace of the box-averaged structure tensor,
// computed here in double with the same central differences.
void case_texture(gocor::TextureMeasure measure, int r, float t) {
  const bool trace = measure == gocor::TextureMeasure::Gradient;
  const int H = 21, W = 19;
  std::vector<float> g(size_t(H) * W);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      // Left third flat, middle third a horizontal ramp (1-D structure), right third checkered.
      g[size_t(y) * W + x] = x < 6 ? 0.5f : x < 12 ? 0.1f * x : ((x / 2 + y / 2) % 2 ? 0.9f : 0.1f);
    }
  std::vector<uint8_t> mask(g.size());
  gocor::flow_texture_mask_cpu(g.data(), H, W, r, t, measure, mask.data(), Exec{});
  int wrong = 0, near = 0;
  auto px = [&](int y, int x) {
    return double(g[size_t(std::clamp(y, 0, H - 1)) * W + std::clamp(x, 0, W - 1)]);
  };
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      double a = 0, b = 0, c = 0;
      int n = 0;
      for (int yy = std::max(0, y - r); yy <= std::min(H - 1, y + r); ++yy)
        for (int xx = std::max(0, x - r); xx <= std::min(W - 1, x + r); ++xx, ++n) {
          const double gx = 0.5 * (px(yy, xx + 1) - px(yy, xx - 1));
          const double gy = 0.5 * (px(yy + 1, xx) - px(yy - 1, xx));
          a += gx * gx, b += gx * gy, c += gy * gy;
        }
      a /= n, b /= n, c /= n;
      const double m = trace ? a + c : 0.5 * (a + c) - std::sqrt(0.25 * (a - c) * (a - c) + b * b);
      const double thr = double(t) * t;
      if (std::fabs(m - thr) < 1e-6 * thr) {
        ++near;  // within float rounding of the threshold: either answer is right
        continue;
      }
      if (mask[size_t(y) * W + x] != (m >= thr)) ++wrong;
    }
  const std::string what = std::string("flow_texture_mask ") + (trace ? "gradient" : "eigenvalue") +
                           " radius " + std::to_string(r);
  report(wrong == 0, what + " 21x19 as the reference (" + std::to_string(wrong) + " differ, " +
                         std::to_string(near) + " at the threshold)");
  // The flat area has no structure by either measure, the checkerboard has both kinds; the ramp
  // (gradient 0.05 per pixel) has a gradient but no 2-D structure.
  report(!mask[10 * W + 2] && mask[10 * W + 8] == trace && mask[10 * W + 15],
         what + ": flat area untextured, ramp " + (trace ? "" : "un") +
             "textured, checkerboard textured");
}

// A smooth random texture (a sum of sinusoids) of size H x W, values in [0, 1].
std::vector<float> texture(int H, int W, int dx, int dy) {
  std::vector<float> img(size_t(H) * W);
  const std::vector<float> k = gocor_test::random_vec(48, 5);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      double v = 0;
      for (int j = 0; j < 12; ++j) {
        const double fx = 0.35 * k[4 * j], fy = 0.35 * k[4 * j + 1];
        v += std::sin(fx * (x - dx) + fy * (y - dy) + 3 * k[4 * j + 2]);
      }
      img[size_t(y) * W + x] = float(0.5 + v / 24);
    }
  return img;
}

// match_images end to end: an identity pair gives zero flow; an integer shift is recovered.
void case_match() {
  const int H = 160, W = 192;
  const std::vector<float> a = texture(H, W, 0, 0), b = texture(H, W, 7, 3);
  const gocor::ImageView va{a.data(), 1, H, W}, vb{b.data(), 1, H, W};
  gocor::MatchOptions o;
  o.finest_stride = 8;
  const gocor::MatchResult id = gocor::match_images(va, va, o, Exec{});
  double worst = 0;
  for (float f : id.flow) worst = std::max(worst, double(std::fabs(f)));
  report(worst < 0.05, "match_images identity 160x192: max |flow| " + std::to_string(worst));
  // b(x) = a(x - (7, 3)), so a(x) = b(x + (7, 3)): flow (7, 3) where x + (7, 3) is inside b.
  const gocor::MatchResult sh = gocor::match_images(va, vb, o, Exec{});
  const size_t N = size_t(H) * W;
  int n = 0, ok = 0;
  for (int y = 0; y + 3 < H; ++y)
    for (int x = 0; x + 7 < W; ++x, ++n) {
      const size_t i = size_t(y) * W + x;
      ok += std::hypot(sh.flow[i] - 7.0, sh.flow[N + i] - 3.0) < 0.1;
    }
  if (std::getenv("FLOW_TEST_DUMP")) {
    for (int y = 0; y + 3 < H; y += 4) {
      for (int x = 0; x + 7 < W; x += 2) {
        const size_t i = size_t(y) * W + x;
        const double e = std::hypot(sh.flow[i] - 7.0, sh.flow[N + i] - 3.0);
        std::putchar(e < 0.1 ? '.' : e < 0.5 ? 'o' : 'X');
      }
      std::putchar('\n');
    }
  }
  report(ok >= 0.99 * n, "match_images shift (7, 3) 160x192: " + std::to_string(100.0 * ok / n) +
                             " % of the overlap within 0.1 px");
}

// Two sides side by side (as match's each_side): side 0 ends as soon as side 1 has started on
// another thread, side 1 runs a nested loop of slow items. Every index of every loop runs once,
// three levels deep; with two threads or more, the nested loop's items run on at least two threads
// (the outer loop's caller, whose side is done, runs the items of the loops its job's items
// started: the pool's earlier wait left it idle); an exception thrown three levels down reaches
// the outermost caller.
void case_parallel_nested() {
  constexpr int kItems = 400;
  std::vector<std::atomic<int>> hits(kItems);
  std::mutex mu;
  std::set<std::thread::id> ids;
  std::atomic<bool> started{false};
  gocor::parallel_for(2, 2, [&](int64_t side) {
    if (side == 0) {
      const auto t0 = std::chrono::steady_clock::now();
      while (gocor::pool_size() >= 2 && !started &&
             std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5)) {
        std::this_thread::yield();
      }
      return;
    }
    started = true;
    gocor::parallel_for(kItems, 2, [&](int64_t i) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      hits[size_t(i)].fetch_add(1);
      std::lock_guard<std::mutex> lock(mu);
      ids.insert(std::this_thread::get_id());
    });
  });
  const bool once = std::all_of(hits.begin(), hits.end(), [](const auto& h) { return h == 1; });
  const bool helped = gocor::pool_size() < 2 || ids.size() >= 2;
  report(once && helped, "parallel_for nested: " + std::to_string(kItems) +
                             " items each run once, on " + std::to_string(ids.size()) +
                             " thread(s) (pool " + std::to_string(gocor::pool_size()) + ")");
  std::atomic<int64_t> sum{0};
  gocor::parallel_for(3, 0, [&](int64_t a) {
    gocor::parallel_for(5, 0, [&](int64_t b) {
      gocor::parallel_for(7, 0, [&](int64_t c) { sum += a * 35 + b * 7 + c; });
    });
  });
  report(sum == 104 * 105 / 2,
         "parallel_for three levels: sum of 0..104 = " + std::to_string(sum.load()));
  std::string what;
  try {
    gocor::parallel_for(4, 0, [&](int64_t a) {
      gocor::parallel_for(4, 0, [&](int64_t b) {
        gocor::parallel_for(4, 0, [&](int64_t c) {
          if (a == 2 && b == 1 && c == 3) throw std::runtime_error("deep");
        });
      });
    });
  } catch (const std::runtime_error& e) {
    what = e.what();
  }
  report(what == "deep", "parallel_for: an exception three levels down is rethrown (" +
                             (what.empty() ? std::string("none") : what) + ")");
}

}  // namespace

// The block pool: size classes, a given-back block serving the next request of its class (on any
// thread, most recently freed first), alignment, the keep limit, BlocksUnkept and blocks_trim.
void case_blocks() {
  using gocor::block_capacity;
  using gocor::blocks_kept_bytes;
  constexpr size_t KiB = 1024, MiB = KiB * KiB;
  report(block_capacity(1000) == 1024 && block_capacity(256 * KiB) == 256 * KiB &&
             block_capacity(256 * KiB + 1) == 320 * KiB && block_capacity(2 * MiB) == 2 * MiB &&
             block_capacity(2 * MiB + 1) == 4 * MiB && block_capacity(2 * MiB - 1) == 2 * MiB,
         "blocks: size classes");
  gocor::blocks_trim();
  const bool empty = blocks_kept_bytes() == 0;

  auto aligned = [](void* p, size_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; };
  void* small = gocor::block_take(300000);
  void* huge = gocor::block_take(3 * MiB);
  std::memset(small, 1, 300000);
  std::memset(huge, 2, 3 * MiB);
  const bool align_ok = aligned(small, 64) && aligned(huge, 2 * MiB);
  gocor::block_give(small, 300000);
  gocor::block_give(huge, 3 * MiB);
  const bool kept_ok = blocks_kept_bytes() == 320 * KiB + 4 * MiB;
  // Same class, another thread: the same block back; another class: a new one.
  void *again = nullptr, *other = nullptr;
  std::thread([&] {
    again = gocor::block_take(327680);
    other = gocor::block_take(400 * KiB);
  }).join();
  const bool reuse_ok = again == small && other != small && blocks_kept_bytes() == 4 * MiB;
  gocor::block_give(again, 327680);
  gocor::block_give(other, 400 * KiB);
  report(empty && align_ok && kept_ok && reuse_ok, "blocks: take, give back, reuse",
         gocor_test::fmt("aligned %d, kept %d, reused %d", align_ok, kept_ok, reuse_ok));

  // WorkVector: from operator new, not the pool, outside BlocksUnkept; inside, a mapped block that
  // is unmapped when freed there, or kept when freed after the scope.
  gocor::blocks_trim();
  {
    gocor::WorkVector<float> v(100000, 1.f);
    v[99999] = 2.f;
  }
  const bool outside_ok = blocks_kept_bytes() == 0;
  bool inside_ok;
  gocor::WorkVector<float> late;
  {
    gocor::BlocksUnkept unkept;
    gocor::WorkVector<float> v(100000, 1.f);
    late.assign(200000, 3.f);
    inside_ok = reinterpret_cast<uintptr_t>(v.data()) % 64 == 0 && v[99999] == 1.f;
  }
  inside_ok = inside_ok && blocks_kept_bytes() == 0;
  late = gocor::WorkVector<float>();
  const bool late_ok = blocks_kept_bytes() == block_capacity(800000);
  report(outside_ok && inside_ok && late_ok, "blocks: WorkVector inside and outside BlocksUnkept",
         gocor_test::fmt("outside %d, inside %d, freed late %d", outside_ok, inside_ok, late_ok));

  // Past kBlockKeepBytes the least recently freed go (two 160 MiB blocks, never touched).
  gocor::blocks_trim();
  void* b1 = gocor::block_take(160 * MiB);
  void* b2 = gocor::block_take(160 * MiB);
  gocor::block_give(b1, 160 * MiB);
  gocor::block_give(b2, 160 * MiB);
  const bool evict_ok = blocks_kept_bytes() == 160 * MiB;
  void* b3 = gocor::block_take(160 * MiB);
  gocor::block_give(b3, 160 * MiB);
  report(evict_ok && b3 == b2, "blocks: the keep limit gives back the least recently freed");

  // While BlocksUnkept lives, blocks are freed; blocks_trim frees what is kept.
  gocor::blocks_trim();
  {
    gocor::BlocksUnkept unkept;
    gocor::block_give(gocor::block_take(MiB), MiB);
  }
  const bool unkept_ok = blocks_kept_bytes() == 0;
  gocor::block_give(gocor::block_take(MiB), MiB);
  const bool kept_again = blocks_kept_bytes() == MiB;
  gocor::blocks_trim();
  report(unkept_ok && kept_again && blocks_kept_bytes() == 0, "blocks: BlocksUnkept and trim");
}

int main() {
  case_blocks();
  case_parallel_nested();
  case_aggregate();
  case_consistency();
  case_texture(gocor::TextureMeasure::SmallerEigenvalue, 2, 0.05f);
  case_texture(gocor::TextureMeasure::Gradient, 2, 0.04f);
  case_texture(gocor::TextureMeasure::Gradient, 0, 0.04f);
  case_match();
  return gocor_test::finish();
}
