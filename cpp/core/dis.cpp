#include "dis.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "blocks.h"
#include "parallel.h"
#include "simd.h"

// The vector helpers and kernel bodies below are always inlined into their callers, the AVX2 entry
// points included; their nominal ABI never matters.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace gocor {
namespace {

// ---- vectors -----------------------------------------------------------------------------------
// The hot loops run on GCC vectors of 4 floats (SSE2 / NEON without any -march flag, and about the
// same speed at -O2 as at -O3, where GCC would not vectorise loops of run-time trip counts). The
// patch search, densification, linearisation and SOR sweeps also have 8-float versions, compiled
// for AVX2 + FMA and picked at run time (use_v8). Only generic vector operations are used (no
// intrinsics), so one template body serves both widths.

typedef float v4 __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));
typedef float v8 __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

template <class V>
struct Lanes;
template <>
struct Lanes<v4> {
  using Int = v4i;
  static constexpr int n = 4;
};
template <>
struct Lanes<v8> {
  using Int = v8i;
  static constexpr int n = 8;
};

#if defined(__x86_64__) || defined(__i386__)
#define DIS_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define DIS_TARGET_AVX2
#endif
#define DIS_INLINE inline __attribute__((always_inline))

template <class V = v4>
DIS_INLINE V load(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <class V>
DIS_INLINE void store(float* p, const V& v) {
  std::memcpy(p, &v, sizeof(v));
}
template <class V = v4>
DIS_INLINE V splat(float x) {
  return V{} + x;
}
// Sum of the lanes, pairwise (8 lanes: the halves added first).
DIS_INLINE float hsum(const v4& v) {
  return (v[0] + v[2]) + (v[1] + v[3]);
}
DIS_INLINE float hsum(const v8& v) {
  v4 lo, hi;
  std::memcpy(&lo, &v, sizeof(lo));
  std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof(lo), sizeof(hi));
  return hsum(lo + hi);
}
// Lanes of a where the mask is all ones, of b where it is zero.
template <class V, class M>
DIS_INLINE V vselect(const M& mask, const V& a, const V& b) {
  using I = typename Lanes<V>::Int;
  return (V)(((I)a & mask) | ((I)b & ~mask));
}
template <class V>
DIS_INLINE V vmax(const V& a, const V& b) {
  return vselect(a > b, a, b);
}
template <class V>
DIS_INLINE V vmin(const V& a, const V& b) {
  return vselect(a < b, a, b);
}
template <class V>
DIS_INLINE V vabs(const V& a) {
  using I = typename Lanes<V>::Int;
  return (V)((I)a & 0x7fffffff);
}
// 1 / sqrt(x) for normal x > 0: a first guess from the bits and three Newton steps (within 2.5
// ulp over 1e-8 .. 1e14), in plain vector operations.
template <class V>
DIS_INLINE V rsqrt(const V& x) {
  using I = typename Lanes<V>::Int;
  V y = (V)(0x5f375a86 - ((I)x >> 1));
  const V hx = x * 0.5f;
  y = y * (1.5f - hx * y * y);
  y = y * (1.5f - hx * y * y);
  y = y * (1.5f - hx * y * y);
  return y;
}

// floor(x) as an int for |x| < 2^31: std::floor is a libm call without SSE4.1.
inline int floor_int(float x) {
  const int i = int(x);
  return i - (float(i) > x);
}

// ---- constants ---------------------------------------------------------------------------------

// DIS and DeepFlow state their constants for 0..255 intensities; ours are in [0, 1].
constexpr float kGrey = 255.f;
// Robust penaliser Psi(s^2) = sqrt(s^2 + eps^2) of the variational energy (a smooth L1).
constexpr float kEps2 = 1e-6f;
// Each constancy term is divided by |its gradient|^2 + zeta^2 (DeepFlow's normalisation): the
// linearised residual then measures flow error in pixels, so one weight suits faint and strong
// texture alike; zeta keeps flat areas, whose gradient is mostly noise, from counting as much.
constexpr float kZeta2 = (1.f / kGrey) * (1.f / kGrey);
// Over-relaxation of the red-black SOR sweeps. With few sweeps per scale a strong one spreads
// corrections furthest; on real pairs 1.9 beat 1.6 clearly and 1.95 no more.
constexpr float kSorOmega = 1.9f;
// Added to the diagonal of every pixel's 2x2 system: keeps it invertible where neither the data
// nor the smoothness term says anything (alpha = 0 on a flat area), without moving any solution
// that either term determines (their weights are >= ~1 there).
constexpr float kDiagFloor = 1e-6f;

// ---- planes ------------------------------------------------------------------------------------

// Floats before and after every row: 8-lane loops read one pixel before the row and up to 8 past.
constexpr int kMargin = 8;

// One (h, w) plane: rows of stride round_up(w, 8) + 2 kMargin, zero-initialised. The vector loops
// handle each row in whole vectors, so they also write the lanes between w and the next multiple
// of their width; those stay finite and nothing reads them as pixels.
struct Plane {
  int h = 0, w = 0;
  size_t stride = 0;
  WorkVector<float> buf;
  Plane() = default;
  Plane(int h_, int w_)
      : h(h_), w(w_), stride(size_t((w_ + 7) & ~7) + 2 * kMargin), buf(size_t(h_) * stride, 0.f) {}
  float* row(int y) { return buf.data() + size_t(y) * stride + kMargin; }
  const float* row(int y) const { return buf.data() + size_t(y) * stride + kMargin; }
  int chunks() const { return (w + 3) / 4; }
};

// An image at one scale with its central-difference gradients.
struct Level {
  Plane img, gx, gy;
};

Plane plane_constant(int h, int w, float value) {
  Plane p(h, w);
  std::fill(p.buf.begin(), p.buf.end(), value);
  return p;
}

Plane plane_from(const float* src, int h, int w) {
  Plane p(h, w);
  for (int y = 0; y < h; ++y) std::copy(src + size_t(y) * w, src + size_t(y + 1) * w, p.row(y));
  return p;
}

// (h, w) -> ((h + 1) / 2, (w + 1) / 2). Pixel i of the result is centred at 2i + 0.5 of the input,
// so that level s and full resolution are related by x_s = (x + 0.5) / 2^s - 0.5 exactly; the
// binomial [1 3 3 1] / 8 over input pixels 2i - 1 .. 2i + 2 is symmetric about that centre and
// removes most of what would alias. Borders replicate.
Plane downsample(const Plane& in, const Exec& ex) {
  const int h2 = (in.h + 1) / 2, w2 = (in.w + 1) / 2;
  Plane tmp(in.h, w2), out(h2, w2);
  parallel_for(in.h, ex.threads, [&](int64_t y) {
    const float* r = in.row(int(y));
    float* t = tmp.row(int(y));
    const int last = in.w - 1;
    for (int i = 0; i < w2; ++i) {
      const int x = 2 * i;
      t[i] = 0.125f * (r[std::max(x - 1, 0)] + 3.f * (r[x] + r[std::min(x + 1, last)]) +
                       r[std::min(x + 2, last)]);
    }
  });
  parallel_for(h2, ex.threads, [&](int64_t i) {
    const int y = 2 * int(i), last = in.h - 1;
    const float* r0 = tmp.row(std::max(y - 1, 0));
    const float* r1 = tmp.row(y);
    const float* r2 = tmp.row(std::min(y + 1, last));
    const float* r3 = tmp.row(std::min(y + 2, last));
    float* o = out.row(int(i));
    for (int x = 0; x < 4 * out.chunks(); x += 4) {
      store(o + x, splat(0.125f) *
                       (load(r0 + x) + splat(3.f) * (load(r1 + x) + load(r2 + x)) + load(r3 + x)));
    }
  });
  return out;
}

// Row y of img's central differences (one-sided halves at the borders) into ox and oy, 4 *
// img.chunks() floats each; img's margins must replicate its border (gradients sets them).
void gradient_row(const Plane& img, int y, float* ox, float* oy) {
  const float* r = img.row(y);
  const float* up = img.row(std::max(y - 1, 0));
  const float* dn = img.row(std::min(y + 1, img.h - 1));
  for (int x = 0; x < 4 * img.chunks(); x += 4) {
    store(ox + x, splat(0.5f) * (load(r + x + 1) - load(r + x - 1)));
    store(oy + x, splat(0.5f) * (load(dn + x) - load(up + x)));
  }
}

