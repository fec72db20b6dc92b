// The kernels of flow_interpolate_cuda and flow_refine_dis_cuda run on the CPU (emulate.sh builds
// them as host code) against their CPU twins on the parity table's kinds of input: a check of the
// twins' logic and rounding order that needs no GPU. Expected: flow_interpolate identical but for
// a fit weight's last bit (exp), flow_refine_dis identical to the CPU at its portable SIMD level.
#include <cmath>
#include <cstdio>
#include <vector>

#include "corr_kernels.h"
#include "dis.h"
#include "gocor_cuda.h"
#include "interpolate.h"
#include "support/harness.h"
#include "support/test_data.h"

using namespace gocor;
using gocor_test::fmt;
using gocor_test::report;

namespace {

// Noise blurred by a 5x5 box twice, stretched to [0, 1].
std::vector<float> image(int C, int H, int W, uint64_t seed) {
  gocor_test::Rng r{seed};
  std::vector<float> v((size_t)C * H * W), t(v.size());
  for (float& x : v) x = float(r.normal());
  for (int pass = 0; pass < 2; ++pass, v.swap(t))
    for (int c = 0; c < C; ++c)
      for (int y = 0; y < H; ++y)
        for (int x = 0; x < W; ++x) {
          double s = 0;
          int n = 0;
          for (int yy = std::max(0, y - 2); yy <= std::min(H - 1, y + 2); ++yy)
            for (int xx = std::max(0, x - 2); xx <= std::min(W - 1, x + 2); ++xx, ++n)
              s += v[((size_t)c * H + yy) * W + xx];
          t[((size_t)c * H + y) * W + x] = float(s / n);
        }
  float lo = v[0], hi = v[0];
  for (float x : v) lo = std::min(lo, x), hi = std::max(hi, x);
  for (float& x : v) x = (x - lo) / (hi - lo);
  return v;
}

// Identical elements, and the largest difference, which must stay within max_abs.
void check(const std::string& name, const std::vector<float>& got, const std::vector<float>& ref,
           double max_abs) {
  size_t same = 0;
  double worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    same += got[i] == ref[i];
    worst = std::max(worst, std::fabs(double(got[i]) - ref[i]));
  }
  report(worst <= max_abs,
         fmt("%-48s %zu/%zu identical, max|d| %.3g", name.c_str(), same, ref.size(), worst));
}

// Two motions either side of a brightness step at x = 3W/5, 0.2 px noise, `untrusted` of the
// pixels and a rectangle across the step untrusted.
void interpolate_case(int C, int H, int W, double untrusted, InterpOptions o, uint64_t seed) {
  std::vector<float> img = image(C, H, W, seed);
  gocor_test::Rng r{seed + 1};
  const size_t N = (size_t)H * W;
  std::vector<float> flow(2 * N), cpu(2 * N), emu(2 * N);
  std::vector<uint8_t> valid(N);
  const int edge = 3 * W / 5;
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      const size_t i = (size_t)y * W + x;
      const bool right = x >= edge;
      for (int c = 0; c < C && right; ++c) img[c * N + i] = 0.7f * img[c * N + i] + 0.3f;
      flow[i] = float(0.2 * r.normal() + (right ? -4.5 : 2.25) + 0.01 * y);
      flow[N + i] = float(0.2 * r.normal() + (right ? 1.5 : -3.25) - 0.02 * x);
      const bool hole = y > H / 4 && y < H / 2 && x > edge - W / 8 && x < edge + W / 10;
      valid[i] = !hole && r.uniform() >= untrusted;
    }
  flow_interpolate(img.data(), C, H, W, flow.data(), valid.data(), cpu.data(), o, Exec{});
  flow_interpolate_cuda(img.data(), C, H, W, flow.data(), valid.data(), emu.data(), o, Exec{});
  check(fmt("flow_interpolate C%d %dx%d stride %d K%d", C, H, W, o.seed_stride, o.num_neighbors),
        emu, cpu, 6.1e-5);
}

// b = a moved by (dx, dy) (bilinear, border clamped), seed = truth + 1 px noise.
void dis_case(int H, int W, float dx, float dy, const DisOptions& o, uint64_t seed) {
  const std::vector<float> a = image(1, H, W, seed);
  std::vector<float> b(a.size()), seed_flow(2 * a.size());
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      const float sx = std::clamp(x - dx, 0.f, W - 1.f), sy = std::clamp(y - dy, 0.f, H - 1.f);
      const int x0 = std::min(int(sx), W - 2), y0 = std::min(int(sy), H - 2);
      const float fx = sx - x0, fy = sy - y0;
      auto at = [&](int yy, int xx) { return a[(size_t)yy * W + xx]; };
      b[(size_t)y * W + x] = (1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x0 + 1)) +
                             fy * ((1 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1));
    }
  gocor_test::Rng r{seed + 1};
  for (size_t i = 0; i < seed_flow.size(); ++i)
    seed_flow[i] = float((i < a.size() ? dx : dy) + r.normal());
  std::vector<float> cpu = seed_flow, emu = seed_flow;
  corr_detail::simd_force(corr_detail::Simd::Portable);
  flow_refine_dis(a.data(), H, W, b.data(), H, W, cpu.data(), o, Exec{});
  corr_detail::simd_unforce();
  flow_refine_dis_cuda(a.data(), H, W, b.data(), H, W, emu.data(), o, Exec{});
  check(fmt("flow_refine_dis %dx%d patch %d var %d (vs portable)", H, W, o.patch_size, o.var_iters),
        emu, cpu, 0);
}

}  // namespace

int main() {
  interpolate_case(3, 61, 83, 0.1, InterpOptions{}, 110);
  interpolate_case(1, 40, 29, 0.1, InterpOptions{3, 8, 0.1f, false, 0.f}, 111);
  interpolate_case(1, 37, 45, 0.7, InterpOptions{1, 16, 0.1f, true, 2.f}, 112);
  interpolate_case(3, 256, 320, 0.05, InterpOptions{}, 113);
  interpolate_case(1, 19, 23, 1.0, InterpOptions{}, 114);
  dis_case(64, 80, 2.3f, -1.4f, DisOptions{}, 120);
  dis_case(97, 131, -3.6f, 2.2f, DisOptions{3, 1, 6, 3, 16, 0}, 121);
  dis_case(256, 320, 5.5f, 3.25f, DisOptions{}, 122);
  return gocor_test::finish();
}
