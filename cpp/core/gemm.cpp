// The one packed GEMM (gemm.h): operands packed into micro-panels, a register-tiled micro-kernel
// per SIMD level (simd.h), cache blocking over k, tiles of C shared between threads.
#include "gemm.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <string>

#include "common.h"
#include "gemm_amx.h"
#include "parallel.h"
#include "simd.h"

namespace gocor {
namespace gocor_detail {
namespace {

// Non-temporal stores of one vector to 64-byte aligned memory (no read for ownership, not kept in
// cache); plain stores where the ISA has none.
#if GOCOR_SIMD_X86
GOCOR_TARGET_AVX512 inline void stream_store(float* p, simd::v16 v) {
  _mm512_stream_ps(p, (__m512)v);
}
GOCOR_TARGET_AVX2 inline void stream_store(float* p, simd::v8 v) {
  _mm256_stream_ps(p, (__m256)v);
}
inline void stream_store(float* p, simd::v4 v) {
  _mm_stream_ps(p, (__m128)v);
}
// Orders the non-temporal stores before whatever follows (another thread reading C).
inline void stream_fence() {
  _mm_sfence();
}
#else
template <typename T>
inline void stream_store(float* p, T v) {
  std::memcpy(p, &v, sizeof v);
}
inline void stream_fence() {}
#endif

// C tile (m x n of MR x NV*W) = or += A panel (kc x MR, row stride lda) * B panel (kc x NV*W, row
// stride ldb). Fused multiply-adds in float32, one accumulator per output, over k in order, so the
// result does not depend on whether a panel was packed or read in place.
// With `stream` (c 64-byte aligned, ldc a multiple of 16, acc false) full tiles are written with
// non-temporal stores.
template <class V, int MR, int NV>
GOCOR_INLINE void gemm_ukr(int kc, const float* a, int64_t lda, const float* b, int64_t ldb,
                           float* c, int64_t ldc, int m, int n, bool acc, bool stream) {
  using T = typename V::T;
  constexpr int NR = NV * V::W;
  T r[MR][NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) r[i][j] = V::zero();
  }
  for (int k = 0; k < kc; ++k) {
    T bv[NV];
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) bv[j] = V::loadu(b + j * V::W);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      const float av = a[i];
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) r[i][j] = V::fma(av, bv[j], r[i][j]);
    }
    a += lda;
    b += ldb;
  }
  if (m == MR && n == NR) {
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) {
        float* p = c + i * ldc + j * V::W;
        if (stream) {
          stream_store(p, r[i][j]);
        } else {
          V::storeu(p, acc ? r[i][j] + V::loadu(p) : r[i][j]);
        }
      }
    }
    return;
  }
  // Edge tile: every register is visited with a constant index (so the tile stays in registers
  // above); rows and lanes past the matrix are masked off.
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) {
      const int lanes = std::min(n - j * V::W, V::W);
      if (i >= m || lanes <= 0) continue;
      float* p = c + i * ldc + j * V::W;
      V::store_n(p, acc ? r[i][j] + V::load_n(p, lanes) : r[i][j], lanes);
    }
  }
}

using UkrFn = void (*)(int, const float*, int64_t, const float*, int64_t, float*, int64_t, int, int,
                       bool, bool);

// One full B panel of a row-major operand: K rows of NV vectors, row k at x + k * sk. Vector
// copies inline (a library memcpy call per 256-byte row made packing a fifth of a convolution).
template <class V, int NV>
GOCOR_INLINE void pack_rows(const float* x, int64_t sk, int K, float* o) {
  for (int k = 0; k < K; ++k, x += sk, o += NV * V::W) {
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) V::storeu(o + j * V::W, V::loadu(x + j * V::W));
  }
}
using PackFn = void (*)(const float*, int64_t, int, float*);