// Central differences, one-sided halves at the borders (replicated border).
void gradients(Plane& img, Plane& gx, Plane& gy, const Exec& ex) {
  gx = Plane(img.h, img.w);
  gy = Plane(img.h, img.w);
  parallel_for(img.h, ex.threads, [&](int64_t yy) {
    const int y = int(yy), w = img.w;
    float* r = img.row(y);
    r[-1] = r[0];  // the margins replicate the border, so the vector loop needs no clamps
    r[w] = r[w - 1];
  });
  parallel_for(img.h, ex.threads,
               [&](int64_t yy) { gradient_row(img, int(yy), gx.row(int(yy)), gy.row(int(yy))); });
}

// Pyramid levels 0 .. top of one image, with gradients where asked.
std::vector<Level> pyramid(const float* img, int H, int W, int top, bool with_gradients,
                           const Exec& ex) {
  std::vector<Level> levels(size_t(top) + 1);
  levels[0].img = plane_from(img, H, W);
  for (int s = 1; s <= top; ++s) levels[size_t(s)].img = downsample(levels[size_t(s) - 1].img, ex);
  if (with_gradients) {
    for (Level& l : levels) gradients(l.img, l.gx, l.gy, ex);
  }
  return levels;
}

// Where a block of b, (X + c, Y + r) for c < cols, r < rows, is read bilinearly: integer corner
// and fractions (one fractional offset serves the whole block, so the weights are computed once),
// and whether every tap lies inside b. The form p + t (q - p) reproduces p exactly at t = 0: an
// integer flow reads b's pixels unchanged.
struct BlockTaps {
  int ix, iy;
  float ax, ay;
  bool inside;
};

inline BlockTaps block_taps(const Plane& b, float X, float Y, int cols, int rows) {
  // Beyond one pixel outside b every tap is a border pixel already; clamping first keeps the
  // integer conversion defined for any flow.
  X = std::clamp(X, -float(cols) - 1.f, float(b.w));
  Y = std::clamp(Y, -float(rows) - 1.f, float(b.h));
  const int ix = floor_int(X), iy = floor_int(Y);
  return {ix, iy, X - float(ix), Y - float(iy),
          ix >= 0 && ix + cols < b.w && iy >= 0 && iy + rows < b.h};
}

// Lanes c .. c + width - 1 of row r of an inside block.
template <class V>
DIS_INLINE V block_read(const Plane& b, const BlockTaps& t, int r, int c) {
  const float* p0 = b.row(t.iy + r) + t.ix + c;
  const float* p1 = b.row(t.iy + r + 1) + t.ix + c;
  const V a0 = load<V>(p0), a1 = load<V>(p1);
  const V top = a0 + t.ax * (load<V>(p0 + 1) - a0);
  const V bottom = a1 + t.ax * (load<V>(p1 + 1) - a1);
  return top + t.ay * (bottom - top);
}

// Any block, border replicated, into out (rows, row stride cols <= kMaxBlockCols). Each source
// row's clamped taps are gathered once into a contiguous line (read in place where no column is
// clamped) and interpolated horizontally once (row r's bottom line is row r + 1's top line), in
// loops the compiler vectorises: the same operations per value as clamping every tap. Kept out of
// line so that it compiles for the baseline ISA (no fused multiply-adds) whichever kernel calls it.
constexpr int kMaxBlockCols = 136;  // patch_size <= 128 rounded up to 8 lanes
__attribute__((noinline)) void block_read_clamped(const Plane& b, const BlockTaps& t, int cols,
                                                  int rows, float* out) {
  const bool inner_cols = t.ix >= 0 && t.ix + cols < b.w;
  if (t.ix + cols < 0 || t.ix >= b.w - 1) {
    // Wholly left or right of b (most clamped blocks: flow that points out of view), so every tap
    // column is the same border column and each line is one value, computed as the loops below
    // compute each of its lanes.
    const int x = t.ix < 0 ? 0 : b.w - 1;
    auto value = [&](int r) {
      const float v = b.row(std::clamp(t.iy + r, 0, b.h - 1))[x];
      return v + t.ax * (v - v);
    };
    float top = value(0);
    for (int r = 0; r < rows; ++r) {
      const float bottom = value(r + 1);
      std::fill_n(out + size_t(r) * cols, cols, top + t.ay * (bottom - top));
      top = bottom;
    }
    return;
  }
  int xs[kMaxBlockCols + 1];
  if (!inner_cols) {
    for (int c = 0; c <= cols; ++c) xs[c] = std::clamp(t.ix + c, 0, b.w - 1);
  }
  float taps[kMaxBlockCols + 1], lines[2][kMaxBlockCols];
  auto line = [&](int r, float* l) {
    const float* p = b.row(std::clamp(t.iy + r, 0, b.h - 1));
    if (inner_cols) {
      p += t.ix;
    } else {
      for (int c = 0; c <= cols; ++c) taps[c] = p[xs[c]];
      p = taps;
    }
    for (int c = 0; c < cols; ++c) l[c] = p[c] + t.ax * (p[c + 1] - p[c]);
  };
  line(0, lines[0]);
  for (int r = 0; r < rows; ++r) {
    const float* top = lines[r & 1];
    float* bottom = lines[(r + 1) & 1];
    line(r + 1, bottom);
    float* o = out + size_t(r) * cols;
    for (int c = 0; c < cols; ++c) o[c] = top[c] + t.ay * (bottom[c] - top[c]);
  }
}

// ---- patch inverse search ----------------------------------------------------------------------

// Result of one patch: its flow and the mean of b's warped patch minus a's (the brightness offset
// the mean-normalised comparison ignored; densification removes it again).
struct PatchFlow {
  float u, v, offset;
};

// Per-thread buffers of the patch search: p rows of pc = round_up(p, lanes) floats; mask is 1 on
// the patch and 0 on the lanes past p.
struct PatchScratch {
  int p, pc;
  std::vector<float> mask, warped;
  PatchScratch(int p_, int lanes) : p(p_), pc((p_ + lanes - 1) / lanes * lanes) {
    mask.assign(size_t(p) * pc, 0.f);
    warped.assign(size_t(p) * pc, 0.f);
    for (int r = 0; r < p; ++r) std::fill_n(mask.begin() + r * pc, p, 1.f);
  }
};

// The Gauss-Newton set-up of a's patch at (x0, y0) (inside a): the patch mean of its gradient
// and the inverse of its centred-gradient Hessian. Patches are compared mean-normalised (robust to
// a brightness change, as in DIS); for that SSD the Gauss-Newton direction uses the template
// gradient g minus its patch mean m, so the Hessian of those centred gradients is built once per
// patch and every step costs one warp of b (and sum (g - m) e = sum g e - m sum e reads a's
// gradient as it is).
struct PatchTemplate {
  int x0, y0;
  float mgx, mgy, ixx, ixy, iyy;
};

// Rows r of a's image and gradients at the patch.
DIS_INLINE std::array<const float*, 3> patch_rows(const Level& a, int x0, int y0, int r) {
  return {a.img.row(y0 + r) + x0, a.gx.row(y0 + r) + x0, a.gy.row(y0 + r) + x0};
}

template <class V>
DIS_INLINE PatchTemplate patch_template(const Level& a, int x0, int y0, const PatchScratch& s) {
  const int p = s.p, pc = s.pc, n = p * p;
  V sgx = splat<V>(0), sgy = sgx;
  for (int r = 0; r < p; ++r) {
    const auto [t, gx, gy] = patch_rows(a, x0, y0, r);
    for (int c = 0; c < pc; c += Lanes<V>::n) {
      const V m = load<V>(&s.mask[size_t(r) * pc + c]);
      sgx += load<V>(gx + c) * m;
      sgy += load<V>(gy + c) * m;
    }
  }
  const float mgx = hsum(sgx) / float(n), mgy = hsum(sgy) / float(n);
  V vxx = splat<V>(0), vxy = vxx, vyy = vxx;
  for (int r = 0; r < p; ++r) {
    const auto [t, gx, gy] = patch_rows(a, x0, y0, r);
    for (int c = 0; c < pc; c += Lanes<V>::n) {
      const V m = load<V>(&s.mask[size_t(r) * pc + c]);
      const V cx = (load<V>(gx + c) - splat<V>(mgx)) * m,
              cy = (load<V>(gy + c) - splat<V>(mgy)) * m;
      vxx += cx * cx;
      vxy += cx * cy;
      vyy += cy * cy;
    }
  }
  float hxx = hsum(vxx), hxy = hsum(vxy), hyy = hsum(vyy);
  // Damping: a flat or single-edge patch has a near-singular Hessian whose inverse would throw the
  // search far along noise. It only shortens steps: the fixed point (SSD gradient zero) is the
  // same.
  const float lam = 1e-3f * (hxx + hyy) + 1e-12f;
  hxx += lam;
  hyy += lam;
  const float inv_det = 1.f / (hxx * hyy - hxy * hxy);
  return {x0, y0, mgx, mgy, hyy * inv_det, -hxy * inv_det, hxx * inv_det};
}

