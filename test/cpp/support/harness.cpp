#include "harness.h"

#include <time.h>

#include <cstdarg>
#include <cstdio>
#include <exception>

namespace gocor_test {

namespace {
int g_passed = 0, g_failed = 0;
}  // namespace

void report(bool ok, const std::string& name, const std::string& detail) {
  std::printf("%s %s%s%s\n", ok ? "PASS" : "FAIL", name.c_str(), detail.empty() ? "" : " ",
              detail.c_str());
  // A crash later must not take the lines already printed with it.
  std::fflush(stdout);
  (ok ? g_passed : g_failed)++;
}

int finish() {
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}

std::string fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

bool throws_code(const std::function<void()>& fn, gocor::ErrorCode code, std::string* what) {
  try {
    fn();
  } catch (const gocor::Error& e) {
    *what = e.what();
    return e.code() == code;
  } catch (const std::exception& e) {
    *what = std::string("not a gocor::Error: ") + e.what();
    return false;
  }
  *what = "(no exception)";
  return false;
}

void expect_throws(const std::string& name, gocor::ErrorCode code,
                   const std::function<void()>& fn) {
  try {
    fn();
    report(false, name, "no exception");
  } catch (const gocor::Error& e) {
    report(e.code() == code, name, std::string(gocor::error_code_name(e.code())) + ": " + e.what());
  } catch (const std::exception& e) {
    report(false, name, std::string("not a gocor::Error: ") + e.what());
  }
}

double thread_cpu_ms() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

}  // namespace gocor_test
