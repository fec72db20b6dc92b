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

// A concrete device passes through (resolve_device only re-checks a Cuda against the cached
// probe); Auto is resolved for callers that did not resolve it themselves.
#ifdef GOCOR_WITH_CUDA
#define GOCOR_CUDA_TWIN(name, ...) \
  if (run.device == Device::Cuda) return name##_cuda(__VA_ARGS__)
#else
#define GOCOR_CUDA_TWIN(name, ...)
#endif
#define GOCOR_DISPATCH(name, ...)                                           \
  do {                                                                      \
    Exec run = ex;                                                          \
    if (run.device != Device::Cpu) run.device = resolve_device(run.device); \
    GOCOR_CUDA_TWIN(name, __VA_ARGS__);                                     \
    return name##_cpu(__VA_ARGS__);                                         \
  } while (0)

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

}  // namespace gocor
