// Local GOCor with float64 internals for the networks (nn.h, spec networks.md 5.5): the filter
// initialisation, the steepest-descent iterations and the final correlation in double, the volume
// rounded to float32 once. The problem separates per pixel (gocor.md 5.4), so each pixel's filter
// is optimised on its own against the (up to) 81 reference features of its window. Features are
// held pixel-major in double with the channels padded to a multiple of 8, so that every dot
// product and update runs on whole vectors of the active instruction set
// (corr_detail::simd_active).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "nn.h"
#include "parallel.h"
#include "simd.h"

namespace gocor {
namespace nn {
namespace {

constexpr int kR = 4, kS = 2 * kR + 1, kD = kS * kS, kPad = 8;

typedef double v8d __attribute__((vector_size(64)));
typedef double v4d __attribute__((vector_size(32)));
typedef double v2d __attribute__((vector_size(16)));

struct Ctx {
  const double *f, *g;  // (H*W, Cp) reference and query, zero in the padded channels
  int C, Cp, H, W, num_iter;
  double invc, lambda, step, scaling;
  double yk[kD], vk[kD], mk[kD];
  float* volume;  // (81, H, W)
};

// A vector of V's width from any double address (simd::loadu copies bytes).
template <class V>
GOCOR_INLINE V ld(const double* p) {
  return simd::loadu<V>(reinterpret_cast<const float*>(p));
}

template <class V>
GOCOR_INLINE double dot(const double* a, const double* b, int Cp) {
  constexpr int L = sizeof(V) / sizeof(double);
  V s0{}, s1{};
  int c = 0;
  for (; c + 2 * L <= Cp; c += 2 * L) {
    s0 += ld<V>(a + c) * ld<V>(b + c);
    s1 += ld<V>(a + c + L) * ld<V>(b + c + L);
  }
  for (; c < Cp; c += L) s0 += ld<V>(a + c) * ld<V>(b + c);
  s0 += s1;
  double r = 0;
  for (int i = 0; i < L; ++i) r += s0[i];
  return r;
}

// y += a * x over Cp values.
template <class V>
GOCOR_INLINE void axpy(double a, const double* x, double* y, int Cp) {
  constexpr int L = sizeof(V) / sizeof(double);
  for (int c = 0; c < Cp; c += L) {
    const V v = ld<V>(y + c) + a * ld<V>(x + c);
    std::memcpy(y + c, &v, sizeof(V));
  }
}

// Every pixel of row y: initialisation, num_iter steps, output (gocor.md 5.2-5.5).
template <class V>
GOCOR_INLINE void row_impl(const Ctx& k, int y) {
  const int Cp = k.Cp, H = k.H, W = k.W;
  const int64_t P = int64_t(H) * W;
  thread_local std::vector<double> wbuf, gbuf;
  wbuf.resize(Cp);
  gbuf.resize(Cp);
  double* w = wbuf.data();
  double* grad = gbuf.data();
  double J[kD];
  const double* fq[kD];
  int ks[kD];
  for (int x = 0; x < W; ++x) {
    const int64_t pix = int64_t(y) * W + x;
    // The displacements whose reference feature lies inside the image (the others have S = 0
    // and a zero feature: they change neither the gradient nor the step length).
    int n = 0;
    for (int d = 0; d < kD; ++d) {
      const int qy = y + d / kS - kR, qx = x + d % kS - kR;
      if (qy < 0 || qy >= H || qx < 0 || qx >= W) continue;
      ks[n] = d;
      fq[n++] = k.f + (int64_t(qy) * W + qx) * Cp;
    }
    const double* fp = k.f + pix * Cp;
    const double norm = dot<V>(fp, fp, Cp) * k.invc + 1e-6;
    for (int c = 0; c < Cp; ++c) w[c] = k.scaling * fp[c] / norm;
    for (int it = 0; it < k.num_iter; ++it) {
      for (int c = 0; c < Cp; ++c) grad[c] = k.lambda * w[c];
      for (int j = 0; j < n; ++j) {
        const int d = ks[j];
        const double s = dot<V>(w, fq[j], Cp) * k.invc, m = k.mk[d];
        const double sg = s > 0 ? 1.0 : (s < 0 ? -1.0 : 0.0);
        const double sigma = 0.5 * (1 - m) * std::fabs(s) + 0.5 * (1 + m) * s;
        J[j] = k.vk[d] * (0.5 * (1 - m) * sg + 0.5 * (1 + m));
        axpy<V>(J[j] * k.vk[d] * (sigma - k.yk[d]) * k.invc, fq[j], grad, Cp);
      }
      const double num = dot<V>(grad, grad, Cp);
      double den = k.lambda * num;
      for (int j = 0; j < n; ++j) {
        const double t = J[j] * dot<V>(grad, fq[j], Cp) * k.invc;
        den += t * t;
      }
      axpy<V>(-k.step * (num / std::max(den, 1e-8)), grad, w, Cp);
    }
    for (int d = 0; d < kD; ++d) {
      const int qy = y + d / kS - kR, qx = x + d % kS - kR;
      double v = 0;
      if (qy >= 0 && qy < H && qx >= 0 && qx < W)
        v = dot<V>(w, k.g + (int64_t(qy) * W + qx) * Cp, Cp) * k.invc;
      k.volume[d * P + pix] = static_cast<float>(v);
    }
  }
}

GOCOR_KERNEL_AVX512 void row_avx512(const Ctx& k, int y) {
  row_impl<v8d>(k, y);
}
GOCOR_KERNEL_AVX2 void row_avx2(const Ctx& k, int y) {
  row_impl<v4d>(k, y);
}
void row_portable(const Ctx& k, int y) {
  row_impl<v2d>(k, y);
}

// (C, H, W) float -> (H*W, Cp) double, zero in channels C .. Cp-1.
std::vector<double> pixel_major(const float* x, int C, int Cp, int64_t P) {
  std::vector<double> out(size_t(P) * Cp, 0.0);
  for (int c = 0; c < C; ++c)
    for (int64_t p = 0; p < P; ++p) out[size_t(p) * Cp + c] = x[c * P + p];
  return out;
}

}  // namespace

void gocor_local_f64_cpu(const LocalGocorParams& p, int num_iter, const float* reference,
                         const float* query, float* volume, int C, int H, int W, const Exec& ex) {
  const int64_t P = int64_t(H) * W;
  const int Cp = (C + kPad - 1) / kPad * kPad;
  const std::vector<double> f = pixel_major(reference, C, Cp, P), g = pixel_major(query, C, Cp, P);
  const double lambda =
      std::max(double(p.filter_reg) * p.filter_reg, double(p.min_filter_reg) * p.min_filter_reg) /
      (double(C) * C);
  Ctx k{f.data(),
        g.data(),
        C,
        Cp,
        H,
        W,
        num_iter,
        1.0 / C,
        lambda,
        std::exp(double(p.log_step_length)),
        double(p.scaling),
        {},
        {},
        {},
        volume};
  for (int d = 0; d < kD; ++d) {
    const int dy = d / kS - kR, dx = d % kS - kR;
    distance_fns_eval(p.dist, std::sqrt(double(dy * dy + dx * dx)), &k.yk[d], &k.vk[d], &k.mk[d]);
  }
  void (*row)(const Ctx&, int) = simd::simd_select(row_avx512, row_avx2, row_portable);
  parallel_for(H, ex.threads, [&](int64_t y) { row(k, static_cast<int>(y)); });
}

}  // namespace nn
}  // namespace gocor
