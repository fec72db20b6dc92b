// The GEMM's two x86 paths (gemm.h): the AVX-512 float32 micro-kernel and the AMX path
// (gemm_amx.h), each against a float64 product, on odd shapes, k not a multiple of 32, every
// transpose and accumulation; and, with --bench, their times on the shapes GOCor and correlation
// use (the basis of gemm_amx_suits). Prints one line per case and "N passed, M failed".
//
// Tolerance (derived). An output is a sum of n products. The float32 micro-kernel rounds each
// fused multiply-add once: |err| <= gamma(n + 1) S, S = sum |a_k b_k|, gamma(m) = m u / (1 - m u),
// u = 2^-24 (plus one rounding for accumulation onto C). The AMX path splits each float32 into
// three bfloat16 pieces (exact to 24 bits), multiplies pieces exactly and adds six products per k
// into a float32 accumulator: 6n roundings over terms bounded by (1 + 2^-7) |a_k b_k|, and the
// three dropped products (a1 b2, a2 b1, a2 b2) add at most 2.1 u |a_k b_k|:
// |err| <= (gamma(6n + 1) (1 + 2^-7)^2 + 2.1 u) S. Both bounds hold for any data and order; an
// indexing bug is orders of magnitude above them. Each line also prints the error measured in the
// scale-free unit max |err| / (u S_row) and the mean, for the two paths side by side.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "gemm.h"
#include "gemm_amx.h"
#include "simd.h"
#include "support/harness.h"
#include "support/test_data.h"

