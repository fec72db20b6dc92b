// Device-resident entry points of the CUDA backend, for benchmarks that time kernels without the
// host<->device copies and for device-resident pipelines that chain them. Host-only C++ (no CUDA
// types: streams are passed as void* holding a cudaStream_t), so ordinary .cpp programs can
// include it. Pointers named d_* are device pointers.
#pragma once

#ifdef GOCOR_WITH_CUDA

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "correlation.h"
#include "dis.h"
#include "flow.h"
#include "gocor.h"
#include "interpolate.h"
#include "nn.h"

namespace gocor {
namespace cuda_dev {

void* alloc(size_t bytes);  // throws CudaOom / Cuda
void free(void* p);
void upload(void* d_dst, const void* src, size_t bytes);
void download(void* dst, const void* d_src, size_t bytes);
void* stream_create();
void stream_destroy(void* stream);
void stream_sync(void* stream);

// Runs fn `warmup` times, then `reps` times each bracketed by CUDA events on `stream`; returns the
// per-run milliseconds (sorted ascending).
std::vector<double> time_on_stream(void* stream, int warmup, int reps,
                                   const std::function<void()>& fn);

// Same contracts as the _cpu/_cuda twins, on device memory, enqueued on `stream`.
void corr_global(const float* d_ref, const float* d_query, float* d_out, const CorrGlobalShape& s,
                 void* stream);
void corr_local(const float* d_ref, const float* d_query, float* d_out, const CorrLocalShape& s,
                void* stream);

// Workspace (bytes of device memory) global GOCor needs for shape s and options o.
size_t gocor_global_workspace_bytes(const GocorGlobalShape& s, const GlobalGocorOptions& o);
// reference, query (B,C,H,W) -> d_volume (B,H*W,H,W); d_filter (B,H*W,C) receives the final filters
// (required: it is the iterate). d_workspace holds gocor_global_workspace_bytes(s, o) bytes.
void gocor_global(const GlobalGocorParams& p, const GlobalGocorOptions& o, const float* d_ref,
                  const float* d_query, float* d_volume, float* d_filter, void* d_workspace,
                  const GocorGlobalShape& s, void* stream, std::vector<GocorIterDiag>* diag);
// gocor_global (no diagnostics) with a CUDA event before each stage; waits for the stream and
// returns the milliseconds of each stage summed over iterations, in order. For the benchmark.
std::vector<std::pair<std::string, double>> gocor_global_stages(
    const GlobalGocorParams& p, const GlobalGocorOptions& o, const float* d_ref,
    const float* d_query, float* d_volume, float* d_filter, void* d_workspace,
    const GocorGlobalShape& s, void* stream);

size_t gocor_local_workspace_bytes(int B, int C, int H, int W, const LocalGocorOptions& o);
// reference, query (B,C,H,W) -> d_volume (B,(2R+1)^2,H,W); d_filter (B,C,H,W) is the iterate.
void gocor_local(const LocalGocorParams& p, const LocalGocorOptions& o, const float* d_ref,
                 const float* d_query, float* d_volume, float* d_filter, void* d_workspace, int B,
                 int C, int H, int W, void* stream, std::vector<GocorIterDiag>* diag);

// ---- match stages (cuda/features.cu, cuda/flow.cu), batched: B independent items back to back --
size_t features_workspace_bytes(int B, int H, int W, int Hf, int Wf, int cell);
// images (B, C, H, W) -> d_out (B, kFeatureChannels, Hf, Wf), each image as features_compute.
void features_compute(const float* d_img, int B, int C, int H, int W, int Hf, int Wf, int cell,
                      float* d_out, void* d_workspace, void* stream);
// in (B, planes, gi) -> out (B, planes, go); planes = 2 for a flow, 1 for a confidence map.
void flow_resample(const float* d_in, const FlowGrid& gi, float* d_out, const FlowGrid& go, int B,
                   int planes, void* stream);
// feat_b (B, C, gb), flow (B, 2, ga) -> out (B, C, ga).
void flow_warp(const float* d_feat_b, int C, const FlowGrid& gb, const float* d_flow,
               const FlowGrid& ga, float* d_out, int B, void* stream);
// volume (B, gb cells, ga cells) -> flow (B, 2, ga), peak (B, ga) or null.
void flow_from_global_volume(const float* d_volume, const FlowGrid& ga, const FlowGrid& gb,
                             float* d_flow, float* d_peak, int B, void* stream);
// volume (B, D, H, W) -> residual (B, 2, H, W), confidence (B, H, W) or null.
void flow_from_local_volume(const float* d_volume, int R, int H, int W, float* d_residual,
                            float* d_confidence, int B, void* stream);
// b (B, C, Hb, Wb), flow (B, 2, H, W) -> out (B, C, H, W), mask (B, H, W) or null.
void flow_warp_image(const float* d_b, int C, int Hb, int Wb, const float* d_flow, int H, int W,
                     float* d_out, float* d_mask, int B, void* stream);
// src (B, 2, H, W) -> dst (B, 2, H, W), 3x3 median per component (not in place).
void flow_median3(const float* d_src, float* d_dst, int H, int W, int B, void* stream);
// flow (B, 2, ga) updated in place, as flow_refine_symmetric.
void flow_refine_symmetric(const float* d_feat_a, const FlowGrid& ga, const float* d_feat_b,
                           const FlowGrid& gb, int C, float* d_flow, int iterations, int B,
                           void* stream);
// Bytes of d_workspace flow_volume_aggregate needs (one double per volume element).
size_t volume_aggregate_workspace_bytes(int D, int H, int W, int B);
// volume (B, D, H, W) box-aggregated in place, as flow_volume_aggregate.
void flow_volume_aggregate(float* d_volume, int D, int H, int W, int radius, void* d_workspace,
                           int B, void* stream);
// fwd (B, 2, H, W), bwd (B, 2, Hb, Wb) -> valid (B, H, W), error (B, H, W), each or null.
void flow_consistency(const float* d_fwd, int H, int W, const float* d_bwd, int Hb, int Wb,
                      float abs_tol, float rel_tol, uint8_t* d_valid, float* d_error, int B,
                      void* stream);
size_t texture_mask_workspace_bytes(int H, int W, int B);
// gray (B, H, W) -> textured (B, H, W), as flow_texture_mask.
void flow_texture_mask(const float* d_gray, int H, int W, int radius, float min_gradient,
                       TextureMeasure measure, uint8_t* d_textured, void* d_workspace, int B,
                       void* stream);
// image (C, H, W), flow (2, H, W), valid (H, W) -> out (2, H, W), as flow_interpolate (one item).
// Allocates its own scratch (its size depends on the seeds found) and synchronises the stream:
// the seed count and the seed graph's rows are read back on the way.
void flow_interpolate(const float* d_image, int C, int H, int W, const float* d_flow,
                      const uint8_t* d_valid, float* d_out, const InterpOptions& o, void* stream);
// gray_a (H, W), gray_b (Hb, Wb), flow (2, H, W) refined in place, as flow_refine_dis (one item).
// Allocates its own pyramids and planes and synchronises the stream before it returns.
void flow_refine_dis(const float* d_gray_a, int H, int W, const float* d_gray_b, int Hb, int Wb,
                     float* d_flow, const DisOptions& o, void* stream);

// ---- the layers of the official networks (cuda/nn.cu), one image per call, as nn.h's twins ----
namespace nn {
// A convolution's shape and its device arrays: weight (out, in, k, k), bias (out), bn_scale,
// bn_shift (out) or null.
struct ConvDevice {
  int out = 0, in = 0, k = 3, stride = 1, pad = 1, dil = 1;
  gocor::nn::Act act = gocor::nn::Act::None;
  const float* weight = nullptr;
  const float* bias = nullptr;
  const float* bn_scale = nullptr;
  const float* bn_shift = nullptr;
};
// in (c.in, H, W) -> out (c.out, Ho, Wo), as nn::conv2d (bias, batch norm, activation fused).
void conv2d(const ConvDevice& c, const float* d_in, int H, int W, float* d_out, void* stream);
// weight_t (Cout*16, Cin), bias (Cout), in (Cin, H, W) -> out (Cout, 2H, 2W).
void conv_transpose2d(const float* d_weight_t, const float* d_bias, int Cin, int Cout,
                      const float* d_in, int H, int W, float* d_out, void* stream);
void leaky_relu(float* d_x, int64_t n, void* stream);
void warp(const float* d_in, const float* d_flow, int C, int H, int W, bool with_mask, float* d_out,
          void* stream);
void resize_bilinear(const float* d_in, int C, int Hi, int Wi, float* d_out, int Ho, int Wo,
                     void* stream);
void resize_area(const float* d_in, int C, int Hi, int Wi, float* d_out, int Ho, int Wo,
                 void* stream);
void maxpool2(const float* d_in, int C, int H, int W, float* d_out, void* stream);
void l2norm_channels(float* d_x, int C, int H, int W, void* stream);
// v (N, N) in place; d_workspace holds 2N floats (the row and column maxima).
void mutual_matching(float* d_v, int N, float* d_workspace, void* stream);
// Bytes of d_workspace gocor_local_f64 needs: the filters and gradients, 2 C H W doubles.
size_t gocor_local_f64_workspace_bytes(int C, int H, int W);
// reference, query (C, H, W) -> volume (81, H, W), as nn::gocor_local_f64.
void gocor_local_f64(const LocalGocorParams& p, int num_iter, const float* d_ref,
                     const float* d_query, float* d_volume, int C, int H, int W,
                     double* d_workspace, void* stream);
}  // namespace nn
}  // namespace cuda_dev
}  // namespace gocor

#endif  // GOCOR_WITH_CUDA
