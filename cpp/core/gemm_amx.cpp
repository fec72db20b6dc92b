// The AMX path of gemm() (gemm.h): float32 products from bfloat16 tile multiplies, as exact as
// the float32 micro-kernel.
//
// Each float32 operand is split into three bfloat16 pieces, x = x0 + x1 + x2 (x0 = bf16(x),
// x1 = bf16(x - x0), x2 = bf16(x - x0 - x1): 24 significant bits, the whole float32 mantissa),
// and a b = sum of the six products a0b0, a1b0, a0b1, a2b0, a1b1, a0b2; the three dropped ones
// (a1b2, a2b1, a2b2) are together below ~2^-23 of |a b|. The tile unit multiplies bfloat16 pairs
// exactly and accumulates in float32: at about 1024 FLOP/cycle, six products cost a sixth of that,
// still ~2.7x the float32 FMA peak. Measured against a float64 GEMM (test/cpp/gemm_test_main.cpp),
// the largest error is 0.4-0.7x the float32 micro-kernel's (the small products go into the
// accumulator before the large one).
//
// Only x86-64 Linux with AMX-BF16 and the kernel's permission for the tile state runs it; every
// function with AMX or AVX-512BW instructions carries its target attribute and is reached only
// after amx_usable() said yes.
#include "gemm_amx.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <string>

#include "common.h"
#include "parallel.h"
#include "simd.h"

// The AMX intrinsics need GCC 11 or clang 12; older compilers build without this path.
#if GOCOR_SIMD_X86 && defined(__linux__) && defined(__x86_64__) && \
    ((defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && __GNUC__ >= 11))
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#define GOCOR_AMX 1
#else
#define GOCOR_AMX 0
#endif

namespace gocor {
namespace gocor_detail {

#if GOCOR_AMX
// GCC 12 reports the intrinsics' own _mm512_undefined_* placeholders, inlined into these
// target-attribute functions, as maybe uninitialised (a false positive, GCC PR 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
namespace {

#define GOCOR_TARGET_AMX __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,fma")))

// The processor has AMX-BF16 tiles and AVX-512BW (the packing), the OS saves the tile state
// (XCR0 bits 17, 18), and the kernel grants this process the tile data (arch_prctl; Linux asks
// for it once per process, for all of its threads).
bool amx_hardware() {
  unsigned a, b, c, d;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d) == 0) return false;
  const bool amx_bf16 = (d >> 22) & 1, amx_tile = (d >> 24) & 1, avx512bw = (b >> 30) & 1;
  if (!amx_bf16 || !amx_tile || !avx512bw) return false;
  if (__get_cpuid(1, &a, &b, &c, &d) == 0 || ((c >> 27) & 1) == 0) return false;  // OSXSAVE
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if ((lo & (3u << 17)) != (3u << 17)) return false;
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

// The tile configuration of every call: eight 16 x 64-byte tiles (0-3 accumulators of a 32 x 32
// block of C, 4-5 two A tiles of 16 rows x 32 k, 6-7 two B tiles of 16 k pairs x 16 columns).
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {64, 64, 64, 64, 64, 64, 64, 64};
  uint8_t rows[16] = {16, 16, 16, 16, 16, 16, 16, 16};
};

// Packed operands: an A panel is 16 rows of C, a B panel 16 columns; per panel, chunks of 32 k,
// each the three pieces' 16 x 32 bfloat16 tiles (1 KiB each) in a row:
//   A: a_pk[((panel * nk + chunk) * 3 + piece) * 512 + row * 32 + kk]
//   B: b_pk[((panel * nk + chunk) * 3 + piece) * 512 + (kk / 2) * 32 + col * 2 + kk % 2]
// (B in the tile unit's pair layout). Rows, columns and k past the matrix are zero. Panels come in
// pairs (a 32 x 32 block of C), so a side has an even number of panels.
constexpr int kChunk = 32;
constexpr int kTile = 512;  // bfloat16 per tile

// Splits 16 floats into their three bfloat16 pieces (round to nearest even; inputs are finite).
struct Pieces {
  __m256i p[3];
};
GOCOR_TARGET_AMX inline Pieces split16(__m512 x) {
  Pieces out;
  for (int i = 0; i < 3; ++i) {
    const __m512i u = _mm512_castps_si512(x);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i r =
        _mm512_and_si512(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb),
                         _mm512_set1_epi32(static_cast<int>(0xffff0000u)));
    out.p[i] = _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16));
    x = _mm512_sub_ps(x, _mm512_castsi512_ps(r));
  }
  return out;
}