// One evaluation of the patch at flow (u, v): the sum of e = (b warped - a) over the patch, its
// mean-normalised SSD, and the lane sums of a's gradients times e (the Gauss-Newton step's).
template <class V>
struct PatchEval {
  float sum_e, ssd;
  V bx, by;
};

template <class V>
DIS_INLINE PatchEval<V> eval_patch(const Level& a, const Plane& b, const PatchTemplate& pt, float u,
                                   float v, PatchScratch& s) {
  const int p = s.p, pc = s.pc, n = p * p;
  const BlockTaps tp = block_taps(b, float(pt.x0) + u, float(pt.y0) + v, pc, p);
  if (!tp.inside) block_read_clamped(b, tp, pc, p, s.warped.data());
  V se = splat<V>(0), see = se, bx = se, by = se;
  for (int r = 0; r < p; ++r) {
    const auto [t, gx, gy] = patch_rows(a, pt.x0, pt.y0, r);
    for (int c = 0; c < pc; c += Lanes<V>::n) {
      const size_t i = size_t(r) * pc + c;
      const V warped = tp.inside ? block_read<V>(b, tp, r, c) : load<V>(&s.warped[i]);
      const V e = (warped - load<V>(t + c)) * load<V>(&s.mask[i]);
      se += e;
      see += e * e;
      bx += load<V>(gx + c) * e;
      by += load<V>(gy + c) * e;
    }
  }
  const float sum_e = hsum(se);
  return {sum_e, hsum(see) - sum_e * sum_e / float(n), bx, by};
}

// Inverse-compositional Gauss-Newton for a translation of the patch pt from (u0, v0), whose
// evaluation `first` the caller has made: at most `iters` steps, the visited flow of lowest SSD
// kept (the start when no step lowered it, or when the search wandered off).
template <class V>
DIS_INLINE PatchFlow search_patch_from(const Level& a, const Plane& b, const PatchTemplate& pt,
                                       int iters, float u0, float v0, const PatchEval<V>& first,
                                       PatchScratch& s) {
  const int p = s.p, n = p * p;
  const PatchFlow start{u0, v0, first.sum_e / float(n)};
  PatchFlow best = start;
  float best_ssd = first.ssd;
  float u = u0, v = v0;
  PatchEval<V> e = first;
  for (int it = 0;; ++it) {
    if (it > 0) {
      e = eval_patch<V>(a, b, pt, u, v, s);
      if (e.ssd < best_ssd) {
        best = {u, v, e.sum_e / float(n)};
        best_ssd = e.ssd;
      }
    }
    if (it >= iters) break;
    const float gx = hsum(e.bx) - pt.mgx * e.sum_e, gy = hsum(e.by) - pt.mgy * e.sum_e;
    const float du = pt.ixx * gx + pt.ixy * gy, dv = pt.ixy * gx + pt.iyy * gy;
    u -= du;
    v -= dv;
    // DIS's outlier check: a search that wanders further than a patch has lost its match.
    if (std::fabs(u - u0) > float(p) || std::fabs(v - v0) > float(p)) return start;
    // A step under 0.01 px: one more evaluation scores it, then stop (smaller thresholds
    // changed no benchmark figure and cost evaluations).
    if (du * du + dv * dv < 1e-4f) iters = it + 1;
  }
  return best;
}

// The whole search of a's patch at (x0, y0) from (u0, v0).
template <class V>
DIS_INLINE PatchFlow search_patch(const Level& a, const Plane& b, int x0, int y0, int iters,
                                  float u0, float v0, PatchScratch& s) {
  const PatchTemplate pt = patch_template<V>(a, x0, y0, s);
  return search_patch_from<V>(a, b, pt, iters, u0, v0, eval_patch<V>(a, b, pt, u0, v0, s), s);
}

// Top-left corners of patches of size p along n >= p pixels: every `stride`, plus one flush with
// the far border so that every pixel is covered.
std::vector<int> patch_starts(int n, int p, int stride) {
  std::vector<int> s;
  for (int v = 0; v + p <= n; v += stride) s.push_back(v);
  if (s.back() + p < n) s.push_back(n - p);
  return s;
}

// The mean of the scale's flow (fu, fv) over the patch with top-left corner (x0, y0) (offset 0).
template <class V>
DIS_INLINE PatchFlow patch_mean(const Plane& fu, const Plane& fv, int x0, int y0,
                                const PatchScratch& s) {
  V su = splat<V>(0), sv = su;
  for (int r = 0; r < s.p; ++r) {
    const float* ru = fu.row(y0 + r) + x0;
    const float* rv = fv.row(y0 + r) + x0;
    const float* m = &s.mask[size_t(r) * s.pc];
    for (int c = 0; c < s.pc; c += Lanes<V>::n) {
      su += load<V>(ru + c) * load<V>(m + c);
      sv += load<V>(rv + c) * load<V>(m + c);
    }
  }
  const float inv = 1.f / float(s.p * s.p);
  return {hsum(su) * inv, hsum(sv) * inv, 0.f};
}

// The patches of grid row i (top-left corners xs[j], ys[i]) searched from the mean of the scale's
// flow (fu, fv) over each patch, into out[j]. The mean rather than the centre value: it averages
// the seed's pixel noise away.
template <class V>
DIS_INLINE void search_row(const Level& a, const Plane& b, const Plane& fu, const Plane& fv,
                           const std::vector<int>& xs, int y0, const DisOptions& o,
                           PatchFlow* out) {
  PatchScratch s(o.patch_size, Lanes<V>::n);
  for (size_t j = 0; j < xs.size(); ++j) {
    const PatchFlow m = patch_mean<V>(fu, fv, xs[j], y0, s);
    out[j] = search_patch<V>(a, b, xs[j], y0, o.grad_iters, m.u, m.v, s);
  }
}

// One sweep of the spatial propagation (DisOptions::spatial_propagation) over patch rows
// [i0, i1) of the grid xs x ys, forward (top left first; starts: the mean of the scale's flow)
// or backward (bottom right first; starts: the forward sweep's results), `iters` steps each. A
// neighbour's flow replaces the start when its SSD is below `ratio` times the start's, or when
// both are at most `flat` (dis_propagation_rule: a flat patch takes its neighbour's flow).
// patches (ys.size(), xs.size()) is read and written in place.
template <class V>
DIS_INLINE void propagate_stripe(const Level& a, const Plane& b, const Plane& fu, const Plane& fv,
                                 const std::vector<int>& xs, const std::vector<int>& ys, int i0,
                                 int i1, bool backward, int iters, float ratio, float flat,
                                 const DisOptions& o, PatchFlow* patches) {
  PatchScratch s(o.patch_size, Lanes<V>::n);
  const int nx = int(xs.size()), d = backward ? 1 : -1;  // d: towards the swept neighbours
  for (int k = 0; k < i1 - i0; ++k) {
    const int i = backward ? i1 - 1 - k : i0 + k;
    for (int m = 0; m < nx; ++m) {
      const int j = backward ? nx - 1 - m : m;
      PatchFlow& cur = patches[size_t(i) * nx + j];
      PatchFlow start = backward ? cur : patch_mean<V>(fu, fv, xs[size_t(j)], ys[size_t(i)], s);
      // The patch's set-up is made once; the chosen start's evaluation starts the search.
      const PatchTemplate pt = patch_template<V>(a, xs[size_t(j)], ys[size_t(i)], s);
      PatchEval<V> best = eval_patch<V>(a, b, pt, start.u, start.v, s);
      // A flow already weighed is not evaluated again: the start's own (a neighbour that took
      // it; its evaluation is `best`, and taking it would change nothing) or the other
      // neighbour's when it was turned down (the same evaluation against the same `best`).
      const PatchFlow* weighed = nullptr;
      auto consider = [&](const PatchFlow& n) {
        if ((n.u == start.u && n.v == start.v) ||
            (weighed != nullptr && n.u == weighed->u && n.v == weighed->v)) {
          return;
        }
        weighed = &n;
        const PatchEval<V> e = eval_patch<V>(a, b, pt, n.u, n.v, s);
        if (e.ssd < ratio * best.ssd || (e.ssd <= flat && best.ssd <= flat)) best = e, start = n;
      };
      if (j + d >= 0 && j + d < nx) consider(patches[size_t(i) * nx + j + d]);
      if (k > 0) consider(patches[size_t(i + d) * nx + j]);
      cur = search_patch_from<V>(a, b, pt, iters, start.u, start.v, best, s);
    }
  }
}

