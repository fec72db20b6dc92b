// Local GOCor on the CPU (spec section 5), exact float32.
// The problem separates per pixel. A strip is one native vector of consecutive pixels of one row;
// a call runs every iteration on the strips of a few consecutive rows at once (same columns), with
// their state in L1/L2: filters w and gradients (C x L each), scores S, J and J*rho (D x L each).
// Vectors run across the pixels, so every correlation-type pass is a chain of vertical
// multiply-adds against rows of channel-major, zero-padded features, and no horizontal reduction
// is ever needed; each feature vector loaded serves every strip whose window holds its row. S is
// computed once and then updated with the T = Corr(grad, f) that the step length needs anyway: two
// passes per iteration instead of three.
// Search radius: any R >= 0; the distances are those of the (2R+1)^2 window (the official module
// fixes R = 4).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

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

// Strips of a few consecutive rows (same columns) run their iterations side by side: a feature row
// y' is read once per pass and serves every strip whose window holds it (at dy = y' - y), as the
// plain local correlation's kernel does. That divides the unaligned feature loads (each crosses a
// cache line on AVX-512) per multiply-add, which bounded the passes: 4 rows on AVX-512 (1.6x
// faster than 1 row at C = 32, 1.8x at C = 96), 2 on AVX2 and SSE (fewer registers; 4 was slower).
// Displacements of one window row per register block: NR rows x NB accumulators + NR filter
// vectors + one feature vector must fit the 32 (AVX-512) or 16 (AVX2, SSE) vector registers.
template <class V, int NR>
constexpr int dx_block() {
  if constexpr (sizeof(V) == 64) return NR <= 2 ? 9 : 5;
  return NR == 1 ? 9 : 5;
}

struct LocalCtx {
  // Features as zero-padded rows: row y holds channel c at [y * ys + c * cs + x + R] for
  // -R <= x < cs - R (zero outside the image), so strip s (pixels L s ..) reads its window at
  // s * ss = L s without bounds checks; a task walking along a group of rows keeps the rows of
  // its windows in L2 and shares cache lines between neighbouring strips.
  const float* fp;  // reference rows of one batch element
  const float* gp;  // query, same layout
  int C, H, W, R, cs;
  int64_t ys, ss;
  int num_iter;
  float lambda, step, inv_c, scaling;
  const float *yk, *vk, *hmk, *hpk;  // per displacement: y, v+, (1-m)/2, (1+m)/2
};

// Lambdas called from a kernel must be inlined into it: a lambda left out of line is compiled for
// the baseline ISA, whatever entry point it serves (`flatten` does not reach them).
#define GOCOR_INLINE_LAMBDA __attribute__((always_inline))

// f(std::integral_constant<int, n>) for a run-time n in [1, N].
template <int N, class F>
GOCOR_INLINE void with_count(int n, F&& f) {
  if constexpr (N > 1) {
    if (n < N) return with_count<N - 1>(n, f);
  }
  f(std::integral_constant<int, N>{});
}

// v, held in a register: the compiler would otherwise fold the load into each multiply-add that
// uses it and read memory once per strip (a cache-line split each time on AVX-512).
template <class V>
GOCOR_INLINE V in_register(V v) {
#if GOCOR_SIMD_X86
  asm("" : "+v"(v));
#endif
  return v;
}

// out[r][j] = sum_c a[r][c] * feat[c][x0 + dx0 + j + R + lane] for NR strips (rows r) whose
// window row dy holds the same feature row; a[r] (C x L).
template <class V, int NR, int NB>
GOCOR_INLINE void corr_block(const float* const* a, const float* rowc, int C, int cs,
                             V* const* out) {
  constexpr int L = sizeof(V) / sizeof(float);
  V acc[NR][NB] = {};
  for (int c = 0; c < C; ++c) {
    V av[NR];
    for (int r = 0; r < NR; ++r) av[r] = *reinterpret_cast<const V*>(a[r] + c * L);
    const float* src = rowc + static_cast<int64_t>(c) * cs;
    for (int j = 0; j < NB; ++j) {
      const V f = in_register(loadu<V>(src + j));
      for (int r = 0; r < NR; ++r) acc[r][j] += av[r] * f;
    }
  }
  for (int r = 0; r < NR; ++r)
    for (int j = 0; j < NB; ++j) out[r][j] = acc[r][j];
}

