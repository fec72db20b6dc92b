// Global GOCor on the CPU (spec section 4), exact float32, organised for speed (spec section 8).
// Two forms compute the same iterations; gocor_global_cpu takes the one with fewer FLOPs
// (choose_form; the C x N x N GEMMs dominate both, the R^T R stencil is common to both).
//
// Common to both:
//  * S = w.f and Q = w.g are never recomputed: after a step w <- w - beta*grad they change by
//    -beta*(grad.f) and -beta*(grad.g), products the step length needs anyway;
//  * the query regulariser only enters through P = R^T R (gradient: (P Q) g; step length:
//    ||R U||^2 = <U, P U> with U = grad.g), and P Q is kept up to date the same way, so each
//    iteration applies P once, to the new direction U. P is one fused 5x5x5x5 correlation with
//    exact zero-padding borders (gocor_kernels.cpp); no I*N*N or O*N*N intermediate exists.
//
// Direct form (run_direct): grad = lambda w + (J rho) f + (P Q) g is formed (N x C), then
// T = grad.f and U = grad.g: per iteration four N x N x C products (two without the query term).
//
// Gram form (run_gram): every filter stays in span{w0, f_1..f_N, g_1..g_N}, so no N x C array is
// needed during the iterations. With X = [F; G] (2N x C, rows f_s then g_t), the Gram matrix
// Gm = X X^T (2N x 2N: [[F F^T, F G^T], [G F^T, G G^T]], symmetric: blocks on and right of the
// diagonal computed, the rest mirrored), Z = [S | Q] = w X^T (N x 2N) and Y = [E | PQ] (N x 2N)
// with E = J*rho, PQ = P Q:
//    grad_r = lambda w_r + Y_r X                      (never formed)
//    [T | U] = grad X^T = lambda Z + TU',  TU' = Y Gm   (one N x 2N x 2N product per iteration)
//    P U = lambda PQ + PU',                PU' = P U'   (the stencil applied to U' = TU'[:, N:])
// and the step length's row products from tracked scalars (n_r = ||w_r||^2):
//    w_r.grad_r  = lambda n_r + Y_r.Z_r                 (Y_r.Z_r = E_r.S_r + PQ_r.Q_r)
//    ||grad_r||^2 = lambda^2 n_r + 2 lambda Y_r.Z_r + Y_r.TU'_r
//    n_r <- n_r - 2 beta w_r.grad_r + beta^2 ||grad_r||^2   (after w <- w - beta grad)
//    sum (J T)^2 with T = lambda S + T';  ||R U||^2 = <lambda Q + U', lambda PQ + PU'>;
// the update Z <- (1 - beta lambda) Z - beta TU', PQ <- (1 - beta lambda) PQ - beta PU' is fused
// into the next iteration's row pass, and the output is Q_K (transposed). Z_0 = w0 X^T is one GEMM,
// or, when target_fg and target_bg are constant vectors (w0_r = u_r f_r - v_r mu), read off the
// Gram matrix: Z_0[r] = u_r Gm[r] - v_r (mu X^T). The filters, when asked for, are tracked as
// w = c w0 + Cw X (c per row, Cw N x 2N) and formed once at the end.
// Accuracy: Gm is used centred, Gm = Gc + cv 1^T + 1 cv^T + q (Gc = Xc Xc^T, Xc = X - 1 m^T, m the
// mean feature): features after a ReLU are all positive and strongly correlated, so Y Gm would
// cancel large products and ||grad_r||^2 = Y_r Gm Y_r^T lose the square of that cancellation's
// digits (GLU-Net-GOCor's golden flows: 8.8e-4 from float64 uncentred, 6.1e-5 centred, 6.9e-5 in
// the direct form); the rank-one terms are added in float64.
// Per iteration 4(1+q) N^3 instead of 4(1+q) N^2 C FLOPs (q = query term), plus about 2(1+q)N^2C
// once for Gm: the Gram form wins when C is large against N (GLU-Net: N = 256, C = 512).
// Memory per batch element: direct: six N x N float matrices (S, Q, PQ, A/T, U, PU) plus a padded
// copy; Gram: thirteen (Gm, Z, Y, TU') plus PU, Xc (2N x C), and Cw when the filters are asked for.
#include <algorithm>
#include <atomic>
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
  // The tables along grid row sy of reference position (ry, rx): element sx at [sx].
  struct Row {
    const float *y, *v, *hm, *hp;
  };
  Row row(int sy, int ry, int rx, int H, int W) const {
    const size_t base = static_cast<size_t>(sy - ry + H - 1) * W2 + (W - 1 - rx);
    return {y.data() + base, v.data() + base, hm.data() + base, hp.data() + base};
  }
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

// rho = v (sigma(s) - y) and J = v sigma'(s) at element x of a table row, for the score s (spec
// 3.3: sgn(0) = 0).
struct RhoJ {
  float rho, j;
};
inline __attribute__((always_inline)) RhoJ rho_j(const DistTables::Row& tr, int x, float s) {
  const float sg = static_cast<float>((s > 0.f) - (s < 0.f));
  return {tr.v[x] * (tr.hm[x] * std::fabs(s) + tr.hp[x] * s - tr.y[x]),
          tr.v[x] * (tr.hm[x] * sg + tr.hp[x])};
}

