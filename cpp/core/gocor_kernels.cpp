#include "gocor_kernels.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "corr_kernels.h"
#include "parallel.h"

// The vector helpers below are always inlined into one ISA's entry point; their ABI never matters.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace gocor {
namespace gocor_detail {
namespace {

// GCC vector extensions: each ISA's entry point below (explicit target attributes, chosen at run
// time by corr_detail::simd_active(), which honours GOCOR_SIMD) lowers them to its own
// instructions. Vector widths and tiles are per ISA so that every accumulator stays in a register:
// AVX-512 has 32 zmm, AVX2 and SSE have 16 ymm / xmm.
typedef float v16 __attribute__((vector_size(64)));
typedef float v8 __attribute__((vector_size(32)));
typedef float v4 __attribute__((vector_size(16)));

constexpr int kKc = 128, kNc = 256, kMc = 128;
constexpr int kMrMax = 8, kNrMax = 32;  // largest tile (AVX-512), sizes the packing buffers

// Buffers aligned to 64 bytes so that packed panels load with aligned vector moves.
struct AlignedBuf {
  std::vector<float> v;
  float* get(size_t n) {
    if (v.size() < n + 16) v.resize(n + 16);
    auto addr = reinterpret_cast<uintptr_t>(v.data());
    return v.data() + ((64 - addr % 64) % 64) / sizeof(float);
  }
};

// a rows [0, mc) x cols [0, kc) -> micro-panels of mr rows, k-major: ap[(ip * kc + k) * mr + i].
void pack_a(const float* a, int64_t lda, int mc, int kc, int mr_tile, float* ap) {
  for (int ip = 0; ip < mc; ip += mr_tile) {
    float* dst = ap + static_cast<int64_t>(ip) * kc;
    const int mr = std::min(mr_tile, mc - ip);
    for (int k = 0; k < kc; ++k) {
      for (int i = 0; i < mr; ++i) dst[k * mr_tile + i] = a[(ip + i) * lda + k];
      for (int i = mr; i < mr_tile; ++i) dst[k * mr_tile + i] = 0.f;
    }
  }
}

// b block (kc x nc) -> strips of nr columns, k-major: bp[(jp * kc + k) * nr + j].
void pack_b(const float* b, int64_t ldb, bool trans, int kc, int nc, int nr_tile, float* bp) {
  for (int jp = 0; jp < nc; jp += nr_tile) {
    float* dst = bp + static_cast<int64_t>(jp) * kc;
    const int nr = std::min(nr_tile, nc - jp);
    if (!trans) {
      for (int k = 0; k < kc; ++k) {
        const float* src = b + k * ldb + jp;
        for (int j = 0; j < nr; ++j) dst[k * nr_tile + j] = src[j];
        for (int j = nr; j < nr_tile; ++j) dst[k * nr_tile + j] = 0.f;
      }
    } else {
      for (int j = 0; j < nr; ++j) {
        const float* src = b + (jp + j) * ldb;
        for (int k = 0; k < kc; ++k) dst[k * nr_tile + j] = src[k];
      }
      for (int j = nr; j < nr_tile; ++j)
        for (int k = 0; k < kc; ++k) dst[k * nr_tile + j] = 0.f;
    }
  }
}

// MR x (NV vectors of V) tile of c: MR * NV accumulators, NV loads of b and one broadcast of a
// live at once (AVX-512 8 x 2 zmm = 19 of 32; AVX2 6 x 2 ymm and SSE 6 x 2 xmm = 15 of 16).
template <class V, int MR, int NV>
inline __attribute__((always_inline)) void micro_kernel(int kc, const float* ap, const float* bp,
                                                        float* c, int64_t ldc, int m, int n,
                                                        bool acc) {
  constexpr int L = sizeof(V) / sizeof(float), NR = NV * L;
  V cr[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) cr[i][v] = V{};
  for (int k = 0; k < kc; ++k) {
    V b[NV];
    for (int v = 0; v < NV; ++v) b[v] = *reinterpret_cast<const V*>(bp + k * NR + v * L);
    const float* a = ap + k * MR;
    for (int i = 0; i < MR; ++i)
      for (int v = 0; v < NV; ++v) cr[i][v] += a[i] * b[v];
  }
  if (m == MR && n == NR) {
    for (int i = 0; i < MR; ++i)
      for (int v = 0; v < NV; ++v) {
        float* dst = c + i * ldc + v * L;
        storeu<V>(dst, acc ? loadu<V>(dst) + cr[i][v] : cr[i][v]);
      }
    return;
  }
  for (int i = 0; i < m; ++i) {
    float tile[NR];
    std::memcpy(tile, &cr[i][0], sizeof(tile));
    for (int j = 0; j < n; ++j) c[i * ldc + j] = acc ? c[i * ldc + j] + tile[j] : tile[j];
  }
}

template <class V, int MR, int NV>
inline __attribute__((always_inline)) void macro_body(int mc, int nc, int kc, const float* ap,
                                                      const float* bp, float* c, int64_t ldc,
                                                      bool acc) {
  constexpr int NR = NV * static_cast<int>(sizeof(V) / sizeof(float));
  for (int jp = 0; jp < nc; jp += NR)
    for (int ip = 0; ip < mc; ip += MR)
      micro_kernel<V, MR, NV>(kc, ap + static_cast<int64_t>(ip) * kc,
                              bp + static_cast<int64_t>(jp) * kc, c + ip * ldc + jp, ldc,
                              std::min(MR, mc - ip), std::min(NR, nc - jp), acc);
}

GOCOR_TARGET_AVX512 void macro_avx512(int mc, int nc, int kc, const float* ap, const float* bp,
                                      float* c, int64_t ldc, bool acc) {
  macro_body<v16, 8, 2>(mc, nc, kc, ap, bp, c, ldc, acc);
}
GOCOR_TARGET_AVX2 void macro_avx2(int mc, int nc, int kc, const float* ap, const float* bp,
                                  float* c, int64_t ldc, bool acc) {
  macro_body<v8, 6, 2>(mc, nc, kc, ap, bp, c, ldc, acc);
}
void macro_portable(int mc, int nc, int kc, const float* ap, const float* bp, float* c, int64_t ldc,
                    bool acc) {
  macro_body<v4, 6, 2>(mc, nc, kc, ap, bp, c, ldc, acc);
}

struct GemmIsa {
  int mr, nr;
  void (*macro)(int, int, int, const float*, const float*, float*, int64_t, bool);
};

GemmIsa gemm_isa() {
  switch (corr_detail::simd_active()) {
    case corr_detail::Simd::Avx512: return {8, 32, macro_avx512};
    case corr_detail::Simd::Avx2: return {6, 16, macro_avx2};
    default: return {6, 8, macro_portable};
  }
}

}  // namespace

void gemm(int m, int n, int k, const float* a, int64_t lda, const float* b, int64_t ldb,
          bool b_trans, float* c, int64_t ldc, bool accumulate, int threads) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    if (!accumulate)
      for (int i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, 0.f);
    return;
  }
  const GemmIsa isa = gemm_isa();
  // Row blocks a multiple of the tile height, so only the last block has a partial tile.
  const int mcb = kMc / isa.mr * isa.mr;
  const int tasks = (m + mcb - 1) / mcb;
  parallel_for(tasks, threads, [&](int64_t t) {
    thread_local AlignedBuf abuf, bbuf;
    const int i0 = static_cast<int>(t) * mcb, mc = std::min(mcb, m - i0);
    float* ap = abuf.get(static_cast<size_t>(kMc + kMrMax) * kKc);
    float* bp = bbuf.get(static_cast<size_t>(kNc + kNrMax) * kKc);
    for (int k0 = 0; k0 < k; k0 += kKc) {
      const int kc = std::min(kKc, k - k0);
      pack_a(a + i0 * lda + k0, lda, mc, kc, isa.mr, ap);
      for (int j0 = 0; j0 < n; j0 += kNc) {
        const int nc = std::min(kNc, n - j0);
        const float* bsrc = b_trans ? b + j0 * ldb + k0 : b + k0 * ldb + j0;
        pack_b(bsrc, ldb, b_trans, kc, nc, isa.nr, bp);
        isa.macro(mc, nc, kc, ap, bp, c + i0 * ldc + j0, ldc, accumulate || k0 > 0);
      }
    }
  });
}

