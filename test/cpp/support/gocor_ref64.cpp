#include "gocor_ref64.h"

#include <algorithm>
#include <cmath>

namespace gocor_ref {
namespace {

using gocor::DistanceFns;

double sigma(double s, double a) {
  return 0.5 * (1 - a) * std::fabs(s) + 0.5 * (1 + a) * s;
}
double sgn(double s) {
  return s > 0 ? 1.0 : (s < 0 ? -1.0 : 0.0);
}
double sigma_d(double s, double a) {
  return 0.5 * (1 - a) * sgn(s) + 0.5 * (1 + a);
}

// 3x3 cross-correlation on an H x W grid, zero padding: out[y,x] += sum w[a] in[y+d(ay-1),
// x+d(ax-1)] with d = +1; d = -1 is its transpose.
void conv3(const double* in, double* out, const float* w, int H, int W, int d) {
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      double acc = 0;
      for (int ay = 0; ay < 3; ++ay)
        for (int ax = 0; ax < 3; ++ax) {
          int yy = y + d * (ay - 1), xx = x + d * (ax - 1);
          if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
          acc += w[ay * 3 + ax] * in[yy * W + xx];
        }
      out[y * W + x] += acc;
    }
}

// out[t] += w in[t] over one row; written in blocks of four so that plain -O2 emits vector code
// (the 16 x 16 x 9 row updates of R_theta dominate the reference's run time on large grids).
void add_scaled_row(double* __restrict out, double w, const double* __restrict in, int n) {
  int t = 0;
  for (; t + 4 <= n; t += 4) {
    out[t] += w * in[t];
    out[t + 1] += w * in[t + 1];
    out[t + 2] += w * in[t + 2];
    out[t + 3] += w * in[t + 3];
  }
  for (; t < n; ++t) out[t] += w * in[t];
}

// K2 over the reference axes (d = +1): dst[o][r][t] = sum_i sum_b W2[o,i,b] src[i][r + b - 1][t],
// zero outside the reference grid; d = -1, its transpose: dst[i][r][t] = sum_o sum_b W2[o,i,b]
// src[o][r - b + 1][t]. Written as whole rows over t (the same sum, in cache order).
std::vector<double> apply_k2(const gocor::GlobalGocorParams& p, const std::vector<double>& src,
                             int H, int W, int d) {
  const int N = H * W, I = p.reg_inter_dim, O = p.reg_output_dim;
  const int outs = d > 0 ? O : I, ins = d > 0 ? I : O;
  std::vector<double> dst(static_cast<size_t>(outs) * N * N, 0.0);
  for (int r = 0; r < N; ++r) {
    const int ry = r / W, rx = r % W;
    for (int m = 0; m < outs; ++m) {
      double* out = &dst[(static_cast<size_t>(m) * N + r) * N];
      for (int k = 0; k < ins; ++k)
        for (int by = 0; by < 3; ++by)
          for (int bx = 0; bx < 3; ++bx) {
            const int yy = ry + d * (by - 1), xx = rx + d * (bx - 1);
            if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
            const int o = d > 0 ? m : k, i = d > 0 ? k : m;
            const double wv = p.reg_weight2[(o * I + i) * 9 + by * 3 + bx];
            add_scaled_row(out, wv, &src[(static_cast<size_t>(k) * N + yy * W + xx) * N], N);
          }
    }
  }
  return dst;
}

// R_theta on Q (N x N, [r][t]) -> q (O, N, N): K1 over the query axes (a 2-D conv of each
// reference position's row of scores), then K2.
std::vector<double> apply_r(const gocor::GlobalGocorParams& p, const std::vector<double>& Q, int H,
                            int W) {
  const int N = H * W, I = p.reg_inter_dim;
  std::vector<double> X(static_cast<size_t>(I) * N * N, 0.0);
  for (int i = 0; i < I; ++i)
    for (int r = 0; r < N; ++r)
      conv3(&Q[static_cast<size_t>(r) * N], &X[(static_cast<size_t>(i) * N + r) * N],
            &p.reg_weight1[i * 9], H, W, 1);
  return apply_k2(p, X, H, W, 1);
}

// R_theta^T: q (O, N, N) -> (N x N): K2^T, then K1^T row by row.
std::vector<double> apply_rt(const gocor::GlobalGocorParams& p, const std::vector<double>& q, int H,
                             int W) {
  const int N = H * W, I = p.reg_inter_dim;
  const std::vector<double> X = apply_k2(p, q, H, W, -1);
  std::vector<double> Qt(static_cast<size_t>(N) * N, 0.0);
  for (int i = 0; i < I; ++i)
    for (int r = 0; r < N; ++r)
      conv3(&X[(static_cast<size_t>(i) * N + r) * N], &Qt[static_cast<size_t>(r) * N],
            &p.reg_weight1[i * 9], H, W, -1);
  return Qt;
}

}  // namespace

