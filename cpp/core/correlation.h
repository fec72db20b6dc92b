// Plain feature correlation, global and local (spec sections 5.1 and 7).
#pragma once

#include <cstdint>

#include "common.h"

namespace gocor {

struct CorrGlobalShape {
  int B, C, H, W;  // reference (B, C, H, W)
  int Hq, Wq;      // query (B, C, Hq, Wq)
};

struct CorrLocalShape {
  int B, C, H, W;  // reference and query (B, C, H, W)
  int R;           // search radius; D = (2R+1)^2 displacements
};

// reference (B,C,H,W), query (B,C,Hq,Wq) -> out (B, Hq*Wq, H, W):
// out[b, qy*Wq+qx, y, x] = sum_c ref[b,c,y,x] * query[b,c,qy,qx]   (no 1/C).
void corr_global_cpu(const float* reference, const float* query, float* out,
                     const CorrGlobalShape& s, const Exec& ex);

// Host memory, in bytes, that corr_global_cpu allocates besides its inputs and output (packed
// panels); corr_local_cpu allocates none.
size_t corr_global_work_bytes(const CorrGlobalShape& s);

// corr_global_cpu on feature maps already in its GEMM's packed layout (gemm.h), so that a caller
// that copies them in anyway (the binding) packs them as it copies and the GEMM packs nothing.
// Each batch element's map (C, positions) is packed on its own, corr_global_packed_floats / B
// floats apart: the query as the GEMM's side A, the reference as its side B.
enum class CorrInput { Reference, Query };
// Floats of one input packed, the whole batch.
size_t corr_global_packed_floats(CorrInput which, const CorrGlobalShape& s);
// Packs channels c0 .. c1-1 of batch element b of `which` (x: that element's (C, positions)
// map) into `packed` (the whole batch's packed input).
void corr_global_pack(CorrInput which, const CorrGlobalShape& s, const float* x, int b, int c0,
                      int c1, float* packed);
// reference_packed, query_packed (as corr_global_pack leaves them) -> out (B, Hq*Wq, H, W), the
// same values as corr_global_cpu. `out` is taken to be a result for the caller, not read again
// soon: a large one (16 MiB or more, 64-byte aligned) is written with non-temporal stores.
void corr_global_packed_cpu(const float* reference_packed, const float* query_packed, float* out,
                            const CorrGlobalShape& s, const Exec& ex);

// reference, query (B,C,H,W) -> out (B, (2R+1)^2, H, W):
// out[b, (dy+R)(2R+1)+(dx+R), y, x] = (1/C) sum_c ref[b,c,y,x] * query[b,c,y+dy,x+dx], 0 outside.
void corr_local_cpu(const float* reference, const float* query, float* out, const CorrLocalShape& s,
                    const Exec& ex);

// Straightforward twins of corr_global_cpu and corr_local_cpu: their specification, used as test
// oracles.
void corr_global_naive(const float* reference, const float* query, float* out,
                       const CorrGlobalShape& s);
void corr_local_naive(const float* reference, const float* query, float* out,
                      const CorrLocalShape& s);

// Which SIMD path the CPU kernels take on this machine: "avx512", "avx2", or "portable".
const char* cpu_simd_level();
// Whether the large float32 products take the AMX tiles on this machine (Intel AMX-BF16, the OS's
// tile state and this process's permission, and not turned off by GOCOR_SIMD).
bool cpu_amx();

}  // namespace gocor