// One reference row r: a[s] = J * rho (J = v sigma'(S), rho = v (sigma(S) - y)); returns
// sum rho^2. S row (N), a row (N).
inline __attribute__((always_inline)) double residual_row_body(const DistTables& t,
                                                               const float* srow, float* arow,
                                                               int r, int H, int W) {
  const int ry = r / W, rx = r % W;
  double loss = 0;
  for (int sy = 0; sy < H; ++sy) {
    const DistTables::Row tr = t.row(sy, ry, rx, H, W);
    const float* s = srow + sy * W;
    float* a = arow + sy * W;
    float part = 0;
    for (int sx = 0; sx < W; ++sx) {
      const RhoJ e = rho_j(tr, sx, s[sx]);
      a[sx] = e.j * e.rho;
      part += e.rho * e.rho;
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
    const DistTables::Row tr = t.row(sy, ry, rx, H, W);
    const float* s = srow + sy * W;
    const float* tt = trow + sy * W;
    float part = 0;
    for (int sx = 0; sx < W; ++sx) {
      const float jt = rho_j(tr, sx, s[sx]).j * tt[sx];
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

// Sum of term(i) over [0, n): float partial sums in 16 independent lanes (vectorised), folded into
// a double every 1024 elements so long rows keep float32-level relative accuracy.
template <class Term>
inline __attribute__((always_inline)) double lane_sum(int64_t n, Term term) {
  double acc = 0;
  for (int64_t i0 = 0; i0 < n; i0 += 1024) {
    const int64_t i1 = std::min(n, i0 + 1024);
    float lanes[16] = {};
    int64_t i = i0;
    for (; i + 16 <= i1; i += 16)
      for (int l = 0; l < 16; ++l) lanes[l] += term(i + l);
    for (; i < i1; ++i) lanes[0] += term(i);
    for (int l = 0; l < 16; ++l) acc += lanes[l];
  }
  return acc;
}

// Sum of x[i] in float64, in eight independent lanes (a single running sum is one long chain of
// dependent additions).
inline double sum_floats(const float* x, int64_t n) {
  double lanes[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) lanes[l] += x[i + l];
  for (; i < n; ++i) lanes[0] += x[i];
  double s = 0;
  for (double v : lanes) s += v;
  return s;
}

// Sum of a[i] * b[i].
inline __attribute__((always_inline)) double dot_rows(const float* a, const float* b, int64_t n) {
  return lane_sum(
      n, [&](int64_t i) __attribute__((always_inline)) { return a[i] * b[i]; });
}

// Sum of (k a[i] + b[i]) * (k c[i] + d[i]).
inline __attribute__((always_inline)) double dot_affine(float k, const float* a, const float* b,
                                                        const float* c, const float* d, int64_t n) {
  return lane_sum(
      n, [&](int64_t i)
             __attribute__((always_inline)) { return (k * a[i] + b[i]) * (k * c[i] + d[i]); });
}

// ---- Gram form: the two row passes of an iteration (see the header) ----------------------------

// Rows of the Gram form's N x 2N arrays: z = [S | Q], y = [E | PQ], tu = [T' | U'], pu = PU'.
struct GramRow {
  float* z;
  float* y;
  const float* tu;
  const float* pu;
};

// The Gram form's row passes run over a grid row in vectors of the level's width (simd.h; the
// row's last W mod width columns one by one), with one vector of partial sums per quantity,
// folded into a double every 8 grid rows so that long rows keep float32-level relative accuracy.
constexpr int kFoldRows = 8;

template <class V>
inline __attribute__((always_inline)) double fold(typename V::T& acc, float& tail) {
  double s = tail;
  for (int l = 0; l < V::W; ++l) s += acc[l];
  acc = V::zero();
  tail = 0.f;
  return s;
}

// sgn(s) as a float vector (sgn(0) = 0) and |s|.
template <class V>
inline __attribute__((always_inline)) typename V::T sign_of(typename V::T s) {
  using T = typename V::T;
  return __builtin_convertvector((s < 0.f) - (s > 0.f), T);
}
template <class V>
inline __attribute__((always_inline)) typename V::T abs_of(typename V::T s) {
  using I = decltype(s > 0.f);
  return (typename V::T)((I)s & 0x7fffffff);
}

// Pass A of reference row r, at the start of an iteration. kUpdate: first the previous step,
// z <- decay z - beta tu and (query) PQ <- decay PQ - beta pu. Then E = J rho from the new S.
// out = {sum rho^2, E.S, PQ.Q}.
template <class V, bool kUpdate>
inline __attribute__((always_inline)) void gram_pass_a_body(const DistTables& t, const GramRow& g,
                                                            float beta, float decay, bool query,
                                                            int r, int H, int W, double* out) {
  using T = typename V::T;
  const int N = H * W, ry = r / W, rx = r % W;
  float* S = g.z;
  float* Q = g.z + N;
  float* E = g.y;
  float* PQ = g.y + N;
  if (kUpdate) {
    for (int i = 0; i < N; ++i) Q[i] = decay * Q[i] - beta * g.tu[N + i];
    if (query)
      for (int i = 0; i < N; ++i) PQ[i] = decay * PQ[i] - beta * g.pu[i];
  }
  T a_loss = V::zero(), a_es = V::zero();
  float t_loss = 0.f, t_es = 0.f;
  double loss = 0, es = 0;
  for (int sy = 0; sy < H; ++sy) {
    const DistTables::Row tr = t.row(sy, ry, rx, H, W);
    const float* y = tr.y;
    const float* v = tr.v;
    const float* hm = tr.hm;
    const float* hp = tr.hp;
    float* s = S + sy * W;
    float* e = E + sy * W;
    const float* ts = g.tu + sy * W;
    int x = 0;
    for (; x + V::W <= W; x += V::W) {
      T sv = V::loadu(s + x);
      if (kUpdate) {
        sv = decay * sv - beta * V::loadu(ts + x);
        V::storeu(s + x, sv);
      }
      const T vv = V::loadu(v + x), hmv = V::loadu(hm + x), hpv = V::loadu(hp + x);
      const T rho = vv * (hmv * abs_of<V>(sv) + hpv * sv - V::loadu(y + x));
      const T ej = vv * (hmv * sign_of<V>(sv) + hpv) * rho;
      V::storeu(e + x, ej);
      a_loss += rho * rho;
      a_es += ej * sv;
    }
    for (; x < W; ++x) {
      float sv = s[x];
      if (kUpdate) {
        sv = decay * sv - beta * ts[x];
        s[x] = sv;
      }
      const RhoJ rj = rho_j(tr, x, sv);
      const float ej = rj.j * rj.rho;
      e[x] = ej;
      t_loss += rj.rho * rj.rho;
      t_es += ej * sv;
    }
    if (sy % kFoldRows == kFoldRows - 1 || sy == H - 1) {
      loss += fold<V>(a_loss, t_loss);
      es += fold<V>(a_es, t_es);
    }
  }
  out[0] = loss;
  out[1] = es;
  out[2] = query ? dot_rows(Q, PQ, N) : 0.0;
}

// Pass B of reference row r, after TU' = Y Gm and PU' = P U'. out = {sum (J (lambda S + T'))^2,
// <lambda Q + U', lambda PQ + PU'>} (the latter 0 without the query term). half: pu holds h with
// <U', h> = <U', P U'> instead (the last iteration, which needs only the quadratic form), and the
// second sum is lambda^2 <Q, PQ> + 2 lambda <U', PQ> + <U', h>.
template <class V>
inline __attribute__((always_inline)) void gram_pass_b_body(const DistTables& t, const GramRow& g,
                                                            float lambda, bool query, bool half,
                                                            int r, int H, int W, double* out) {
  using T = typename V::T;
  const int N = H * W, ry = r / W, rx = r % W;
  T acc = V::zero();
  float tail = 0.f;
  double den = 0;
  for (int sy = 0; sy < H; ++sy) {
    const DistTables::Row tr = t.row(sy, ry, rx, H, W);
    const float* v = tr.v;
    const float* hm = tr.hm;
    const float* hp = tr.hp;
    const float* s = g.z + sy * W;
    const float* tt = g.tu + sy * W;
    int x = 0;
    for (; x + V::W <= W; x += V::W) {
      const T sv = V::loadu(s + x);
      const T jt = V::loadu(v + x) * (V::loadu(hm + x) * sign_of<V>(sv) + V::loadu(hp + x)) *
                   (lambda * sv + V::loadu(tt + x));
      acc += jt * jt;
    }
    for (; x < W; ++x) {
      const float jt = rho_j(tr, x, s[x]).j * (lambda * s[x] + tt[x]);
      tail += jt * jt;
    }
    if (sy % kFoldRows == kFoldRows - 1 || sy == H - 1) den += fold<V>(acc, tail);
  }
  out[0] = den;
  out[1] = 0;
  if (query) {
    if (half) {
      const double l = lambda;
      out[1] = l * l * dot_rows(g.z + N, g.y + N, N) + 2 * l * dot_rows(g.y + N, g.tu + N, N) +
               dot_rows(g.tu + N, g.pu, N);
    } else {
      out[1] = dot_affine(lambda, g.z + N, g.tu + N, g.y + N, g.pu, N);
    }
  }
}

// The centring terms of one row (run_gram): with s = sum of y, yv = y . cv (over [0, k), in float64
// lanes), tu[j] += (yv + s q) + s cv[j] over [0, n2); returns y . tu_before + 2 s yv + s^2 q.
inline __attribute__((always_inline)) double gram_centre_body(const float* y, float* tu,
                                                              const double* cv, double q, int k,
                                                              int n2) {
  double ls[8] = {}, lv[8] = {};
  int j = 0;
  for (; j + 8 <= k; j += 8)
    for (int l = 0; l < 8; ++l) {
      ls[l] += y[j + l];
      lv[l] += y[j + l] * cv[j + l];
    }
  for (; j < k; ++j) {
    ls[0] += y[j];
    lv[0] += y[j] * cv[j];
  }
  double s = 0, yv = 0;
  for (int l = 0; l < 8; ++l) {
    s += ls[l];
    yv += lv[l];
  }
  const double out = dot_rows(y, tu, k) + 2 * s * yv + s * s * q;
  const double a = yv + s * q;
  for (j = 0; j < n2; ++j) tu[j] = static_cast<float>(tu[j] + (a + s * cv[j]));
  return out;
}

// The Gram form's float64 set-up loops, vectorised at the SIMD level: y += m x; a += f^2 and
// c += m f; a row of Z0 = u (Gm + cv_r + cv + q) - v mx (init.span).
inline __attribute__((always_inline)) void axpy64_body(double* y, double m, const float* x,
                                                       int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] += m * x[j];
}
inline __attribute__((always_inline)) void sq_axpy64_body(double* a, double* c, double m,
                                                          const float* f, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    a[j] += static_cast<double>(f[j]) * f[j];
    c[j] += f[j] * m;
  }
}
inline __attribute__((always_inline)) void z0_row_body(float* z, const float* gm, const double* cv,
                                                       const double* mx, double u, double v,
                                                       double cvr, double q, int64_t n) {
  for (int64_t j = 0; j < n; ++j)
    z[j] = static_cast<float>(u * (gm[j] + cvr + cv[j] + q) - v * mx[j]);
}

struct GramFns {
  void (*pass_a)(const DistTables&, const GramRow&, float, float, bool, bool, int, int, int,
                 double*);
  void (*pass_b)(const DistTables&, const GramRow&, float, bool, bool, int, int, int, double*);
  double (*centre)(const float*, float*, const double*, double, int, int);
  void (*axpy64)(double*, double, const float*, int64_t);
  void (*sq_axpy64)(double*, double*, double, const float*, int64_t);
  void (*z0_row)(float*, const float*, const double*, const double*, double, double, double, double,
                 int64_t);
};

#define GOCOR_GRAM_ENTRIES(ISA, KERNEL, V)                                                      \
  KERNEL void gram_a_##ISA(const DistTables& t, const GramRow& g, float beta, float decay,      \
                           bool update, bool query, int r, int H, int W, double* out) {         \
    if (update)                                                                                 \
      gram_pass_a_body<V, true>(t, g, beta, decay, query, r, H, W, out);                        \
    else                                                                                        \
      gram_pass_a_body<V, false>(t, g, beta, decay, query, r, H, W, out);                       \
  }                                                                                             \
  KERNEL void gram_b_##ISA(const DistTables& t, const GramRow& g, float lambda, bool query,     \
                           bool half, int r, int H, int W, double* out) {                       \
    gram_pass_b_body<V>(t, g, lambda, query, half, r, H, W, out);                               \
  }                                                                                             \
  KERNEL double gram_centre_##ISA(const float* y, float* tu, const double* cv, double q, int k, \
                                  int n2) {                                                     \
    return gram_centre_body(y, tu, cv, q, k, n2);                                               \
  }                                                                                             \
  KERNEL void axpy64_##ISA(double* y, double m, const float* x, int64_t n) {                    \
    axpy64_body(y, m, x, n);                                                                    \
  }                                                                                             \
  KERNEL void sq_axpy64_##ISA(double* a, double* c, double m, const float* f, int64_t n) {      \
    sq_axpy64_body(a, c, m, f, n);                                                              \
  }                                                                                             \
  KERNEL void z0_row_##ISA(float* z, const float* gm, const double* cv, const double* mx,       \
                           double u, double v, double cvr, double q, int64_t n) {               \
    z0_row_body(z, gm, cv, mx, u, v, cvr, q, n);                                                \
  }
