// Layer operations of the official networks (nn.h).
#include "nn.h"

#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>

#include "gemm.h"
#include "parallel.h"
#include "simd.h"

namespace gocor {
namespace nn {
namespace {

// Columns of one im2col tile: about 4 MiB of float32 whatever the depth, a multiple of 16.
int tile_columns(int64_t depth, int64_t positions) {
  const int64_t cols =
      std::max<int64_t>(64, (int64_t(1) << 20) / std::max<int64_t>(depth, 1)) / 16 * 16;
  return static_cast<int>(std::min(cols, positions));
}

inline float activate(float v, Act a) {
  if (a == Act::Relu) return v > 0.f ? v : 0.f;
  if (a == Act::Leaky) return v > 0.f ? v : 0.1f * v;
  return v;
}

// dst[i] = act((src[i] + b) * a + s) (without batch norm: act(src[i] + b)), i < n, with vectors of
// the active SIMD level (the compiler left the leaky select scalar).
// One vector of the epilogue: act((v + b) * a + s), or act(v + b) without batch norm.
template <class T>
GOCOR_INLINE T bias_act_vec(T v, float b, float a, float s, bool bn, Act act) {
  v = bn ? (v + b) * a + s : v + b;
  if (act == Act::Relu) return v > T{} ? v : T{};
  if (act == Act::Leaky) return v > T{} ? v : 0.1f * v;
  return v;
}

template <class V>
GOCOR_INLINE void bias_act_v(const float* src, float* dst, int64_t n, float b, float a, float s,
                             bool bn, Act act) {
  using T = typename V::T;
  const auto f = [&](T v) { return bias_act_vec(v, b, a, s, bn, act); };
  int64_t i = 0;
  for (; i + V::W <= n; i += V::W) V::storeu(dst + i, f(V::loadu(src + i)));
  if (i < n)
    V::store_n(dst + i, f(V::load_n(src + i, static_cast<int>(n - i))), static_cast<int>(n - i));
}
using BiasActFn = void (*)(const float*, float*, int64_t, float, float, float, bool, Act);
GOCOR_KERNEL_AVX512 void bias_act_avx512(const float* src, float* dst, int64_t n, float b, float a,
                                         float s, bool bn, Act act) {
  bias_act_v<simd::Vec16>(src, dst, n, b, a, s, bn, act);
}
GOCOR_KERNEL_AVX2 void bias_act_avx2(const float* src, float* dst, int64_t n, float b, float a,
                                     float s, bool bn, Act act) {
  bias_act_v<simd::Vec8>(src, dst, n, b, a, s, bn, act);
}
GOCOR_KERNEL_PORTABLE void bias_act_portable(const float* src, float* dst, int64_t n, float b,
                                             float a, float s, bool bn, Act act) {
  bias_act_v<simd::Vec4>(src, dst, n, b, a, s, bn, act);
}

// The epilogue of output channel o over n values (src may be dst).
void bias_act(BiasActFn fn, const Conv& c, int64_t o, const float* src, float* dst, int64_t n) {
  const bool bn = !c.bn_scale.empty();
  fn(src, dst, n, c.bias[o], bn ? c.bn_scale[o] : 1.f, bn ? c.bn_shift[o] : 0.f, bn, c.act);
}
BiasActFn active_bias_act() {
  return simd::simd_select(bias_act_avx512, bias_act_avx2, bias_act_portable);
}

// out (c.out, P) <- act((out + bias) * bn_scale + bn_shift).
void epilogue(const Conv& c, float* out, int64_t P, int threads) {
  const BiasActFn fn = active_bias_act();
  parallel_for(c.out, threads, [&](int64_t o) { bias_act(fn, c, o, out + o * P, out + o * P, P); });
}

}  // namespace

void fold_batch_norm(Conv& c, const float* gamma, const float* beta, const float* mean,
                     const float* var) {
  c.bn_scale.resize(c.out);
  c.bn_shift.resize(c.out);
  for (int o = 0; o < c.out; ++o) {
    const float a = gamma[o] / std::sqrt(var[o] + 1e-5f);
    c.bn_scale[o] = a;
    c.bn_shift[o] = beta[o] - mean[o] * a;
  }
}

bool conv_uses_taps(const Conv& c) {
  // Few input channels make each tap's GEMM too shallow (its depth is c.in): im2col then.
  return c.stride == 1 && c.in >= 16 && 2 * c.pad == c.dil * (c.k - 1);
}

bool conv_uses_winograd(const Conv& c) {
  // Measured at 96x144 (thread CPU time, against the shifted views): 0.5-0.65x for 32-128 output
  // channels, 0.8x at dilations 2-8, 1.0-1.1x at dilation 16 (conv2d_cpu keeps the shifted views
  // there) and for 16 input channels; 0.5x for 2 (but conv2d_cpu runs those as direct loops).
  return conv_uses_taps(c) && c.k == 3;
}

namespace {

// Uninitialised float scratch (a convolution's padded input, im2col tiles, transposed-conv
// columns, the weight forms derived per call). From 2 MiB up: 2 MiB transparent huge pages (a
// hint), and two blocks per thread of at most kKeep bytes each are kept between calls, so a
// forward does not have the kernel clear fresh pages for every layer (that was 6% of PWC-Net);
// below 2 MiB the allocator's own reuse suffices.
class HugeFloats {
 public:
  explicit HugeFloats(size_t n) {
    const size_t bytes = n * sizeof(float);
    if (bytes < kHuge) {
      bytes_ = (bytes + 63) / 64 * 64;
      p_ = static_cast<float*>(::operator new(bytes_, std::align_val_t(64)));
      return;
    }
    bytes_ = (bytes + kHuge - 1) / kHuge * kHuge;
    // A free slot large enough, else the largest free one, grown.
    Slot* c = nullptr;
    for (Slot& s : cache().slots)
      if (!s.in_use &&
          (c == nullptr ||
           (c->bytes < bytes_ ? s.bytes > c->bytes : s.bytes >= bytes_ && s.bytes < c->bytes)))
        c = &s;
    if (bytes_ <= kKeep && c != nullptr) {
      if (c->bytes < bytes_) {
        c->reset();
        c->p = huge_alloc(bytes_);
        c->bytes = bytes_;
      }
      c->in_use = true;
      p_ = c->p;
      slot_ = c;
      return;
    }
    p_ = huge_alloc(bytes_);
  }
  ~HugeFloats() {
    if (slot_ != nullptr) {
      slot_->in_use = false;
    } else {
      ::operator delete(p_, bytes_, std::align_val_t(bytes_ >= kHuge ? kHuge : 64));
    }
  }
  HugeFloats(const HugeFloats&) = delete;
  HugeFloats& operator=(const HugeFloats&) = delete;
  // Frees this thread's kept blocks (none may be in use).
  static void release() {
    for (Slot& s : cache().slots) s.reset();
  }
  float* data() const { return p_; }
  float& operator[](size_t i) const { return p_[i]; }

