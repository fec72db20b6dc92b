// Layer operations of the official networks (cpp/core/nn.h): the im2col convolution and the GEMM
// transposed convolution against their straightforward float64 twins (strides, dilations, batch
// norm, activations, tile boundaries), the warp against known shifts and the validity mask, the
// resizers against hand-computed values, max pooling, the L2 norm and mutual matching.
// Prints one line per check and "N passed, M failed"; exits non-zero on a failure.
#include <cmath>
#include <string>
#include <vector>

#include "nn.h"
#include "simd.h"
#include "support/gocor_ref64.h"
#include "support/harness.h"
#include "support/test_data.h"

namespace {

using gocor::nn::Act;
using gocor_test::compare;
using gocor_test::fmt;
using gocor_test::report;

gocor::nn::Conv make_conv(int out, int in, int k, int stride, int dil, Act act, bool bn,
                          uint64_t seed) {
  gocor::nn::Conv c;
  c.out = out;
  c.in = in;
  c.k = k;
  c.stride = stride;
  c.pad = k == 1 ? 0 : dil;
  c.dil = dil;
  c.act = act;
  c.weight = gocor_test::random_vec(size_t(out) * in * k * k, seed);
  c.bias = gocor_test::random_vec(size_t(out), seed + 1);
  if (bn) {
    std::vector<float> g = gocor_test::random_vec(out, seed + 2),
                       b = gocor_test::random_vec(out, seed + 3),
                       m = gocor_test::random_vec(out, seed + 4),
                       v = gocor_test::random_vec(out, seed + 5);
    for (float& x : g) x = 1.f + 0.1f * x;
    for (float& x : v) x = 1.f + 0.5f * x;
    gocor::nn::fold_batch_norm(c, g.data(), b.data(), m.data(), v.data());
  }
  return c;
}

void test_conv() {
  struct Case {
    int out, in, k, stride, dil, H, W;
    Act act;
    bool bn;
    int threads;
  };
  const Case cases[] = {
      {16, 3, 3, 2, 1, 37, 41, Act::Leaky, false, 1},   // PWC pyramid: stride 2, odd sizes
      {32, 117, 3, 1, 1, 24, 36, Act::Leaky, true, 2},  // decoder conv with batch norm
      {24, 40, 3, 1, 8, 30, 33, Act::Leaky, false, 1},  // dilation 8 (context network)
      {20, 16, 3, 1, 16, 20, 40, Act::None, false, 2},  // dilation larger than the image
      {64, 64, 3, 1, 1, 96, 120, Act::Relu, false, 2},  // several im2col tiles (depth 576)
      {2, 531, 3, 1, 1, 12, 18, Act::None, false, 1},   // predict_flow
      {8, 12, 1, 1, 1, 9, 13, Act::Relu, false, 1},     // 1x1 path
      // Winograd F(2x2, 3x3): odd sizes (partial tiles), dilations (tiles on the sub-grids, also
      // sub-grids of one pixel and images narrower than the dilation), channel counts that are
      // not multiples of the vector width, several channel and tile blocks, two threads.
      {13, 17, 3, 1, 1, 7, 5, Act::Leaky, false, 1},
      {128, 565, 3, 1, 1, 23, 37, Act::Leaky, false, 2},
      {33, 20, 3, 1, 2, 17, 19, Act::Leaky, true, 1},
      {96, 128, 3, 1, 8, 31, 45, Act::Leaky, true, 2},
      {17, 35, 3, 1, 16, 21, 11, Act::Relu, false, 1},
      {9, 16, 3, 1, 4, 1, 1, Act::None, false, 1},
      {40, 24, 3, 1, 2, 13, 29, Act::Leaky, true, 2},
      {64, 64, 3, 1, 1, 96, 120, Act::Relu, false, 2},
      // Several bands of rows (each band's input rows permuted into an 8 MiB scratch), at
      // dilations 1 and 2 (bands per row residue).
      {16, 512, 3, 1, 1, 64, 140, Act::Leaky, false, 2},
      {16, 512, 3, 1, 2, 64, 140, Act::Leaky, true, 1},
      // One or two output channels: the direct loops (rows of several vector groups, dilation;
      // the last in two bands of padded rows).
      {2, 32, 3, 1, 1, 33, 150, Act::None, false, 2},
      {1, 40, 3, 1, 4, 19, 70, Act::Leaky, true, 1},
      {2, 565, 3, 1, 1, 40, 150, Act::None, false, 2},
  };
  for (const Case& c : cases) {
    gocor::nn::Conv cv = make_conv(c.out, c.in, c.k, c.stride, c.dil, c.act, c.bn, 100 + c.in);
    const std::vector<float> x = gocor_test::random_vec(size_t(c.in) * c.H * c.W, 7 + c.out);
    const int Ho = gocor::nn::conv_out_size(c.H, c.k, c.stride, cv.pad, c.dil),
              Wo = gocor::nn::conv_out_size(c.W, c.k, c.stride, cv.pad, c.dil);
    std::vector<float> got(size_t(c.out) * Ho * Wo), ref(got.size());
    gocor::nn::conv2d_naive(cv, x.data(), c.H, c.W, ref.data());
    // float32 sums of in*k*k products of magnitude <= 1: rounding ~ sqrt(depth) * 2^-24 * |sum|.
    const double tol = 1e-6 * std::sqrt(double(c.in * c.k * c.k)) * 8;
    // Every path: im2col, then (stride 1) the per-tap GEMMs on shifted views and, where the
    // layer qualifies, Winograd.
    const bool wino = gocor::nn::conv_uses_winograd(cv);
    for (int path = 0; path < (c.stride == 1 ? 2 + int(wino) : 1); ++path) {
      const gocor::Exec ex{gocor::Device::Cpu, c.threads, nullptr};
      gocor::nn::conv2d_path_cpu(cv, gocor::nn::ConvPath(path), x.data(), c.H, c.W, got.data(), ex);
      const gocor_test::Cmp r = compare(got, ref, {tol, 1e-5});
      report(r.ok,
             fmt("conv2d %s out=%d in=%d k=%d s=%d d=%d %dx%d bn=%d",
                 path == 2    ? "winograd"
                 : path == 0  ? "im2col"
                 : c.out <= 2 ? "direct"
                              : "taps",
                 c.out, c.in, c.k, c.stride, c.dil, c.H, c.W, int(c.bn)),
             fmt("max |diff| %.2e (tol %.1e)", r.max_abs, tol));
    }
  }
}

void test_deconv() {
  struct Case {
    int in, out, H, W, threads;
  };
  const Case cases[] = {{2, 2, 6, 9, 1}, {529, 2, 6, 9, 2}, {531, 2, 48, 72, 1}, {5, 7, 3, 1, 1}};
  for (const Case& c : cases) {
    const std::vector<float> w = gocor_test::random_vec(size_t(c.in) * c.out * 16, 3 + c.in),
                             b = gocor_test::random_vec(size_t(c.out), 4),
                             x = gocor_test::random_vec(size_t(c.in) * c.H * c.W, 5);
    gocor::nn::Deconv d;
    d.in = c.in;
    d.out = c.out;
    d.bias = b;
    gocor::nn::set_deconv_weight(d, w.data());
    std::vector<float> got(size_t(c.out) * 4 * c.H * c.W), ref(got.size());
    gocor::nn::conv_transpose2d_cpu(d, x.data(), c.H, c.W, got.data(),
                                    gocor::Exec{gocor::Device::Cpu, c.threads, nullptr});
    gocor::nn::conv_transpose2d_naive(w.data(), b.data(), c.in, c.out, x.data(), c.H, c.W,
                                      ref.data());
    const double tol = 1e-6 * std::sqrt(double(c.in) * 4) * 8;
    const gocor_test::Cmp r = compare(got, ref, {tol, 1e-5});
    report(r.ok, fmt("conv_transpose2d in=%d out=%d %dx%d", c.in, c.out, c.H, c.W),
           fmt("max |diff| %.2e (tol %.1e)", r.max_abs, tol));
  }
}

void test_warp() {
  const int C = 3, H = 7, W = 9;
  const std::vector<float> x = gocor_test::random_vec(size_t(C) * H * W, 11);
  auto at = [&](int c, int y, int xx) { return x[(size_t(c) * H + y) * W + xx]; };
  // Integer shift (+2, -1): interior samples equal the shifted input, the rest is zero.
  std::vector<float> flow(size_t(2) * H * W), out(x.size());
  for (int p = 0; p < H * W; ++p) {
    flow[p] = 2.f;
    flow[H * W + p] = -1.f;
  }
  for (int mask = 0; mask < 2; ++mask) {
    gocor::nn::warp_cpu(x.data(), flow.data(), C, H, W, mask != 0, out.data(), gocor::Exec{});
    double worst = 0;
    for (int c = 0; c < C; ++c)
      for (int y = 0; y < H; ++y)
        for (int xx = 0; xx < W; ++xx) {
          const bool in = xx + 2 < W && y - 1 >= 0;
          const double want = in ? at(c, y - 1, xx + 2) : 0.0;
          worst = std::max(worst, std::fabs(out[(size_t(c) * H + y) * W + xx] - want));
        }
    report(worst < 1e-6, fmt("warp integer shift (mask %d)", mask), fmt("max |diff| %.2e", worst));
  }
  // Half-pixel shift right: the mean of two neighbours inside; at the last column one corner is
  // outside: without the mask half its value, with the mask zero.
  for (int p = 0; p < H * W; ++p) {
    flow[p] = 0.5f;
    flow[H * W + p] = 0.f;
  }
  gocor::nn::warp_cpu(x.data(), flow.data(), C, H, W, false, out.data(), gocor::Exec{});
  const double mid = std::fabs(out[3 * W + 4] - 0.5 * (at(0, 3, 4) + at(0, 3, 5)));
  const double edge = std::fabs(out[3 * W + W - 1] - 0.5 * at(0, 3, W - 1));
  report(mid < 1e-6 && edge < 1e-6, "warp half-pixel shift, no mask", fmt("%.2e %.2e", mid, edge));
  gocor::nn::warp_cpu(x.data(), flow.data(), C, H, W, true, out.data(), gocor::Exec{});
  report(out[3 * W + W - 1] == 0.f &&
             std::fabs(out[3 * W + 4] - 0.5 * (at(0, 3, 4) + at(0, 3, 5))) < 1e-6,
         "warp half-pixel shift, mask zeroes the partial sample");
}

void test_resize() {
  // 2 -> 4 bilinear (align_corners False): source positions -0.25 (clamped 0), 0.25, 0.75, 1.25.
  const float in[2] = {1.f, 3.f};
  float out[4];
  gocor::nn::resize_bilinear_cpu(in, 1, 1, 2, out, 1, 4, gocor::Exec{});
  report(out[0] == 1.f && out[1] == 1.5f && out[2] == 2.5f && out[3] == 3.f,
         "resize_bilinear 1x2 -> 1x4", fmt("%g %g %g %g", out[0], out[1], out[2], out[3]));
  // Area 5 -> 2: windows [0, 3) and [2, 5) (floor / ceil of i * 5 / 2).
  const float a[5] = {1, 2, 3, 4, 5};
  float b[2];
  gocor::nn::resize_area_cpu(a, 1, 1, 5, b, 1, 2, gocor::Exec{});
  report(b[0] == 2.f && b[1] == 4.f, "resize_area 1x5 -> 1x2", fmt("%g %g", b[0], b[1]));
  const float m[8] = {1, 5, 2, 0, 3, 4, -1, 9};
  float q[2];
  gocor::nn::maxpool2_cpu(m, 1, 2, 4, q, gocor::Exec{});
  report(q[0] == 5.f && q[1] == 9.f, "maxpool2 2x4", fmt("%g %g", q[0], q[1]));
}

void test_norms() {
  float x[4] = {3.f, 1.f, 4.f, 0.f};  // (C = 2, 1 x 2): pixel 0 = (3, 4), pixel 1 = (1, 0)
  gocor::nn::l2norm_channels_cpu(x, 2, 1, 2, gocor::Exec{});
  const double e0 = std::fabs(x[0] - 3.0 / std::sqrt(25.0 + 1e-6)) +
                    std::fabs(x[2] - 4.0 / std::sqrt(25.0 + 1e-6));
  report(e0 < 1e-7 && std::fabs(x[1] - 1.0 / std::sqrt(1.0 + 1e-6)) < 1e-7, "l2norm_channels",
         fmt("%.2e", e0));
  // Mutual matching on M[t][r] = [[2, 1], [4, 8]]: row maxima 2, 8; column maxima 4, 8.
  float v[4] = {2.f, 1.f, 4.f, 8.f};
  gocor::nn::mutual_matching_cpu(v, 2, gocor::Exec{});
  const double want[4] = {2.0 * (2 / 2.00001) * (2 / 4.00001), 1.0 * (1 / 2.00001) * (1 / 8.00001),
                          4.0 * (4 / 8.00001) * (4 / 4.00001), 8.0 * (8 / 8.00001) * (8 / 8.00001)};
  double worst = 0;
  for (int i = 0; i < 4; ++i) worst = std::max(worst, std::fabs(v[i] - want[i]) / want[i]);
  report(worst < 1e-6, "mutual_matching", fmt("max rel diff %.2e", worst));
}

// The float64 local GOCor of the networks against the float64 reference of the test support
// (written independently from the same specification): trained-looking parameters, sizes with a
// border wider than the search radius and narrower than it.
void test_gocor_local_f64() {
  struct Case {
    int C, H, W, iters;
  };
  const Case cases[] = {{32, 12, 18, 3}, {7, 3, 5, 2}, {64, 6, 9, 7}};
  for (const Case& c : cases) {
    gocor::LocalGocorParams p = gocor::default_local_params();
    p.scaling = 0.8f;
    p.log_step_length = -0.3f;
    p.filter_reg = 0.05f;
    const std::vector<float> r = gocor_test::random_vec(size_t(c.C) * c.H * c.W, 21 + c.C);
    std::vector<float> q = gocor_test::random_vec(r.size(), 22 + c.C);
    for (size_t i = 0; i < q.size(); ++i) q[i] = 0.7f * r[i] + 0.3f * q[i];
    gocor::LocalGocorOptions o;
    o.num_iter = c.iters;
    std::vector<double> ref, filter;
    gocor_ref::gocor_local_ref64(p, o, r.data(), q.data(), 1, c.C, c.H, c.W, &ref, &filter,
                                 nullptr);
    using gocor::simd::Simd;
    for (Simd level : {Simd::Portable, Simd::Avx2, Simd::Avx512}) {
      if (level > gocor::simd::simd_detected()) continue;
      gocor::simd::simd_force(level);
      std::vector<float> got(size_t(81) * c.H * c.W);
      gocor::nn::gocor_local_f64_cpu(p, c.iters, r.data(), q.data(), got.data(), c.C, c.H, c.W,
                                     gocor::Exec{gocor::Device::Cpu, 2, nullptr});
      gocor::simd::simd_unforce();
      // float64 throughout, one rounding to float32 at the end.
      const gocor_test::Cmp cmp = compare(got, ref, {1e-7, 1e-6});
      report(cmp.ok,
             fmt("gocor_local_f64 simd=%d C=%d %dx%d K=%d", int(level), c.C, c.H, c.W, c.iters),
             fmt("max |diff| %.2e", cmp.max_abs));
    }
  }
}

}  // namespace

int main() {
  test_gocor_local_f64();
  test_conv();
  test_deconv();
  test_warp();
  test_resize();
  test_norms();
  return gocor_test::finish();
}