GOCOR_GRAM_ENTRIES(avx512, GOCOR_KERNEL_AVX512, simd::Vec16)
GOCOR_GRAM_ENTRIES(avx2, GOCOR_KERNEL_AVX2, simd::Vec8)
GOCOR_GRAM_ENTRIES(portable, GOCOR_KERNEL_PORTABLE, simd::Vec4)
#undef GOCOR_GRAM_ENTRIES

GramFns gram_fns() {
  return simd::simd_select(
      GramFns{gram_a_avx512, gram_b_avx512, gram_centre_avx512, axpy64_avx512, sq_axpy64_avx512,
              z0_row_avx512},
      GramFns{gram_a_avx2, gram_b_avx2, gram_centre_avx2, axpy64_avx2, sq_axpy64_avx2, z0_row_avx2},
      GramFns{gram_a_portable, gram_b_portable, gram_centre_portable, axpy64_portable,
              sq_axpy64_portable, z0_row_portable});
}

struct GlobalWork {
  // Both forms: X = [F; G] position-major (2N x C), w (N x C), scratch (the stencil's padded copy).
  // Direct: grad (N x C); S, A, Q, PQ, U, PU (N x N). Gram: Gm (2N x 2N); Z, Y, TU (N x 2N);
  // PU (N x N); Cw (N x 2N, only when the filters are asked for); Bp (X^T, then Gm, packed as a
  // GEMM's B operand).
  WorkVector<float> X, Xc, w, grad, S, A, Q, PQ, U, PU, Gm, Z, Y, TU, Cw, Bp, scratch;
  // Large problems give their memory back after the call; small ones keep it for the next.
  void trim() {
    size_t total = 0;
    for (auto* v :
         {&X, &Xc, &w, &grad, &S, &A, &Q, &PQ, &U, &PU, &Gm, &Z, &Y, &TU, &Cw, &Bp, &scratch})
      total += v->capacity();
    if (total * sizeof(float) <= (size_t{64} << 20)) return;
    for (auto* v :
         {&X, &Xc, &w, &grad, &S, &A, &Q, &PQ, &U, &PU, &Gm, &Z, &Y, &TU, &Cw, &Bp, &scratch})
      WorkVector<float>().swap(*v);
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

void axpy(float* y, const float* x, float beta, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] -= beta * x[i];
}

thread_local GlobalWork global_work;  // gocor_global_cpu's buffers
std::atomic<int> form_forced{static_cast<int>(gocor_detail::GlobalForm::kAuto)};

// Rows of the Gram matrix computed per GEMM call: block row i0 covers columns [i0, 2N). 64 rows:
// 151 MFLOP at N = 256, C = 512 (128 rows: 168; the exact half, 134 plus the diagonal blocks).
constexpr int kGramBlock = 64;

// FLOPs of the rows [0, rows) of Gm = X X^T (2N x 2N, X: 2N x C) as gram_matrix computes them.
double gram_matrix_flops(int64_t N2, int64_t rows, int64_t C) {
  double f = 0;
  for (int64_t i0 = 0; i0 < rows; i0 += kGramBlock)
    f += 2.0 * std::min<int64_t>(kGramBlock, rows - i0) * (N2 - i0) * C;
  return f;
}

// x (K x L, row stride L) into the float32 GEMM's packed layout of a B operand (gemm.h).
void pack_b(const float* x, int K, int L, float* out, int th) {
  parallel_chunks(K, th, 64, [&](int64_t k0, int64_t k1) {
    gocor_detail::gemm_pack_rows(gocor_detail::GemmSide::B, x, L, static_cast<int>(k0),
                                 static_cast<int>(k1), K, L, out);
  });
}

// Rows [0, rows) of Gm = X X^T (row stride N2 = 2N) from Xt = X^T (C x 2N, the inputs' own
// channel-major layout: both GEMM operands are read without a transposing gather): each block of
// rows from its diagonal rightwards by the GEMM, the part left of the block mirrored from above.
// X^T is packed once as the blocks' B operand (their columns from i0 on are its panels from
// i0 / P on) into bpack (pack_b_floats(C, N2) floats) instead of once per block.
void gram_matrix(const float* Xt, int N2, int rows, int C, float* Gm, float* bpack, int th) {
  const int P = gocor_detail::gemm_panel_width(gocor_detail::GemmSide::B);
  const bool packed = kGramBlock % P == 0;
  if (packed) pack_b(Xt, C, N2, bpack, th);
  for (int i0 = 0; i0 < rows; i0 += kGramBlock) {
    const int m = std::min(kGramBlock, rows - i0);
    gocor_detail::GemmArgs g{m,    N2 - i0, C,  Xt + i0, N2,
                             true, Xt + i0, N2, false,   Gm + static_cast<int64_t>(i0) * N2 + i0,
                             N2,   false};
    if (packed) g.b_packed = bpack + static_cast<int64_t>(i0 / P) * C * P;
    gemm(g, th);
  }
  // The mirror in 16 x 16 tiles: read along a column, Gm's row stride costs a line per element.
  constexpr int kT = 16;
  parallel_chunks((rows + kT - 1) / kT, th, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t i0 = b0 * kT; i0 < std::min<int64_t>(rows, b1 * kT); i0 += kT) {
      const int64_t i1 = std::min<int64_t>(rows, i0 + kT), jend = i0 / kGramBlock * kGramBlock;
      for (int64_t j0 = 0; j0 < jend; j0 += kT)
        for (int64_t j = j0; j < std::min(jend, j0 + kT); ++j)
          for (int64_t i = i0; i < i1; ++i) Gm[i * N2 + j] = Gm[j * N2 + i];
    }
  });
}