void gocor_global_ref64(const gocor::GlobalGocorParams& p, const gocor::GlobalGocorOptions& o,
                        const float* reference, const float* query,
                        const gocor::GocorGlobalShape& s, std::vector<double>* volume,
                        std::vector<double>* filter, std::vector<gocor::GocorIterDiag>* diag,
                        double* min_abs_score) {
  const int B = s.B, C = s.C, H = s.H, W = s.W, N = H * W;
  double min_abs = HUGE_VAL;
  volume->assign(static_cast<size_t>(B) * N * N, 0.0);
  filter->assign(static_cast<size_t>(B) * N * C, 0.0);
  if (diag != nullptr) diag->clear();
  const double lambda = std::max(static_cast<double>(p.filter_reg) * p.filter_reg,
                                 static_cast<double>(p.min_filter_reg) * p.min_filter_reg);
  const double step = std::exp(static_cast<double>(p.log_step_length));
  std::vector<double> Y(static_cast<size_t>(N) * N), V(Y.size()), M(Y.size());
  for (int r = 0; r < N; ++r)
    for (int t = 0; t < N; ++t) {
      double dy = r / W - t / W, dx = r % W - t % W;
      distance_fns_eval(p.dist, std::sqrt(dy * dy + dx * dx), &Y[r * N + t], &V[r * N + t],
                        &M[r * N + t]);
    }
  for (int b = 0; b < B; ++b) {
    std::vector<double> F(static_cast<size_t>(N) * C), G(F.size()), w(F.size());
    for (int c = 0; c < C; ++c)
      for (int i = 0; i < N; ++i) {
        F[static_cast<size_t>(i) * C + c] = reference[(static_cast<size_t>(b) * C + c) * N + i];
        G[static_cast<size_t>(i) * C + c] = query[(static_cast<size_t>(b) * C + c) * N + i];
      }
    std::vector<double> mu(C, 0.0);
    for (int i = 0; i < N; ++i)
      for (int c = 0; c < C; ++c) mu[c] += F[static_cast<size_t>(i) * C + c] / N;
    double bb = 0;
    for (int c = 0; c < C; ++c) bb += mu[c] * mu[c];
    for (int r = 0; r < N; ++r) {
      const double* f = &F[static_cast<size_t>(r) * C];
      double a = 0, cc = 0;
      for (int c = 0; c < C; ++c) a += f[c] * f[c], cc += f[c] * mu[c];
      double D = std::max(a * bb - cc * cc, 1e-6);
      for (int k = 0; k < C; ++k)
        w[static_cast<size_t>(r) * C + k] = ((p.target_fg[k] * bb - p.target_bg[k] * cc) * f[k] -
                                             (p.target_fg[k] * cc - p.target_bg[k] * a) * mu[k]) /
                                            D;
    }
    auto dots = [&](const std::vector<double>& X, const std::vector<double>& Z) {
      std::vector<double> out(static_cast<size_t>(N) * N, 0.0);
      for (int r = 0; r < N; ++r)
        for (int t = 0; t < N; ++t) {
          double acc = 0;
          for (int c = 0; c < C; ++c)
            acc += X[static_cast<size_t>(r) * C + c] * Z[static_cast<size_t>(t) * C + c];
          out[static_cast<size_t>(r) * N + t] = acc;
        }
      return out;
    };
    for (int it = 0; it < o.num_iter; ++it) {
      std::vector<double> S = dots(w, F);
      for (double v : S) min_abs = std::min(min_abs, std::fabs(v));
      std::vector<double> J(S.size()), rho(S.size());
      double loss_ref = 0;
      for (size_t i = 0; i < S.size(); ++i) {
        J[i] = V[i] * sigma_d(S[i], M[i]);
        rho[i] = V[i] * (sigma(S[i], M[i]) - Y[i]);
        loss_ref += 0.5 * rho[i] * rho[i];
      }
      std::vector<double> grad(w.size(), 0.0);
      for (int r = 0; r < N; ++r)
        for (int sidx = 0; sidx < N; ++sidx) {
          double jr = J[static_cast<size_t>(r) * N + sidx] * rho[static_cast<size_t>(r) * N + sidx];
          for (int c = 0; c < C; ++c)
            grad[static_cast<size_t>(r) * C + c] += jr * F[static_cast<size_t>(sidx) * C + c];
        }
      double loss_query = 0;
      if (o.apply_query_loss) {
        std::vector<double> Q = dots(w, G);
        std::vector<double> q = apply_r(p, Q, H, W);
        for (double v : q) loss_query += 0.5 * v * v;
        std::vector<double> Qt = apply_rt(p, q, H, W);
        for (int r = 0; r < N; ++r)
          for (int t = 0; t < N; ++t) {
            double v = Qt[static_cast<size_t>(r) * N + t];
            for (int c = 0; c < C; ++c)
              grad[static_cast<size_t>(r) * C + c] += v * G[static_cast<size_t>(t) * C + c];
          }
      }
      double wn = 0;
      for (size_t i = 0; i < w.size(); ++i) {
        wn += w[i] * w[i];
        grad[i] += lambda * w[i];
      }
      std::vector<double> T = dots(grad, F);
      std::vector<double> num(N, 0.0), den_ref(N, 0.0);
      for (int r = 0; r < N; ++r) {
        for (int c = 0; c < C; ++c)
          num[r] += grad[static_cast<size_t>(r) * C + c] * grad[static_cast<size_t>(r) * C + c];
        for (int t = 0; t < N; ++t) {
          double v = J[static_cast<size_t>(r) * N + t] * T[static_cast<size_t>(r) * N + t];
          den_ref[r] += v * v;
        }
      }
      std::vector<double> alpha(N);
      double num_all = 0, alpha_mean = 0, amin = 0, amax = 0;
      for (int r = 0; r < N; ++r) num_all += num[r];
      if (o.apply_query_loss) {
        std::vector<double> U = dots(grad, G);
        std::vector<double> ru = apply_r(p, U, H, W);
        double den = 0;
        for (double v : ru) den += v * v;
        for (int r = 0; r < N; ++r) den += den_ref[r];
        den += lambda * num_all;
        den = std::max(den, 1e-8) + p.steplength_reg * num_all;
        std::fill(alpha.begin(), alpha.end(), num_all / den);
      } else {
        for (int r = 0; r < N; ++r) {
          double den = std::max(den_ref[r] + lambda * num[r], 1e-8) + p.steplength_reg * num[r];
          alpha[r] = num[r] / den;
        }
      }
      amin = amax = alpha[0];
      for (int r = 0; r < N; ++r) {
        alpha_mean += alpha[r] / N;
        amin = std::min(amin, alpha[r]);
        amax = std::max(amax, alpha[r]);
        for (int c = 0; c < C; ++c)
          w[static_cast<size_t>(r) * C + c] -=
              step * alpha[r] * grad[static_cast<size_t>(r) * C + c];
      }
      // {batch, iter, loss_ref, loss_query, loss_reg, grad_norm, alpha, alpha_min, alpha_max}
      if (diag != nullptr)
        diag->push_back({b, it, loss_ref, loss_query, 0.5 * lambda * wn, std::sqrt(num_all),
                         alpha_mean, amin, amax});
    }
    std::vector<double> Q = dots(w, G);
    for (int r = 0; r < N; ++r)
      for (int t = 0; t < N; ++t)
        (*volume)[(static_cast<size_t>(b) * N + t) * N + r] = Q[static_cast<size_t>(r) * N + t];
    std::copy(w.begin(), w.end(), filter->begin() + static_cast<size_t>(b) * N * C);
  }
  if (min_abs_score != nullptr) *min_abs_score = min_abs;
}

