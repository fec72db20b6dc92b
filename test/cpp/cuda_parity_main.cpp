// CUDA backend parity, in the manner of ggml's test-backend-ops: one table of cases {op, shape,
// tolerance}, each run through the CPU twin (the oracle) and the CUDA twin of the operation on the
// same seeded inputs (odd and non-square sizes, radii up to 7, GOCor's query term on and off; small
// GOCor cases also against the float64 reference).
//
//   cuda_parity [--op NAME] [--perf] [--list]
//     --op NAME  only the cases of operation NAME (the cpp/core function: corr_local,
//                flow_consistency, ...; the CUDA twin is NAME_cuda)
//     --perf     time the CPU twin and the CUDA twin of each case instead of comparing them:
//                median wall time of the host-pointer calls (the CUDA figure includes allocation
//                and the copies to and from the device, as a caller of the twin pays them)
//     --list     print the table and exit (no GPU needed), with where dispatch sends each
//                operation on device 'cuda' (a stage of match: the CPU until it passed here)
//
// Without a usable GPU it checks the no-device contract instead: the probe says unavailable,
// Device::Cuda throws CudaUnavailable, Device::Auto computes on the CPU, and the CUDA twin of every
// operation in the table throws CudaUnavailable; it prints "CUDA unavailable: <reason>", exits 0.
//
// Each comparison line prints max |cuda - cpu|, the worst ratio to the tolerance and the
// normalised MSE sum (cuda - cpu)^2 / sum cpu^2. Final line: "N passed, M failed"; the exit
// status is 1 when anything failed.
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common.h"
#include "correlation.h"
#include "dense_features.h"
#include "dis.h"
#include "dispatch.h"
#include "flow.h"
#include "gocor.h"
#include "gocor_cuda.h"
#include "interpolate.h"
#include "nn.h"
#include "simd.h"
#include "support/gocor_ref64.h"
#include "support/harness.h"
#include "support/test_data.h"

using namespace gocor;

namespace {

using gocor_test::Cmp;
using gocor_test::compare;
using gocor_test::fmt;
using gocor_test::l2_normalise;
using gocor_test::report;
using gocor_test::Rng;
using gocor_test::throws_code;
using gocor_test::Tol;

// A case's random stream: splitmix64 from a mix of the seed (N(0, 1) draws by Box-Muller).
Rng seeded(uint64_t seed) {
  return Rng{seed * 0x9E3779B97F4A7C15ull + 7};
}

std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.f) {
  Rng r = seeded(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(r.normal()) * scale;
  return v;
}

void report_cmp(const std::string& name, const Cmp& c) {
  report(c.ok, fmt("%-62s max|d|=%.3g worst/tol=%.3f nmse=%.3g", name.c_str(), c.max_abs,
                   c.worst_ratio, c.nmse));
}

// ---- the table ---------------------------------------------------------------------------------

using Fn = std::function<void()>;

// A case with its inputs made: each twin writes its own outputs; compare reports one line per
// output, named after the case, against the case's tolerance.
struct Trial {
  Fn cpu, cuda;
  std::function<void(const std::string& name, const Tol& tol)> compare;
};

struct Case {
  std::string op;               // the cpp/core function; its CUDA twin is op + "_cuda"
  std::string shape;            // what the case covers, printed with every line
  Tol tol;                      // of the main output (exact outputs and masks say so on their line)
  std::function<Trial()> make;  // seeded inputs, only for the cases that run
  bool twin =
      true;  // false: a GPU-only check in `cuda` (errors, concurrency): no perf, no no-device
};

template <typename St>
std::shared_ptr<St> state() {
  return std::make_shared<St>();
}

// The usual comparison: the case's one output, st->gpu against st->cpu with its tolerance.
template <typename St>
std::function<void(const std::string&, const Tol&)> compare_one(std::shared_ptr<St> st) {
  return [st](const std::string& name, const Tol& tol) {
    report_cmp(name, compare(st->gpu, st->cpu, tol));
  };
}

#ifdef GOCOR_WITH_CUDA

// Two 0/1 masks that must agree except where the decision sits on its threshold: lo and hi are
// the CPU twin's masks with the threshold moved by a relative 2^-20 either way (about 16 float32
// ulps, far more than the rounding differences any twin may have, far less than any real error).
// A pixel whose CPU decision changes between lo and hi is near the threshold; a disagreement
// anywhere else fails.
void report_mask(const std::string& name, const std::vector<uint8_t>& gpu,
                 const std::vector<uint8_t>& cpu, const std::vector<uint8_t>& lo,
                 const std::vector<uint8_t>& hi) {
  size_t set = 0, near = 0, differ = 0, differ_far = 0;
  for (size_t i = 0; i < cpu.size(); ++i) {
    set += cpu[i] != 0;
    const bool is_near = lo[i] != hi[i];
    near += is_near;
    if ((gpu[i] != 0) != (cpu[i] != 0)) differ++, differ_far += !is_near;
  }
  const bool ok = gpu.size() == cpu.size() && differ_far == 0;
  report(ok, fmt("%-62s set %zu/%zu, differ %zu (%zu near the threshold of %zu there)",
                 name.c_str(), set, cpu.size(), differ, differ - differ_far, near));
}

// ---- inputs ------------------------------------------------------------------------------------

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

// A flow (2, H, W): (u0, v0) plus N(0, sigma) per component.
std::vector<float> noisy_flow(int H, int W, double u0, double v0, double sigma, uint64_t seed) {
  Rng r = seeded(seed);
  std::vector<float> f(2 * (size_t)H * W);
  for (size_t i = 0; i < f.size(); ++i)
    f[i] = float((i < f.size() / 2 ? u0 : v0) + sigma * r.normal());
  return f;
}

// ---- plain correlation -------------------------------------------------------------------------

Trial corr_global_trial(CorrGlobalShape s, uint64_t seed) {
  struct St {
    std::vector<float> ref, q, cpu, gpu;
  };
  auto st = state<St>();
  st->ref = randn((size_t)s.B * s.C * s.H * s.W, seed);
  st->q = randn((size_t)s.B * s.C * s.Hq * s.Wq, seed + 1);
  st->cpu.resize((size_t)s.B * s.Hq * s.Wq * s.H * s.W);
  st->gpu.assign(st->cpu.size(), NAN);
  return {[st, s] { corr_global_cpu(st->ref.data(), st->q.data(), st->cpu.data(), s, Exec{}); },
          [st, s] { corr_global_cuda(st->ref.data(), st->q.data(), st->gpu.data(), s, Exec{}); },
          compare_one(st)};
}

// corr_local of one shape.
Trial corr_local_trial(CorrLocalShape s, uint64_t seed) {
  struct St {
    std::vector<float> ref, q, cpu, gpu;
  };
  auto st = state<St>();
  const size_t D = (size_t)(2 * s.R + 1) * (2 * s.R + 1), P = (size_t)s.B * s.H * s.W;
  st->ref = randn(P * s.C, seed);
  st->q = randn(P * s.C, seed + 1);
  st->cpu.resize(P * D);
  st->gpu.assign(st->cpu.size(), NAN);
  return {[st, s] { corr_local_cpu(st->ref.data(), st->q.data(), st->cpu.data(), s, Exec{}); },
          [st, s] { corr_local_cuda(st->ref.data(), st->q.data(), st->gpu.data(), s, Exec{}); },
          compare_one(st)};
}

// A 360 GB volume throws CudaOom (and the backend stays usable); C = 0 throws Shape.
Trial corr_errors_trial() {
  Trial t;
  t.cuda = [] {
    std::string what;
    const CorrGlobalShape huge{1, 1, 1, 300000, 1, 300000};
    std::vector<float> tiny_in(300000, 1.f), tiny_out(1);
    bool thrown = throws_code(
        [&] { corr_global_cuda(tiny_in.data(), tiny_in.data(), tiny_out.data(), huge, Exec{}); },
        ErrorCode::CudaOom, &what);
    report(thrown, "corr_global a 360 GB volume throws CudaOom: " + what);
    const CorrGlobalShape bad{1, 0, 2, 2, 2, 2};
    thrown = throws_code(
        [&] { corr_global_cuda(tiny_in.data(), tiny_in.data(), tiny_out.data(), bad, Exec{}); },
        ErrorCode::Shape, &what);
    report(thrown, "corr_global C = 0 throws Shape: " + what);
  };
  return t;
}

// ---- GOCor -------------------------------------------------------------------------------------

// Every parameter moved away from its initial value (as the conformance "perturbed" set does),
// with R_theta weights large enough that the query term matters.
GlobalGocorParams perturbed_global(int C, uint64_t seed) {
  GlobalGocorParams p = default_global_params(C, seed);
  Rng r = seeded(seed + 100);
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
  Rng r = seeded(seed + 200);
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
         fmt("%-62s entries=%zu worst rel=%.3g", (name + " diagnostics").c_str(), a.size(), worst));
}

// GOCor volumes use the case's tolerance (spec 12: 2e-5 + 1e-4 |cpu|); the filters, which the
// volume multiplies, 1e-4 + 1e-4 |cpu|; diagnostics a relative 1e-3.
constexpr Tol kGocorVolume{2e-5, 1e-4}, kGocorFilter{1e-4, 1e-4};

Trial gocor_global_trial(GlobalGocorParams p, GlobalGocorOptions o, GocorGlobalShape s,
                         uint64_t seed, bool with_ref64) {
  struct St {
    std::vector<float> ref, q, vcpu, vgpu, fcpu, fgpu;
    std::vector<GocorIterDiag> dcpu, dgpu;
  };
  auto st = state<St>();
  const int N = s.H * s.W;
  st->ref = randn((size_t)s.B * s.C * N, seed);
  st->q = randn((size_t)s.B * s.C * N, seed + 1);
  l2_normalise(st->ref, s.B, s.C, N);
  l2_normalise(st->q, s.B, s.C, N);
  st->vcpu.resize((size_t)s.B * N * N);
  st->vgpu.assign(st->vcpu.size(), NAN);
  st->fcpu.resize((size_t)s.B * N * s.C);
  st->fgpu.assign(st->fcpu.size(), NAN);
  return {[st, p, o, s] {
            gocor_global_cpu(p, o, st->ref.data(), st->q.data(), st->vcpu.data(), st->fcpu.data(),
                             s, Exec{}, &st->dcpu);
          },
          [st, p, o, s] {
            gocor_global_cuda(p, o, st->ref.data(), st->q.data(), st->vgpu.data(), st->fgpu.data(),
                              s, Exec{}, &st->dgpu);
          },
          [st, p, o, s, with_ref64](const std::string& name, const Tol& tol) {
            report_cmp(name + " volume", compare(st->vgpu, st->vcpu, tol));
            report_cmp(name + " filter", compare(st->fgpu, st->fcpu, kGocorFilter));
            compare_diag(name, st->dgpu, st->dcpu);
            if (!with_ref64) return;
            std::vector<double> v64, f64;
            gocor_ref::gocor_global_ref64(p, o, st->ref.data(), st->q.data(), s, &v64, &f64,
                                          nullptr);
            report_cmp(name + " volume vs float64", compare(st->vgpu, v64, tol));
          }};
}