// GEMM FLOPs of the two forms for one batch element (the stencil is the same in both).
struct FormFlops {
  double direct, gram;
};
FormFlops form_flops(int64_t N, int64_t C, int K, bool query, bool z0_from_gram, bool filters) {
  const double q = query ? 1 : 0, NNC = double(N) * N * C;
  FormFlops f;
  f.direct = 2 * (1 + q) * NNC + K * 4 * (1 + q) * NNC + (query ? 0 : 2 * NNC);
  f.gram = gram_matrix_flops(2 * N, (1 + q) * N, C) + (z0_from_gram ? 0 : 4 * NNC) +
           K * 4 * (1 + q) * double(N) * N * N + (filters ? 4 * NNC : 0);
  return f;
}

bool use_gram(int64_t N, int64_t C, int K, bool query, bool z0_from_gram, bool filters) {
  const auto forced = static_cast<gocor_detail::GlobalForm>(form_forced.load());
  if (K < 1) return false;  // no iteration: the volume is one product, w0 . g
  if (forced != gocor_detail::GlobalForm::kAuto) return forced == gocor_detail::GlobalForm::kGram;
  const FormFlops f = form_flops(N, C, K, query, z0_from_gram, filters);
  return f.gram < f.direct;
}

// Everything one batch element's iterations share.
struct GlobalCtx {
  const GlobalGocorParams& p;
  const DistTables& tables;
  const gocor_detail::RtROperator* rtr;  // null without the query term
  const Exec* ex;
  int N, C, H, W, K, th;
  bool query;
  double lambda_d, step;
  float lambda;
};