void gocor_local_ref64(const gocor::LocalGocorParams& p, const gocor::LocalGocorOptions& o,
                       const float* reference, const float* query, int B, int C, int H, int W,
                       std::vector<double>* volume, std::vector<double>* filter,
                       std::vector<gocor::GocorIterDiag>* diag) {
  const int R = o.search_radius, S = 2 * R + 1, D = S * S;
  const size_t P = static_cast<size_t>(H) * W;
  volume->assign(static_cast<size_t>(B) * D * P, 0.0);
  filter->assign(static_cast<size_t>(B) * C * P, 0.0);
  if (diag != nullptr) diag->clear();
  const double lambda = std::max(static_cast<double>(p.filter_reg) * p.filter_reg,
                                 static_cast<double>(p.min_filter_reg) * p.min_filter_reg) /
                        (static_cast<double>(C) * C);
  const double step = std::exp(static_cast<double>(p.log_step_length));
  std::vector<double> yk(D), vk(D), mk(D);
  for (int k = 0; k < D; ++k) {
    double dy = k / S - R, dx = k % S - R;
    distance_fns_eval(p.dist, std::sqrt(dy * dy + dx * dx), &yk[k], &vk[k], &mk[k]);
  }
  for (int b = 0; b < B; ++b) {
    const float* f = reference + static_cast<size_t>(b) * C * P;
    const float* g = query + static_cast<size_t>(b) * C * P;
    double* w = filter->data() + static_cast<size_t>(b) * C * P;
    for (size_t i = 0; i < P; ++i) {
      double m2 = 0;
      for (int c = 0; c < C; ++c) m2 += static_cast<double>(f[c * P + i]) * f[c * P + i];
      m2 /= C;
      for (int c = 0; c < C; ++c) w[c * P + i] = p.scaling * f[c * P + i] / (m2 + 1e-6);
    }
    // Corr(a, feat)[k] at pixel (y, x), feat zero outside the image.
    auto corr = [&](const double* a, const float* feat, int y, int x, int k) {
      int yy = y + k / S - R, xx = x + k % S - R;
      if (yy < 0 || yy >= H || xx < 0 || xx >= W) return 0.0;
      double acc = 0;
      for (int c = 0; c < C; ++c) acc += a[c * P + y * W + x] * feat[c * P + yy * W + xx];
      return acc / C;
    };
    std::vector<double> grad(static_cast<size_t>(C) * P);
    for (int it = 0; it < o.num_iter; ++it) {
      double loss_ref = 0, wn = 0, num_all = 0, amean = 0, amin = 1e300, amax = -1e300;
      std::vector<double> alpha(P);
      for (int y = 0; y < H; ++y)
        for (int x = 0; x < W; ++x) {
          const size_t i = static_cast<size_t>(y) * W + x;
          std::vector<double> J(D), jr(D);
          for (int k = 0; k < D; ++k) {
            double s = corr(w, f, y, x, k);
            double rho = vk[k] * (sigma(s, mk[k]) - yk[k]);
            J[k] = vk[k] * sigma_d(s, mk[k]);
            jr[k] = J[k] * rho;
            loss_ref += 0.5 * rho * rho;
          }
          double num = 0;
          for (int c = 0; c < C; ++c) {
            double acc = 0;
            for (int k = 0; k < D; ++k) {
              int yy = y + k / S - R, xx = x + k % S - R;
              if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
              acc += jr[k] * f[c * P + yy * W + xx];
            }
            double gr = lambda * w[c * P + i] + acc / C;
            grad[c * P + i] = gr;
            num += gr * gr;
            wn += w[c * P + i] * w[c * P + i];
          }
          double den = 0;
          for (int k = 0; k < D; ++k) {
            double t = J[k] * corr(grad.data(), f, y, x, k);
            den += t * t;
          }
          den = std::max(den + lambda * num, 1e-8);
          alpha[i] = num / den;
          num_all += num;
          amean += alpha[i] / P;
          amin = std::min(amin, alpha[i]);
          amax = std::max(amax, alpha[i]);
        }
      for (int c = 0; c < C; ++c)
        for (size_t i = 0; i < P; ++i) w[c * P + i] -= step * alpha[i] * grad[c * P + i];
      // {batch, iter, loss_ref, loss_query, loss_reg, grad_norm, alpha, alpha_min, alpha_max}
      if (diag != nullptr)
        diag->push_back(
            {b, it, loss_ref, 0.0, 0.5 * lambda * wn, std::sqrt(num_all), amean, amin, amax});
    }
    double* out = volume->data() + static_cast<size_t>(b) * D * P;
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x)
        for (int k = 0; k < D; ++k) out[k * P + y * W + x] = corr(w, g, y, x, k);
  }
}

}  // namespace gocor_ref