// op(x) seen as (k, l) with element x[k * sk + l * sl]: A has l = row of C, B l = column.
struct Operand {
  const float* x;
  int64_t sk, sl;
  int K, L;
};

// 16 floats of l = l0 .. l0+15 at one k (zero past L), or of k = k0 .. k0+15 at one l (zero past
// K).
GOCOR_TARGET_AMX inline __m512 load_along_l(const Operand& o, int k, int l0) {
  const float* p = o.x + k * o.sk + l0 * o.sl;
  const int n = std::min(16, o.L - l0);
  if (o.sl == 1) return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1u), p);
  alignas(64) float t[16] = {};
  for (int i = 0; i < n; ++i) t[i] = p[i * o.sl];
  return _mm512_load_ps(t);
}
GOCOR_TARGET_AMX inline __m512 load_along_k(const Operand& o, int k0, int l) {
  const float* p = o.x + k0 * o.sk + l * o.sl;
  const int n = std::min(16, o.K - k0);
  if (n <= 0) return _mm512_setzero_ps();
  if (o.sk == 1) return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1u), p);
  alignas(64) float t[16] = {};
  for (int i = 0; i < n; ++i) t[i] = p[i * o.sk];
  return _mm512_load_ps(t);
}

// Packs one chunk (32 k from k0) of panel p into its three tiles at `out`: the A layout, or with
// pair_layout the B layout. Vectors of 16 run along whichever index the source has contiguous.
GOCOR_TARGET_AMX void pack_chunk(const Operand& o, int p, int k0, bool pair_layout, uint16_t* out) {
  const int l0 = p * 16;
  if (l0 >= o.L || k0 >= o.K) {
    std::memset(out, 0, sizeof(uint16_t) * 3 * kTile);
    return;
  }
  const __m256i zero = _mm256_setzero_si256();
  if (o.sk == 1) {  // contiguous along k: per l, two vectors of 16 k
    for (int l = 0; l < 16; ++l)
      for (int h = 0; h < 2; ++h) {
        const Pieces s = l0 + l < o.L ? split16(load_along_k(o, k0 + 16 * h, l0 + l))
                                      : Pieces{{zero, zero, zero}};
        for (int i = 0; i < 3; ++i) {
          uint16_t* o_i = out + i * kTile;
          if (!pair_layout) {  // A: row l holds its 32 k
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(o_i + l * kChunk + 16 * h), s.p[i]);
          } else {  // B: the k pair (2j, 2j+1) of column l is dword l of row 8h + j
            alignas(32) uint32_t d[8];
            _mm256_store_si256(reinterpret_cast<__m256i*>(d), s.p[i]);
            for (int j = 0; j < 8; ++j)
              std::memcpy(o_i + (8 * h + j) * 32 + 2 * l, &d[j], sizeof(uint32_t));
          }
        }
      }
    return;
  }
  alignas(64) uint16_t t[3][kChunk][16];  // piece, kk, l: contiguous along l
  for (int kk = 0; kk < kChunk; ++kk) {
    const Pieces s =
        kk + k0 < o.K ? split16(load_along_l(o, k0 + kk, l0)) : Pieces{{zero, zero, zero}};
    for (int i = 0; i < 3; ++i) _mm256_store_si256(reinterpret_cast<__m256i*>(t[i][kk]), s.p[i]);
  }
  const __m512i pairs = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24,
                                         8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  for (int i = 0; i < 3; ++i) {
    uint16_t* o_i = out + i * kTile;
    if (pair_layout) {  // B: row kk/2 interleaves rows kk and kk + 1 of t
      for (int kp = 0; kp < kChunk / 2; ++kp)
        _mm512_store_si512(o_i + kp * 32,
                           _mm512_permutexvar_epi16(pairs, _mm512_load_si512(t[i][2 * kp])));
    } else {  // A: row l gathers the pairs (dwords) of column l, one per row pair of t
      const __m512i col =
          _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                             _mm512_set1_epi32(16));
      // Dword (kp, l) of t's pair rows: t[2kp][l], t[2kp+1][l] interleaved, as the B layout has.
      alignas(64) uint32_t pr[kChunk / 2][16];
      for (int kp = 0; kp < kChunk / 2; ++kp)
        _mm512_store_si512(pr[kp],
                           _mm512_permutexvar_epi16(pairs, _mm512_load_si512(t[i][2 * kp])));
      for (int l = 0; l < 16; ++l)
        _mm512_storeu_si512(
            o_i + l * kChunk,
            _mm512_i32gather_epi32(_mm512_add_epi32(col, _mm512_set1_epi32(l)), pr, 4));
    }
  }
}

