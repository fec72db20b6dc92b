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
#include "dispatch.h"
#include "gocor.h"
#include "gocor_cuda.h"
#include "support/gocor_ref64.h"

using namespace gocor;

namespace {

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

// L2-normalises (B,C,N) features over channels, as GLU-Net does before global GOCor (spec 4.1).
void l2_normalise(std::vector<float>& x, int B, int C, int N) {
  for (int b = 0; b < B; ++b)
    for (int n = 0; n < N; ++n) {
      double ss = 0;
      for (int c = 0; c < C; ++c)
        ss += double(x[((size_t)b * C + c) * N + n]) * x[((size_t)b * C + c) * N + n];
      const float inv = static_cast<float>(1.0 / std::sqrt(ss + 1e-6));
      for (int c = 0; c < C; ++c) x[((size_t)b * C + c) * N + n] *= inv;
    }
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
  std::string name = fmt("corr_local B%d C%d %dx%d R%d", s.B, s.C, s.H, s.W, s.R);
  if (guarded(name, [&] { corr_local_cuda(ref.data(), q.data(), gpu.data(), s, Exec{}); })) {
    corr_local_cpu(ref.data(), q.data(), cpu.data(), s, Exec{});
    report_cmp(name, compare(gpu, cpu, 2e-5, 1e-4));
  }
  const auto rho = randn(cpu.size(), seed + 2);
  std::vector<float> acpu(ref.size()), agpu(ref.size(), NAN);
  name = fmt("corr_local_adjoint B%d C%d %dx%d R%d", s.B, s.C, s.H, s.W, s.R);
  if (guarded(name,
              [&] { corr_local_adjoint_cuda(rho.data(), q.data(), agpu.data(), s, Exec{}); })) {
    corr_local_adjoint_cpu(rho.data(), q.data(), acpu.data(), s, Exec{});
    // Sums of D products of N(0,1) values divided by C.
    report_cmp(name, compare(agpu, acpu, 2e-5 * std::sqrt(double(D)) / s.C * 10, 1e-4));
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
