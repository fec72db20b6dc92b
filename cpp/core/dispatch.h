// The one place where a call is sent to the CPU or the CUDA backend.
#pragma once

#include <vector>

#include "common.h"
#include "correlation.h"
#include "gocor.h"
#include "gocor_cuda.h"

namespace gocor {

// What this build has and what this machine offers (CudaInfo.compiled is false without CUDA).
CudaInfo cuda_info();

// Auto -> Cuda when available, else Cpu. An explicit Cuda without a usable device throws
// CudaUnavailable with the reason; nothing falls back silently after that.
Device resolve_device(Device requested);

void corr_global(const float* reference, const float* query, float* out, const CorrGlobalShape& s,
                 const Exec& ex);
void corr_local(const float* reference, const float* query, float* out, const CorrLocalShape& s,
                const Exec& ex);
void gocor_global(const GlobalGocorParams& p, const GlobalGocorOptions& o, const float* reference,
                  const float* query, float* volume, float* filter_out, const GocorGlobalShape& s,
                  const Exec& ex, std::vector<GocorIterDiag>* diag);
void gocor_local(const LocalGocorParams& p, const LocalGocorOptions& o, const float* reference,
                 const float* query, float* volume, float* filter_out, int B, int C, int H, int W,
                 const Exec& ex, std::vector<GocorIterDiag>* diag);

}  // namespace gocor
