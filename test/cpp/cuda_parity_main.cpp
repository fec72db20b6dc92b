// CUDA backend parity: every CUDA entry point against its CPU twin (the oracle), on seeded inputs
// with odd and non-square sizes, batch > 1, radii up to 7 and the GOCor query term on and off;
// small GOCor cases also against the float64 reference. Without a usable GPU it checks the
// no-device contract instead (probe says unavailable, Device::Cuda throws CudaUnavailable,
// Device::Auto computes on the CPU), prints "CUDA unavailable: <reason>" and exits 0.
//
// Volume tolerance (spec 12): |cuda - cpu| <= 2e-5 + 1e-4 |cpu|; filters 1e-4 + 1e-4 |cpu|.
// Each line also prints the normalised MSE sum (cuda - cpu)^2 / sum cpu^2.
// Final line: "N passed, M failed"; the exit status is 1 when anything failed.
#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "common.h"
#include "correlation.h"
#include "dense_features.h"
#include "dispatch.h"
#include "flow.h"
#include "gocor.h"
#include "gocor_cuda.h"
#include "match.h"
#include "support/gocor_ref64.h"
#include "support/test_data.h"

using namespace gocor;

namespace {

using gocor_test::l2_normalise;

int g_passed = 0, g_failed = 0;

void report(bool ok, const std::string& line) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", line.c_str());
  std::fflush(stdout);
  (ok ? g_passed : g_failed)++;
}

// Deterministic N(0,1)-ish data (splitmix64 + Box-Muller).
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 7) {}
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return (static_cast<double>(next() >> 11) + 1.0) / 9007199254740992.0; }
  double normal() {
    return std::sqrt(-2.0 * std::log(uniform())) * std::cos(6.283185307179586 * uniform());
  }
};