// ---- R_theta^T R_theta ---------------------------------------------------------------------

namespace {

// Floats of apply()'s scratch: N planes of H + 4 rows of the padded stride Wp + 4.
size_t rtr_scratch_floats(int H, int W) {
  const size_t rs = size_t(W + 15) / 16 * 16 + 4;
  return size_t(H) * W * (size_t(H) + 4) * rs + 16;
}

// Bit (e + 1) is set when offset e in {-1, 0, 1} is a valid tap of the transposed convolution at
// coordinate x of an axis of length len, i.e. when x - e lies inside the axis.
int axis_mask(int x, int len) {
  int m = 0;
  for (int e = -1; e <= 1; ++e)
    if (x - e >= 0 && x - e < len) m |= 1 << (e + 1);
  return m;
}

// T consecutive output rows ty0 .. ty0+T-1 of one reference position r, one 16-wide chunk of tx,
// all rows of the same border class (so one coefficient table serves them all). For each of the
// 25 reference taps and each dtx, the T+4 source rows are loaded once and every coefficient once,
// then shared by the T outputs: about 0.4 loads per multiply-add at T = 8 instead of 2 when rows
// are computed one by one (the loads, not the arithmetic, bounded the row-by-row stencil).
// Source rows outside the grid are the zero rows of the padded planes, so no branch is needed;
// single border rows skip the query taps [0, DLO) and [DHI, 5) that only ever meet those zeros.
// V is one vector of L = 8 or 16 lanes (one chunk of tx). With 32 registers (AVX-512) all T + 4
// source rows of a dtx are loaded first and the 5 coefficients streamed (8 accumulators, 8
// partials, 12 rows, 1 coefficient: 29 zmm). With 16 registers that spills, so the other ISAs
// stream the source rows instead: the 5 coefficients of a dtx stay live and each row, loaded once,
// feeds the (up to 5) outputs it touches (T partials + 5 + 1 = 14 at T = 8; the T totals are
// touched once per reference tap and may live in memory). Each partial receives its terms in the
// same order (dty ascending) either way.
template <class V, bool kStreamRows, int T, int DLO = 0, int DHI = 5>
inline __attribute__((always_inline)) void rtr_tile(const float* tab, const float* xp, int H, int W,
                                                    int Wp, int rs, int ry, int rx, int ty0, int c0,
                                                    float* out) {
  constexpr int L = sizeof(V) / sizeof(float);
  // Each reference tap's 25 products are summed into a fresh partial that is then added to the
  // row's total (two-level summation keeps the rounding error of the 625-term sums near that of
  // 25 terms); small tiles keep several partials per row so the multiply-add latency stays hidden.
  constexpr int NA = T >= 4 ? 1 : (T == 1 ? 5 : 3);
  V acc[T];
  for (int j = 0; j < T; ++j) acc[j] = V{};
  const int64_t plane_stride = static_cast<int64_t>(H + 4) * rs;
  for (int dry = -2; dry <= 2; ++dry) {
    const int sy = ry + dry;
    if (sy < 0 || sy >= H) continue;
    for (int drx = -2; drx <= 2; ++drx) {
      const int sx = rx + drx;
      if (sx < 0 || sx >= W) continue;
      // Padded row ty0 + k holds source query row ty0 + k - 2.
      const float* src =
          xp + (sy * W + sx) * plane_stride + static_cast<int64_t>(ty0) * rs + c0 * L;
      const float* cf = tab + static_cast<int64_t>(((dry + 2) * 5 + (drx + 2)) * 25) * Wp + c0 * L;
      V part[T][NA];
      for (int j = 0; j < T; ++j)
        for (int k = 0; k < NA; ++k) part[j][k] = V{};
      if constexpr (kStreamRows) {
        for (int dtx = 0; dtx < 5; ++dtx) {
          V cv[5];
#pragma GCC unroll 5
          for (int dty = DLO; dty < DHI; ++dty) cv[dty] = loadu<V>(cf + (dty * 5 + dtx) * Wp);
#pragma GCC unroll 16
          for (int k = DLO; k < T + DHI - 1; ++k) {
            const V sv = loadu<V>(src + k * rs + dtx);
#pragma GCC unroll 5
            for (int dty = DLO; dty < DHI; ++dty) {
              const int j = k - dty;
              if (j >= 0 && j < T) part[j][dty % NA] += cv[dty] * sv;
            }
          }
        }
      } else {
        for (int dtx = 0; dtx < 5; ++dtx) {
          V sv[T + 4];
          for (int k = DLO; k < T + DHI - 1; ++k) sv[k] = loadu<V>(src + k * rs + dtx);
          for (int dty = DLO; dty < DHI; ++dty) {
            const V cv = loadu<V>(cf + (dty * 5 + dtx) * Wp);
            for (int j = 0; j < T; ++j) part[j][dty % NA] += cv * sv[j + dty];
          }
        }
      }
      for (int j = 0; j < T; ++j) {
        V p = part[j][0];
        for (int k = 1; k < NA; ++k) p += part[j][k];
        acc[j] += p;
      }
    }
  }
  const int x0 = c0 * L, n = std::min(L, W - x0);
  for (int j = 0; j < T; ++j) {
    if (n == L) {
      storeu<V>(out + j * W + x0, acc[j]);
    } else {
      float tmp[L];
      std::memcpy(tmp, &acc[j], sizeof(tmp));
      for (int i = 0; i < n; ++i) out[j * W + x0 + i] = tmp[i];
    }
  }
}

// First 64-byte aligned element of a vector holding 16 spare floats: the coefficient vectors are
// then whole cache lines (a misaligned 64-byte load touches two).
const float* aligned64(const std::vector<float>& v) {
  const auto addr = reinterpret_cast<uintptr_t>(v.data());
  return v.data() + ((64 - addr % 64) % 64) / sizeof(float);
}

struct RtrArgs {
  const float* xp;
  float* y;
  int H, W, Wp, rs;
  const float* coef;
  const int* cls_index;
  const int* mask_y;  // axis_mask over H
  const int* mask_x;  // axis_mask over W
};

template <class V, bool kStreamRows>
inline __attribute__((always_inline)) void rtr_rows_body(const RtrArgs& a, int r0, int r1) {
  constexpr int L = sizeof(V) / sizeof(float);
  const int H = a.H, W = a.W, N = H * W, nch = (W + L - 1) / L;
  for (int r = r0; r < r1; ++r) {
    const int ry = r / W, rx = r % W;
    // Runs of query rows with one class: row 0, the interior rows, row H-1 (all rows when H < 3
    // are borders of their own). Interior runs are cut into tiles of at most 8 rows.
    for (int ty0 = 0; ty0 < H;) {
      int len = 1;
      if (ty0 > 0 && ty0 < H - 1) len = std::min(8, H - 1 - ty0);
      const int id = (a.mask_y[ry] * 8 + a.mask_x[rx]) * 8 + a.mask_y[ty0];
      const float* tab = a.coef + static_cast<int64_t>(a.cls_index[id]) * 625 * a.Wp;
      float* out = a.y + static_cast<int64_t>(r) * N + ty0 * W;
      // A plain switch (no lambda) so that every tile is inlined into the ISA's entry point.
      for (int c0 = 0; c0 < nch; ++c0) {
        const float* xp = a.xp;
        const int Wp = a.Wp, rs = a.rs;
#define GOCOR_TILE(...) rtr_tile<V, kStreamRows, __VA_ARGS__>
        switch (len) {
          case 1:
            // Query row 0 has no source rows above it, row H-1 none below.
            if (ty0 == 0 && ty0 == H - 1)
              GOCOR_TILE(1, 2, 3)(tab, xp, H, W, Wp, rs, ry, rx, ty0, c0, out);
            else if (ty0 == 0)
              GOCOR_TILE(1, 2, 5)(tab, xp, H, W, Wp, rs, ry, rx, ty0, c0, out);
            else if (ty0 == H - 1)
              GOCOR_TILE(1, 0, 3)(tab, xp, H, W, Wp, rs, ry, rx, ty0, c0, out);
            else
              GOCOR_TILE(1)(tab, xp, H, W, Wp, rs, ry, rx, ty0, c0, out);
            break;
          case 2: GOCOR_TILE(2)(tab, xp, H, W, Wp, rs, ry, rx, ty0, c0, out); break;
          case 3: GOCOR_TILE(3)(tab, xp, H, W, Wp, rs, ry, rx, ty0, c0, out); break;
          case 4: GOCOR_TILE(4)(tab, xp, H, W, Wp, rs, ry, rx, ty0, c0, out); break;
          case 5: GOCOR_TILE(5)(tab, xp, H, W, Wp, rs, ry, rx, ty0, c0, out); break;
          case 6: GOCOR_TILE(6)(tab, xp, H, W, Wp, rs, ry, rx, ty0, c0, out); break;
          case 7: GOCOR_TILE(7)(tab, xp, H, W, Wp, rs, ry, rx, ty0, c0, out); break;
          default: GOCOR_TILE(8)(tab, xp, H, W, Wp, rs, ry, rx, ty0, c0, out); break;
        }
#undef GOCOR_TILE
      }
      ty0 += len;
    }
  }
}

GOCOR_TARGET_AVX512 void rtr_rows_avx512(const RtrArgs& a, int r0, int r1) {
  rtr_rows_body<v16, false>(a, r0, r1);
}
GOCOR_TARGET_AVX2 void rtr_rows_avx2(const RtrArgs& a, int r0, int r1) {
  rtr_rows_body<v8, true>(a, r0, r1);
}
void rtr_rows_portable(const RtrArgs& a, int r0, int r1) {
  rtr_rows_body<v4, true>(a, r0, r1);
}

}  // namespace

