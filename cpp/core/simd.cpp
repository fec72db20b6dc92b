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

namespace {

// max_magnitude on W-lane integer vectors: |x| is the bit pattern without the sign, and for
// non-negative int32 the integer order of those patterns is the order of the magnitudes, with
// infinity above every finite value and NaN above infinity. Four accumulators, so that the loop
// runs at the loads' rate.
typedef int32_t i32x16 __attribute__((vector_size(64)));
typedef int32_t i32x8 __attribute__((vector_size(32)));
typedef int32_t i32x4 __attribute__((vector_size(16)));
template <class IV>
GOCOR_INLINE uint32_t max_abs_bits(const float* x, size_t n) {
  constexpr int W = sizeof(IV) / sizeof(int32_t);
  IV m[4] = {};
  size_t i = 0;
  for (; i + 4 * W <= n; i += 4 * W) {
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      IV v;
      std::memcpy(&v, x + i + j * W, sizeof v);
      v &= 0x7fffffff;
      m[j] = m[j] > v ? m[j] : v;
    }
  }
  int32_t r = 0;
  for (int j = 0; j < 4; ++j)
    for (int l = 0; l < W; ++l) r = m[j][l] > r ? m[j][l] : r;
  for (; i < n; ++i) {
    int32_t b;
    std::memcpy(&b, x + i, sizeof b);
    b &= 0x7fffffff;
    r = b > r ? b : r;
  }
  return static_cast<uint32_t>(r);
}

GOCOR_KERNEL_AVX512 uint32_t max_abs_bits_avx512(const float* x, size_t n) {
  return max_abs_bits<i32x16>(x, n);
}
GOCOR_KERNEL_AVX2 uint32_t max_abs_bits_avx2(const float* x, size_t n) {
  return max_abs_bits<i32x8>(x, n);
}
GOCOR_KERNEL_PORTABLE uint32_t max_abs_bits_portable(const float* x, size_t n) {
  return max_abs_bits<i32x4>(x, n);
}

}  // namespace

float max_magnitude(const float* x, size_t n) {
  const uint32_t bits =
      simd_select(max_abs_bits_avx512, max_abs_bits_avx2, max_abs_bits_portable)(x, n);
  float m;
  std::memcpy(&m, &bits, sizeof m);
  return m;
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
