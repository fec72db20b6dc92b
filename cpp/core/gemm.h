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
// (k x m, row stride lda); op(b) likewise. c = or += op(a) op(b).
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
};
void gemm(const GemmArgs& g, int threads);

// Bytes of packing scratch gemm() takes for these operands (kept per thread between calls).
size_t gemm_scratch_bytes(int m, int n, int k, bool a_trans);

}  // namespace gocor_detail
}  // namespace gocor