void push_diag(std::vector<GocorIterDiag>* diag, int b, int it, double loss_ref, double loss_query,
               double loss_reg, double num, const std::vector<double>& alpha) {
  if (diag == nullptr) return;
  GocorIterDiag d;
  d.batch = b;
  d.iter = it;
  d.loss_ref = loss_ref;
  d.loss_query = loss_query;
  d.loss_reg = loss_reg;
  d.grad_norm = std::sqrt(num);
  const int N = static_cast<int>(alpha.size());
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

// The step length(s) from the row sums: one for all rows with the query term (it couples all
// filters), else one per row (sums over s only). num, den_ref per row; den_q the query total.
void step_lengths(const GlobalCtx& c, const std::vector<double>& num,
                  const std::vector<double>& den_ref, double den_q, std::vector<double>* alpha,
                  double* num_all) {
  const double slr = c.p.steplength_reg;
  double n_all = 0, dr_all = 0;
  for (int r = 0; r < c.N; ++r) {
    n_all += num[r];
    dr_all += den_ref[r];
  }
  *num_all = n_all;
  if (c.query) {
    double den = dr_all + den_q + c.lambda_d * n_all;
    den = std::max(den, 1e-8) + slr * n_all;
    std::fill(alpha->begin(), alpha->end(), n_all / den);
  } else {
    for (int r = 0; r < c.N; ++r) {
      const double den = std::max(den_ref[r] + c.lambda_d * num[r], 1e-8) + slr * num[r];
      (*alpha)[r] = num[r] / den;
    }
  }
}

// The direct form (header) for batch element b: X = [F; G], fb/gb the (C, N) inputs, w = w0 in,
// final filters out; vol (N_t x N_r).
void run_direct(const GlobalCtx& c, GlobalWork& wk, int b, const float* fb, const float* gb,
                float* vol, std::vector<GocorIterDiag>* diag) {
  const int N = c.N, C = c.C, H = c.H, W = c.W, th = c.th;
  const int64_t NN = static_cast<int64_t>(N) * N, NC = static_cast<int64_t>(N) * C;
  const bool query_loss = c.query;
  const RowFns fns = row_fns();
  const float* F = wk.X.data();
  const float* G = wk.X.data() + NC;
  WorkVector<float>&w = wk.w, &grad = wk.grad, &S = wk.S, &A = wk.A, &Q = wk.Q, &PQ = wk.PQ,
  &U = wk.U, &PU = wk.PU;
  grad.resize(NC);
  for (auto* v : {&S, &A}) v->resize(NN);
  if (query_loss)
    for (auto* v : {&Q, &PQ, &U, &PU}) v->resize(NN);
  std::vector<double> row_a(N), row_b(N), row_c(N), alpha(N);
  if (c.K > 0) {
    gemm(N, N, C, w.data(), C, fb, N, false, S.data(), N, false, th);
    if (query_loss) {
      gemm(N, N, C, w.data(), C, gb, N, false, Q.data(), N, false, th);
      c.rtr->apply(Q.data(), PQ.data(), wk.scratch, th);
    }
  }
  for (int it = 0; it < c.K; ++it) {
    check_cancel(*c.ex);
    const bool last = it == c.K - 1;
    // A = J * rho, and the reference loss.
    parallel_chunks(N, th, 8, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        row_a[r] = fns.residual(c.tables, &S[r * N], &A[r * N], static_cast<int>(r), H, W);
    });
    double loss_ref = 0;
    for (int r = 0; r < N; ++r) loss_ref += 0.5 * row_a[r];
    // grad = lambda w + A f + (P Q) g.
    for (int64_t i = 0; i < NC; ++i) grad[i] = c.lambda * w[i];
    gemm(N, C, N, A.data(), N, F, C, false, grad.data(), C, true, th);
    if (query_loss) gemm(N, C, N, PQ.data(), N, G, C, false, grad.data(), C, true, th);
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
        row_a[r] = fns.jt(c.tables, &S[r * N], &T[r * N], static_cast<int>(r), H, W);
    });
    double wn = 0;
    for (int r = 0; r < N; ++r) wn += row_c[r];
    double loss_query = 0, den_q = 0;
    if (query_loss) {
      gemm(N, N, C, grad.data(), C, gb, N, false, U.data(), N, false, th);
      // The last iteration needs P U only in <U, P U>: the half-cost quadratic form.
      c.rtr->apply(U.data(), N, PU.data(), N, wk.scratch, th, last);
      double lq = 0;
      std::vector<double> part(N);
      parallel_chunks(N, th, 16, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          row_c[r] = dot_rows(&U[r * N], &PU[r * N], N);
          part[r] = dot_rows(&Q[r * N], &PQ[r * N], N);
        }
      });
      for (int r = 0; r < N; ++r) {
        den_q += row_c[r];
        lq += part[r];
      }
      loss_query = 0.5 * lq;
    }
    double num_all = 0;
    step_lengths(c, row_b, row_a, den_q, &alpha, &num_all);
    // Update w and the tracked products with the same step.
    parallel_chunks(N, th, 8, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float beta = static_cast<float>(c.step * alpha[r]);
        axpy(&w[r * C], &grad[r * C], beta, C);
        if (!last) axpy(&S[r * N], &T[r * N], beta, N);
        if (query_loss) {
          axpy(&Q[r * N], &U[r * N], beta, N);
          if (!last) axpy(&PQ[r * N], &PU[r * N], beta, N);
        }
      }
    });
    push_diag(diag, b, it, loss_ref, loss_query, 0.5 * c.lambda_d * wn, num_all, alpha);
  }
  // Volume (N_t, N_r): row t holds w_r . g_t over r, i.e. the transpose of Q.
  if (query_loss && c.K > 0) {
    parallel_chunks(N, th, 16, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t)
        for (int r = 0; r < N; ++r) vol[t * N + r] = Q[static_cast<int64_t>(r) * N + t];
    });
  } else {
    gemm(N, N, C, G, C, w.data(), C, true, vol, N, false, th);
  }
}

// The Gram form's start: Xt = X^T = [f | g] (C x 2N) in wk.X; w0 = u_r f_r - v_r mu when the
// targets are constant (span), else w0^T (C x N) in wk.w (also with span when the filters are
// asked for); n_r = ||w0_r||^2.
struct GramInit {
  const float *f, *g;  // the batch element's (C, N) inputs
  bool span, have_w0t;
  std::vector<double> u, v, mu, n;
};