// AVX-512: 6 x 64 tile, 24 accumulators + 4 B vectors + 1 broadcast of 32 zmm. AVX2: 6 x 16,
// 12 + 2 + 1 of 16 ymm. Portable: 4 x 8 in two 4-lane vectors.
GOCOR_KERNEL_AVX512 void ukr_avx512(int kc, const float* a, int64_t lda, const float* b,
                                    int64_t ldb, float* c, int64_t ldc, int m, int n, bool acc,
                                    bool stream) {
  gemm_ukr<simd::Vec16, 6, 4>(kc, a, lda, b, ldb, c, ldc, m, n, acc, stream);
}
GOCOR_KERNEL_AVX2 void ukr_avx2(int kc, const float* a, int64_t lda, const float* b, int64_t ldb,
                                float* c, int64_t ldc, int m, int n, bool acc, bool stream) {
  gemm_ukr<simd::Vec8, 6, 2>(kc, a, lda, b, ldb, c, ldc, m, n, acc, stream);
}
GOCOR_KERNEL_PORTABLE void ukr_portable(int kc, const float* a, int64_t lda, const float* b,
                                        int64_t ldb, float* c, int64_t ldc, int m, int n, bool acc,
                                        bool stream) {
  gemm_ukr<simd::Vec4, 4, 2>(kc, a, lda, b, ldb, c, ldc, m, n, acc, stream);
}

GOCOR_KERNEL_AVX512 void pack_rows_avx512(const float* x, int64_t sk, int K, float* o) {
  pack_rows<simd::Vec16, 4>(x, sk, K, o);
}
GOCOR_KERNEL_AVX2 void pack_rows_avx2(const float* x, int64_t sk, int K, float* o) {
  pack_rows<simd::Vec8, 2>(x, sk, K, o);
}
GOCOR_KERNEL_PORTABLE void pack_rows_portable(const float* x, int64_t sk, int K, float* o) {
  pack_rows<simd::Vec4, 2>(x, sk, K, o);
}

#if GOCOR_SIMD_X86
// One full 6-wide A panel of a row-major operand (K rows, row k at x + k * sk): eight rows at a
// time become three whole vectors, each gathered by masked loads of the rows' 6-float pieces
// (masked-off lanes are not accessed, and every lane read lies in rows k .. k+7) and stored at
// once. The piecewise copy (two moves per row) wrote each panel in 24-byte bits: the query's copy
// into the packed layout at 1024 positions, C = 256, took 0.10 ms against 0.047 ms for the
// 64-wide B panels.
GOCOR_KERNEL_AVX512 void pack_a6_avx512(const float* x, int64_t sk, int K, float* o) {
  int k = 0;
  for (; k + 8 <= K; k += 8, x += 8 * sk, o += 48) {
    const float* r[8];
    for (int j = 0; j < 8; ++j) r[j] = x + j * sk;
    __m512 v0 = _mm512_maskz_loadu_ps(0x003F, r[0]);
    v0 = _mm512_mask_loadu_ps(v0, 0x0FC0, r[1] - 6);
    v0 = _mm512_mask_loadu_ps(v0, 0xF000, r[2] - 12);
    __m512 v1 = _mm512_maskz_loadu_ps(0x0003, r[2] + 4);
    v1 = _mm512_mask_loadu_ps(v1, 0x00FC, r[3] - 2);
    v1 = _mm512_mask_loadu_ps(v1, 0x3F00, r[4] - 8);
    v1 = _mm512_mask_loadu_ps(v1, 0xC000, r[5] - 14);
    __m512 v2 = _mm512_maskz_loadu_ps(0x000F, r[5] + 2);
    v2 = _mm512_mask_loadu_ps(v2, 0x03F0, r[6] - 4);
    v2 = _mm512_mask_loadu_ps(v2, 0xFC00, r[7] - 10);
    _mm512_storeu_ps(o, v0);
    _mm512_storeu_ps(o + 16, v1);
    _mm512_storeu_ps(o + 32, v2);
  }
  for (; k < K; ++k, x += sk, o += 6) std::memcpy(o, x, sizeof(float) * 6);
}
#endif

