// Level detection and selection of the SIMD layer (simd.h).
#include "simd.h"

#include <atomic>
#include <cctype>
#include <cstdlib>
#include <string>

namespace gocor {
namespace simd {
namespace {

Simd detect_hardware() {
#if GOCOR_SIMD_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("fma")) {
    return Simd::Avx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Simd::Avx2;
#endif
  return Simd::Portable;
}

// The level GOCOR_SIMD names (case-insensitive: AVX2 = avx2), or -1 for none or an unknown value
// (lib/native.ts warns about those).
int env_level() {
  const char* env = std::getenv("GOCOR_SIMD");
  if (env == nullptr) return -1;
  std::string v(env);
  for (char& ch : v) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  if (v == "portable") return static_cast<int>(Simd::Portable);
  if (v == "avx2") return static_cast<int>(Simd::Avx2);
  if (v == "avx512") return static_cast<int>(Simd::Avx512);
  return -1;
}

Simd detect_with_env() {
  const Simd hw = detect_hardware();
  const int want = env_level();
  // The variable can only lower the level: asking for more than the CPU has would crash.
  return want >= 0 && want < static_cast<int>(hw) ? static_cast<Simd>(want) : hw;
}

std::atomic<int> g_forced{-1};

}  // namespace

Simd simd_detected() {
  static const Simd level = detect_with_env();
  return level;
}

Simd simd_active() {
  const int f = g_forced.load(std::memory_order_relaxed);
  const Simd d = simd_detected();
  return (f >= 0 && f < static_cast<int>(d)) ? static_cast<Simd>(f) : d;
}

void simd_force(Simd level) {
  g_forced.store(static_cast<int>(level));
}
void simd_unforce() {
  g_forced.store(-1);
}

bool simd_amx_allowed() {
  static const bool env_free = env_level() < 0;
  return env_free && g_forced.load(std::memory_order_relaxed) < 0 &&
         simd_detected() == Simd::Avx512;
}

const char* simd_name(Simd level) {
  switch (level) {
    case Simd::Avx512: return "avx512";
    case Simd::Avx2: return "avx2";
    default: return "portable";
  }
}

}  // namespace simd
}  // namespace gocor