RtROperator::RtROperator(const GlobalGocorParams& p, int H, int W) : H_(H), W_(W) {
  const int I = p.reg_inter_dim, O = p.reg_output_dim;
  if (static_cast<int>(p.reg_weight1.size()) != I * 9 ||
      static_cast<int>(p.reg_weight2.size()) != O * I * 9) {
    throw Error(ErrorCode::Shape,
                "reg_weight1/reg_weight2 do not match reg_inter_dim/reg_output_dim");
  }
  Wp_ = (W + 15) / 16 * 16;
  rs_ = Wp_ + 4;
  // Kc[o][e], e = (by*3+bx)*9 + (ay*3+ax): b reference offsets, a query offsets.
  std::vector<double> kc(static_cast<size_t>(O) * 81, 0.0);
  for (int o = 0; o < O; ++o)
    for (int b = 0; b < 9; ++b)
      for (int a = 0; a < 9; ++a) {
        double s = 0;
        for (int i = 0; i < I; ++i)
          s += static_cast<double>(p.reg_weight2[(o * I + i) * 9 + b]) * p.reg_weight1[i * 9 + a];
        kc[o * 81 + b * 9 + a] = s;
      }
  std::vector<double> P(81 * 81, 0.0);
  for (int e = 0; e < 81; ++e)
    for (int f = 0; f < 81; ++f) {
      double s = 0;
      for (int o = 0; o < O; ++o) s += kc[o * 81 + e] * kc[o * 81 + f];
      P[e * 81 + f] = s;
    }
  // Kernel over the 625 source offsets for one combination of the four axis masks.
  auto kernel = [&](const int masks[4], double* out) {
    std::fill(out, out + 625, 0.0);
    for (int e = 0; e < 81; ++e) {
      const int ev[4] = {e / 27 - 1, e / 9 % 3 - 1, e / 3 % 3 - 1, e % 3 - 1};
      bool valid = true;
      for (int ax = 0; ax < 4; ++ax) valid = valid && ((masks[ax] >> (ev[ax] + 1)) & 1);
      if (!valid) continue;
      for (int f = 0; f < 81; ++f) {
        const int fv[4] = {f / 27 - 1, f / 9 % 3 - 1, f / 3 % 3 - 1, f % 3 - 1};
        int d = 0;
        for (int ax = 0; ax < 4; ++ax) d = d * 5 + (fv[ax] - ev[ax] + 2);
        out[d] += P[e * 81 + f];
      }
    }
  };
  cls_index_.assign(512, -1);
  int tables = 0;
  for (int ry = 0; ry < H; ++ry)
    for (int rx = 0; rx < W; ++rx)
      for (int ty = 0; ty < H; ++ty) {
        const int id = (axis_mask(ry, H) * 8 + axis_mask(rx, W)) * 8 + axis_mask(ty, H);
        if (cls_index_[id] < 0) cls_index_[id] = tables++;
      }
  coef_.assign(static_cast<size_t>(tables) * 625 * Wp_ + 16, 0.f);
  float* const coef_base = coef_.data() + (aligned64(coef_) - coef_.data());
  std::vector<double> k4(625);
  for (int id = 0; id < 512; ++id) {
    if (cls_index_[id] < 0) continue;
    float* tab = coef_base + static_cast<size_t>(cls_index_[id]) * 625 * Wp_;
    int last_mtx = -1;
    for (int tx = 0; tx < W; ++tx) {
      const int masks[4] = {id / 64, id / 8 % 8, id % 8, axis_mask(tx, W)};
      if (masks[3] != last_mtx) {
        kernel(masks, k4.data());
        last_mtx = masks[3];
      }
      for (int d = 0; d < 625; ++d) {
        const int dtx = d % 5 - 2;
        if (tx + dtx < 0 || tx + dtx >= W) continue;  // zero padding of the source
        tab[static_cast<size_t>(d) * Wp_ + tx] = static_cast<float>(k4[d]);
      }
    }
  }
}

