// The one packed float32 GEMM of the CPU core (correlation, GOCor, convolutions). Internal API.
#pragma once

#include <cstddef>
#include <cstdint>

namespace gocor {
namespace gocor_detail {

// c (m x n, row stride ldc) = or += a (m x k, row stride lda) * b, where b is (k x n, row stride
// ldb) when b_trans is false, or b is given as its transpose (n x k, row stride ldb) when true.
// Work is split over `threads` threads of the shared pool (<= 0: all of them).
void gemm(int m, int n, int k, const float* a, int64_t lda, const float* b, int64_t ldb,
          bool b_trans, float* c, int64_t ldc, bool accumulate, int threads);

// The general form: op(a) is a (m x k, row stride lda) or, with a_trans, a given as its transpose
// (k x m, row stride lda); op(b) likewise. c = or += op(a) op(b). An operand already in the
// packed layout (gemm_pack_rows) is passed as a_packed / b_packed instead: gemm() then reads it
// as it is and ignores a, lda, a_trans (or b, ldb, b_trans).
struct GemmArgs {
  int m, n, k;
  const float* a;
  int64_t lda;
  bool a_trans;
  const float* b;
  int64_t ldb;
  bool b_trans;
  float* c;
  int64_t ldc;
  bool accumulate;
  const float* a_packed = nullptr;
  const float* b_packed = nullptr;
  // C is a result that will not be read again soon (a correlation volume handed to the caller):
  // when it is large (16 MiB or more), written once and 64-byte aligned, it is written with
  // non-temporal stores, which skip reading each line in before it is overwritten.
  bool c_final = false;
  // B's packing can be amortised: b_keep says that the next calls will pass the same op(b)
  // again (a path with its own packed copy of B, AMX, then counts its packing as paid once), and
  // b_unchanged that op(b) is the matrix (same pointer, strides and contents) of this thread's
  // previous gemm() call with that pointer (that copy may be reused).
  bool b_keep = false;
  bool b_unchanged = false;
};
void gemm(const GemmArgs& g, int threads);
// Whether gemm() computes an m x n x k product whose operands are not given packed on the AMX
// tiles (b_amortised: GemmArgs::b_keep or b_unchanged). An operand given packed keeps a product on
// the float32 kernel, so a caller that would pack one itself asks this first.
bool gemm_uses_amx(int m, int n, int k, bool b_amortised);
// Frees the calling thread's cached packing blocks (float32 and AMX): a thread that runs GEMMs
// only now and then (a libuv thread at the end of a network's forward) does not keep them.
void gemm_release_thread_buffers();

// The packed layout gemm() reads, which the micro-kernel of this machine's SIMD level takes. An
// operand is seen as X (K x L): K rows along the reduction index, L along the rows of C (side A:
// X(k, i) = op(a)(i, k)) or its columns (side B: X(k, j) = op(b)(k, j)). Packed, it is ceil(L / P)
// panels of K x P floats, P = gemm_panel_width(side):
//   packed[(p * K + k) * P + i] = X(k, p * P + i), zero past L.
enum class GemmSide { A, B };
int gemm_panel_width(GemmSide side);
// Floats of a packed (K x L) operand.
int64_t gemm_packed_floats(GemmSide side, int K, int L);
// Packs rows k0 .. k1-1 of a row-major X (row k at x + k * ldx, L floats) into `out`, the packed
// layout of the whole K-row operand (so that a caller can pack as it reads its source, row block
// by row block).
void gemm_pack_rows(GemmSide side, const float* x, int64_t ldx, int k0, int k1, int K, int L,
                    float* out);

// Bytes of packing scratch gemm() takes for these operands (kept per thread between calls).
size_t gemm_scratch_bytes(int m, int n, int k, bool a_trans);

}  // namespace gocor_detail
}  // namespace gocor