Trial gocor_local_trial(LocalGocorParams p, LocalGocorOptions o, int B, int C, int H, int W,
                        uint64_t seed, bool with_ref64) {
  struct St {
    std::vector<float> ref, q, vcpu, vgpu, fcpu, fgpu;
    std::vector<GocorIterDiag> dcpu, dgpu;
  };
  auto st = state<St>();
  st->ref = randn((size_t)B * C * H * W, seed);
  st->q = randn(st->ref.size(), seed + 1);
  const size_t D = (size_t)(2 * o.search_radius + 1) * (2 * o.search_radius + 1);
  st->vcpu.resize((size_t)B * D * H * W);
  st->vgpu.assign(st->vcpu.size(), NAN);
  st->fcpu.resize(st->ref.size());
  st->fgpu.assign(st->ref.size(), NAN);
  return {[=] {
            gocor_local_cpu(p, o, st->ref.data(), st->q.data(), st->vcpu.data(), st->fcpu.data(), B,
                            C, H, W, Exec{}, &st->dcpu);
          },
          [=] {
            gocor_local_cuda(p, o, st->ref.data(), st->q.data(), st->vgpu.data(), st->fgpu.data(),
                             B, C, H, W, Exec{}, &st->dgpu);
          },
          [=](const std::string& name, const Tol& tol) {
            report_cmp(name + " volume", compare(st->vgpu, st->vcpu, tol));
            report_cmp(name + " filter", compare(st->fgpu, st->fcpu, kGocorFilter));
            compare_diag(name, st->dgpu, st->dcpu);
            if (!with_ref64) return;
            std::vector<double> v64, f64;
            gocor_ref::gocor_local_ref64(p, o, st->ref.data(), st->q.data(), B, C, H, W, &v64, &f64,
                                         nullptr);
            report_cmp(name + " volume vs float64", compare(st->vgpu, v64, tol));
          }};
}

// Several host threads calling at once (each call has its own stream) get their own results.
Trial gocor_local_concurrent_trial() {
  Trial t;
  t.cuda = [] {
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
          gocor_local_cuda(p, o, refs[i].data(), refs[(i + 1) % 4].data(), outs[i].data(), nullptr,
                           B, C, H, W, Exec{}, nullptr);
        } catch (const std::exception& e) {
          errors[i] = e.what();
        }
      });
    for (auto& x : th) x.join();
    bool ok = true;
    double worst = 0;
    for (int i = 0; i < 4; ++i) {
      ok = ok && errors[i].empty();
      gocor_local_cpu(p, o, refs[i].data(), refs[(i + 1) % 4].data(), expect[i].data(), nullptr, B,
                      C, H, W, Exec{}, nullptr);
      Cmp c = compare(outs[i], expect[i], kGocorVolume);
      ok = ok && c.ok;
      worst = std::max(worst, c.worst_ratio);
    }
    report(ok, fmt("gocor_local 4 concurrent calls match the CPU (worst/tol=%.3f)%s", worst,
                   errors[0].c_str()));
  };
  return t;
}

// ---- features ----------------------------------------------------------------------------------
// The match-stage twins below repeat the CPU's float32 operations in the CPU's order with
// explicitly rounded multiplies and adds (the CPU build has no FMA contraction) and use double
// where it does, so the expected difference is 0 in nearly every element. Their tolerances are
// documented absolute ones: a few float32 ulps of the values involved (resampled images and
// descriptors are O(1), flows O(100) px), which a real indexing or formula error exceeds by orders
// of magnitude.

Trial image_resize_trial(int C, int H, int W, int h, int w, uint64_t seed) {
  struct St {
    std::vector<float> src, cpu, gpu;
  };
  auto st = state<St>();
  st->src = texture(C, H, W, seed);
  st->cpu.resize((size_t)C * h * w);
  st->gpu.assign(st->cpu.size(), NAN);
  return {[=] { image_resize_cpu(st->src.data(), C, H, W, st->cpu.data(), h, w, Exec{}); },
          [=] { image_resize_cuda(st->src.data(), C, H, W, st->gpu.data(), h, w, Exec{}); },
          compare_one(st)};
}

// blank: a constant image, whose descriptors must be exact zeros.
Trial features_trial(int C, int H, int W, int Hf, int Wf, int cell, uint64_t seed, bool blank) {
  struct St {
    std::vector<float> img, cpu, gpu;
  };
  auto st = state<St>();
  st->img = blank ? std::vector<float>((size_t)C * H * W, 0.5f) : texture(C, H, W, seed);
  st->cpu.resize((size_t)kFeatureChannels * Hf * Wf);
  st->gpu.assign(st->cpu.size(), NAN);
  const ImageView v{st->img.data(), C, H, W};
  return {[=] { features_compute_cpu(v, Hf, Wf, cell, st->cpu.data(), Exec{}); },
          [=] { features_compute_cuda(v, Hf, Wf, cell, st->gpu.data(), Exec{}); },
          [=](const std::string& name, const Tol& tol) {
            // features_compute ends with the zero-mean step (image mean descriptor subtracted,
            // unit norm again), so this covers it. Every operation is meant to be bit-identical;
            // the line counts the differing entries.
            Cmp c = compare(st->gpu, st->cpu, tol);
            size_t differ = 0;
            for (size_t i = 0; i < st->cpu.size(); ++i) differ += !(st->gpu[i] == st->cpu[i]);
            // Zero-mean check on the CPU output itself (fails if the step were dropped): channel
            // means of renormalised zero-mean rows are ~0 against a typical entry of 1/sqrt(136).
            double worst_mean = 0;
            const size_t N = (size_t)Hf * Wf;
            for (int ch = 0; ch < kFeatureChannels; ++ch) {
              double m = 0;
              for (size_t n = 0; n < N; ++n) m += st->cpu[ch * N + n];
              worst_mean = std::max(worst_mean, std::fabs(m / N));
            }
            c.ok = c.ok && (N < 2 || worst_mean < 0.02);
            report(c.ok, fmt("%-62s max|d|=%.3g differing=%zu/%zu cpu max|channel mean|=%.3g",
                             name.c_str(), c.max_abs, differ, st->cpu.size(), worst_mean));
          }};
}

// ---- flow stages -------------------------------------------------------------------------------

Trial flow_warp_trial(uint64_t seed) {
  struct St {
    std::vector<float> feat_b, flow, cpu, gpu;
  };
  auto st = state<St>();
  const FlowGrid gb{13, 17, 2.5, 3.0}, ga{11, 19, 3.0, 2.8};
  const int C = 7;
  const size_t Na = (size_t)ga.H * ga.W;
  st->feat_b = randn(C * (size_t)gb.H * gb.W, seed);
  st->flow = randn(2 * Na, seed + 1, 8.f);  // some points land outside b
  st->cpu.resize(C * Na);
  st->gpu.assign(C * Na, NAN);
  return {[=] { flow_warp_cpu(st->feat_b.data(), C, gb, st->flow.data(), ga, st->cpu.data(), {}); },
          [=] {
            flow_warp_cuda(st->feat_b.data(), C, gb, st->flow.data(), ga, st->gpu.data(), Exec{});
          },
          compare_one(st)};
}

Trial flow_resample_trial(FlowGrid gi, FlowGrid go, uint64_t seed) {
  struct St {
    std::vector<float> flow, cpu, gpu;
  };
  auto st = state<St>();
  st->flow = randn(2 * (size_t)gi.H * gi.W, seed, 8.f);
  st->cpu.resize(2 * (size_t)go.H * go.W);
  st->gpu.assign(st->cpu.size(), NAN);
  return {[=] { flow_resample_cpu(st->flow.data(), gi, st->cpu.data(), go, Exec{}); },
          [=] { flow_resample_cuda(st->flow.data(), gi, st->gpu.data(), go, Exec{}); },
          compare_one(st)};
}

Trial flow_median3_trial(int H, int W, uint64_t seed) {
  struct St {
    std::vector<float> flow, cpu, gpu;
  };
  auto st = state<St>();
  st->flow = randn(2 * (size_t)H * W, seed, 8.f);
  return {[=] {
            st->cpu = st->flow;
            flow_median3_cpu(st->cpu.data(), H, W, Exec{});
          },
          [=] {
            st->gpu = st->flow;
            flow_median3_cuda(st->gpu.data(), H, W, Exec{});
          },
          compare_one(st)};
}

// A global volume with a unique peak per reference cell and random neighbours around it.
Trial flow_from_global_volume_trial(FlowGrid ga, FlowGrid gb, uint64_t seed) {
  struct St {
    std::vector<float> vol, cpu, gpu, pc, pg;
  };
  auto st = state<St>();
  const size_t Na = (size_t)ga.H * ga.W, M = (size_t)gb.H * gb.W;
  st->vol = randn(M * Na, seed, 0.1f);
  Rng r = seeded(seed + 1);
  for (size_t q = 0; q < Na; ++q) st->vol[(size_t)(r.next() % M) * Na + q] += 1.f;
  st->cpu.resize(2 * Na);
  st->gpu.assign(2 * Na, NAN);
  st->pc.resize(Na);
  st->pg.assign(Na, NAN);
  return {[=] {
            flow_from_global_volume_cpu(st->vol.data(), ga, gb, st->cpu.data(), st->pc.data(), {});
          },
          [=] {
            flow_from_global_volume_cuda(st->vol.data(), ga, gb, st->gpu.data(), st->pg.data(),
                                         Exec{});
          },
          [st](const std::string& name, const Tol& tol) {
            report_cmp(name + " flow", compare(st->gpu, st->cpu, tol));
            report_cmp(name + " peak (exact)", compare(st->pg, st->pc, Tol{0, 0}));
          }};
}

Trial flow_from_local_volume_trial(int R, int H, int W, uint64_t seed) {
  struct St {
    std::vector<float> vol, cpu, gpu, cc, cg;
  };
  auto st = state<St>();
  const size_t N = (size_t)H * W;
  st->vol = randn((size_t)(2 * R + 1) * (2 * R + 1) * N, seed);
  st->cpu.resize(2 * N);
  st->gpu.assign(2 * N, NAN);
  st->cc.resize(N);
  st->cg.assign(N, NAN);
  return {[=] {
            flow_from_local_volume_cpu(st->vol.data(), R, H, W, st->cpu.data(), st->cc.data(), {});
          },
          [=] {
            flow_from_local_volume_cuda(st->vol.data(), R, H, W, st->gpu.data(), st->cg.data(),
                                        Exec{});
          },
          [st](const std::string& name, const Tol& tol) {
            report_cmp(name + " residual", compare(st->gpu, st->cpu, tol));
            report_cmp(name + " confidence", compare(st->cg, st->cc, tol));
          }};
}