 private:
  static constexpr size_t kHuge = size_t{2} << 20;
  static constexpr size_t kKeep = size_t{32} << 20;
  static float* huge_alloc(size_t bytes) {
    auto* p = static_cast<float*>(::operator new(bytes, std::align_val_t(kHuge)));
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE);
#endif
    return p;
  }
  struct Slot {
    float* p = nullptr;
    size_t bytes = 0;
    bool in_use = false;
    void reset() {
      if (p != nullptr) ::operator delete(p, bytes, std::align_val_t(kHuge));
      p = nullptr;
      bytes = 0;
    }
  };
  struct Cache {
    Slot slots[2];  // a layer's scratch and its derived weight
    ~Cache() {
      for (Slot& s : slots) s.reset();
    }
  };
  static Cache& cache() {
    static thread_local Cache c;
    return c;
  }
  size_t bytes_ = 0;
  float* p_ = nullptr;
  Slot* slot_ = nullptr;
};

// The scratch of the paths that copy their input (the Winograd permutation, the direct loops'
// padding) is made for bands of rows of about this size, not for the whole input (at PWC-Net's
// level 2 the whole input is 31 MB). Each band copies a few rows of overlap more.
constexpr size_t kBandBytes = size_t{8} << 20;

// Per-thread buffers of the GEMM paths (kept between the parallel tasks and layers of a forward).
struct ThreadBuffers {
  std::vector<float> block;             // conv2d_shifted: a tile's output block
  std::vector<float> vbuf, mbuf, ybuf;  // Winograd: transformed inputs, GEMM results, outputs
};
ThreadBuffers& thread_buffers() {
  static thread_local ThreadBuffers b;
  return b;
}

// in (C, H, W) -> dst (C, H + 2p, W + 2p) zero-padded, then `tail` zeros; only the rows of
// image rows y0 - p .. y1 + p - 1 (zero outside the image): dst (C, y1 - y0 + 2p, W + 2p). Written
// once (the image rows copied, only the border zeroed), in huge pages when granted.
void pad_planes(const float* in, int C, int H, int W, int p, int y0, int y1, size_t tail,
                float* dst_all, int threads) {
  const int Wp = W + 2 * p, rows = y1 - y0 + 2 * p;
  const int64_t plane = int64_t(rows) * Wp;
  parallel_for(C, threads, [&](int64_t i) {
    for (int r = 0; r < rows; ++r) {
      float* row = dst_all + i * plane + int64_t(r) * Wp;
      const int y = y0 - p + r;
      if (y < 0 || y >= H) {
        std::memset(row, 0, sizeof(float) * Wp);
        continue;
      }
      std::memset(row, 0, sizeof(float) * p);
      std::memcpy(row + p, in + (i * H + y) * W, sizeof(float) * W);
      std::memset(row + p + W, 0, sizeof(float) * p);
    }
  });
  std::memset(dst_all + size_t(C) * plane, 0, sizeof(float) * tail);
}

// Layers of one or two output channels (the flow predictions), stride 1: direct loops, each output
// vector's sum over channels and taps in registers. The GEMM paths spend most of their 6-row
// micro-tiles on padding for them and pack every input value once per tap (or per transform).
// Output row y from the padded planes (row stride Wp, plane stride `plane`), w (in, k*k, NO):
// row[o][x] = sum over channels and taps, x < W; groups of 4 vectors read up to 4 W_V - 1 floats
// past a row's end (the caller's tail).
template <class V, int NO>
GOCOR_INLINE void conv_few_out_row_v(const float* padded, int64_t plane, int Wp, int cin, int k,
                                     int d, const float* w, int W, float* const* row) {
  using T = typename V::T;
  constexpr int G = 4;
  const int kk = k * k;
  // Channels summed in blocks of 32 (chains of 288 terms, as long as the GEMMs'), then the blocks:
  // one chain over every channel and tap was 8x less accurate on 531 channels.
  constexpr int kBlock = 32;
  for (int x0 = 0; x0 < W; x0 += G * V::W) {
    T acc[NO][G];
    for (int o = 0; o < NO; ++o)
      for (int v = 0; v < G; ++v) acc[o][v] = V::zero();
    for (int i0 = 0; i0 < cin; i0 += kBlock) {
      T blk[NO][G];
      for (int o = 0; o < NO; ++o)
        for (int v = 0; v < G; ++v) blk[o][v] = V::zero();
      for (int i = i0; i < std::min(cin, i0 + kBlock); ++i) {
        const float* wi = w + int64_t(i) * kk * NO;
        for (int ky = 0; ky < k; ++ky) {
          const float* r = padded + i * plane + int64_t(ky) * d * Wp + x0;
          for (int kx = 0; kx < k; ++kx) {
            const float* wt = wi + (ky * k + kx) * NO;
            for (int v = 0; v < G; ++v) {
              const T xv = V::loadu(r + kx * d + v * V::W);
              for (int o = 0; o < NO; ++o) blk[o][v] = V::fma(wt[o], xv, blk[o][v]);
            }
          }
        }
      }
      for (int o = 0; o < NO; ++o)
        for (int v = 0; v < G; ++v) acc[o][v] = acc[o][v] + blk[o][v];
    }
    for (int v = 0; v < G; ++v) {
      const int n = std::min(V::W, W - x0 - v * V::W);
      if (n <= 0) break;
      for (int o = 0; o < NO; ++o) {
        if (n == V::W) {
          V::storeu(row[o] + x0 + v * V::W, acc[o][v]);
        } else {
          V::store_n(row[o] + x0 + v * V::W, acc[o][v], n);
        }
      }
    }
  }
}
using FewOutRowFn = void (*)(const float*, int64_t, int, int, int, int, const float*, int,
                             float* const*);
#define GOCOR_FEW_OUT_ENTRY(ATTR, NAME, VEC, NO)                                               \
  ATTR void NAME(const float* p, int64_t plane, int Wp, int cin, int k, int d, const float* w, \
                 int W, float* const* row) {                                                   \
    conv_few_out_row_v<simd::VEC, NO>(p, plane, Wp, cin, k, d, w, W, row);                     \
  }
GOCOR_FEW_OUT_ENTRY(GOCOR_KERNEL_AVX512, few_out1_avx512, Vec16, 1)
GOCOR_FEW_OUT_ENTRY(GOCOR_KERNEL_AVX512, few_out2_avx512, Vec16, 2)
GOCOR_FEW_OUT_ENTRY(GOCOR_KERNEL_AVX2, few_out1_avx2, Vec8, 1)
GOCOR_FEW_OUT_ENTRY(GOCOR_KERNEL_AVX2, few_out2_avx2, Vec8, 2)
GOCOR_FEW_OUT_ENTRY(GOCOR_KERNEL_PORTABLE, few_out1_portable, Vec4, 1)
GOCOR_FEW_OUT_ENTRY(GOCOR_KERNEL_PORTABLE, few_out2_portable, Vec4, 2)
#undef GOCOR_FEW_OUT_ENTRY

// Stride 1, padding = dilation (k-1)/2, c.out <= 2: out (c.out, H, W).
void conv2d_few_out(const Conv& c, const float* in, int H, int W, float* out, int threads) {
  const int p = c.pad, Wp = W + 2 * p, kk = c.k * c.k;
  std::vector<float> w(size_t(c.in) * kk * c.out);
  for (int o = 0; o < c.out; ++o)
    for (int i = 0; i < c.in; ++i)
      for (int t = 0; t < kk; ++t)
        w[(size_t(i) * kk + t) * c.out + o] = c.weight[(size_t(o) * c.in + i) * kk + t];
  const FewOutRowFn fn = c.out == 1
                             ? simd::simd_select(few_out1_avx512, few_out1_avx2, few_out1_portable)
                             : simd::simd_select(few_out2_avx512, few_out2_avx2, few_out2_portable);
  const BiasActFn epi = active_bias_act();
  // Bands of output rows whose padded input rows take about kBandBytes (at least 2 rows per
  // thread).
  const size_t tail = 2 * size_t(p) + 64;  // a row group reads up to 63 floats past the row
  const int band = std::clamp<int>(
      static_cast<int>(kBandBytes / sizeof(float) / (size_t(c.in) * Wp)) - 2 * p, 2 * threads, H);
  HugeFloats padded(size_t(c.in) * (band + 2 * p) * Wp + tail);
  for (int y0 = 0; y0 < H; y0 += band) {
    const int y1 = std::min(H, y0 + band);
    const int64_t plane = int64_t(y1 - y0 + 2 * p) * Wp;
    pad_planes(in, c.in, H, W, p, y0, y1, tail, padded.data(), threads);
    parallel_for(y1 - y0, threads, [&](int64_t r) {
      const int64_t y = y0 + r;
      float* rows[2] = {out + y * W, out + (int64_t(H) + y) * W};
      fn(padded.data() + r * Wp, plane, Wp, c.in, c.k, c.dil, w.data(), W, rows);
      for (int o = 0; o < c.out; ++o) bias_act(epi, c, o, rows[o], rows[o], W);
    });
  }
}

// Stride 1, output size = input size: out_wide (out, H*Wp) = sum over taps (ky, kx) of
// taps[t] (out, in) x padded (in, H*Wp) shifted by (ky*d, kx*d); the Wp - W extra columns of each
// row are discarded by the epilogue.
void conv2d_shifted(const Conv& c, const float* in, int H, int W, float* out, int threads) {
  const int p = c.pad, d = c.dil, Hp = H + 2 * p, Wp = W + 2 * p;
  const int64_t plane = int64_t(Hp) * Wp, n = int64_t(H) * Wp;
  // Written once (the image rows copied, only the border zeroed), in huge pages when granted.
  const size_t tail = 2 * size_t(p) * c.k;  // the last views read up to 2p past the last plane
  HugeFloats padded(size_t(c.in) * plane + tail);
  pad_planes(in, c.in, H, W, p, 0, H, tail, padded.data(), threads);
  // The weight per tap (k*k, out, in), each tap's A matrix of the GEMMs.
  const int kk = c.k * c.k;
  HugeFloats taps(size_t(kk) * c.out * c.in);
  parallel_for(c.out, threads, [&](int64_t o) {
    for (int i = 0; i < c.in; ++i)
      for (int t = 0; t < kk; ++t)
        taps[(size_t(t) * c.out + o) * c.in + i] = c.weight[(size_t(o) * c.in + i) * kk + t];
  });
  // Column tiles whose output block (out x nb) stays in L2 across the taps' accumulations; each
  // tile's epilogue writes its columns of the real (W-wide) rows.
  const int64_t nb = std::max<int64_t>(256, (int64_t(96) << 10) / std::max(c.out, 1)) / 64 * 64;
  // Input channels per block: as even as possible, at most 128 (measured at 565 -> 128 channels,
  // 96x144: 64, 128, 192 and all gave 182-187, 170-177, 182-183 and 204-206 ms).
  const int nblocks = (c.in + 127) / 128, cb = (c.in + nblocks - 1) / nblocks;
  const BiasActFn fn = active_bias_act();
  parallel_for((n + nb - 1) / nb, threads, [&](int64_t tile) {
    std::vector<float>& block = thread_buffers().block;
    block.resize(size_t(c.out) * nb);
    const int64_t j0 = tile * nb, j1 = std::min(n, j0 + nb), m = j1 - j0;
    // Channel blocks outermost: a block's rows of the tile's input stay in L2 across the taps
    // (all channels at once did not fit, and packing each tap's view then read from L3).
    for (int c0 = 0; c0 < c.in; c0 += cb) {
      const int cn = std::min(cb, c.in - c0);
      for (int t = 0; t < c.k * c.k; ++t) {
        const int ky = t / c.k, kx = t % c.k;
        gocor_detail::gemm(c.out, static_cast<int>(m), cn,
                           taps.data() + size_t(t) * c.out * c.in + c0, c.in,
                           padded.data() + c0 * plane + int64_t(ky) * d * Wp + int64_t(kx) * d + j0,
                           plane, false, block.data(), nb, t > 0 || c0 > 0, 1);
      }
    }
    for (int64_t j = j0; j < j1;) {
      // The run of row y = j / Wp from column j % Wp to the row's end or the tile's.
      const int64_t y = j / Wp, x0 = j % Wp, x1 = std::min<int64_t>(Wp, x0 + (j1 - j));
      if (x0 < W) {
        for (int o = 0; o < c.out; ++o)
          bias_act(fn, c, o, block.data() + int64_t(o) * nb + (j - j0),
                   out + (int64_t(o) * H + y) * W + x0, std::min<int64_t>(x1, W) - x0);
      }
      j += x1 - x0;
    }
  });
}

// ---- Winograd F(2x2, 3x3) -----------------------------------------------------------------------
// Minimal filtering (Lavin & Gray 2016): a 2x2 block of outputs from a 4x4 block of inputs with 16
// products instead of 36, Y = A^T [(G g G^T) . (B^T d B)] A, so the GEMMs do 4 multiply-adds per
// output and input channel instead of 9. A dilated convolution is a plain one on each of its d x d
// sub-grids (the pixels with one (y mod d, x mod d)): tiles lie on those, their outputs and inputs
// d apart.
//
// Input rows are permuted once (wino_permute) so that the four input columns of consecutive tiles
// are contiguous: row y's copy holds, for each residue r < 2d, the samples x = r + 2d j for
// j = -1 .. jn (zero outside the image), `seg` floats per residue. A tile of column residue rx < d
// and index j reads the columns rx + d (2j - 1 .. 2j + 2): A[j], A[j+1] of residue rx and B[j-1],
// B[j] of residue rx + d. A unit is one row of tiles (row residue ry, tile row ty); its tiles run
// over rx, ceil(Ws(rx) / 2) each, the same for every unit.
struct WinoGrid {
  int H, W, d, dx, jn, seg, row, per_unit;
  std::vector<int> rx_first;          // (dx + 1): first tile of each column residue in a unit
  std::vector<int> unit_ry, unit_ty;  // per unit
  int64_t tiles;
  WinoGrid(int H_, int W_, int d_) : H(H_), W(W_), d(d_) {
    dx = std::min(d, W);
    jn = (W + 2 * d - 1) / (2 * d);
    seg = jn + 2;
    row = 2 * d * seg;
    rx_first.assign(dx + 1, 0);
    for (int rx = 0; rx < dx; ++rx) rx_first[rx + 1] = rx_first[rx] + (sub(W, rx) + 1) / 2;
    per_unit = rx_first[dx];
    for (int ry = 0; ry < std::min(d, H); ++ry)
      for (int ty = 0; ty < (sub(H, ry) + 1) / 2; ++ty) {
        unit_ry.push_back(ry);
        unit_ty.push_back(ty);
      }
    tiles = int64_t(unit_ry.size()) * per_unit;
  }
  // Size of the sub-grid of residue r along an axis of n pixels.
  int sub(int n, int r) const { return (n - r + d - 1) / d; }
};

// One channel's 16 transformed values of n consecutive tiles, v[xi * vs + i] for tile i (xi =
// 4a + b, the position in the 4x4 transformed tile): the four input rows p[k] (each pointing at
// j = 0 of its permuted row) read at A = a_off + i and B = b_off + i. B^T = [1 0 -1 0; 0 1 1 0;
// 0 -1 1 0; 0 1 0 -1] on the rows, then on the columns.
template <class V>
GOCOR_INLINE void wino_input_v(const float* const* p, int64_t a_off, int64_t b_off, int n, float* v,
                               int64_t vs) {
  using T = typename V::T;
  for (int i = 0; i < n; i += V::W) {
    const int m = std::min(V::W, n - i);
    const auto ld = [&](const float* q) { return m == V::W ? V::loadu(q) : V::load_n(q, m); };
    // Columns 0..3 of the tile: B[j-1], A[j], B[j], A[j+1].
    T c[4][4];
    for (int k = 0; k < 4; ++k) {
      c[k][0] = ld(p[k] + b_off + i - 1);
      c[k][1] = ld(p[k] + a_off + i);
      c[k][2] = ld(p[k] + b_off + i);
      c[k][3] = ld(p[k] + a_off + i + 1);
    }
    T t[4][4];
    for (int x = 0; x < 4; ++x) {
      t[0][x] = c[0][x] - c[2][x];
      t[1][x] = c[1][x] + c[2][x];
      t[2][x] = c[2][x] - c[1][x];
      t[3][x] = c[1][x] - c[3][x];
    }
    for (int a = 0; a < 4; ++a) {
      const T r[4] = {t[a][0] - t[a][2], t[a][1] + t[a][2], t[a][2] - t[a][1], t[a][1] - t[a][3]};
      for (int b = 0; b < 4; ++b) {
        float* q = v + (4 * a + b) * vs + i;
        if (m == V::W) {
          V::storeu(q, r[b]);
        } else {
          V::store_n(q, r[b], m);
        }
      }
    }
  }
}

// n tiles' 2x2 outputs from their 16 GEMM results m[xi * ms + i] (A^T = [1 1 1 0; 0 1 -1 -1] on
// both sides), with the epilogue, through y (4 * n scratch), into the output rows o[0], o[1]
// (o[1] null: the tiles' second row is outside the sub-grid): tile i's columns at 2 d i and
// 2 d i + d, the second only for i < full.
template <class V>
GOCOR_INLINE void wino_output_v(const float* mm, int64_t ms, int n, float bias, float sc, float sh,
                                bool bn, Act act, float* y, float* const* o, int d, int full) {
  using T = typename V::T;
  const auto f = [&](T v) { return bias_act_vec(v, bias, sc, sh, bn, act); };
  for (int i = 0; i < n; i += V::W) {
    const int m = std::min(V::W, n - i);
    T r[4][4];
    for (int xi = 0; xi < 16; ++xi)
      r[xi / 4][xi % 4] = m == V::W ? V::loadu(mm + xi * ms + i) : V::load_n(mm + xi * ms + i, m);
    T s[2][4];
    for (int b = 0; b < 4; ++b) {
      s[0][b] = r[0][b] + r[1][b] + r[2][b];
      s[1][b] = r[1][b] - r[2][b] - r[3][b];
    }
    for (int a = 0; a < 2; ++a) {
      const T t[2] = {f(s[a][0] + s[a][1] + s[a][2]), f(s[a][1] - s[a][2] - s[a][3])};
      for (int b = 0; b < 2; ++b) {
        if (m == V::W) {
          V::storeu(y + (2 * a + b) * n + i, t[b]);
        } else {
          V::store_n(y + (2 * a + b) * n + i, t[b], m);
        }
      }
    }
  }
  for (int a = 0; a < 2 && o[a] != nullptr; ++a) {
    float* row = o[a];
    const float* y0 = y + 2 * a * n;
    const float* y1 = y0 + n;
    if (d == 1) {
      for (int i = 0; i < full; ++i) {
        row[2 * i] = y0[i];
        row[2 * i + 1] = y1[i];
      }
    } else {
      for (int i = 0; i < full; ++i) {
        row[int64_t(2) * d * i] = y0[i];
        row[int64_t(2) * d * i + d] = y1[i];
      }
    }
    for (int i = full; i < n; ++i) row[int64_t(2) * d * i] = y0[i];
  }
}

// One input row (W) -> its permuted copy (see WinoGrid): for each residue r < 2d, a zero (j = -1),
// the samples x = r + 2d j inside the row, zeros up to j = jn. Plain loops, vectorised by the
// compiler in each level's entry (stride-2 loads for d = 1).
template <class V>
GOCOR_INLINE void wino_permute_v(const float* src, int W, int d, int jn, int seg, float* dst) {
  for (int r = 0; r < 2 * d; ++r, dst += seg) {
    const int nv = r < W ? (W - r + 2 * d - 1) / (2 * d) : 0;
    const float* s = src + r;
    dst[0] = 0.f;
    if (d == 1) {
      for (int j = 0; j < nv; ++j) dst[1 + j] = s[2 * j];
    } else {
      for (int j = 0; j < nv; ++j) dst[1 + j] = s[int64_t(2) * d * j];
    }
    for (int j = nv; j <= jn; ++j) dst[1 + j] = 0.f;
  }
}

using WinoPermuteFn = void (*)(const float*, int, int, int, int, float*);
using WinoInputFn = void (*)(const float* const*, int64_t, int64_t, int, float*, int64_t);
using WinoOutputFn = void (*)(const float*, int64_t, int, float, float, float, bool, Act, float*,
                              float* const*, int, int);
GOCOR_KERNEL_AVX512 void wino_permute_avx512(const float* s, int W, int d, int jn, int seg,
                                             float* o) {
  wino_permute_v<simd::Vec16>(s, W, d, jn, seg, o);
}
GOCOR_KERNEL_AVX2 void wino_permute_avx2(const float* s, int W, int d, int jn, int seg, float* o) {
  wino_permute_v<simd::Vec8>(s, W, d, jn, seg, o);
}
GOCOR_KERNEL_PORTABLE void wino_permute_portable(const float* s, int W, int d, int jn, int seg,
                                                 float* o) {
  wino_permute_v<simd::Vec4>(s, W, d, jn, seg, o);
}
GOCOR_KERNEL_AVX512 void wino_input_avx512(const float* const* p, int64_t a, int64_t b, int n,
                                           float* v, int64_t vs) {
  wino_input_v<simd::Vec16>(p, a, b, n, v, vs);
}
GOCOR_KERNEL_AVX2 void wino_input_avx2(const float* const* p, int64_t a, int64_t b, int n, float* v,
                                       int64_t vs) {
  wino_input_v<simd::Vec8>(p, a, b, n, v, vs);
}
GOCOR_KERNEL_PORTABLE void wino_input_portable(const float* const* p, int64_t a, int64_t b, int n,
                                               float* v, int64_t vs) {
  wino_input_v<simd::Vec4>(p, a, b, n, v, vs);
}
GOCOR_KERNEL_AVX512 void wino_output_avx512(const float* m, int64_t ms, int n, float b, float a,
                                            float s, bool bn, Act act, float* y, float* const* o,
                                            int d, int full) {
  wino_output_v<simd::Vec16>(m, ms, n, b, a, s, bn, act, y, o, d, full);
}
GOCOR_KERNEL_AVX2 void wino_output_avx2(const float* m, int64_t ms, int n, float b, float a,
                                        float s, bool bn, Act act, float* y, float* const* o, int d,
                                        int full) {
  wino_output_v<simd::Vec8>(m, ms, n, b, a, s, bn, act, y, o, d, full);
}
GOCOR_KERNEL_PORTABLE void wino_output_portable(const float* m, int64_t ms, int n, float b, float a,
                                                float s, bool bn, Act act, float* y,
                                                float* const* o, int d, int full) {
  wino_output_v<simd::Vec4>(m, ms, n, b, a, s, bn, act, y, o, d, full);
}

// Input channels i0 .. i1 - 1 of the Winograd weight: weight (cout, cin, 3, 3) -> u (16, cin,
// cout), U = G g G^T per (output, input) channel pair with G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2;
// 0 0 1], in float64, rounded once. Per input channel, blocks of 16 output channels: the
// arithmetic across the block (loops the compiler vectorises with the entry's vectors), then 16
// output rows written in order (u's rows are written sequentially, each cache line whole).
GOCOR_INLINE void wino_weight_rows(const float* weight, int cin, int cout, int i0, int i1,
                                   float* u_all) {
  constexpr int kOb = 16;
  for (int i = i0; i < i1; ++i)
    for (int o0 = 0; o0 < cout; o0 += kOb) {
      const int on = std::min(kOb, cout - o0);
      double g[9][kOb];
      for (int l = 0; l < kOb; ++l) {
        const float* w = weight + (size_t(o0 + std::min(l, on - 1)) * cin + i) * 9;
        for (int k = 0; k < 9; ++k) g[k][l] = w[k];  // lanes past `on` repeat the last channel
        // The rows are read cout apart, too many streams for the hardware prefetcher: this
        // row's line 8 input channels ahead.
        __builtin_prefetch(w + 72);
      }
      double t[4][3][kOb];
      for (int x = 0; x < 3; ++x)
        for (int l = 0; l < kOb; ++l) {
          t[0][x][l] = g[x][l];
          t[1][x][l] = 0.5 * (g[x][l] + g[3 + x][l] + g[6 + x][l]);
          t[2][x][l] = 0.5 * (g[x][l] - g[3 + x][l] + g[6 + x][l]);
          t[3][x][l] = g[6 + x][l];
        }
      float u[16][kOb];
      for (int a = 0; a < 4; ++a)
        for (int l = 0; l < kOb; ++l) {
          u[4 * a][l] = static_cast<float>(t[a][0][l]);
          u[4 * a + 1][l] = static_cast<float>(0.5 * (t[a][0][l] + t[a][1][l] + t[a][2][l]));
          u[4 * a + 2][l] = static_cast<float>(0.5 * (t[a][0][l] - t[a][1][l] + t[a][2][l]));
          u[4 * a + 3][l] = static_cast<float>(t[a][2][l]);
        }
      for (int xi = 0; xi < 16; ++xi) {
        float* dst = u_all + (size_t(xi) * cin + i) * cout + o0;
        if (on == kOb) {
          std::memcpy(dst, u[xi], sizeof(u[xi]));
        } else {
          std::memcpy(dst, u[xi], sizeof(float) * on);
        }
      }
    }
}
using WinoWeightFn = void (*)(const float*, int, int, int, int, float*);
GOCOR_KERNEL_AVX512 void wino_weight_avx512(const float* w, int cin, int cout, int i0, int i1,
                                            float* u) {
  wino_weight_rows(w, cin, cout, i0, i1, u);
}
GOCOR_KERNEL_AVX2 void wino_weight_avx2(const float* w, int cin, int cout, int i0, int i1,
                                        float* u) {
  wino_weight_rows(w, cin, cout, i0, i1, u);
}
GOCOR_KERNEL_PORTABLE void wino_weight_portable(const float* w, int cin, int cout, int i0, int i1,
                                                float* u) {
  wino_weight_rows(w, cin, cout, i0, i1, u);
}

// c.weight (out, in, 3, 3) -> u (16, in, out), threads over the input channels.
void winograd_weight(const Conv& c, float* u_all, int threads) {
  const WinoWeightFn fn =
      simd::simd_select(wino_weight_avx512, wino_weight_avx2, wino_weight_portable);
  parallel_chunks(c.in, threads, 8, [&](int64_t i0, int64_t i1) {
    fn(c.weight.data(), c.in, c.out, static_cast<int>(i0), static_cast<int>(i1), u_all);
  });
}

void conv2d_winograd_band(const Conv& c, const WinoGrid& g, const float* wino, const float* perm,
                          int s_lo, const float* zero_row, int64_t T0, int64_t T1, int cb,
                          int64_t nb, WinoInputFn fin, WinoOutputFn fout, float* out, int threads);

// Stride 1, k = 3, padding = dilation: out (c.out, H, W) from the weight G g G^T (16, in, out).
// Threads take blocks of up to nb tiles; a block's transformed input (16, cb, nb) is made one
// channel block at a time and multiplied into its GEMM results (16, out, nb), which the output
// transform turns into output pixels.
void conv2d_winograd(const Conv& c, const float* in, int H, int W, float* out, int threads) {
  const WinoGrid g(H, W, c.dil);
  const int d = g.d;
  HugeFloats wino(size_t(16) * c.in * c.out);
  winograd_weight(c, wino.data(), threads);
  // Channels per block: as even as possible, at most 128; tiles per block: the block's transformed
  // input about 1 MiB (it is written, then packed by each of the 16 GEMMs).
  const int nblocks = (c.in + 127) / 128, cb = (c.in + nblocks - 1) / nblocks;
  const int64_t nb = std::clamp<int64_t>(int64_t(16384) / cb / 64 * 64, 64, 512);
  const WinoInputFn fin =
      simd::simd_select(wino_input_avx512, wino_input_avx2, wino_input_portable);
  const WinoOutputFn fout =
      simd::simd_select(wino_output_avx512, wino_output_avx2, wino_output_portable);
  const WinoPermuteFn fperm =
      simd::simd_select(wino_permute_avx512, wino_permute_avx2, wino_permute_portable);
  // Bands of units (one row residue ry, consecutive tile rows ty): a band's input rows (sub-grid
  // rows s = 2 ty0 - 1 .. 2 ty1 + 2) are permuted (see WinoGrid) into a scratch of about
  // kBandBytes whatever the image, row-major over (s, channel) so that a unit's four rows stream
  // through the channels; then one zero row. At least two tile blocks per thread per band.
  const size_t srow = size_t(c.in) * g.row;  // floats of one permuted sub-grid row
  const int64_t min_units = (2 * threads * nb + g.per_unit - 1) / g.per_unit;
  const int band_units = static_cast<int>(std::clamp<int64_t>(
      std::max<int64_t>(int64_t(kBandBytes / sizeof(float) / srow) / 2 - 1, min_units), 1,
      (g.sub(H, 0) + 1) / 2));
  const int band_rows = std::min(2 * band_units + 2, g.sub(H, 0));
  HugeFloats perm(srow * band_rows + g.row);
  const float* zero_row = perm.data() + srow * band_rows;
  std::memset(perm.data() + srow * band_rows, 0, sizeof(float) * g.row);
  const int64_t units = int64_t(g.unit_ry.size());
  for (int64_t ua = 0; ua < units;) {
    const int ry = g.unit_ry[ua], ty0 = g.unit_ty[ua];
    const int64_t ub = ua + std::min(band_units, (g.sub(H, ry) + 1) / 2 - ty0);
    const int s_lo = std::max(0, 2 * ty0 - 1),
              s_hi = std::min(g.sub(H, ry), 2 * (ty0 + int(ub - ua) - 1) + 3);
    parallel_for(c.in, threads, [&](int64_t i) {
      for (int s = s_lo; s < s_hi; ++s)
        fperm(in + (i * H + ry + int64_t(d) * s) * W, W, d, g.jn, g.seg,
              perm.data() + (size_t(s - s_lo) * c.in + i) * g.row);
    });
    conv2d_winograd_band(c, g, wino.data(), perm.data(), s_lo, zero_row, ua * g.per_unit,
                         ub * g.per_unit, cb, nb, fin, fout, out, threads);
    ua = ub;
  }
}

// The tiles [T0, T1) of a band whose permuted rows from s_lo are in perm.
void conv2d_winograd_band(const Conv& c, const WinoGrid& g, const float* wino, const float* perm,
                          int s_lo, const float* zero_row, int64_t T0, int64_t T1, int cb,
                          int64_t nb, WinoInputFn fin, WinoOutputFn fout, float* out, int threads) {
  const int H = g.H, W = g.W, d = g.d;
  const bool bn = !c.bn_scale.empty();
  // The band's tiles in equal blocks of at most nb (a last block of a few tiles ran its GEMMs
  // at a fraction of their speed).
  const int64_t nblk = (T1 - T0 + nb - 1) / nb, step = (T1 - T0 + nblk - 1) / nblk;
  parallel_for(nblk, threads, [&](int64_t blk) {
    ThreadBuffers& tb = thread_buffers();
    std::vector<float>&vbuf_tls = tb.vbuf, &mbuf_tls = tb.mbuf, &ybuf_tls = tb.ybuf;
    vbuf_tls.resize(size_t(16) * cb * nb);
    mbuf_tls.resize(size_t(16) * c.out * nb);
    ybuf_tls.resize(size_t(4) * g.per_unit);
    // One TLS look-up each, not one per use.
    float* const vbuf = vbuf_tls.data();
    float* const mbuf = mbuf_tls.data();
    float* const ybuf = ybuf_tls.data();
    const int64_t t0 = T0 + blk * step, t1 = std::min(T1, t0 + step), n = t1 - t0;
    const int64_t u0 = t0 / g.per_unit, u1 = (t1 - 1) / g.per_unit + 1;
    for (int c0 = 0; c0 < c.in; c0 += cb) {
      const int cn = std::min(cb, c.in - c0);
      for (int64_t u = u0; u < u1; ++u) {
        const int ry = g.unit_ry[u], ty = g.unit_ty[u];
        const int64_t base = u * g.per_unit;
        const int k0 = static_cast<int>(std::max<int64_t>(t0 - base, 0)),
                  k1 = static_cast<int>(std::min<int64_t>(t1 - base, g.per_unit));
        for (int ci = 0; ci < cn; ++ci) {
          const float* p[4];
          for (int k = 0; k < 4; ++k) {
            const int s = 2 * ty + k - 1, y = ry + d * s;
            p[k] =
                (s >= 0 && y < H ? perm + (int64_t(s - s_lo) * c.in + c0 + ci) * g.row : zero_row) +
                1;
          }
          for (int rx = 0; rx < g.dx; ++rx) {
            const int ka = std::max(k0, g.rx_first[rx]), kb = std::min(k1, g.rx_first[rx + 1]);
            if (ka >= kb) continue;
            const int j = ka - g.rx_first[rx];
            fin(p, int64_t(rx) * g.seg + j, int64_t(rx + d) * g.seg + j, kb - ka,
                vbuf + int64_t(ci) * nb + (base + ka - t0), int64_t(cb) * nb);
          }
        }
      }
      // The weights as A^T (in, out): the GEMM reads them in place, unpacked.
      for (int xi = 0; xi < 16; ++xi)
        gocor_detail::gemm(gocor_detail::GemmArgs{c.out, static_cast<int>(n), cn,
                                                  wino + (size_t(xi) * c.in + c0) * c.out, c.out,
                                                  true, vbuf + size_t(xi) * cb * nb, nb, false,
                                                  mbuf + size_t(xi) * c.out * nb, nb, c0 > 0},
                           1);
    }
    // Output transform, per unit and column residue: rows ry + d (2 ty + a), columns
    // rx + d (2 j + b), where inside the sub-grid.
    for (int64_t u = u0; u < u1; ++u) {
      const int ry = g.unit_ry[u], ty = g.unit_ty[u];
      const int64_t base = u * g.per_unit;
      const int k0 = static_cast<int>(std::max<int64_t>(t0 - base, 0)),
                k1 = static_cast<int>(std::min<int64_t>(t1 - base, g.per_unit));
      const int rows = std::min(2, g.sub(H, ry) - 2 * ty);
      for (int rx = 0; rx < g.dx; ++rx) {
        const int ka = std::max(k0, g.rx_first[rx]), kb = std::min(k1, g.rx_first[rx + 1]);
        if (ka >= kb) continue;
        const int nt = kb - ka, j0 = ka - g.rx_first[rx], ws = g.sub(W, rx);
        const int full = std::clamp(ws / 2 - j0, 0, nt);
        for (int o = 0; o < c.out; ++o) {
          float* orow[2] = {nullptr, nullptr};
          for (int a = 0; a < rows; ++a)
            orow[a] = out + (int64_t(o) * H + ry + d * (2 * ty + a)) * W + rx + int64_t(2) * d * j0;
          fout(mbuf + int64_t(o) * nb + (base + ka - t0), int64_t(c.out) * nb, nt, c.bias[o],
               bn ? c.bn_scale[o] : 1.f, bn ? c.bn_shift[o] : 0.f, bn, c.act, ybuf, orow, d, full);
        }
      }
    }
  });
}

}  // namespace

void release_thread_scratch() {
  HugeFloats::release();
  ThreadBuffers& b = thread_buffers();
  std::vector<float>().swap(b.block);
  std::vector<float>().swap(b.vbuf);
  std::vector<float>().swap(b.mbuf);
  std::vector<float>().swap(b.ybuf);
}

void set_deconv_weight(Deconv& d, const float* weight) {
  d.weight_t.assign(size_t(d.out) * 16 * d.in, 0.f);
  for (int i = 0; i < d.in; ++i)
    for (int j = 0; j < d.out * 16; ++j)
      d.weight_t[size_t(j) * d.in + i] = weight[size_t(i) * d.out * 16 + j];
}

namespace {

// Any layer: a 1x1 layer as one GEMM, others on im2col column tiles.
void conv2d_im2col(const Conv& c, const float* in, int H, int W, float* out, int threads) {
  const int Ho = conv_out_size(H, c.k, c.stride, c.pad, c.dil),
            Wo = conv_out_size(W, c.k, c.stride, c.pad, c.dil);
  const int64_t P = int64_t(Ho) * Wo, K = int64_t(c.in) * c.k * c.k;
  if (c.k == 1 && c.stride == 1 && c.pad == 0) {
    gocor_detail::gemm(c.out, static_cast<int>(P), static_cast<int>(K), c.weight.data(), K, in, P,
                       false, out, P, false, threads);
    epilogue(c, out, P, threads);
    return;
  }
  const int nb = tile_columns(K, P);
  HugeFloats col(size_t(K) * nb);  // every element written before it is read
  for (int64_t p0 = 0; p0 < P; p0 += nb) {
    const int n = static_cast<int>(std::min<int64_t>(nb, P - p0));
    // Row r = (ci, ky, kx) of the tile: the input sample of each output position p0 .. p0+n-1.
    parallel_chunks(K, threads, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int ci = static_cast<int>(r / (c.k * c.k)), ky = static_cast<int>(r / c.k % c.k),
                  kx = static_cast<int>(r % c.k);
        const float* src = in + int64_t(ci) * H * W;
        float* dst = col.data() + r * n;
        int64_t p = p0;
        while (p < p0 + n) {
          const int oy = static_cast<int>(p / Wo), ox0 = static_cast<int>(p % Wo);
          const int ox1 = static_cast<int>(std::min<int64_t>(Wo, ox0 + (p0 + n - p)));
          const int iy = oy * c.stride - c.pad + ky * c.dil;
          float* d = dst + (p - p0);
          if (iy < 0 || iy >= H) {
            std::fill(d, d + (ox1 - ox0), 0.f);
          } else {
            // ix = ox * stride + off lies inside [0, W) for ox in [lo, hi): zeros, a copy, zeros.
            const float* srow = src + int64_t(iy) * W;
            const int off = kx * c.dil - c.pad;
            const int lo = std::clamp(off < 0 ? (-off + c.stride - 1) / c.stride : 0, ox0, ox1);
            const int hi =
                std::clamp(W - off > 0 ? (W - off + c.stride - 1) / c.stride : 0, lo, ox1);
            std::fill(d, d + (lo - ox0), 0.f);
            if (c.stride == 1) {
              std::memcpy(d + (lo - ox0), srow + lo + off, sizeof(float) * (hi - lo));
            } else {
              for (int ox = lo; ox < hi; ++ox) d[ox - ox0] = srow[ox * c.stride + off];
            }
            std::fill(d + (hi - ox0), d + (ox1 - ox0), 0.f);
          }
          p += ox1 - ox0;
        }
      }
    });
    gocor_detail::gemm(c.out, n, static_cast<int>(K), c.weight.data(), K, col.data(), n, false,
                       out + p0, P, false, threads);
  }
  epilogue(c, out, P, threads);
}

}  // namespace

