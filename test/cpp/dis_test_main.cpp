// DIS refinement (flow_refine_dis): smoke, bad input, shapes, numerics on synthetic pairs whose
// true flow is known in closed form, the patch search against a float64 forward-additive
// Lucas-Kanade, and a printed (not asserted) one-thread timing on a 1024x436 pair.
// Prints one line per check and "N passed, M failed"; returns non-zero on any failure.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <string>
#include <vector>

#include "common.h"
#include "dis.h"
#include "simd.h"
#include "support/test_data.h"

using gocor::DisOptions;
using gocor::ErrorCode;
using gocor::Exec;

namespace {

constexpr double kPi = 3.14159265358979323846;

int g_pass = 0, g_fail = 0;

void report(bool ok, const std::string& name, const std::string& detail) {
  std::printf("%s %s %s\n", ok ? "PASS" : "FAIL", name.c_str(), detail.c_str());
  (ok ? g_pass : g_fail)++;
}

void expect_throws(const std::string& name, ErrorCode code, const std::function<void()>& fn) {
  try {
    fn();
    report(false, name, "no exception");
  } catch (const gocor::Error& e) {
    report(e.code() == code, name, e.what());
  } catch (const std::exception& e) {
    report(false, name, std::string("not a gocor::Error: ") + e.what());
  }
}

using gocor_test::Rng;  // splitmix64; uniform() in (0, 1]

// A smooth random texture defined everywhere: cubic B-splines through random lattices (a fine one
// with `cell` px spacing for detail, a 4x coarser one for large-scale shading), so that any warp
// of it is known exactly and bilinear resampling of its pixels is accurate to a small fraction of
// a pixel.
class Texture {
 public:
  Texture(double cell, uint64_t seed) : cell_(cell) {
    Rng r{seed};
    fine_.resize(size_t(kN) * kN);
    coarse_.resize(size_t(kN) * kN);
    for (double& v : fine_) v = r.uniform();
    for (double& v : coarse_) v = r.uniform();
  }
  // Value at continuous pixel coordinates, in about [0.1, 0.9].
  double operator()(double x, double y) const {
    return 0.1 + 0.55 * spline(fine_, x / cell_, y / cell_) +
           0.25 * spline(coarse_, x / (4 * cell_), y / (4 * cell_));
  }

