// Throughput of the CPU GOCor modules, with the plain correlation of the same input beside them.
// Prints one JSON line per measurement:
//   {"op":"gocor_global","H":16,"W":16,"C":512,"K":3,"threads":1,"ms":..,"median_ms":..,
//    "gflops_performed":..,
//    "corr_ms":..,"ratio":..}
//   {"op":"gocor_local","H":109,"W":256,"C":32,"K":3,"R":4,"threads":1,"ms":..,...}
// gflops_performed: floating-point operations this implementation executes (multiply-add = 2;
// GEMMs, the fused R^T R taps, the local passes), divided by the time: a measure of how well the
// hardware is used, not of the spec-8 work (which is larger: the algebra skips part of it).
// Time: best of repeats after one warm-up (global rows: and their median); single-thread rows use
// thread CPU time. Options: --quick (one repeat, skips 64x64 global), --target2 (only issue 16's
// target 2: global 16x16, C = 512, K = 3, one thread, best of 30).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "correlation.h"
#include "gocor.h"
#include "gocor_kernels.h"
#include "parallel.h"
#include "support/harness.h"
#include "support/test_data.h"

namespace {

using gocor_test::random_vec_fast;
using gocor_test::thread_cpu_ms;

// Best wall time; for single-thread rows the calling thread's CPU time instead, which a busy
// shared machine disturbs far less (a run that lost its core shows it in wall time only). The
// median beside it is what bench/api.js reports through the API (its medians of process CPU time).
struct Timing {
  double best, median;
};
Timing timing(const std::function<void()>& fn, int reps, bool cpu_time) {
  using clock = std::chrono::steady_clock;
  std::vector<double> ms_all;
  for (int i = 0; i <= reps; ++i) {  // the first run warms up (caches, pool, page faults)
    const auto t = clock::now();
    const double c = thread_cpu_ms();
    fn();
    const double ms = cpu_time
                          ? thread_cpu_ms() - c
                          : std::chrono::duration<double, std::milli>(clock::now() - t).count();
    // A call over 2 s is timed once: its warm-up run is its measurement.
    if (i > 0 || reps == 0 || ms > 2000) ms_all.push_back(ms);
    if (ms > 2000) break;
  }
  std::sort(ms_all.begin(), ms_all.end());
  return {ms_all.front(), ms_all[ms_all.size() / 2]};
}

double time_ms(const std::function<void()>& fn, int reps, bool cpu_time) {
  return timing(fn, reps, cpu_time).best;
}

void bench_global(int H, int W, int C, int K, int threads, int reps) {
  const int N = H * W;
  auto ref = random_vec_fast(static_cast<size_t>(C) * N, 1), qry = random_vec_fast(ref.size(), 2);
  gocor_test::l2_normalise(ref, 1, C, N);
  gocor_test::l2_normalise(qry, 1, C, N);
  gocor::GlobalGocorParams p = gocor::default_global_params(C, 0);
  gocor::GlobalGocorOptions o;
  o.num_iter = K;
  std::vector<float> vol(static_cast<size_t>(N) * N);
  gocor::Exec ex;
  ex.threads = threads;
  const Timing t = timing(
      [&] {
        gocor::gocor_global_cpu(p, o, ref.data(), qry.data(), vol.data(), nullptr, {1, C, H, W}, ex,
                                nullptr);
      },
      reps, threads == 1);
  const double ms = t.best;
  const double corr_ms = time_ms(
      [&] {
        gocor::corr_global_cpu(ref.data(), qry.data(), vol.data(), {1, C, H, W, H, W}, ex);
      },
      reps, threads == 1);
  // Executed work: S0, Q0 (4N^2C), P Q0 and one P per iteration (2*625 N^2 at most), and per
  // iteration the four N x N x C products (8N^2C).
  const double nn = static_cast<double>(N) * N;
  const double flops = 4 * nn * C + (K > 0 ? 1250 * nn * (K + 1) : 0) + K * 8 * nn * C;
  std::printf(
      "{\"op\":\"gocor_global\",\"H\":%d,\"W\":%d,\"C\":%d,\"K\":%d,\"threads\":%d,\"ms\":%.3f,"
      "\"median_ms\":%.3f,\"gflops_performed\":%.2f,\"corr_ms\":%.3f,\"ratio\":%.1f}\n",
      H, W, C, K, threads, ms, t.median, flops / ms * 1e-6, corr_ms, ms / corr_ms);
}

// The fused R^T R stencil alone (gocor_kernels.h), full and half (quadratic-form) applications,
// on an N x N matrix with the Gram form's row stride 2N.
void bench_rtr(int H, int W, int reps) {
  const int N = H * W;
  const gocor::GlobalGocorParams p = gocor::default_global_params(8, 0);
  const gocor::gocor_detail::RtROperator op(p, H, W);
  const auto x = random_vec_fast(static_cast<size_t>(N) * 2 * N, 5);
  std::vector<float> y(static_cast<size_t>(N) * N), scratch;
  const double full =
      time_ms([&] { op.apply(x.data(), 2 * N, y.data(), N, scratch, 1); }, reps, true);
  const double half =
      time_ms([&] { op.apply(x.data(), 2 * N, y.data(), N, scratch, 1, true); }, reps, true);
  std::printf(
      "{\"op\":\"rtr\",\"H\":%d,\"W\":%d,\"full_ms\":%.3f,\"half_ms\":%.3f,\"gflops_625_taps\":%."
      "1f}\n",
      H, W, full, half, 1250.0 * N * N / full * 1e-6);
}

void bench_local(int H, int W, int C, int K, int R, int threads, int reps) {
  const size_t P = static_cast<size_t>(H) * W;
  const int D = (2 * R + 1) * (2 * R + 1);
  auto ref = random_vec_fast(static_cast<size_t>(C) * P, 3), qry = random_vec_fast(ref.size(), 4);
  gocor::LocalGocorParams p = gocor::default_local_params();
  gocor::LocalGocorOptions o;
  o.num_iter = K;
  o.search_radius = R;
  std::vector<float> vol(D * P);
  gocor::Exec ex;
  ex.threads = threads;
  const double ms = time_ms(
      [&] {
        gocor::gocor_local_cpu(p, o, ref.data(), qry.data(), vol.data(), nullptr, 1, C, H, W, ex,
                               nullptr);
      },
      reps, threads == 1);
  const double corr_ms = time_ms(
      [&] {
        gocor::corr_local_cpu(ref.data(), qry.data(), vol.data(), {1, C, H, W, R}, ex);
      },
      reps, threads == 1);
  // Passes of 2*D*C*P each: initial S, two per iteration (grad, T), the output.
  const double flops = (2.0 + 2.0 * K) * 2 * D * C * static_cast<double>(P);
  std::printf(
      "{\"op\":\"gocor_local\",\"H\":%d,\"W\":%d,\"C\":%d,\"K\":%d,\"R\":%d,\"threads\":%d,"
      "\"ms\":%.3f,\"gflops_performed\":%.2f,\"corr_ms\":%.3f,\"ratio\":%.1f}\n",
      H, W, C, K, R, threads, ms, flops / ms * 1e-6, corr_ms, ms / corr_ms);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, target2 = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    if (std::strcmp(argv[i], "--target2") == 0) target2 = true;
  }
  if (target2) {
    bench_global(16, 16, 512, 3, 1, 30);
    bench_rtr(16, 16, 100);
    return 0;
  }
  const int reps = quick ? 1 : 5;
  const int all = gocor::pool_size();
  std::vector<int> thread_rows = {1};
  if (all > 1) thread_rows.push_back(all);
  for (int t : thread_rows) {
    bench_global(16, 16, 512, 3, t, reps);
    bench_global(32, 32, 256, 3, t, reps);
    if (!quick) bench_global(64, 64, 128, 3, t, 1);
  }
  for (int t : thread_rows)
    for (int K : {3, 7})
      for (int C : {32, 96}) {
        bench_local(109, 256, C, K, 4, t, reps);
        bench_local(55, 128, C, K, 4, t, reps);
      }
  return 0;
}