// Densification of row y: each pixel's flow is the average of the patches covering it, weighted
// by 1 / max(1, |b(x + u_i) - a(x) - offset_i|) in 0..255 units (DIS), so that at a motion
// boundary the patch whose motion explains the pixel wins. The difference is mean-normalised with
// the patch's offset, like the search that found u_i. Rows are independent: no shared
// accumulation.
template <class V>
DIS_INLINE void densify_row(const Level& a, const Plane& b, const std::vector<PatchFlow>& patches,
                            const std::vector<int>& xs, const std::vector<int>& ys, int p, int y,
                            Plane& fu, Plane& fv) {
  constexpr int L = Lanes<V>::n;
  const int w = a.img.w, nx = int(xs.size()), pc = (p + L - 1) / L * L;
  const size_t len = size_t(w) + pc;
  std::vector<float> acc(3 * len, 0.f), seg(size_t(pc), 0.f), lane_mask(size_t(pc), 0.f);
  std::fill_n(lane_mask.begin(), p, 1.f);
  float* acc_u = acc.data();
  float* acc_v = acc_u + len;
  float* acc_w = acc_v + len;
  const float* ar = a.img.row(y);
  // Patch rows are sorted, so the ones covering y (ys[i] in (y - p, y]) are contiguous.
  const size_t i_begin = std::upper_bound(ys.begin(), ys.end(), y - p) - ys.begin();
  const size_t i_end = std::upper_bound(ys.begin(), ys.end(), y) - ys.begin();
  for (size_t i = i_begin; i < i_end; ++i) {
    for (int j = 0; j < nx; ++j) {
      const PatchFlow& f = patches[i * nx + j];
      const int x0 = xs[size_t(j)];
      const BlockTaps tp = block_taps(b, float(x0) + f.u, float(y) + f.v, pc, 1);
      if (!tp.inside) block_read_clamped(b, tp, pc, 1, seg.data());
      for (int c = 0; c < pc; c += L) {
        const V warped = tp.inside ? block_read<V>(b, tp, 0, c) : load<V>(&seg[size_t(c)]);
        const V d = vabs(warped - load<V>(ar + x0 + c) - f.offset) * kGrey;
        const V wt = load<V>(&lane_mask[size_t(c)]) / vmax(splat<V>(1.f), d);
        store(acc_u + x0 + c, load<V>(acc_u + x0 + c) + wt * f.u);
        store(acc_v + x0 + c, load<V>(acc_v + x0 + c) + wt * f.v);
        store(acc_w + x0 + c, load<V>(acc_w + x0 + c) + wt);
      }
    }
  }
  float* ou = fu.row(y);
  float* ov = fv.row(y);
  for (int x = 0; x < w; ++x) {
    ou[x] = acc_u[x] / acc_w[x];
    ov[x] = acc_v[x] / acc_w[x];
  }
}

void search_row_v4(const Level& a, const Plane& b, const Plane& fu, const Plane& fv,
                   const std::vector<int>& xs, int y0, const DisOptions& o, PatchFlow* out) {
  search_row<v4>(a, b, fu, fv, xs, y0, o, out);
}
DIS_TARGET_AVX2 void search_row_v8(const Level& a, const Plane& b, const Plane& fu, const Plane& fv,
                                   const std::vector<int>& xs, int y0, const DisOptions& o,
                                   PatchFlow* out) {
  search_row<v8>(a, b, fu, fv, xs, y0, o, out);
}
void propagate_stripe_v4(const Level& a, const Plane& b, const Plane& fu, const Plane& fv,
                         const std::vector<int>& xs, const std::vector<int>& ys, int i0, int i1,
                         bool backward, int iters, float ratio, float flat, const DisOptions& o,
                         PatchFlow* patches) {
  propagate_stripe<v4>(a, b, fu, fv, xs, ys, i0, i1, backward, iters, ratio, flat, o, patches);
}
DIS_TARGET_AVX2 void propagate_stripe_v8(const Level& a, const Plane& b, const Plane& fu,
                                         const Plane& fv, const std::vector<int>& xs,
                                         const std::vector<int>& ys, int i0, int i1, bool backward,
                                         int iters, float ratio, float flat, const DisOptions& o,
                                         PatchFlow* patches) {
  propagate_stripe<v8>(a, b, fu, fv, xs, ys, i0, i1, backward, iters, ratio, flat, o, patches);
}
void densify_row_v4(const Level& a, const Plane& b, const std::vector<PatchFlow>& patches,
                    const std::vector<int>& xs, const std::vector<int>& ys, int p, int y, Plane& fu,
                    Plane& fv) {
  densify_row<v4>(a, b, patches, xs, ys, p, y, fu, fv);
}
DIS_TARGET_AVX2 void densify_row_v8(const Level& a, const Plane& b,
                                    const std::vector<PatchFlow>& patches,
                                    const std::vector<int>& xs, const std::vector<int>& ys, int p,
                                    int y, Plane& fu, Plane& fv) {
  densify_row<v8>(a, b, patches, xs, ys, p, y, fu, fv);
}

// 8 lanes where the correlation kernels' level (corr_detail::simd_active: the CPU's, capped by
// GOCOR_SIMD or simd_force) has AVX2 and FMA: one switch for every SIMD path of the core.
bool use_v8() {
  return corr_detail::simd_active() != corr_detail::Simd::Portable;
}

// ---- variational refinement --------------------------------------------------------------------

// A plane in checkerboard (red-black) layout: pixel (y, x) has colour c = (x + y) & 1 and sits in
// half-plane c, row y, at index x >> 1. Each colour's pixels are contiguous, so an SOR half-sweep
// is a plain vector loop that reads only the other colour and writes only its own. In row y the
// pixels of colour c are x = 2k + q with q = (y + c) & 1; their left / right neighbours are the
// other colour's k + q - 1 / k + q in the same row, their up / down neighbours the other colour's
// k in rows y - 1 / y + 1.
struct Checker {
  int h = 0, w = 0;
  size_t stride = 0;
  WorkVector<float> buf;
  // Half-rows padded to a multiple of 8 pixels, which every vector loop may run to.
  static size_t stride_for(int w) { return size_t(((w + 1) / 2 + 7) & ~7) + 2 * kMargin; }
  // Resized and zeroed; the memory is reused when it is large enough.
  void reset(int h_, int w_) {
    h = h_;
    w = w_;
    stride = stride_for(w);
    buf.assign(2 * size_t(h) * stride, 0.f);
  }
  float* row(int c, int y) { return buf.data() + (size_t(c) * h + y) * stride + kMargin; }
  const float* row(int c, int y) const {
    return buf.data() + (size_t(c) * h + y) * stride + kMargin;
  }
  int span() const { return ((w + 1) / 2 + 7) & ~7; }
};

// Buffers of the variational stage. The linearised data term is reserved once for the finest
// scale and reused by every scale (coarse to fine it would otherwise be allocated, and faulted in,
// anew at each); the flow and weights are made anew at each scale (see run()).
struct VarBuffers {
  Checker lin[9], flow[2], psi;
  VarBuffers(int h, int w) {
    for (Checker& c : lin) c.buf.reserve(2 * size_t(h) * Checker::stride_for(w));
  }
};

// Variational refinement at one scale (the energy of DeepFlow / Brox et al. 2004):
//   E(w) = sum_x delta Psi(rho_c) + gamma Psi(rho_g) + alpha Psi(|grad u|^2 + |grad v|^2)
// with rho_c the normalised brightness constancy (b(x + w) - a(x))^2 and rho_g the same for the x
// and y gradients, both linearised once about the flow the scale starts from. The robust weights
// Psi' are lagged (fixed point): each iteration is one red-black SOR sweep in which every pixel
// first re-evaluates its own data and smoothness weights at the current flow, which leaves it a
// 2x2 system coupled to its 4 neighbours, then moves towards that system's solution. Pixels of one
// colour depend only on the other, so rows run in parallel and the result does not depend on the
// thread count. Edges to pixels outside the image are dropped (Neumann boundary).
class Variational {
 public:
  Variational(const Level& a, const Plane& b, Plane& fu, Plane& fv, const DisOptions& o,
              VarBuffers& buf, bool v8, const Exec& ex)
      : a_(a),
        b_(b),
        fu_(fu),
        fv_(fv),
        o_(o),
        m_(buf),
        v8_(v8),
        ex_(ex),
        h_(a.img.h),
        w_(a.img.w) {}