void conv2d_path_cpu(const Conv& c, ConvPath path, const float* in, int H, int W, float* out,
                     const Exec& ex) {
  if (path == ConvPath::Winograd && conv_uses_winograd(c)) {
    conv2d_winograd(c, in, H, W, out, ex.threads);
  } else if (path != ConvPath::Im2col && conv_uses_taps(c)) {
    if (c.out <= 2) {
      conv2d_few_out(c, in, H, W, out, ex.threads);
    } else {
      conv2d_shifted(c, in, H, W, out, ex.threads);
    }
  } else {
    conv2d_im2col(c, in, H, W, out, ex.threads);
  }
}

void conv2d_cpu(const Conv& c, const float* in, int H, int W, float* out, const Exec& ex) {
  const bool wino = c.out > 2 && conv_uses_winograd(c) && W >= 12 * c.dil;
  conv2d_path_cpu(c, wino ? ConvPath::Winograd : ConvPath::Taps, in, H, W, out, ex);
}

void conv2d_naive(const Conv& c, const float* in, int H, int W, float* out) {
  const int Ho = conv_out_size(H, c.k, c.stride, c.pad, c.dil),
            Wo = conv_out_size(W, c.k, c.stride, c.pad, c.dil);
  for (int o = 0; o < c.out; ++o)
    for (int y = 0; y < Ho; ++y)
      for (int x = 0; x < Wo; ++x) {
        double acc = 0;
        for (int i = 0; i < c.in; ++i)
          for (int ky = 0; ky < c.k; ++ky)
            for (int kx = 0; kx < c.k; ++kx) {
              const int iy = c.stride * y - c.pad + c.dil * ky,
                        ix = c.stride * x - c.pad + c.dil * kx;
              if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
              acc += double(c.weight[((size_t(o) * c.in + i) * c.k + ky) * c.k + kx]) *
                     in[(size_t(i) * H + iy) * W + ix];
            }
        double v = acc + c.bias[o];
        if (!c.bn_scale.empty()) v = v * c.bn_scale[o] + c.bn_shift[o];
        out[(size_t(o) * Ho + y) * Wo + x] = activate(static_cast<float>(v), c.act);
      }
}

