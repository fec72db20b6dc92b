// Device discovery and the device-resident helpers the benchmark uses.
#include <algorithm>
#include <mutex>

#include "cuda_util.cuh"
#include "gocor_cuda.h"
#include "gocor_cuda_device.cuh"

namespace gocor {

namespace {

CudaInfo probe_once() {
  CudaInfo info;
  info.compiled = true;
  // With the static runtime these calls load libcuda lazily; on a machine without a driver they
  // return an error code instead of failing at load time, which is what lets a CUDA build run here.
  cudaRuntimeGetVersion(&info.runtime_version);
  if (cudaDriverGetVersion(&info.driver_version) != cudaSuccess) info.driver_version = 0;
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    info.reason = std::string(info.driver_version == 0 ? "no NVIDIA driver found; " : "") +
                  "cudaGetDeviceCount failed: " + cudaGetErrorName(err) + " (" +
                  cudaGetErrorString(err) + ")";
    return info;
  }
  if (count <= 0) {
    info.reason = "no CUDA device found";
    return info;
  }
  info.devices = count;
  cudaDeviceProp prop;
  err = cudaGetDeviceProperties(&prop, 0);
  if (err != cudaSuccess) {
    cudaGetLastError();
    info.reason = std::string("cudaGetDeviceProperties failed: ") + cudaGetErrorString(err);
    return info;
  }
  info.name = prop.name;
  info.cc_major = prop.major;
  info.cc_minor = prop.minor;
  info.total_memory = prop.totalGlobalMem;
  if (info.runtime_version > info.driver_version) {
    info.reason = "the CUDA driver (" + std::to_string(info.driver_version) +
                  ") is older than the runtime this build uses (" +
                  std::to_string(info.runtime_version) + ")";
    return info;
  }
  info.available = true;
  return info;
}

}  // namespace

CudaInfo cuda_probe() {
  static std::once_flag once;
  static CudaInfo cached;
  std::call_once(once, [] {
    try {
      cached = probe_once();
    } catch (...) {
      cached = CudaInfo();
      cached.compiled = true;
      cached.reason = "the CUDA probe failed unexpectedly";
    }
  });
  return cached;
}

namespace cuda {

void require_device() {
  CudaInfo info = cuda_probe();
  if (!info.available) {
    throw Error(ErrorCode::CudaUnavailable, "CUDA is unavailable: " + info.reason);
  }
}

}  // namespace cuda

namespace cuda_dev {

void* alloc(size_t bytes) {
  cuda::require_device();
  void* p = nullptr;
  cuda::check(cudaMalloc(&p, bytes == 0 ? 1 : bytes), "cudaMalloc");
  return p;
}

void free(void* p) {
  if (p != nullptr) cudaFree(p);
}

void upload(void* d_dst, const void* src, size_t bytes) {
  cuda::check(cudaMemcpy(d_dst, src, bytes, cudaMemcpyHostToDevice), "upload");
}

void download(void* dst, const void* d_src, size_t bytes) {
  cuda::check(cudaMemcpy(dst, d_src, bytes, cudaMemcpyDeviceToHost), "download");
}

void* stream_create() {
  cuda::require_device();
  cudaStream_t s = nullptr;
  cuda::check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
  return s;
}

void stream_destroy(void* stream) {
  if (stream != nullptr) cudaStreamDestroy(static_cast<cudaStream_t>(stream));
}

void stream_sync(void* stream) {
  cuda::check(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)), "cudaStreamSynchronize");
}

std::vector<double> time_on_stream(void* stream, int warmup, int reps,
                                   const std::function<void()>& fn) {
  auto s = static_cast<cudaStream_t>(stream);
  for (int i = 0; i < warmup; ++i) fn();
  cuda::check(cudaStreamSynchronize(s), "warm-up");
  cudaEvent_t start = nullptr, stop = nullptr;
  cuda::check(cudaEventCreate(&start), "cudaEventCreate");
  cudaError_t err = cudaEventCreate(&stop);
  if (err != cudaSuccess) {
    cudaEventDestroy(start);
    cuda::throw_cuda(err, "cudaEventCreate");
  }
  std::vector<double> ms;
  try {
    for (int i = 0; i < reps; ++i) {
      cuda::check(cudaEventRecord(start, s), "cudaEventRecord");
      fn();
      cuda::check(cudaEventRecord(stop, s), "cudaEventRecord");
      cuda::check(cudaEventSynchronize(stop), "cudaEventSynchronize");
      float t = 0.f;
      cuda::check(cudaEventElapsedTime(&t, start, stop), "cudaEventElapsedTime");
      ms.push_back(t);
    }
  } catch (...) {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    throw;
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return ms;
}

}  // namespace cuda_dev
}  // namespace gocor
