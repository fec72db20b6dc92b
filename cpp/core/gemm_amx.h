// The AMX path of gemm() (gemm_amx.cpp). Internal API.
#pragma once

#include <cstddef>

#include "gemm.h"

namespace gocor {
namespace gocor_detail {

// AMX-BF16 tiles are usable in this process (processor, OS, permission) and allowed now
// (simd::simd_amx_allowed: not turned off by GOCOR_SIMD or simd_force).
bool amx_usable();
// Whether a product of this shape is faster on the AMX path than on the float32 micro-kernel;
// b_amortised: B's packing is shared by several calls (GemmArgs::b_keep / b_unchanged).
bool gemm_amx_suits(int m, int n, int k, bool b_amortised);
// The float32 GEMM of g (neither operand given packed; c_final ignored) on the AMX path.
void gemm_amx(const GemmArgs& g, int threads);
// Bytes of packing scratch gemm_amx() takes for this shape (kept per thread between calls).
size_t gemm_amx_scratch_bytes(int m, int n, int k);
// Frees the calling thread's AMX packing buffers (gemm_release_thread_buffers).
void gemm_amx_release_thread_buffers();

}  // namespace gocor_detail
}  // namespace gocor
