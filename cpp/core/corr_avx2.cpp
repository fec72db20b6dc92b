// Correlation kernels for AVX2 with FMA. Only this file's functions are compiled for that ISA;
// the drivers call them only after checking the CPU at run time (corr_kernels.h).
#include <cstdint>

#include "corr_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma")

namespace gocor {
namespace corr_detail {
namespace avx2 {

struct V {
  using T = __m256;
  static constexpr int W = 8;
  static inline T zero() { return _mm256_setzero_ps(); }
  static inline T loadu(const float* p) { return _mm256_loadu_ps(p); }
  static inline T set1(float x) { return _mm256_set1_ps(x); }
  static inline T fma(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static inline T add(T a, T b) { return _mm256_add_ps(a, b); }
  static inline T div(T a, float d) { return _mm256_div_ps(a, _mm256_set1_ps(d)); }
  static inline void storeu(float* p, T v) { _mm256_storeu_ps(p, v); }
  // Lane i is on when i < n (sign bit set).
  static inline __m256i mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static inline T load_n(const float* p, int n) { return _mm256_maskload_ps(p, mask(n)); }
  static inline void store_n(float* p, T v, int n) { _mm256_maskstore_ps(p, mask(n), v); }
  // Masked-off lanes are not accessed, so p may point before or past the row.
  static inline T load_lanes(const float* p, int lo, int hi) {
    return _mm256_maskload_ps(p, _mm256_andnot_si256(mask(lo), mask(hi)));
  }
};

// 6 x 16 tile: 12 accumulators, 2 B vectors and one broadcast of the 16 ymm registers.
#define GEMM_MR 6
#define GEMM_NV 2
#define LOCAL_GMAX 6
#define KERNELS_FN kernels_impl
#include "corr_kernels.inc"
#undef GEMM_MR
#undef GEMM_NV
#undef LOCAL_GMAX
#undef KERNELS_FN

}  // namespace avx2

const Kernels& kernels_avx2() {
  return avx2::kernels_impl();
}

}  // namespace corr_detail
}  // namespace gocor

#pragma GCC pop_options

#else

namespace gocor {
namespace corr_detail {
const Kernels& kernels_avx2() {
  return kernels_portable();
}
}  // namespace corr_detail
}  // namespace gocor

#endif
