// Plain feature correlation on the CPU: drivers (validation, packing, blocking, threads) in the
// baseline ISA, inner loops in the SIMD kernels of corr_kernels.h chosen at run time.
#include "correlation.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "corr_kernels.h"
#include "parallel.h"

namespace gocor {
namespace corr_detail {
namespace {

Simd detect_hardware() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("fma")) {
    return Simd::Avx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Simd::Avx2;
#endif
  return Simd::Portable;
}

Simd detect_with_env() {
  Simd hw = detect_hardware();
  const char* env = std::getenv("GOCOR_SIMD");
  if (env == nullptr) return hw;
  std::string v(env);
  // Case-insensitive (AVX2 = avx2); other values are ignored (lib/native.ts warns about them).
  for (char& ch : v) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  Simd want = hw;
  if (v == "portable") want = Simd::Portable;
  if (v == "avx2") want = Simd::Avx2;
  if (v == "avx512") want = Simd::Avx512;
  // The variable can only lower the level: asking for more than the CPU has would crash.
  return static_cast<int>(want) < static_cast<int>(hw) ? want : hw;
}

std::atomic<int> g_forced{-1};

const Kernels& active_kernels() {
  switch (simd_active()) {
    case Simd::Avx512: return kernels_avx512();
    case Simd::Avx2: return kernels_avx2();
    default: return kernels_portable();
  }
}

// 64-byte aligned scratch; an allocation failure becomes a TooLarge error, not std::bad_alloc.
float* aligned_alloc_floats(int64_t n) {
  try {
    return static_cast<float*>(
        ::operator new(static_cast<size_t>(n) * sizeof(float), std::align_val_t(64)));
  } catch (const std::bad_alloc&) {
    throw Error(ErrorCode::TooLarge, "correlation: cannot allocate " + std::to_string(n * 4) +
                                         " bytes of scratch memory");
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
    if (n > kKeepFloats) {
      own_ = aligned_alloc_floats(n);
      p_ = own_;
      return;
    }
    Cache& c = cache();
    if (c.in_use) {  // re-entered on this thread: do not share the cached block
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

// Cache blocking of the GEMM: a KC-deep A micro-panel (MR x KC) stays in L1 while the micro-kernel
// walks the NC columns of a KC x NC block of B held in L2; C tiles of MC x NC are the units of work
// shared between threads.
// Measured on Zen 5 (1 MiB L2, 48 KiB L1): KC = 512 keeps C <= 512 in one pass over C.
constexpr int kKc = 512;
constexpr int kNc = 256;
constexpr int kMc = 96;

// Copies of P floats for the narrow A panels, with a constant size so that they compile to a few
// moves instead of a library call per k (which made packing A cost a third of a 256 x 256 GEMM).
template <int P>
void pack_full_panel(const float* x, int K, int L, float* o) {
  for (int k = 0; k < K; ++k, x += L, o += P) std::memcpy(o, x, sizeof(float) * P);
}

// Packs panels p0 .. p1-1 of a k-major matrix X (K x L, row stride L), P columns each:
// out[((panel - first) * K + k) * P + i] = X[k, panel * P + i], zero past L.
void pack_panels(const float* x, int K, int L, int P, float* out, int64_t first, int64_t p0,
                 int64_t p1) {
  for (int64_t p = p0; p < p1; ++p) {
    const int l0 = static_cast<int>(p * P);
    const int n = std::min(P, L - l0);
    float* o = out + (p - first) * static_cast<int64_t>(K) * P;
    if (n == P && P == 4) {
      pack_full_panel<4>(x + l0, K, L, o);
      continue;
    }
    if (n == P && P == 6) {
      pack_full_panel<6>(x + l0, K, L, o);
      continue;
    }
    for (int k = 0; k < K; ++k, o += P) {
      const float* src = x + static_cast<int64_t>(k) * L + l0;
      std::memcpy(o, src, sizeof(float) * n);
      if (n < P) std::memset(o + n, 0, sizeof(float) * (P - n));
    }
  }
}

// Which operands gemm_tn packs in full. A full panel can be read in place (row stride M or N);
// packing pays off only when the in-place rows are far apart, so that a panel's kc rows no longer
// share cache lines or TLB pages with the next panel's.
struct PackPlan {
  bool a, b;
};
PackPlan pack_plan(int M, int N, int K) {
  (void)N;
  (void)K;
  // A panels are MR (4 or 6) floats wide: read in place, one k row touches one or two cache
  // lines, and the 64 kB - 1 MB of rows it spans stay in L1/L2 while the micro-kernel walks the
  // column panels. Rows more than 4 KiB apart alias in L1 (measured: 1024 positions faster in
  // place, 4096 faster packed). B panels are 64 floats wide and always packed: read in place they
  // were slower at 1024 positions and no faster at 256.
  return {M > 1024, true};
}

// Floats of packing scratch gemm_tn needs: the operands it packs in full, otherwise their last
// partial panel only; each part rounded to 64 bytes.
int64_t gemm_scratch_floats(const Kernels& kr, int M, int N, int K) {
  const PackPlan plan = pack_plan(M, N, K);
  const int64_t mp = (M + kr.mr - 1) / kr.mr, np = (N + kr.nr - 1) / kr.nr;
  const int64_t a = (plan.a ? mp : 1) * kr.mr * int64_t{K};
  const int64_t b = (plan.b ? np : 1) * kr.nr * int64_t{K};
  return (a + 15) / 16 * 16 + (b + 15) / 16 * 16;
}

// out (M x N, row-major) = At^T * Bm for At (K x M, row-major) and Bm (K x N, row-major).
// scratch: gemm_scratch_floats(kr, M, N, K) floats, 64-byte aligned.
void gemm_tn(const Kernels& kr, int M, int N, int K, const float* At, const float* Bm, float* out,
             float* scratch, const Exec& ex) {
  const int MR = kr.mr, NR = kr.nr;
  const int mp = (M + MR - 1) / MR, np = (N + NR - 1) / NR;
  const PackPlan plan = pack_plan(M, N, K);
  const int mfull = M / MR, nfull = N / NR;
  float* ap = scratch;
  float* bp = scratch + ((plan.a ? mp : 1) * int64_t{MR} * K + 15) / 16 * 16;
  // Packed panels: all of an operand, or only its last partial panel (rows past M or N are zero).
  if (plan.a) {
    parallel_chunks(mp, ex.threads, 16,
                    [&](int64_t p0, int64_t p1) { pack_panels(At, K, M, MR, ap, 0, p0, p1); });
  } else if (mfull < mp) {
    pack_panels(At, K, M, MR, ap, mfull, mfull, mp);
  }
  if (plan.b) {
    parallel_chunks(np, ex.threads, 4,
                    [&](int64_t p0, int64_t p1) { pack_panels(Bm, K, N, NR, bp, 0, p0, p1); });
  } else if (nfull < np) {
    pack_panels(Bm, K, N, NR, bp, nfull, nfull, np);
  }
  check_cancel(ex);

  // Panels per work tile; shrink the tiles when there would be too few to keep every thread busy.
  const int threads = ex.threads <= 0 ? pool_size() : std::min(ex.threads, pool_size());
  int mc = std::max(1, kMc / MR), nc = std::max(1, kNc / NR);
  while (threads > 1 &&
         static_cast<int64_t>((mp + mc - 1) / mc) * ((np + nc - 1) / nc) < 4 * threads &&
         (mc > 1 || nc > 1)) {
    if (nc >= mc && nc > 1) {
      nc = (nc + 1) / 2;
    } else {
      mc = (mc + 1) / 2;
    }
  }
  const int tm = (mp + mc - 1) / mc, tn = (np + nc - 1) / nc;
  parallel_for(static_cast<int64_t>(tm) * tn, ex.threads, [&](int64_t t) {
    check_cancel(ex);
    const int ip0 = static_cast<int>(t / tn) * mc, jp0 = static_cast<int>(t % tn) * nc;
    const int ip1 = std::min(mp, ip0 + mc), jp1 = std::min(np, jp0 + nc);
    for (int k0 = 0; k0 < K; k0 += kKc) {
      const int kc = std::min(kKc, K - k0);
      for (int ip = ip0; ip < ip1; ++ip) {
        const bool a_packed = plan.a || ip >= mfull;
        const float* a = a_packed
                             ? ap + (static_cast<int64_t>(ip - (plan.a ? 0 : mfull)) * K + k0) * MR
                             : At + static_cast<int64_t>(k0) * M + int64_t{ip} * MR;
        const int64_t lda = a_packed ? MR : M;
        const int i0 = ip * MR;
        for (int jp = jp0; jp < jp1; ++jp) {
          const bool b_packed = plan.b || jp >= nfull;
          const float* b =
              b_packed ? bp + (static_cast<int64_t>(jp - (plan.b ? 0 : nfull)) * K + k0) * NR
                       : Bm + static_cast<int64_t>(k0) * N + int64_t{jp} * NR;
          const int64_t ldb = b_packed ? NR : N;
          const int j0 = jp * NR;
          kr.gemm_ukr(kc, a, lda, b, ldb, out + static_cast<int64_t>(i0) * N + j0, N,
                      std::min(MR, M - i0), std::min(NR, N - j0), k0 > 0);
        }
      }
    }
  });
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

Simd simd_detected() {
  static const Simd level = detect_with_env();
  return level;
}

Simd simd_active() {
  const int f = g_forced.load(std::memory_order_relaxed);
  const Simd d = simd_detected();
  return (f >= 0 && f < static_cast<int>(d)) ? static_cast<Simd>(f) : d;
}

void simd_force(Simd level) {
  g_forced.store(static_cast<int>(level));
}
void simd_unforce() {
  g_forced.store(-1);
}

}  // namespace corr_detail

using corr_detail::Kernels;
using corr_detail::LocalArgs;
using corr_detail::Scratch;

const char* cpu_simd_level() {
  switch (corr_detail::simd_active()) {
    case corr_detail::Simd::Avx512: return "avx512";
    case corr_detail::Simd::Avx2: return "avx2";
    default: return "portable";
  }
}

void corr_global_cpu(const float* reference, const float* query, float* out,
                     const CorrGlobalShape& s, const Exec& ex) {
  corr_detail::validate_global(reference, query, out, s);
  const Kernels& kr = corr_detail::active_kernels();
  const int N = s.H * s.W, M = s.Hq * s.Wq, K = s.C;
  Scratch scratch(corr_detail::gemm_scratch_floats(kr, M, N, K));
  for (int b = 0; b < s.B; ++b) {
    check_cancel(ex);
    // out_b (M x N) = Q^T F with Q = query_b viewed (C x M) and F = reference_b viewed (C x N).
    corr_detail::gemm_tn(kr, M, N, K, query + int64_t{b} * K * M, reference + int64_t{b} * K * N,
                         out + int64_t{b} * M * N, scratch.get(), ex);
  }
}

size_t corr_global_work_bytes(const CorrGlobalShape& s) {
  return sizeof(float) * size_t(corr_detail::gemm_scratch_floats(corr_detail::active_kernels(),
                                                                 s.Hq * s.Wq, s.H * s.W, s.C));
}

void corr_local_cpu(const float* reference, const float* query, float* out, const CorrLocalShape& s,
                    const Exec& ex) {
  corr_detail::validate_local(reference, query, out, s, "corr_local");
  const Kernels& kr = corr_detail::active_kernels();
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
      kr.local_rows(a, ob, y0, nrows);
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
