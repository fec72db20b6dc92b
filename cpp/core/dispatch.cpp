#include "dispatch.h"

namespace gocor {

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::InvalidArg: return "ERR_GOCOR_INVALID_ARG";
    case ErrorCode::Shape: return "ERR_GOCOR_SHAPE";
    case ErrorCode::TooLarge: return "ERR_GOCOR_TOO_LARGE";
    case ErrorCode::CudaUnavailable: return "ERR_GOCOR_CUDA_UNAVAILABLE";
    case ErrorCode::CudaOom: return "ERR_GOCOR_CUDA_OOM";
    case ErrorCode::Cuda: return "ERR_GOCOR_CUDA";
    case ErrorCode::Aborted: return "ERR_GOCOR_ABORTED";
    case ErrorCode::Internal: return "ERR_GOCOR_INTERNAL";
  }
  return "ERR_GOCOR_INTERNAL";
}

CudaInfo cuda_info() {
#ifdef GOCOR_WITH_CUDA
  return cuda_probe();
#else
  CudaInfo info;
  info.reason =
      "this build of gocor has no CUDA backend (built with GOCOR_CUDA=OFF or without nvcc)";
  return info;
#endif
}

Device resolve_device(Device requested, bool has_cuda) {
  if (requested == Device::Cpu) return Device::Cpu;
  CudaInfo info = cuda_info();
  if (info.available) return has_cuda ? Device::Cuda : Device::Cpu;
  if (requested == Device::Auto) return Device::Cpu;
  throw Error(ErrorCode::CudaUnavailable,
              "device 'cuda' was requested but CUDA is unavailable: " + info.reason);
}

// Every dispatched operation routes the same way: the device is checked (a concrete device passes
// through, resolve_device only re-checks a Cuda against the cached probe; Auto is resolved for
// callers that did not resolve it themselves); the CUDA twin runs when the device is Cuda and
// `to_cuda` holds; otherwise the CPU twin, with the Exec saying so.
#ifdef GOCOR_WITH_CUDA
#define GOCOR_CUDA_TWIN(to_cuda, name, ...) \
  if (run.device == Device::Cuda && (to_cuda)) return name##_cuda(__VA_ARGS__)
#else
#define GOCOR_CUDA_TWIN(to_cuda, name, ...)
#endif
#define GOCOR_ROUTE(twin, name, ...)                                        \
  do {                                                                      \
    Exec run = ex;                                                          \
    if (run.device != Device::Cpu) run.device = resolve_device(run.device); \
    twin;                                                                   \
    run.device = Device::Cpu;                                               \
    return name##_cpu(__VA_ARGS__);                                         \
  } while (0)
// Correlation and GOCor: their twins have passed parity on a GPU.
#define GOCOR_DISPATCH(name, ...) \
  GOCOR_ROUTE(GOCOR_CUDA_TWIN(true, name, __VA_ARGS__), name, __VA_ARGS__)

void corr_global(const float* reference, const float* query, float* out, const CorrGlobalShape& s,
                 const Exec& ex) {
  GOCOR_DISPATCH(corr_global, reference, query, out, s, run);
}

void corr_local(const float* reference, const float* query, float* out, const CorrLocalShape& s,
                const Exec& ex) {
  GOCOR_DISPATCH(corr_local, reference, query, out, s, run);
}

void gocor_global(const GlobalGocorParams& p, const GlobalGocorOptions& o, const float* reference,
                  const float* query, float* volume, float* filter_out, const GocorGlobalShape& s,
                  const Exec& ex, std::vector<GocorIterDiag>* diag) {
  GOCOR_DISPATCH(gocor_global, p, o, reference, query, volume, filter_out, s, run, diag);
}

void gocor_local(const LocalGocorParams& p, const LocalGocorOptions& o, const float* reference,
                 const float* query, float* volume, float* filter_out, int B, int C, int H, int W,
                 const Exec& ex, std::vector<GocorIterDiag>* diag) {
  GOCOR_DISPATCH(gocor_local, p, o, reference, query, volume, filter_out, B, C, H, W, run, diag);
}

// ---- the stages of match ------------------------------------------------------------------

