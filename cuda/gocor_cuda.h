// Host-only interface of the CUDA backend: no CUDA types, so ordinary C++ callers can include it.
// Every function is the twin of a cpp/core function with the same signature (`_cpu` -> `_cuda`);
// pointers are host pointers, the launcher moves data to and from the device itself.
// Built only when GOCOR_WITH_CUDA is defined; dispatch.cpp is the only caller.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "common.h"
#include "correlation.h"
#include "gocor.h"

namespace gocor {

struct CudaInfo {
  bool compiled = false;   // the CUDA backend is part of this build
  bool available = false;  // a usable device and driver were found at run time
  int devices = 0;
  std::string reason;  // why it is unavailable, when it is not
  std::string name;    // device 0
  int cc_major = 0, cc_minor = 0;
  size_t total_memory = 0;
  int runtime_version = 0, driver_version = 0;
};

#ifdef GOCOR_WITH_CUDA
// Never throws; probes the driver once and caches the answer.
CudaInfo cuda_probe();

void corr_global_cuda(const float* reference, const float* query, float* out,
                      const CorrGlobalShape& s, const Exec& ex);
void corr_local_cuda(const float* reference, const float* query, float* out,
                     const CorrLocalShape& s, const Exec& ex);
// Twin of corr_local_adjoint_cpu: rho (B,D,H,W), query (B,C,H,W) -> out (B,C,H,W).
void corr_local_adjoint_cuda(const float* rho, const float* query, float* out,
                             const CorrLocalShape& s, const Exec& ex);
void gocor_global_cuda(const GlobalGocorParams& p, const GlobalGocorOptions& o,
                       const float* reference, const float* query, float* volume, float* filter_out,
                       const GocorGlobalShape& s, const Exec& ex, std::vector<GocorIterDiag>* diag);
void gocor_local_cuda(const LocalGocorParams& p, const LocalGocorOptions& o, const float* reference,
                      const float* query, float* volume, float* filter_out, int B, int C, int H,
                      int W, const Exec& ex, std::vector<GocorIterDiag>* diag);
#endif

}  // namespace gocor