// The Gram form (header) for batch element b from GramInit; filters (N x C) out when non-null;
// vol (N_t x N_r).
void run_gram(const GlobalCtx& c, GlobalWork& wk, int b, const GramInit& init, float* filters,
              float* vol, std::vector<GocorIterDiag>* diag) {
  const int N = c.N, C = c.C, H = c.H, W = c.W, th = c.th, N2 = 2 * N;
  const int64_t NN2 = static_cast<int64_t>(N) * N2;
  const bool query = c.query;
  const GramFns fns = gram_fns();
  const float* Xt = wk.X.data();
  WorkVector<float>&Gm = wk.Gm, &Z = wk.Z, &Y = wk.Y, &TU = wk.TU, &PU = wk.PU, &Cw = wk.Cw;
  const int grows = query ? N2 : N;  // rows of Gm the iterations read
  Gm.resize(static_cast<int64_t>(grows) * N2);
  for (auto* v : {&Z, &Y, &TU}) v->resize(NN2);
  if (query) PU.resize(static_cast<int64_t>(N) * N);
  wk.Xc.resize(static_cast<int64_t>(N2) * C);
  if (filters != nullptr) {
    Cw.assign(NN2, 0.f);
  }
  // The centred Gram matrix Gc = Xc Xc^T, Xc = X - 1 m^T (m the mean of the 2N rows, float):
  // Gm_ij = Gc_ij + cv_i + cv_j + q with cv_j = xc_j . m, q = m . m. Features after a ReLU share a
  // large common component: Gm's entries are then all large and positive while Y's rows mix
  // signs, and products with Gm itself would lose digits to cancellation (||grad_r||^2 = Y_r Gm
  // Y_r^T most of all); the common part goes through the float64 rank-one terms instead.
  // Xc is made from the (C, N) inputs themselves: row k of X^T is [f_k | g_k].
  std::vector<float> mf(C);
  std::vector<double> cv(N2, 0.0);
  double q = 0;
  float* Xc = wk.Xc.data();
  parallel_chunks(C, th, 32, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      const float* fk = init.f + k * N;
      const float* gk = init.g + k * N;
      mf[k] = static_cast<float>((sum_floats(fk, N) + sum_floats(gk, N)) / N2);
      float* ck = Xc + k * N2;
      for (int j = 0; j < N; ++j) ck[j] = fk[j] - mf[k];
      for (int j = 0; j < N; ++j) ck[N + j] = gk[j] - mf[k];
    }
  });
  for (int k = 0; k < C; ++k) {
    const float* ck = Xc + static_cast<int64_t>(k) * N2;
    const double m = mf[k];
    q += m * m;
    fns.axpy64(cv.data(), m, ck, N2);
  }
  const int64_t bpack_floats =
      std::max(gocor_detail::gemm_packed_floats(gocor_detail::GemmSide::B, C, N2),
               gocor_detail::gemm_packed_floats(gocor_detail::GemmSide::B, grows, N2));
  wk.Bp.resize(bpack_floats);
  gram_matrix(Xc, N2, grows, C, Gm.data(), wk.Bp.data(), th);
  // Z0 = w0 X^T.
  std::vector<double> n = init.n, wg(N), gg(N), den_ref(N), ytu(N), alpha(N), cw0(N, 1.0);
  std::vector<double> pa(3 * static_cast<size_t>(N)), pb(2 * static_cast<size_t>(N));
  if (init.span) {
    // mx_j = mu . x_j; Z0[r] = u_r Gm[r] - v_r mx.
    std::vector<double> mx(N2, 0.0);
    for (int k = 0; k < C; ++k) {
      const float* fk = init.f + static_cast<int64_t>(k) * N;
      const float* gk = init.g + static_cast<int64_t>(k) * N;
      fns.axpy64(mx.data(), init.mu[k], fk, N);
      fns.axpy64(mx.data() + N, init.mu[k], gk, N);
    }
    parallel_chunks(N, th, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        fns.z0_row(&Z[r * N2], &Gm[r * N2], cv.data(), mx.data(), init.u[r], init.v[r], cv[r], q,
                   N2);
    });
  } else {
    gemm({N, N2, C, wk.w.data(), N, true, Xt, N2, false, Z.data(), N2, false}, th);
  }
  if (query) c.rtr->apply(Z.data() + N, N2, Y.data() + N, N2, wk.scratch, th);
  auto row = [&](int64_t r) {
    return GramRow{&Z[r * N2], &Y[r * N2], &TU[r * N2], query ? &PU[r * N] : nullptr};
  };
  const bool gm_packed = c.K > 1 && !gocor_detail::gemm_uses_amx(N, N2, grows, true);
  for (int it = 0; it < c.K; ++it) {
    check_cancel(*c.ex);
    // Pass A: the previous step (it > 0), E = J rho, the row products with the new Z.
    parallel_chunks(N, th, 8, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float beta = it > 0 ? static_cast<float>(c.step * alpha[r]) : 0.f;
        fns.pass_a(c.tables, row(r), beta, 1.f - beta * c.lambda, it > 0, query,
                   static_cast<int>(r), H, W, &pa[3 * r]);
      }
    });
    double loss_ref = 0, loss_query = 0, wn = 0;
    for (int r = 0; r < N; ++r) {
      loss_ref += 0.5 * pa[3 * r];
      loss_query += 0.5 * pa[3 * r + 2];
      wn += n[r];
      wg[r] = c.lambda_d * n[r] + pa[3 * r + 1] + pa[3 * r + 2];
    }
    // TU' = Y Gm = Y Gc + (Y_r . cv + s_r q) + s_r cv_j with s_r = sum of Y_r, and
    // Y_r . TU'_r = Y_r . (Y Gc)_r + 2 s_r (Y_r . cv) + s_r^2 q (the ||grad||^2 term).
    // Gm is the same in every iteration: it is packed once, by gemm() itself where the product
    // takes the AMX tiles (b_keep), else here for the float32 kernel.
    gocor_detail::GemmArgs ygm{N,         N2, grows, Y.data(),  N2, false,
                               Gm.data(), N2, false, TU.data(), N2, false};
    ygm.b_keep = c.K > 1;
    ygm.b_unchanged = it > 0;
    if (gm_packed) {
      if (it == 0) pack_b(Gm.data(), grows, N2, wk.Bp.data(), th);
      ygm.b_packed = wk.Bp.data();
    }
    gemm(ygm, th);
    parallel_chunks(N, th, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        ytu[r] = fns.centre(&Y[r * N2], &TU[r * N2], cv.data(), q, grows, N2);
    });
    // PU' = P U'.
    // The last iteration needs P U' only in <U', P U'>: the half-cost quadratic form.
    const bool half = it == c.K - 1;
    if (query) c.rtr->apply(TU.data() + N, N2, PU.data(), N, wk.scratch, th, half);
    // Pass B: sum (J T)^2 and ||R U||^2 per row.
    parallel_chunks(N, th, 8, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        fns.pass_b(c.tables, row(r), c.lambda, query, half, static_cast<int>(r), H, W, &pb[2 * r]);
    });
    double den_q = 0;
    for (int r = 0; r < N; ++r) {
      const double yz = pa[3 * r + 1] + pa[3 * r + 2];
      gg[r] = c.lambda_d * (c.lambda_d * n[r] + 2 * yz) + ytu[r];
      den_ref[r] = pb[2 * r];
      den_q += pb[2 * r + 1];
    }
    double num_all = 0;
    step_lengths(c, gg, den_ref, den_q, &alpha, &num_all);
    push_diag(diag, b, it, loss_ref, loss_query, 0.5 * c.lambda_d * wn, num_all, alpha);
    for (int r = 0; r < N; ++r) {
      const double beta = static_cast<float>(c.step * alpha[r]);
      n[r] = n[r] - 2 * beta * wg[r] + beta * beta * gg[r];
    }
    // The filters' coefficients: w <- w - beta grad = (1 - beta lambda) w - beta Y X.
    if (filters != nullptr) {
      parallel_chunks(N, th, 16, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const float beta = static_cast<float>(c.step * alpha[r]), decay = 1.f - beta * c.lambda;
          cw0[r] *= decay;
          float* cw = &Cw[r * N2];
          const float* y = &Y[r * N2];
          for (int j = 0; j < grows; ++j) cw[j] = decay * cw[j] - beta * y[j];
        }
      });
    }
  }
  // Volume (N_t, N_r): the transpose of the last step's Q = (1 - beta lambda) Q - beta U', in
  // 16 x 16 blocks (read along a column, Z and TU's row stride 2N costs a cache line per element).
  std::vector<float> beta_f(N), decay_f(N);
  for (int r = 0; r < N; ++r) {
    beta_f[r] = static_cast<float>(c.step * alpha[r]);
    decay_f[r] = 1.f - beta_f[r] * c.lambda;
  }
  constexpr int kT = 16;
  parallel_chunks((N + kT - 1) / kT, th, 1, [&](int64_t b0, int64_t b1) {
    float tile[kT][kT];
    for (int64_t t0 = b0 * kT; t0 < std::min<int64_t>(N, b1 * kT); t0 += kT) {
      const int nt = static_cast<int>(std::min<int64_t>(kT, N - t0));
      for (int64_t r0 = 0; r0 < N; r0 += kT) {
        const int nr = static_cast<int>(std::min<int64_t>(kT, N - r0));
        for (int i = 0; i < nr; ++i) {
          const float* z = &Z[(r0 + i) * N2 + N + t0];
          const float* u = &TU[(r0 + i) * N2 + N + t0];
          const float beta = beta_f[r0 + i], decay = decay_f[r0 + i];
          for (int j = 0; j < nt; ++j) tile[j][i] = decay * z[j] - beta * u[j];
        }
        for (int j = 0; j < nt; ++j)
          std::memcpy(&vol[(t0 + j) * N + r0], tile[j], sizeof(float) * nr);
      }
    }
  });
  if (filters != nullptr) {
    // w = c w0 + Cw X (w0^T in wk.w, X given as its transpose Xt).
    parallel_chunks(N, th, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        for (int k = 0; k < C; ++k)
          filters[r * C + k] = static_cast<float>(cw0[r]) * wk.w[static_cast<int64_t>(k) * N + r];
    });
    gemm(N, C, grows, Cw.data(), N2, Xt, N2, true, filters, C, true, th);
  }
}