// g[r][c] += sum_j coef[r][j] * feat[c][x0 + dx0 + j + R + lane], NR strips as in corr_block.
template <class V, int NR, int NB>
GOCOR_INLINE void adjoint_block(const V* const* coef, const float* rowc, int C, int cs,
                                float* const* g) {
  constexpr int L = sizeof(V) / sizeof(float);
  V cf[NR][NB];
  for (int r = 0; r < NR; ++r)
    for (int j = 0; j < NB; ++j) cf[r][j] = coef[r][j];
  for (int c = 0; c < C; ++c) {
    const float* src = rowc + static_cast<int64_t>(c) * cs;
    V acc[NR];
    for (int r = 0; r < NR; ++r) acc[r] = *reinterpret_cast<V*>(g[r] + c * L);
    for (int j = 0; j < NB; ++j) {
      const V f = in_register(loadu<V>(src + j));
      for (int r = 0; r < NR; ++r) acc[r] += cf[r][j] * f;
    }
    for (int r = 0; r < NR; ++r) *reinterpret_cast<V*>(g[r] + c * L) = acc[r];
  }
}

// Where a block of a window pass sits: strips r0 .. r0 + nr - 1 see feature row `row` (advanced
// to the block's first displacement) at window rows wy, wy - 1, ..., displacements j0 .. j0+nb-1.
struct WindowBlock {
  int r0, wy;
  const float* row;
  int j0;
};

// One pass over the feature rows that the windows of strips (y + r, x0), r < NS, read. For each
// row y' inside the image, the strips whose window holds it (a contiguous run) get
// block(nr, nb, at) for each block of displacements of their window row. Rows and blocks run in
// increasing order, so every strip sums in the order a lone strip would.
template <class V, int NS, class Block>
GOCOR_INLINE void window_pass(const LocalCtx& c, const float* feat, int y, int x0, Block&& block) {
  constexpr int L = sizeof(V) / sizeof(float);
  const int R = c.R, S = 2 * R + 1;
  for (int yy = std::max(0, y - R); yy <= std::min(c.H - 1, y + NS - 1 + R); ++yy) {
    const int r0 = std::max(0, yy - y - R), r1 = std::min(NS - 1, yy - y + R);
    const float* row = feat + yy * c.ys + (x0 / L) * c.ss;
    with_count<NS>(r1 - r0 + 1, [&](auto nr) GOCOR_INLINE_LAMBDA {
      constexpr int NB = dx_block<V, decltype(nr)::value>();
      for (int j0 = 0; j0 < S; j0 += NB)
        with_count<NB>(std::min(NB, S - j0), [&](auto nb) GOCOR_INLINE_LAMBDA {
          block(nr, nb, WindowBlock{r0, yy - y - r0 + R, row + j0, j0});
        });
    });
  }
}

// out[r] (D vectors) = (1/C) Corr(a[r], feat) for the strips (y + r, x0), r < NS; zero where a
// window row leaves the image.
template <class V, int NS>
GOCOR_INLINE void corr_strips(const LocalCtx& c, const float* feat, const float* const* a, int y,
                              int x0, V* const* out) {
  const int R = c.R, S = 2 * R + 1, D = S * S;
  // Each window row inside the image is written by one block; the others are zero.
  for (int r = 0; r < NS; ++r)
    for (int wy = 0; wy < S; ++wy)
      if (y + r + wy - R < 0 || y + r + wy - R >= c.H)
        for (int j = 0; j < S; ++j) out[r][wy * S + j] = V{};
  auto block = [&](auto nr, auto nb, const WindowBlock& at) GOCOR_INLINE_LAMBDA {
    constexpr int NR = decltype(nr)::value;
    const float* ap[NR];
    V* op[NR];
    for (int i = 0; i < NR; ++i) {
      ap[i] = a[at.r0 + i];
      op[i] = out[at.r0 + i] + (at.wy - i) * S + at.j0;
    }
    corr_block<V, NR, decltype(nb)::value>(ap, at.row, c.C, c.cs, op);
  };
  window_pass<V, NS>(c, feat, y, x0, block);
  for (int r = 0; r < NS; ++r)
    for (int k = 0; k < D; ++k) out[r][k] *= c.inv_c;
}