Trial flow_warp_image_trial(int C, int Hb, int Wb, int H, int W, uint64_t seed) {
  struct St {
    std::vector<float> img, flow, cpu, gpu, mc, mg;
  };
  auto st = state<St>();
  st->img = texture(C, Hb, Wb, seed);
  st->flow = randn(2 * (size_t)H * W, seed + 1, 5.f);
  const size_t N = (size_t)H * W;
  st->cpu.resize(C * N);
  st->gpu.assign(C * N, NAN);
  st->mc.resize(N);
  st->mg.assign(N, NAN);
  return {[=] {
            flow_warp_image_cpu(st->img.data(), C, Hb, Wb, st->flow.data(), H, W, st->cpu.data(),
                                st->mc.data(), Exec{});
          },
          [=] {
            flow_warp_image_cuda(st->img.data(), C, Hb, Wb, st->flow.data(), H, W, st->gpu.data(),
                                 st->mg.data(), Exec{});
          },
          [st](const std::string& name, const Tol& tol) {
            report_cmp(name, compare(st->gpu, st->cpu, tol));
            report_cmp(name + " mask (exact)", compare(st->mg, st->mc, Tol{0, 0}));
          }};
}

// Real descriptors of a shifted texture, flows near the truth: the refinement's regime.
Trial flow_refine_symmetric_trial(int H, int W, int cell, int iterations, uint64_t seed) {
  struct St {
    std::vector<float> fa, fb, f0, cpu, gpu;
  };
  auto st = state<St>();
  const int Hf = H / cell, Wf = W / cell;
  const auto a = texture(1, H, W, seed), b = shifted(a, 1, H, W, 3.4, -2.2);
  st->fa.resize((size_t)kFeatureChannels * Hf * Wf);
  st->fb.resize(st->fa.size());
  features_compute_cpu(ImageView{a.data(), 1, H, W}, Hf, Wf, cell, st->fa.data(), Exec{});
  features_compute_cpu(ImageView{b.data(), 1, H, W}, Hf, Wf, cell, st->fb.data(), Exec{});
  st->f0 = noisy_flow(Hf, Wf, 3.4, -2.2, 1.5, seed + 1);
  const FlowGrid g{Hf, Wf, double(cell), double(cell)};
  const int C = kFeatureChannels;
  return {[=] {
            st->cpu = st->f0;
            flow_refine_symmetric_cpu(st->fa.data(), g, st->fb.data(), g, C, st->cpu.data(),
                                      iterations, Exec{});
          },
          [=] {
            st->gpu = st->f0;
            flow_refine_symmetric_cuda(st->fa.data(), g, st->fb.data(), g, C, st->gpu.data(),
                                       iterations, Exec{});
          },
          compare_one(st)};
}

// flow_volume_aggregate's tolerance. The CPU keeps running double sums along each row and down
// each column, the GPU sums each window afresh in double; both divide by the cell count and round
// to float. With inputs |x| <= 1, every running total is at most (2r+1)^2, and the CPU makes at
// most 2 (W + H) roundings of at most 2^-53 of that per output (row totals that leave the window
// take their own rounding with them), the GPU fewer: the doubles differ by at most
// delta = 4 (W + H) (2r+1)^2 2^-53. Rounding each to float adds half an ulp on either side, so
// |cuda - cpu| <= delta + 2^-23 |cpu| (an ulp of x is at most 2^-23 |x|).
Tol aggregate_tol(int H, int W, int r) {
  return {4.0 * (W + H) * (2 * r + 1) * (2 * r + 1) * std::ldexp(1.0, -53), std::ldexp(1.0, -23)};
}

// volume uniform in [-1, 1) (the bound aggregate_tol assumes).
Trial flow_volume_aggregate_trial(int D, int H, int W, int r, uint64_t seed) {
  struct St {
    std::vector<float> vol, cpu, gpu;
  };
  auto st = state<St>();
  st->vol = gocor_test::random_vec((size_t)D * H * W, seed);
  return {[=] {
            st->cpu = st->vol;
            flow_volume_aggregate_cpu(st->cpu.data(), D, H, W, r, Exec{});
          },
          [=] {
            st->gpu = st->vol;
            flow_volume_aggregate_cuda(st->gpu.data(), D, H, W, r, Exec{});
          },
          compare_one(st)};
}

// A forward flow of (u0, v0) plus noise on a (H, W) grid, the backward flow on b's (Hb, Wb) grid
// its negation plus noise of `sigma` px: errors spread across the tolerance, and the flows push
// some pixels out of b's view. want_valid / want_error: which outputs are asked for (match asks
// for the error alone with zero tolerances, for the forward-backward confidence).
Trial flow_consistency_trial(int H, int W, int Hb, int Wb, float abs_tol, float rel_tol,
                             double sigma, bool want_valid, bool want_error, uint64_t seed) {
  struct St {
    std::vector<float> fwd, bwd, ec, eg;
    std::vector<uint8_t> vc, vg, lo, hi;
  };
  auto st = state<St>();
  st->fwd = noisy_flow(H, W, 3.3, -2.1, 0.5, seed);
  st->bwd = noisy_flow(Hb, Wb, -3.3, 2.1, sigma, seed + 1);
  const size_t N = (size_t)H * W;
  auto run = [st, H, W, Hb, Wb, N](bool cuda, float at, float rt, std::vector<uint8_t>* valid,
                                   std::vector<float>* error) {
    if (valid) valid->assign(N, 7);
    if (error) error->assign(N, NAN);
    (cuda ? flow_consistency_cuda : flow_consistency_cpu)(
        st->fwd.data(), H, W, st->bwd.data(), Hb, Wb, at, rt, valid ? valid->data() : nullptr,
        error ? error->data() : nullptr, Exec{});
  };
  return {[=] {
            run(false, abs_tol, rel_tol, want_valid ? &st->vc : nullptr,
                want_error ? &st->ec : nullptr);
          },
          [=] {
            run(true, abs_tol, rel_tol, want_valid ? &st->vg : nullptr,
                want_error ? &st->eg : nullptr);
          },
          [=](const std::string& name, const Tol& tol) {
            if (want_error) {
              size_t out = 0;
              for (float e : st->ec) out += std::isinf(e);
              report_cmp(name + fmt(" error (%zu out of view)", out), compare(st->eg, st->ec, tol));
            }
            if (!want_valid) return;
            // Scaling both tolerances by s scales the threshold by s^2.
            const float k = std::ldexp(1.f, -21);
            run(false, abs_tol * (1 - k), rel_tol * (1 - k), &st->lo, nullptr);
            run(false, abs_tol * (1 + k), rel_tol * (1 + k), &st->hi, nullptr);
            report_mask(name + " valid", st->vg, st->vc, st->lo, st->hi);
          }};
}

// A texture with a flat rectangle and a band of vertical stripes (structure in one direction
// only), both of which the mask must reject, plus the textured rest.
std::vector<float> texture_with_flats(int H, int W, uint64_t seed) {
  std::vector<float> g = texture(1, H, W, seed);
  for (int y = H / 5; y < H / 2; ++y)
    for (int x = W / 6; x < W / 2; ++x) g[(size_t)y * W + x] = 0.4f;
  for (int y = 3 * H / 5; y < 4 * H / 5; ++y)
    for (int x = 0; x < W; ++x) g[(size_t)y * W + x] = 0.5f + 0.3f * std::sin(0.9f * x);
  return g;
}

Trial flow_texture_mask_trial(int H, int W, int radius, float min_gradient, TextureMeasure measure,
                              uint64_t seed) {
  struct St {
    std::vector<float> gray;
    std::vector<uint8_t> cpu, gpu, lo, hi;
  };
  auto st = state<St>();
  st->gray = texture_with_flats(H, W, seed);
  const size_t N = (size_t)H * W;
  auto run = [st, H, W, N, radius, measure](bool cuda, float g, std::vector<uint8_t>* out) {
    out->assign(N, 7);
    (cuda ? flow_texture_mask_cuda : flow_texture_mask_cpu)(st->gray.data(), H, W, radius, g,
                                                            measure, out->data(), Exec{});
  };
  return {[=] { run(false, min_gradient, &st->cpu); }, [=] { run(true, min_gradient, &st->gpu); },
          [=](const std::string& name, const Tol&) {
            // The threshold is min_gradient^2: moving min_gradient by 2^-21 moves it by 2^-20.
            const float k = std::ldexp(1.f, -21);
            run(false, min_gradient * (1 - k), &st->lo);
            run(false, min_gradient * (1 + k), &st->hi);
            report_mask(name + " textured", st->gpu, st->cpu, st->lo, st->hi);
          }};
}

// ---- the dense stages: interpolation and DIS ----------------------------------------------------

// Two motions split along an image edge: the texture's left part moves by (u1, v1), the right
// part, brighter by 0.3 beyond a vertical step at x = W * 3 / 5, by (u2, v2); noise of 0.2 px;
// `invalid` of the pixels untrusted (random), plus a rectangle (an occlusion) untrusted.
struct TwoMotions {
  std::vector<float> image, flow;
  std::vector<uint8_t> valid;
};

TwoMotions two_motions(int C, int H, int W, double invalid, uint64_t seed) {
  TwoMotions m;
  m.image = texture(C, H, W, seed);
  const int edge = W * 3 / 5;
  for (int c = 0; c < C; ++c)
    for (int y = 0; y < H; ++y)
      for (int x = edge; x < W; ++x) {
        float& v = m.image[((size_t)c * H + y) * W + x];
        v = std::min(1.f, 0.7f * v + 0.3f);
      }
  const auto noise = noisy_flow(H, W, 0, 0, 0.2, seed + 1);
  const size_t N = (size_t)H * W;
  m.flow.resize(2 * N);
  m.valid.assign(N, 1);
  Rng r = seeded(seed + 2);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      const size_t i = (size_t)y * W + x;
      const bool right = x >= edge;
      m.flow[i] = noise[i] + float(right ? -4.5 : 2.25) + 0.01f * float(y);
      m.flow[N + i] = noise[N + i] + float(right ? 1.5 : -3.25) - 0.02f * float(x);
      if (r.uniform() < invalid) m.valid[i] = 0;
      if (y > H / 4 && y < H / 2 && x > edge - W / 8 && x < edge + W / 10) m.valid[i] = 0;
    }
  return m;
}

// flow_interpolate's tolerance. The twin repeats the CPU's integer steps exactly (costs, the
// geodesic Voronoi diagram with its tie rule, the seed graph, the K nearest in (distance, index)
// order) and its float and double operations in order; the one value it may not reproduce is a
// fit weight exp(-alpha d): correctly rounded on the GPU, glibc's expf (< 0.502 ulp) on the CPU,
// so a weight may differ in its last bit, a relative 2^-24. The fit is a ratio of sums of
// positive weights times coordinates and flows, so such a change moves the weighted mean flow by
// at most 2^-23 times the spread of the K flows (under 16 px here) and the slopes, solved from
// covariances at least min_spread = 0.8 px^2 across, by about as much per px of offset: the
// output (offsets under 16 px) moves by well under 16 * 16 * 2^-22 = 6.1e-5 px. A wrong label or
// tie, the failure this row is for, moves a pixel to another seed's model: 0.1 px or more.
constexpr Tol kInterpTol{6.1e-5, 0};