  // `linearised` is called once the data term is linearised: from then on neither image is read.
  // `last`: the last scale, whose buffers nothing reuses: the flow planes are freed while the
  // sweeps work on their checkerboard copies, and the linearised data term before the flow is
  // written back (the sweeps' planes are then not resident next to both).
  void run(const std::function<void()>& linearised, bool last) {
    masks();
    // The previous scale's flow and weights are stale: freed rather than resident through the
    // linearisation, this scale's peak.
    for (Checker* c : {&m_.flow[0], &m_.flow[1], &m_.psi}) WorkVector<float>().swap(c->buf);
    linearise();
    if (linearised) linearised();
    for (int k = 0; k < 2; ++k) {
      Checker& f = m_.flow[k];
      Plane& src = k == 0 ? fu_ : fv_;
      f.reset(h_, w_);
      parallel_for(h_, ex_.threads, [&](int64_t y) { deinterleave(src.row(int(y)), int(y), f); });
      if (last) src = Plane();
    }
    m_.psi.reset(h_, w_);
    parallel_for(h_, ex_.threads, [&](int64_t y) {
      if (v8_) {
        smoothness_weights_row_v8(1, int(y));
      } else {
        smoothness_weights_row<v4>(1, int(y));
      }
    });
    // Each thread sweeps one block of whole rows (parallel_chunks: one block per thread; the
    // caller, which starts first, mostly takes the same block in every half-sweep), so that a
    // row and its neighbours stay in one core's caches from sweep to sweep. Handed out row by row,
    // consecutive rows alternated between the threads, and each half-sweep read most of the other
    // colour from the other core (aloe's finest scale at two threads: 76-95 ms of sweeps, as long
    // as on one thread; in blocks 48-51).
    for (int k = 0; k < o_.var_iters; ++k) {
      for (int c = 0; c < 2; ++c) {
        parallel_chunks(h_, ex_.threads, 1, [&](int64_t y0, int64_t y1) {
          for (int64_t y = y0; y < y1; ++y) {
            if (v8_) {
              sweep_row_v8(c, int(y));
            } else {
              sweep_row<v4>(c, int(y));
            }
          }
        });
      }
    }
    if (last) {
      for (Checker& c : m_.lin) WorkVector<float>().swap(c.buf);
      fu_ = Plane(h_, w_);
      fv_ = Plane(h_, w_);
    }
    parallel_for(h_, ex_.threads, [&](int64_t y) {
      interleave(m_.flow[0], int(y), fu_.row(int(y)));
      interleave(m_.flow[1], int(y), fv_.row(int(y)));
    });
  }

 private:
  // Row y of a plane (w floats) into its two colours, and back. (One loop per colour: GCC 12
  // miscompiles the single loop `out[x] = (x % 2 == q ? c0 : c1)[x >> 1]` under -fsanitize=shift.)
  void deinterleave(const float* src, int y, Checker& dst) const {
    float* c0 = dst.row(0, y);
    float* c1 = dst.row(1, y);
    const int q = y & 1;  // colour 0 starts at x = q in row y
    for (int k = 0; 2 * k + q < w_; ++k) c0[k] = src[2 * k + q];
    for (int k = 0; 2 * k + 1 - q < w_; ++k) c1[k] = src[2 * k + 1 - q];
  }
  void interleave(const Checker& src, int y, float* dst) const {
    const float* c0 = src.row(0, y);
    const float* c1 = src.row(1, y);
    const int q = y & 1;
    for (int k = 0; 2 * k + q < w_; ++k) dst[2 * k + q] = c0[k];
    for (int k = 0; 2 * k + 1 - q < w_; ++k) dst[2 * k + 1 - q] = c1[k];
  }

  // 1 where the edge to the left / right neighbour exists: per column x (col_), and per q (the
  // parity of a colour's first pixel in a row) and packed index k (m_, also 1 where x = 2k + q is
  // a pixel at all).
  void masks() {
    const size_t span = size_t(span_);
    col_left_.assign(span, 0.f);
    col_right_.assign(span, 0.f);
    for (int x = 0; x < w_; ++x) {
      col_left_[size_t(x)] = x > 0;
      col_right_[size_t(x)] = x + 1 < w_;
    }
    const size_t n = size_t(((w_ + 1) / 2 + 7) & ~7) + 8;
    for (int q = 0; q < 2; ++q) {
      m_left_[q].assign(n, 0.f);
      m_right_[q].assign(n, 0.f);
      m_valid_[q].assign(n, 0.f);
      for (size_t k = 0; k < n; ++k) {
        const int x = 2 * int(k) + q;
        m_left_[q][k] = x > 0 && x < w_;
        m_right_[q][k] = x + 1 < w_;
        m_valid_[q][k] = x < w_;
      }
    }
  }

  // b and its central differences at the start match of row y: out_b, out_gx, out_gy (w) and
  // out_in, 1 where the match lies inside b. The differences of bilinear reads one pixel apart
  // equal the bilinear read of b's central-difference gradient, so b needs no gradient planes:
  // one set of fractions serves all 12 taps. Four pixels at a time: the taps are gathered lane by
  // lane, the interpolation runs on vectors.
  template <class V>
  DIS_INLINE void warp_row(int y, float* out_b, float* out_gx, float* out_gy, float* out_in) const {
    using I = typename Lanes<V>::Int;
    constexpr int L = Lanes<V>::n;
    const Plane& B = b_;
    const float* u = fu_.row(y);
    const float* v = fv_.row(y);
    const V wmax = splat<V>(float(B.w - 1)), hmax = splat<V>(float(B.h - 1)), zero = splat<V>(0.f);
    const V lo = splat<V>(-2.f), hix = splat<V>(float(B.w + 1)), hiy = splat<V>(float(B.h));
    const V half = splat<V>(0.5f);
    for (int x = 0; x < span_; x += L) {
      V X = load<V>(u + x);
#pragma GCC unroll 8
      for (int l = 0; l < L; ++l) X[l] += float(x + l);
      const V Y = splat<V>(float(y)) + load<V>(v + x);
      const I in = (X >= zero) & (Y >= zero) & (X <= wmax) & (Y <= hmax);
      store(out_in + x, vselect(in, splat<V>(1.f), zero));
      // Clamped so that the integer conversion is defined; beyond that every tap is a border
      // pixel anyway.
      const V sx = vmin(vmax(X, lo), hix), sy = vmin(vmax(Y, lo), hiy);
      I ix = __builtin_convertvector(sx, I), iy = __builtin_convertvector(sy, I);
      ix += (__builtin_convertvector(ix, V) > sx);  // truncation -> floor (true is -1)
      iy += (__builtin_convertvector(iy, V) > sy);
      const V ax = sx - __builtin_convertvector(ix, V), ay = sy - __builtin_convertvector(iy, V);
      const float* rows[L][4];  // [lane][j]: row iy - 1 + j of b
      int cols[L][4];           // [lane][i]: column ix - 1 + i
#pragma GCC unroll 8
      for (int l = 0; l < L; ++l) {
        for (int j = 0; j < 4; ++j) {
          rows[l][j] = B.row(std::clamp(iy[l] - 1 + j, 0, B.h - 1));
          cols[l][j] = std::clamp(ix[l] - 1 + j, 0, B.w - 1);
        }
      }
      auto tap = [&](int j, int i) {
        V t;
#pragma GCC unroll 8
        for (int l = 0; l < L; ++l) t[l] = rows[l][j][cols[l][i]];
        return t;
      };
      auto lerp = [](const V& p, const V& q, const V& t) { return p + t * (q - p); };
      // Horizontal interpolation at columns X - 1 (hm), X (h0), X + 1 (hp) of rows iy - 1 .. iy +
      // 2, as far as the vertical steps below need them.
      V h0[4], hm[2], hp[2];
      for (int j = 0; j < 4; ++j) h0[j] = lerp(tap(j, 1), tap(j, 2), ax);
      for (int j = 1; j < 3; ++j) {
        hm[j - 1] = lerp(tap(j, 0), tap(j, 1), ax);
        hp[j - 1] = lerp(tap(j, 2), tap(j, 3), ax);
      }
      store(out_b + x, lerp(h0[1], h0[2], ay));
      store(out_gx + x, half * (lerp(hp[0], hp[1], ay) - lerp(hm[0], hm[1], ay)));
      store(out_gy + x, half * (lerp(h0[2], h0[3], ay) - lerp(h0[0], h0[1], ay)));
    }
  }

