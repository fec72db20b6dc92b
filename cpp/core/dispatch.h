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

// Each dispatched operation `name` has the type of its CPU twin `name_cpu` (documented in
// correlation.h, gocor.h, flow.h, dense_features.h, interpolate.h and dis.h).
decltype(corr_global_cpu) corr_global;
decltype(corr_local_cpu) corr_local;
decltype(gocor_global_cpu) gocor_global;
decltype(gocor_local_cpu) gocor_local;

// ---- the stages of match ------------------------------------------------------------------
// Each is the dispatched operation of the CPU twin `name_cpu` (its header documents the shapes)
// and, where one exists, the CUDA twin `name_cuda` (declared with the CPU twin's type in
// gocor_cuda.h). A twin serves Device::Cuda only once it has passed parity on a GPU
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
// True when dispatch sends the stage to its CUDA twin on Device::Cuda (twin passed GPU parity).
bool stage_on_cuda(Stage s);

decltype(image_resize_cpu) image_resize;
decltype(features_compute_cpu) features_compute;
decltype(flow_resample_cpu) flow_resample;
decltype(flow_resize_cpu) flow_resize;
decltype(flow_warp_cpu) flow_warp;
decltype(flow_from_global_volume_cpu) flow_from_global_volume;
decltype(flow_from_local_volume_cpu) flow_from_local_volume;
decltype(flow_warp_image_cpu) flow_warp_image;
decltype(flow_refine_symmetric_cpu) flow_refine_symmetric;
decltype(flow_volume_aggregate_cpu) flow_volume_aggregate;
decltype(flow_consistency_cpu) flow_consistency;
decltype(flow_texture_mask_cpu) flow_texture_mask;
decltype(flow_median3_cpu) flow_median3;
decltype(flow_interpolate_cpu) flow_interpolate;
decltype(flow_refine_dis_cpu) flow_refine_dis;

}  // namespace gocor
