// Plain feature correlation on the CPU: global = the packed GEMM (gemm.h); local = the kernel
// below, one entry per SIMD level (simd.h) chosen at run time.
#include "correlation.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "gemm.h"
#include "gemm_amx.h"
#include "parallel.h"
#include "simd.h"

namespace gocor {
namespace corr_detail {
namespace {

// Arguments of the local correlation kernel for one batch element, read in place:
// ref and query (C, H, W).
struct LocalArgs {
  const float* ref;
  const float* query;
  int C, H, W, R;
};

// Channels per pass of the local kernel (see local_rows).
constexpr int kLocalChunk = 64;

// One strip of V::W pixels at column xs, ROWS reference rows (y0, y0+1) against one query row,
// G consecutive displacements dx0 .. dx0+G-1:  out[g][x] = (sum_c r[c][x] * q[c][x + dx0 + g]) / C.
// Inputs are read in place (NCHW, channel stride cs). r0, r1: reference at (c=0, y, xs);
// q: query at (c=0, yq, xs + dx0); o0, o1: output of the first displacement, displacement stride
// os. EDGE strips mask every load to the image (the query outside it is zero) and store nvalid
// lanes; interior strips use plain loads.
// Channels are summed in chunks: `add` adds the partial sums already in the output, `scale` divides
// by C (the last chunk). A chunk's rows stay in L1/L2 while the strips walk them.
template <class V, int G, int ROWS, bool EDGE>
GOCOR_INLINE void local_block(int C, const float* r0, const float* r1, const float* q, int64_t cs,
                              float* o0, float* o1, int64_t os, int xq0, int W, int nvalid,
                              bool add, float scale) {
  typename V::T acc0[G], acc1[G];
  int lo[G], hi[G];
#pragma GCC unroll 16
  for (int g = 0; g < G; ++g) {
    acc0[g] = V::zero();
    acc1[g] = V::zero();
    lo[g] = std::min(V::W, std::max(0, -(xq0 + g)));
    hi[g] = std::max(0, std::min(V::W, W - (xq0 + g)));
  }
  for (int c = 0; c < C; ++c) {
    const int64_t off = c * cs;
    typename V::T a0 = EDGE ? V::load_lanes(r0 + off, 0, nvalid) : V::loadu(r0 + off);
    typename V::T a1 = ROWS < 2 ? a0
                       : EDGE   ? V::load_lanes(r1 + off, 0, nvalid)
                                : V::loadu(r1 + off);
#pragma GCC unroll 16
    for (int g = 0; g < G; ++g) {
      typename V::T qv = EDGE ? V::load_lanes(q + off + g, lo[g], hi[g]) : V::loadu(q + off + g);
      acc0[g] = V::fma(a0, qv, acc0[g]);
      if (ROWS > 1) acc1[g] = V::fma(a1, qv, acc1[g]);
    }
  }
#pragma GCC unroll 16
  for (int g = 0; g < G; ++g) {
    float* p0 = o0 + g * os;
    float* p1 = o1 + g * os;
    if (add) {
      acc0[g] = acc0[g] + (EDGE ? V::load_n(p0, nvalid) : V::loadu(p0));
      if (ROWS > 1) acc1[g] = acc1[g] + (EDGE ? V::load_n(p1, nvalid) : V::loadu(p1));
    }
    if (scale != 1.0f) {
      acc0[g] = acc0[g] / scale;
      if (ROWS > 1) acc1[g] = acc1[g] / scale;
    }
    if (!EDGE) {
      V::storeu(p0, acc0[g]);
      if (ROWS > 1) V::storeu(p1, acc1[g]);
    } else {
      V::store_n(p0, acc0[g], nvalid);
      if (ROWS > 1) V::store_n(p1, acc1[g], nvalid);
    }
  }
}

template <class V, int GMAX, int ROWS, bool EDGE>
GOCOR_INLINE void local_block_n(int g, int C, const float* r0, const float* r1, const float* q,
                                int64_t cs, float* o0, float* o1, int64_t os, int xq0, int W,
                                int nvalid, bool add, float scale) {
#define GOCOR_LOCAL_CASE(n)                                                                       \
  case n:                                                                                         \
    local_block<V, (n <= GMAX ? n : 1), ROWS, EDGE>(C, r0, r1, q, cs, o0, o1, os, xq0, W, nvalid, \
                                                    add, scale);                                  \
    break;
  switch (g) {
    GOCOR_LOCAL_CASE(1)
    GOCOR_LOCAL_CASE(2)
    GOCOR_LOCAL_CASE(3)
    GOCOR_LOCAL_CASE(4)
    GOCOR_LOCAL_CASE(5)
    GOCOR_LOCAL_CASE(6)
    GOCOR_LOCAL_CASE(7)
    GOCOR_LOCAL_CASE(8)
    GOCOR_LOCAL_CASE(9)
    GOCOR_LOCAL_CASE(10)
    GOCOR_LOCAL_CASE(11)
    GOCOR_LOCAL_CASE(12)
    default: break;
  }
#undef GOCOR_LOCAL_CASE
}

// Rows y0 .. y0+nrows-1 of out (D, H, W). Each query row is read once per strip and serves both
// reference rows (at displacements dy and dy-1), which halves the query loads per multiply-add.
template <class V, int GMAX>
GOCOR_INLINE void local_rows(const LocalArgs& a, float* out, int y0, int nrows) {
  const int R = a.R, C = a.C, H = a.H, W = a.W;
  const int D1 = 2 * R + 1;
  const int64_t HW = static_cast<int64_t>(H) * W;
  const int ngroups = (D1 + GMAX - 1) / GMAX;
  const int gbase = D1 / ngroups, gextra = D1 % ngroups;
  const int ylast = y0 + nrows - 1;
  // Chunks of channels outer, then query rows, then strips: the chunk of the two reference rows
  // and of one query row (about 200 KiB) stays in L2 while the strips walk it, and one strip's
  // lines (about 16 KiB) in L1 across the displacement groups.
  for (int c0 = 0; c0 < C; c0 += kLocalChunk) {
    const int cn = std::min(kLocalChunk, C - c0);
    const bool add = c0 > 0;
    const float scale = c0 + cn == C ? static_cast<float>(C) : 1.0f;
    const float* ref = a.ref + c0 * HW;
    const float* query = a.query + c0 * HW;
    for (int yq = std::max(0, y0 - R); yq <= std::min(H - 1, ylast + R); ++yq) {
      const bool v0 = yq - y0 <= R;
      const bool v1 = nrows > 1 && yq - ylast >= -R;
      for (int xs = 0; xs < W; xs += V::W) {
        const int nvalid = std::min(V::W, W - xs);
        const bool edge = xs - R < 0 || xs + V::W + R > W;
        const float* r0 = ref + int64_t{y0} * W + xs;
        const float* r1 = ref + int64_t{ylast} * W + xs;
        int dx0 = -R;
        for (int gi = 0; gi < ngroups; ++gi) {
          const int g = gbase + (gi < gextra ? 1 : 0);
          const float* q = query + int64_t{yq} * W + xs + dx0;
          // Output of displacement (yq - y, dx0) at row y; only formed for a valid row.
          float* o0 =
              v0 ? out + ((yq - y0 + R) * D1 + dx0 + R) * HW + int64_t{y0} * W + xs : nullptr;
          float* o1 =
              v1 ? out + ((yq - ylast + R) * D1 + dx0 + R) * HW + int64_t{ylast} * W + xs : nullptr;
          const float* ra = v0 ? r0 : r1;
          float* oa = v0 ? o0 : o1;
          const int xq0 = xs + dx0;
          if (v0 && v1 && !edge) {
            local_block_n<V, GMAX, 2, false>(g, cn, r0, r1, q, HW, o0, o1, HW, xq0, W, nvalid, add,
                                             scale);
          } else if (v0 && v1) {
            local_block_n<V, GMAX, 2, true>(g, cn, r0, r1, q, HW, o0, o1, HW, xq0, W, nvalid, add,
                                            scale);
          } else if (!edge) {
            local_block_n<V, GMAX, 1, false>(g, cn, ra, ra, q, HW, oa, oa, HW, xq0, W, nvalid, add,
                                             scale);
          } else {
            local_block_n<V, GMAX, 1, true>(g, cn, ra, ra, q, HW, oa, oa, HW, xq0, W, nvalid, add,
                                            scale);
          }
          dx0 += g;
        }
      }
    }
  }
}

// Rows y0 .. y0+nrows-1 (nrows 1 or 2) of out (D, H, W) of one batch element, every displacement
// whose query row y+dy lies inside the image (the others are left untouched). Displacements per
// register block: 12 on AVX-512 (32 zmm), 6 on AVX2 (16 ymm), 4 portable.
using LocalRowsFn = void (*)(const LocalArgs&, float*, int, int);
GOCOR_KERNEL_AVX512 void local_rows_avx512(const LocalArgs& a, float* out, int y0, int nrows) {
  local_rows<simd::Vec16, 12>(a, out, y0, nrows);
}
GOCOR_KERNEL_AVX2 void local_rows_avx2(const LocalArgs& a, float* out, int y0, int nrows) {
  local_rows<simd::Vec8, 6>(a, out, y0, nrows);
}
GOCOR_KERNEL_PORTABLE void local_rows_portable(const LocalArgs& a, float* out, int y0, int nrows) {
  local_rows<simd::Vec4, 4>(a, out, y0, nrows);
}

void require(bool ok, ErrorCode code, const std::string& what) {
  if (!ok) throw Error(code, what);
}

void validate_global(const float* reference, const float* query, const float* out,
                     const CorrGlobalShape& s) {
  require(reference != nullptr && query != nullptr && out != nullptr, ErrorCode::InvalidArg,
          "corr_global: null tensor pointer");
  require(s.B >= 1 && s.C >= 1 && s.H >= 1 && s.W >= 1 && s.Hq >= 1 && s.Wq >= 1, ErrorCode::Shape,
          "corr_global: every dimension must be >= 1 (B=" + std::to_string(s.B) + ", C=" +
              std::to_string(s.C) + ", H=" + std::to_string(s.H) + ", W=" + std::to_string(s.W) +
              ", Hq=" + std::to_string(s.Hq) + ", Wq=" + std::to_string(s.Wq) + ")");
  const int64_t n = int64_t{s.H} * s.W, m = int64_t{s.Hq} * s.Wq;
  require(n < (int64_t{1} << 31) / 64 && m < (int64_t{1} << 31) / 64, ErrorCode::TooLarge,
          "corr_global: too many positions");
}

void validate_local(const float* a, const float* b, const float* out, const CorrLocalShape& s,
                    const char* name) {
  require(a != nullptr && b != nullptr && out != nullptr, ErrorCode::InvalidArg,
          std::string(name) + ": null tensor pointer");
  require(s.B >= 1 && s.C >= 1 && s.H >= 1 && s.W >= 1, ErrorCode::Shape,
          std::string(name) + ": B, C, H, W must be >= 1 (B=" + std::to_string(s.B) +
              ", C=" + std::to_string(s.C) + ", H=" + std::to_string(s.H) +
              ", W=" + std::to_string(s.W) + ")");
  require(
      s.R >= 0 && s.R <= 64, ErrorCode::InvalidArg,
      std::string(name) + ": search radius R must be in [0, 64], received " + std::to_string(s.R));
  require(int64_t{s.H} * s.W < (int64_t{1} << 31) / 16, ErrorCode::TooLarge,
          std::string(name) + ": too many positions");
}

}  // namespace

}  // namespace corr_detail

using corr_detail::LocalArgs;

const char* cpu_simd_level() {
  return simd::simd_name(simd::simd_active());
}

bool cpu_amx() {
  return gocor_detail::amx_usable();
}

namespace {

// The GEMM side an input is, and its number of positions.
gocor_detail::GemmSide side_of(CorrInput which) {
  return which == CorrInput::Query ? gocor_detail::GemmSide::A : gocor_detail::GemmSide::B;
}
int positions_of(CorrInput which, const CorrGlobalShape& s) {
  return which == CorrInput::Query ? s.Hq * s.Wq : s.H * s.W;
}
int64_t packed_floats_per_batch(CorrInput which, const CorrGlobalShape& s) {
  return gocor_detail::gemm_packed_floats(side_of(which), s.C, positions_of(which, s));
}

// out_b (M x N) = Q^T F for every batch element, Q = query_b viewed (C x M) and F = reference_b
// viewed (C x N), both plain or both packed (corr_global_pack).
void global_gemms(const float* reference, const float* query, bool packed, float* out,
                  const CorrGlobalShape& s, const Exec& ex) {
  corr_detail::validate_global(reference, query, out, s);
  const int N = s.H * s.W, M = s.Hq * s.Wq, K = s.C;
  const int64_t rn = packed ? packed_floats_per_batch(CorrInput::Reference, s) : int64_t{K} * N;
  const int64_t qn = packed ? packed_floats_per_batch(CorrInput::Query, s) : int64_t{K} * M;
  for (int b = 0; b < s.B; ++b) {
    check_cancel(ex);
    const float* q = query + b * qn;
    const float* f = reference + b * rn;
    gocor_detail::GemmArgs g{M, N, K, q, M, true, f, N, false, out + int64_t{b} * M * N, N, false};
    if (packed) {
      g.a_packed = g.a;
      g.b_packed = g.b;
      // The packed entry serves the binding, whose volume goes to the caller; match and the
      // networks read theirs at once and keep plain stores.
      g.c_final = true;
    }
    gocor_detail::gemm(g, ex.threads);
  }
}

}  // namespace

void corr_global_cpu(const float* reference, const float* query, float* out,
                     const CorrGlobalShape& s, const Exec& ex) {
  global_gemms(reference, query, false, out, s, ex);
}

size_t corr_global_work_bytes(const CorrGlobalShape& s) {
  return gocor_detail::gemm_scratch_bytes(s.Hq * s.Wq, s.H * s.W, s.C, true);
}

size_t corr_global_packed_floats(CorrInput which, const CorrGlobalShape& s) {
  return static_cast<size_t>(s.B) * static_cast<size_t>(packed_floats_per_batch(which, s));
}

void corr_global_pack(CorrInput which, const CorrGlobalShape& s, const float* x, int b, int c0,
                      int c1, float* packed) {
  const int L = positions_of(which, s);
  gocor_detail::gemm_pack_rows(side_of(which), x, L, c0, c1, s.C, L,
                               packed + b * packed_floats_per_batch(which, s));
}

void corr_global_packed_cpu(const float* reference_packed, const float* query_packed, float* out,
                            const CorrGlobalShape& s, const Exec& ex) {
  global_gemms(reference_packed, query_packed, true, out, s, ex);
}

void corr_local_cpu(const float* reference, const float* query, float* out, const CorrLocalShape& s,
                    const Exec& ex) {
  corr_detail::validate_local(reference, query, out, s, "corr_local");
  const corr_detail::LocalRowsFn local_rows =
      simd::simd_select(corr_detail::local_rows_avx512, corr_detail::local_rows_avx2,
                        corr_detail::local_rows_portable);
  const int C = s.C, H = s.H, W = s.W, R = s.R, D1 = 2 * R + 1;
  const int64_t HW = int64_t{H} * W, D = int64_t{D1} * D1;
  for (int b = 0; b < s.B; ++b) {
    check_cancel(ex);
    const LocalArgs a{reference + b * C * HW, query + b * C * HW, C, H, W, R};
    float* ob = out + b * D * HW;
    const int pairs = (H + 1) / 2;
    parallel_for(pairs, ex.threads, [&](int64_t p) {
      check_cancel(ex);
      const int y0 = static_cast<int>(2 * p), nrows = std::min(2, H - y0);
      // Displacements that leave the image vertically are zero and never computed.
      for (int y = y0; y < y0 + nrows; ++y) {
        for (int dy = -R; dy <= R; ++dy) {
          if (y + dy >= 0 && y + dy < H) continue;
          for (int dx = 0; dx < D1; ++dx) {
            std::memset(ob + ((dy + R) * D1 + dx) * HW + int64_t{y} * W, 0, sizeof(float) * W);
          }
        }
      }
      local_rows(a, ob, y0, nrows);
    });
  }
}

void corr_global_naive(const float* reference, const float* query, float* out,
                       const CorrGlobalShape& s) {
  corr_detail::validate_global(reference, query, out, s);
  const int64_t N = int64_t{s.H} * s.W, M = int64_t{s.Hq} * s.Wq;
  for (int b = 0; b < s.B; ++b) {
    const float* f = reference + b * s.C * N;
    const float* g = query + b * s.C * M;
    for (int64_t t = 0; t < M; ++t) {
      for (int64_t r = 0; r < N; ++r) {
        double acc = 0.0;
        for (int c = 0; c < s.C; ++c) acc += double{f[c * N + r]} * double{g[c * M + t]};
        out[(b * M + t) * N + r] = static_cast<float>(acc);
      }
    }
  }
}

void corr_local_naive(const float* reference, const float* query, float* out,
                      const CorrLocalShape& s) {
  corr_detail::validate_local(reference, query, out, s, "corr_local");
  const int C = s.C, H = s.H, W = s.W, R = s.R, D1 = 2 * R + 1;
  const int64_t HW = int64_t{H} * W;
  for (int b = 0; b < s.B; ++b) {
    const float* f = reference + b * C * HW;
    const float* g = query + b * C * HW;
    float* o = out + b * int64_t{D1} * D1 * HW;
    for (int dy = -R; dy <= R; ++dy) {
      for (int dx = -R; dx <= R; ++dx) {
        float* ok = o + ((dy + R) * D1 + (dx + R)) * HW;
        for (int y = 0; y < H; ++y) {
          for (int x = 0; x < W; ++x) {
            const int yq = y + dy, xq = x + dx;
            double acc = 0.0;
            if (yq >= 0 && yq < H && xq >= 0 && xq < W) {
              for (int c = 0; c < C; ++c) {
                acc += double{f[c * HW + y * W + x]} * double{g[c * HW + yq * W + xq]};
              }
            }
            ok[y * W + x] = static_cast<float>(acc / C);
          }
        }
      }
    }
  }
}

}  // namespace gocor
