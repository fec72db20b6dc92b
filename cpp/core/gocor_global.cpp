// Global GOCor on the CPU (spec section 4), exact float32, organised for speed (spec section 8):
//  * S = w.f and Q = w.g are never recomputed: after a step w <- w - beta*grad they change by
//    -beta*(grad.f) and -beta*(grad.g), products the step length needs anyway;
//  * the query regulariser only enters through P = R^T R (gradient: (P Q) g; step length:
//    ||R U||^2 = <U, P U> with U = grad.g), and P Q is kept up to date the same way, so each
//    iteration applies P once, to the new direction U. P is one fused 5x5x5x5 correlation with
//    exact zero-padding borders (gocor_kernels.cpp); no I*N*N or O*N*N intermediate exists.
// Memory per batch element: six N x N float matrices (S, Q, PQ, A/T, U, PU) plus a padded copy.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>

#include "gocor.h"
#include "gocor_kernels.h"
#include "parallel.h"

namespace gocor {
namespace {

using gocor_detail::gemm;

// Per-displacement tables of y, v+, (1-m)/2, (1+m)/2 over the (2H-1) x (2W-1) grid of
// displacements (sy - ry + H - 1, sx - rx + W - 1); only the distance matters (spec 4.3).
struct DistTables {
  int W2 = 0;
  std::vector<float> y, v, hm, hp;
};

DistTables make_tables(const DistanceFns& fns, int H, int W) {
  DistTables t;
  t.W2 = 2 * W - 1;
  const size_t n = static_cast<size_t>(2 * H - 1) * t.W2;
  t.y.resize(n);
  t.v.resize(n);
  t.hm.resize(n);
  t.hp.resize(n);
  for (int dy = -(H - 1); dy <= H - 1; ++dy)
    for (int dx = -(W - 1); dx <= W - 1; ++dx) {
      double y, v, m;
      distance_fns_eval(fns, std::sqrt(static_cast<double>(dy * dy + dx * dx)), &y, &v, &m);
      // The official module evaluates the functions in float32; m is rounded before (1-m)/2.
      const float mf = static_cast<float>(m);
      const size_t i = static_cast<size_t>(dy + H - 1) * t.W2 + (dx + W - 1);
      t.y[i] = static_cast<float>(y);
      t.v[i] = static_cast<float>(v);
      t.hm[i] = (1.f - mf) * 0.5f;
      t.hp[i] = (1.f + mf) * 0.5f;
    }
  return t;
}

// One reference row r: a[s] = J * rho (J = v sigma'(S), rho = v (sigma(S) - y)); returns
// sum rho^2. S row (N), a row (N).
inline __attribute__((always_inline)) double residual_row_body(const DistTables& t,
                                                               const float* srow, float* arow,
                                                               int r, int H, int W) {
  const int ry = r / W, rx = r % W;
  double loss = 0;
  for (int sy = 0; sy < H; ++sy) {
    const size_t base = static_cast<size_t>(sy - ry + H - 1) * t.W2 + (W - 1 - rx);
    const float* y = t.y.data() + base;
    const float* v = t.v.data() + base;
    const float* hm = t.hm.data() + base;
    const float* hp = t.hp.data() + base;
    const float* s = srow + sy * W;
    float* a = arow + sy * W;
    float part = 0;
    for (int sx = 0; sx < W; ++sx) {
      const float sv = s[sx];
      const float sg = static_cast<float>((sv > 0.f) - (sv < 0.f));
      const float rho = v[sx] * (hm[sx] * std::fabs(sv) + hp[sx] * sv - y[sx]);
      const float j = v[sx] * (hm[sx] * sg + hp[sx]);
      a[sx] = j * rho;
      part += rho * rho;
    }
    loss += part;
  }
  return loss;
}

// One reference row: sum_s (J[r,s] * T[r,s])^2 with J recomputed from the unchanged S row.
inline __attribute__((always_inline)) double jt_row_body(const DistTables& t, const float* srow,
                                                         const float* trow, int r, int H, int W) {
  const int ry = r / W, rx = r % W;
  double den = 0;
  for (int sy = 0; sy < H; ++sy) {
    const size_t base = static_cast<size_t>(sy - ry + H - 1) * t.W2 + (W - 1 - rx);
    const float* v = t.v.data() + base;
    const float* hm = t.hm.data() + base;
    const float* hp = t.hp.data() + base;
    const float* s = srow + sy * W;
    const float* tt = trow + sy * W;
    float part = 0;
    for (int sx = 0; sx < W; ++sx) {
      const float sv = s[sx];
      const float sg = static_cast<float>((sv > 0.f) - (sv < 0.f));
      const float jt = v[sx] * (hm[sx] * sg + hp[sx]) * tt[sx];
      part += jt * jt;
    }
    den += part;
  }
  return den;
}

struct RowFns {
  double (*residual)(const DistTables&, const float*, float*, int, int, int);
  double (*jt)(const DistTables&, const float*, const float*, int, int, int);
};

GOCOR_KERNEL_AVX512 double residual_avx512(const DistTables& t, const float* s, float* a, int r,
                                           int H, int W) {
  return residual_row_body(t, s, a, r, H, W);
}
GOCOR_KERNEL_AVX2 double residual_avx2(const DistTables& t, const float* s, float* a, int r, int H,
                                       int W) {
  return residual_row_body(t, s, a, r, H, W);
}
GOCOR_KERNEL_PORTABLE double residual_portable(const DistTables& t, const float* s, float* a, int r,
                                               int H, int W) {
  return residual_row_body(t, s, a, r, H, W);
}
GOCOR_KERNEL_AVX512 double jt_avx512(const DistTables& t, const float* s, const float* tr, int r,
                                     int H, int W) {
  return jt_row_body(t, s, tr, r, H, W);
}
GOCOR_KERNEL_AVX2 double jt_avx2(const DistTables& t, const float* s, const float* tr, int r, int H,
                                 int W) {
  return jt_row_body(t, s, tr, r, H, W);
}
GOCOR_KERNEL_PORTABLE double jt_portable(const DistTables& t, const float* s, const float* tr,
                                         int r, int H, int W) {
  return jt_row_body(t, s, tr, r, H, W);
}

RowFns row_fns() {
  return simd::simd_select(RowFns{residual_avx512, jt_avx512}, RowFns{residual_avx2, jt_avx2},
                           RowFns{residual_portable, jt_portable});
}

struct GlobalWork {
  std::vector<float> F, G, w, grad, S, A, Q, PQ, U, PU, scratch;
  // Large problems give their memory back after the call; small ones keep it for the next.
  void trim() {
    size_t total = 0;
    for (auto* v : {&F, &G, &w, &grad, &S, &A, &Q, &PQ, &U, &PU, &scratch}) total += v->capacity();
    if (total * sizeof(float) <= (size_t{64} << 20)) return;
    for (auto* v : {&F, &G, &w, &grad, &S, &A, &Q, &PQ, &U, &PU, &scratch})
      std::vector<float>().swap(*v);
  }
};

// Building the fused R^T R taps costs about a millisecond; repeated calls with the same weights
// and grid (the usual case: one network, many images) reuse them. A few entries, most recent first.
std::shared_ptr<const gocor_detail::RtROperator> cached_rtr(const GlobalGocorParams& p, int H,
                                                            int W) {
  struct Entry {
    std::vector<float> w1, w2;
    int I, O, H, W;
    std::shared_ptr<const gocor_detail::RtROperator> op;
  };
  static std::mutex mu;
  static std::vector<Entry> cache;
  {
    std::lock_guard<std::mutex> lock(mu);
    for (size_t i = 0; i < cache.size(); ++i) {
      const Entry& e = cache[i];
      if (e.H == H && e.W == W && e.I == p.reg_inter_dim && e.O == p.reg_output_dim &&
          e.w1 == p.reg_weight1 && e.w2 == p.reg_weight2) {
        auto op = e.op;
        std::rotate(cache.begin(), cache.begin() + i, cache.begin() + i + 1);
        return op;
      }
    }
  }
  auto op = std::make_shared<const gocor_detail::RtROperator>(p, H, W);
  std::lock_guard<std::mutex> lock(mu);
  cache.insert(cache.begin(),
               Entry{p.reg_weight1, p.reg_weight2, p.reg_inter_dim, p.reg_output_dim, H, W, op});
  if (cache.size() > 4) cache.pop_back();
  return op;
}

// Sum of a[i] * b[i]: float partial sums in 16 independent lanes (vectorised), folded into a
// double every 1024 elements so long rows keep float32-level relative accuracy.
double dot_rows(const float* a, const float* b, int64_t n) {
  double acc = 0;
  for (int64_t i0 = 0; i0 < n; i0 += 1024) {
    const int64_t i1 = std::min(n, i0 + 1024);
    float lanes[16] = {};
    int64_t i = i0;
    for (; i + 16 <= i1; i += 16)
      for (int l = 0; l < 16; ++l) lanes[l] += a[i + l] * b[i + l];
    for (; i < i1; ++i) lanes[0] += a[i] * b[i];
    for (int l = 0; l < 16; ++l) acc += lanes[l];
  }
  return acc;
}

void axpy(float* y, const float* x, float beta, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] -= beta * x[i];
}

thread_local GlobalWork global_work;  // gocor_global_cpu's buffers

}  // namespace