struct Ukr {
  UkrFn fn;
  int mr, nr;
  PackFn pack_a;  // a full mr-wide A panel from contiguous rows (null: copied row by row)
  PackFn pack_b;  // a full nr-wide B panel from contiguous rows
};
Ukr active_ukr() {
#if GOCOR_SIMD_X86
  constexpr PackFn pack_a6 = pack_a6_avx512;
#else
  constexpr PackFn pack_a6 = nullptr;
#endif
  return simd::simd_select(Ukr{ukr_avx512, 6, 64, pack_a6, pack_rows_avx512},
                           Ukr{ukr_avx2, 6, 16, nullptr, pack_rows_avx2},
                           Ukr{ukr_portable, 4, 8, nullptr, pack_rows_portable});
}

// 64-byte aligned scratch; an allocation failure becomes a TooLarge error, not std::bad_alloc.
float* aligned_alloc_floats(int64_t n) {
  try {
    return static_cast<float*>(
        ::operator new(static_cast<size_t>(n) * sizeof(float), std::align_val_t(64)));
  } catch (const std::bad_alloc&) {
    throw Error(ErrorCode::TooLarge,
                "gemm: cannot allocate " + std::to_string(n * 4) + " bytes of scratch memory");
  }
}
void aligned_free_floats(float* p) {
  ::operator delete(p, std::align_val_t(64));
}

