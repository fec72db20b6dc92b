// CUDA plumbing shared by the launchers: error translation, RAII device buffers and streams.
// Only .cu files include this (it pulls in the CUDA runtime headers).
#pragma once

// The backend's own sources are the CUDA build by definition; CMake defines this only for the
// core's users, and the declarations in gocor_cuda.h / gocor_cuda_device.cuh depend on it.
#ifndef GOCOR_WITH_CUDA
#define GOCOR_WITH_CUDA 1
#endif

#include <cuda_runtime.h>

#include <cstddef>
#include <string>
#include <utility>

#include "common.h"

namespace gocor {
namespace cuda {

// Out-of-memory gets its own code so callers can retry smaller or fall back to the CPU.
[[noreturn]] inline void throw_cuda(cudaError_t err, const char* what) {
  cudaGetLastError();  // clear a sticky launch error so the next call starts clean
  std::string msg = std::string("CUDA error in ") + what + ": " + cudaGetErrorName(err) + " (" +
                    cudaGetErrorString(err) + ")";
  if (err == cudaErrorMemoryAllocation) throw Error(ErrorCode::CudaOom, msg);
  throw Error(ErrorCode::Cuda, msg);
}

inline void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw_cuda(err, what);
}

// Checks the launch configuration of the kernel just enqueued.
inline void check_launch(const char* kernel) {
  check(cudaGetLastError(), kernel);
}

// Device memory owned for the lifetime of one call; freed on every path, including throws.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t count) { reset(count); }
  ~DeviceBuffer() { release(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), n_(o.n_) {}

  void reset(size_t count) {
    release();
    n_ = count;
    if (count == 0) return;
    void* p = nullptr;
    check(cudaMalloc(&p, count * sizeof(T)), "cudaMalloc");
    ptr_ = static_cast<T*>(p);
  }
  T* get() const { return ptr_; }
  size_t size() const { return n_; }

 private:
  void release() {
    if (ptr_ != nullptr) cudaFree(ptr_);
    ptr_ = nullptr;
  }
  T* ptr_ = nullptr;
  size_t n_ = 0;
};

// A non-blocking stream per call, so calls from several host threads overlap on the device.
class Stream {
 public:
  Stream() { check(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking), "cudaStreamCreate"); }
  ~Stream() {
    if (s_ != nullptr) cudaStreamDestroy(s_);
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return s_; }
  void sync() const { check(cudaStreamSynchronize(s_), "cudaStreamSynchronize"); }

 private:
  cudaStream_t s_ = nullptr;
};

template <typename T>
void to_device(T* dst, const T* src, size_t count, cudaStream_t s) {
  check(cudaMemcpyAsync(dst, src, count * sizeof(T), cudaMemcpyHostToDevice, s), "copy to device");
}

template <typename T>
void to_host(T* dst, const T* src, size_t count, cudaStream_t s) {
  check(cudaMemcpyAsync(dst, src, count * sizeof(T), cudaMemcpyDeviceToHost, s), "copy to host");
}

// Throws CudaUnavailable (with the probe's reason) unless a device is usable; every launcher
// starts with it so a direct call on a GPU-less machine fails cleanly instead of deep inside.
void require_device();

inline unsigned ceil_div(long long a, long long b) {
  return static_cast<unsigned>((a + b - 1) / b);
}

}  // namespace cuda
}  // namespace gocor