Trial flow_interpolate_trial(int C, int H, int W, double invalid, const InterpOptions& o,
                             uint64_t seed, bool none_valid = false) {
  struct St {
    TwoMotions m;
    std::vector<float> cpu, gpu;
  };
  auto st = state<St>();
  st->m = two_motions(C, H, W, invalid, seed);
  if (none_valid) std::fill(st->m.valid.begin(), st->m.valid.end(), 0);
  const size_t N = (size_t)H * W;
  st->cpu.assign(2 * N, NAN);
  st->gpu.assign(2 * N, NAN);
  auto run = [st, C, H, W, o](bool cuda, std::vector<float>& out) {
    (cuda ? flow_interpolate_cuda : flow_interpolate_cpu)(
        st->m.image.data(), C, H, W, st->m.flow.data(), st->m.valid.data(), out.data(), o, Exec{});
  };
  return {[=] { run(false, st->cpu); }, [=] { run(true, st->gpu); }, compare_one(st)};
}

// InterpOptions with the seed grid, K, the fit and the edge blur set (the rest default).
InterpOptions interp_options(int stride, int K, bool affine, float edge_sigma) {
  return InterpOptions{stride, K, InterpOptions{}.alpha, affine, edge_sigma};
}

// How far one DIS flow is from another: of the pixels whose reference match lies inside b, how
// many differ by more than tol.abs px in either component, and the largest difference; over all
// pixels, how many are identical and how many are not finite.
struct DisGap {
  size_t in_view = 0, far = 0, identical = 0, bad = 0;
  double worst = 0;
};

DisGap dis_gap(const std::vector<float>& got, const std::vector<float>& ref, int H, int W, int Hb,
               int Wb, const Tol& tol) {
  const size_t N = (size_t)H * W;
  DisGap g;
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      const size_t i = (size_t)y * W + x;
      g.bad += !std::isfinite(got[i]) || !std::isfinite(got[N + i]);
      g.identical += got[i] == ref[i] && got[N + i] == ref[N + i];
      const double bx = x + ref[i], by = y + ref[N + i];
      if (!(bx >= 0 && by >= 0 && bx <= Wb - 1 && by <= Hb - 1)) continue;
      ++g.in_view;
      const double d =
          std::max(std::fabs(double(got[i]) - ref[i]), std::fabs(double(got[N + i]) - ref[N + i]));
      g.far += !(d <= tol.abs);
      g.worst = std::max(g.worst, d);
    }
  return g;
}

// DIS's parity, derived from the CPU's own rounding spread. dis.h: its SIMD levels (4 lanes, vs 8
// lanes with fused multiply-adds) differ "only in rounding (under 1e-3 px for 99% of the pixels
// whose match lies inside b)"; the search's thresholds let a rounding difference grow at a few
// pixels (at 256x320, 0.7% of the values beyond 1e-3 px, the largest 0.24 px). The GPU repeats
// the 4-lane order, so against the CPU at its portable level it is held to dis.h's bound (at most
// 1% of the in-view pixels beyond tol.abs = 1e-3 px; the line counts identical pixels: all are
// expected), and against the CPU at its default (AVX2) level to at most twice as many far pixels
// as the CPU's portable level has against it, plus one (flash-attention's rule: no worse than 2x
// a same-precision computation): the GPU's gap to AVX2 is that level's own rounding spread.
void report_dis(const std::string& name, const DisGap& g, size_t allowed_far) {
  const bool ok = g.bad == 0 && g.in_view > 0 && g.far <= allowed_far;
  report(ok, fmt("%-62s %zu/%zu in view beyond 1e-3 px (allowed %zu, max %.3g), %zu identical",
                 name.c_str(), g.far, g.in_view, allowed_far, g.worst, g.identical));
}

// a: a texture; b: a shifted by (dx, dy) and cropped or padded to Hb x Wb; the seed is the true
// flow plus 1 px of noise, and, where `wrong` is not 0, off by (wrong, -wrong / 2) px over the
// middle third of the columns and the middle half of the rows: a region the search alone cannot
// pull back, which spatial propagation repairs from the neighbours around it. The CPU twin runs
// at its portable level (the GPU's order) and at the machine's default level. With propagation,
// the row also checks that it tells a twin that skips it: the CPU without propagation must be
// further from the CPU with it than the parity allows, and leave the wrong region wrong (under
// half of it within 0.5 px of the true flow) where the CPU with it repairs it (90 %).
Trial flow_refine_dis_trial(int H, int W, int Hb, int Wb, double dx, double dy, const DisOptions& o,
                            uint64_t seed, double wrong = 0) {
  struct St {
    std::vector<float> a, b, seed, cpu, cpu_default, gpu, cpu_plain;
  };
  auto st = state<St>();
  const int Hm = std::max(H, Hb), Wm = std::max(W, Wb);
  const auto big = texture(1, Hm, Wm, seed);
  const auto moved = shifted(big, 1, Hm, Wm, dx, dy);
  st->a.resize((size_t)H * W);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) st->a[(size_t)y * W + x] = big[(size_t)y * Wm + x];
  st->b.resize((size_t)Hb * Wb);
  for (int y = 0; y < Hb; ++y)
    for (int x = 0; x < Wb; ++x) st->b[(size_t)y * Wb + x] = moved[(size_t)y * Wm + x];
  st->seed = noisy_flow(H, W, dx, dy, 1.0, seed + 1);
  const size_t N = (size_t)H * W;
  for (int y = H / 4; y < 3 * H / 4 && wrong != 0; ++y)
    for (int x = W / 3; x < 2 * W / 3; ++x) {
      st->seed[(size_t)y * W + x] += float(wrong);
      st->seed[N + (size_t)y * W + x] -= float(wrong / 2);
    }
  auto run_with = [st, H, W, Hb, Wb](bool cuda, std::vector<float>& flow, const DisOptions& d) {
    flow = st->seed;
    (cuda ? flow_refine_dis_cuda : flow_refine_dis_cpu)(st->a.data(), H, W, st->b.data(), Hb, Wb,
                                                        flow.data(), d, Exec{});
  };
  auto run = [run_with, o](bool cuda, std::vector<float>& flow) { run_with(cuda, flow, o); };
  return {[=] {
            corr_detail::simd_force(corr_detail::Simd::Portable);
            run(false, st->cpu);
            corr_detail::simd_unforce();
          },
          [=] { run(true, st->gpu); },
          [=](const std::string& name, const Tol& tol) {
            const DisGap portable = dis_gap(st->gpu, st->cpu, H, W, Hb, Wb, tol);
            report_dis(name + " vs CPU portable", portable, portable.in_view / 100);
            if (o.spatial_propagation) {
              DisOptions plain = o;
              plain.spatial_propagation = false;
              corr_detail::simd_force(corr_detail::Simd::Portable);
              run_with(false, st->cpu_plain, plain);
              corr_detail::simd_unforce();
              const DisGap skip = dis_gap(st->cpu_plain, st->cpu, H, W, Hb, Wb, tol);
              // Of the wrong region, the pixels within 0.5 px of the true flow: what the sweeps
              // repaired (the search alone cannot).
              auto repaired = [&](const std::vector<float>& f) {
                size_t n = 0, good = 0;
                for (int y = H / 4; y < 3 * H / 4; ++y)
                  for (int x = W / 3; x < 2 * W / 3; ++x, ++n) {
                    const size_t i = (size_t)y * W + x;
                    good += std::fabs(f[i] - dx) < 0.5 && std::fabs(f[N + i] - dy) < 0.5;
                  }
                return 100.0 * double(good) / double(std::max<size_t>(n, 1));
              };
              const double with = repaired(st->cpu), without = repaired(st->cpu_plain);
              report(skip.far > portable.in_view / 100 && with >= 90 && without < 50,
                     fmt("%-62s %zu/%zu in view beyond 1e-3 px (must exceed %zu); wrong region "
                         "repaired %.1f%% with, %.1f%% without",
                         (name + " CPU without propagation").c_str(), skip.far, skip.in_view,
                         portable.in_view / 100, with, without));
            }
            if (corr_detail::simd_detected() == corr_detail::Simd::Portable) return;
            run(false, st->cpu_default);
            const DisGap own = dis_gap(st->cpu, st->cpu_default, H, W, Hb, Wb, tol);
            report_dis(name + " vs CPU default SIMD",
                       dis_gap(st->gpu, st->cpu_default, H, W, Hb, Wb, tol), 2 * own.far + 1);
          }};
}

// DisOptions with the patch grid, the scales and the variational iterations set.
DisOptions dis_options(int patch, int stride, int coarsest, int finest, int var_iters,
                       bool propagation = false) {
  const DisOptions d;
  return DisOptions{coarsest,  finest,      patch,       stride,      d.grad_iters,
                    var_iters, d.var_alpha, d.var_gamma, d.var_delta, propagation};
}

// ---- the layers of the networks --------------------------------------------------------------

// The tolerance of a row whose comparison derives a bound per element (--list says so).
constexpr Tol kDerivedTol{-1, -1};

// got against ref with a bound per element: d_i <= bound_i (exact equality always passes).
Cmp compare_bounded(const std::vector<float>& got, const std::vector<float>& ref,
                    const std::vector<double>& bound) {
  Cmp c;
  c.ok = got.size() == ref.size() && bound.size() == ref.size();
  double se = 0, sr = 0;
  for (size_t i = 0; c.ok && i < ref.size(); ++i) {
    const double r = ref[i], d = std::fabs(double(got[i]) - r);
    sr += r * r;
    if (double(got[i]) == r) continue;
    if (!(d <= bound[i])) c.ok = false;
    c.max_abs = std::max(c.max_abs, d);
    c.worst_ratio = std::max(c.worst_ratio, bound[i] > 0 ? d / bound[i] : INFINITY);
    se += d * d;
  }
  c.nmse = sr > 0 ? se / sr : se;
  return c;
}

// A float32 sum of K products in any order (blocked, fused or not) is within gamma_K sum |w x| of
// the exact value, gamma_K = K u / (1 - K u), u = 2^-24; the epilogue's bias add, batch-norm
// scale and shift add two roundings of the result. The CPU twin (packed GEMM) and the CUDA twin
// (shared-memory tiles) sum in different orders, so each lies within that bound of the float64
// oracle and within twice it of the other: bound_i = sides * (gamma_{K+2} sum_abs_i |scale| +
// 2u |ref_i|).
std::vector<double> sum_order_bound(const std::vector<float>& sum_abs,
                                    const std::vector<float>& ref, int64_t K,
                                    const std::vector<float>& scale, int64_t plane, double sides) {
  const double u = std::ldexp(1.0, -24), gamma = double(K + 2) * u / (1 - double(K + 2) * u);
  std::vector<double> b(ref.size());
  for (size_t i = 0; i < b.size(); ++i) {
    const double a = scale.empty() ? 1.0 : std::fabs(scale[i / plane]);
    b[i] = sides * (gamma * double(sum_abs[i]) * a + 2 * u * std::fabs(ref[i]));
  }
  return b;
}

