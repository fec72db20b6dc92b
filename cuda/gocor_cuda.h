// Host-only interface of the CUDA backend: no CUDA types, so ordinary C++ callers can include it.
// Each `_cuda` function is the twin of a cpp/core function with the same signature (`_cpu` or no
// suffix -> `_cuda`; match_images_cuda also takes the parameters, match_images_batch_cuda has no
// CPU twin); pointers are host pointers, the launcher moves data to and from the device itself.
// Built only when GOCOR_WITH_CUDA is defined. dispatch.cpp sends the API's correlation and GOCor
// calls here; the other functions are reached only by test/cpp/cuda_parity_main.cpp and the CUDA
// benchmark until they have passed parity on a GPU.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "common.h"
#include "correlation.h"
#include "dense_features.h"
#include "flow.h"
#include "gocor.h"
#include "match.h"

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

// ---- the stages of match (cuda/features.cu, cuda/flow.cu) and match itself (cuda/match.cu) ----
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
// Twin of match.cpp's global_consistency_fill (private there; match_pyramids on a pyramid holding
// only a stride-1 global level exposes it): volume (gb cells, ga cells) as read by
// flow_from_global_volume, flow (2, ga) in pixels, updated in place: cells whose best match does
// not come back to within one cell get the median of the kept cells in the smallest window with
// >= 3.
void global_consistency_fill_cuda(const float* volume, const FlowGrid& ga, const FlowGrid& gb,
                                  float* flow, const Exec& ex);
void flow_median3_cuda(float* flow, int H, int W, const Exec& ex);
void flow_refine_photometric_cuda(const float* gray_a, int H, int W, const float* gray_b, int Hb,
                                  int Wb, float* flow, int iterations, int radius, const Exec& ex);
void flow_refine_symmetric_cuda(const float* feat_a, const FlowGrid& ga, const float* feat_b,
                                const FlowGrid& gb, int C, float* flow, int iterations,
                                const Exec& ex);
// match_images on the GPU. The backend links nothing from gocor_core, so the caller passes the
// GOCor parameters match_images uses: match_global_params(kFeatureChannels + 1, o.seed,
// o.fitted_params) and default_local_params(). a and b must have the same channels and
// size (CPU match_images also takes a b of another size; route those to the CPU).
MatchResult match_images_cuda(const ImageView& a, const ImageView& b, const MatchOptions& o,
                              const GlobalGocorParams& gp, const LocalGocorParams& lp,
                              const Exec& ex);
// B pairs at once on one stream (all 2B images the same channels and size) -> out[0..B-1].
void match_images_batch_cuda(const ImageView* a, const ImageView* b, int B, const MatchOptions& o,
                             const GlobalGocorParams& gp, const LocalGocorParams& lp,
                             const Exec& ex, MatchResult* out);
#endif

}  // namespace gocor