namespace {

struct StageInfo {
  const char* name;
  bool twin;     // a CUDA twin exists (in a CUDA build)
  bool on_cuda;  // ... and has passed parity on a GPU, so dispatch sends Device::Cuda to it
};

// One row per Stage, in its order. No stage or layer twin has run on a GPU yet (issue 17).
constexpr StageInfo kStages[] = {
    {"image_resize", true, false},
    {"features_compute", true, false},
    {"flow_resample", true, false},
    {"flow_resize", false, false},
    {"flow_warp", true, false},
    {"flow_from_global_volume", true, false},
    {"flow_from_local_volume", true, false},
    {"flow_warp_image", true, false},
    {"flow_refine_symmetric", true, false},
    {"flow_volume_aggregate", true, false},
    {"flow_consistency", true, false},
    {"flow_texture_mask", true, false},
    {"flow_median3", true, false},
    {"flow_interpolate", true, false},
    {"flow_refine_dis", true, false},
    {"nn::conv2d", true, false},
    {"nn::conv_transpose2d", true, false},
    {"nn::leaky_relu", true, false},
    {"nn::warp", true, false},
    {"nn::resize_bilinear", true, false},
    {"nn::resize_area", true, false},
    {"nn::maxpool2", true, false},
    {"nn::l2norm_channels", true, false},
    {"nn::mutual_matching", true, false},
    {"nn::gocor_local_f64", true, false},
};
static_assert(sizeof(kStages) / sizeof(kStages[0]) == size_t(Stage::Count),
              "one kStages row per Stage");

const StageInfo& info(Stage s) {
  return kStages[size_t(s)];
}

}  // namespace

const char* stage_name(Stage s) {
  return info(s).name;
}

bool stage_on_cuda(Stage s) {
#ifdef GOCOR_WITH_CUDA
  return info(s).twin && info(s).on_cuda;
#else
  (void)s;
  return false;
#endif
}

// A stage of match: its CUDA twin only once cleared (stage_on_cuda). A stage without a twin yet
// has the device checked all the same (so 'cuda' means the same for every operation).
#define GOCOR_DISPATCH_STAGE(stage, name, ...) \
  GOCOR_ROUTE(GOCOR_CUDA_TWIN(stage_on_cuda(stage), name, __VA_ARGS__), name, __VA_ARGS__)
#define GOCOR_DISPATCH_CPU_ONLY(name, ...) GOCOR_ROUTE((void)0, name, __VA_ARGS__)

void image_resize(const float* src, int C, int H, int W, float* dst, int h, int w, const Exec& ex) {
  GOCOR_DISPATCH_STAGE(Stage::ImageResize, image_resize, src, C, H, W, dst, h, w, run);
}

void features_compute(const ImageView& img, int Hf, int Wf, int cell, float* out, const Exec& ex) {
  GOCOR_DISPATCH_STAGE(Stage::FeaturesCompute, features_compute, img, Hf, Wf, cell, out, run);
}

void flow_resample(const float* flow_in, const FlowGrid& gi, float* flow_out, const FlowGrid& go,
                   const Exec& ex) {
  GOCOR_DISPATCH_STAGE(Stage::FlowResample, flow_resample, flow_in, gi, flow_out, go, run);
}

void flow_resize(const float* flow, int H, int W, float* out, int h, int w, const Exec& ex) {
  GOCOR_DISPATCH_CPU_ONLY(flow_resize, flow, H, W, out, h, w, run);
}

void flow_warp(const float* feat_b, int C, const FlowGrid& gb, const float* flow,
               const FlowGrid& ga, float* out, const Exec& ex) {
  GOCOR_DISPATCH_STAGE(Stage::FlowWarp, flow_warp, feat_b, C, gb, flow, ga, out, run);
}

void flow_from_global_volume(const float* volume, const FlowGrid& ga, const FlowGrid& gb,
                             float* flow, float* peak, const Exec& ex) {
  GOCOR_DISPATCH_STAGE(Stage::FlowFromGlobalVolume, flow_from_global_volume, volume, ga, gb, flow,
                       peak, run);
}

void flow_from_local_volume(const float* volume, int R, int H, int W, float* residual,
                            float* confidence, const Exec& ex) {
  GOCOR_DISPATCH_STAGE(Stage::FlowFromLocalVolume, flow_from_local_volume, volume, R, H, W,
                       residual, confidence, run);
}

void flow_warp_image(const float* b, int C, int Hb, int Wb, const float* flow, int H, int W,
                     float* out, float* mask, const Exec& ex) {
  GOCOR_DISPATCH_STAGE(Stage::FlowWarpImage, flow_warp_image, b, C, Hb, Wb, flow, H, W, out, mask,
                       run);
}

void flow_refine_symmetric(const float* feat_a, const FlowGrid& ga, const float* feat_b,
                           const FlowGrid& gb, int C, float* flow, int iterations, const Exec& ex) {
  GOCOR_DISPATCH_STAGE(Stage::FlowRefineSymmetric, flow_refine_symmetric, feat_a, ga, feat_b, gb, C,
                       flow, iterations, run);
}

