// Correlation kernels in plain C++ for any CPU: fixed-width arrays that the compiler vectorises
// for the baseline ISA. Without FMA hardware the multiply and the add round separately, which
// stays within the same float32 error bound (one rounding more per term).
#include <cstdint>

#include "corr_kernels.h"

namespace gocor {
namespace corr_detail {
namespace portable {

struct V {
  static constexpr int W = 8;
  struct T {
    float v[W];
  };
  static inline T zero() {
    T r;
    for (int i = 0; i < W; ++i) r.v[i] = 0.0f;
    return r;
  }
  static inline T loadu(const float* p) {
    T r;
    for (int i = 0; i < W; ++i) r.v[i] = p[i];
    return r;
  }
  static inline T set1(float x) {
    T r;
    for (int i = 0; i < W; ++i) r.v[i] = x;
    return r;
  }
  static inline T fma(const T& a, const T& b, T c) {
    for (int i = 0; i < W; ++i) c.v[i] += a.v[i] * b.v[i];
    return c;
  }
  static inline T add(T a, const T& b) {
    for (int i = 0; i < W; ++i) a.v[i] += b.v[i];
    return a;
  }
  static inline T div(T a, float d) {
    for (int i = 0; i < W; ++i) a.v[i] /= d;
    return a;
  }
  static inline void storeu(float* p, const T& v) {
    for (int i = 0; i < W; ++i) p[i] = v.v[i];
  }
  static inline T load_n(const float* p, int n) {
    T r = zero();
    for (int i = 0; i < n; ++i) r.v[i] = p[i];
    return r;
  }
  static inline T load_lanes(const float* p, int lo, int hi) {
    T r = zero();
    for (int i = lo; i < hi; ++i) r.v[i] = p[i];
    return r;
  }
  static inline void store_n(float* p, const T& v, int n) {
    for (int i = 0; i < n; ++i) p[i] = v.v[i];
  }
};

#define GEMM_MR 4
#define GEMM_NV 2
#define LOCAL_GMAX 4
#define KERNELS_FN kernels_impl
#include "corr_kernels.inc"
#undef GEMM_MR
#undef GEMM_NV
#undef LOCAL_GMAX
#undef KERNELS_FN

}  // namespace portable

const Kernels& kernels_portable() {
  return portable::kernels_impl();
}

}  // namespace corr_detail
}  // namespace gocor
