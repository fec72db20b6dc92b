// Local GOCor with float64 internals for the networks (nn.h, spec networks.md 5.5): the filter
// initialisation, the steepest-descent iterations and the final correlation in double, the volume
// rounded to float32 once. The problem separates per pixel (gocor.md 5.4), so each pixel's filter
// is optimised on its own against the (up to) 81 reference features of its window, with features
// held pixel-major (channels contiguous) in double.
#include <algorithm>
#include <cmath>
#include <vector>

#include "nn.h"
#include "parallel.h"

namespace gocor {
namespace nn {
namespace {

constexpr int kR = 4, kS = 2 * kR + 1, kD = kS * kS;

// (C, H, W) float -> (H*W, C) double.
std::vector<double> pixel_major(const float* x, int C, int64_t P) {
  std::vector<double> out(size_t(P) * C);
  for (int c = 0; c < C; ++c)
    for (int64_t p = 0; p < P; ++p) out[size_t(p) * C + c] = x[c * P + p];
  return out;
}

inline double dot(const double* a, const double* b, int C) {
  double s = 0;
  for (int c = 0; c < C; ++c) s += a[c] * b[c];
  return s;
}

}  // namespace

void gocor_local_f64(const LocalGocorParams& p, int num_iter, const float* reference,
                     const float* query, float* volume, int C, int H, int W, int threads) {
  const int64_t P = int64_t(H) * W;
  const std::vector<double> f = pixel_major(reference, C, P), g = pixel_major(query, C, P);
  double yk[kD], vk[kD], mk[kD];
  for (int k = 0; k < kD; ++k) {
    const int dy = k / kS - kR, dx = k % kS - kR;
    distance_fns_eval(p.dist, std::sqrt(double(dy * dy + dx * dx)), &yk[k], &vk[k], &mk[k]);
  }
  const double invc = 1.0 / C;
  const double lambda =
      std::max(double(p.filter_reg) * p.filter_reg, double(p.min_filter_reg) * p.min_filter_reg) /
      (double(C) * C);
  const double step = std::exp(double(p.log_step_length)), scaling = p.scaling;
  parallel_for(H, threads, [&](int64_t y) {
    std::vector<double> w(C), grad(C);
    double J[kD];
    const double* fq[kD];
    int ks[kD];
    for (int x = 0; x < W; ++x) {
      const int64_t pix = y * W + x;
      // The displacements whose reference feature lies inside the image (the others have S = 0
      // and a zero feature: they change neither the gradient nor the step length).
      int n = 0;
      for (int k = 0; k < kD; ++k) {
        const int qy = int(y) + k / kS - kR, qx = x + k % kS - kR;
        if (qy < 0 || qy >= H || qx < 0 || qx >= W) continue;
        ks[n] = k;
        fq[n++] = f.data() + (int64_t(qy) * W + qx) * C;
      }
      const double* fp = f.data() + pix * C;
      const double norm = dot(fp, fp, C) * invc + 1e-6;
      for (int c = 0; c < C; ++c) w[c] = scaling * fp[c] / norm;
      for (int it = 0; it < num_iter; ++it) {
        for (int c = 0; c < C; ++c) grad[c] = lambda * w[c];
        for (int j = 0; j < n; ++j) {
          const int k = ks[j];
          const double s = dot(w.data(), fq[j], C) * invc, m = mk[k];
          const double sg = s > 0 ? 1.0 : (s < 0 ? -1.0 : 0.0);
          const double sigma = 0.5 * (1 - m) * std::fabs(s) + 0.5 * (1 + m) * s;
          J[j] = vk[k] * (0.5 * (1 - m) * sg + 0.5 * (1 + m));
          const double jr = J[j] * vk[k] * (sigma - yk[k]) * invc;
          for (int c = 0; c < C; ++c) grad[c] += jr * fq[j][c];
        }
        const double num = dot(grad.data(), grad.data(), C);
        double den = lambda * num;
        for (int j = 0; j < n; ++j) {
          const double t = J[j] * dot(grad.data(), fq[j], C) * invc;
          den += t * t;
        }
        const double alpha = num / std::max(den, 1e-8);
        for (int c = 0; c < C; ++c) w[c] -= step * alpha * grad[c];
      }
      for (int k = 0; k < kD; ++k) {
        const int qy = int(y) + k / kS - kR, qx = x + k % kS - kR;
        double v = 0;
        if (qy >= 0 && qy < H && qx >= 0 && qx < W)
          v = dot(w.data(), g.data() + (int64_t(qy) * W + qx) * C, C) * invc;
        volume[k * P + pix] = static_cast<float>(v);
      }
    }
  });
}

}  // namespace nn
}  // namespace gocor