void gocor_global_release_thread_buffers() {
  global_work = GlobalWork();
}

void gocor_global_cpu(const GlobalGocorParams& p, const GlobalGocorOptions& o,
                      const float* reference, const float* query, float* volume, float* filter_out,
                      const GocorGlobalShape& s, const Exec& ex, std::vector<GocorIterDiag>* diag) {
  const int B = s.B, C = s.C, H = s.H, W = s.W;
  const RowFns fns = row_fns();
  if (B < 1 || C < 1 || H < 1 || W < 1)
    throw Error(ErrorCode::Shape, "gocor_global: B, C, H, W must all be >= 1");
  if (static_cast<int>(p.target_fg.size()) != C || static_cast<int>(p.target_bg.size()) != C)
    throw Error(ErrorCode::Shape, "gocor_global: target_fg/target_bg must have C elements");
  if (o.num_iter < 0) throw Error(ErrorCode::InvalidArg, "gocor_global: num_iter must be >= 0");
  const int N = H * W;
  const int64_t NN = static_cast<int64_t>(N) * N, NC = static_cast<int64_t>(N) * C;
  const int th = ex.threads;
  const bool query_loss = o.apply_query_loss;
  const double lambda_d = std::max(static_cast<double>(p.filter_reg) * p.filter_reg,
                                   static_cast<double>(p.min_filter_reg) * p.min_filter_reg);
  const float lambda = static_cast<float>(lambda_d);
  const double step = std::exp(static_cast<double>(p.log_step_length));
  if (diag != nullptr) diag->clear();

  const DistTables tables = make_tables(p.dist, H, W);
  std::shared_ptr<const gocor_detail::RtROperator> rtr;
  if (query_loss && o.num_iter > 0) rtr = cached_rtr(p, H, W);

  // Buffers live per thread between calls: allocating and faulting in fresh pages every call
  // costs about as much as the whole computation at GLU-Net size. Every element is written
  // before it is read, so reuse needs no clearing.
  GlobalWork& wk = global_work;
  struct Release {
    GlobalWork& w;
    ~Release() { w.trim(); }
  } release{wk};
  std::vector<float>&F = wk.F, &G = wk.G, &w = wk.w, &grad = wk.grad, &S = wk.S, &A = wk.A,
  &Q = wk.Q, &PQ = wk.PQ, &U = wk.U, &PU = wk.PU, &scratch = wk.scratch;
  for (auto* v : {&F, &G, &w, &grad}) v->resize(NC);
  for (auto* v : {&S, &A}) v->resize(NN);
  if (query_loss)
    for (auto* v : {&Q, &PQ, &U, &PU}) v->resize(NN);
  std::vector<double> row_a(N), row_b(N), row_c(N), alpha(N);

  for (int b = 0; b < B; ++b) {
    check_cancel(ex);
    const float* fb = reference + static_cast<int64_t>(b) * C * N;
    const float* gb = query + static_cast<int64_t>(b) * C * N;
    // Position-major copies (row r = feature of position r) for the products over positions; the
    // products over channels read the (C, N) inputs directly, which is the layout they need.
    parallel_chunks(N, th, 64, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        for (int c = 0; c < C; ++c) {
          F[r * C + c] = fb[static_cast<int64_t>(c) * N + r];
          G[r * C + c] = gb[static_cast<int64_t>(c) * N + r];
        }
    });
    // Initializer (spec 4.2); the scalars in float64 because a*b - c^2 cancels.
    std::vector<double> mu(C, 0.0);
    for (int r = 0; r < N; ++r)
      for (int c = 0; c < C; ++c) mu[c] += F[static_cast<int64_t>(r) * C + c];
    double bb = 0;
    for (int c = 0; c < C; ++c) {
      mu[c] /= N;
      bb += mu[c] * mu[c];
    }
    parallel_chunks(N, th, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float* f = &F[r * C];
        double a = 0, cc = 0;
        for (int c = 0; c < C; ++c) {
          a += static_cast<double>(f[c]) * f[c];
          cc += f[c] * mu[c];
        }
        const double D = std::max(a * bb - cc * cc, 1e-6);
        for (int k = 0; k < C; ++k)
          w[r * C + k] = static_cast<float>(((p.target_fg[k] * bb - p.target_bg[k] * cc) * f[k] -
                                             (p.target_fg[k] * cc - p.target_bg[k] * a) * mu[k]) /
                                            D);
      }
    });

    if (o.num_iter > 0) {
      gemm(N, N, C, w.data(), C, fb, N, false, S.data(), N, false, th);
      if (query_loss) {
        gemm(N, N, C, w.data(), C, gb, N, false, Q.data(), N, false, th);
        rtr->apply(Q.data(), PQ.data(), scratch, th);
      }
    }
    for (int it = 0; it < o.num_iter; ++it) {
      check_cancel(ex);
      const bool last = it == o.num_iter - 1;
      // A = J * rho, and the reference loss.
      parallel_chunks(N, th, 8, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r)
          row_a[r] = fns.residual(tables, &S[r * N], &A[r * N], static_cast<int>(r), H, W);
      });
      double loss_ref = 0;
      for (int r = 0; r < N; ++r) loss_ref += 0.5 * row_a[r];
      // grad = lambda w + A f + (P Q) g.
      for (int64_t i = 0; i < NC; ++i) grad[i] = lambda * w[i];
      gemm(N, C, N, A.data(), N, F.data(), C, false, grad.data(), C, true, th);
      if (query_loss) gemm(N, C, N, PQ.data(), N, G.data(), C, false, grad.data(), C, true, th);
      parallel_chunks(N, th, 16, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          row_b[r] = dot_rows(&grad[r * C], &grad[r * C], C);
          row_c[r] = dot_rows(&w[r * C], &w[r * C], C);
        }
      });
      // T = grad . f (into A, no longer needed), and sum (J T)^2 per row.
      float* T = A.data();
      gemm(N, N, C, grad.data(), C, fb, N, false, T, N, false, th);
      parallel_chunks(N, th, 8, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r)
          row_a[r] = fns.jt(tables, &S[r * N], &T[r * N], static_cast<int>(r), H, W);
      });
      double num_all = 0, wn = 0, den_ref_all = 0;
      for (int r = 0; r < N; ++r) {
        num_all += row_b[r];
        wn += row_c[r];
        den_ref_all += row_a[r];
      }
      double loss_query = 0;
      if (query_loss) {
        gemm(N, N, C, grad.data(), C, gb, N, false, U.data(), N, false, th);
        rtr->apply(U.data(), PU.data(), scratch, th);
        double den_q = 0, lq = 0;
        std::vector<double> part(N);
        parallel_chunks(N, th, 16, [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r) {
            row_a[r] = dot_rows(&U[r * N], &PU[r * N], N);
            part[r] = dot_rows(&Q[r * N], &PQ[r * N], N);
          }
        });
        for (int r = 0; r < N; ++r) {
          den_q += row_a[r];
          lq += part[r];
        }
        loss_query = 0.5 * lq;
        double den = den_ref_all + den_q + lambda_d * num_all;
        den = std::max(den, 1e-8) + p.steplength_reg * num_all;
        std::fill(alpha.begin(), alpha.end(), num_all / den);
      } else {
        // Without the query term every filter has its own step length (sums over s only).
        for (int r = 0; r < N; ++r) {
          const double den =
              std::max(row_a[r] + lambda_d * row_b[r], 1e-8) + p.steplength_reg * row_b[r];
          alpha[r] = row_b[r] / den;
        }
      }
      // Update w and the tracked products with the same step.
      parallel_chunks(N, th, 8, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const float beta = static_cast<float>(step * alpha[r]);
          axpy(&w[r * C], &grad[r * C], beta, C);
          if (!last) axpy(&S[r * N], &T[r * N], beta, N);
          if (query_loss) {
            axpy(&Q[r * N], &U[r * N], beta, N);
            if (!last) axpy(&PQ[r * N], &PU[r * N], beta, N);
          }
        }
      });
      if (diag != nullptr) {
        GocorIterDiag d;
        d.batch = b;
        d.iter = it;
        d.loss_ref = loss_ref;
        d.loss_query = loss_query;
        d.loss_reg = 0.5 * lambda_d * wn;
        d.grad_norm = std::sqrt(num_all);
        double amean = 0, amin = alpha[0], amax = alpha[0];
        for (int r = 0; r < N; ++r) {
          amean += alpha[r] / N;
          amin = std::min(amin, alpha[r]);
          amax = std::max(amax, alpha[r]);
        }
        d.alpha = amean;
        d.alpha_min = amin;
        d.alpha_max = amax;
        diag->push_back(d);
      }
    }
    // Volume (B, N_t, N_r): row t holds w_r . g_t over r, i.e. the transpose of Q.
    float* vol = volume + static_cast<int64_t>(b) * NN;
    if (query_loss && o.num_iter > 0) {
      parallel_chunks(N, th, 16, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t)
          for (int r = 0; r < N; ++r) vol[t * N + r] = Q[static_cast<int64_t>(r) * N + t];
      });
    } else {
      gemm(N, N, C, G.data(), C, w.data(), C, true, vol, N, false, th);
    }
    if (filter_out != nullptr)
      std::memcpy(filter_out + static_cast<int64_t>(b) * NC, w.data(), sizeof(float) * NC);
  }
}

size_t gocor_global_work_bytes(const GocorGlobalShape& s, const GlobalGocorOptions& o) {
  // As allocated in gocor_global_cpu: F, G, w, grad (N x C); S, A (N x N); with the query term
  // Q, PQ, U, PU (N x N) and the R^T R operator; the distance tables and per-row scalars.
  const size_t N = size_t(s.H) * s.W, NN = N * N, NC = N * s.C;
  const bool with_rtr = o.apply_query_loss && o.num_iter > 0;
  size_t floats = 4 * NC + 2 * NN + (o.apply_query_loss ? 4 * NN : 0);
  floats += 4 * size_t(2 * s.H - 1) * (2 * s.W - 1);
  return sizeof(float) * floats + sizeof(double) * (4 * N + s.C) +
         (with_rtr ? gocor_detail::RtROperator::bytes(s.H, s.W) : 0);
}

}  // namespace gocor