size_t RtROperator::bytes(int H, int W) {
  // axis_mask takes at most 3 values along an axis, so there are at most 27 coefficient tables.
  const size_t tables = size_t(std::min(H, 3)) * std::min(W, 3) * std::min(H, 3);
  return sizeof(float) * (tables * 625 * ((W + 15) / 16 * 16) + 16 + rtr_scratch_floats(H, W));
}

void RtROperator::apply(const float* x, float* y, std::vector<float>& scratch, int threads) const {
  const int H = H_, W = W_, N = H * W;
  // Plane r: rows of rs_ floats, two zero rows above and below the H query rows, two zero
  // columns left of each row and zeros right of it up to rs_ (the source's zero padding).
  const int64_t plane = static_cast<int64_t>(H + 4) * rs_;
  const size_t need = rtr_scratch_floats(H, W);
  if (scratch.size() < need) scratch.resize(need);
  float* xp = scratch.data();
  parallel_chunks(N, threads, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* base = xp + r * plane;
      std::fill(base, base + 2 * rs_, 0.f);
      std::fill(base + (H + 2) * rs_, base + plane, 0.f);
      for (int ty = 0; ty < H; ++ty) {
        float* dst = base + (ty + 2) * rs_;
        std::fill(dst, dst + 2, 0.f);
        std::memcpy(dst + 2, x + r * N + ty * W, sizeof(float) * W);
        std::fill(dst + 2 + W, dst + rs_, 0.f);
      }
    }
  });
  std::vector<int> my(H), mx(W);
  for (int i = 0; i < H; ++i) my[i] = axis_mask(i, H);
  for (int i = 0; i < W; ++i) mx[i] = axis_mask(i, W);
  RtrArgs a{xp, y, H, W, Wp_, rs_, aligned64(coef_), cls_index_.data(), my.data(), mx.data()};
  void (*rows)(const RtrArgs&, int, int) = rtr_rows_portable;
  switch (corr_detail::simd_active()) {
    case corr_detail::Simd::Avx512: rows = rtr_rows_avx512; break;
    case corr_detail::Simd::Avx2: rows = rtr_rows_avx2; break;
    default: break;
  }
  parallel_chunks(N, threads, 4, [&](int64_t r0, int64_t r1) {
    rows(a, static_cast<int>(r0), static_cast<int>(r1));
  });
}

}  // namespace gocor_detail
}  // namespace gocor