std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.f) {
  Rng r(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(r.normal()) * scale;
  return v;
}

struct Cmp {
  double max_abs = 0, worst_ratio = 0, nmse = 0;
  bool ok = true;
};

// Element-wise |a - ref| <= abs_tol + rel_tol |ref|; worst_ratio is max |a-ref| / allowed.
template <typename T>
Cmp compare(const std::vector<float>& a, const std::vector<T>& ref, double abs_tol,
            double rel_tol) {
  Cmp c;
  double se = 0, sr = 0;
  if (a.size() != ref.size()) {
    c.ok = false;
    return c;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    const double r = ref[i], d = std::fabs(double(a[i]) - r);
    if (!(d <= abs_tol + rel_tol * std::fabs(r))) c.ok = false;  // NaN fails too
    c.max_abs = std::max(c.max_abs, d);
    c.worst_ratio = std::max(c.worst_ratio, d / (abs_tol + rel_tol * std::fabs(r)));
    se += d * d;
    sr += r * r;
  }
  c.nmse = sr > 0 ? se / sr : se;
  return c;
}

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

void report_cmp(const std::string& name, const Cmp& c) {
  report(c.ok, fmt("%-58s max|d|=%.3g worst/tol=%.3f nmse=%.3g", name.c_str(), c.max_abs,
                   c.worst_ratio, c.nmse));
}

// Runs fn, reporting a failure (instead of dying) when it throws.
bool guarded(const std::string& name, const std::function<void()>& fn) {
  try {
    fn();
    return true;
  } catch (const std::exception& e) {
    report(false, name + ": threw " + e.what());
    return false;
  }
}

bool throws_code(const std::function<void()>& fn, ErrorCode code, std::string* what) {
  try {
    fn();
  } catch (const Error& e) {
    *what = e.what();
    return e.code() == code;
  } catch (const std::exception& e) {
    *what = e.what();
    return false;
  }
  *what = "(no exception)";
  return false;
}

// ---- no-GPU contract (runs everywhere) ---------------------------------------------------------

int run_unavailable(const CudaInfo& info) {
  report(!info.available && !info.reason.empty(),
         "cuda_info(): available=false with a reason (" + info.reason + ")");
  const CorrGlobalShape s{2, 5, 3, 4, 2, 3};
  const auto ref = randn((size_t)s.B * s.C * s.H * s.W, 1),
             q = randn((size_t)s.B * s.C * s.Hq * s.Wq, 2);
  std::vector<float> out((size_t)s.B * s.Hq * s.Wq * s.H * s.W), expect(out.size());
  std::string what;
  Exec cuda_ex;
  cuda_ex.device = Device::Cuda;
  bool thrown = throws_code([&] { corr_global(ref.data(), q.data(), out.data(), s, cuda_ex); },
                            ErrorCode::CudaUnavailable, &what);
  report(thrown, "corr_global(Device::Cuda) throws CudaUnavailable: " + what);
  std::vector<float> lvol((size_t)2 * 9 * 3 * 4);
  thrown = throws_code(
      [&] {
        gocor_local(default_local_params(), LocalGocorOptions{1, 1}, ref.data(), ref.data(),
                    lvol.data(), nullptr, 2, 5, 3, 4, cuda_ex, nullptr);
      },
      ErrorCode::CudaUnavailable, &what);
  report(thrown, "gocor_local(Device::Cuda) throws CudaUnavailable: " + what);
  report(resolve_device(Device::Auto) == Device::Cpu, "resolve_device(Auto) == Cpu");
  Exec auto_ex;
  auto_ex.device = Device::Auto;
  bool ok = guarded("corr_global(Device::Auto)",
                    [&] { corr_global(ref.data(), q.data(), out.data(), s, auto_ex); });
  if (ok) {
    corr_global_naive(ref.data(), q.data(), expect.data(), s);
    report_cmp("corr_global(Device::Auto) computes on the CPU", compare(out, expect, 1e-6, 1e-6));
  }
#ifdef GOCOR_WITH_CUDA
  CudaInfo probe = cuda_probe();
  report(probe.compiled && !probe.available && probe.reason == info.reason,
         "cuda_probe(): compiled, unavailable, cached reason");
  thrown = throws_code([&] { corr_global_cuda(ref.data(), q.data(), out.data(), s, Exec{}); },
                       ErrorCode::CudaUnavailable, &what);
  report(thrown, "corr_global_cuda() without a device throws CudaUnavailable: " + what);
  const auto img = randn(3 * 20 * 24, 3);
  std::vector<float> feat((size_t)kFeatureChannels * 5 * 6);
  thrown = throws_code(
      [&] {
        features_compute_cuda(ImageView{img.data(), 3, 20, 24}, 5, 6, 4, feat.data(), Exec{});
      },
      ErrorCode::CudaUnavailable, &what);
  report(thrown, "features_compute_cuda() without a device throws CudaUnavailable: " + what);
  const FlowGrid g{3, 4, 1, 1};
  std::vector<float> vol(12 * 12, 0.f), fl(2 * 12, 0.f);
  thrown = throws_code([&] { global_consistency_fill_cuda(vol.data(), g, g, fl.data(), Exec{}); },
                       ErrorCode::CudaUnavailable, &what);
  report(thrown, "global_consistency_fill_cuda() without a device throws CudaUnavailable: " + what);
  thrown = throws_code(
      [&] {
        flow_refine_photometric_cuda(vol.data(), 6, 12, vol.data(), 12, 6, vol.data(), 1, 7,
                                     Exec{});
      },
      ErrorCode::CudaUnavailable, &what);
  report(thrown, "flow_refine_photometric_cuda() without a device throws CudaUnavailable: " + what);
#endif
  std::printf("CUDA unavailable: %s\n", info.reason.c_str());
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}

#ifdef GOCOR_WITH_CUDA

// ---- plain correlation -------------------------------------------------------------------------

void case_corr_global(const CorrGlobalShape& s, uint64_t seed) {
  const auto ref = randn((size_t)s.B * s.C * s.H * s.W, seed);
  const auto q = randn((size_t)s.B * s.C * s.Hq * s.Wq, seed + 1);
  std::vector<float> cpu((size_t)s.B * s.Hq * s.Wq * s.H * s.W), gpu(cpu.size(), NAN);
  const std::string name = fmt("corr_global B%d C%d %dx%d q%dx%d", s.B, s.C, s.H, s.W, s.Hq, s.Wq);
  if (!guarded(name, [&] { corr_global_cuda(ref.data(), q.data(), gpu.data(), s, Exec{}); }))
    return;
  corr_global_cpu(ref.data(), q.data(), cpu.data(), s, Exec{});
  // Raw N(0,1) features: products are O(sqrt(C)), so scale the absolute part by sqrt(C).
  report_cmp(name, compare(gpu, cpu, 2e-5 * std::sqrt(double(s.C)), 1e-4));
}

void case_corr_local(const CorrLocalShape& s, uint64_t seed) {
  const auto ref = randn((size_t)s.B * s.C * s.H * s.W, seed);
  const auto q = randn(ref.size(), seed + 1);
  const size_t D = (size_t)(2 * s.R + 1) * (2 * s.R + 1);
  std::vector<float> cpu((size_t)s.B * D * s.H * s.W), gpu(cpu.size(), NAN);
  const std::string name = fmt("corr_local B%d C%d %dx%d R%d", s.B, s.C, s.H, s.W, s.R);
  if (guarded(name, [&] { corr_local_cuda(ref.data(), q.data(), gpu.data(), s, Exec{}); })) {
    corr_local_cpu(ref.data(), q.data(), cpu.data(), s, Exec{});
    report_cmp(name, compare(gpu, cpu, 2e-5, 1e-4));
  }
}

// ---- GOCor -------------------------------------------------------------------------------------

// Every parameter moved away from its initial value (as the conformance "perturbed" set does),
// with R_theta weights large enough that the query term matters.
GlobalGocorParams perturbed_global(int C, uint64_t seed) {
  GlobalGocorParams p = default_global_params(C, seed);
  Rng r(seed + 100);
  for (int k = 0; k < kNumDistBins; ++k) {
    p.dist.label[k] += static_cast<float>(0.1 * r.normal());
    p.dist.weight[k] = static_cast<float>(1.0 + 0.3 * r.normal());
    p.dist.mask_logit[k] += static_cast<float>(0.5 * r.normal());
  }
  for (auto& v : p.target_fg) v = static_cast<float>(1.0 + 0.1 * r.normal());
  for (auto& v : p.target_bg) v = static_cast<float>(0.05 * r.normal());
  for (auto& v : p.reg_weight1) v = static_cast<float>(0.3 * r.normal());
  for (auto& v : p.reg_weight2) v = static_cast<float>(0.1 * r.normal());
  p.log_step_length = -0.2f;
  p.filter_reg = 0.05f;
  p.steplength_reg = 0.1f;
  return p;
}

LocalGocorParams perturbed_local(uint64_t seed) {
  LocalGocorParams p = default_local_params();
  Rng r(seed + 200);
  for (int k = 0; k < kNumDistBins; ++k) {
    p.dist.label[k] += static_cast<float>(0.1 * r.normal());
    p.dist.weight[k] = static_cast<float>(1.0 + 0.3 * r.normal());
    p.dist.mask_logit[k] += static_cast<float>(0.5 * r.normal());
  }
  p.scaling = 0.8f;
  p.log_step_length = 0.1f;
  p.filter_reg = 0.05f;
  return p;
}

void compare_diag(const std::string& name, const std::vector<GocorIterDiag>& a,
                  const std::vector<GocorIterDiag>& b) {
  bool ok = a.size() == b.size();
  double worst = 0;
  auto rel = [](double x, double y) { return std::fabs(x - y) / (1e-6 + std::fabs(y)); };
  for (size_t i = 0; ok && i < a.size(); ++i) {
    ok = a[i].batch == b[i].batch && a[i].iter == b[i].iter;
    for (double r : {rel(a[i].loss_ref, b[i].loss_ref), rel(a[i].loss_query, b[i].loss_query),
                     rel(a[i].loss_reg, b[i].loss_reg), rel(a[i].grad_norm, b[i].grad_norm),
                     rel(a[i].alpha, b[i].alpha), rel(a[i].alpha_min, b[i].alpha_min),
                     rel(a[i].alpha_max, b[i].alpha_max)})
      worst = std::max(worst, r);
  }
  ok = ok && worst <= 1e-3;
  report(ok,
         fmt("%-58s entries=%zu worst rel=%.3g", (name + " diagnostics").c_str(), a.size(), worst));
}

void case_gocor_global(const std::string& tag, const GlobalGocorParams& p,
                       const GlobalGocorOptions& o, const GocorGlobalShape& s, uint64_t seed,
                       bool with_ref64) {
  const int N = s.H * s.W;
  auto ref = randn((size_t)s.B * s.C * N, seed), q = randn((size_t)s.B * s.C * N, seed + 1);
  l2_normalise(ref, s.B, s.C, N);
  l2_normalise(q, s.B, s.C, N);
  std::vector<float> vcpu((size_t)s.B * N * N), vgpu(vcpu.size(), NAN);
  std::vector<float> fcpu((size_t)s.B * N * s.C), fgpu(fcpu.size(), NAN);
  std::vector<GocorIterDiag> dcpu, dgpu;
  const std::string name = fmt("gocor_global %s B%d C%d %dx%d K%d q=%d", tag.c_str(), s.B, s.C, s.H,
                               s.W, o.num_iter, int(o.apply_query_loss));
  if (!guarded(name, [&] {
        gocor_global_cuda(p, o, ref.data(), q.data(), vgpu.data(), fgpu.data(), s, Exec{}, &dgpu);
      }))
    return;
  gocor_global_cpu(p, o, ref.data(), q.data(), vcpu.data(), fcpu.data(), s, Exec{}, &dcpu);
  report_cmp(name + " volume", compare(vgpu, vcpu, 2e-5, 1e-4));
  report_cmp(name + " filter", compare(fgpu, fcpu, 1e-4, 1e-4));
  compare_diag(name, dgpu, dcpu);
  if (with_ref64) {
    std::vector<double> v64, f64;
    gocor_ref::gocor_global_ref64(p, o, ref.data(), q.data(), s, &v64, &f64, nullptr);
    report_cmp(name + " volume vs float64", compare(vgpu, v64, 2e-5, 1e-4));
  }
}

void case_gocor_local(const std::string& tag, const LocalGocorParams& p, const LocalGocorOptions& o,
                      int B, int C, int H, int W, uint64_t seed, bool with_ref64) {
  const auto ref = randn((size_t)B * C * H * W, seed), q = randn(ref.size(), seed + 1);
  const int R = o.search_radius;
  const size_t D = (size_t)(2 * R + 1) * (2 * R + 1);
  std::vector<float> vcpu((size_t)B * D * H * W), vgpu(vcpu.size(), NAN);
  std::vector<float> fcpu(ref.size()), fgpu(ref.size(), NAN);
  std::vector<GocorIterDiag> dcpu, dgpu;
  const std::string name =
      fmt("gocor_local %s B%d C%d %dx%d R%d K%d", tag.c_str(), B, C, H, W, R, o.num_iter);
  if (!guarded(name, [&] {
        gocor_local_cuda(p, o, ref.data(), q.data(), vgpu.data(), fgpu.data(), B, C, H, W, Exec{},
                         &dgpu);
      }))
    return;
  gocor_local_cpu(p, o, ref.data(), q.data(), vcpu.data(), fcpu.data(), B, C, H, W, Exec{}, &dcpu);
  report_cmp(name + " volume", compare(vgpu, vcpu, 2e-5, 1e-4));
  report_cmp(name + " filter", compare(fgpu, fcpu, 1e-4, 1e-4));
  compare_diag(name, dgpu, dcpu);
  if (with_ref64) {
    std::vector<double> v64, f64;
    gocor_ref::gocor_local_ref64(p, o, ref.data(), q.data(), B, C, H, W, &v64, &f64, nullptr);
    report_cmp(name + " volume vs float64", compare(vgpu, v64, 2e-5, 1e-4));
  }
}

// Several host threads calling at once (each call has its own stream) get their own results.
void case_concurrent() {
  const int B = 2, C = 24, H = 19, W = 23;
  const LocalGocorParams p = perturbed_local(5);
  const LocalGocorOptions o{3, 3};
  const size_t D = 49;
  std::vector<std::vector<float>> refs, outs, expect;
  for (int i = 0; i < 4; ++i) {
    refs.push_back(randn((size_t)B * C * H * W, 900 + i));
    outs.emplace_back((size_t)B * D * H * W, NAN);
    expect.emplace_back((size_t)B * D * H * W);
  }
  std::vector<std::thread> th;
  std::vector<std::string> errors(4);
  for (int i = 0; i < 4; ++i)
    th.emplace_back([&, i] {
      try {
        gocor_local_cuda(p, o, refs[i].data(), refs[(i + 1) % 4].data(), outs[i].data(), nullptr, B,
                         C, H, W, Exec{}, nullptr);
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  for (auto& t : th) t.join();
  bool ok = true;
  double worst = 0;
  for (int i = 0; i < 4; ++i) {
    ok = ok && errors[i].empty();
    gocor_local_cpu(p, o, refs[i].data(), refs[(i + 1) % 4].data(), expect[i].data(), nullptr, B, C,
                    H, W, Exec{}, nullptr);
    Cmp c = compare(outs[i], expect[i], 2e-5, 1e-4);
    ok = ok && c.ok;
    worst = std::max(worst, c.worst_ratio);
  }
  report(ok, fmt("4 concurrent gocor_local_cuda calls match the CPU (worst/tol=%.3f)%s", worst,
                 errors[0].c_str()));
}

void case_errors() {
  std::string what;
  // 300000 x 300000 floats (360 GB) cannot be allocated: CudaOom, and the backend stays usable.
  const CorrGlobalShape huge{1, 1, 1, 300000, 1, 300000};
  std::vector<float> tiny_in(300000, 1.f), tiny_out(1);
  bool thrown = throws_code(
      [&] { corr_global_cuda(tiny_in.data(), tiny_in.data(), tiny_out.data(), huge, Exec{}); },
      ErrorCode::CudaOom, &what);
  report(thrown, "a 360 GB volume throws CudaOom: " + what);
  const CorrGlobalShape bad{1, 0, 2, 2, 2, 2};
  thrown = throws_code(
      [&] { corr_global_cuda(tiny_in.data(), tiny_in.data(), tiny_out.data(), bad, Exec{}); },
      ErrorCode::Shape, &what);
  report(thrown, "C = 0 throws Shape: " + what);
}

// ---- match stages ------------------------------------------------------------------------------
// These twins repeat the CPU's float32 operations in the CPU's order with explicitly rounded
// multiplies and adds (the CPU build has no FMA contraction) and use double where it does, so the
// expected difference is 0 in nearly every element. The bounds below are documented absolute
// ones: a few float32 ulps of the values involved (resampled images and descriptors are O(1),
// flows O(100) px), which a real indexing or formula error exceeds by orders of magnitude.

// A smooth random texture in [0, 1]: noise blurred by three box passes, contrast stretched.
std::vector<float> texture(int C, int H, int W, uint64_t seed) {
  std::vector<float> img = randn((size_t)C * H * W, seed);
  std::vector<float> tmp(img.size());
  for (int pass = 0; pass < 3; ++pass) {
    for (int c = 0; c < C; ++c)
      for (int y = 0; y < H; ++y)
        for (int x = 0; x < W; ++x) {
          double s = 0;
          for (int d = -2; d <= 2; ++d)
            s += img[((size_t)c * H + y) * W + std::min(std::max(x + d, 0), W - 1)];
          tmp[((size_t)c * H + y) * W + x] = float(s / 5);
        }
    for (int c = 0; c < C; ++c)
      for (int y = 0; y < H; ++y)
        for (int x = 0; x < W; ++x) {
          double s = 0;
          for (int d = -2; d <= 2; ++d)
            s += tmp[((size_t)c * H + std::min(std::max(y + d, 0), H - 1)) * W + x];
          img[((size_t)c * H + y) * W + x] = float(s / 5);
        }
  }
  for (auto& v : img) v = std::min(1.f, std::max(0.f, 0.5f + 1.5f * v));
  return img;
}

// b(x) = a(x - (dx, dy)) bilinearly (border clamped): the true flow a -> b is (dx, dy).
std::vector<float> shifted(const std::vector<float>& a, int C, int H, int W, double dx, double dy) {
  std::vector<float> b(a.size());
  for (int c = 0; c < C; ++c)
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) {
        double sx = std::min(std::max(x - dx, 0.0), W - 1.0),
               sy = std::min(std::max(y - dy, 0.0), H - 1.0);
        int x0 = std::min(int(sx), W - 2), y0 = std::min(int(sy), H - 2);
        double fx = sx - x0, fy = sy - y0;
        auto at = [&](int yy, int xx) { return double(a[((size_t)c * H + yy) * W + xx]); };
        b[((size_t)c * H + y) * W + x] =
            float((1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x0 + 1)) +
                  fy * ((1 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1)));
      }
  return b;
}

void case_image_resize(int C, int H, int W, int h, int w, uint64_t seed) {
  const auto src = texture(C, H, W, seed);
  std::vector<float> cpu((size_t)C * h * w), gpu(cpu.size(), NAN);
  const std::string name = fmt("image_resize C%d %dx%d -> %dx%d", C, H, W, h, w);
  if (!guarded(name, [&] { image_resize_cuda(src.data(), C, H, W, gpu.data(), h, w, Exec{}); }))
    return;
  image_resize(src.data(), C, H, W, cpu.data(), h, w, Exec{});
  report_cmp(name, compare(gpu, cpu, 1e-6, 0));
}

void case_features(int C, int H, int W, int Hf, int Wf, int cell, uint64_t seed) {
  const auto img = texture(C, H, W, seed);
  const ImageView v{img.data(), C, H, W};
  std::vector<float> cpu((size_t)kFeatureChannels * Hf * Wf), gpu(cpu.size(), NAN);
  const std::string name =
      fmt("features_compute C%d %dx%d -> %dx%d cell %d", C, H, W, Hf, Wf, cell);
  if (!guarded(name, [&] { features_compute_cuda(v, Hf, Wf, cell, gpu.data(), Exec{}); })) return;
  features_compute(v, Hf, Wf, cell, cpu.data(), Exec{});
  // features_compute ends with the zero-mean step (image mean descriptor subtracted, unit norm
  // again), so this covers it. Every operation is meant to be bit-identical (max|d| = 0 expected);
  // the bound is ~16 ulps of the unit-norm entries, and the line counts the differing entries.
  Cmp c = compare(gpu, cpu, 1e-6, 0);
  size_t differ = 0;
  for (size_t i = 0; i < cpu.size(); ++i) differ += !(gpu[i] == cpu[i]);
  // Zero-mean check on the CPU output itself (not a tautology: it fails if the step were dropped):
  // the channel means of renormalised zero-mean rows are ~0 against a typical entry of 1/sqrt(136).
  double worst_mean = 0;
  const size_t N = (size_t)Hf * Wf;
  for (int ch = 0; ch < kFeatureChannels; ++ch) {
    double m = 0;
    for (size_t n = 0; n < N; ++n) m += cpu[ch * N + n];
    worst_mean = std::max(worst_mean, std::fabs(m / N));
  }
  c.ok = c.ok && (N < 2 || worst_mean < 0.02);
  report(c.ok, fmt("%-58s max|d|=%.3g differing=%zu/%zu cpu max|channel mean|=%.3g", name.c_str(),
                   c.max_abs, differ, cpu.size(), worst_mean));
}

// match.cpp's global_consistency_fill against its GPU twin. The CPU function is private; the oracle
// is match_pyramids on pyramids holding only a global level of stride 1, whose output is exactly
// flow_from_global_volume + global_consistency_fill (resampling a grid onto itself reads one tap
// of weight 1). Features: b is a with its cells moved by (dx, dy) plus noise, and a share of b's
// cells replaced by unrelated ones, so some cells pass the cyclic check and others are filled.
void case_global_fill(int C, int H, int W, int dx, int dy, double junk, uint64_t seed) {
  const int N = H * W;
  auto fa = randn((size_t)C * N, seed);
  auto fb = randn((size_t)C * N, seed + 1, 0.3f);
  Rng r(seed + 2);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      if (r.uniform() < junk) continue;  // keep the unrelated noise cell
      const int sy = std::min(std::max(y - dy, 0), H - 1),
                sx = std::min(std::max(x - dx, 0), W - 1);
      for (int c = 0; c < C; ++c) fb[(size_t)c * N + y * W + x] += fa[(size_t)c * N + sy * W + sx];
    }
  l2_normalise(fa, 1, C, N);
  l2_normalise(fb, 1, C, N);
  const std::string name =
      fmt("global_consistency_fill C%d %dx%d shift (%d,%d) junk %.2f", C, H, W, dx, dy, junk);
  Exec cpu_ex;
  cpu_ex.device = Device::Cpu;
  const FlowGrid g{H, W, 1, 1};
  std::vector<float> vol((size_t)N * N), flow(2 * (size_t)N);
  corr_global(fa.data(), fb.data(), vol.data(), CorrGlobalShape{1, C, H, W, H, W}, cpu_ex);
  flow_from_global_volume(vol.data(), g, g, flow.data(), nullptr, cpu_ex);
  FeaturePyramid pa, pb;
  for (auto* pp : {&pa, &pb}) {
    pp->image_h = H;
    pp->image_w = W;
    FeatureLevel lv;
    lv.C = C;
    lv.H = H;
    lv.W = W;
    lv.global = true;
    lv.data = pp == &pa ? fa : fb;
    pp->levels.push_back(std::move(lv));
  }
  MatchOptions o;
  o.method = MatchMethod::Correlation;
  o.confidence = MatchConfidence::None;
  const MatchResult cpu = match_pyramids(pa, pb, o, cpu_ex);
  size_t filled = 0;
  for (size_t i = 0; i < flow.size(); ++i) filled += cpu.flow[i] != flow[i];
  std::vector<float> gpu = flow;
  if (!guarded(name, [&] { global_consistency_fill_cuda(vol.data(), g, g, gpu.data(), Exec{}); }))
    return;
  Cmp c = compare(gpu, cpu.flow, 0, 0);
  // The case must exercise the fill: some components replaced, not all.
  c.ok = c.ok && filled > 0 && filled < flow.size();
  report(c.ok, fmt("%-58s exact: max|d|=%.3g, %zu of %zu flow components filled", name.c_str(),
                   c.max_abs, filled, flow.size()));
}

void case_flow_stages(uint64_t seed) {
  Rng r(seed);
  const FlowGrid gb{13, 17, 2.5, 3.0}, ga{11, 19, 3.0, 2.8};
  const int C = 7;
  const size_t Na = (size_t)ga.H * ga.W, Nb = (size_t)gb.H * gb.W;
  const auto feat_b = randn(C * Nb, seed + 1), feat_a = randn(C * Na, seed + 2);
  std::vector<float> flow(2 * Na);
  for (auto& f : flow) f = float(8 * r.normal());  // some points land outside b
  {
    std::vector<float> cpu(C * Na), gpu(cpu.size(), NAN);
    if (guarded("flow_warp", [&] {
          flow_warp_cuda(feat_b.data(), C, gb, flow.data(), ga, gpu.data(), Exec{});
        })) {
      flow_warp(feat_b.data(), C, gb, flow.data(), ga, cpu.data(), Exec{});
      report_cmp("flow_warp C7 13x17 -> 11x19, flows +-8 px", compare(gpu, cpu, 1e-6, 1e-6));
    }
  }
  {
    const FlowGrid g2{23, 29, 1.3, 1.1};
    std::vector<float> cpu(2 * (size_t)g2.H * g2.W), gpu(cpu.size(), NAN);
    if (guarded("flow_resample",
                [&] { flow_resample_cuda(flow.data(), ga, gpu.data(), g2, Exec{}); })) {
      flow_resample(flow.data(), ga, cpu.data(), g2, Exec{});
      report_cmp("flow_resample 11x19 -> 23x29", compare(gpu, cpu, 1e-6, 1e-6));
    }
  }
  {
    std::vector<float> cpu = flow, gpu = flow;
    if (guarded("flow_median3", [&] { flow_median3_cuda(gpu.data(), ga.H, ga.W, Exec{}); })) {
      flow_median3(cpu.data(), ga.H, ga.W, Exec{});
      report_cmp("flow_median3 11x19 (exact)", compare(gpu, cpu, 0, 0));
    }
  }
  {
    // Global volume with a unique peak per reference cell and random neighbours around it.
    const size_t M = Nb;
    auto vol = randn(M * Na, seed + 3, 0.1f);
    for (size_t q = 0; q < Na; ++q) vol[(size_t)(r.next() % M) * Na + q] += 1.f;
    std::vector<float> cpu(2 * Na), gpu(cpu.size(), NAN), pc(Na), pg(Na, NAN);
    if (guarded("flow_from_global_volume", [&] {
          flow_from_global_volume_cuda(vol.data(), ga, gb, gpu.data(), pg.data(), Exec{});
        })) {
      flow_from_global_volume(vol.data(), ga, gb, cpu.data(), pc.data(), Exec{});
      // Flows are differences of pixel positions up to ~50 px: a few ulps of 50.
      report_cmp("flow_from_global_volume 11x19 <- 13x17 flow", compare(gpu, cpu, 1e-5, 0));
      report_cmp("flow_from_global_volume peak", compare(pg, pc, 0, 0));
    }
  }
  for (int R : {2, 4}) {
    const int H = 13, W = 17, D = (2 * R + 1) * (2 * R + 1);
    const auto vol = randn((size_t)D * H * W, seed + 10 + R);
    std::vector<float> cpu(2 * (size_t)H * W), gpu(cpu.size(), NAN), cc((size_t)H * W),
        cg(cc.size(), NAN);
    const std::string name = fmt("flow_from_local_volume R%d 13x17", R);
    if (guarded(name, [&] {
          flow_from_local_volume_cuda(vol.data(), R, H, W, gpu.data(), cg.data(), Exec{});
        })) {
      flow_from_local_volume(vol.data(), R, H, W, cpu.data(), cc.data(), Exec{});
      report_cmp(name + " residual", compare(gpu, cpu, 1e-6, 0));
      report_cmp(name + " confidence", compare(cg, cc, 1e-6, 0));
    }
  }
  {
    const int Hb = 21, Wb = 26, H = 19, W = 23;
    const auto img = texture(3, Hb, Wb, seed + 20);
    std::vector<float> fl(2 * (size_t)H * W);
    for (auto& f : fl) f = float(5 * r.normal());
    std::vector<float> cpu(3 * (size_t)H * W), gpu(cpu.size(), NAN), mc((size_t)H * W),
        mg(mc.size(), NAN);
    if (guarded("flow_warp_image", [&] {
          flow_warp_image_cuda(img.data(), 3, Hb, Wb, fl.data(), H, W, gpu.data(), mg.data(),
                               Exec{});
        })) {
      flow_warp_image(img.data(), 3, Hb, Wb, fl.data(), H, W, cpu.data(), mc.data(), Exec{});
      report_cmp("flow_warp_image C3 21x26 -> 19x23", compare(gpu, cpu, 1e-6, 0));
      report_cmp("flow_warp_image mask (exact)", compare(mg, mc, 0, 0));
    }
  }
  {
    // Real descriptors of a shifted texture, flows near the truth: the refinement's regime.
    const int H = 96, W = 112, Hf = 24, Wf = 28;
    const auto a = texture(1, H, W, seed + 30), b = shifted(a, 1, H, W, 3.4, -2.2);
    std::vector<float> fa((size_t)kFeatureChannels * Hf * Wf), fb(fa.size());
    features_compute(ImageView{a.data(), 1, H, W}, Hf, Wf, 4, fa.data(), Exec{});
    features_compute(ImageView{b.data(), 1, H, W}, Hf, Wf, 4, fb.data(), Exec{});
    const FlowGrid g{Hf, Wf, 4.0, 4.0};
    std::vector<float> f0(2 * (size_t)Hf * Wf);
    for (size_t i = 0; i < f0.size(); ++i)
      f0[i] = float((i < f0.size() / 2 ? 3.4 : -2.2) + 1.5 * r.normal());
    std::vector<float> cpu = f0, gpu = f0;
    if (guarded("flow_refine_symmetric", [&] {
          flow_refine_symmetric_cuda(fa.data(), g, fb.data(), g, kFeatureChannels, gpu.data(), 3,
                                     Exec{});
        })) {
      flow_refine_symmetric(fa.data(), g, fb.data(), g, kFeatureChannels, cpu.data(), 3, Exec{});
      report_cmp("flow_refine_symmetric C136 24x28 3 iterations", compare(gpu, cpu, 1e-5, 0));
    }
  }
  {
    // The pixel-level photometric refinement: a shifted texture, b of another size, flows within
    // 1.5 px of the truth, 3 rounds, radius 7 (match's).
    const int H = 71, W = 83, Hb = 66, Wb = 90;
    const auto src = texture(1, 80, 100, seed + 40);
    std::vector<float> a((size_t)H * W), b((size_t)Hb * Wb);
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) a[(size_t)y * W + x] = src[(size_t)y * 100 + x];
    const auto bs = shifted(src, 1, 80, 100, 2.6, -1.3);
    for (int y = 0; y < Hb; ++y)
      for (int x = 0; x < Wb; ++x) b[(size_t)y * Wb + x] = bs[(size_t)y * 100 + x];
    std::vector<float> f0(2 * (size_t)H * W);
    for (size_t i = 0; i < f0.size(); ++i)
      f0[i] = float((i < f0.size() / 2 ? 2.6 : -1.3) + 0.5 * r.normal());
    std::vector<float> cpu = f0, gpu = f0;
    if (guarded("flow_refine_photometric", [&] {
          flow_refine_photometric_cuda(a.data(), H, W, b.data(), Hb, Wb, gpu.data(), 3, 7, Exec{});
        })) {
      flow_refine_photometric(a.data(), H, W, b.data(), Hb, Wb, cpu.data(), 3, 7, Exec{});
      report_cmp("flow_refine_photometric 71x83 -> 66x90 3 rounds", compare(gpu, cpu, 1e-4, 0));
    }
  }
}