  // Per pixel, the three linearised constancy residuals z + gx u + gy v (colour, x-gradient,
  // y-gradient) of the flow (u, v), each divided by the square root of its normalisation:
  // lin[3t] = z, lin[3t + 1] = gx, lin[3t + 2] = gy. z absorbs the start flow f (z = b(x + f) -
  // a(x) - g . f), so the sweeps need no copy of f. Derivatives are the mean of a's and of the
  // warped b's. Where the match leaves b the data term is zero. Bands of rows warp their own rows
  // and one row above and below (the second-derivative stencils reach that far).
  void linearise() {
    for (Checker& q : m_.lin) q.reset(h_, w_);
    parallel_for((h_ + kBand - 1) / kBand, ex_.threads, [&](int64_t band) {
      if (v8_) {
        linearise_band_v8(int(band));
      } else {
        linearise_band<v4>(int(band));
      }
    });
  }
  static constexpr int kBand = 16;
  template <class V>
  DIS_INLINE void linearise_band(int band) {
    const size_t span = size_t(span_), lane = span + 2 * kMargin;
    const int y0 = band * kBand, y1 = std::min(h_, y0 + kBand);
    const int r0 = std::max(y0 - 1, 0), r1 = std::min(y1 + 1, h_);
    // Rows r0 .. r1 - 1 of b, b_x, b_y at the match and the inside mask, and of a's gradients
    // a_x, a_y (made here from a's image rather than kept whole through the linearisation, this
    // scale's peak: 2 planes less resident, the same values); zero margins.
    std::vector<float> warped(6 * size_t(r1 - r0) * lane, 0.f), tmp(9 * span);
    auto row = [&](int k, int y) {
      return warped.data() + (size_t(k) * (r1 - r0) + size_t(y - r0)) * lane + kMargin;
    };
    for (int y = r0; y < r1; ++y) {
      gradient_row(a_.img, y, row(4, y), row(5, y));
      warp_row<V>(y, row(0, y), row(1, y), row(2, y), row(3, y));
      for (int k = 1; k < 3; ++k) {  // replicated margins for the derivative stencils
        row(k, y)[-1] = row(k, y)[0];
        row(k, y)[w_] = row(k, y)[w_ - 1];
      }
    }
    const V half = splat<V>(0.5f), quarter = splat<V>(0.25f), eighth = splat<V>(0.125f);
    const V zeta2 = splat<V>(kZeta2), one = splat<V>(1.f);
    for (int y = y0; y < y1; ++y) {
      const int yu = std::max(y - 1, 0), yd = std::min(y + 1, h_ - 1);
      // a's gradient planes keep zero margins: their one-sided halves at the borders come from
      // the column masks instead.
      const float *gxa = row(4, y), *gxa_u = row(4, yu), *gxa_d = row(4, yd);
      const float *gya = row(5, y), *gya_u = row(5, yu), *gya_d = row(5, yd);
      const float *gxb = row(1, y), *gxb_u = row(1, yu), *gxb_d = row(1, yd);
      const float *gyb = row(2, y), *gyb_u = row(2, yu), *gyb_d = row(2, yd);
      const float *bw = row(0, y), *in = row(3, y), *ar = a_.img.row(y);
      const float *fu = fu_.row(y), *fv = fv_.row(y);
      for (size_t x = 0; x < span; x += Lanes<V>::n) {
        const V ml = load<V>(&col_left_[x]), mr = load<V>(&col_right_[x]);
        const V gxa_c = load<V>(gxa + x), gya_c = load<V>(gya + x);
        const V gxa_l = ml * load<V>(gxa + x - 1) + (one - ml) * gxa_c;
        const V gxa_r = mr * load<V>(gxa + x + 1) + (one - mr) * gxa_c;
        const V gya_l = ml * load<V>(gya + x - 1) + (one - ml) * gya_c;
        const V gya_r = mr * load<V>(gya + x + 1) + (one - mr) * gya_c;
        const V gxb_c = load<V>(gxb + x), gyb_c = load<V>(gyb + x);
        const V ix = half * (gxa_c + gxb_c), iy = half * (gya_c + gyb_c);
        const V ixx = quarter * (gxa_r - gxa_l + load<V>(gxb + x + 1) - load<V>(gxb + x - 1));
        const V iyy = quarter * (load<V>(gya_d + x) - load<V>(gya_u + x) + load<V>(gyb_d + x) -
                                 load<V>(gyb_u + x));
        const V ixy = eighth * (load<V>(gxa_d + x) - load<V>(gxa_u + x) + load<V>(gxb_d + x) -
                                load<V>(gxb_u + x) + gya_r - gya_l + load<V>(gyb + x + 1) -
                                load<V>(gyb + x - 1));
        const V m = load<V>(in + x), f1 = load<V>(fu + x), f2 = load<V>(fv + x);
        const V nc = m * rsqrt(ix * ix + iy * iy + zeta2);
        const V nx = m * rsqrt(ixx * ixx + ixy * ixy + zeta2);
        const V ny = m * rsqrt(ixy * ixy + iyy * iyy + zeta2);
        const V out[9] = {nc * (load<V>(bw + x) - load<V>(ar + x) - ix * f1 - iy * f2),
                          nc * ix,
                          nc * iy,
                          nx * (gxb_c - gxa_c - ixx * f1 - ixy * f2),
                          nx * ixx,
                          nx * ixy,
                          ny * (gyb_c - gya_c - ixy * f1 - iyy * f2),
                          ny * ixy,
                          ny * iyy};
#pragma GCC unroll 9
        for (int k = 0; k < 9; ++k) store(&tmp[size_t(k) * span + x], out[k]);
      }
      for (int k = 0; k < 9; ++k) deinterleave(&tmp[size_t(k) * span], y, m_.lin[k]);
    }
  }
  DIS_TARGET_AVX2 void linearise_band_v8(int band) {
    linearise_band<v8>(band);
  }

  // Flow values around the pixels k .. k + width - 1 of colour c in row y: own, left, right, up,
  // down (the last four of the other colour).
  template <class V>
  struct Stencil {
    V own, left, right, up, down;
  };
  template <class V>
  DIS_INLINE Stencil<V> stencil(const Checker& f, int c, int y, int k) const {
    const int q = (y + c) & 1, o = 1 - c;
    const int yu = std::max(y - 1, 0), yd = std::min(y + 1, h_ - 1);
    return {load<V>(f.row(c, y) + k), load<V>(f.row(o, y) + k + q - 1),
            load<V>(f.row(o, y) + k + q), load<V>(f.row(o, yu) + k), load<V>(f.row(o, yd) + k)};
  }

  // Psi'(|grad w|^2) at those pixels, gradients as the mean of the forward and backward
  // differences whose edges exist (masks l, r, mu, md).
  template <class V>
  static DIS_INLINE V smoothness_weight(const Stencil<V>& u, const Stencil<V>& v, const V& l,
                                        const V& r, const V& mu, const V& md) {
    const V half = splat<V>(0.5f);
    const V ux = half * (r * (u.right - u.own) + l * (u.own - u.left));
    const V uy = half * (md * (u.down - u.own) + mu * (u.own - u.up));
    const V vx = half * (r * (v.right - v.own) + l * (v.own - v.left));
    const V vy = half * (md * (v.down - v.own) + mu * (v.own - v.up));
    return half * rsqrt(ux * ux + uy * uy + vx * vx + vy * vy + splat<V>(kEps2));
  }

