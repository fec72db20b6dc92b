// Local GOCor on the CPU (spec section 5), exact float32.
// The problem separates per pixel, so a task owns a strip of 16 consecutive pixels of one row and
// runs every iteration on it with all its state in L1: filters w and gradients (C x 16), scores
// S, J and J*rho (D x 16). Vectors run across the 16 pixels, so every correlation-type pass is a
// chain of vertical multiply-adds against rows of channel-major, zero-padded features, and no
// horizontal reduction is ever needed. S is computed once and then updated with the T = Corr(grad,
// f) that the step length needs anyway: two passes per iteration instead of three.
// Search radius: any R >= 0; the distances are those of the (2R+1)^2 window (the official module
// fixes R = 4).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "gocor.h"
#include "gocor_kernels.h"
#include "parallel.h"

namespace gocor {
namespace {

using gocor_detail::loadu;
using gocor_detail::storeu;

// One strip is one native vector of pixels: 16 lanes on AVX-512, 8 on AVX2, 4 on SSE (a 16-lane
// GCC vector on AVX2 is split into ymm halves, and its stores go through the stack: 5x slower).
using simd::v16;
using simd::v4;
using simd::v8;
// Displacements of one row kept in registers at once: 9 accumulators + the filter vector, 10 of
// the 16 (AVX2, SSE) or 32 (AVX-512) vector registers.
constexpr int kDxBlock = 9;

struct LocalCtx {
  // Features tiled per strip: tile (y, s) holds channels c at [c * cs + j] for pixels
  // x = L s + j - R, j < L + 2R (L lanes per strip; zero outside the image), so the window a strip
  // reads over all its iterations is a few contiguous blocks that stay in L2 while a task walks
  // down a column.
  const float* fp;  // reference tiles of one batch element: tile (y, s) at y * ys + s * ss
  const float* gp;  // query, same layout
  int C, H, W, R, cs;
  int64_t ys, ss;
  int num_iter;
  float lambda, step, inv_c, scaling;
  const float *yk, *vk, *hmk, *hpk;  // per displacement: y, v+, (1-m)/2, (1+m)/2
};

// out[k] (+)= sum_c a[c] * feat[y+dy][c][x0 + dx + R + lane] for the displacements of row dy
// within block [dx0, dx0 + NB); a (C x L).
template <class V, int NB>
inline __attribute__((always_inline)) void corr_block(const float* a, const float* rowc, int C,
                                                      int cs, V* out) {
  constexpr int L = sizeof(V) / sizeof(float);
  V acc[NB];
  for (int j = 0; j < NB; ++j) acc[j] = out[j];
  for (int c = 0; c < C; ++c) {
    const V av = *reinterpret_cast<const V*>(a + c * L);
    const float* src = rowc + static_cast<int64_t>(c) * cs;
    for (int j = 0; j < NB; ++j) acc[j] += av * loadu<V>(src + j);
  }
  for (int j = 0; j < NB; ++j) out[j] = acc[j];
}

// g[c] += sum_j coef[j] * feat[y+dy][c][x0 + dx0 + j + R + lane].
template <class V, int NB>
inline __attribute__((always_inline)) void adjoint_block(const V* coef, const float* rowc, int C,
                                                         int cs, float* g) {
  constexpr int L = sizeof(V) / sizeof(float);
  V cf[NB];
  for (int j = 0; j < NB; ++j) cf[j] = coef[j];
  for (int c = 0; c < C; ++c) {
    const float* src = rowc + static_cast<int64_t>(c) * cs;
    V acc = *reinterpret_cast<V*>(g + c * L);
    for (int j = 0; j < NB; ++j) acc += cf[j] * loadu<V>(src + j);
    *reinterpret_cast<V*>(g + c * L) = acc;
  }
}

#define GOCOR_NB_SWITCH(nb, CALL) \
  switch (nb) {                   \
    case 1: CALL(1); break;       \
    case 2: CALL(2); break;       \
    case 3: CALL(3); break;       \
    case 4: CALL(4); break;       \
    case 5: CALL(5); break;       \
    case 6: CALL(6); break;       \
    case 7: CALL(7); break;       \
    case 8: CALL(8); break;       \
    default: CALL(9); break;      \
  }

// out (D vectors) = (1/C) Corr(a, feat) for the strip at (y, x0); zero where y+dy leaves the image.
template <class V>
inline __attribute__((always_inline)) void corr_strip(const LocalCtx& c, const float* feat,
                                                      const float* a, int y, int x0, V* out) {
  constexpr int L = sizeof(V) / sizeof(float);
  const int S = 2 * c.R + 1;
  for (int k = 0; k < S * S; ++k) out[k] = V{};
  for (int dy = -c.R; dy <= c.R; ++dy) {
    const int yy = y + dy;
    if (yy < 0 || yy >= c.H) continue;
    const float* row = feat + yy * c.ys + (x0 / L) * c.ss;
    V* o = out + (dy + c.R) * S;
    for (int j0 = 0; j0 < S; j0 += kDxBlock) {
      const int nb = std::min(kDxBlock, S - j0);
#define GOCOR_CALL(NB) corr_block<V, NB>(a, row + j0, c.C, c.cs, o + j0)
      GOCOR_NB_SWITCH(nb, GOCOR_CALL)
#undef GOCOR_CALL
    }
  }
  for (int k = 0; k < S * S; ++k) out[k] *= c.inv_c;
}

struct RowDiag {
  double loss_ref = 0, loss_reg = 0, num = 0, alpha_sum = 0;
  double alpha_min = 1e300, alpha_max = -1e300;
};

// Runs the whole optimisation for the pixels x0 .. x0+L-1 of row y (lanes past W are inert: their
// features are zero, so w = grad = 0 and alpha = 0) and writes the volume / filter columns.
// work: (2C + 3D) * L floats, 64-byte aligned. diag: num_iter entries or null.
template <class V>
inline __attribute__((always_inline)) void local_strip_body(const LocalCtx& c, int y, int x0,
                                                            float* work, float* vol, float* filt,
                                                            RowDiag* diag) {
  constexpr int L = sizeof(V) / sizeof(float);
  const int C = c.C, R = c.R, S = 2 * R + 1, D = S * S, W = c.W, H = c.H;
  const int64_t P = static_cast<int64_t>(H) * W;
  float* w = work;
  float* g = w + C * L;
  V* Sv = reinterpret_cast<V*>(g + C * L);
  V* Jv = Sv + D;
  V* Av = Jv + D;
  const int valid = std::min(L, W - x0);

  // Simple initializer (spec 5.2): w = s f / (mean_c f^2 + 1e-6).
  const float* frow = c.fp + y * c.ys + (x0 / L) * c.ss + R;
  V m2{};
  for (int ch = 0; ch < C; ++ch) {
    const V f = loadu<V>(frow + static_cast<int64_t>(ch) * c.cs);
    m2 += f * f;
  }
  const V scale = c.scaling / (m2 / static_cast<float>(C) + 1e-6f);
  for (int ch = 0; ch < C; ++ch)
    *reinterpret_cast<V*>(w + ch * L) = loadu<V>(frow + static_cast<int64_t>(ch) * c.cs) * scale;

  if (c.num_iter > 0) corr_strip<V>(c, c.fp, w, y, x0, Sv);
  for (int it = 0; it < c.num_iter; ++it) {
    const bool last = it == c.num_iter - 1;
    V loss{};
    for (int k = 0; k < D; ++k) {
      const V s = Sv[k];
      V sg, as;
      for (int l = 0; l < L; ++l) {
        sg[l] = s[l] > 0.f ? 1.f : (s[l] < 0.f ? -1.f : 0.f);
        as[l] = std::fabs(s[l]);
      }
      const V rho = c.vk[k] * (c.hmk[k] * as + c.hpk[k] * s - c.yk[k]);
      const V j = c.vk[k] * (c.hmk[k] * sg + c.hpk[k]);
      Jv[k] = j;
      Av[k] = j * rho;
      loss += rho * rho;
    }
    // grad = lambda w + (1/C) Corr^T(J rho, f).
    std::memset(g, 0, sizeof(float) * C * L);
    for (int dy = -R; dy <= R; ++dy) {
      const int yy = y + dy;
      if (yy < 0 || yy >= H) continue;
      const float* row = c.fp + yy * c.ys + (x0 / L) * c.ss;
      const V* a = Av + (dy + R) * S;
      for (int j0 = 0; j0 < S; j0 += kDxBlock) {
        const int nb = std::min(kDxBlock, S - j0);
#define GOCOR_CALL(NB) adjoint_block<V, NB>(a + j0, row + j0, C, c.cs, g)
        GOCOR_NB_SWITCH(nb, GOCOR_CALL)
#undef GOCOR_CALL
      }
    }
    V num{}, wn{};
    for (int ch = 0; ch < C; ++ch) {
      V* gv = reinterpret_cast<V*>(g + ch * L);
      const V wv = *reinterpret_cast<const V*>(w + ch * L);
      const V gr = c.lambda * wv + c.inv_c * *gv;
      *gv = gr;
      num += gr * gr;
      wn += wv * wv;
    }
    // T = Corr(grad, f) reuses the A slots (A is no longer needed).
    corr_strip<V>(c, c.fp, g, y, x0, Av);
    V den{};
    for (int k = 0; k < D; ++k) {
      const V jt = Jv[k] * Av[k];
      den += jt * jt;
    }
    den += c.lambda * num;
    V alpha;
    for (int l = 0; l < L; ++l) alpha[l] = num[l] / std::max(den[l], 1e-8f);
    const V beta = c.step * alpha;
    for (int ch = 0; ch < C; ++ch) {
      V* wv = reinterpret_cast<V*>(w + ch * L);
      *wv -= beta * *reinterpret_cast<const V*>(g + ch * L);
    }
    if (!last)
      for (int k = 0; k < D; ++k) Sv[k] -= beta * Av[k];
    if (diag != nullptr) {
      RowDiag& d = diag[it];
      for (int l = 0; l < valid; ++l) {
        d.loss_ref += 0.5 * loss[l];
        d.loss_reg += 0.5 * c.lambda * wn[l];
        d.num += num[l];
        d.alpha_sum += alpha[l];
        d.alpha_min = std::min(d.alpha_min, static_cast<double>(alpha[l]));
        d.alpha_max = std::max(d.alpha_max, static_cast<double>(alpha[l]));
      }
    }
  }
  // Output: (1/C) Corr(w, g), into Sv.
  corr_strip<V>(c, c.gp, w, y, x0, Sv);
  for (int k = 0; k < D; ++k) {
    float* dst = vol + k * P + static_cast<int64_t>(y) * W + x0;
    if (valid == L) {
      storeu<V>(dst, Sv[k]);
    } else {
      for (int l = 0; l < valid; ++l) dst[l] = Sv[k][l];
    }
  }
  if (filt != nullptr) {
    for (int ch = 0; ch < C; ++ch) {
      float* dst = filt + ch * P + static_cast<int64_t>(y) * W + x0;
      for (int l = 0; l < valid; ++l) dst[l] = w[ch * L + l];
    }
  }
}

using StripFn = void (*)(const LocalCtx&, int, int, float*, float*, float*, RowDiag*);

GOCOR_KERNEL_AVX512 void local_strip_avx512(const LocalCtx& c, int y, int x0, float* work,
                                            float* vol, float* filt, RowDiag* diag) {
  local_strip_body<v16>(c, y, x0, work, vol, filt, diag);
}
GOCOR_KERNEL_AVX2 void local_strip_avx2(const LocalCtx& c, int y, int x0, float* work, float* vol,
                                        float* filt, RowDiag* diag) {
  local_strip_body<v8>(c, y, x0, work, vol, filt, diag);
}
GOCOR_KERNEL_PORTABLE void local_strip_portable(const LocalCtx& c, int y, int x0, float* work,
                                                float* vol, float* filt, RowDiag* diag) {
  local_strip_body<v4>(c, y, x0, work, vol, filt, diag);
}

struct StripIsa {
  StripFn fn;
  int lanes;
};

StripIsa strip_isa() {
  return simd::simd_select(StripIsa{local_strip_avx512, 16}, StripIsa{local_strip_avx2, 8},
                           StripIsa{local_strip_portable, 4});
}

thread_local std::vector<float> local_tiles_f, local_tiles_g;  // gocor_local_cpu's tiles

}  // namespace

void gocor_local_release_thread_buffers() {
  std::vector<float>().swap(local_tiles_f);
  std::vector<float>().swap(local_tiles_g);
}

void gocor_local_cpu(const LocalGocorParams& p, const LocalGocorOptions& o, const float* reference,
                     const float* query, float* volume, float* filter_out, int B, int C, int H,
                     int W, const Exec& ex, std::vector<GocorIterDiag>* diag) {
  if (B < 1 || C < 1 || H < 1 || W < 1)
    throw Error(ErrorCode::Shape, "gocor_local: B, C, H, W must all be >= 1");
  if (o.search_radius < 0)
    throw Error(ErrorCode::InvalidArg, "gocor_local: search_radius must be >= 0");
  if (o.num_iter < 0) throw Error(ErrorCode::InvalidArg, "gocor_local: num_iter must be >= 0");
  const int R = o.search_radius, S = 2 * R + 1, D = S * S;
  const StripIsa isa = strip_isa();
  const int lanes = isa.lanes;  // pixels per strip: one native vector
  const int nstrips = (W + lanes - 1) / lanes;
  const int tw = lanes + 2 * R;
  const int64_t ss = static_cast<int64_t>(C) * tw, ys = ss * nstrips;
  constexpr int kRowChunk = 16;  // rows per task: a task walks down one strip column
  const int nrc = (H + kRowChunk - 1) / kRowChunk;
  const int64_t P = static_cast<int64_t>(H) * W;
  if (diag != nullptr) diag->clear();

  std::vector<float> yk(D), vk(D), hmk(D), hpk(D);
  for (int k = 0; k < D; ++k) {
    const int dy = k / S - R, dx = k % S - R;
    double y, v, m;
    distance_fns_eval(p.dist, std::sqrt(static_cast<double>(dy * dy + dx * dx)), &y, &v, &m);
    const float mf = static_cast<float>(m);
    yk[k] = static_cast<float>(y);
    vk[k] = static_cast<float>(v);
    hmk[k] = (1.f - mf) * 0.5f;
    hpk[k] = (1.f + mf) * 0.5f;
  }
  const double lambda = std::max(static_cast<double>(p.filter_reg) * p.filter_reg,
                                 static_cast<double>(p.min_filter_reg) * p.min_filter_reg) /
                        (static_cast<double>(C) * C);
  // Tiles live per thread between calls (fresh pages cost as much as a fast call); every element
  // is rewritten below. Large buffers are released after the call.
  std::vector<float>& fp = local_tiles_f;
  std::vector<float>& gp = local_tiles_g;
  struct Release {
    std::vector<float>& f;
    std::vector<float>& g;
    ~Release() {
      if ((f.capacity() + g.capacity()) * sizeof(float) > (size_t{64} << 20)) {
        std::vector<float>().swap(f);
        std::vector<float>().swap(g);
      }
    }
  } release{fp, gp};
  fp.resize(static_cast<size_t>(H) * ys);
  gp.resize(fp.size());
  std::vector<RowDiag> rows;

  for (int b = 0; b < B; ++b) {
    check_cancel(ex);
    const float* fb = reference + static_cast<int64_t>(b) * C * P;
    const float* gb = query + static_cast<int64_t>(b) * C * P;
    parallel_chunks(H, ex.threads, 4, [&](int64_t y0, int64_t y1) {
      for (int64_t y = y0; y < y1; ++y)
        for (int st = 0; st < nstrips; ++st) {
          // Columns j of the tile hold x = st * lanes + j - R: inside the image for j in [lo, hi).
          const int x0 = st * lanes - R, lo = std::max(0, -x0), hi = std::min(tw, W - x0);
          for (int ch = 0; ch < C; ++ch) {
            float* df = &fp[y * ys + st * ss + ch * tw];
            float* dg = &gp[y * ys + st * ss + ch * tw];
            const int64_t src = ch * P + y * W + x0;
            if (lo > 0) {  // first strip
              std::fill(df, df + lo, 0.f);
              std::fill(dg, dg + lo, 0.f);
            }
            std::memcpy(df + lo, fb + src + lo, sizeof(float) * (hi - lo));
            std::memcpy(dg + lo, gb + src + lo, sizeof(float) * (hi - lo));
            if (hi < tw) {  // last strips
              std::fill(df + hi, df + tw, 0.f);
              std::fill(dg + hi, dg + tw, 0.f);
            }
          }
        }
    });
    LocalCtx ctx{fp.data(),
                 gp.data(),
                 C,
                 H,
                 W,
                 R,
                 tw,
                 ys,
                 ss,
                 o.num_iter,
                 static_cast<float>(lambda),
                 static_cast<float>(std::exp(static_cast<double>(p.log_step_length))),
                 1.f / static_cast<float>(C),
                 p.scaling,
                 yk.data(),
                 vk.data(),
                 hmk.data(),
                 hpk.data()};
    float* vol = volume + static_cast<int64_t>(b) * D * P;
    float* filt = filter_out != nullptr ? filter_out + static_cast<int64_t>(b) * C * P : nullptr;
    // Diagnostics per (row, strip), summed afterwards in a fixed order (thread-independent).
    if (diag != nullptr) rows.assign(static_cast<size_t>(H) * nstrips * o.num_iter, RowDiag{});
    parallel_for(static_cast<int64_t>(nstrips) * nrc, ex.threads, [&](int64_t task) {
      check_cancel(ex);
      thread_local std::vector<float> buf;
      const size_t need = static_cast<size_t>(2 * C + 3 * D) * lanes + 16;
      if (buf.size() < need) buf.resize(need);
      float* work = buf.data() + ((64 - reinterpret_cast<uintptr_t>(buf.data()) % 64) % 64) / 4;
      const int st = static_cast<int>(task / nrc), y0 = static_cast<int>(task % nrc) * kRowChunk;
      for (int y = y0; y < std::min(H, y0 + kRowChunk); ++y) {
        RowDiag* rd =
            diag != nullptr ? &rows[(static_cast<size_t>(y) * nstrips + st) * o.num_iter] : nullptr;
        isa.fn(ctx, y, st * lanes, work, vol, filt, rd);
      }
    });
    if (diag != nullptr) {
      for (int it = 0; it < o.num_iter; ++it) {
        GocorIterDiag d;
        d.batch = b;
        d.iter = it;
        RowDiag sum;
        for (size_t i = 0; i < static_cast<size_t>(H) * nstrips; ++i) {
          const RowDiag& r = rows[i * o.num_iter + it];
          sum.loss_ref += r.loss_ref;
          sum.loss_reg += r.loss_reg;
          sum.num += r.num;
          sum.alpha_sum += r.alpha_sum;
          sum.alpha_min = std::min(sum.alpha_min, r.alpha_min);
          sum.alpha_max = std::max(sum.alpha_max, r.alpha_max);
        }
        d.loss_ref = sum.loss_ref;
        d.loss_reg = sum.loss_reg;
        d.grad_norm = std::sqrt(sum.num);
        d.alpha = sum.alpha_sum / static_cast<double>(P);
        d.alpha_min = sum.alpha_min;
        d.alpha_max = sum.alpha_max;
        diag->push_back(d);
      }
    }
  }
}

size_t gocor_local_work_bytes(int C, int H, int W, const LocalGocorOptions& o, int threads) {
  // As allocated in gocor_local_cpu: the padded strips of reference and query (fp, gp) and one
  // work buffer per thread.
  const int R = o.search_radius, D = (2 * R + 1) * (2 * R + 1), lanes = strip_isa().lanes;
  const size_t nstrips = size_t(W + lanes - 1) / lanes, tw = size_t(lanes) + 2 * R;
  const int t = threads <= 0 ? pool_size() : std::min(threads, pool_size());
  return sizeof(float) *
         (2 * size_t(H) * C * tw * nstrips + size_t(t) * ((2 * size_t(C) + 3 * D) * lanes + 16));
}

}  // namespace gocor
