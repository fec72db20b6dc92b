// The harness shared by the C++ test and benchmark programs: one line per check, the final
// "N passed, M failed" with the exit status, expected errors, printf-style strings, element-wise
// comparison with a tolerance and the normalised MSE, and the calling thread's CPU time.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "common.h"

namespace gocor_test {

// Prints "PASS name detail" or "FAIL name detail" (detail may be empty) and counts it.
void report(bool ok, const std::string& name, const std::string& detail = "");

// Prints "N passed, M failed" and returns the exit status: 0 when nothing failed, else 1.
int finish();

// snprintf into a std::string (up to 511 characters).
std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));

// Reports whether fn throws gocor::Error with `code`; the detail names the code received.
void expect_throws(const std::string& name, gocor::ErrorCode code, const std::function<void()>& fn);

// Whether fn throws gocor::Error with `code`; *what gets the message ("(no exception)" if none).
bool throws_code(const std::function<void()>& fn, gocor::ErrorCode code, std::string* what);

// Element-wise |got - ref| <= abs + rel |ref|.
struct Tol {
  double abs, rel;
};

struct Cmp {
  double max_abs = 0, worst_ratio = 0, nmse = 0;  // worst_ratio: max |got - ref| / allowed
  bool ok = true;                                 // every element within Tol, sizes equal
};

// got against ref: equal values (infinities included) differ by 0; NaN fails; nmse is
// sum (got - ref)^2 / sum ref^2 over the finite references.
template <typename T>
Cmp compare(const float* got, const T* ref, size_t n, const Tol& tol) {
  Cmp c;
  double se = 0, sr = 0;
  for (size_t i = 0; i < n; ++i) {
    const double r = static_cast<double>(ref[i]);
    if (std::isfinite(r)) sr += r * r;
    if (static_cast<double>(got[i]) == r) continue;
    const double d = std::fabs(static_cast<double>(got[i]) - r),
                 allowed = tol.abs + tol.rel * std::fabs(r);
    if (!(d <= allowed)) c.ok = false;
    c.max_abs = std::max(c.max_abs, d);
    c.worst_ratio = std::max(c.worst_ratio, allowed > 0 ? d / allowed : INFINITY);
    se += d * d;
  }
  c.nmse = sr > 0 ? se / sr : se;
  return c;
}

template <typename T>
Cmp compare(const std::vector<float>& got, const std::vector<T>& ref, const Tol& tol) {
  if (got.size() != ref.size()) {
    Cmp c;
    c.ok = false;
    return c;
  }
  return compare(got.data(), ref.data(), got.size(), tol);
}

// Unit roundoff of float32 (2^-24) and the classic bound gamma(n) = n u / (1 - n u) for n
// roundings, from which the tests derive their tolerances.
constexpr double kU = 5.9604644775390625e-08;
inline double gamma_n(double n) {
  return n * kU / (1.0 - n * kU);
}

// CPU time of the calling thread in ms (benchmarks: a shared machine disturbs it less than wall
// time when a single-thread run loses its core).
double thread_cpu_ms();

// The median of v (the upper one of an even count); v is taken by value and sorted.
double median(std::vector<double> v);

}  // namespace gocor_test