 private:
  static constexpr int kN = 512;  // lattice points per axis (wraps around)
  static double spline(const std::vector<double>& c, double gx, double gy) {
    const double fx = std::floor(gx), fy = std::floor(gy);
    double wx[4], wy[4];
    basis(gx - fx, wx);
    basis(gy - fy, wy);
    double s = 0;
    for (int j = 0; j < 4; ++j) {
      const int yy = ((int(fy) - 1 + j) % kN + kN) % kN;
      for (int i = 0; i < 4; ++i) {
        const int xx = ((int(fx) - 1 + i) % kN + kN) % kN;
        s += wy[j] * wx[i] * c[size_t(yy) * kN + xx];
      }
    }
    return s;
  }
  static void basis(double t, double w[4]) {
    const double t2 = t * t, t3 = t2 * t;
    w[0] = (1 - t) * (1 - t) * (1 - t) / 6;
    w[1] = (3 * t3 - 6 * t2 + 4) / 6;
    w[2] = (-3 * t3 + 3 * t2 + 3 * t + 1) / 6;
    w[3] = t3 / 6;
  }
  double cell_;
  std::vector<double> fine_, coarse_;
};

// A test pair: a (H, W), b (Hb, Wb), the true flow (2, H, W) with a(x) = b(x + gt(x)), and
// `valid` (H, W): pixels at least `margin` inside a whose match lies at least `margin` inside b.
struct Pair {
  int H = 0, W = 0, Hb = 0, Wb = 0;
  std::vector<float> a, b, gt;
  std::vector<uint8_t> valid;
};

// b(y) = tex(inv(y)) for the inverse map inv of x -> x + flow(x); gt from `flow` at a's pixels.
Pair make_pair(const Texture& tex, int H, int W, int Hb, int Wb,
               const std::function<void(double, double, double*, double*)>& flow,
               const std::function<void(double, double, double*, double*)>& inv, int margin) {
  Pair p;
  p.H = H, p.W = W, p.Hb = Hb, p.Wb = Wb;
  p.a.resize(size_t(H) * W);
  p.b.resize(size_t(Hb) * Wb);
  p.gt.resize(2 * size_t(H) * W);
  p.valid.resize(size_t(H) * W);
  const size_t P = size_t(H) * W;
  for (int y = 0; y < H; ++y) {
    for (int x = 0; x < W; ++x) {
      const size_t i = size_t(y) * W + x;
      p.a[i] = float(tex(x, y));
      double u, v;
      flow(x, y, &u, &v);
      p.gt[i] = float(u);
      p.gt[P + i] = float(v);
      const double bx = x + u, by = y + v;
      p.valid[i] = x >= margin && y >= margin && x < W - margin && y < H - margin && bx >= margin &&
                   by >= margin && bx <= Wb - 1 - margin && by <= Hb - 1 - margin;
    }
  }
  for (int y = 0; y < Hb; ++y) {
    for (int x = 0; x < Wb; ++x) {
      double sx, sy;
      inv(x, y, &sx, &sy);
      p.b[size_t(y) * Wb + x] = float(tex(sx, sy));
    }
  }
  return p;
}

Pair make_translation(const Texture& tex, int H, int W, double tu, double tv) {
  return make_pair(
      tex, H, W, H, W, [=](double, double, double* u, double* v) { *u = tu, *v = tv; },
      [=](double x, double y, double* sx, double* sy) { *sx = x - tu, *sy = y - tv; }, 10);
}

// Smooth non-affine warp: b(y) = tex(y - d(y)), so a's pixel x matches the y solving y = x + d(y)
// (a contraction: |grad d| <= 0.15), found by fixed-point iteration. Wavelengths of 144 to 224 px,
// the same at every image size.
Pair make_smooth_warp(const Texture& tex, int H, int W) {
  auto d = [](double x, double y, double* dx, double* dy) {
    *dx = 3.2 + 2.5 * std::sin(2 * kPi * y / 144 + 0.4) + 1.5 * std::cos(2 * kPi * x / 224);
    *dy = -1.3 + 2.0 * std::sin(2 * kPi * x / 156.8 + 1.1) +
          1.0 * std::sin(2 * kPi * (x + y) / 179.2);
  };
  return make_pair(
      tex, H, W, H, W,
      [=](double x, double y, double* u, double* v) {
        double px = x, py = y;
        for (int k = 0; k < 60; ++k) {
          double dx, dy;
          d(px, py, &dx, &dy);
          px = x + dx, py = y + dy;
        }
        *u = px - x, *v = py - y;
      },
      [=](double x, double y, double* sx, double* sy) {
        double dx, dy;
        d(x, y, &dx, &dy);
        *sx = x - dx, *sy = y - dy;
      },
      12);
}

// b(y) = tex(M^-1 (y - c - t) + c): flow(x) = (M - I)(x - c) + t about the image centre c.
Pair make_affine(const Texture& tex, int H, int W) {
  const double m00 = 1.035, m01 = 0.02, m10 = -0.015, m11 = 0.975, tu = 2.6, tv = -3.3;
  const double cx = 0.5 * (W - 1), cy = 0.5 * (H - 1), det = m00 * m11 - m01 * m10;
  return make_pair(
      tex, H, W, H, W,
      [=](double x, double y, double* u, double* v) {
        const double X = x - cx, Y = y - cy;
        *u = (m00 - 1) * X + m01 * Y + tu;
        *v = m10 * X + (m11 - 1) * Y + tv;
      },
      [=](double x, double y, double* sx, double* sy) {
        const double X = x - cx - tu, Y = y - cy - tv;
        *sx = (m11 * X - m01 * Y) / det + cx;
        *sy = (-m10 * X + m00 * Y) / det + cy;
      },
      12);
}

// Seed = truth + a smooth error field of at most `amp` px per component (matchers' errors are
// spatially correlated) + iid uniform noise of at most `noise` px.
std::vector<float> make_seed(const Pair& p, double amp, double noise, uint64_t seed) {
  Rng r{seed};
  const double ph[4] = {6.28 * r.uniform(), 6.28 * r.uniform(), 6.28 * r.uniform(),
                        6.28 * r.uniform()};
  const size_t P = size_t(p.H) * p.W;
  std::vector<float> f(p.gt);
  for (int y = 0; y < p.H; ++y) {
    for (int x = 0; x < p.W; ++x) {
      const size_t i = size_t(y) * p.W + x;
      const double eu = 0.5 * amp * (std::sin(x / 37.0 + ph[0]) + std::cos(y / 29.0 + ph[1]));
      const double ev = 0.5 * amp * (std::cos(x / 31.0 + ph[2]) + std::sin(y / 41.0 + ph[3]));
      f[i] += float(eu + noise * (2 * r.uniform() - 1));
      f[P + i] += float(ev + noise * (2 * r.uniform() - 1));
    }
  }
  return f;
}

struct Stats {
  double median = 0, mean = 0, pck1 = 0, within01 = 0;
  size_t n = 0;
};

// End-point error of flow against p.gt over p.valid.
Stats epe(const Pair& p, const std::vector<float>& flow) {
  const size_t P = size_t(p.H) * p.W;
  std::vector<double> e;
  for (size_t i = 0; i < P; ++i) {
    if (!p.valid[i]) continue;
    e.push_back(std::hypot(double(flow[i]) - p.gt[i], double(flow[P + i]) - p.gt[P + i]));
  }
  Stats s;
  s.n = e.size();
  if (e.empty()) return s;
  for (double v : e) {
    s.mean += v;
    s.pck1 += v < 1.0;
    s.within01 += v < 0.1;
  }
  s.mean /= double(e.size());
  s.pck1 /= double(e.size());
  s.within01 /= double(e.size());
  std::nth_element(e.begin(), e.begin() + e.size() / 2, e.end());
  s.median = e[e.size() / 2];
  return s;
}

std::string describe(const Stats& s) {
  char buf[200];
  std::snprintf(buf, sizeof(buf), "median=%.4f mean=%.4f pck1=%.4f within0.1=%.4f (n=%zu)",
                s.median, s.mean, s.pck1, s.within01, s.n);
  return buf;
}

std::vector<float> refine(const Pair& p, std::vector<float> flow, const DisOptions& o,
                          int threads = 1) {
  const Exec ex{gocor::Device::Cpu, threads, nullptr};
  gocor::flow_refine_dis_cpu(p.a.data(), p.H, p.W, p.b.data(), p.Hb, p.Wb, flow.data(), o, ex);
  return flow;
}

bool all_finite(const std::vector<float>& v) {
  return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
}

// ---- a straightforward reference for the patch search ------------------------------------------

double bilinear(const std::vector<double>& img, int H, int W, double x, double y) {
  x = std::clamp(x, 0.0, double(W - 1));
  y = std::clamp(y, 0.0, double(H - 1));
  const int x0 = std::min(int(x), W - 1), y0 = std::min(int(y), H - 1);
  const int x1 = std::min(x0 + 1, W - 1), y1 = std::min(y0 + 1, H - 1);
  const double ax = x - x0, ay = y - y0;
  const double t = img[size_t(y0) * W + x0] * (1 - ax) + img[size_t(y0) * W + x1] * ax;
  const double d = img[size_t(y1) * W + x0] * (1 - ax) + img[size_t(y1) * W + x1] * ax;
  return t * (1 - ay) + d * ay;
}

// Forward-additive Lucas-Kanade in float64 on the mean-normalised SSD of one patch: linearise b
// at the current match with its (bilinearly read) central-difference gradient, solve, add, repeat.
void lk_forward_additive(const Pair& p, int x0, int y0, int n, double* u, double* v) {
  std::vector<double> a(p.a.begin(), p.a.end()), b(p.b.begin(), p.b.end());
  std::vector<double> bx(b.size()), by(b.size());
  for (int y = 0; y < p.Hb; ++y) {
    for (int x = 0; x < p.Wb; ++x) {
      auto at = [&](int yy, int xx) {
        return b[size_t(std::clamp(yy, 0, p.Hb - 1)) * p.Wb + std::clamp(xx, 0, p.Wb - 1)];
      };
      bx[size_t(y) * p.Wb + x] = 0.5 * (at(y, x + 1) - at(y, x - 1));
      by[size_t(y) * p.Wb + x] = 0.5 * (at(y + 1, x) - at(y - 1, x));
    }
  }
  const int m = n * n;
  std::vector<double> e(m), jx(m), jy(m);
  for (int it = 0; it < 200; ++it) {
    double me = 0, mx = 0, my = 0;
    for (int r = 0; r < n; ++r) {
      for (int c = 0; c < n; ++c) {
        const double X = x0 + c + *u, Y = y0 + r + *v;
        const int k = r * n + c;
        e[k] = bilinear(b, p.Hb, p.Wb, X, Y) - a[size_t(y0 + r) * p.W + x0 + c];
        jx[k] = bilinear(bx, p.Hb, p.Wb, X, Y);
        jy[k] = bilinear(by, p.Hb, p.Wb, X, Y);
        me += e[k], mx += jx[k], my += jy[k];
      }
    }
    me /= m, mx /= m, my /= m;
    double hxx = 0, hxy = 0, hyy = 0, gx = 0, gy = 0;
    for (int k = 0; k < m; ++k) {
      const double cx = jx[k] - mx, cy = jy[k] - my, ce = e[k] - me;
      hxx += cx * cx, hxy += cx * cy, hyy += cy * cy, gx += cx * ce, gy += cy * ce;
    }
    const double det = hxx * hyy - hxy * hxy;
    const double du = (hyy * gx - hxy * gy) / det, dv = (hxx * gy - hxy * gx) / det;
    *u -= du, *v -= dv;
    if (du * du + dv * dv < 1e-20) break;
  }
}

// ---- checks ------------------------------------------------------------------------------------

void check_bad_input() {
  const int H = 40, W = 48;
  std::vector<float> a(size_t(H) * W, 0.5f), flow(2 * size_t(H) * W, 0.f);
  const Exec ex{gocor::Device::Cpu, 1, nullptr};
  auto call = [&](int h, int w, int hb, int wb, const DisOptions& o) {
    return [=, &a, &flow] {
      gocor::flow_refine_dis_cpu(a.data(), h, w, a.data(), hb, wb, flow.data(), o, ex);
    };
  };
  const DisOptions d;
  expect_throws("bad_input H=0", ErrorCode::Shape, call(0, W, H, W, d));
  expect_throws("bad_input W=-3", ErrorCode::Shape, call(H, -3, H, W, d));
  expect_throws("bad_input Hb=0", ErrorCode::Shape, call(H, W, 0, W, d));
  expect_throws("bad_input Wb=-1", ErrorCode::Shape, call(H, W, H, -1, d));
  auto with = [&](const std::function<void(DisOptions&)>& set) {
    DisOptions o;
    set(o);
    return o;
  };
  expect_throws("bad_input patch_size=1", ErrorCode::InvalidArg,
                call(H, W, H, W, with([](DisOptions& o) { o.patch_size = 1; })));
  expect_throws("bad_input patch_stride=0", ErrorCode::InvalidArg,
                call(H, W, H, W, with([](DisOptions& o) { o.patch_stride = 0; })));
  expect_throws("bad_input patch_stride>patch_size", ErrorCode::InvalidArg,
                call(H, W, H, W, with([](DisOptions& o) { o.patch_stride = 9; })));
  expect_throws("bad_input grad_iters=-1", ErrorCode::InvalidArg,
                call(H, W, H, W, with([](DisOptions& o) { o.grad_iters = -1; })));
  expect_throws("bad_input var_iters=-1", ErrorCode::InvalidArg,
                call(H, W, H, W, with([](DisOptions& o) { o.var_iters = -1; })));
  expect_throws("bad_input finest_scale=-1", ErrorCode::InvalidArg,
                call(H, W, H, W, with([](DisOptions& o) { o.finest_scale = -1; })));
  expect_throws("bad_input finest>coarsest", ErrorCode::InvalidArg,
                call(H, W, H, W, with([](DisOptions& o) { o.finest_scale = 4; })));
  expect_throws("bad_input var_alpha=-1", ErrorCode::InvalidArg,
                call(H, W, H, W, with([](DisOptions& o) { o.var_alpha = -1; })));
  expect_throws("bad_input var_delta=nan", ErrorCode::InvalidArg,
                call(H, W, H, W, with([](DisOptions& o) { o.var_delta = std::nanf(""); })));
  expect_throws("bad_input null image", ErrorCode::InvalidArg, [&] {
    gocor::flow_refine_dis_cpu(nullptr, H, W, a.data(), H, W, flow.data(), d, ex);
  });
  flow[17] = std::nanf("");
  expect_throws("bad_input non-finite seed", ErrorCode::InvalidArg, call(H, W, H, W, d));
  flow[17] = 0.f;
  float uv[2] = {0.f, 0.f};
  expect_throws("bad_input patch outside a", ErrorCode::Shape,
                [&] { gocor::dis_patch_search(a.data(), H, W, a.data(), H, W, W - 4, 0, d, uv); });
}

void check_shapes() {
  const Texture tex(4.0, 11);
  // Non-square a, a larger b, a translation: the result is finite and the translation found.
  {
    const int H = 37, W = 53, Hb = 45, Wb = 66;
    Pair p = make_pair(
        tex, H, W, Hb, Wb, [](double, double, double* u, double* v) { *u = 5.5, *v = 3.25; },
        [](double x, double y, double* sx, double* sy) { *sx = x - 5.5, *sy = y - 3.25; }, 8);
    const std::vector<float> out = refine(p, make_seed(p, 1.0, 0.0, 3), DisOptions{});
    const Stats s = epe(p, out);
    report(all_finite(out) && s.median < 0.1, "shapes a 37x53, b 45x66", describe(s));
  }
  // An image smaller than a patch leaves the seed as it is.
  {
    const int H = 6, W = 5;
    std::vector<float> a(size_t(H) * W, 0.3f), flow(2 * size_t(H) * W, 1.25f);
    gocor::flow_refine_dis_cpu(a.data(), H, W, a.data(), H, W, flow.data(), DisOptions{},
                               Exec{gocor::Device::Cpu, 1, nullptr});
    const bool same = std::all_of(flow.begin(), flow.end(), [](float v) { return v == 1.25f; });
    report(same, "shapes 6x5 smaller than a patch: seed unchanged", "");
  }
  // finest_scale = 1: the half-resolution result is upsampled to a's grid.
  {
    const Pair p = make_translation(tex, 96, 128, 2.5, -1.5);
    DisOptions o;
    o.finest_scale = 1;
    const Stats s = epe(p, refine(p, make_seed(p, 2.0, 0.0, 5), o));
    report(s.median < 0.1, "shapes finest_scale=1 translation (2.5, -1.5)", describe(s));
  }
}

void check_numerics(bool quick) {
  const Texture tex(4.0, 7);
  const int H = quick ? 96 : 160, W = quick ? 128 : 224;
  const DisOptions d;

  // Identity: nothing to correct, and every stage must keep an exact zero.
  {
    const Pair p = make_translation(tex, H, W, 0.0, 0.0);
    const std::vector<float> out = refine(p, std::vector<float>(2 * size_t(H) * W, 0.f), d);
    double worst = 0;
    for (float v : out) worst = std::max(worst, double(std::fabs(v)));
    char buf[80];
    std::snprintf(buf, sizeof(buf), "max|flow|=%.3g", worst);
    report(worst < 1e-6, "identity a = b, zero seed", buf);
  }
  // Integer shift, seed with +-1.5 px pixel noise.
  {
    const Pair p = make_translation(tex, H, W, 7.0, 3.0);
    const std::vector<float> seed = make_seed(p, 0.0, 1.5, 21);
    const Stats s0 = epe(p, seed), s = epe(p, refine(p, seed, d));
    report(s.within01 >= 0.99, "integer shift (7, 3), seed +-1.5 px noise",
           describe(s) + " | seed " + describe(s0));
  }
  // Sub-pixel translation, seed off by up to 2 px.
  {
    const Pair p = make_translation(tex, H, W, 3.4, -1.7);
    const std::vector<float> seed = make_seed(p, 1.7, 0.3, 22);
    const Stats s0 = epe(p, seed), s = epe(p, refine(p, seed, d));
    report(s.median < 0.05, "sub-pixel translation (3.4, -1.7), seed off <= 2 px per axis",
           describe(s) + " | seed " + describe(s0));
  }
  // Affine warp, seed off by up to 2 px: PCK-1 must rise well above the seed's.
  {
    const Pair p = make_affine(tex, H, W);
    const std::vector<float> seed = make_seed(p, 1.7, 0.3, 23);
    const Stats s0 = epe(p, seed), s = epe(p, refine(p, seed, d));
    report(s.pck1 >= 0.98 && s.pck1 >= s0.pck1 + 0.2 && s.median < 0.1,
           "affine warp, seed off <= 2 px per axis", describe(s) + " | seed " + describe(s0));
  }
  // Smooth non-affine warp, seed off by up to 2 px.
  const Pair warp = make_smooth_warp(tex, H, W);
  {
    const std::vector<float> seed = make_seed(warp, 1.7, 0.3, 24);
    const Stats s0 = epe(warp, seed), s = epe(warp, refine(warp, seed, d));
    report(s.pck1 >= 0.98 && s.pck1 >= s0.pck1 + 0.2 && s.median < 0.1,
           "smooth warp, seed off <= 2 px per axis", describe(s) + " | seed " + describe(s0));
  }
  // Does not make it worse: the exact flow as seed stays (nearly) exact. The patch stage alone
  // (var_iters = 0) moves it by about a tenth of a pixel: each patch takes one translation where
  // this warp's flow changes by up to 0.15 px per px, and its bilinear matching is biased by a
  // few hundredths on this texture; the variational stage, which works per pixel, halves that.
  {
    const Stats s = epe(warp, refine(warp, warp.gt, d));
    report(s.median < 0.1 && s.pck1 >= 0.999, "smooth warp, exact seed", describe(s));
    DisOptions o = d;
    o.var_iters = 0;
    const Stats s2 = epe(warp, refine(warp, warp.gt, o));
    report(s2.median < 0.15 && s2.pck1 >= 0.999 && s.median < s2.median,
           "smooth warp, exact seed, var_iters=0 (worse than with it)", describe(s2));
  }
  // The result does not depend on the thread count (bit for bit).
  {
    const std::vector<float> seed = make_seed(warp, 1.7, 0.3, 25);
    const std::vector<float> one = refine(warp, seed, d, 1), all = refine(warp, seed, d, 0);
    report(one == all, "threads=1 and threads=all give identical flows", "");
  }
  // The 8-lane AVX2 kernels (where the CPU has them) against the portable 4-lane ones: the same
  // operations, rounded differently (FMA, summation order), so only where a rounding flips a
  // discrete choice (a patch's best step, its stop) do they differ, by at most about the 0.01 px
  // stopping threshold. Compared where the true match lies inside b: beyond b's border nothing
  // constrains the flow, and there such flips grow (up to a pixel seen in an -O1 build).
  {
    const std::vector<float> seed = make_seed(warp, 1.7, 0.3, 26);
    const std::vector<float> wide = refine(warp, seed, d);
    gocor::corr_detail::simd_force(gocor::corr_detail::Simd::Portable);
    const std::vector<float> portable = refine(warp, seed, d);
    gocor::corr_detail::simd_unforce();
    const size_t P = size_t(warp.H) * warp.W;
    std::vector<double> diff;
    for (size_t i = 0; i < P; ++i) {
      if (!warp.valid[i]) continue;
      for (size_t k : {i, P + i}) diff.push_back(std::fabs(double(wide[k]) - portable[k]));
    }
    std::sort(diff.begin(), diff.end());
    const double worst = diff.back(), p99 = diff[diff.size() * 99 / 100];
    char buf[120];
    std::snprintf(buf, sizeof(buf), "max |diff| = %.3g px, 99th percentile %.3g px", worst, p99);
    report(worst < 0.02 && p99 < 1e-3, "8-lane (AVX2) and 4-lane (portable) kernels agree", buf);
  }
  // The inverse-compositional patch search against float64 forward-additive Lucas-Kanade: same
  // patch, same start, same mean-normalised SSD; both converge to one displacement. The texture is
  // smoother than above (8 px cells): where b has detail near the pixel scale, bilinear
  // interpolation leaves a residual at the match, and the two methods, which linearise with
  // different gradients (a's, b's warped), stop at fixed points up to ~0.03 px apart.
  {
    const Pair p = make_translation(Texture(8.0, 7), H, W, 3.4, -1.7);
    const int starts[5][2] = {{20, 20}, {60, 33}, {101, 70}, {37, 52}, {80, 15}};
    const float offs[5][2] = {
        {0.9f, -0.6f}, {-0.7f, 0.8f}, {0.5f, 0.5f}, {-1.0f, -0.3f}, {0.2f, -0.9f}};
    double worst = 0, worst_truth = 0;
    for (int k = 0; k < 5; ++k) {
      float uv[2] = {3.4f + offs[k][0], -1.7f + offs[k][1]};
      double u = uv[0], v = uv[1];
      gocor::dis_patch_search(p.a.data(), p.H, p.W, p.b.data(), p.Hb, p.Wb, starts[k][0],
                              starts[k][1], d, uv);
      lk_forward_additive(p, starts[k][0], starts[k][1], d.patch_size, &u, &v);
      worst = std::max(worst, std::hypot(uv[0] - u, uv[1] - v));
      worst_truth = std::max(worst_truth, std::hypot(uv[0] - 3.4, uv[1] + 1.7));
    }
    char buf[120];
    std::snprintf(buf, sizeof(buf), "max |IC - FA| = %.4f px, max |IC - truth| = %.4f px", worst,
                  worst_truth);
    report(worst < 0.02 && worst_truth < 0.1,
           "patch search vs float64 forward-additive LK (5 patches)", buf);
  }
}

// The calling thread's CPU time in ms: robust to other load on the machine (bench/README.md).
double thread_cpu_ms() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return double(t.tv_sec) * 1e3 + double(t.tv_nsec) * 1e-6;
}