  // One half-sweep over the pixels of colour c in row y. Each pixel first takes its smoothness
  // weight at the current flow (the other colour's weights are from their own half-sweep, half an
  // iteration old). Then, with the robust weights frozen, pixel i solves
  //   (D + S) w_i = -d + sum_j s_ij w_j,   S = sum_j s_ij,   s_ij = alpha (psi_i + psi_j) / 2
  // (D, d: the data term's matrix and vector, residual = z + g . w; the sum over the existing
  // edges), and moves an over-relaxed step towards that solution. Reads only the other colour's
  // rows y - 1 .. y + 1 and writes only its own row: rows run in parallel.
  template <class V>
  DIS_INLINE void sweep_row(int c, int y) {
    const float alpha = o_.var_alpha, gamma = o_.var_gamma, delta = o_.var_delta;
    const int q = (y + c) & 1, o = 1 - c;
    const int yu = std::max(y - 1, 0), yd = std::min(y + 1, h_ - 1);
    const V eps2 = splat<V>(kEps2), floor = splat<V>(kDiagFloor), omega = splat<V>(kSorOmega);
    const V hdelta = splat<V>(0.5f * delta), hgamma = splat<V>(0.5f * gamma),
            ha = splat<V>(0.5f * alpha);
    const V mu = splat<V>(y > 0 ? 1.f : 0.f), md = splat<V>(y + 1 < h_ ? 1.f : 0.f);
    const float* L[9];
    for (int k = 0; k < 9; ++k) L[k] = m_.lin[k].row(c, y);
    const Checker& psi = m_.psi;
    float *ou = m_.flow[0].row(c, y), *ov = m_.flow[1].row(c, y), *opsi = m_.psi.row(c, y);
    const float *ml = m_left_[q].data(), *mr = m_right_[q].data(), *mv = m_valid_[q].data();
    for (int k = 0; k < m_.psi.span(); k += Lanes<V>::n) {
      const Stencil<V> u = stencil<V>(m_.flow[0], c, y, k), v = stencil<V>(m_.flow[1], c, y, k);
      const V el = load<V>(ml + k), er = load<V>(mr + k), mcol = load<V>(mv + k);
      const V pc = smoothness_weight<V>(u, v, el, er, mu, md);
      store(opsi + k, pc);
      V l[9];
#pragma GCC unroll 9
      for (int t = 0; t < 9; ++t) l[t] = load<V>(L[t] + k);
      const V rc = l[0] + l[1] * u.own + l[2] * v.own;
      const V rx = l[3] + l[4] * u.own + l[5] * v.own;
      const V ry = l[6] + l[7] * u.own + l[8] * v.own;
      const V wc = hdelta * rsqrt(rc * rc + eps2);
      const V wg = hgamma * rsqrt(rx * rx + ry * ry + eps2);
      const V d11 = wc * l[1] * l[1] + wg * (l[4] * l[4] + l[7] * l[7]);
      const V d12 = wc * l[1] * l[2] + wg * (l[4] * l[5] + l[7] * l[8]);
      const V d22 = wc * l[2] * l[2] + wg * (l[5] * l[5] + l[8] * l[8]);
      const V d1 = wc * l[1] * l[0] + wg * (l[4] * l[3] + l[7] * l[6]);
      const V d2 = wc * l[2] * l[0] + wg * (l[5] * l[3] + l[8] * l[6]);
      const V sl = ha * (pc + load<V>(psi.row(o, y) + k + q - 1)) * el;
      const V sr = ha * (pc + load<V>(psi.row(o, y) + k + q)) * er;
      const V su = ha * (pc + load<V>(psi.row(o, yu) + k)) * mu * mcol;
      const V sd = ha * (pc + load<V>(psi.row(o, yd) + k)) * md * mcol;
      const V s = sl + sr + su + sd;
      const V n1 = sl * u.left + sr * u.right + su * u.up + sd * u.down - d1;
      const V n2 = sl * v.left + sr * v.right + su * v.up + sd * v.down - d2;
      const V a11 = d11 + s + floor, a22 = d22 + s + floor;
      const V inv_det = splat<V>(1.f) / (a11 * a22 - d12 * d12);
      const V nu = (a22 * n1 - d12 * n2) * inv_det, nv = (a11 * n2 - d12 * n1) * inv_det;
      store(ou + k, u.own + omega * (nu - u.own));
      store(ov + k, v.own + omega * (nv - v.own));
    }
  }

  // The smoothness weights of colour c in row y before the first half-sweep.
  template <class V>
  DIS_INLINE void smoothness_weights_row(int c, int y) {
    const int q = (y + c) & 1;
    const V mu = splat<V>(y > 0 ? 1.f : 0.f), md = splat<V>(y + 1 < h_ ? 1.f : 0.f);
    const float *ml = m_left_[q].data(), *mr = m_right_[q].data();
    float* out = m_.psi.row(c, y);
    for (int k = 0; k < m_.psi.span(); k += Lanes<V>::n) {
      const Stencil<V> u = stencil<V>(m_.flow[0], c, y, k), v = stencil<V>(m_.flow[1], c, y, k);
      store(out + k, smoothness_weight<V>(u, v, load<V>(ml + k), load<V>(mr + k), mu, md));
    }
  }

  DIS_TARGET_AVX2 void sweep_row_v8(int c, int y) {
    sweep_row<v8>(c, y);
  }
  DIS_TARGET_AVX2 void smoothness_weights_row_v8(int c, int y) {
    smoothness_weights_row<v8>(c, y);
  }

  const Level& a_;
  const Plane& b_;
  Plane& fu_;
  Plane& fv_;
  const DisOptions& o_;
  VarBuffers& m_;
  const bool v8_;
  const Exec& ex_;
  const int h_, w_;
  const int span_ = (w_ + 7) & ~7;  // row length the vector loops run to (a multiple of 8)
  std::vector<float> col_left_, col_right_, m_left_[2], m_right_[2], m_valid_[2];
};

// ---- resampling of flow ------------------------------------------------------------------------

// Flow (u, v) of a coarser level (scale factor f = 2^k) -> (h, w), in place: bilinear at the
// exact pixel map x_coarse = (x + 0.5) / f - 0.5 (border clamped), vectors times f.
void upsample(Plane& u, Plane& v, int h, int w, int f, const Exec& ex) {
  Plane ou(h, w), ov(h, w);
  const float inv = 1.f / float(f);
  std::vector<int> x0s(static_cast<size_t>(w)), x1s(static_cast<size_t>(w));
  std::vector<float> axs(static_cast<size_t>(w));
  for (int x = 0; x < w; ++x) {
    const float X = std::clamp((float(x) + 0.5f) * inv - 0.5f, 0.f, float(u.w - 1));
    x0s[size_t(x)] = std::min(int(X), u.w - 1);
    x1s[size_t(x)] = std::min(x0s[size_t(x)] + 1, u.w - 1);
    axs[size_t(x)] = X - float(x0s[size_t(x)]);
  }
  parallel_for(h, ex.threads, [&](int64_t yy) {
    const float Y = std::clamp((float(yy) + 0.5f) * inv - 0.5f, 0.f, float(u.h - 1));
    const int y0 = std::min(int(Y), u.h - 1), y1 = std::min(y0 + 1, u.h - 1);
    const float ay = Y - float(y0);
    for (int k = 0; k < 2; ++k) {
      const Plane& in = k == 0 ? u : v;
      const float* r0 = in.row(y0);
      const float* r1 = in.row(y1);
      float* o = (k == 0 ? ou : ov).row(int(yy));
      for (int x = 0; x < w; ++x) {
        const int x0 = x0s[size_t(x)], x1 = x1s[size_t(x)];
        const float ax = axs[size_t(x)];
        const float t = r0[x0] + ax * (r0[x1] - r0[x0]), d = r1[x0] + ax * (r1[x1] - r1[x0]);
        o[x] = float(f) * (t + ay * (d - t));
      }
    }
  });
  u = std::move(ou);
  v = std::move(ov);
}

// One flow component (H, W) -> (h, w) at scale f = 2^s: the mean over each f x f block (the part
// inside the image at the borders), vectors divided by f.
Plane area_down(const float* in, int H, int W, int h, int w, int f, const Exec& ex) {
  Plane out(h, w);
  parallel_for(h, ex.threads, [&](int64_t i) {
    const int y0 = int(i) * f, y1 = std::min(y0 + f, H);
    for (int j = 0; j < w; ++j) {
      const int x0 = j * f, x1 = std::min(x0 + f, W);
      float s = 0;
      for (int y = y0; y < y1; ++y) {
        for (int x = x0; x < x1; ++x) s += in[size_t(y) * W + x];
      }
      out.row(int(i))[j] = s / (float(f) * float((y1 - y0) * (x1 - x0)));
    }
  });
  return out;
}

// ---- validation --------------------------------------------------------------------------------

void check_options(const DisOptions& o, const char* fn) {
  auto bad = [&](const char* name, const std::string& value, const char* range) {
    throw Error(ErrorCode::InvalidArg, std::string(fn) + ": expected " + range + " for " + name +
                                           " but received " + value);
  };
  auto integer = [&](const char* name, int v, int lo, int hi, const char* range) {
    if (v < lo || v > hi) bad(name, std::to_string(v), range);
  };
  auto weight = [&](const char* name, float v) {
    if (!(v >= 0) || !std::isfinite(v)) bad(name, std::to_string(v), "a finite number >= 0");
  };
  integer("patch_size", o.patch_size, 2, 128, "an integer in 2 .. 128");
  integer("patch_stride", o.patch_stride, 1, o.patch_size, "an integer in 1 .. patch_size");
  integer("finest_scale", o.finest_scale, 0, 20, "an integer in 0 .. 20");
  integer("coarsest_scale", o.coarsest_scale, o.finest_scale, 20,
          "an integer in finest_scale .. 20");
  integer("grad_iters", o.grad_iters, 0, 10000, "an integer in 0 .. 10000");
  integer("var_iters", o.var_iters, 0, 10000, "an integer in 0 .. 10000");
  weight("var_alpha", o.var_alpha);
  weight("var_gamma", o.var_gamma);
  weight("var_delta", o.var_delta);
}