// Packs panels [p0, p1) of an operand with nk chunks.
void pack_panels(const Operand& o, int nk, bool pair_layout, int64_t p0, int64_t p1,
                 uint16_t* packed) {
  for (int64_t p = p0; p < p1; ++p)
    for (int c = 0; c < nk; ++c)
      pack_chunk(o, static_cast<int>(p), c * kChunk, pair_layout,
                 packed + (p * nk + c) * 3 * kTile);
}

// C block (32 x 32 at c, row stride ldc; m x n of it inside C) = or += the products of A panels
// (ap, ap + panel) and B panels (bp, bp + panel) over chunks [c0, c1). `first`: the accumulators
// start at zero (or, with acc, at C); otherwise at `partial`, where an earlier k block left them.
// `last`: the result goes to C (else to `partial`).
GOCOR_TARGET_AMX void block_kernel(const uint16_t* ap, const uint16_t* bp, int64_t panel, int c0,
                                   int c1, float* c, int64_t ldc, int m, int n, bool acc,
                                   bool first, bool last, float* partial) {
  const bool full = m == 32 && n == 32;
  alignas(64) float edge[32 * 32];
  if (first) {
    if (acc && full) {
      _tile_loadd(0, c, ldc * 4);
      _tile_loadd(1, c + 16, ldc * 4);
      _tile_loadd(2, c + 16 * ldc, ldc * 4);
      _tile_loadd(3, c + 16 * ldc + 16, ldc * 4);
    } else if (acc) {
      for (int i = 0; i < 32; ++i)
        for (int j = 0; j < 32; ++j) edge[i * 32 + j] = i < m && j < n ? c[i * ldc + j] : 0.f;
      _tile_loadd(0, edge, 128);
      _tile_loadd(1, edge + 16, 128);
      _tile_loadd(2, edge + 16 * 32, 128);
      _tile_loadd(3, edge + 16 * 32 + 16, 128);
    } else {
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
    }
  } else {
    _tile_loadd(0, partial, 128);
    _tile_loadd(1, partial + 16, 128);
    _tile_loadd(2, partial + 16 * 32, 128);
    _tile_loadd(3, partial + 16 * 32 + 16, 128);
  }
  const uint16_t* a1p = ap + panel;
  const uint16_t* b1p = bp + panel;
  for (int ch = c0; ch < c1; ++ch) {
    const int64_t o = static_cast<int64_t>(ch) * 3 * kTile;
    const uint16_t *a0 = ap + o, *a1 = a1p + o, *b0 = bp + o, *b1 = b1p + o;
    // Smallest products first, the large a0 b0 last; each pair of loads feeds four multiplies.
#define GOCOR_AMX_LOAD_A(piece)                   \
  _tile_loadd(4, a0 + (piece)*kTile, kChunk * 2); \
  _tile_loadd(5, a1 + (piece)*kTile, kChunk * 2);
#define GOCOR_AMX_LOAD_B(piece)                   \
  _tile_loadd(6, b0 + (piece)*kTile, kChunk * 2); \
  _tile_loadd(7, b1 + (piece)*kTile, kChunk * 2);
#define GOCOR_AMX_MUL      \
  _tile_dpbf16ps(0, 4, 6); \
  _tile_dpbf16ps(1, 4, 7); \
  _tile_dpbf16ps(2, 5, 6); \
  _tile_dpbf16ps(3, 5, 7);
    GOCOR_AMX_LOAD_A(2)
    GOCOR_AMX_LOAD_B(0)
    GOCOR_AMX_MUL                                          // a2 b0
        GOCOR_AMX_LOAD_A(1) GOCOR_AMX_MUL                  // a1 b0
            GOCOR_AMX_LOAD_B(1) GOCOR_AMX_MUL              // a1 b1
                GOCOR_AMX_LOAD_A(0) GOCOR_AMX_MUL          // a0 b1
                    GOCOR_AMX_LOAD_B(2) GOCOR_AMX_MUL      // a0 b2
                        GOCOR_AMX_LOAD_B(0) GOCOR_AMX_MUL  // a0 b0
#undef GOCOR_AMX_LOAD_A
#undef GOCOR_AMX_LOAD_B
#undef GOCOR_AMX_MUL
  }
  if (!last) {
    _tile_stored(0, partial, 128);
    _tile_stored(1, partial + 16, 128);
    _tile_stored(2, partial + 16 * 32, 128);
    _tile_stored(3, partial + 16 * 32 + 16, 128);
  } else if (full) {
    _tile_stored(0, c, ldc * 4);
    _tile_stored(1, c + 16, ldc * 4);
    _tile_stored(2, c + 16 * ldc, ldc * 4);
    _tile_stored(3, c + 16 * ldc + 16, ldc * 4);
  } else {
    _tile_stored(0, edge, 128);
    _tile_stored(1, edge + 16, 128);
    _tile_stored(2, edge + 16 * 32, 128);
    _tile_stored(3, edge + 16 * 32 + 16, 128);
    for (int i = 0; i < m; ++i) std::memcpy(c + i * ldc, edge + i * 32, sizeof(float) * n);
  }
}