// g[r] += Corr^T(coef[r], feat) (unscaled) for the strips (y + r, x0), r < NS.
template <class V, int NS>
GOCOR_INLINE void adjoint_strips(const LocalCtx& c, const float* feat, const V* const* coef, int y,
                                 int x0, float* const* g) {
  const int S = 2 * c.R + 1;
  auto block = [&](auto nr, auto nb, const WindowBlock& at) GOCOR_INLINE_LAMBDA {
    constexpr int NR = decltype(nr)::value;
    const V* cp[NR];
    float* gp[NR];
    for (int i = 0; i < NR; ++i) {
      cp[i] = coef[at.r0 + i] + (at.wy - i) * S + at.j0;
      gp[i] = g[at.r0 + i];
    }
    adjoint_block<V, NR, decltype(nb)::value>(cp, at.row, c.C, c.cs, gp);
  };
  window_pass<V, NS>(c, feat, y, x0, block);
}

struct RowDiag {
  double loss_ref = 0, loss_reg = 0, num = 0, alpha_sum = 0;
  double alpha_min = 1e300, alpha_max = -1e300;
};

// J and J * rho of the robust loss at scores s (spec 5.4), and rho^2 added to loss. sgn and |s|
// as bit operations: sgn(+-0) = sgn(NaN) = 0, as std::fabs and the comparisons give.
template <class V>
GOCOR_INLINE void loss_terms(const LocalCtx& c, int k, V s, V* j_out, V* a_out, V* loss) {
  using I = decltype(V{} > V{});  // the integer vector of V's width
  const I one = __builtin_bit_cast(I, V{} + 1.f);
  const I sgn_bits = ((s > V{}) & one) | ((s < V{}) & (one | static_cast<int>(0x80000000u)));
  const V sg = __builtin_bit_cast(V, sgn_bits);
  const V as = __builtin_bit_cast(V, __builtin_bit_cast(I, s) & 0x7fffffff);
  const V rho = c.vk[k] * (c.hmk[k] * as + c.hpk[k] * s - c.yk[k]);
  const V j = c.vk[k] * (c.hmk[k] * sg + c.hpk[k]);
  *j_out = j;
  *a_out = j * rho;
  *loss += rho * rho;
}