// The whole match on the GPU against the CPU's match_images on two 512x512 pairs, batched (B = 2)
// through match_images_batch_cuda, with the default options: 24x24 global grid, zero-mean
// descriptors, and the consistency-checked, median-filled global read-out. GOCor stages differ from
// the CPU's at float32 rounding level and the pipeline takes arg-maxes, so a few cells may pick a
// neighbouring peak: the check allows up to 1% of pixels more than 0.5 px apart and a median
// difference under 0.01 px.
void case_match() {
  const int H = 512, W = 512;
  const double shifts[2][2] = {{6.3, -4.7}, {-17.6, 9.2}};
  std::vector<std::vector<float>> as, bs;
  for (int i = 0; i < 2; ++i) {
    as.push_back(texture(3, H, W, 700 + i));
    bs.push_back(shifted(as.back(), 3, H, W, shifts[i][0], shifts[i][1]));
  }
  for (MatchMethod method : {MatchMethod::Gocor, MatchMethod::Correlation}) {
    MatchOptions o;
    o.method = method;
    const char* mname = method == MatchMethod::Gocor ? "gocor" : "correlation";
    ImageView va[2], vb[2];
    for (int i = 0; i < 2; ++i) {
      va[i] = ImageView{as[i].data(), 3, H, W};
      vb[i] = ImageView{bs[i].data(), 3, H, W};
    }
    MatchResult gpu[2];
    const std::string name = fmt("match_images_batch_cuda %s 2 pairs 512x512", mname);
    if (!guarded(name, [&] {
          match_images_batch_cuda(
              va, vb, 2, o, match_global_params(kFeatureChannels + 1, o.seed, o.fitted_params),
              default_local_params(), Exec{}, gpu);
        }))
      continue;
    for (int i = 0; i < 2; ++i) {
      const MatchResult cpu = match_images(va[i], vb[i], o, Exec{});
      const size_t P = (size_t)H * W;
      std::vector<double> d(P);
      double gt_cpu = 0, gt_gpu = 0, conf_max = 0;
      for (size_t k = 0; k < P; ++k) {
        d[k] = std::hypot(gpu[i].flow[k] - cpu.flow[k], gpu[i].flow[P + k] - cpu.flow[P + k]);
        gt_cpu += std::hypot(cpu.flow[k] - shifts[i][0], cpu.flow[P + k] - shifts[i][1]);
        gt_gpu += std::hypot(gpu[i].flow[k] - shifts[i][0], gpu[i].flow[P + k] - shifts[i][1]);
        if (!cpu.confidence.empty() && gpu[i].confidence.size() == P)
          conf_max =
              std::max(conf_max, double(std::fabs(gpu[i].confidence[k] - cpu.confidence[k])));
      }
      size_t over = 0;
      for (double x : d) over += x > 0.5;
      std::vector<double> s = d;
      std::nth_element(s.begin(), s.begin() + P / 2, s.end());
      const double med = s[P / 2], mx = *std::max_element(d.begin(), d.end());
      const double frac = double(over) / P;
      const bool ok = gpu[i].H == H && gpu[i].W == W && frac <= 0.01 && med <= 0.01;
      report(ok, fmt("match %s pair %d shift (%.1f,%.1f): EPE(gpu-cpu) max %.3g median %.3g, "
                     "%.3f%% px > 0.5; mean EPE vs truth cpu %.3f gpu %.3f; conf max|d| %.3g",
                     mname, i, shifts[i][0], shifts[i][1], mx, med, 100 * frac, gt_cpu / P,
                     gt_gpu / P, conf_max));
    }
  }
}