GOCOR_TARGET_AMX void tiles_begin() {
  static const TileConfig cfg;
  _tile_loadconfig(&cfg);
}
GOCOR_TARGET_AMX void tiles_end() {
  _tile_release();
}

// Packing scratch of the calling thread, kept between calls (as gemm.cpp's): one buffer per side,
// and for B what it holds, so that a caller can reuse it (GemmArgs::b_unchanged).
struct PackBuffer {
  uint16_t* p = nullptr;
  size_t size = 0;
  // B's source: pointer, strides, shape (null: nothing reusable).
  const float* src = nullptr;
  int64_t sk = 0, sl = 0;
  int k = 0, l = 0;
  ~PackBuffer() { ::operator delete(p, std::align_val_t(64)); }
  // Gives a large buffer back (as gemm.cpp's scratch: 128 MiB and more are not kept).
  void trim() {
    if (size * sizeof(uint16_t) < (size_t{128} << 20)) return;
    ::operator delete(p, std::align_val_t(64));
    p = nullptr;
    size = 0;
    src = nullptr;
  }
  uint16_t* get(size_t elems) {
    if (size < elems) {
      ::operator delete(p, std::align_val_t(64));
      p = nullptr;
      size = 0;
      src = nullptr;
      try {
        p = static_cast<uint16_t*>(::operator new(elems * 2, std::align_val_t(64)));
      } catch (const std::bad_alloc&) {
        throw Error(ErrorCode::TooLarge, "gemm: cannot allocate " + std::to_string(elems * 2) +
                                             " bytes of AMX packing memory");
      }
      size = elems;
    }
    return p;
  }
};
thread_local PackBuffer pack_a_buffer, pack_b_buffer;

// Chunks per k block: a block's B panels (2 x 3 KiB per chunk, 48 KiB) stay in L1 while the A
// panels of a column of blocks stream past them. 256 x 512 x 512 with B kept: 4 chunks 0.58-0.60
// ms, 8 chunks 0.55-0.57 ms, 16 chunks (B past L1) 1.4 ms. The tiles then run at ~2/3 of their
// peak (24 instead of 16 cycles per multiply).
constexpr int kBlockChunks = 8;
// Row blocks (of 32) per work item.
constexpr int kRowBlocks = 8;

}  // namespace

bool amx_usable() {
  // The setting first: with AMX turned off (GOCOR_SIMD) the process never asks for the tile
  // state, whose larger signal frames could refuse a later small sigaltstack.
  if (!simd::simd_amx_allowed()) return false;
  static const bool hw = amx_hardware();
  return hw;
}

