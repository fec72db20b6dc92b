// Plain correlation on the CPU (global, local): every SIMD path this machine has against a float64
// reference, the straightforward twins, threads, errors, and the conformance baselines. Prints one
// line per case and "N passed, M failed".
//
// Tolerance (derived, not guessed). Each output is a sum of n products. The fast kernels form
// every product inside a float32 fused multiply-add and accumulate in float32 in some blocked
// order; whatever the order, each term passes through at most n + 4 roundings (n accumulations,
// the merge of at most three K blocks, the division by C of the local operator), and the portable
// path rounds the product once more. The classic bound for recursive summation then gives
//   |fast - exact| <= gamma(n + 8) * S,   gamma(m) = m u / (1 - m u),  u = 2^-24,
// where S = sum |a_c b_c| (divided by C for the local operator): it holds for any summation order
// and any data, so the test cannot be flaky, while an indexing bug (a wrong or missing term) is
// orders of magnitude above it. Each line also prints the largest |error| / (u S) seen, which for
// random data grows like sqrt(n), not n.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "common.h"
#include "correlation.h"
#include "simd.h"
#include "support/conformance.h"
#include "support/harness.h"
#include "support/test_data.h"

using gocor::CorrGlobalShape;
using gocor::CorrLocalShape;
using gocor::Exec;
using gocor::corr_detail::Simd;