// The flash-attention rule on top of the per-element bound (which allows any order's worst case):
// the CUDA twin's rms error against the float64 oracle is at most twice the CPU twin's, plus one
// ulp of the outputs' rms.
void report_rms_rule(const std::string& name, const std::vector<float>& gpu,
                     const std::vector<float>& cpu, const std::vector<float>& ref) {
  double eg = 0, ec = 0, r2 = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    eg += (double(gpu[i]) - ref[i]) * (double(gpu[i]) - ref[i]);
    ec += (double(cpu[i]) - ref[i]) * (double(cpu[i]) - ref[i]);
    r2 += double(ref[i]) * ref[i];
  }
  const double n = double(std::max<size_t>(ref.size(), 1)), rg = std::sqrt(eg / n),
               rc = std::sqrt(ec / n), slack = std::ldexp(std::sqrt(r2 / n), -23);
  report(gpu.size() == ref.size() && rg <= 2 * rc + slack,
         fmt("%-62s rms err cuda %.3g, cpu %.3g (allowed 2x + %.2g)",
             (name + " vs float64, rms").c_str(), rg, rc, slack));
}

std::vector<float> abs_of(std::vector<float> v) {
  for (float& x : v) x = std::fabs(x);
  return v;
}

struct ConvShape {
  int in, out, k, stride, dil, H, W;
  nn::Act act;
  bool bn;
};

std::string conv_name(const ConvShape& s) {
  static const char* acts[] = {"none", "relu", "leaky"};
  return fmt("%d->%d k%d s%d d%d %dx%d %s%s", s.in, s.out, s.k, s.stride, s.dil, s.H, s.W,
             acts[int(s.act)], s.bn ? " bn" : "");
}

Trial nn_conv2d_trial(ConvShape s, uint64_t seed) {
  struct St {
    nn::Conv c;
    std::vector<float> x, cpu, gpu, ref, sum_abs;
    int64_t K = 0, plane = 0;
  };
  auto st = state<St>();
  nn::Conv& c = st->c;
  c.in = s.in;
  c.out = s.out;
  c.k = s.k;
  c.stride = s.stride;
  c.dil = s.dil;
  c.pad = s.k == 1 ? 0 : s.dil;
  c.act = s.act;
  st->K = int64_t(s.in) * s.k * s.k;
  c.weight = randn(size_t(s.out) * st->K, seed, float(std::sqrt(2.0 / double(st->K))));
  c.bias = randn(size_t(s.out), seed + 1, 0.1f);
  if (s.bn) {
    c.bn_scale = randn(size_t(s.out), seed + 2, 0.3f);
    for (float& v : c.bn_scale) v += 1.f;
    c.bn_shift = randn(size_t(s.out), seed + 3, 0.1f);
  }
  st->x = randn(size_t(s.in) * s.H * s.W, seed + 4);
  const int Ho = nn::conv_out_size(s.H, c.k, c.stride, c.pad, c.dil),
            Wo = nn::conv_out_size(s.W, c.k, c.stride, c.pad, c.dil);
  st->plane = int64_t(Ho) * Wo;
  const size_t n = size_t(s.out) * st->plane;
  st->ref.resize(n);
  nn::conv2d_naive(c, st->x.data(), s.H, s.W, st->ref.data());
  nn::Conv a = c;  // sum |w x| + |bias| per output: the same loops on absolute values
  a.weight = abs_of(c.weight);
  a.bias = abs_of(c.bias);
  a.bn_scale.clear();
  a.bn_shift.clear();
  a.act = nn::Act::None;
  st->sum_abs.resize(n);
  nn::conv2d_naive(a, abs_of(st->x).data(), s.H, s.W, st->sum_abs.data());
  st->cpu.resize(n);
  st->gpu.assign(n, NAN);
  return {[st, s] { nn::conv2d_cpu(st->c, st->x.data(), s.H, s.W, st->cpu.data(), Exec{}); },
          [st, s] { nn::conv2d_cuda(st->c, st->x.data(), s.H, s.W, st->gpu.data(), Exec{}); },
          [st](const std::string& name, const Tol&) {
            for (double sides : {2.0, 1.0}) {
              const auto& other = sides == 2 ? st->cpu : st->ref;
              report_cmp(name + (sides == 2 ? " vs CPU" : " vs float64"),
                         compare_bounded(st->gpu, other,
                                         sum_order_bound(st->sum_abs, other, st->K, st->c.bn_scale,
                                                         st->plane, sides)));
            }
            report_rms_rule(name, st->gpu, st->cpu, st->ref);
          }};
}

Trial nn_conv_transpose2d_trial(int in, int out, int H, int W, uint64_t seed) {
  struct St {
    nn::Deconv d;
    std::vector<float> w, x, cpu, gpu, ref, sum_abs;
  };
  auto st = state<St>();
  st->d.in = in;
  st->d.out = out;
  st->w = randn(size_t(in) * out * 16, seed, float(std::sqrt(1.0 / in)));
  st->d.bias = randn(size_t(out), seed + 1, 0.1f);
  nn::set_deconv_weight(st->d, st->w.data());
  st->x = randn(size_t(in) * H * W, seed + 2);
  const size_t n = size_t(out) * 4 * H * W;
  st->ref.resize(n);
  st->sum_abs.resize(n);
  nn::conv_transpose2d_naive(st->w.data(), st->d.bias.data(), in, out, st->x.data(), H, W,
                             st->ref.data());
  nn::conv_transpose2d_naive(abs_of(st->w).data(), abs_of(st->d.bias).data(), in, out,
                             abs_of(st->x).data(), H, W, st->sum_abs.data());
  st->cpu.resize(n);
  st->gpu.assign(n, NAN);
  // Each output sums at most 4 in products and the bias, in some order: K = 4 in + 4 covers it.
  return {
      [st, H, W] { nn::conv_transpose2d_cpu(st->d, st->x.data(), H, W, st->cpu.data(), Exec{}); },
      [st, H, W] { nn::conv_transpose2d_cuda(st->d, st->x.data(), H, W, st->gpu.data(), Exec{}); },
      [st, in](const std::string& name, const Tol&) {
        for (double sides : {2.0, 1.0}) {
          const auto& other = sides == 2 ? st->cpu : st->ref;
          report_cmp(name + (sides == 2 ? " vs CPU" : " vs float64"),
                     compare_bounded(
                         st->gpu, other,
                         sum_order_bound(st->sum_abs, other, 4 * int64_t(in) + 4, {}, 1, sides)));
        }
        report_rms_rule(name, st->gpu, st->cpu, st->ref);
      }};
}

// An in-place layer x -> f(x) (leaky_relu, l2norm_channels, mutual_matching): both twins start
// from the same input.
template <typename Cpu, typename Cuda>
Trial nn_inplace_trial(std::vector<float> x, Cpu cpu, Cuda cuda) {
  struct St {
    std::vector<float> x, cpu, gpu;
  };
  auto st = state<St>();
  st->x = std::move(x);
  return {[st, cpu] {
            st->cpu = st->x;
            cpu(st->cpu.data());
          },
          [st, cuda] {
            st->gpu = st->x;
            cuda(st->gpu.data());
          },
          compare_one(st)};
}

// A layer in (n_in) -> out (n_out) with both twins writing their own output.
template <typename Cpu, typename Cuda>
Trial nn_map_trial(std::vector<float> in, size_t n_out, Cpu cpu, Cuda cuda) {
  struct St {
    std::vector<float> in, cpu, gpu;
  };
  auto st = state<St>();
  st->in = std::move(in);
  st->cpu.resize(n_out);
  st->gpu.assign(n_out, NAN);
  return {[st, cpu] { cpu(st->in.data(), st->cpu.data()); },
          [st, cuda] { cuda(st->in.data(), st->gpu.data()); }, compare_one(st)};
}

// The warp's input: C feature planes then the flow (2, H, W) of N(0, sigma) pixels, a few of them
// far outside the image (the mask's zero case).
std::vector<float> warp_input(int C, int H, int W, double sigma, uint64_t seed) {
  std::vector<float> v = randn(size_t(C) * H * W, seed);
  std::vector<float> f = noisy_flow(H, W, 0.3, -0.2, sigma, seed + 1);
  for (size_t i = 0; i < f.size(); i += 37) f[i] *= 40.f;
  v.insert(v.end(), f.begin(), f.end());
  return v;
}