bool gemm_amx_suits(int m, int n, int k, bool b_amortised) {
  // Packing costs O((m + n) k) (~0.75 ns per element here, the B layout the most), the products
  // O(m n k), which the tiles compute at ~2.2x the float32 kernel's rate: the split pays when
  // m n / (m + n) >= 256 (test/cpp/gemm_test_main.cpp --bench: 1024 x 1024 x 256 1.1x, 256 x 512 x
  // 512 0.9-1.1x with B packed each call, 1.75x with B packed once; 4096 x 4096 x 64 0.6x: short k
  // leaves the tiles waiting on C's stores).
  if (k < 128 || m < 64 || n < 64) return false;
  return b_amortised || static_cast<double>(m) * n / (static_cast<double>(m) + n) >= 256;
}

void gemm_amx_release_thread_buffers() {
  for (PackBuffer* b : {&pack_a_buffer, &pack_b_buffer}) {
    ::operator delete(b->p, std::align_val_t(64));
    b->p = nullptr;
    b->size = 0;
    b->src = nullptr;
  }
}

size_t gemm_amx_scratch_bytes(int m, int n, int k) {
  const int64_t nk = (k + kChunk - 1) / kChunk;
  const int64_t mp = (m + 31) / 32 * 2, np = (n + 31) / 32 * 2;
  return static_cast<size_t>((mp + np) * nk * 3 * kTile) * 2;
}

void gemm_amx(const GemmArgs& g, int threads) {
  const int M = g.m, N = g.n, K = g.k;
  const int nk = (K + kChunk - 1) / kChunk;
  const int mb = (M + 31) / 32, nb = (N + 31) / 32;  // 32 x 32 blocks
  const int64_t panel = static_cast<int64_t>(nk) * 3 * kTile;
  const Operand A{g.a, g.a_trans ? g.lda : 1, g.a_trans ? 1 : g.lda, K, M};
  const Operand B{g.b, g.b_trans ? 1 : g.ldb, g.b_trans ? g.ldb : 1, K, N};
  uint16_t* ap = pack_a_buffer.get(static_cast<size_t>(int64_t{mb} * 2 * panel));
  PackBuffer& pb = pack_b_buffer;
  const bool b_kept =
      g.b_unchanged && pb.src == B.x && pb.sk == B.sk && pb.sl == B.sl && pb.k == K && pb.l == N;
  uint16_t* bp = pb.get(static_cast<size_t>(int64_t{nb} * 2 * panel));
  parallel_chunks(int64_t{mb} * 2, threads, 4,
                  [&](int64_t p0, int64_t p1) { pack_panels(A, nk, false, p0, p1, ap); });
  if (!b_kept) {
    pb.src = nullptr;  // until packed in full
    parallel_chunks(int64_t{nb} * 2, threads, 4,
                    [&](int64_t p0, int64_t p1) { pack_panels(B, nk, true, p0, p1, bp); });
    pb.src = B.x;
    pb.sk = B.sk;
    pb.sl = B.sl;
    pb.k = K;
    pb.l = N;
  }
  const int tm = (mb + kRowBlocks - 1) / kRowBlocks;
  parallel_for(int64_t{tm} * nb, threads, [&](int64_t t) {
    const int i0 = static_cast<int>(t % tm) * kRowBlocks, jb = static_cast<int>(t / tm);
    const int i1 = std::min(mb, i0 + kRowBlocks);
    alignas(64) float partial[kRowBlocks][32 * 32];
    tiles_begin();
    for (int c0 = 0; c0 < nk; c0 += kBlockChunks) {
      const int c1 = std::min(nk, c0 + kBlockChunks);
      for (int ib = i0; ib < i1; ++ib) {
        block_kernel(ap + 2 * ib * panel, bp + 2 * jb * panel, panel, c0, c1,
                     g.c + static_cast<int64_t>(ib) * 32 * g.ldc + jb * 32, g.ldc,
                     std::min(32, M - ib * 32), std::min(32, N - jb * 32), g.accumulate, c0 == 0,
                     c1 == nk, partial[ib - i0]);
      }
    }
    tiles_end();
  });
  pack_a_buffer.trim();
  pack_b_buffer.trim();
}

#else

bool amx_usable() {
  return false;
}
bool gemm_amx_suits(int, int, int, bool) {
  return false;
}
size_t gemm_amx_scratch_bytes(int, int, int) {
  return 0;
}
void gemm_amx_release_thread_buffers() {}
void gemm_amx(const GemmArgs&, int) {
  throw Error(ErrorCode::Internal, "gemm: AMX path called on a build without it");
}

#endif

}  // namespace gocor_detail
}  // namespace gocor