void conv_transpose2d_cpu(const Deconv& d, const float* in, int H, int W, float* out,
                          const Exec& ex) {
  const int threads = ex.threads;
  const int64_t P = int64_t(H) * W, Wo = 2 * W, Ho = 2 * H;
  HugeFloats col(size_t(d.out) * 16 * P);  // written in full by the GEMM
  gocor_detail::gemm(d.out * 16, static_cast<int>(P), d.in, d.weight_t.data(), d.in, in, P, false,
                     col.data(), P, false, threads);
  // out[o, 2 iy - 1 + ky, 2 ix - 1 + kx] += col[o*16 + ky*4 + kx, iy*W + ix]: gathered per output
  // pixel (each has exactly 2x2 contributing taps inside or on the border of the input).
  parallel_for(d.out, threads, [&](int64_t o) {
    for (int64_t Y = 0; Y < Ho; ++Y)
      for (int64_t X = 0; X < Wo; ++X) {
        float acc = d.bias[o];
        // ky with (Y + 1 - ky) even: ky in {(Y+1)%2, (Y+1)%2 + 2}.
        for (int ky = int((Y + 1) & 1); ky < 4; ky += 2) {
          const int64_t iy = (Y + 1 - ky) / 2;
          if (iy < 0 || iy >= H) continue;
          for (int kx = int((X + 1) & 1); kx < 4; kx += 2) {
            const int64_t ix = (X + 1 - kx) / 2;
            if (ix < 0 || ix >= W) continue;
            acc += col[(size_t(o) * 16 + ky * 4 + kx) * P + iy * W + ix];
          }
        }
        out[(o * Ho + Y) * Wo + X] = acc;
      }
  });
}