void add_nn_cases(std::vector<Case>& t) {
  auto add = [&t](std::string op, std::string shape, Tol tol, std::function<Trial()> make) {
    t.push_back(Case{std::move(op), std::move(shape), tol, std::move(make)});
  };
  constexpr Tol exact{0, 0};
  using nn::Act;
  // The networks' convolutions at small sizes: PWC-Net's strided pyramid (3 -> 16, im2col) and
  // its shifted-view levels (taps), a dense decoder's 565 -> 128 and prediction 565 -> 2 (a
  // partial tile), the context network's dilations 4 and 16 with batch norm (GLU), GLU's VGG (3
  // -> 64 ReLU, 64 -> 128 ReLU taps) and mapping decoder (258 -> 128 batch norm ReLU), 1x1 and
  // odd sizes. The tolerance is derived per element (sum_order_bound).
  const Tol derived = kDerivedTol;
  uint64_t seed = 300;
  for (const ConvShape& s : std::vector<ConvShape>{{3, 16, 3, 2, 1, 64, 48, Act::Leaky, false},
                                                   {16, 16, 3, 1, 1, 32, 24, Act::Leaky, false},
                                                   {16, 32, 3, 2, 1, 31, 23, Act::Leaky, false},
                                                   {565, 128, 3, 1, 1, 8, 8, Act::Leaky, false},
                                                   {565, 2, 3, 1, 1, 8, 8, Act::None, false},
                                                   {128, 128, 3, 1, 4, 12, 12, Act::Leaky, true},
                                                   {96, 64, 3, 1, 16, 10, 14, Act::Leaky, true},
                                                   {3, 64, 3, 1, 1, 32, 32, Act::Relu, false},
                                                   {64, 128, 3, 1, 1, 16, 16, Act::Relu, false},
                                                   {258, 128, 3, 1, 1, 16, 16, Act::Relu, true},
                                                   {37, 21, 1, 1, 1, 9, 13, Act::None, false}}) {
    add("nn::conv2d", conv_name(s), derived, [s, seed] { return nn_conv2d_trial(s, seed); });
    seed += 5;
  }
  // Flow and feature upsampling: deconv 2 -> 2, PWC-Net's upfeat (597 -> 2), GLU's (531 -> 2).
  for (const std::array<int, 4>& d :
       std::vector<std::array<int, 4>>{{2, 2, 16, 12}, {597, 2, 8, 8}, {531, 2, 7, 9}}) {
    add("nn::conv_transpose2d", fmt("%d->%d %dx%d", d[0], d[1], d[2], d[3]), derived,
        [d] { return nn_conv_transpose2d_trial(d[0], d[1], d[2], d[3], 360 + d[0]); });
  }
  // The rest repeat the CPU's operations in order: exact.
  for (int64_t n : {int64_t(81) * 16 * 16, int64_t(1001)}) {
    add("nn::leaky_relu", fmt("n %lld", (long long)n), exact, [n] {
      return nn_inplace_trial(
          randn(size_t(n), 370), [n](float* x) { nn::leaky_relu_cpu(x, n, Exec{}); },
          [n](float* x) { nn::leaky_relu_cuda(x, n, Exec{}); });
    });
  }
  struct Wp {
    int C, H, W;
    double sigma;
    bool mask;
  };
  for (const Wp& w : std::vector<Wp>{{32, 48, 40, 3.0, true},
                                     {196, 4, 4, 1.0, true},
                                     {128, 16, 16, 2.0, false},
                                     {3, 1, 9, 2.0, true}}) {
    add("nn::warp", fmt("C%d %dx%d flow N(0, %g)%s", w.C, w.H, w.W, w.sigma, w.mask ? " mask" : ""),
        exact, [w] {
          const size_t n = size_t(w.C) * w.H * w.W;
          return nn_map_trial(
              warp_input(w.C, w.H, w.W, w.sigma, 380), n,
              [w, n](const float* in, float* out) {
                nn::warp_cpu(in, in + n, w.C, w.H, w.W, w.mask, out, Exec{});
              },
              [w, n](const float* in, float* out) {
                nn::warp_cuda(in, in + n, w.C, w.H, w.W, w.mask, out, Exec{});
              });
        });
  }
  struct Rs {
    int C, Hi, Wi, Ho, Wo;
  };
  // Flow upsampling, PWC-Net's input resize, the identity; GLU's area resizes of its inputs and
  // of 256-channel features. Both resizers have one signature.
  struct ResizeOp {
    const char* op;
    decltype(&nn::resize_area_cpu) cpu, cuda;
    std::vector<Rs> shapes;
  };
  for (const ResizeOp& o :
       std::vector<ResizeOp>{{"nn::resize_bilinear",
                              nn::resize_bilinear_cpu,
                              nn::resize_bilinear_cuda,
                              {{2, 32, 32, 64, 48}, {3, 100, 70, 64, 64}, {2, 37, 29, 37, 29}}},
                             {"nn::resize_area",
                              nn::resize_area_cpu,
                              nn::resize_area_cuda,
                              {{3, 300, 260, 256, 256}, {256, 24, 20, 9, 7}, {1, 1, 5, 1, 2}}}}) {
    for (const Rs& r : o.shapes) {
      add(o.op, fmt("C%d %dx%d -> %dx%d", r.C, r.Hi, r.Wi, r.Ho, r.Wo), exact, [r, o] {
        return nn_map_trial(
            randn(size_t(r.C) * r.Hi * r.Wi, 390), size_t(r.C) * r.Ho * r.Wo,
            [r, f = o.cpu](const float* in, float* out) {
              f(in, r.C, r.Hi, r.Wi, out, r.Ho, r.Wo, Exec{});
            },
            [r, f = o.cuda](const float* in, float* out) {
              f(in, r.C, r.Hi, r.Wi, out, r.Ho, r.Wo, Exec{});
            });
      });
    }
  }
  for (const Rs& r : std::vector<Rs>{{64, 32, 32, 16, 16}, {5, 7, 9, 3, 4}}) {
    add("nn::maxpool2", fmt("C%d %dx%d", r.C, r.Hi, r.Wi), exact, [r] {
      return nn_map_trial(
          randn(size_t(r.C) * r.Hi * r.Wi, 392), size_t(r.C) * r.Ho * r.Wo,
          [r](const float* in, float* out) { nn::maxpool2_cpu(in, r.C, r.Hi, r.Wi, out, Exec{}); },
          [r](const float* in, float* out) {
            nn::maxpool2_cuda(in, r.C, r.Hi, r.Wi, out, Exec{});
          });
    });
  }
  // GLU-Net's level 4: 512-channel features and the 256-channel correlation, 16 x 16.
  for (int C : {512, 256, 3}) {
    add("nn::l2norm_channels", fmt("C%d 16x16", C), exact, [C] {
      return nn_inplace_trial(
          randn(size_t(C) * 256, 393),
          [C](float* x) { nn::l2norm_channels_cpu(x, C, 16, 16, Exec{}); },
          [C](float* x) { nn::l2norm_channels_cuda(x, C, 16, 16, Exec{}); });
    });
  }
  // The correlation of unit features: values in [-1, 1].
  for (int N : {256, 13}) {
    add("nn::mutual_matching", fmt("N %d", N), exact, [N] {
      return nn_inplace_trial(
          randn(size_t(N) * N, 394, 0.4f), [N](float* v) { nn::mutual_matching_cpu(v, N, Exec{}); },
          [N](float* v) { nn::mutual_matching_cuda(v, N, Exec{}); });
    });
  }
  // The networks' float64 local GOCor (radius 4): PWC-Net-GOCor's levels 2 (32 channels) and 6
  // (196), GLU-Net-GOCor's 1/4 level (128), K = 3 and 7, initial and perturbed parameters, and
  // no iteration. Both twins keep every intermediate in double and round the volume to float32
  // once; their sums run in different orders (the CPU's in SIMD lanes), so the doubles differ by
  // a few ulps of double, amplified by the iterations far less than to a float32 ulp (2^-29
  // relative). Two such doubles round to the same float or to neighbours: |d| <= 2^-23 |cpu|,
  // plus 1e-12 for values near zero.
  struct G64 {
    const char* tag;
    int C, H, W, K;
  };
  for (const G64& g : std::vector<G64>{{"init", 32, 16, 24, 3},
                                       {"pert", 196, 5, 7, 7},
                                       {"pert", 128, 12, 10, 3},
                                       {"pert", 8, 3, 4, 0}}) {
    add("nn::gocor_local_f64", fmt("%s C%d %dx%d K%d", g.tag, g.C, g.H, g.W, g.K),
        Tol{1e-12, std::ldexp(1.0, -23)}, [g] {
          const LocalGocorParams p =
              std::strcmp(g.tag, "init") == 0 ? default_local_params() : perturbed_local(g.C);
          const size_t n = size_t(g.C) * g.H * g.W;
          std::vector<float> in = randn(n, 395, 0.5f), q = randn(n, 396, 0.5f);
          in.insert(in.end(), q.begin(), q.end());
          return nn_map_trial(
              std::move(in), size_t(81) * g.H * g.W,
              [g, p, n](const float* x, float* out) {
                nn::gocor_local_f64_cpu(p, g.K, x, x + n, out, g.C, g.H, g.W, Exec{});
              },
              [g, p, n](const float* x, float* out) {
                nn::gocor_local_f64_cuda(p, g.K, x, x + n, out, g.C, g.H, g.W, Exec{});
              });
        });
  }
}

// ---- the table ---------------------------------------------------------------------------------

