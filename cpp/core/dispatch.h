// The one place where a call is sent to the CPU or the CUDA backend.
#pragma once

#include <vector>

#include "common.h"
#include "correlation.h"
#include "dense_features.h"
#include "dis.h"
#include "flow.h"
#include "gocor.h"
#include "gocor_cuda.h"
#include "interpolate.h"

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

// ---- the stages of match ------------------------------------------------------------------
// Each is the dispatched operation of the CPU twin `name_cpu` (its header documents the shapes)
// and, where one exists, the CUDA twin `name_cuda` of the same signature (checked at compile
// time). A twin serves Device::Cuda only once it has passed parity on a GPU
// (`bash test/gpu/run.sh`); until then the stage runs on the CPU whatever the device, and the
// parity program lists it as pending (`cuda_parity --list`).
enum class Stage {
  ImageResize,
  FeaturesCompute,
  FlowResample,
  FlowResize,
  FlowWarp,
  FlowFromGlobalVolume,
  FlowFromLocalVolume,
  FlowWarpImage,
  FlowRefineSymmetric,
  FlowVolumeAggregate,
  FlowConsistency,
  FlowTextureMask,
  FlowMedian3,
  FlowInterpolate,
  FlowRefineDis,
  Count
};
const char* stage_name(Stage s);
// True when the stage has a CUDA twin (in this build).
bool stage_has_cuda_twin(Stage s);
// True when dispatch sends the stage to its CUDA twin on Device::Cuda (twin passed GPU parity).
bool stage_on_cuda(Stage s);

void image_resize(const float* src, int C, int H, int W, float* dst, int h, int w, const Exec& ex);
void features_compute(const ImageView& img, int Hf, int Wf, int cell, float* out, const Exec& ex);
void flow_resample(const float* flow_in, const FlowGrid& gi, float* flow_out, const FlowGrid& go,
                   const Exec& ex);
void flow_resize(const float* flow, int H, int W, float* out, int h, int w, const Exec& ex);
void flow_warp(const float* feat_b, int C, const FlowGrid& gb, const float* flow,
               const FlowGrid& ga, float* out, const Exec& ex);
void flow_from_global_volume(const float* volume, const FlowGrid& ga, const FlowGrid& gb,
                             float* flow, float* peak, const Exec& ex);
void flow_from_local_volume(const float* volume, int R, int H, int W, float* residual,
                            float* confidence, const Exec& ex);
void flow_warp_image(const float* b, int C, int Hb, int Wb, const float* flow, int H, int W,
                     float* out, float* mask, const Exec& ex);
void flow_refine_symmetric(const float* feat_a, const FlowGrid& ga, const float* feat_b,
                           const FlowGrid& gb, int C, float* flow, int iterations, const Exec& ex);
void flow_volume_aggregate(float* volume, int D, int H, int W, int radius, const Exec& ex);
void flow_consistency(const float* fwd, int H, int W, const float* bwd, int Hb, int Wb,
                      float abs_tol, float rel_tol, uint8_t* valid, float* error, const Exec& ex);
void flow_texture_mask(const float* gray, int H, int W, int radius, float min_gradient,
                       uint8_t* textured, const Exec& ex);
void flow_median3(float* flow, int H, int W, const Exec& ex);
void flow_interpolate(const float* image, int C, int H, int W, const float* flow,
                      const uint8_t* valid, float* out, const InterpOptions& o, const Exec& ex);
void flow_refine_dis(const float* gray_a, int H, int W, const float* gray_b, int Hb, int Wb,
                     float* flow, const DisOptions& o, const Exec& ex);

}  // namespace gocor
