// Throughput of the plain CPU correlation. Prints one JSON line per measurement:
//   {"op":"corr_global","simd":"avx512","N":256,"M":256,"C":512,"threads":1,"ms":..,"gflops":..}
//   {"op":"corr_local","simd":"avx512","H":109,"W":256,"C":64,"R":4,"threads":1,"ms":..,"gflops":..}
// FLOPs: global 2*N*M*C, local 2*D*C*H*W (D = (2R+1)^2; the zero border is counted as work, as the
// dense operator defines it). Time: best of repeats after one warm-up (the least disturbed run).
// cpu_ms / cpu_gflops: CPU time of the calling thread for threads=1 (robust to a busy machine);
// for more threads they repeat the wall-time figures.
// Options: --quick or GOCOR_BENCH_QUICK=1 (fewer repeats), --threads N (the multi-thread row;
// default: all).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "common.h"
#include "correlation.h"
#include "parallel.h"
#include "support/harness.h"
#include "support/test_data.h"

namespace {

using gocor_test::random_vec_fast;
using gocor_test::thread_cpu_ms;

// Best wall time in ms of fn over repeats, after a warm-up; repeats shrink for long calls.
// *cpu_ms: best CPU time of the calling thread, which on a shared machine is the better measure
// of a single-thread run (a run that lost its core to another process shows it in wall time only).
double time_ms(const std::function<void()>& fn, int min_reps, double budget_ms, double* cpu_ms) {
  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  fn();
  double first = std::chrono::duration<double, std::milli>(clock::now() - t0).count();
  int reps = std::max(min_reps, static_cast<int>(budget_ms / std::max(first, 1e-3)));
  reps = std::min(reps, 200);
  double best = first;
  *cpu_ms = 1e300;
  for (int i = 0; i < reps; ++i) {
    auto t = clock::now();
    double c = thread_cpu_ms();
    fn();
    *cpu_ms = std::min(*cpu_ms, thread_cpu_ms() - c);
    best = std::min(best, std::chrono::duration<double, std::milli>(clock::now() - t).count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const char* qenv = std::getenv("GOCOR_BENCH_QUICK");
  bool quick = qenv != nullptr && std::strcmp(qenv, "1") == 0;
  int all_threads = 0;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) all_threads = std::atoi(argv[++i]);
  }
  const int mt = all_threads > 0 ? all_threads : gocor::pool_size();
  const double budget = quick ? 150.0 : 600.0;
  const char* simd = gocor::cpu_simd_level();
  std::vector<int> thread_rows = {1};
  if (mt > 1) thread_rows.push_back(mt);

  for (int side : {16, 32, 64}) {
    for (int C : {64, 256, 512}) {
      const int N = side * side;
      auto f = random_vec_fast(size_t(C) * N, 1), g = random_vec_fast(size_t(C) * N, 2);
      std::vector<float> out(size_t(N) * N);
      const gocor::CorrGlobalShape s{1, C, side, side, side, side};
      for (int t : thread_rows) {
        gocor::Exec ex;
        ex.threads = t;
        double cpu;
        double ms = time_ms([&] { gocor::corr_global_cpu(f.data(), g.data(), out.data(), s, ex); },
                            3, budget, &cpu);
        double flop = 2.0 * N * N * C;
        std::printf(
            "{\"op\":\"corr_global\",\"simd\":\"%s\",\"N\":%d,\"M\":%d,\"C\":%d,\"threads\":%d,"
            "\"ms\":%.4f,\"gflops\":%.2f,\"cpu_ms\":%.4f,\"cpu_gflops\":%.2f}\n",
            simd, N, N, C, t, ms, flop / (ms * 1e6), t == 1 ? cpu : ms,
            flop / ((t == 1 ? cpu : ms) * 1e6));
        std::fflush(stdout);
      }
    }
  }

  const int R = 4, D = (2 * R + 1) * (2 * R + 1);
  for (auto hw : {std::pair<int, int>{109, 256}, std::pair<int, int>{55, 128}}) {
    for (int C : {32, 64, 96, 128, 196}) {
      const int H = hw.first, W = hw.second;
      const size_t n = size_t(C) * H * W;
      auto f = random_vec_fast(n, 3), g = random_vec_fast(n, 4);
      std::vector<float> out(size_t(D) * H * W);
      const double flop = 2.0 * D * C * H * W;
      const gocor::CorrLocalShape s{1, C, H, W, R};
      for (int t : thread_rows) {
        gocor::Exec ex;
        ex.threads = t;
        double cpu;
        double ms = time_ms([&] { gocor::corr_local_cpu(f.data(), g.data(), out.data(), s, ex); },
                            3, budget, &cpu);
        std::printf(
            "{\"op\":\"corr_local\",\"simd\":\"%s\",\"H\":%d,\"W\":%d,\"C\":%d,\"R\":%d,"
            "\"threads\":%d,\"ms\":%.4f,\"gflops\":%.2f,\"cpu_ms\":%.4f,\"cpu_gflops\":%.2f}\n",
            simd, H, W, C, R, t, ms, flop / (ms * 1e6), t == 1 ? cpu : ms,
            flop / ((t == 1 ? cpu : ms) * 1e6));
        std::fflush(stdout);
      }
    }
  }
  return 0;
}