std::vector<Case> all_cases() {
  std::vector<Case> t;
  auto add = [&t](std::string op, std::string shape, Tol tol, std::function<Trial()> make) {
    t.push_back(Case{std::move(op), std::move(shape), tol, std::move(make)});
  };
  constexpr Tol exact{0, 0};

  // Raw N(0,1) features: global products are O(sqrt(C)), so the absolute part scales with it.
  const std::vector<CorrGlobalShape> global_shapes{{2, 37, 13, 17, 11, 9},
                                                   {3, 64, 16, 16, 16, 16},
                                                   {1, 130, 33, 31, 29, 35},
                                                   {2, 128, 64, 64, 32, 32},
                                                   {1, 3, 1, 1, 1, 7}};
  for (size_t i = 0; i < global_shapes.size(); ++i) {
    const CorrGlobalShape s = global_shapes[i];
    add("corr_global", fmt("B%d C%d %dx%d q%dx%d", s.B, s.C, s.H, s.W, s.Hq, s.Wq),
        Tol{2e-5 * std::sqrt(double(s.C)), 1e-4}, [s, i] { return corr_global_trial(s, 11 + i); });
  }
  t.push_back(
      Case{"corr_global", "errors: a 360 GB volume, C = 0", exact, corr_errors_trial, false});
  // Register-tiled radii 1..3 on rows of a multiple of 4 (16-byte staging), odd heights.
  const std::vector<CorrLocalShape> local_shapes{
      {2, 19, 13, 21, 1}, {2, 32, 16, 16, 4}, {1, 100, 29, 37, 4},
      {2, 17, 11, 40, 7}, {1, 8, 5, 3, 0},    {1, 9, 3, 70, 2},
      {2, 21, 13, 36, 1}, {2, 12, 9, 44, 2},  {1, 10, 17, 40, 3}};
  for (size_t i = 0; i < local_shapes.size(); ++i) {
    const CorrLocalShape s = local_shapes[i];
    add("corr_local", fmt("B%d C%d %dx%d R%d", s.B, s.C, s.H, s.W, s.R), Tol{2e-5, 1e-4},
        [s, i] { return corr_local_trial(s, 21 + i); });
  }

  // Global GOCor: init parameters (GLU-Net constructor) and perturbed ones, query term on/off.
  struct G {
    const char* tag;
    int C;
    uint64_t pseed;
    GlobalGocorOptions o;
    GocorGlobalShape s;
    uint64_t seed;
    bool ref64;
  };
  // Larger grids last: the R^T R stencil's 64 x 64 query tiles (two tiles, 4-byte staging) and
  // its 32 x 32 tiles with 16-byte staging.
  for (const G& g : std::vector<G>{{"init", 16, 3, {3, true}, {1, 16, 8, 8}, 31, true},
                                   {"pert", 16, 4, {3, true}, {1, 16, 8, 8}, 32, true},
                                   {"pert", 16, 5, {3, false}, {2, 16, 8, 8}, 33, true},
                                   {"pert", 24, 6, {3, true}, {2, 24, 7, 9}, 34, false},
                                   {"pert", 33, 7, {2, true}, {3, 33, 5, 12}, 35, false},
                                   {"init", 64, 8, {3, true}, {2, 64, 16, 16}, 36, false},
                                   {"pert", 64, 9, {3, true}, {2, 64, 16, 16}, 37, false},
                                   {"pert", 48, 10, {3, false}, {2, 48, 13, 11}, 38, false},
                                   {"pert", 16, 11, {1, true}, {1, 16, 1, 6}, 39, false},
                                   {"init", 32, 12, {0, true}, {2, 32, 6, 6}, 40, false},
                                   {"pert", 16, 13, {2, true}, {2, 16, 66, 6}, 41, true},
                                   {"pert", 24, 14, {2, true}, {2, 24, 24, 28}, 42, false}}) {
    add("gocor_global",
        fmt("%s B%d C%d %dx%d K%d q=%d", g.tag, g.s.B, g.s.C, g.s.H, g.s.W, g.o.num_iter,
            int(g.o.apply_query_loss)),
        kGocorVolume, [g] {
          const bool init = std::strcmp(g.tag, "init") == 0;
          return gocor_global_trial(
              init ? default_global_params(g.C, g.pseed) : perturbed_global(g.C, g.pseed), g.o, g.s,
              g.seed, g.ref64);
        });
  }
  // Local GOCor: K = 3 and 7 (spec 6), radius 4 (official) and others.
  struct L {
    const char* tag;
    uint64_t pseed;
    LocalGocorOptions o;
    int B, C, H, W;
    uint64_t seed;
    bool ref64;
  };
  for (const L& l : std::vector<L>{{"init", 0, {3, 4}, 1, 32, 16, 16, 51, true},
                                   {"pert", 1, {7, 4}, 1, 32, 16, 16, 52, true},
                                   {"pert", 2, {3, 4}, 2, 37, 21, 19, 53, false},
                                   {"pert", 3, {3, 7}, 2, 16, 13, 29, 54, false},
                                   {"pert", 4, {2, 1}, 3, 96, 9, 17, 55, false},
                                   {"init", 0, {7, 2}, 1, 8, 40, 3, 56, false}}) {
    add("gocor_local",
        fmt("%s B%d C%d %dx%d R%d K%d", l.tag, l.B, l.C, l.H, l.W, l.o.search_radius, l.o.num_iter),
        kGocorVolume, [l] {
          const bool init = std::strcmp(l.tag, "init") == 0;
          return gocor_local_trial(init ? default_local_params() : perturbed_local(l.pseed), l.o,
                                   l.B, l.C, l.H, l.W, l.seed, l.ref64);
        });
  }
  t.push_back(Case{"gocor_local", "4 host threads at once", kGocorVolume,
                   gocor_local_concurrent_trial, false});

  // Match stages. Resampled images are O(1): 1e-6 is ~16 ulps.
  add("image_resize", "C3 37x53 -> 19x71", Tol{1e-6, 0},
      [] { return image_resize_trial(3, 37, 53, 19, 71, 61); });
  add("image_resize", "C1 512x512 -> 128x128", Tol{1e-6, 0},
      [] { return image_resize_trial(1, 512, 512, 128, 128, 62); });
  add("image_resize", "C2 45x31 -> 45x31", Tol{1e-6, 0},
      [] { return image_resize_trial(2, 45, 31, 45, 31, 63); });
  // Unit-norm descriptors: 1e-6 is ~16 ulps. The levels match_images builds for 512x512 (global
  // 24x24 at cell 8, the finest 128x128 at cell 4: 16384 cells, several chunks of the ordered
  // per-channel sums), and a blank image (exact zeros).
  struct F {
    int C, H, W, Hf, Wf, cell;
    uint64_t seed;
  };
  for (const F& f : std::vector<F>{{3, 61, 83, 15, 21, 4, 64},
                                   {1, 96, 128, 16, 16, 8, 65},
                                   {3, 128, 128, 32, 32, 4, 66},
                                   {3, 512, 512, 24, 24, 8, 68},
                                   {1, 512, 512, 128, 128, 4, 69}}) {
    add("features_compute", fmt("C%d %dx%d -> %dx%d cell %d", f.C, f.H, f.W, f.Hf, f.Wf, f.cell),
        Tol{1e-6, 0},
        [f] { return features_trial(f.C, f.H, f.W, f.Hf, f.Wf, f.cell, f.seed, false); });
  }
  add("features_compute", "blank C3 40x48 -> 10x12 cell 4 (zeros)", exact,
      [] { return features_trial(3, 40, 48, 10, 12, 4, 0, true); });

  add("flow_warp", "C7 13x17 -> 11x19, flows +-8 px", Tol{1e-6, 1e-6},
      [] { return flow_warp_trial(67); });
  add("flow_resample", "11x19 -> 23x29", Tol{1e-6, 1e-6}, [] {
    return flow_resample_trial(FlowGrid{11, 19, 3.0, 2.8}, FlowGrid{23, 29, 1.3, 1.1}, 68);
  });
  add("flow_resample", "128x128 cell 4 -> 512x512", Tol{1e-6, 1e-6}, [] {
    return flow_resample_trial(FlowGrid{128, 128, 4, 4}, FlowGrid{512, 512, 1, 1}, 69);
  });
  add("flow_median3", "11x19 (exact)", exact, [] { return flow_median3_trial(11, 19, 70); });
  add("flow_median3", "128x128 (exact)", exact, [] { return flow_median3_trial(128, 128, 71); });
  // Flows are differences of pixel positions up to ~50 px: a few ulps of 50.
  add("flow_from_global_volume", "11x19 <- 13x17", Tol{1e-5, 0}, [] {
    return flow_from_global_volume_trial(FlowGrid{11, 19, 3.0, 2.8}, FlowGrid{13, 17, 2.5, 3.0},
                                         72);
  });
  add("flow_from_global_volume", "24x24 <- 24x24 cell 21.3", Tol{1e-5, 0}, [] {
    const FlowGrid g{24, 24, 512.0 / 24, 512.0 / 24};
    return flow_from_global_volume_trial(g, g, 73);
  });
  for (int R : {2, 4}) {
    add("flow_from_local_volume", fmt("R%d 13x17", R), Tol{1e-6, 0},
        [R] { return flow_from_local_volume_trial(R, 13, 17, 74 + R); });
  }
  add("flow_from_local_volume", "R4 128x128", Tol{1e-6, 0},
      [] { return flow_from_local_volume_trial(4, 128, 128, 79); });
  add("flow_warp_image", "C3 21x26 -> 19x23", Tol{1e-6, 0},
      [] { return flow_warp_image_trial(3, 21, 26, 19, 23, 80); });
  add("flow_warp_image", "C3 512x512 -> 512x512", Tol{1e-6, 0},
      [] { return flow_warp_image_trial(3, 512, 512, 512, 512, 81); });
  add("flow_refine_symmetric", "C136 24x28 cell 4, 3 iterations", Tol{1e-5, 0},
      [] { return flow_refine_symmetric_trial(96, 112, 4, 3, 82); });

  // The image pipeline's checks. R = 4 volumes (D = 81) aggregated over 5x5 cells as match does,
  // windows wider than the grid, radius 0 (a no-op), and the finest level of a 512x512 pair.
  struct A {
    int D, H, W, r;
  };
  for (const A& a : std::vector<A>{
           {81, 23, 31, 2}, {25, 9, 40, 3}, {9, 5, 3, 4}, {49, 7, 11, 0}, {81, 128, 128, 2}}) {
    add("flow_volume_aggregate", fmt("D%d %dx%d r%d", a.D, a.H, a.W, a.r),
        aggregate_tol(a.H, a.W, a.r),
        [a] { return flow_volume_aggregate_trial(a.D, a.H, a.W, a.r, 90 + a.D + a.r); });
  }
  // Errors are exact (the twin repeats the CPU's float operations); the valid mask is exact
  // except on the threshold (report_mask).
  add("flow_consistency", "37x53 into 41x47, tol 0.75 px + 0.1", exact,
      [] { return flow_consistency_trial(37, 53, 41, 47, 0.75f, 0.1f, 1.0, true, true, 95); });
  add("flow_consistency", "64x48 into 48x64, tol 3 px + 0.1, valid only", exact,
      [] { return flow_consistency_trial(64, 48, 48, 64, 3.f, 0.1f, 3.0, true, false, 96); });
  add("flow_consistency", "61x67 into 61x67, tol 0, error only", exact,
      [] { return flow_consistency_trial(61, 67, 61, 67, 0.f, 0.f, 1.0, false, true, 97); });
  add("flow_consistency", "512x512 into 512x512, tol 0.75 px + 0.1", exact,
      [] { return flow_consistency_trial(512, 512, 512, 512, 0.75f, 0.1f, 1.0, true, true, 98); });
  // The mask is exact except on the threshold (report_mask). match's radius 4 and gradient 0.01,
  // a window of one pixel, and a 512x384 image.
  constexpr TextureMeasure eig = TextureMeasure::SmallerEigenvalue, grad = TextureMeasure::Gradient;
  add("flow_texture_mask", "61x83 r4 gradient 0.01", exact,
      [] { return flow_texture_mask_trial(61, 83, 4, 0.01f, eig, 100); });
  add("flow_texture_mask", "40x29 r1 gradient 0.02", exact,
      [] { return flow_texture_mask_trial(40, 29, 1, 0.02f, eig, 101); });
  add("flow_texture_mask", "384x512 r4 gradient 0.01", exact,
      [] { return flow_texture_mask_trial(384, 512, 4, 0.01f, eig, 102); });
  add("flow_texture_mask", "61x83 r0 trace 0.002 (flat pixels)", exact,
      [] { return flow_texture_mask_trial(61, 83, 0, 0.002f, grad, 103); });
  add("flow_texture_mask", "40x29 r2 trace 0.02", exact,
      [] { return flow_texture_mask_trial(40, 29, 2, 0.02f, grad, 104); });
  // The sparse-to-dense fill: match's options (stride 4, K 32, affine), a weighted average with no
  // blur, stride 1 among 70% untrusted pixels (long geodesic paths around the holes), grey and
  // colour, a 256x320 image, and no trusted pixel at all (the flow comes back as it is).
  add("flow_interpolate", "C3 61x83 stride 4 K32 affine, 10% untrusted", kInterpTol,
      [] { return flow_interpolate_trial(3, 61, 83, 0.1, interp_options(4, 32, true, 1.f), 110); });
  add("flow_interpolate", "C1 40x29 stride 3 K8 average, no blur", kInterpTol,
      [] { return flow_interpolate_trial(1, 40, 29, 0.1, interp_options(3, 8, false, 0.f), 111); });
  add("flow_interpolate", "C1 37x45 stride 1 K16 affine, 70% untrusted", kInterpTol,
      [] { return flow_interpolate_trial(1, 37, 45, 0.7, interp_options(1, 16, true, 2.f), 112); });
  add("flow_interpolate",
      "C3 61x83 stride 4 K32 average, keep_valid (match's fills), 30% untrusted", kInterpTol, [] {
        InterpOptions o = interp_options(4, 32, false, 1.f);
        o.keep_valid = true;
        return flow_interpolate_trial(3, 61, 83, 0.3, o, 113);
      });
  add("flow_interpolate", "C3 256x320 stride 4 K32 affine, 5% untrusted", kInterpTol, [] {
    return flow_interpolate_trial(3, 256, 320, 0.05, interp_options(4, 32, true, 1.f), 113);
  });
  add("flow_interpolate", "C1 19x23 nothing trusted (a copy)", exact, [] {
    return flow_interpolate_trial(1, 19, 23, 0, interp_options(4, 32, true, 1.f), 114, true);
  });
  // DIS (its criterion in report_dis): the defaults on a sub-pixel shift, b of another size with
  // the result upsampled from scale 1 and no variational step, small patches at a fine stride,
  // and an image smaller than a patch (the seed comes back unchanged).
  constexpr Tol kDisTol{1e-3, 0};  // for 99% of the in-view pixels
  add("flow_refine_dis", "64x80 shift (2.3, -1.4), defaults", kDisTol,
      [] { return flow_refine_dis_trial(64, 80, 64, 80, 2.3, -1.4, DisOptions{}, 120); });
  add("flow_refine_dis", "97x131 into 89x120, patch 6 stride 3, scales 3..1, no var", kDisTol, [] {
    return flow_refine_dis_trial(97, 131, 89, 120, -3.6, 2.2, dis_options(6, 3, 3, 1, 0), 121);
  });
  add("flow_refine_dis", "256x320 shift (5.5, 3.25), defaults", kDisTol,
      [] { return flow_refine_dis_trial(256, 320, 256, 320, 5.5, 3.25, DisOptions{}, 122); });
  add("flow_refine_dis", "12x12 patch 16 (unchanged)", kDisTol, [] {
    return flow_refine_dis_trial(12, 12, 12, 12, 1.5, 0.5, dis_options(16, 4, 3, 0, 5), 123);
  });
  // Spatial propagation (two sweeps in stripes of 32 patch rows), each seed with a wrong region
  // the sweeps must repair: one scale without and with the variational step (17 and 47 patch rows:
  // one stripe, two), b of another size over scales 2..1, and the defaults (match's preset) over
  // 4 scales at 280x320 (69 patch rows at scale 0: three stripes, the last one of 5 rows).
  add("flow_refine_dis", "propagation 72x96 scale 0, no var, 12 px wrong region", kDisTol, [] {
    return flow_refine_dis_trial(72, 96, 72, 96, 3.3, -1.6, dis_options(8, 4, 0, 0, 0, true), 124,
                                 12);
  });
  add("flow_refine_dis", "propagation 192x136 scale 0, var 5, 14 px wrong region", kDisTol, [] {
    return flow_refine_dis_trial(192, 136, 192, 136, -2.6, 4.2, dis_options(8, 4, 0, 0, 5, true),
                                 125, 14);
  });
  add("flow_refine_dis",
      "propagation 131x163 into 120x150, patch 6 stride 3, scales 2..1, 30 px wrong", kDisTol, [] {
        return flow_refine_dis_trial(131, 163, 120, 150, 4.6, 1.2, dis_options(6, 3, 2, 1, 5, true),
                                     126, 30);
      });
  add("flow_refine_dis", "propagation 280x320 defaults, 72 px wrong region", kDisTol, [] {
    DisOptions o;
    o.spatial_propagation = true;
    return flow_refine_dis_trial(280, 320, 280, 320, 5.5, 3.25, o, 127, 72);
  });
  add_nn_cases(t);
  return t;
}