// Packing buffers of the calling thread, kept between calls: a fresh multi-MiB allocation is
// mapped anew by the OS every time and its page faults cost as much as a small GEMM. Requests
// above kKeepFloats are served once and released.
class Scratch {
 public:
  explicit Scratch(int64_t n) {
    constexpr int64_t kKeepFloats = int64_t{32} << 20;  // 128 MiB
    Cache& c = cache();
    if (n > kKeepFloats || c.in_use) {  // too large, or re-entered on this thread
      own_ = aligned_alloc_floats(n);
      p_ = own_;
      return;
    }
    if (c.size < n) {
      aligned_free_floats(c.p);
      c.p = nullptr;
      c.size = 0;
      c.p = aligned_alloc_floats(n);
      c.size = n;
    }
    c.in_use = true;
    p_ = c.p;
  }
  ~Scratch() {
    if (own_ != nullptr) {
      aligned_free_floats(own_);
    } else {
      cache().in_use = false;
    }
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  float* get() const { return p_; }
  // Frees the calling thread's cached block (unless a GEMM on this thread is using it).
  static void release() {
    Cache& c = cache();
    if (c.in_use) return;
    aligned_free_floats(c.p);
    c.p = nullptr;
    c.size = 0;
  }

 private:
  struct Cache {
    float* p = nullptr;
    int64_t size = 0;
    bool in_use = false;
    ~Cache() { aligned_free_floats(p); }
  };
  static Cache& cache() {
    static thread_local Cache c;
    return c;
  }
  float* p_ = nullptr;
  float* own_ = nullptr;
};

// Cache blocking: a KC-deep A micro-panel (MR x KC) stays in L1 while the micro-kernel walks the
// NC columns of a KC x NC block of B held in L2; C tiles of MC x NC are the units of work shared
// between threads. Measured on Zen 5 (1 MiB L2, 48 KiB L1): KC = 512 keeps C <= 512 in one pass.
constexpr int kKc = 512;
constexpr int kNc = 256;
constexpr int kMc = 96;
// A final C (GemmArgs::c_final) of this many floats or more (16 MiB: beyond any L2 and a good part
// of a shared L3), written once (no accumulation, one k block), is stored non-temporally: no read
// for ownership of lines that would be evicted before they are read again. 4096 x 4096 x 64: ~10 %
// less time; at 4 MiB (1024 positions) no difference, so smaller outputs keep plain stores. Other
// results (a layer's output that the next layer reads at once) keep plain stores.
constexpr int64_t kStreamFloats = int64_t{4} << 20;

// Copies of P floats with a constant size, so that they compile to a few moves instead of a
// library call per k (which made packing A cost a third of a 256 x 256 GEMM).
template <int P>
void pack_full_panel(const float* x, int64_t sk, int K, float* o) {
  for (int k = 0; k < K; ++k, x += sk, o += P) std::memcpy(o, x, sizeof(float) * P);
}

// The same for a source whose P columns are rows of stride sl (element k of column i at
// x[i * sl + k * sk]).
template <int P>
void pack_gather_panel(const float* x, int64_t sk, int64_t sl, int K, float* o) {
  const float* col[P];
  for (int i = 0; i < P; ++i) col[i] = x + i * sl;
  for (int k = 0; k < K; ++k, o += P) {
    for (int i = 0; i < P; ++i) o[i] = col[i][k * sk];
  }
}

// Packs panels p0 .. p1-1 of an operand X with K rows (the reduction index) of L elements, element
// (k, l) at x[k * sk + l * sl], into P-wide k-major panels:
// out[((panel - first) * K + k) * P + i] = X(k, panel * P + i), zero past L.
// pack_rows, when given, packs the full P-wide panels of a source with sl == 1.
void pack_panels(const float* x, int64_t sk, int64_t sl, int K, int L, int P, float* out,
                 int64_t first, int64_t p0, int64_t p1, PackFn pack_rows = nullptr) {
  for (int64_t p = p0; p < p1; ++p) {
    const int l0 = static_cast<int>(p * P);
    const int n = std::min(P, L - l0);
    float* o = out + (p - first) * static_cast<int64_t>(K) * P;
    if (sl != 1) {  // source rows run along k: gather, k outer so the panel is written in order
      if (n == P && P == 6) {
        pack_gather_panel<6>(x + l0 * sl, sk, sl, K, o);
      } else if (n == P && P == 4) {
        pack_gather_panel<4>(x + l0 * sl, sk, sl, K, o);
      } else {
        for (int k = 0; k < K; ++k, o += P) {
          for (int i = 0; i < n; ++i) o[i] = x[(l0 + i) * sl + k * sk];
          for (int i = n; i < P; ++i) o[i] = 0.f;
        }
      }
      continue;
    }
    if (n == P && pack_rows != nullptr) {
      pack_rows(x + l0, sk, K, o);
      continue;
    }
    if (n == P && P == 4) {
      pack_full_panel<4>(x + l0, sk, K, o);
      continue;
    }
    if (n == P && P == 6) {
      pack_full_panel<6>(x + l0, sk, K, o);
      continue;
    }
    for (int k = 0; k < K; ++k, o += P) {
      const float* src = x + k * sk + l0;
      std::memcpy(o, src, sizeof(float) * n);
      if (n < P) std::memset(o + n, 0, sizeof(float) * (P - n));
    }
  }
}

// Whether A is packed in full. A k-major A can be read in place (row stride lda); packing pays
// off only when the in-place rows are far apart: A panels are MR (4 or 6) floats wide, one k row
// touches one or two cache lines, and the rows stay in L1/L2 while the micro-kernel walks the
// column panels, but rows 4 KiB or more apart alias in L1. Measured: 256 positions faster in place
// (packing was a third of the time); 1024 positions faster in place on Zen 5 but 1.4-2x slower on
// this Intel Xeon at C = 512 (34 vs 47-68 GFLOP/s) and no faster at C = 64/256; 4096 faster packed.
// B panels are 64 floats wide and always packed: read in place they were slower at 1024 positions
// and no faster at 256.
bool pack_a_fully(int m, bool a_trans) {
  return !a_trans || m > 512;
}

// Floats of packing scratch: A in full or only its last partial panel, and B in full, each
// rounded to 64 bytes; none for an operand given packed.
int64_t scratch_a_floats(const Ukr& u, int m, int k, bool a_trans, bool given) {
  const int64_t mp = (m + u.mr - 1) / u.mr;
  return given ? 0 : ((pack_a_fully(m, a_trans) ? mp : 1) * u.mr * int64_t{k} + 15) / 16 * 16;
}
int64_t scratch_b_floats(const Ukr& u, int n, int k, bool given) {
  const int64_t np = (n + u.nr - 1) / u.nr;
  return given ? 0 : (np * u.nr * int64_t{k} + 15) / 16 * 16;
}

}  // namespace