namespace {

using gocor::gocor_detail::GemmArgs;
using gocor_test::fmt;
using gocor_test::report;

using gocor_test::gamma_n;
using gocor_test::kU;

struct Case {
  int m, n, k;
  bool a_trans, b_trans, acc;
  bool positive;  // post-ReLU-like data: a shared positive profile plus noise, clipped at 0
};

// Operands as stored: a is (m x k) or, transposed, (k x m); b is (k x n) or (n x k); row strides
// are the row lengths plus 3 (not multiples of 16).
struct Operands {
  std::vector<float> a, b, c0;
  int64_t lda, ldb, ldc;
};

Operands make(const Case& t, uint64_t seed) {
  Operands o;
  o.lda = (t.a_trans ? t.m : t.k) + 3;
  o.ldb = (t.b_trans ? t.k : t.n) + 3;
  o.ldc = t.n + 3;
  o.a = gocor_test::random_vec(static_cast<size_t>(o.lda) * (t.a_trans ? t.k : t.m), seed);
  o.b = gocor_test::random_vec(static_cast<size_t>(o.ldb) * (t.b_trans ? t.n : t.k), seed + 1);
  o.c0 = gocor_test::random_vec(static_cast<size_t>(o.ldc) * t.m, seed + 2);
  if (t.positive) {
    const std::vector<float> profile = gocor_test::random_vec(t.k, seed + 3);
    auto relu = [&](std::vector<float>& x, int64_t ld, bool k_major) {
      for (size_t i = 0; i < x.size(); ++i) {
        const int64_t k = k_major ? static_cast<int64_t>(i) / ld : static_cast<int64_t>(i) % ld;
        if (k >= t.k) continue;
        x[i] = std::max(0.f, 0.5f + 0.5f * profile[k] + 0.3f * x[i]);
      }
    };
    relu(o.a, o.lda, t.a_trans);
    relu(o.b, o.ldb, !t.b_trans);
  }
  return o;
}

double at_a(const Case& t, const Operands& o, int i, int k) {
  return t.a_trans ? o.a[k * o.lda + i] : o.a[i * o.lda + k];
}
double at_b(const Case& t, const Operands& o, int k, int j) {
  return t.b_trans ? o.b[j * o.ldb + k] : o.b[k * o.ldb + j];
}

// The product on one path: AMX, or the AVX-512 micro-kernel (AMX turned off by simd_force).
void run_path(const GemmArgs& g, bool amx) {
  if (amx) {
    gocor::gocor_detail::gemm_amx(g, 1);
    return;
  }
  gocor::simd::simd_force(gocor::simd::Simd::Avx512);
  gocor::gocor_detail::gemm(g, 1);
  gocor::simd::simd_unforce();
}

struct Errors {
  double max_units = 0, mean_units = 0, worst_ratio = 0;
  bool untouched = true;  // C's padding columns (past n) unchanged
};

// Runs the product on one path and compares it with the float64 one.
Errors check(const Case& t, const Operands& o, bool amx) {
  std::vector<float> c = o.c0;
  GemmArgs g{t.m,        t.n,   t.k,       o.a.data(), o.lda, t.a_trans,
             o.b.data(), o.ldb, t.b_trans, c.data(),   o.ldc, t.acc};
  run_path(g, amx);
  Errors e;
  const double per_term =
      amx ? gamma_n(6.0 * t.k + 1) * (1 + 1.0 / 128) * (1 + 1.0 / 128) + 2.1 * kU
          : gamma_n(t.k + 1.0);
  for (int i = 0; i < t.m; ++i)
    for (int j = 0; j < t.n; ++j) {
      double v = t.acc ? o.c0[i * o.ldc + j] : 0.0, s = t.acc ? std::fabs(v) : 0.0;
      for (int k = 0; k < t.k; ++k) {
        const double p = at_a(t, o, i, k) * at_b(t, o, k, j);
        v += p;
        s += std::fabs(p);
      }
      const double err = std::fabs(c[i * o.ldc + j] - v);
      const double allowed = per_term * s + kU * std::fabs(v);
      e.worst_ratio = std::max(e.worst_ratio, allowed > 0 ? err / allowed : (err > 0 ? 1e9 : 0));
      const double units = s > 0 ? err / (kU * s) : 0;
      e.max_units = std::max(e.max_units, units);
      e.mean_units += units / (double(t.m) * t.n);
    }
  for (int i = 0; i < t.m; ++i)
    for (int j = t.n; j < o.ldc; ++j) e.untouched &= c[i * o.ldc + j] == o.c0[i * o.ldc + j];
  return e;
}

void test_case(const Case& t, uint64_t seed) {
  const Operands o = make(t, seed);
  const std::string name =
      fmt("gemm %dx%dx%d%s%s%s%s", t.m, t.n, t.k, t.a_trans ? " a^T" : "", t.b_trans ? " b^T" : "",
          t.acc ? " +=" : "", t.positive ? " relu" : "");
  const Errors f = check(t, o, false);
  report(
      f.worst_ratio <= 1 && f.untouched, name + " avx512",
      fmt("max %.2f u*S, mean %.3f, worst/bound %.3f", f.max_units, f.mean_units, f.worst_ratio));
  if (!gocor::gocor_detail::amx_usable()) return;
  const Errors a = check(t, o, true);
  report(a.worst_ratio <= 1 && a.untouched, name + " amx",
         fmt("max %.2f u*S, mean %.3f (avx512 %.2f, %.3f), worst/bound %.3f", a.max_units,
             a.mean_units, f.max_units, f.mean_units, a.worst_ratio));
}

// Median CPU ms of the product on one path, one thread.
double time_path(int m, int n, int k, bool a_trans, bool amx, int reps) {
  const Case t{m, n, k, a_trans, false, false, true};
  const Operands o = make(t, 7);
  std::vector<float> c = o.c0;
  GemmArgs g{m, n, k, o.a.data(), o.lda, a_trans, o.b.data(), o.ldb, false, c.data(), o.ldc, false};
  std::vector<double> ms;
  for (int r = 0; r <= reps; ++r) {
    const double t0 = gocor_test::thread_cpu_ms();
    run_path(g, amx);
    if (r > 0) ms.push_back(gocor_test::thread_cpu_ms() - t0);
  }
  return gocor_test::median(ms);
}

void bench() {
  struct Shape {
    int m, n, k;
    bool a_trans;
    const char* what;
  };
  const Shape shapes[] = {
      {256, 512, 512, false, "GOCor Y Gm (N x 2N x 2N)"},
      {128, 512, 512, true, "GOCor Gram block (128 x 2N x C)"},
      {256, 256, 512, true, "GOCor Z0 / correlation 256 x 256 x 512"},
      {1024, 1024, 256, true, "correlation 1024 x 1024 x 256"},
      {4096, 4096, 64, true, "correlation 4096 x 4096 x 64"},
      {64, 64, 64, false, "64 x 64 x 64"},
      {64, 1024, 64, false, "convolution-like 64 x 1024 x 64"},
      {32, 4096, 288, false, "convolution-like 32 x 4096 x 288"},
  };
  for (const Shape& s : shapes) {
    const int reps = int64_t{s.m} * s.n * s.k > (int64_t{1} << 28) ? 5 : 21;
    // Alternating rounds, so that both paths see the same load.
    std::vector<double> f, a;
    for (int r = 0; r < 3; ++r) {
      f.push_back(time_path(s.m, s.n, s.k, s.a_trans, false, reps));
      a.push_back(time_path(s.m, s.n, s.k, s.a_trans, true, reps));
    }
    const double fm = gocor_test::median(f), am = gocor_test::median(a);
    const double gf = 2.0 * s.m * s.n * s.k * 1e-6;
    std::printf(
        "{\"shape\":\"%dx%dx%d\",\"what\":\"%s\",\"avx512_ms\":%.3f,\"amx_ms\":%.3f,"
        "\"speedup\":%.2f,\"avx512_gflops\":%.0f,\"amx_gflops\":%.0f,\"amx_chosen\":%s}\n",
        s.m, s.n, s.k, s.what, fm, am, fm / am, gf / fm, gf / am,
        gocor::gocor_detail::gemm_amx_suits(s.m, s.n, s.k, false) ? "true" : "false");
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (gocor::simd::simd_detected() != gocor::simd::Simd::Avx512) {
    std::printf(
        "SKIP gemm: no AVX-512 on this machine (the other levels are tested through "
        "correlation and GOCor)\n");
    return gocor_test::finish();
  }
  if (argc > 1 && std::strcmp(argv[1], "--bench") == 0) {
    if (!gocor::gocor_detail::amx_usable()) {
      std::printf("no AMX on this machine\n");
      return 0;
    }
    bench();
    return 0;
  }
  std::printf("AMX: %s\n", gocor::gocor_detail::amx_usable() ? "usable" : "not available");
  uint64_t seed = 100;
  const Case cases[] = {
      {1, 1, 1, false, false, false, false},      {17, 33, 31, false, false, false, false},
      {33, 17, 65, true, false, false, false},    {31, 47, 33, false, true, false, false},
      {50, 70, 100, true, true, true, false},     {64, 64, 64, false, false, true, true},
      {96, 200, 300, true, false, false, true},   {130, 129, 513, false, false, false, true},
      {256, 512, 512, false, false, false, true}, {128, 384, 512, true, false, false, true},
      {70, 300, 1100, false, false, true, false},
  };
  for (const Case& t : cases) test_case(t, seed += 10);
  // Threads share the blocks of C; each block is computed the same way, so the result is the
  // same bit for bit (the pool's threads load their own tile configuration).
  if (gocor::gocor_detail::amx_usable()) {
    const Case t{200, 300, 260, true, false, false, true};
    const Operands o = make(t, 77);
    std::vector<float> one = o.c0, all = o.c0;
    GemmArgs g{t.m,        t.n,   t.k,   o.a.data(), o.lda, true,
               o.b.data(), o.ldb, false, one.data(), o.ldc, false};
    gocor::gocor_detail::gemm_amx(g, 1);
    g.c = all.data();
    gocor::gocor_detail::gemm_amx(g, 0);
    report(one == all, "gemm amx 200x300x260: all threads equal one thread");
  }
  // gemm() itself takes the AMX path where it suits, the float32 kernel elsewhere: both give
  // results within their bounds (checked above); here only that the choice is honoured.
  if (gocor::gocor_detail::amx_usable()) {
    using gocor::gocor_detail::gemm_amx_suits;
    report(
        gemm_amx_suits(256, 512, 512, true) && gemm_amx_suits(1024, 1024, 256, false) &&
            !gemm_amx_suits(256, 512, 512, false) && !gemm_amx_suits(16, 512, 512, true) &&
            !gemm_amx_suits(4096, 4096, 64, false),
        "gemm_amx_suits: GOCor's Y Gm with Gm packed once, large products; not small sides or k");
  }
  return gocor_test::finish();
}
