#include "gocor_kernels.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "parallel.h"

namespace gocor {
namespace gocor_detail {

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

// Calls tap(dry, drx, sy, sx) for each reference tap (dry, drx) of the reference position (ry, rx)
// whose source (sy, sx) = (ry + dry, rx + drx) lies inside the H x W grid; kHalf: only the taps
// (dry, drx) >= (0, 0) in lexicographic order (rtr_tile).
template <bool kHalf, class Tap>
inline __attribute__((always_inline)) void rtr_for_each_tap(int H, int W, int ry, int rx,
                                                            const Tap& tap) {
  for (int dry = kHalf ? 0 : -2; dry <= 2; ++dry) {
    const int sy = ry + dry;
    if (sy < 0 || sy >= H) continue;
    for (int drx = kHalf && dry == 0 ? 0 : -2; drx <= 2; ++drx) {
      const int sx = rx + drx;
      if (sx < 0 || sx >= W) continue;
      tap(dry, drx, sy, sx);
    }
  }
}

// One reference tap's partial p added to a row's total (kHalf: twice for the taps other than
// (0, 0), which stand for their mirror images too).
template <class V, bool kHalf>
inline __attribute__((always_inline)) void rtr_add_total(float* acc, V p, int dry, int drx) {
  const bool twice = kHalf && (dry != 0 || drx != 0);
  storeu<V>(acc, loadu<V>(acc) + (twice ? p + p : p));
}

// A tile's T rows of totals (one chunk c0 of L columns each) into out (row stride W).
template <int T, int L>
inline __attribute__((always_inline)) void rtr_store_rows(const float (&acc)[T][L], int W, int c0,
                                                          float* out) {
  const int x0 = c0 * L, n = std::min(L, W - x0);
  for (int j = 0; j < T; ++j) {
    if (n == L) {
      std::memcpy(out + j * W + x0, acc[j], sizeof(acc[j]));
    } else {
      for (int i = 0; i < n; ++i) out[j * W + x0 + i] = acc[j][i];
    }
  }
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
// kHalf: only the reference taps (dry, drx) >= (0, 0) in lexicographic order, the others' terms
// doubled: the output h then has <x, h> = <x, P x> (P is symmetric: the pairs with a negative
// reference offset mirror those with a positive one) for half the work.
template <class V, bool kStreamRows, bool kHalf, int T, int DLO = 0, int DHI = 5>
inline __attribute__((always_inline)) void rtr_tile(const float* tab, const float* xp, int H, int W,
                                                    int Wp, int rs, int ry, int rx, int ty0, int c0,
                                                    float* out) {
  constexpr int L = sizeof(V) / sizeof(float);
  // Each reference tap's 25 products are summed into a fresh partial that is then added to the
  // row's total (two-level summation keeps the rounding error of the 625-term sums near that of
  // 25 terms); small tiles keep several partials per row so the multiply-add latency stays hidden.
  constexpr int NA = T >= 4 ? 1 : (T == 1 ? 5 : 3);
  // The totals live in memory (touched once per reference tap): in registers beside the T
  // partials, T + 4 source rows and a coefficient they made the compiler spill inside the
  // multiply-add loop.
  alignas(64) float acc[T][L];
  std::memset(acc, 0, sizeof(acc));
  const int64_t plane_stride = static_cast<int64_t>(H + 4) * rs;
  rtr_for_each_tap<kHalf>(H, W, ry, rx, [&](int dry, int drx, int sy, int sx) {
    // Padded row ty0 + k holds source query row ty0 + k - 2.
    const float* src = xp + (sy * W + sx) * plane_stride + static_cast<int64_t>(ty0) * rs + c0 * L;
    const float* cf = tab + static_cast<int64_t>(((dry + 2) * 5 + (drx + 2)) * 25) * Wp + c0 * L;
    V part[T][NA];
    for (int j = 0; j < T; ++j)
      for (int k = 0; k < NA; ++k) part[j][k] = V{};
    if constexpr (kStreamRows) {
      for (int dtx = 0; dtx < 5; ++dtx) {
        V cv[5];
#pragma GCC unroll 5
        for (int dty = DLO; dty < DHI; ++dty) cv[dty] = loadu<V>(cf + (dty * 5 + dtx) * Wp);
#pragma GCC unroll 20
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
      rtr_add_total<V, kHalf>(acc[j], p, dry, drx);
    }
    asm volatile("" ::: "memory");  // keep the totals in memory
  });
  rtr_store_rows(acc, W, c0, out);
}

// A whole query column of one reference position r and one chunk of tx on 32-register ISAs, for
// 6 <= H <= 18: the TI = H - 2 interior rows as one tile (as rtr_tile<V, true, kHalf, TI>) and the
// two border rows riding along in the same pass over the source rows. As tiles of their own, the
// border rows (3 query taps each, 2 loads per multiply-add) took 30 % of the stencil's time at
// 16 x 16; here each of their multiply-adds costs one more coefficient load beside the interior
// tile's. Each border row keeps a partial per query tap and adds them as rtr_tile<V, *, kHalf, 1,
// DLO, DHI> does (NA = 5, the missing taps' partials zero), and the interior rows sum as in
// rtr_tile: the same sums, bit for bit. Tables: tab0 for row 0, tabi for the interior, tabl for
// row H-1 (their border classes differ).
template <class V, bool kHalf, int TI>
inline __attribute__((always_inline)) void rtr_column(const float* tab0, const float* tabi,
                                                      const float* tabl, const float* xp, int H,
                                                      int W, int Wp, int rs, int ry, int rx, int c0,
                                                      float* out) {
  constexpr int L = sizeof(V) / sizeof(float);
  constexpr int T = TI + 2;  // output rows; padded source row k holds query row k - 2
  alignas(64) float acc[T][L];
  std::memset(acc, 0, sizeof(acc));
  const int64_t plane_stride = static_cast<int64_t>(H + 4) * rs;
  rtr_for_each_tap<kHalf>(H, W, ry, rx, [&](int dry, int drx, int sy, int sx) {
    const float* src = xp + (sy * W + sx) * plane_stride + c0 * L;
    const int64_t tap = static_cast<int64_t>(((dry + 2) * 5 + (drx + 2)) * 25) * Wp + c0 * L;
    const float *cf0 = tab0 + tap, *cfi = tabi + tap, *cfl = tabl + tap;
    V part[TI], b0[3], bl[3];  // interior rows 1..TI; row 0's taps 2..4; row H-1's taps 0..2
    for (int j = 0; j < TI; ++j) part[j] = V{};
    for (int d = 0; d < 3; ++d) b0[d] = bl[d] = V{};
    for (int dtx = 0; dtx < 5; ++dtx) {
      V cv[5];
#pragma GCC unroll 5
      for (int dty = 0; dty < 5; ++dty) cv[dty] = loadu<V>(cfi + (dty * 5 + dtx) * Wp);
#pragma GCC unroll 20
      for (int k = 1; k < TI + 5; ++k) {
        const V sv = loadu<V>(src + k * rs + dtx);
        if (k >= 2 && k <= 4) b0[k - 2] += loadu<V>(cf0 + (k * 5 + dtx) * Wp) * sv;
#pragma GCC unroll 5
        for (int dty = 0; dty < 5; ++dty) {
          const int j = k - dty;  // output row
          if (j >= 1 && j <= TI) part[j - 1] += cv[dty] * sv;
        }
        const int dl = k - (TI + 1);  // row H-1's query tap
        if (dl >= 0 && dl < 3) bl[dl] += loadu<V>(cfl + (dl * 5 + dtx) * Wp) * sv;
      }
    }
    const V zero{};
    rtr_add_total<V, kHalf>(acc[0], (((zero + zero) + b0[0]) + b0[1]) + b0[2], dry, drx);
    for (int j = 0; j < TI; ++j) rtr_add_total<V, kHalf>(acc[j + 1], part[j], dry, drx);
    rtr_add_total<V, kHalf>(acc[T - 1], (((bl[0] + bl[1]) + bl[2]) + zero) + zero, dry, drx);
    asm volatile("" ::: "memory");  // keep the totals in memory
  });
  rtr_store_rows(acc, W, c0, out);
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
  int64_t ldy;  // row stride of y (>= N)
  int H, W, Wp, rs;
  const float* coef;
  const int* cls_index;
  const int* mask_y;  // axis_mask over H
  const int* mask_x;  // axis_mask over W
};

// kWp > 0: the row strides are that constant (a.Wp == kWp): the tile's source rows and taps are
// then one base pointer and constant offsets each, where a run-time stride needs a register per
// row (GCC spilled them: 12 source rows, 5 tap rows).
// kWide (32 vector registers, AVX-512): grids of 6 to 18 rows go column by column (rtr_column);
// taller ones in interior tiles of up to 16 rows, streaming the source rows (T partials + 5
// coefficients + 1 row <= 22 registers). A tile of T rows has T independent multiply-add chains:
// tiles of at most 8 rows cut 14 interior rows into two of 7, whose 7 chains of 4-cycle
// multiply-adds kept the two FMA pipes at most 7/8 busy, and loaded each coefficient vector once
// per 7 rows. Every row's partial receives its terms in the same order in every tile of 4 or more
// rows, and splitting a run into tiles of at most 16 rows instead of 8 leaves every tile that had
// 4 or more rows at 4 or more: the same sums, bit for bit.
template <class V, bool kStreamRows, bool kHalf, int kWp = 0>
inline __attribute__((always_inline)) void rtr_rows_body(const RtrArgs& a, int r0, int r1) {
  constexpr int L = sizeof(V) / sizeof(float);
  constexpr bool kWide = L == 16;
  constexpr int kMaxT = kWide ? 16 : 8;
  const int H = a.H, W = a.W, nch = (W + L - 1) / L;
  const int Wp = kWp > 0 ? kWp : a.Wp, rs = kWp > 0 ? kWp + 4 : a.rs;
  for (int r = r0; r < r1; ++r) {
    const int ry = r / W, rx = r % W;
    // The coefficient table of query row ty for reference position r (its border class).
    auto table = [&](int ty) {
      const int id = (a.mask_y[ry] * 8 + a.mask_x[rx]) * 8 + a.mask_y[ty];
      return a.coef + static_cast<int64_t>(a.cls_index[id]) * 625 * a.Wp;
    };
    if constexpr (kWide) {
      if (H >= 6 && H <= 18) {
        const float *tab0 = table(0), *tabi = table(1), *tabl = table(H - 1);
        float* out = a.y + static_cast<int64_t>(r) * a.ldy;
        for (int c0 = 0; c0 < nch; ++c0) {
#define GOCOR_COLUMN(TI) \
  case TI: rtr_column<V, kHalf, TI>(tab0, tabi, tabl, a.xp, H, W, Wp, rs, ry, rx, c0, out); break;
          switch (H - 2) {
            GOCOR_COLUMN(4)
            GOCOR_COLUMN(5)
            GOCOR_COLUMN(6)
            GOCOR_COLUMN(7)
            GOCOR_COLUMN(8)
            GOCOR_COLUMN(9)
            GOCOR_COLUMN(10)
            GOCOR_COLUMN(11)
            GOCOR_COLUMN(12)
            GOCOR_COLUMN(13)
            GOCOR_COLUMN(14)
            GOCOR_COLUMN(15)
            GOCOR_COLUMN(16)
          }
#undef GOCOR_COLUMN
        }
        continue;
      }
    }
    // Runs of query rows with one class: row 0, the interior rows, row H-1 (all rows when H < 3
    // are borders of their own). Interior runs are cut into tiles of at most kMaxT rows, of equal
    // lengths (the same sums either way).
    for (int ty0 = 0; ty0 < H;) {
      int len = 1;
      if (ty0 > 0 && ty0 < H - 1) {
        const int rest = H - 1 - ty0, tiles = (rest + kMaxT - 1) / kMaxT;
        len = (rest + tiles - 1) / tiles;
      }
      const float* tab = table(ty0);
      float* out = a.y + static_cast<int64_t>(r) * a.ldy + ty0 * W;
      // A plain switch (no lambda) so that every tile is inlined into the ISA's entry point.
      for (int c0 = 0; c0 < nch; ++c0) {
        const float* xp = a.xp;
#define GOCOR_TILE(...) rtr_tile<V, kStreamRows, kHalf, __VA_ARGS__>
#define GOCOR_WIDE_TILE(T) rtr_tile<V, true, kHalf, T>(tab, xp, H, W, Wp, rs, ry, rx, ty0, c0, out)
        if constexpr (kWide) {
          if (len > 8) {
            switch (len) {
              case 9: GOCOR_WIDE_TILE(9); break;
              case 10: GOCOR_WIDE_TILE(10); break;
              case 11: GOCOR_WIDE_TILE(11); break;
              case 12: GOCOR_WIDE_TILE(12); break;
              case 13: GOCOR_WIDE_TILE(13); break;
              case 14: GOCOR_WIDE_TILE(14); break;
              case 15: GOCOR_WIDE_TILE(15); break;
              default: GOCOR_WIDE_TILE(16); break;
            }
            continue;
          }
        }
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
#undef GOCOR_WIDE_TILE
#undef GOCOR_TILE
      }
      ty0 += len;
    }
  }
}

// The entry points: full operator and half (quadratic-form) variant per level, each also for
// grids of W <= 16 (one chunk, Wp = 16: GLU-Net's 16 x 16).
#define GOCOR_RTR_ENTRIES(ISA, KERNEL, V, STREAM)                       \
  KERNEL void rtr_rows_##ISA(const RtrArgs& a, int r0, int r1) {        \
    rtr_rows_body<V, STREAM, false>(a, r0, r1);                         \
  }                                                                     \
  KERNEL void rtr_half_rows_##ISA(const RtrArgs& a, int r0, int r1) {   \
    rtr_rows_body<V, STREAM, true>(a, r0, r1);                          \
  }                                                                     \
  KERNEL void rtr_rows16_##ISA(const RtrArgs& a, int r0, int r1) {      \
    rtr_rows_body<V, STREAM, false, 16>(a, r0, r1);                     \
  }                                                                     \
  KERNEL void rtr_half_rows16_##ISA(const RtrArgs& a, int r0, int r1) { \
    rtr_rows_body<V, STREAM, true, 16>(a, r0, r1);                      \
  }