// Position-major copies F, G (rows of wk.X) of the (C, N) inputs, in 16 x 16 tiles, and the
// initializer (spec 4.2) into wk.w (N x C); the scalars in float64 because a*b - c^2 cancels.
void direct_init(const GlobalGocorParams& p, const float* fb, const float* gb, int N, int C, int th,
                 GlobalWork& wk) {
  float* F = wk.X.data();
  float* G = wk.X.data() + static_cast<int64_t>(N) * C;
  float* w = wk.w.data();
  constexpr int kT = 16;
  parallel_chunks((N + kT - 1) / kT, th, 4, [&](int64_t b0, int64_t b1) {
    for (int64_t r0 = b0 * kT; r0 < std::min<int64_t>(N, b1 * kT); r0 += kT) {
      const int64_t r1 = std::min<int64_t>(N, r0 + kT);
      for (int c0 = 0; c0 < C; c0 += kT)
        for (int64_t r = r0; r < r1; ++r)
          for (int c = c0; c < std::min(C, c0 + kT); ++c) {
            F[r * C + c] = fb[static_cast<int64_t>(c) * N + r];
            G[r * C + c] = gb[static_cast<int64_t>(c) * N + r];
          }
    }
  });
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
}

// The Gram form's start (GramInit): Xt = [f | g] (C x 2N) in wk.X, the initializer's scalars per
// row from the channel-major inputs (the same float64 operations as direct_init), w0^T (C x N)
// in wk.w when needed, n_r = ||w0_r||^2 (from w0^T, or in closed form for w0 = u f - v mu).
void gram_init(const GlobalGocorParams& p, const float* fb, const float* gb, int N, int C,
               bool span, bool filters, int th, GlobalWork& wk, GramInit* gi) {
  const int N2 = 2 * N;
  gi->f = fb;
  gi->g = gb;
  gi->span = span;
  gi->have_w0t = !span || filters;
  // Only Z0's GEMM (learnt targets) and the filters read X^T as one matrix.
  if (gi->have_w0t) {
    float* Xt = wk.X.data();
    parallel_chunks(C, th, 32, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        std::memcpy(Xt + c * N2, fb + c * N, sizeof(float) * N);
        std::memcpy(Xt + c * N2 + N, gb + c * N, sizeof(float) * N);
      }
    });
  }
  gi->mu.assign(C, 0.0);
  double bb = 0;
  for (int c = 0; c < C; ++c) {
    gi->mu[c] = sum_floats(fb + static_cast<int64_t>(c) * N, N) / N;
    bb += gi->mu[c] * gi->mu[c];
  }
  std::vector<double> a(N, 0.0), cc(N, 0.0), D(N);
  const GramFns fns = gram_fns();
  for (int c = 0; c < C; ++c)
    fns.sq_axpy64(a.data(), cc.data(), gi->mu[c], fb + static_cast<int64_t>(c) * N, N);
  gi->u.resize(N);
  gi->v.resize(N);
  gi->n.assign(N, 0.0);
  for (int r = 0; r < N; ++r) {
    D[r] = std::max(a[r] * bb - cc[r] * cc[r], 1e-6);
    gi->u[r] = (p.target_fg[0] * bb - p.target_bg[0] * cc[r]) / D[r];
    gi->v[r] = (p.target_fg[0] * cc[r] - p.target_bg[0] * a[r]) / D[r];
  }
  if (gi->have_w0t) {
    float* wt = wk.w.data();
    for (int k = 0; k < C; ++k) {
      const float* f = fb + static_cast<int64_t>(k) * N;
      float* w = wt + static_cast<int64_t>(k) * N;
      const double fg = p.target_fg[k], bg = p.target_bg[k], m = gi->mu[k];
      for (int r = 0; r < N; ++r) {
        w[r] = static_cast<float>(((fg * bb - bg * cc[r]) * f[r] - (fg * cc[r] - bg * a[r]) * m) /
                                  D[r]);
        gi->n[r] += static_cast<double>(w[r]) * w[r];
      }
    }
  } else {
    for (int r = 0; r < N; ++r) {
      const double u = gi->u[r], v = gi->v[r];
      gi->n[r] = u * u * a[r] - 2 * u * v * cc[r] + v * v * bb;
    }
  }
}

}  // namespace