void conv_transpose2d_naive(const float* weight, const float* bias, int Cin, int Cout,
                            const float* in, int H, int W, float* out) {
  const int Ho = 2 * H, Wo = 2 * W;
  std::vector<double> acc(size_t(Cout) * Ho * Wo);
  for (int o = 0; o < Cout; ++o)
    std::fill(acc.begin() + size_t(o) * Ho * Wo, acc.begin() + size_t(o + 1) * Ho * Wo, bias[o]);
  for (int i = 0; i < Cin; ++i)
    for (int iy = 0; iy < H; ++iy)
      for (int ix = 0; ix < W; ++ix)
        for (int o = 0; o < Cout; ++o)
          for (int ky = 0; ky < 4; ++ky)
            for (int kx = 0; kx < 4; ++kx) {
              const int Y = 2 * iy - 1 + ky, X = 2 * ix - 1 + kx;
              if (Y < 0 || Y >= Ho || X < 0 || X >= Wo) continue;
              acc[(size_t(o) * Ho + Y) * Wo + X] +=
                  double(in[(size_t(i) * H + iy) * W + ix]) *
                  weight[((size_t(i) * Cout + o) * 4 + ky) * 4 + kx];
            }
  for (size_t j = 0; j < acc.size(); ++j) out[j] = static_cast<float>(acc[j]);
}

