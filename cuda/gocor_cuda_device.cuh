// Device-resident entry points of the CUDA backend, for benchmarks that time kernels without the
// host<->device copies. Host-only C++ (no CUDA types: streams are passed as void* holding a
// cudaStream_t), so ordinary .cpp programs can include it. Pointers named d_* are device pointers.
#pragma once

#ifdef GOCOR_WITH_CUDA

#include <cstddef>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "correlation.h"
#include "flow.h"
#include "gocor.h"
#include "match.h"

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
// src (planes, H, W) -> dst (planes, h, w); d_mid holds planes*H*w floats.
void image_resize(const float* d_src, int planes, int H, int W, float* d_dst, int h, int w,
                  float* d_mid, void* stream);
// images (B, C, H, W) -> gray (B, H, W), as image_gray (dense_features.h).
void image_gray(const float* d_img, int B, int C, int H, int W, float* d_gray, void* stream);
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
size_t global_fill_workspace_bytes(const FlowGrid& ga, const FlowGrid& gb, int B);
// volume (B, gb cells, ga cells), flow (B, 2, ga) updated in place, as global_consistency_fill;
// d_workspace holds global_fill_workspace_bytes(ga, gb, B) bytes.
void global_consistency_fill(const float* d_volume, const FlowGrid& ga, const FlowGrid& gb,
                             float* d_flow, void* d_workspace, int B, void* stream);
// b (B, C, Hb, Wb), flow (B, 2, H, W) -> out (B, C, H, W), mask (B, H, W) or null.
void flow_warp_image(const float* d_b, int C, int Hb, int Wb, const float* d_flow, int H, int W,
                     float* d_out, float* d_mask, int B, void* stream);
// src (B, 2, H, W) -> dst (B, 2, H, W), 3x3 median per component (not in place).
void flow_median3(const float* d_src, float* d_dst, int H, int W, int B, void* stream);
// flow (B, 2, ga) updated in place, as flow_refine_symmetric.
void flow_refine_symmetric(const float* d_feat_a, const FlowGrid& ga, const float* d_feat_b,
                           const FlowGrid& gb, int C, float* d_flow, int iterations, int B,
                           void* stream);
size_t photometric_workspace_bytes(int B, int H, int W, int Hb, int Wb);
// images a (B, C, H, W), b (B, C, Hb, Wb) -> flow (B, 2, H, W) refined in place, as
// flow_refine_photometric on each item's gray images.
void flow_refine_photometric(const float* d_img_a, const float* d_img_b, int C, int H, int W,
                             int Hb, int Wb, float* d_flow, int iterations, int radius,
                             void* d_workspace, int B, void* stream);

// ---- the resident match (cuda/match.cu) ----
size_t match_workspace_bytes(int B, int C, int H, int W, const MatchOptions& o);
// images a, b (B, C, H, W) -> d_flow (B, 2, oh, ow), d_conf (B, oh, ow) (null: not wanted), where
// (oh, ow) is (o.out_h, o.out_w) or (H, W); the algorithm of match_images, parameters as
// match_images_cuda. d_workspace holds match_workspace_bytes(B, C, H, W, o) bytes.
void match_batch(const MatchOptions& o, const GlobalGocorParams& gp, const LocalGocorParams& lp,
                 const float* d_a, const float* d_b, int B, int C, int H, int W, float* d_flow,
                 float* d_conf, void* d_workspace, void* stream);

}  // namespace cuda_dev
}  // namespace gocor

#endif  // GOCOR_WITH_CUDA