// Runs the whole optimisation for the strips of pixels x0 .. x0+L-1 of rows y .. y+NS-1 (lanes
// past W are inert: their features are zero, so w = grad = 0 and alpha = 0) and writes their
// volume / filter columns. work: NS * (2C + 3D) * L floats, 64-byte aligned. diag: per strip
// num_iter entries, strip r at diag + r * diag_stride, or null.
template <class V, int NS>
GOCOR_INLINE void local_strip_body(const LocalCtx& c, int y, int x0, float* work, float* vol,
                                   float* filt, RowDiag* diag, int64_t diag_stride) {
  constexpr int L = sizeof(V) / sizeof(float);
  const int C = c.C, D = (2 * c.R + 1) * (2 * c.R + 1), W = c.W;
  const int64_t P = static_cast<int64_t>(c.H) * W;
  float *w[NS], *g[NS];
  V *Sv[NS], *Jv[NS], *Av[NS];
  for (int r = 0; r < NS; ++r) {
    w[r] = work + static_cast<int64_t>(r) * (2 * C + 3 * D) * L;
    g[r] = w[r] + C * L;
    Sv[r] = reinterpret_cast<V*>(g[r] + C * L);
    Jv[r] = Sv[r] + D;
    Av[r] = Jv[r] + D;
  }
  const int valid = std::min(L, W - x0);

  // Simple initializer (spec 5.2): w = s f / (mean_c f^2 + 1e-6).
  for (int r = 0; r < NS; ++r) {
    const float* frow = c.fp + (y + r) * c.ys + (x0 / L) * c.ss + c.R;
    V m2{};
    for (int ch = 0; ch < C; ++ch) {
      const V f = loadu<V>(frow + static_cast<int64_t>(ch) * c.cs);
      m2 += f * f;
    }
    const V scale = c.scaling / (m2 / static_cast<float>(C) + 1e-6f);
    for (int ch = 0; ch < C; ++ch)
      *reinterpret_cast<V*>(w[r] + ch * L) =
          loadu<V>(frow + static_cast<int64_t>(ch) * c.cs) * scale;
  }

  V loss[NS];
  if (c.num_iter > 0) {
    corr_strips<V, NS>(c, c.fp, w, y, x0, Sv);
    for (int r = 0; r < NS; ++r) {
      loss[r] = V{};
      for (int k = 0; k < D; ++k) loss_terms(c, k, Sv[r][k], &Jv[r][k], &Av[r][k], &loss[r]);
    }
  }
  for (int it = 0; it < c.num_iter; ++it) {
    const bool last = it == c.num_iter - 1;
    // grad = lambda w + (1/C) Corr^T(J rho, f).
    for (int r = 0; r < NS; ++r) std::memset(g[r], 0, sizeof(float) * C * L);
    adjoint_strips<V, NS>(c, c.fp, Av, y, x0, g);
    V num[NS], wn[NS];
    for (int r = 0; r < NS; ++r) {
      num[r] = V{};
      wn[r] = V{};
      for (int ch = 0; ch < C; ++ch) {
        V* gv = reinterpret_cast<V*>(g[r] + ch * L);
        const V wv = *reinterpret_cast<const V*>(w[r] + ch * L);
        const V gr = c.lambda * wv + c.inv_c * *gv;
        *gv = gr;
        num[r] += gr * gr;
        wn[r] += wv * wv;
      }
    }
    // T = Corr(grad, f) reuses the A slots (A is no longer needed).
    corr_strips<V, NS>(c, c.fp, g, y, x0, Av);
    for (int r = 0; r < NS; ++r) {
      V den{};
      for (int k = 0; k < D; ++k) {
        const V jt = Jv[r][k] * Av[r][k];
        den += jt * jt;
      }
      den += c.lambda * num[r];
      const V alpha = num[r] / (den < 1e-8f ? V{} + 1e-8f : den);
      const V beta = c.step * alpha;
      for (int ch = 0; ch < C; ++ch) {
        V* wv = reinterpret_cast<V*>(w[r] + ch * L);
        *wv -= beta * *reinterpret_cast<const V*>(g[r] + ch * L);
      }
      if (diag != nullptr) {
        RowDiag& d = diag[r * diag_stride + it];
        for (int l = 0; l < valid; ++l) {
          d.loss_ref += 0.5 * loss[r][l];
          d.loss_reg += 0.5 * c.lambda * wn[r][l];
          d.num += num[r][l];
          d.alpha_sum += alpha[l];
          d.alpha_min = std::min(d.alpha_min, static_cast<double>(alpha[l]));
          d.alpha_max = std::max(d.alpha_max, static_cast<double>(alpha[l]));
        }
      }
      // S -= beta T, and the next iteration's J, J rho and loss in the same sweep.
      if (!last) {
        loss[r] = V{};
        for (int k = 0; k < D; ++k) {
          const V s = Sv[r][k] - beta * Av[r][k];
          Sv[r][k] = s;
          loss_terms(c, k, s, &Jv[r][k], &Av[r][k], &loss[r]);
        }
      }
    }
  }
  // Output: (1/C) Corr(w, g), into Sv.
  corr_strips<V, NS>(c, c.gp, w, y, x0, Sv);
  for (int r = 0; r < NS; ++r) {
    for (int k = 0; k < D; ++k) {
      float* dst = vol + k * P + static_cast<int64_t>(y + r) * W + x0;
      if (valid == L) {
        storeu<V>(dst, Sv[r][k]);
      } else {
        for (int l = 0; l < valid; ++l) dst[l] = Sv[r][k][l];
      }
    }
    if (filt != nullptr) {
      for (int ch = 0; ch < C; ++ch) {
        float* dst = filt + ch * P + static_cast<int64_t>(y + r) * W + x0;
        for (int l = 0; l < valid; ++l) dst[l] = w[r][ch * L + l];
      }
    }
  }
}