void leaky_relu_cpu(float* x, int64_t n, const Exec&) {
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] > 0.f ? x[i] : 0.1f * x[i];
}

void warp_cpu(const float* in, const float* flow, int C, int H, int W, bool with_mask, float* out,
              const Exec&) {
  const int64_t P = int64_t(H) * W;
  const float sx = static_cast<float>(std::max(W - 1, 1)),
              sy = static_cast<float>(std::max(H - 1, 1));
  const float hx = static_cast<float>(W - 1) / 2.f, hy = static_cast<float>(H - 1) / 2.f;
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      const int64_t p = int64_t(y) * W + x;
      const float px = static_cast<float>(x) + flow[p], py = static_cast<float>(y) + flow[P + p];
      const float gx = (2.f * px) / sx - 1.f, gy = (2.f * py) / sy - 1.f;
      const float ix = (gx + 1.f) * hx, iy = (gy + 1.f) * hy;
      float w[4] = {0, 0, 0, 0};
      int64_t at[4] = {0, 0, 0, 0};
      float m = 0.f;
      if (std::isfinite(ix) && std::isfinite(iy) && std::fabs(ix) < 1e9f && std::fabs(iy) < 1e9f) {
        const float fx = std::floor(ix), fy = std::floor(iy);
        const float tx = ix - fx, ty = iy - fy;
        const int x0 = static_cast<int>(fx), y0 = static_cast<int>(fy);
        const float cw[4] = {(1.f - tx) * (1.f - ty), tx * (1.f - ty), (1.f - tx) * ty, tx * ty};
        const int cx[4] = {x0, x0 + 1, x0, x0 + 1}, cy[4] = {y0, y0, y0 + 1, y0 + 1};
        for (int j = 0; j < 4; ++j) {
          if (cx[j] >= 0 && cx[j] < W && cy[j] >= 0 && cy[j] < H) {
            w[j] = cw[j];
            at[j] = int64_t(cy[j]) * W + cx[j];
            m += cw[j];
          }
        }
      }
      const bool zero = with_mask && !(m >= 0.9999f);
      for (int c = 0; c < C; ++c) {
        const float* src = in + int64_t(c) * P;
        out[int64_t(c) * P + p] =
            zero ? 0.f
                 : w[0] * src[at[0]] + w[1] * src[at[1]] + w[2] * src[at[2]] + w[3] * src[at[3]];
      }
    }
}

