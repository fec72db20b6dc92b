// Host-only interface of the CUDA backend: no CUDA types, so ordinary C++ callers can include it.
// Every function is the twin of a cpp/core function with the same signature (`_cpu` -> `_cuda`);
// pointers are host pointers, the launcher moves data to and from the device itself.
// Built only when GOCOR_WITH_CUDA is defined. dispatch.cpp sends correlation and GOCor here; the
// stage twins below are called by the parity program and the benchmark only, until they have passed
// parity on a GPU (issue 11: the API never reaches an untested GPU path).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common.h"
#include "correlation.h"
#include "dense_features.h"
#include "dis.h"
#include "flow.h"
#include "gocor.h"
#include "interpolate.h"

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
void gocor_global_cuda(const GlobalGocorParams& p, const GlobalGocorOptions& o,
                       const float* reference, const float* query, float* volume, float* filter_out,
                       const GocorGlobalShape& s, const Exec& ex, std::vector<GocorIterDiag>* diag);
void gocor_local_cuda(const LocalGocorParams& p, const LocalGocorOptions& o, const float* reference,
                      const float* query, float* volume, float* filter_out, int B, int C, int H,
                      int W, const Exec& ex, std::vector<GocorIterDiag>* diag);

// ---- the stages of match (cuda/features.cu, cuda/flow.cu) ----
// Same signatures and layouts as the cpp/core functions of the same name without _cuda.
void image_resize_cuda(const float* src, int C, int H, int W, float* dst, int h, int w,
                       const Exec& ex);
void features_compute_cuda(const ImageView& img, int Hf, int Wf, int cell, float* out,
                           const Exec& ex);
void flow_resample_cuda(const float* flow_in, const FlowGrid& gi, float* flow_out,
                        const FlowGrid& go, const Exec& ex);
void flow_warp_cuda(const float* feat_b, int C, const FlowGrid& gb, const float* flow,
                    const FlowGrid& ga, float* out, const Exec& ex);
void flow_from_global_volume_cuda(const float* volume, const FlowGrid& ga, const FlowGrid& gb,
                                  float* flow, float* peak, const Exec& ex);
void flow_from_local_volume_cuda(const float* volume, int R, int H, int W, float* residual,
                                 float* confidence, const Exec& ex);
void flow_warp_image_cuda(const float* b, int C, int Hb, int Wb, const float* flow, int H, int W,
                          float* out, float* mask, const Exec& ex);
void flow_median3_cuda(float* flow, int H, int W, const Exec& ex);
void flow_refine_symmetric_cuda(const float* feat_a, const FlowGrid& ga, const float* feat_b,
                                const FlowGrid& gb, int C, float* flow, int iterations,
                                const Exec& ex);
void flow_volume_aggregate_cuda(float* volume, int D, int H, int W, int radius, const Exec& ex);
void flow_consistency_cuda(const float* fwd, int H, int W, const float* bwd, int Hb, int Wb,
                           float abs_tol, float rel_tol, uint8_t* valid, float* error,
                           const Exec& ex);
void flow_texture_mask_cuda(const float* gray, int H, int W, int radius, float min_gradient,
                            uint8_t* textured, const Exec& ex);
// cuda/interpolate.cu and cuda/dis.cu: the sparse-to-dense fill and the dense refinement.
void flow_interpolate_cuda(const float* image, int C, int H, int W, const float* flow,
                           const uint8_t* valid, float* out, const InterpOptions& o,
                           const Exec& ex);
void flow_refine_dis_cuda(const float* gray_a, int H, int W, const float* gray_b, int Hb, int Wb,
                          float* flow, const DisOptions& o, const Exec& ex);
#endif

}  // namespace gocor