void print_timing(bool quick) {
  if (quick) return;
  const Texture tex(4.0, 9);
  const Pair p = make_smooth_warp(tex, 436, 1024);
  const std::vector<float> seed = make_seed(p, 1.7, 0.3, 31);
  for (int var : {DisOptions{}.var_iters, 0}) {
    DisOptions o;
    o.var_iters = var;
    double best = 1e30;
    Stats s;
    for (int rep = 0; rep < 5; ++rep) {
      std::vector<float> flow = seed;
      const double t0 = thread_cpu_ms();
      gocor::flow_refine_dis_cpu(p.a.data(), p.H, p.W, p.b.data(), p.Hb, p.Wb, flow.data(), o,
                                 Exec{gocor::Device::Cpu, 1, nullptr});
      best = std::min(best, thread_cpu_ms() - t0);
      s = epe(p, flow);
    }
    std::printf(
        "TIME 1024x436, one thread, defaults with var_iters=%d: %.1f ms CPU (best of 5); %s\n", var,
        best, describe(s).c_str());
  }
}

// Spatial propagation: one scale, a translation of (13, -9) px (beyond the patch, so the search
// from zero flow cannot reach it), the seed right only in the 16 leftmost columns. With
// propagation the right flow spreads along every row (the forward sweep) and the search settles
// it; without, the patches away from the seeded columns stay wrong. The propagated result is the
// same for one thread and two (stripes of fixed height).
void check_propagation() {
  const Texture tex(3.0, 91);
  const Pair p = make_translation(tex, 200, 240, 13.0, -9.0);
  const size_t P = size_t(p.H) * p.W;
  std::vector<float> seed(2 * P, 0.f);
  for (int y = 0; y < p.H; ++y)
    for (int x = 0; x < 16; ++x)
      seed[size_t(y) * p.W + x] = 13.f, seed[P + size_t(y) * p.W + x] = -9.f;
  DisOptions o;
  o.coarsest_scale = 0;
  o.finest_scale = 0;
  o.var_iters = 0;
  const Stats without = epe(p, refine(p, seed, o));
  o.spatial_propagation = true;
  const std::vector<float> one = refine(p, seed, o, 1), two = refine(p, seed, o, 2);
  const Stats with = epe(p, one);
  report(with.pck1 >= 0.95 && without.pck1 <= 0.3,
         "spatial propagation spreads a (13, -9) shift from the seeded left columns",
         "with: " + describe(with) + " | without: " + describe(without));
  report(one == two, "spatial propagation: one thread and two give the same flow", "");
  {
    const Pair q = make_translation(tex, 200, 240, 3.4, -1.7);
    const size_t Q = size_t(q.H) * q.W;
    std::vector<float> s2(2 * Q);
    for (size_t i = 0; i < Q; ++i) s2[i] = 3.f, s2[Q + i] = -2.f;
    DisOptions d;
    d.spatial_propagation = true;
    const Stats w = epe(q, refine(q, s2, d));
    d.spatial_propagation = false;
    const Stats wo = epe(q, refine(q, s2, d));
    report(w.median < 0.02 && w.median <= wo.median + 0.005,
           "spatial propagation keeps a sub-pixel translation (3.4, -1.7) exact, seed (3, -2)",
           "with: " + describe(w) + " | without: " + describe(wo));
  }
}

}  // namespace

int main() {
  const bool quick = std::getenv("GOCOR_TEST_QUICK") != nullptr;
  check_bad_input();
  check_shapes();
  check_numerics(quick);
  check_propagation();
  print_timing(quick);
  std::printf("%d passed, %d failed\n", g_pass, g_fail);
  return g_fail == 0 ? 0 : 1;
}