void resize_bilinear_cpu(const float* in, int C, int Hi, int Wi, float* out, int Ho, int Wo,
                         const Exec&) {
  const float sy = static_cast<float>(Hi) / static_cast<float>(Ho),
              sx = static_cast<float>(Wi) / static_cast<float>(Wo);
  std::vector<int> x0(Wo), x1(Wo);
  std::vector<float> lx(Wo);
  for (int x = 0; x < Wo; ++x) {
    const float s = std::max(0.f, (static_cast<float>(x) + 0.5f) * sx - 0.5f);
    x0[x] = std::min(static_cast<int>(s), Wi - 1);
    x1[x] = std::min(x0[x] + 1, Wi - 1);
    lx[x] = s - static_cast<float>(x0[x]);
  }
  for (int y = 0; y < Ho; ++y) {
    const float s = std::max(0.f, (static_cast<float>(y) + 0.5f) * sy - 0.5f);
    const int y0 = std::min(static_cast<int>(s), Hi - 1), y1 = std::min(y0 + 1, Hi - 1);
    const float ly = s - static_cast<float>(y0);
    for (int c = 0; c < C; ++c) {
      const float* r0 = in + (int64_t(c) * Hi + y0) * Wi;
      const float* r1 = in + (int64_t(c) * Hi + y1) * Wi;
      float* o = out + (int64_t(c) * Ho + y) * Wo;
      for (int x = 0; x < Wo; ++x) {
        const float a = (1.f - lx[x]) * r0[x0[x]] + lx[x] * r0[x1[x]];
        const float b = (1.f - lx[x]) * r1[x0[x]] + lx[x] * r1[x1[x]];
        o[x] = (1.f - ly) * a + ly * b;
      }
    }
  }
}