size_t gemm_scratch_bytes(int m, int n, int k, bool a_trans) {
  const Ukr u = active_ukr();
  return std::max(gemm_amx_scratch_bytes(m, n, k),
                  sizeof(float) * static_cast<size_t>(scratch_a_floats(u, m, k, a_trans, false) +
                                                      scratch_b_floats(u, n, k, false)));
}

int gemm_panel_width(GemmSide side) {
  const Ukr u = active_ukr();
  return side == GemmSide::A ? u.mr : u.nr;
}

int64_t gemm_packed_floats(GemmSide side, int K, int L) {
  const int64_t P = gemm_panel_width(side);
  return (L + P - 1) / P * P * int64_t{K};
}

void gemm_pack_rows(GemmSide side, const float* x, int64_t ldx, int k0, int k1, int K, int L,
                    float* out) {
  const Ukr u = active_ukr();
  const int P = side == GemmSide::A ? u.mr : u.nr;
  const int64_t np = (L + P - 1) / P;
  // Each panel is packed on its own, as a (k1 - k0)-row operand written at its rows' place.
  for (int64_t p = 0; p < np; ++p) {
    pack_panels(x + k0 * ldx, ldx, 1, k1 - k0, L, P, out + (p * K + k0) * P, p, p, p + 1,
                side == GemmSide::B ? u.pack_b : u.pack_a);
  }
}

void gemm_release_thread_buffers() {
  Scratch::release();
  gocor_detail::gemm_amx_release_thread_buffers();
}

bool gemm_uses_amx(int m, int n, int k, bool b_amortised) {
  return gemm_amx_suits(m, n, k, b_amortised) && amx_usable();
}