namespace {

using gocor_test::random_vec;

using gocor_test::expect_throws;
using gocor_test::fmt;
using gocor_test::report;

using gocor_test::gamma_n;
using gocor_test::kU;

struct Ref64 {
  std::vector<double> val, abs;  // exact-ish value and sum of |terms| per output
};

// Float64 reference written from spec 7 / 5.1, independent of the library.
Ref64 global_ref(const std::vector<float>& f, const std::vector<float>& g,
                 const CorrGlobalShape& s) {
  const int64_t N = int64_t{s.H} * s.W, M = int64_t{s.Hq} * s.Wq;
  Ref64 r;
  r.val.assign(s.B * M * N, 0.0);
  r.abs.assign(s.B * M * N, 0.0);
  for (int b = 0; b < s.B; ++b) {
    for (int c = 0; c < s.C; ++c) {
      const float* fc = &f[(b * s.C + c) * N];
      const float* gc = &g[(b * s.C + c) * M];
      for (int64_t t = 0; t < M; ++t) {
        double* v = &r.val[(b * M + t) * N];
        double* a = &r.abs[(b * M + t) * N];
        const double q = gc[t];
        for (int64_t i = 0; i < N; ++i) {
          const double p = q * fc[i];
          v[i] += p;
          a[i] += std::fabs(p);
        }
      }
    }
  }
  return r;
}

Ref64 local_ref(const std::vector<float>& f, const std::vector<float>& g, const CorrLocalShape& s) {
  const int D1 = 2 * s.R + 1;
  const int64_t HW = int64_t{s.H} * s.W, D = int64_t{D1} * D1;
  Ref64 r;
  r.val.assign(s.B * D * HW, 0.0);
  r.abs.assign(s.B * D * HW, 0.0);
  for (int b = 0; b < s.B; ++b) {
    for (int dy = -s.R; dy <= s.R; ++dy) {
      for (int dx = -s.R; dx <= s.R; ++dx) {
        const int64_t k = (dy + s.R) * D1 + dx + s.R;
        for (int y = 0; y < s.H; ++y) {
          for (int x = 0; x < s.W; ++x) {
            if (y + dy < 0 || y + dy >= s.H || x + dx < 0 || x + dx >= s.W) continue;
            double v = 0, a = 0;
            for (int c = 0; c < s.C; ++c) {
              const double p = double{f[(b * s.C + c) * HW + y * s.W + x]} *
                               g[(b * s.C + c) * HW + (y + dy) * s.W + x + dx];
              v += p;
              a += std::fabs(p);
            }
            r.val[(b * D + k) * HW + y * s.W + x] = v / s.C;
            r.abs[(b * D + k) * HW + y * s.W + x] = a / s.C;
          }
        }
      }
    }
  }
  return r;
}

// Checks |got - ref| <= gamma(n) * S elementwise; returns the worst error in units of u*S.
bool check_bound(const std::vector<float>& got, const Ref64& r, double n, double* worst_ulps,
                 std::string* where) {
  const double g = gamma_n(n);
  bool ok = got.size() == r.val.size();
  *worst_ulps = 0;
  for (size_t i = 0; ok && i < got.size(); ++i) {
    const double err = std::fabs(double{got[i]} - r.val[i]);
    if (!(err <= g * r.abs[i])) {  // also catches NaN
      ok = false;
      *where = "index " + std::to_string(i) + ": got " + std::to_string(got[i]) + ", expected " +
               std::to_string(r.val[i]);
    }
    if (r.abs[i] > 0) *worst_ulps = std::max(*worst_ulps, err / (kU * r.abs[i]));
  }
  return ok;
}

std::string gshape(const CorrGlobalShape& s) {
  return "B" + std::to_string(s.B) + " C" + std::to_string(s.C) + " " + std::to_string(s.H) + "x" +
         std::to_string(s.W) + " q" + std::to_string(s.Hq) + "x" + std::to_string(s.Wq);
}
std::string lshape(const CorrLocalShape& s) {
  return "B" + std::to_string(s.B) + " C" + std::to_string(s.C) + " " + std::to_string(s.H) + "x" +
         std::to_string(s.W) + " R" + std::to_string(s.R);
}

// One shape s of op (corr_global or corr_local) on reference f and query g: fast at 1 thread
// within the bound of a sum of C products, at every thread bitwise equal to that (threads split
// the output into tiles, never a sum), and, when given, the straightforward twin within its bound.
template <typename Shape>
void check_op(const std::string& op, const Shape& s, const std::string& shape,
              const std::vector<float>& f, const std::vector<float>& g, const Ref64& r,
              void (*fast)(const float*, const float*, float*, const Shape&, const Exec&),
              void (*naive)(const float*, const float*, float*, const Shape&)) {
  const std::string lvl = gocor::cpu_simd_level();
  std::vector<float> out(r.val.size(), -1234.5f), out_mt(r.val.size(), -1234.5f);
  Exec ex;
  ex.threads = 1;
  fast(f.data(), g.data(), out.data(), s, ex);
  double worst;
  std::string where;
  bool ok = check_bound(out, r, s.C + 8, &worst, &where);
  report(ok, op + " " + lvl + " " + shape + " max|err|/(uS)=" + fmt("%.2f", worst) +
                 (ok ? "" : " " + where));
  ex.threads = 0;
  fast(f.data(), g.data(), out_mt.data(), s, ex);
  report(out_mt == out, op + " threads=all equals threads=1 " + lvl + " " + shape);
  if (!naive) return;
  std::vector<float> nv(out.size());
  naive(f.data(), g.data(), nv.data(), s);
  ok = check_bound(nv, r, 2, &worst, &where);
  report(ok, op + "_naive " + shape + (ok ? "" : " " + where));
}

// Both inputs packed for corr_global_packed_cpu, `rows` channels at a time (the rest NaN).
void pack_inputs(const CorrGlobalShape& s, const std::vector<float>& f, const std::vector<float>& g,
                 int rows, std::vector<float>* fp, std::vector<float>* gp) {
  using gocor::CorrInput;
  fp->assign(gocor::corr_global_packed_floats(CorrInput::Reference, s), NAN);
  gp->assign(gocor::corr_global_packed_floats(CorrInput::Query, s), NAN);
  const size_t N = size_t(s.H) * s.W, M = size_t(s.Hq) * s.Wq;
  for (int b = 0; b < s.B; ++b) {
    for (int c0 = 0; c0 < s.C; c0 += rows) {
      const int c1 = std::min(s.C, c0 + rows);
      gocor::corr_global_pack(CorrInput::Reference, s, f.data() + b * s.C * N, b, c0, c1,
                              fp->data());
      gocor::corr_global_pack(CorrInput::Query, s, g.data() + b * s.C * M, b, c0, c1, gp->data());
    }
  }
}

// The packed entry on inputs packed a few channels at a time (as the binding packs them while
// it copies them in: 3 rows, and 11 = one of the AVX-512 A packer's 8-row blocks and 3 rows one by
// one), at 1 thread and at all: bitwise equal to corr_global_cpu, whose values the float64 bound
// checks (the GEMM's sums do not depend on where a panel was packed).
void test_global_packed(const CorrGlobalShape& s, const std::vector<float>& f,
                        const std::vector<float>& g) {
  const size_t n_out = size_t(s.B) * s.Hq * s.Wq * s.H * s.W;
  std::vector<float> want(n_out);
  Exec ex;
  ex.threads = 1;
  gocor::corr_global_cpu(f.data(), g.data(), want.data(), s, ex);
  for (const int rows : {3, 11}) {
    std::vector<float> got(n_out, -1234.5f), got_mt(n_out, -1234.5f);
    std::vector<float> fp, gp;
    pack_inputs(s, f, g, rows, &fp, &gp);
    ex.threads = 1;
    gocor::corr_global_packed_cpu(fp.data(), gp.data(), got.data(), s, ex);
    ex.threads = 0;
    gocor::corr_global_packed_cpu(fp.data(), gp.data(), got_mt.data(), s, ex);
    report(got == want && got_mt == want,
           "corr_global_packed equals corr_global " + std::string(gocor::cpu_simd_level()) + " " +
               gshape(s) + " packed " + std::to_string(rows) + " rows at a time");
  }
}

void test_global(const CorrGlobalShape& s, uint64_t seed, bool also_naive) {
  const auto f = random_vec(size_t(s.B) * s.C * s.H * s.W, seed);
  const auto g = random_vec(size_t(s.B) * s.C * s.Hq * s.Wq, seed + 7);
  check_op("corr_global", s, gshape(s), f, g, global_ref(f, g, s), gocor::corr_global_cpu,
           also_naive ? gocor::corr_global_naive : nullptr);
  test_global_packed(s, f, g);
}

// A volume large enough for the packed entry's non-temporal stores (4096 x 4096, 64 MiB): into
// 64-byte aligned memory it streams, one float past it (unaligned) it stores as usual; both within
// the float64 bound and bitwise equal, at 1 thread and at all.
void test_global_streamed(uint64_t seed) {
  const CorrGlobalShape s{1, 3, 64, 64, 64, 64};
  const auto f = random_vec(size_t(s.C) * s.H * s.W, seed);
  const auto g = random_vec(size_t(s.C) * s.Hq * s.Wq, seed + 7);
  const Ref64 r = global_ref(f, g, s);
  const size_t n = r.val.size();
  std::vector<float> buf(n + 32, NAN), buf_mt(n + 32, NAN), plain(n + 1, NAN);
  auto aligned = [](std::vector<float>& v) {
    float* p = v.data();
    while (reinterpret_cast<uintptr_t>(p) % 64 != 0) ++p;
    return p;
  };
  float* streamed = aligned(buf);
  float* streamed_mt = aligned(buf_mt);
  float* unaligned =
      reinterpret_cast<uintptr_t>(plain.data()) % 64 == 0 ? plain.data() + 1 : plain.data();
  std::vector<float> fp, gp;
  pack_inputs(s, f, g, s.C, &fp, &gp);
  Exec ex;
  ex.threads = 1;
  gocor::corr_global_packed_cpu(fp.data(), gp.data(), streamed, s, ex);
  gocor::corr_global_packed_cpu(fp.data(), gp.data(), unaligned, s, ex);
  ex.threads = 0;
  gocor::corr_global_packed_cpu(fp.data(), gp.data(), streamed_mt, s, ex);
  const std::vector<float> got(streamed, streamed + n);
  double worst;
  std::string where;
  const bool ok = check_bound(got, r, s.C + 8, &worst, &where);
  const bool same = std::equal(got.begin(), got.end(), unaligned) &&
                    std::equal(got.begin(), got.end(), streamed_mt);
  report(ok && same, "corr_global streamed stores " + std::string(gocor::cpu_simd_level()) + " " +
                         gshape(s) + " max|err|/(uS)=" + fmt("%.2f", worst) +
                         (same ? "" : " differs from plain stores") + (ok ? "" : " " + where));
}

void test_local(const CorrLocalShape& s, uint64_t seed, bool also_naive) {
  const auto f = random_vec(size_t(s.B) * s.C * s.H * s.W, seed);
  const auto g = random_vec(size_t(s.B) * s.C * s.H * s.W, seed + 3);
  check_op("corr_local", s, lshape(s), f, g, local_ref(f, g, s), gocor::corr_local_cpu,
           also_naive ? gocor::corr_local_naive : nullptr);
}

// Spec 12: |got - expected| <= 2e-5 + 1e-4 |expected|.
void test_conformance(const std::string& dir, bool global) {
  const std::string lvl = gocor::cpu_simd_level();
  const std::string c = dir + (global ? "/global_8x8_c16/" : "/local_16x16_c32/");
  const int C = global ? 16 : 32, H = global ? 8 : 16, W = H;
  const size_t n_in = size_t(C) * H * W, n_out = global ? size_t(H * W) * H * W : 81u * H * W;
  std::vector<float> f, g, expected;
  try {
    f = conformance::read_f32(c + "reference.bin", n_in);
    g = conformance::read_f32(c + "query.bin", n_in);
    expected = conformance::read_f32(c + "baseline_correlation.bin", n_out);
  } catch (const std::exception& e) {
    report(false, "conformance " + c + ": cannot read the inputs (set GOCOR_CONFORMANCE_DIR)",
           e.what());
    return;
  }
  std::vector<float> out(n_out, -1234.5f);
  Exec ex;
  if (global) {
    gocor::corr_global_cpu(f.data(), g.data(), out.data(), CorrGlobalShape{1, C, H, W, H, W}, ex);
  } else {
    gocor::corr_local_cpu(f.data(), g.data(), out.data(), CorrLocalShape{1, C, H, W, 4}, ex);
  }
  double worst = 0;
  bool ok = true;
  for (size_t i = 0; i < n_out; ++i) {
    const double d = std::fabs(double{out[i]} - expected[i]);
    const double tol = 2e-5 + 1e-4 * std::fabs(expected[i]);
    if (!(d <= tol)) ok = false;
    worst = std::max(worst, d / tol);
  }
  report(ok, std::string("conformance ") + (global ? "global_8x8_c16" : "local_16x16_c32 R4") +
                 " baseline_correlation " + lvl + " max|err|/tol=" + fmt("%.3g", worst));
}

void test_errors() {
  std::vector<float> a(64, 1.0f), b(64, 1.0f), o(81 * 64, 0.0f);
  Exec ex;
  expect_throws("corr_global C=0", gocor::ErrorCode::Shape, [&] {
    gocor::corr_global_cpu(a.data(), b.data(), o.data(), CorrGlobalShape{1, 0, 2, 2, 2, 2}, ex);
  });
  expect_throws("corr_global null query", gocor::ErrorCode::InvalidArg, [&] {
    gocor::corr_global_cpu(a.data(), nullptr, o.data(), CorrGlobalShape{1, 1, 2, 2, 2, 2}, ex);
  });
  expect_throws("corr_local R=-1", gocor::ErrorCode::InvalidArg, [&] {
    gocor::corr_local_cpu(a.data(), b.data(), o.data(), CorrLocalShape{1, 1, 4, 4, -1}, ex);
  });
  expect_throws("corr_local H=0", gocor::ErrorCode::Shape, [&] {
    gocor::corr_local_cpu(a.data(), b.data(), o.data(), CorrLocalShape{1, 1, 0, 4, 1}, ex);
  });
  std::atomic<bool> cancel{true};
  ex.cancel = &cancel;
  expect_throws("corr_global cancelled", gocor::ErrorCode::Aborted, [&] {
    gocor::corr_global_cpu(a.data(), b.data(), o.data(), CorrGlobalShape{1, 4, 4, 4, 4, 4}, ex);
  });
  expect_throws("corr_local cancelled", gocor::ErrorCode::Aborted, [&] {
    gocor::corr_local_cpu(a.data(), b.data(), o.data(), CorrLocalShape{1, 4, 4, 4, 4}, ex);
  });
}

// simd::max_magnitude (the binding's bound check of feature maps, which every correlation input
// passes) against a scalar scan: lengths around the vector and unroll widths, the largest value at
// every position class (vector body, tail), signs, zeros, subnormals, infinities and NaN.
void test_max_magnitude(const std::string& lvl) {
  const float specials[] = {-0.0f, 1e-40f,   -3.5e-39f, 1e6f, -1e6f, 1.0000001e6f,
                            -2e6f, INFINITY, -INFINITY, NAN,  -NAN};
  bool ok = true;
  std::string where;
  for (int n : {0, 1, 3, 4, 15, 16, 17, 63, 64, 65, 130, 1000}) {
    std::vector<float> x = random_vec(static_cast<size_t>(n), 40u + static_cast<uint64_t>(n));
    for (int pos : {0, n / 2, n - 1}) {
      if (n == 0 && pos != 0) continue;
      for (float sp : specials) {
        std::vector<float> y = x;
        if (n > 0) y[static_cast<size_t>(pos)] = sp;
        float want = 0.f;
        bool nan = false;
        for (float v : y) {
          nan = nan || std::isnan(v);
          want = std::max(want, std::fabs(v));
        }
        const float got = gocor::simd::max_magnitude(y.data(), y.size());
        const bool good = nan ? std::isnan(got) : got == want;
        if (!good && ok)
          where = fmt("n=%d pos=%d value=%g: got %g, want %g", n, pos, double(sp), double(got),
                      double(want));
        ok = ok && good;
      }
    }
  }
  report(ok, "max_magnitude " + lvl + " equals a scalar scan" + (ok ? "" : " (" + where + ")"));
}

}  // namespace

