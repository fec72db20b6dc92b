// Host-only interface of the CUDA backend: no CUDA types, so ordinary C++ callers can include it.
// Every function is the twin of a cpp/core function with the same signature (`_cpu` -> `_cuda`);
// pointers are host pointers, the launcher moves data to and from the device itself.
// Built only when GOCOR_WITH_CUDA is defined. dispatch.cpp sends correlation and GOCor here; the
// stage and layer twins below are called by the parity program and the benchmark only, until they
// have passed parity on a GPU (issue 11: the API never reaches an untested GPU path).
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
#include "nn.h"

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

// Every twin has its CPU twin's type (decltype of `name_cpu`, declared in cpp/core): the
// signature is written once, and a twin that drifts from it does not compile.
decltype(corr_global_cpu) corr_global_cuda;
decltype(corr_local_cpu) corr_local_cuda;
decltype(gocor_global_cpu) gocor_global_cuda;
decltype(gocor_local_cpu) gocor_local_cuda;

// ---- the stages of match (cuda/features.cu, cuda/flow.cu, cuda/interpolate.cu, cuda/dis.cu) ----
decltype(image_resize_cpu) image_resize_cuda;
decltype(features_compute_cpu) features_compute_cuda;
decltype(flow_resample_cpu) flow_resample_cuda;
decltype(flow_warp_cpu) flow_warp_cuda;
decltype(flow_from_global_volume_cpu) flow_from_global_volume_cuda;
decltype(flow_from_local_volume_cpu) flow_from_local_volume_cuda;
decltype(flow_warp_image_cpu) flow_warp_image_cuda;
decltype(flow_median3_cpu) flow_median3_cuda;
decltype(flow_refine_symmetric_cpu) flow_refine_symmetric_cuda;
decltype(flow_volume_aggregate_cpu) flow_volume_aggregate_cuda;
decltype(flow_consistency_cpu) flow_consistency_cuda;
decltype(flow_texture_mask_cpu) flow_texture_mask_cuda;
// The sparse-to-dense fill and the dense refinement.
decltype(flow_interpolate_cpu) flow_interpolate_cuda;
decltype(flow_refine_dis_cpu) flow_refine_dis_cuda;

// ---- the layers of the official networks (cuda/nn.cu) ----
namespace nn {
decltype(conv2d_cpu) conv2d_cuda;
decltype(conv_transpose2d_cpu) conv_transpose2d_cuda;
decltype(leaky_relu_cpu) leaky_relu_cuda;
decltype(warp_cpu) warp_cuda;
decltype(resize_bilinear_cpu) resize_bilinear_cuda;
decltype(resize_area_cpu) resize_area_cuda;
decltype(maxpool2_cpu) maxpool2_cuda;
decltype(l2norm_channels_cpu) l2norm_channels_cuda;
decltype(mutual_matching_cpu) mutual_matching_cuda;
decltype(gocor_local_f64_cpu) gocor_local_f64_cuda;
}  // namespace nn
#endif

}  // namespace gocor
