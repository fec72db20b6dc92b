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

// The device of one call, decided once (the binding does it before running the call): Cpu ->
// Cpu; Cuda -> Cuda when a usable device is present, else throws CudaUnavailable with the reason;
// Auto -> Cuda when usable, else Cpu. An operation without a CUDA twin (`has_cuda` false) gets Cpu
// after the same check, so that 'cuda' means the same for every operation. The functions below
// take an Exec whose device is already Cpu or Cuda (Auto is resolved again for direct callers).
Device resolve_device(Device requested, bool has_cuda = true);

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