void check_images(const float* gray_a, int H, int W, const float* gray_b, int Hb, int Wb,
                  const float* flow, const char* fn) {
  if (H <= 0 || W <= 0 || Hb <= 0 || Wb <= 0) {
    throw Error(ErrorCode::Shape, std::string(fn) + ": image sizes must be positive, got a " +
                                      std::to_string(H) + "x" + std::to_string(W) + ", b " +
                                      std::to_string(Hb) + "x" + std::to_string(Wb));
  }
  if (gray_a == nullptr || gray_b == nullptr || flow == nullptr) {
    throw Error(ErrorCode::InvalidArg, std::string(fn) + ": null image or flow pointer");
  }
}

}  // namespace

void flow_refine_dis_cpu(const float* gray_a, int H, int W, const float* gray_b, int Hb, int Wb,
                         float* flow, const DisOptions& o, const Exec& ex) {
  const char* fn = "flow_refine_dis";
  check_images(gray_a, H, W, gray_b, Hb, Wb, flow, fn);
  check_options(o, fn);
  const size_t P = size_t(H) * W;
  if (!std::all_of(flow, flow + 2 * P, [](float v) { return std::isfinite(v); })) {
    throw Error(ErrorCode::InvalidArg, std::string(fn) + ": the seed flow has a non-finite value");
  }
  // Level sizes of a; the search starts at the coarsest scale <= coarsest_scale that is >= 2
  // patches across (fewer patches than that would have no neighbours to densify with), and never
  // finer than finest_scale.
  const int p = o.patch_size, f = o.finest_scale;
  std::vector<int> hs{H}, ws{W};
  while (int(hs.size()) <= o.coarsest_scale) {
    hs.push_back((hs.back() + 1) / 2);
    ws.push_back((ws.back() + 1) / 2);
  }
  int top = f;
  for (int s = o.coarsest_scale; s > f; --s) {
    if (std::min(hs[size_t(s)], ws[size_t(s)]) >= 2 * p) {
      top = s;
      break;
    }
  }
  if (std::min(hs[size_t(top)], ws[size_t(top)]) < p) return;

  const bool var = o.var_iters > 0, v8 = use_v8();
  std::vector<Level> pa = pyramid(gray_a, H, W, top, true, ex);
  std::vector<Level> pb = pyramid(gray_b, Hb, Wb, top, false, ex);
  check_cancel(ex);

  VarBuffers var_buffers(var ? hs[size_t(f)] : 0, var ? ws[size_t(f)] : 0);
  Plane fu = area_down(flow, H, W, hs[size_t(top)], ws[size_t(top)], 1 << top, ex);
  Plane fv = area_down(flow + P, H, W, hs[size_t(top)], ws[size_t(top)], 1 << top, ex);
  for (int s = top; s >= f; --s) {
    const Level& a = pa[size_t(s)];
    const Level& b = pb[size_t(s)];
    if (s < top) {
      upsample(fu, fv, a.img.h, a.img.w, 2, ex);
    }
    const std::vector<int> xs = patch_starts(a.img.w, p, o.patch_stride);
    const std::vector<int> ys = patch_starts(a.img.h, p, o.patch_stride);
    std::vector<PatchFlow> patches(xs.size() * ys.size());
    if (o.spatial_propagation) {
      constexpr int kStripe = 32;  // patch rows per stripe (the stripes run in parallel)
      const int rows = int(ys.size()), stripes = (rows + kStripe - 1) / kStripe;
      const DisPropagationRule rule = dis_propagation_rule(o.patch_size, s == f);
      for (int pass = 0; pass < 2; ++pass) {
        const int iters = pass == 0 ? o.grad_iters / 2 : o.grad_iters - o.grad_iters / 2;
        parallel_for(stripes, ex.threads, [&](int64_t st) {
          const int i0 = int(st) * kStripe, i1 = std::min(i0 + kStripe, rows);
          (v8 ? propagate_stripe_v8 : propagate_stripe_v4)(a, b.img, fu, fv, xs, ys, i0, i1,
                                                           pass == 1, iters, rule.ratio, rule.flat,
                                                           o, patches.data());
        });
      }
    } else {
      parallel_for(int64_t(ys.size()), ex.threads, [&](int64_t i) {
        (v8 ? search_row_v8 : search_row_v4)(a, b.img, fu, fv, xs, ys[size_t(i)], o,
                                             &patches[size_t(i) * xs.size()]);
      });
    }
    parallel_for(a.img.h, ex.threads, [&](int64_t y) {
      (v8 ? densify_row_v8 : densify_row_v4)(a, b.img, patches, xs, ys, p, int(y), fu, fv);
    });
    // A scale's levels are freed once done with: a's gradients after the search (the
    // linearisation makes its own rows of them), a coarser one before the finest scale, the
    // finest one as soon as the variational refinement has linearised (its sweeps read neither
    // image), so that they are not resident with its planes.
    pa[size_t(s)].gx = Plane();
    pa[size_t(s)].gy = Plane();
    auto release = [&] { pa[size_t(s)] = Level(), pb[size_t(s)] = Level(); };
    if (var) Variational(a, b.img, fu, fv, o, var_buffers, v8, ex).run(release, s == f);
    if (s > f) release();
    check_cancel(ex);
  }
  if (f > 0) {
    upsample(fu, fv, H, W, 1 << f, ex);
  }
  for (int y = 0; y < H; ++y) {
    std::copy(fu.row(y), fu.row(y) + W, flow + size_t(y) * W);
    std::copy(fv.row(y), fv.row(y) + W, flow + P + size_t(y) * W);
  }
}

void dis_patch_search(const float* gray_a, int H, int W, const float* gray_b, int Hb, int Wb,
                      int x0, int y0, const DisOptions& o, float* uv) {
  const char* fn = "dis_patch_search";
  check_images(gray_a, H, W, gray_b, Hb, Wb, uv, fn);
  check_options(o, fn);
  const int p = o.patch_size;
  if (x0 < 0 || y0 < 0 || x0 + p > W || y0 + p > H) {
    throw Error(ErrorCode::Shape, std::string(fn) + ": the patch must lie inside a");
  }
  if (!std::isfinite(uv[0]) || !std::isfinite(uv[1])) {
    throw Error(ErrorCode::InvalidArg, std::string(fn) + ": the start flow is not finite");
  }
  const Exec serial{Device::Cpu, 1, nullptr};
  const std::vector<Level> pa = pyramid(gray_a, H, W, 0, true, serial);
  const Plane b = plane_from(gray_b, Hb, Wb);
  std::vector<int> xs{x0};
  PatchFlow r;
  (use_v8() ? search_row_v8 : search_row_v4)(pa[0], b, plane_constant(H, W, uv[0]),
                                             plane_constant(H, W, uv[1]), xs, y0, o, &r);
  uv[0] = r.u;
  uv[1] = r.v;
}

size_t flow_refine_dis_work_bytes(int H, int W, int Hb, int Wb, const DisOptions& o) {
  // Planes are padded: rows of up to W + 24 floats (checker planes: two half-rows of up to
  // W / 2 + 24). The peak is at the finest scale (the coarser levels are freed before it): the
  // search's a's image and gradients (3 planes), b's image and the flow (2); without the
  // variational refinement, the upsampled flow's two planes next to the old. With it, its
  // linearisation's 9 planes next to a's and b's image and the flow (a's gradients freed), then
  // the sweeps' 12 planes (linearised data term, flow and smoothness weights; a's and b's images
  // and the flow freed), then the flow written back once the data term is freed.
  const size_t Pa = size_t(std::max(H, 0)) * (std::max(W, 0) + 24),
               Pb = size_t(std::max(Hb, 0)) * (std::max(Wb, 0) + 24),
               Pc = size_t(std::max(H, 0)) * (std::max(W, 0) + 48);
  const size_t search = 3 * Pa + Pb + 2 * Pa;
  if (o.var_iters <= 0) return sizeof(float) * (search + 2 * Pa);
  return sizeof(float) * std::max({search, Pa + Pb + 2 * Pa + 9 * Pc, 2 * Pa + 10 * Pc, 12 * Pc});
}

}  // namespace gocor
