// The one SIMD layer of the CPU core: level detection, the vector types and the selector that every
// kernel (correlation, GEMM, GOCor) uses.
//
// How a kernel is written: a template over a vector type V (Vec16 = AVX-512, Vec8 = AVX2, Vec4 =
// portable) using V's operations and GCC vector arithmetic, plus one entry point per level marked
// GOCOR_KERNEL_AVX512 / GOCOR_KERNEL_AVX2 / GOCOR_KERNEL_PORTABLE. The entry's attributes compile
// everything it calls, inlined into it, for that instruction set; the caller picks the entry with
// simd_select(), which honours GOCOR_SIMD and simd_force(). Nothing outside an entry point runs
// wider instructions than the baseline ISA, so a CPU without AVX never meets one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define GOCOR_SIMD_X86 1
#else
#define GOCOR_SIMD_X86 0
#endif

// The vector helpers are inlined into one level's entry point; their nominal ABI never matters.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace gocor {
namespace simd {

enum class Simd { Portable = 0, Avx2 = 1, Avx512 = 2 };

// Best level this CPU supports, capped by the environment variable GOCOR_SIMD (read once).
Simd simd_detected();
// The level the kernels take now: simd_detected(), or a lower level forced by simd_force().
Simd simd_active();
// Tests use this to run every path on one machine. A level above simd_detected() is capped to it.
void simd_force(Simd level);
void simd_unforce();
// "avx512", "avx2" or "portable".
const char* simd_name(Simd level);
// Whether the GEMM may use AMX tiles (gemm_amx.h) where the machine has them: at the AVX-512
// level, unless GOCOR_SIMD names a level (GOCOR_SIMD=avx512: AVX-512 without AMX) or simd_force()
// is in effect (tests: simd_force(Simd::Avx512) runs the AVX-512 micro-kernel).
bool simd_amx_allowed();

// The largest |x[i]| of x[0 .. n) (0 when n is 0), or NaN when some x[i] is NaN: a bound check of
// values in one pass at the active level (the binding's check of feature maps, take_features).
float max_magnitude(const float* x, size_t n);

// The selector: the entry point (or any value) of the active level.
template <class T>
inline T simd_select(T avx512, T avx2, T portable) {
  switch (simd_active()) {
    case Simd::Avx512: return avx512;
    case Simd::Avx2: return avx2;
    default: return portable;
  }
}

// Entry points: `flatten` inlines every call (the kernel templates and the vector operations)
// into the entry, where the target attribute applies.
#if GOCOR_SIMD_X86
#define GOCOR_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,fma")))
#define GOCOR_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define GOCOR_TARGET_AVX512
#define GOCOR_TARGET_AVX2
#endif
#define GOCOR_KERNEL_AVX512 GOCOR_TARGET_AVX512 __attribute__((flatten, noinline))
#define GOCOR_KERNEL_AVX2 GOCOR_TARGET_AVX2 __attribute__((flatten, noinline))
#define GOCOR_KERNEL_PORTABLE __attribute__((flatten, noinline))
#define GOCOR_INLINE inline __attribute__((always_inline))

typedef float v16 __attribute__((vector_size(64)));
typedef float v8 __attribute__((vector_size(32)));
typedef float v4 __attribute__((vector_size(16)));

// Vector of `V`'s width read from / written to any float address.
template <class V>
GOCOR_INLINE V loadu(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <class V>
GOCOR_INLINE void storeu(float* p, V v) {
  std::memcpy(p, &v, sizeof(V));
}

// Common operations of the three vector types: T (a GCC vector: + - * / work on it), W lanes,
// zero, loadu, storeu, fma (a * b + c, fused where the level has FMA), load_n / store_n
// (lanes [0, n)), load_lanes (lanes [lo, hi) from memory, the others zero; masked-off lanes are
// not accessed, so p may point before or past a row). Only the masked operations differ per level.
template <class TT>
struct VecBase {
  using T = TT;
  static constexpr int W = sizeof(T) / sizeof(float);
  static GOCOR_INLINE T zero() { return T{}; }
  static GOCOR_INLINE T loadu(const float* p) { return simd::loadu<T>(p); }
  static GOCOR_INLINE void storeu(float* p, T v) { simd::storeu<T>(p, v); }
  static GOCOR_INLINE T fma(T a, T b, T c) { return a * b + c; }
  // A scalar a is broadcast by the multiplication itself (building a vector of it first, in the
  // baseline-ISA template before it is inlined into an entry point, may go through the stack).
  static GOCOR_INLINE T fma(float a, T b, T c) { return a * b + c; }
};

// Masked operations as lane loops (the portable level; the wider levels off x86).
template <class TT>
struct VecLoop : VecBase<TT> {
  using T = TT;
  static GOCOR_INLINE T load_lanes(const float* p, int lo, int hi) {
    T r{};
    for (int i = lo; i < hi; ++i) r[i] = p[i];
    return r;
  }
  static GOCOR_INLINE T load_n(const float* p, int n) { return load_lanes(p, 0, n); }
  static GOCOR_INLINE void store_n(float* p, T v, int n) {
    for (int i = 0; i < n; ++i) p[i] = v[i];
  }
};

struct Vec4 : VecLoop<v4> {};

#if GOCOR_SIMD_X86
// Masked operations are target functions; they are only ever inlined into an entry of their level.
struct Vec8 : VecBase<v8> {
  // Lane i is on when i < n (sign bit set).
  GOCOR_TARGET_AVX2 static inline __m256i mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  GOCOR_TARGET_AVX2 static inline T load_n(const float* p, int n) {
    return (T)_mm256_maskload_ps(p, mask(n));
  }
  GOCOR_TARGET_AVX2 static inline void store_n(float* p, T v, int n) {
    _mm256_maskstore_ps(p, mask(n), (__m256)v);
  }
  GOCOR_TARGET_AVX2 static inline T load_lanes(const float* p, int lo, int hi) {
    return (T)_mm256_maskload_ps(p, _mm256_andnot_si256(mask(lo), mask(hi)));
  }
};

struct Vec16 : VecBase<v16> {
  GOCOR_TARGET_AVX512 static inline __mmask16 mask(int n) {
    return static_cast<__mmask16>((1u << n) - 1u);
  }
  GOCOR_TARGET_AVX512 static inline T load_n(const float* p, int n) {
    return (T)_mm512_maskz_loadu_ps(mask(n), p);
  }
  GOCOR_TARGET_AVX512 static inline void store_n(float* p, T v, int n) {
    _mm512_mask_storeu_ps(p, mask(n), (__m512)v);
  }
  GOCOR_TARGET_AVX512 static inline T load_lanes(const float* p, int lo, int hi) {
    return (T)_mm512_maskz_loadu_ps(static_cast<__mmask16>(mask(hi) & ~mask(lo)), p);
  }
};
#else
// Without x86 the wider levels are never detected; their types exist so that every kernel compiles.
struct Vec8 : VecLoop<v8> {};
struct Vec16 : VecLoop<v16> {};
#endif

}  // namespace simd

// The level API under its former namespace, for callers outside the kernels (dis.cpp, tests).
namespace corr_detail {
using simd::Simd;
using simd::simd_active;
using simd::simd_detected;
using simd::simd_force;
using simd::simd_unforce;
}  // namespace corr_detail

}  // namespace gocor