void resize_area_cpu(const float* in, int C, int Hi, int Wi, float* out, int Ho, int Wo,
                     const Exec&) {
  for (int c = 0; c < C; ++c)
    for (int i = 0; i < Ho; ++i) {
      const int64_t ys = int64_t(i) * Hi / Ho, ye = (int64_t(i + 1) * Hi + Ho - 1) / Ho;
      for (int j = 0; j < Wo; ++j) {
        const int64_t xs = int64_t(j) * Wi / Wo, xe = (int64_t(j + 1) * Wi + Wo - 1) / Wo;
        float sum = 0.f;
        for (int64_t y = ys; y < ye; ++y)
          for (int64_t x = xs; x < xe; ++x) sum += in[(int64_t(c) * Hi + y) * Wi + x];
        out[(int64_t(c) * Ho + i) * Wo + j] = sum / static_cast<float>((ye - ys) * (xe - xs));
      }
    }
}

void maxpool2_cpu(const float* in, int C, int H, int W, float* out, const Exec&) {
  const int Ho = H / 2, Wo = W / 2;
  for (int c = 0; c < C; ++c)
    for (int y = 0; y < Ho; ++y)
      for (int x = 0; x < Wo; ++x) {
        const float* r0 = in + (int64_t(c) * H + 2 * y) * W + 2 * x;
        const float* r1 = r0 + W;
        out[(int64_t(c) * Ho + y) * Wo + x] =
            std::max(std::max(r0[0], r0[1]), std::max(r1[0], r1[1]));
      }
}

void l2norm_channels_cpu(float* x, int C, int H, int W, const Exec&) {
  const int64_t P = int64_t(H) * W;
  for (int64_t p = 0; p < P; ++p) {
    double s = 0;
    for (int c = 0; c < C; ++c) s += double(x[c * P + p]) * x[c * P + p];
    const float n = std::sqrt(static_cast<float>(s) + 1e-6f);
    for (int c = 0; c < C; ++c) x[c * P + p] /= n;
  }
}

void mutual_matching_cpu(float* v, int N, const Exec&) {
  std::vector<float> a(N, -INFINITY), b(N, -INFINITY);
  for (int t = 0; t < N; ++t)
    for (int r = 0; r < N; ++r) {
      const float m = v[int64_t(t) * N + r];
      a[t] = std::max(a[t], m);
      b[r] = std::max(b[r], m);
    }
  for (int t = 0; t < N; ++t)
    for (int r = 0; r < N; ++r) {
      float& m = v[int64_t(t) * N + r];
      m = m * ((m / (a[t] + 1e-5f)) * (m / (b[r] + 1e-5f)));
    }
}

}  // namespace nn
}  // namespace gocor