GOCOR_RTR_ENTRIES(avx512, GOCOR_KERNEL_AVX512, simd::v16, false)
GOCOR_RTR_ENTRIES(avx2, GOCOR_KERNEL_AVX2, simd::v8, true)
GOCOR_RTR_ENTRIES(portable, GOCOR_KERNEL_PORTABLE, simd::v4, true)
#undef GOCOR_RTR_ENTRIES

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

void RtROperator::apply(const float* x, int64_t ldx, float* y, int64_t ldy,
                        WorkVector<float>& scratch, int threads, bool half) const {
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
      if (Wp_ == 16 && W == 16) {
        // GLU-Net's 16 x 16: fixed sizes, so the copies are inlined (a library call per row of
        // 16 floats cost as much as the copy).
        for (int ty = 0; ty < H; ++ty) {
          float* dst = base + (ty + 2) * 20;
          dst[0] = dst[1] = dst[18] = dst[19] = 0.f;
          std::memcpy(dst + 2, x + r * ldx + ty * 16, sizeof(float) * 16);
        }
      } else {
        for (int ty = 0; ty < H; ++ty) {
          float* dst = base + (ty + 2) * rs_;
          std::fill(dst, dst + 2, 0.f);
          std::memcpy(dst + 2, x + r * ldx + ty * W, sizeof(float) * W);
          std::fill(dst + 2 + W, dst + rs_, 0.f);
        }
      }
    }
  });
  std::vector<int> my(H), mx(W);
  for (int i = 0; i < H; ++i) my[i] = axis_mask(i, H);
  for (int i = 0; i < W; ++i) mx[i] = axis_mask(i, W);
  RtrArgs a{xp, y, ldy, H, W, Wp_, rs_, aligned64(coef_), cls_index_.data(), my.data(), mx.data()};
  using Rows = void (*)(const RtrArgs&, int, int);
  const Rows rows =
      Wp_ == 16
          ? (half ? simd::simd_select(rtr_half_rows16_avx512, rtr_half_rows16_avx2,
                                      rtr_half_rows16_portable)
                  : simd::simd_select(rtr_rows16_avx512, rtr_rows16_avx2, rtr_rows16_portable))
          : (half ? simd::simd_select(rtr_half_rows_avx512, rtr_half_rows_avx2,
                                      rtr_half_rows_portable)
                  : simd::simd_select(rtr_rows_avx512, rtr_rows_avx2, rtr_rows_portable));
  parallel_chunks(N, threads, 4, [&](int64_t r0, int64_t r1) {
    rows(a, static_cast<int>(r0), static_cast<int>(r1));
  });
}

}  // namespace gocor_detail
}  // namespace gocor