int main() {
  const std::vector<CorrGlobalShape> globals = {
      {1, 1, 1, 1, 1, 1},
      {1, 3, 5, 7, 3, 2},
      {2, 16, 9, 13, 11, 6},
      {1, 64, 16, 16, 16, 16},
      {1, 255, 7, 31, 13, 5},
      {2, 512, 8, 12, 10, 9},
      {1, 1024, 5, 9, 6, 7},
      {1, 512, 24, 20, 17, 23},
      {1, 64, 30, 30, 20, 40},
      {1, 3, 1, 97, 61, 1},
      // More than 1024 query positions: the driver packs A instead of reading it in place.
      {1, 40, 9, 15, 35, 33},
      {1, 520, 3, 37, 40, 29},
  };
  const std::vector<CorrLocalShape> locals = {
      {1, 1, 1, 1, 0},    {1, 1, 3, 4, 1},    {1, 3, 5, 7, 1},    {2, 16, 9, 13, 4},
      {1, 64, 16, 16, 4}, {1, 255, 7, 31, 7}, {1, 512, 6, 17, 4}, {1, 1024, 4, 5, 1},
      {2, 32, 20, 40, 7}, {1, 16, 3, 2, 7},   {1, 64, 33, 47, 0}, {1, 3, 11, 70, 4},
  };
  const std::string dir = conformance::default_dir();
  std::printf("conformance dir: %s\n", dir.c_str());
  const Simd top = gocor::corr_detail::simd_detected();
  for (int level = 0; level <= static_cast<int>(top); ++level) {
    gocor::corr_detail::simd_force(static_cast<Simd>(level));
    const bool first = level == 0;  // the naive twins do not depend on the level
    uint64_t seed = 1;
    for (const auto& s : globals) test_global(s, seed++, first);
    test_global_streamed(seed++);
    for (const auto& s : locals) test_local(s, seed++, first);
    test_conformance(dir, true);
    test_conformance(dir, false);
    test_max_magnitude(gocor::simd::simd_name(static_cast<Simd>(level)));
  }
  gocor::corr_detail::simd_unforce();
  test_errors();
  return gocor_test::finish();
}