namespace gocor_detail {
void global_form_force(GlobalForm form) {
  form_forced.store(static_cast<int>(form));
}
}  // namespace gocor_detail

void gocor_global_release_thread_buffers() {
  global_work = GlobalWork();
}

void gocor_global_cpu(const GlobalGocorParams& p, const GlobalGocorOptions& o,
                      const float* reference, const float* query, float* volume, float* filter_out,
                      const GocorGlobalShape& s, const Exec& ex, std::vector<GocorIterDiag>* diag) {
  const int B = s.B, C = s.C, H = s.H, W = s.W;
  if (B < 1 || C < 1 || H < 1 || W < 1)
    throw Error(ErrorCode::Shape, "gocor_global: B, C, H, W must all be >= 1");
  if (static_cast<int>(p.target_fg.size()) != C || static_cast<int>(p.target_bg.size()) != C)
    throw Error(ErrorCode::Shape, "gocor_global: target_fg/target_bg must have C elements");
  if (o.num_iter < 0) throw Error(ErrorCode::InvalidArg, "gocor_global: num_iter must be >= 0");
  const int N = H * W;
  const int64_t NN = static_cast<int64_t>(N) * N, NC = static_cast<int64_t>(N) * C;
  const int th = ex.threads;
  const bool query_loss = o.apply_query_loss;
  if (diag != nullptr) diag->clear();

  const DistTables tables = make_tables(p.dist, H, W);
  std::shared_ptr<const gocor_detail::RtROperator> rtr;
  if (query_loss && o.num_iter > 0) rtr = cached_rtr(p, H, W);
  GlobalCtx ctx{p, tables, rtr.get(), &ex, N, C, H, W, o.num_iter, th, query_loss, 0.0, 0.0, 0.f};
  ctx.lambda_d = std::max(static_cast<double>(p.filter_reg) * p.filter_reg,
                          static_cast<double>(p.min_filter_reg) * p.min_filter_reg);
  ctx.lambda = static_cast<float>(ctx.lambda_d);
  ctx.step = std::exp(static_cast<double>(p.log_step_length));
  // Constant target_fg and target_bg put w0_r in span{f_r, mu}: Z0 then comes from the Gram matrix.
  const bool const_targets = std::all_of(p.target_fg.begin(), p.target_fg.end(),
                                         [&](float v) { return v == p.target_fg[0]; }) &&
                             std::all_of(p.target_bg.begin(), p.target_bg.end(),
                                         [&](float v) { return v == p.target_bg[0]; });
  const bool gram = use_gram(N, C, o.num_iter, query_loss, const_targets, filter_out != nullptr);

  // Buffers live per thread between calls: allocating and faulting in fresh pages every call
  // costs about as much as the whole computation at GLU-Net size. Every element is written
  // before it is read, so reuse needs no clearing.
  GlobalWork& wk = global_work;
  struct Release {
    GlobalWork& w;
    ~Release() { w.trim(); }
  } release{wk};
  wk.X.resize(2 * NC);
  wk.w.resize(NC);
  GramInit gi;

  for (int b = 0; b < B; ++b) {
    check_cancel(ex);
    const float* fb = reference + static_cast<int64_t>(b) * C * N;
    const float* gb = query + static_cast<int64_t>(b) * C * N;
    float* vol = volume + static_cast<int64_t>(b) * NN;
    float* filt = filter_out != nullptr ? filter_out + static_cast<int64_t>(b) * NC : nullptr;
    if (gram) {
      gram_init(p, fb, gb, N, C, const_targets, filt != nullptr, th, wk, &gi);
      run_gram(ctx, wk, b, gi, filt, vol, diag);
    } else {
      direct_init(p, fb, gb, N, C, th, wk);
      run_direct(ctx, wk, b, fb, gb, vol, diag);
      if (filt != nullptr) std::memcpy(filt, wk.w.data(), sizeof(float) * NC);
    }
  }
}

size_t gocor_global_work_bytes(const GocorGlobalShape& s, const GlobalGocorOptions& o) {
  // As allocated in gocor_global_cpu: X (2N x C) and w (N x C); direct: grad (N x C), S, A (N x N)
  // and with the query term Q, PQ, U, PU (N x N); Gram: Gm ((1+q)N x 2N), Z, Y, TU (N x 2N), PU,
  // Cw (N x 2N, counted always); the R^T R operator; the distance tables and per-row scalars. The
  // form is not known without the parameters (constant targets favour the Gram form): where
  // either may run, the larger.
  const size_t N = size_t(s.H) * s.W, NN = N * N, NC = N * s.C;
  const bool q = o.apply_query_loss;
  const bool with_rtr = q && o.num_iter > 0;
  const size_t direct = NC + 2 * NN + (q ? 4 * NN : 0);
  const size_t gram = (q ? 4 : 2) * NN + 3 * 2 * NN + (q ? NN : 0) + 2 * NN;
  const bool may_gram = use_gram(N, s.C, o.num_iter, q, true, false);
  const bool must_gram = use_gram(N, s.C, o.num_iter, q, false, true);
  size_t floats = 3 * NC + (must_gram ? gram : may_gram ? std::max(direct, gram) : direct);
  if (may_gram) floats += 2 * NC + 2 * (N + 32) * std::max(size_t(s.C), 2 * N);  // Xc, Bp
  floats += 4 * size_t(2 * s.H - 1) * (2 * s.W - 1);
  return sizeof(float) * floats + sizeof(double) * (16 * N + s.C) +
         (with_rtr ? gocor_detail::RtROperator::bytes(s.H, s.W) : 0);
}

}  // namespace gocor