#else

std::vector<Case> all_cases() {
  return {};  // a build without the CUDA backend has no twins to compare
}

#endif  // GOCOR_WITH_CUDA

// ---- running the table -------------------------------------------------------------------------

std::string case_name(const Case& c) {
  return c.op + " " + c.shape;
}

// Makes the case's inputs and runs fn on them; a throw is reported as a failure of the case.
void with_trial(const Case& c, const std::function<void(Trial&)>& fn) {
  try {
    Trial t = c.make();
    fn(t);
  } catch (const std::exception& e) {
    report(false, case_name(c) + ": threw " + e.what());
  }
}

// The no-device contract (runs everywhere): dispatch, then the CUDA twin of every operation in
// the selection (its first case) throws CudaUnavailable.
int run_unavailable(const CudaInfo& info, const std::vector<Case>& cases, bool dispatch) {
  report(!info.available && !info.reason.empty(),
         "cuda_info(): available=false with a reason (" + info.reason + ")");
  std::string what;
  if (dispatch) {
    const CorrGlobalShape s{2, 5, 3, 4, 2, 3};
    const auto ref = randn((size_t)s.B * s.C * s.H * s.W, 1),
               q = randn((size_t)s.B * s.C * s.Hq * s.Wq, 2);
    std::vector<float> out((size_t)s.B * s.Hq * s.Wq * s.H * s.W), expect(out.size());
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
    // A layer of the networks (its twin pending GPU parity) checks the device all the same.
    std::vector<float> x = ref, expect_x = ref;
    thrown = throws_code([&] { nn::leaky_relu(x.data(), int64_t(x.size()), cuda_ex); },
                         ErrorCode::CudaUnavailable, &what);
    report(thrown, "nn::leaky_relu(Device::Cuda) throws CudaUnavailable: " + what);
    report(resolve_device(Device::Auto) == Device::Cpu, "resolve_device(Auto) == Cpu");
    Exec auto_ex;
    auto_ex.device = Device::Auto;
    try {
      corr_global(ref.data(), q.data(), out.data(), s, auto_ex);
      corr_global_naive(ref.data(), q.data(), expect.data(), s);
      report_cmp("corr_global(Device::Auto) computes on the CPU",
                 compare(out, expect, Tol{1e-6, 1e-6}));
      nn::leaky_relu(x.data(), int64_t(x.size()), auto_ex);
      for (float& v : expect_x) v = v > 0.f ? v : 0.1f * v;
      report_cmp("nn::leaky_relu(Device::Auto) computes on the CPU",
                 compare(x, expect_x, Tol{0, 0}));
    } catch (const std::exception& e) {
      report(false, std::string("Device::Auto: threw ") + e.what());
    }
  }
#ifdef GOCOR_WITH_CUDA
  if (dispatch) {
    const CudaInfo probe = cuda_probe();
    report(probe.compiled && !probe.available && probe.reason == info.reason,
           "cuda_probe(): compiled, unavailable, cached reason");
  }
  std::map<std::string, bool> done;
  for (const Case& c : cases) {
    if (!c.twin || done[c.op]) continue;
    done[c.op] = true;
    with_trial(c, [&](Trial& t) {
      const bool thrown = throws_code(t.cuda, ErrorCode::CudaUnavailable, &what);
      report(thrown, c.op + "_cuda() without a device throws CudaUnavailable: " + what);
    });
  }
#endif
  std::printf("CUDA unavailable: %s\n", info.reason.c_str());
  return gocor_test::finish();
}

#ifdef GOCOR_WITH_CUDA

int run_available(const CudaInfo& info, const std::vector<Case>& cases, bool dispatch) {
  std::printf("device: %s (cc %d.%d, %.1f GiB), runtime %d, driver %d\n", info.name.c_str(),
              info.cc_major, info.cc_minor, info.total_memory / 1073741824.0, info.runtime_version,
              info.driver_version);
  // Dispatcher: Device::Cuda and Auto now go to the GPU.
  if (dispatch)
    report(resolve_device(Device::Auto) == Device::Cuda, "resolve_device(Auto) == Cuda");
  for (const Case& c : cases) {
    with_trial(c, [&](Trial& t) {
      t.cuda();
      if (t.cpu) t.cpu();
      if (t.compare) t.compare(case_name(c), c.tol);
    });
  }
  return gocor_test::finish();
}

// Median wall time of fn in milliseconds: one warm-up call, then enough calls for ~0.2 s (3 to 50).
double median_ms(const Fn& fn) {
  using clock = std::chrono::steady_clock;
  auto once = [&] {
    const auto a = clock::now();
    fn();
    return std::chrono::duration<double, std::milli>(clock::now() - a).count();
  };
  const double first = once();
  const int reps = std::clamp(int(200.0 / std::max(first, 1e-3)), 3, 50);
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) t.push_back(once());
  std::nth_element(t.begin(), t.begin() + reps / 2, t.end());
  return t[reps / 2];
}

int run_perf(const CudaInfo& info, const std::vector<Case>& cases) {
  std::printf(
      "device: %s; host threads %u; times are medians of the host-pointer twins, the CUDA "
      "ones with allocation and copies\n",
      info.name.c_str(), std::thread::hardware_concurrency());
  std::printf("%-24s %-48s %12s %12s %8s\n", "op", "shape", "cpu ms", "cuda ms", "cpu/cuda");
  int failed = 0;
  for (const Case& c : cases) {
    if (!c.twin) continue;
    try {
      Trial t = c.make();
      const double cpu = median_ms(t.cpu), cuda = median_ms(t.cuda);
      std::printf("%-24s %-48s %12.3f %12.3f %8.2f\n", c.op.c_str(), c.shape.c_str(), cpu, cuda,
                  cpu / cuda);
    } catch (const std::exception& e) {
      std::printf("%-24s %-48s threw %s\n", c.op.c_str(), c.shape.c_str(), e.what());
      failed++;
    }
    std::fflush(stdout);
  }
  return failed == 0 ? 0 : 1;
}

#endif  // GOCOR_WITH_CUDA

int usage(const char* msg) {
  std::fprintf(stderr, "%s\nusage: cuda_parity [--op NAME] [--perf] [--list]\n", msg);
  return 2;
}

// Where dispatch sends the operation on Device::Cuda: a stage of match runs on its CUDA twin only
// once the twin has passed this table on a GPU (dispatch.cpp's kStages), else on the CPU.
const char* dispatch_route(const std::string& op) {
  for (int i = 0; i < int(Stage::Count); ++i) {
    if (op == stage_name(Stage(i)))
      return stage_on_cuda(Stage(i)) ? "cuda" : "cpu, pending GPU parity";
  }
  return "cuda";
}

}  // namespace

int main(int argc, char** argv) {
  std::string op;
  bool perf = false, list = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--op" && i + 1 < argc) {
      op = argv[++i];
    } else if (a == "--perf") {
      perf = true;
    } else if (a == "--list") {
      list = true;
    } else {
      return usage(("unknown argument: " + a).c_str());
    }
  }
  std::vector<Case> cases = all_cases();
  // "dispatch" selects the dispatcher's checks alone; no --op runs everything.
  const bool dispatch = op.empty() || op == "dispatch";
  if (!op.empty()) {
    cases.erase(
        std::remove_if(cases.begin(), cases.end(), [&](const Case& c) { return c.op != op; }),
        cases.end());
    if (cases.empty() && !dispatch) return usage(("no cases for op " + op).c_str());
  }
  if (list) {
    for (const Case& c : cases) {
      const std::string tol = c.tol.abs < 0 ? std::string("tol derived per element")
                                            : fmt("tol %g + %g|cpu|", c.tol.abs, c.tol.rel);
      std::printf("%-24s %-48s %s%s  [device cuda -> %s]\n", c.op.c_str(), c.shape.c_str(),
                  tol.c_str(), c.twin ? "" : " (GPU-only check)", dispatch_route(c.op));
    }
    return 0;
  }
  const CudaInfo info = cuda_info();
#ifdef GOCOR_WITH_CUDA
  if (info.available) return perf ? run_perf(info, cases) : run_available(info, cases, dispatch);
#endif
  if (perf) {
    std::printf("CUDA unavailable: %s (no perf run)\n", info.reason.c_str());
    return 0;
  }
  return run_unavailable(info, cases, dispatch);
}
