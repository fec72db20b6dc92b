// Correlation kernels for AVX-512 (F + VL) with FMA. Only this file's functions are compiled for
// that ISA; the drivers call them only after checking the CPU at run time (corr_kernels.h).
#include <cstdint>

#include "corr_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,fma")

namespace gocor {
namespace corr_detail {
namespace avx512 {

struct V {
  using T = __m512;
  static constexpr int W = 16;
  static inline T zero() { return _mm512_setzero_ps(); }
  static inline T loadu(const float* p) { return _mm512_loadu_ps(p); }
  static inline T set1(float x) { return _mm512_set1_ps(x); }
  static inline T fma(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static inline T add(T a, T b) { return _mm512_add_ps(a, b); }
  static inline T div(T a, float d) { return _mm512_div_ps(a, _mm512_set1_ps(d)); }
  static inline void storeu(float* p, T v) { _mm512_storeu_ps(p, v); }
  static inline __mmask16 mask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
  static inline T load_n(const float* p, int n) { return _mm512_maskz_loadu_ps(mask(n), p); }
  static inline void store_n(float* p, T v, int n) { _mm512_mask_storeu_ps(p, mask(n), v); }
  // Masked-off lanes are not accessed, so p may point before or past the row.
  static inline T load_lanes(const float* p, int lo, int hi) {
    return _mm512_maskz_loadu_ps(static_cast<__mmask16>(mask(hi) & ~mask(lo)), p);
  }
};

// 6 x 64 tile: 24 accumulators, 4 B vectors and one broadcast of the 32 zmm registers.
#define GEMM_MR 6
#define GEMM_NV 4
#define LOCAL_GMAX 12
#define KERNELS_FN kernels_impl
#include "corr_kernels.inc"
#undef GEMM_MR
#undef GEMM_NV
#undef LOCAL_GMAX
#undef KERNELS_FN

}  // namespace avx512

const Kernels& kernels_avx512() {
  return avx512::kernels_impl();
}

}  // namespace corr_detail
}  // namespace gocor

#pragma GCC pop_options

#else

namespace gocor {
namespace corr_detail {
const Kernels& kernels_avx512() {
  return kernels_portable();
}
}  // namespace corr_detail
}  // namespace gocor

#endif