// Rows y .. y + n - 1 (n <= NSMAX) of strip x0.
template <class V, int NSMAX>
GOCOR_INLINE void local_strips(const LocalCtx& c, int y, int n, int x0, float* work, float* vol,
                               float* filt, RowDiag* diag, int64_t diag_stride) {
  with_count<NSMAX>(n, [&](auto ns) GOCOR_INLINE_LAMBDA {
    local_strip_body<V, decltype(ns)::value>(c, y, x0, work, vol, filt, diag, diag_stride);
  });
}

// The padded rows of one batch element's features (layout: LocalCtx).
struct TileArgs {
  const float *fb, *gb;  // reference, query (C, H, W)
  float *fp, *gp;        // their padded rows
  int C, H, W, R, cs;
  int64_t ys;
};

// n floats from s to d: a tile row is a few vectors, too short for a library call per row.
template <class VV>
GOCOR_INLINE void copy_row(float* d, const float* s, int n) {
  int j = 0;
  for (; j + VV::W <= n; j += VV::W) VV::storeu(d + j, VV::loadu(s + j));
  if (j < n) VV::store_n(d + j, VV::load_n(s + j, n - j), n - j);
}

// Padded rows y0 .. y1-1 of reference and query.
template <class VV>
GOCOR_INLINE void tile_rows(const TileArgs& t, int y0, int64_t y1) {
  const int64_t P = static_cast<int64_t>(t.H) * t.W;
  for (int64_t y = y0; y < y1; ++y)
    for (int ch = 0; ch < t.C; ++ch) {
      float* df = t.fp + y * t.ys + ch * t.cs;
      float* dg = t.gp + y * t.ys + ch * t.cs;
      const int64_t src = ch * P + y * t.W;
      for (int j = 0; j < t.R; ++j) df[j] = dg[j] = 0.f;
      copy_row<VV>(df + t.R, t.fb + src, t.W);
      copy_row<VV>(dg + t.R, t.gb + src, t.W);
      for (int j = t.R + t.W; j < t.cs; ++j) df[j] = dg[j] = 0.f;
    }
}

using TileFn = void (*)(const TileArgs&, int, int64_t);

using StripFn = void (*)(const LocalCtx&, int, int, int, float*, float*, float*, RowDiag*, int64_t);

GOCOR_KERNEL_AVX512 void local_strip_avx512(const LocalCtx& c, int y, int n, int x0, float* work,
                                            float* vol, float* filt, RowDiag* diag, int64_t ds) {
  local_strips<v16, 4>(c, y, n, x0, work, vol, filt, diag, ds);
}
GOCOR_KERNEL_AVX2 void local_strip_avx2(const LocalCtx& c, int y, int n, int x0, float* work,
                                        float* vol, float* filt, RowDiag* diag, int64_t ds) {
  local_strips<v8, 2>(c, y, n, x0, work, vol, filt, diag, ds);
}
GOCOR_KERNEL_PORTABLE void local_strip_portable(const LocalCtx& c, int y, int n, int x0,
                                                float* work, float* vol, float* filt, RowDiag* diag,
                                                int64_t ds) {
  local_strips<v4, 2>(c, y, n, x0, work, vol, filt, diag, ds);
}
GOCOR_KERNEL_AVX512 void tile_avx512(const TileArgs& t, int y0, int64_t y1) {
  tile_rows<simd::Vec16>(t, y0, y1);
}
GOCOR_KERNEL_AVX2 void tile_avx2(const TileArgs& t, int y0, int64_t y1) {
  tile_rows<simd::Vec8>(t, y0, y1);
}
GOCOR_KERNEL_PORTABLE void tile_portable(const TileArgs& t, int y0, int64_t y1) {
  tile_rows<simd::Vec4>(t, y0, y1);
}