void flow_volume_aggregate(float* volume, int D, int H, int W, int radius, const Exec& ex) {
  GOCOR_DISPATCH_STAGE(Stage::FlowVolumeAggregate, flow_volume_aggregate, volume, D, H, W, radius,
                       run);
}

void flow_consistency(const float* fwd, int H, int W, const float* bwd, int Hb, int Wb,
                      float abs_tol, float rel_tol, uint8_t* valid, float* error, const Exec& ex) {
  GOCOR_DISPATCH_STAGE(Stage::FlowConsistency, flow_consistency, fwd, H, W, bwd, Hb, Wb, abs_tol,
                       rel_tol, valid, error, run);
}

void flow_texture_mask(const float* gray, int H, int W, int radius, float min_gradient,
                       TextureMeasure measure, uint8_t* textured, const Exec& ex) {
  GOCOR_DISPATCH_STAGE(Stage::FlowTextureMask, flow_texture_mask, gray, H, W, radius, min_gradient,
                       measure, textured, run);
}

void flow_median3(float* flow, int H, int W, const Exec& ex) {
  GOCOR_DISPATCH_STAGE(Stage::FlowMedian3, flow_median3, flow, H, W, run);
}

void flow_interpolate(const float* image, int C, int H, int W, const float* flow,
                      const uint8_t* valid, float* out, const InterpOptions& o, const Exec& ex) {
  GOCOR_DISPATCH_STAGE(Stage::FlowInterpolate, flow_interpolate, image, C, H, W, flow, valid, out,
                       o, run);
}

void flow_refine_dis(const float* gray_a, int H, int W, const float* gray_b, int Hb, int Wb,
                     float* flow, const DisOptions& o, const Exec& ex) {
  GOCOR_DISPATCH_STAGE(Stage::FlowRefineDis, flow_refine_dis, gray_a, H, W, gray_b, Hb, Wb, flow, o,
                       run);
}

// ---- the layers of the networks -------------------------------------------------------------

namespace nn {

bool any_layer_on_cuda() {
  for (int s = int(Stage::NnConv2d); s < int(Stage::Count); ++s)
    if (stage_on_cuda(Stage(s))) return true;
  return false;
}

void conv2d(const Conv& c, const float* in, int H, int W, float* out, const Exec& ex) {
  GOCOR_DISPATCH_STAGE(Stage::NnConv2d, conv2d, c, in, H, W, out, run);
}

void conv_transpose2d(const Deconv& d, const float* in, int H, int W, float* out, const Exec& ex) {
  GOCOR_DISPATCH_STAGE(Stage::NnConvTranspose2d, conv_transpose2d, d, in, H, W, out, run);
}

void leaky_relu(float* x, int64_t n, const Exec& ex) {
  GOCOR_DISPATCH_STAGE(Stage::NnLeakyRelu, leaky_relu, x, n, run);
}

void warp(const float* in, const float* flow, int C, int H, int W, bool with_mask, float* out,
          const Exec& ex) {
  GOCOR_DISPATCH_STAGE(Stage::NnWarp, warp, in, flow, C, H, W, with_mask, out, run);
}

void resize_bilinear(const float* in, int C, int Hi, int Wi, float* out, int Ho, int Wo,
                     const Exec& ex) {
  GOCOR_DISPATCH_STAGE(Stage::NnResizeBilinear, resize_bilinear, in, C, Hi, Wi, out, Ho, Wo, run);
}

void resize_area(const float* in, int C, int Hi, int Wi, float* out, int Ho, int Wo,
                 const Exec& ex) {
  GOCOR_DISPATCH_STAGE(Stage::NnResizeArea, resize_area, in, C, Hi, Wi, out, Ho, Wo, run);
}

void maxpool2(const float* in, int C, int H, int W, float* out, const Exec& ex) {
  GOCOR_DISPATCH_STAGE(Stage::NnMaxpool2, maxpool2, in, C, H, W, out, run);
}

void l2norm_channels(float* x, int C, int H, int W, const Exec& ex) {
  GOCOR_DISPATCH_STAGE(Stage::NnL2normChannels, l2norm_channels, x, C, H, W, run);
}

void mutual_matching(float* v, int N, const Exec& ex) {
  GOCOR_DISPATCH_STAGE(Stage::NnMutualMatching, mutual_matching, v, N, run);
}

void gocor_local_f64(const LocalGocorParams& p, int num_iter, const float* reference,
                     const float* query, float* volume, int C, int H, int W, const Exec& ex) {
  GOCOR_DISPATCH_STAGE(Stage::NnGocorLocalF64, gocor_local_f64, p, num_iter, reference, query,
                       volume, C, H, W, run);
}

}  // namespace nn

}  // namespace gocor