void gemm(const GemmArgs& g, int threads) {
  const int M = g.m, N = g.n, K = g.k;
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!g.accumulate)
      for (int i = 0; i < M; ++i) std::fill(g.c + i * g.ldc, g.c + i * g.ldc + N, 0.f);
    return;
  }
  // Operands given in the float32 packed layout stay on the micro-kernel; the others take the
  // AMX tiles where the machine has them and the shape pays for the split.
  if (g.a_packed == nullptr && g.b_packed == nullptr &&
      gemm_uses_amx(M, N, K, g.b_keep || g.b_unchanged)) {
    gemm_amx(g, threads);
    return;
  }
  const Ukr u = active_ukr();
  const int MR = u.mr, NR = u.nr;
  const int mp = (M + MR - 1) / MR, np = (N + NR - 1) / NR;
  const bool a_given = g.a_packed != nullptr, b_given = g.b_packed != nullptr;
  const bool pack_a = a_given || pack_a_fully(M, g.a_trans);
  const int mfull = M / MR;
  // Strides of op(a) and op(b) as (k, index) operands.
  const int64_t ask = g.a_trans ? g.lda : 1, asl = g.a_trans ? 1 : g.lda;
  const int64_t bsk = g.b_trans ? 1 : g.ldb, bsl = g.b_trans ? g.ldb : 1;
  const int64_t a_floats = scratch_a_floats(u, M, K, g.a_trans, a_given);
  Scratch scratch(a_floats + scratch_b_floats(u, N, K, b_given));
  float* a_scratch = scratch.get();
  float* b_scratch = a_scratch + a_floats;
  const float* ap = a_given ? g.a_packed : a_scratch;
  const float* bp = b_given ? g.b_packed : b_scratch;
  // Packed panels: all of an operand, or only A's last partial panel (rows past M are zero).
  if (pack_a && !a_given) {
    parallel_chunks(mp, threads, 16, [&](int64_t p0, int64_t p1) {
      pack_panels(g.a, ask, asl, K, M, MR, a_scratch, 0, p0, p1, u.pack_a);
    });
  } else if (!pack_a && mfull < mp) {
    pack_panels(g.a, ask, asl, K, M, MR, a_scratch, mfull, mfull, mp);
  }
  if (!b_given) {
    parallel_chunks(np, threads, 4, [&](int64_t p0, int64_t p1) {
      pack_panels(g.b, bsk, bsl, K, N, NR, b_scratch, 0, p0, p1, u.pack_b);
    });
  }

  // Panels per work tile; shrink the tiles when there would be too few to keep every thread busy.
  const int nthreads = threads <= 0 ? pool_size() : std::min(threads, pool_size());
  int mc = std::max(1, kMc / MR), nc = std::max(1, kNc / NR);
  while (nthreads > 1 &&
         static_cast<int64_t>((mp + mc - 1) / mc) * ((np + nc - 1) / nc) < 4 * nthreads &&
         (mc > 1 || nc > 1)) {
    if (nc >= mc && nc > 1) {
      nc = (nc + 1) / 2;
    } else {
      mc = (mc + 1) / 2;
    }
  }
  const int tm = (mp + mc - 1) / mc, tn = (np + nc - 1) / nc;
  const bool stream = g.c_final && !g.accumulate && K <= kKc && int64_t{M} * N >= kStreamFloats &&
                      reinterpret_cast<uintptr_t>(g.c) % 64 == 0 && g.ldc % 16 == 0;
  // Tiles down the rows of C first: a column block of packed B (KC x NC, 256 KiB at K = 256)
  // stays in L2 across all of A instead of being fetched again for every tile (4096 x 4096 x 256:
  // B's 4 MiB read from L3 once, not once per 96-row tile, 683 times; ~3 % less time).
  parallel_for(static_cast<int64_t>(tm) * tn, threads, [&](int64_t t) {
    const int ip0 = static_cast<int>(t % tm) * mc, jp0 = static_cast<int>(t / tm) * nc;
    const int ip1 = std::min(mp, ip0 + mc), jp1 = std::min(np, jp0 + nc);
    for (int k0 = 0; k0 < K; k0 += kKc) {
      const int kc = std::min(kKc, K - k0);
      for (int ip = ip0; ip < ip1; ++ip) {
        const bool a_packed = pack_a || ip >= mfull;
        const float* a = a_packed
                             ? ap + (static_cast<int64_t>(ip - (pack_a ? 0 : mfull)) * K + k0) * MR
                             : g.a + k0 * ask + int64_t{ip} * MR;
        const int64_t lda = a_packed ? MR : ask;
        const int i0 = ip * MR;
        for (int jp = jp0; jp < jp1; ++jp) {
          const float* b = bp + (static_cast<int64_t>(jp) * K + k0) * NR;
          const int j0 = jp * NR;
          u.fn(kc, a, lda, b, NR, g.c + static_cast<int64_t>(i0) * g.ldc + j0, g.ldc,
               std::min(MR, M - i0), std::min(NR, N - j0), g.accumulate || k0 > 0, stream);
        }
      }
    }
    if (stream) stream_fence();
  });
}

void gemm(int m, int n, int k, const float* a, int64_t lda, const float* b, int64_t ldb,
          bool b_trans, float* c, int64_t ldc, bool accumulate, int threads) {
  gemm(GemmArgs{m, n, k, a, lda, false, b, ldb, b_trans, c, ldc, accumulate}, threads);
}

}  // namespace gocor_detail
}  // namespace gocor