// The level's entries, its strip width (one native vector) and its rows per call.
struct StripIsa {
  StripFn fn;
  TileFn tile;
  int lanes, rows;
};

StripIsa strip_isa() {
  return simd::simd_select(StripIsa{local_strip_avx512, tile_avx512, 16, 4},
                           StripIsa{local_strip_avx2, tile_avx2, 8, 2},
                           StripIsa{local_strip_portable, tile_portable, 4, 2});
}

thread_local std::vector<float> local_tiles_f, local_tiles_g;  // gocor_local_cpu's padded rows

// Floats per padded channel row: every strip's window (L + 2R) inside it, a multiple of 16 so that
// rows start on a cache line.
int padded_row(int nstrips, int lanes, int R) {
  return (nstrips * lanes + 2 * R + 15) / 16 * 16;
}

// The first 64-byte aligned float at or after p (buffers hold 16 floats of slack).
float* align64(float* p) {
  return p + ((64 - reinterpret_cast<uintptr_t>(p) % 64) % 64) / sizeof(float);
}

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
  const int cs = padded_row(nstrips, lanes, R);
  const int64_t ss = lanes, ys = static_cast<int64_t>(C) * cs;
  // A task is one group of rows walking along them: the strips' volume stores then fill
  // consecutive lines of each displacement plane (a task walking down a column stored isolated
  // lines, 15 % of its time).
  const int ngroups = (H + isa.rows - 1) / isa.rows;
  // Few row groups (a short map) are split into runs of strips, so that every thread has work.
  const int nthreads = ex.threads <= 0 ? pool_size() : std::min(ex.threads, pool_size());
  const int nruns = std::clamp((4 * nthreads + ngroups - 1) / ngroups, 1, nstrips);
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
  fp.resize(static_cast<size_t>(H) * ys + 16);
  gp.resize(fp.size());
  float* fpa = align64(fp.data());
  float* gpa = align64(gp.data());
  std::vector<RowDiag> rows;

  for (int b = 0; b < B; ++b) {
    check_cancel(ex);
    const float* fb = reference + static_cast<int64_t>(b) * C * P;
    const float* gb = query + static_cast<int64_t>(b) * C * P;
    const TileArgs targs{fb, gb, fpa, gpa, C, H, W, R, cs, ys};
    parallel_chunks(H, ex.threads, 4,
                    [&](int64_t y0, int64_t y1) { isa.tile(targs, static_cast<int>(y0), y1); });
    LocalCtx ctx{fpa,
                 gpa,
                 C,
                 H,
                 W,
                 R,
                 cs,
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
    parallel_for(static_cast<int64_t>(ngroups) * nruns, ex.threads, [&](int64_t task) {
      check_cancel(ex);
      thread_local std::vector<float> buf;
      const size_t need = static_cast<size_t>(isa.rows) * (2 * C + 3 * D) * lanes + 16;
      if (buf.size() < need) buf.resize(need);
      float* work = align64(buf.data());
      const int y = static_cast<int>(task / nruns) * isa.rows, n = std::min(isa.rows, H - y);
      const int run = static_cast<int>(task % nruns);
      for (int st = run * nstrips / nruns; st < (run + 1) * nstrips / nruns; ++st) {
        RowDiag* rd =
            diag != nullptr ? &rows[(static_cast<size_t>(y) * nstrips + st) * o.num_iter] : nullptr;
        isa.fn(ctx, y, n, st * lanes, work, vol, filt, rd,
               static_cast<int64_t>(nstrips) * o.num_iter);
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
  // As allocated in gocor_local_cpu: the padded rows of reference and query (fp, gp) and one
  // work buffer per thread.
  const int R = o.search_radius, D = (2 * R + 1) * (2 * R + 1), lanes = strip_isa().lanes;
  const int nstrips = (W + lanes - 1) / lanes;
  const int t = threads <= 0 ? pool_size() : std::min(threads, pool_size());
  return sizeof(float) *
         (2 * (size_t(H) * C * padded_row(nstrips, lanes, R) + 16) +
          size_t(t) * (size_t(strip_isa().rows) * (2 * size_t(C) + 3 * D) * lanes + 16));
}

}  // namespace gocor