int run_available(const CudaInfo& info) {
  std::printf("device: %s (cc %d.%d, %.1f GiB), runtime %d, driver %d\n", info.name.c_str(),
              info.cc_major, info.cc_minor, info.total_memory / 1073741824.0, info.runtime_version,
              info.driver_version);
  // Dispatcher: Device::Cuda and Auto now go to the GPU.
  report(resolve_device(Device::Auto) == Device::Cuda, "resolve_device(Auto) == Cuda");

  case_corr_global({2, 37, 13, 17, 11, 9}, 11);
  case_corr_global({3, 64, 16, 16, 16, 16}, 12);
  case_corr_global({1, 130, 33, 31, 29, 35}, 13);
  case_corr_global({2, 128, 64, 64, 32, 32}, 14);
  case_corr_global({1, 3, 1, 1, 1, 7}, 15);

  case_corr_local({2, 19, 13, 21, 1}, 21);
  case_corr_local({2, 32, 16, 16, 4}, 22);
  case_corr_local({1, 100, 29, 37, 4}, 23);
  case_corr_local({2, 17, 11, 40, 7}, 24);
  case_corr_local({1, 8, 5, 3, 0}, 25);
  case_corr_local({1, 9, 3, 70, 2}, 26);
  // Register-tiled radii 1..3 on rows of a multiple of 4 (16-byte staging), odd heights.
  case_corr_local({2, 21, 13, 36, 1}, 27);
  case_corr_local({2, 12, 9, 44, 2}, 28);
  case_corr_local({1, 10, 17, 40, 3}, 29);

  case_errors();

  // Global GOCor: init parameters (GLU-Net constructor) and perturbed ones, query term on/off.
  case_gocor_global("init", default_global_params(16, 3), GlobalGocorOptions{3, true},
                    {1, 16, 8, 8}, 31, true);
  case_gocor_global("pert", perturbed_global(16, 4), GlobalGocorOptions{3, true}, {1, 16, 8, 8}, 32,
                    true);
  case_gocor_global("pert", perturbed_global(16, 5), GlobalGocorOptions{3, false}, {2, 16, 8, 8},
                    33, true);
  case_gocor_global("pert", perturbed_global(24, 6), GlobalGocorOptions{3, true}, {2, 24, 7, 9}, 34,
                    false);
  case_gocor_global("pert", perturbed_global(33, 7), GlobalGocorOptions{2, true}, {3, 33, 5, 12},
                    35, false);
  case_gocor_global("init", default_global_params(64, 8), GlobalGocorOptions{3, true},
                    {2, 64, 16, 16}, 36, false);
  case_gocor_global("pert", perturbed_global(64, 9), GlobalGocorOptions{3, true}, {2, 64, 16, 16},
                    37, false);
  case_gocor_global("pert", perturbed_global(48, 10), GlobalGocorOptions{3, false}, {2, 48, 13, 11},
                    38, false);
  case_gocor_global("pert", perturbed_global(16, 11), GlobalGocorOptions{1, true}, {1, 16, 1, 6},
                    39, false);
  case_gocor_global("init", default_global_params(32, 12), GlobalGocorOptions{0, true},
                    {2, 32, 6, 6}, 40, false);
  // Larger grids: the R^T R stencil's 64 x 64 query tiles (two tiles, 4-byte staging) and its
  // 32 x 32 tiles with 16-byte staging.
  case_gocor_global("pert", perturbed_global(16, 13), GlobalGocorOptions{2, true}, {2, 16, 66, 6},
                    41, true);
  case_gocor_global("pert", perturbed_global(24, 14), GlobalGocorOptions{2, true}, {2, 24, 24, 28},
                    42, false);

  // Local GOCor: K = 3 and 7 (spec 6), radius 4 (official) and others.
  case_gocor_local("init", default_local_params(), LocalGocorOptions{3, 4}, 1, 32, 16, 16, 51,
                   true);
  case_gocor_local("pert", perturbed_local(1), LocalGocorOptions{7, 4}, 1, 32, 16, 16, 52, true);
  case_gocor_local("pert", perturbed_local(2), LocalGocorOptions{3, 4}, 2, 37, 21, 19, 53, false);
  case_gocor_local("pert", perturbed_local(3), LocalGocorOptions{3, 7}, 2, 16, 13, 29, 54, false);
  case_gocor_local("pert", perturbed_local(4), LocalGocorOptions{2, 1}, 3, 96, 9, 17, 55, false);
  case_gocor_local("init", default_local_params(), LocalGocorOptions{7, 2}, 1, 8, 40, 3, 56, false);

  case_concurrent();

  // Match stages and the whole match.
  case_image_resize(3, 37, 53, 19, 71, 61);
  case_image_resize(1, 512, 512, 128, 128, 62);
  case_image_resize(2, 45, 31, 45, 31, 63);
  case_features(3, 61, 83, 15, 21, 4, 64);
  case_features(1, 96, 128, 16, 16, 8, 65);
  case_features(3, 128, 128, 32, 32, 4, 66);
  // The levels match_images builds for 512x512 (global 24x24 at cell 8, the finest 128x128 at
  // cell 4: 16384 cells, several chunks of the ordered per-channel sums), and a blank image.
  case_features(3, 512, 512, 24, 24, 8, 68);
  case_features(1, 512, 512, 128, 128, 4, 69);
  {
    std::vector<float> blank(3 * 40 * 48, 0.5f), cpu((size_t)kFeatureChannels * 10 * 12),
        gpu(cpu.size(), NAN);
    if (guarded("features_compute blank", [&] {
          features_compute_cuda(ImageView{blank.data(), 3, 40, 48}, 10, 12, 4, gpu.data(), Exec{});
        })) {
      features_compute(ImageView{blank.data(), 3, 40, 48}, 10, 12, 4, cpu.data(), Exec{});
      report_cmp("features_compute blank image 40x48 -> 10x12 (zeros, exact)",
                 compare(gpu, cpu, 0, 0));
    }
  }
  case_global_fill(16, 13, 11, 2, 1, 0.3, 70);
  case_global_fill(24, 24, 24, -3, 2, 0.2, 71);
  case_global_fill(8, 9, 17, 1, -2, 0.5, 72);
  case_flow_stages(67);
  case_match();

  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}

#endif  // GOCOR_WITH_CUDA

}  // namespace

int main() {
  const CudaInfo info = cuda_info();
#ifdef GOCOR_WITH_CUDA
  if (info.available) return run_available(info);
#endif
  return run_unavailable(info);
}
