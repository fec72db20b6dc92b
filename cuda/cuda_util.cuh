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
#include <vector>

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

// Throws CudaUnavailable (with the probe's reason) unless a device is usable; every launcher
// starts with it so a direct call on a GPU-less machine fails cleanly instead of deep inside.
void require_device();

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

// The one sequence of every host-pointer twin: device check and cancellation (constructor), a
// stream, device copies of the inputs, device buffers for the outputs, and finish(): the outputs
// copied back to their host arrays and one synchronisation. A null host pointer gives a null
// device pointer (an output not asked for). Buffers live until the call object goes; they are
// freed before its stream.
class HostCall {
 public:
  explicit HostCall(const Exec& ex) : ready_(prepare(ex)) {}

  // A device copy of host[0 .. n).
  template <typename T>
  T* in(const T* host, size_t n) {
    if (host == nullptr) return nullptr;
    T* d = scratch<T>(n);
    to_device(d, host, n, stream_.get());
    return d;
  }
  // A device buffer of n elements that finish() copies to host.
  template <typename T>
  T* out(T* host, size_t n) {
    if (host == nullptr) return nullptr;
    T* d = scratch<T>(n);
    back_.push_back({host, d, n * sizeof(T)});
    return d;
  }
  // in and out: a host array updated in place.
  template <typename T>
  T* inout(T* host, size_t n) {
    T* d = in<T>(host, n);
    if (d != nullptr) back_.push_back({host, d, n * sizeof(T)});
    return d;
  }
  // Device memory for n elements, not initialised.
  template <typename T>
  T* scratch(size_t n) {
    buffers_.emplace_back(n * sizeof(T));
    return reinterpret_cast<T*>(buffers_.back().get());
  }
  cudaStream_t stream() const { return stream_.get(); }
  void finish() {
    for (const Back& b : back_) {
      check(cudaMemcpyAsync(b.host, b.device, b.bytes, cudaMemcpyDeviceToHost, stream_.get()),
            "copy to host");
    }
    stream_.sync();
  }

 private:
  struct Back {
    void* host;
    const void* device;
    size_t bytes;
  };
  static bool prepare(const Exec& ex) {
    require_device();
    check_cancel(ex);
    return true;
  }
  bool ready_;
  Stream stream_;
  std::vector<DeviceBuffer<char>> buffers_;
  std::vector<Back> back_;
};

inline unsigned ceil_div(long long a, long long b) {
  return static_cast<unsigned>((a + b - 1) / b);
}

}  // namespace cuda
}  // namespace gocor
