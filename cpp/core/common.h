// Shared vocabulary of the C++ core: errors with stable codes and the execution context.
// No napi, no CUDA headers, no printing, no abort: failures are thrown as gocor::Error.
#pragma once

#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace gocor {

enum class ErrorCode {
  InvalidArg,       // ERR_GOCOR_INVALID_ARG
  Shape,            // ERR_GOCOR_SHAPE
  TooLarge,         // ERR_GOCOR_TOO_LARGE
  CudaUnavailable,  // ERR_GOCOR_CUDA_UNAVAILABLE
  CudaOom,          // ERR_GOCOR_CUDA_OOM
  Cuda,             // ERR_GOCOR_CUDA
  Aborted,          // ERR_GOCOR_ABORTED
  Internal,         // ERR_GOCOR_INTERNAL
};

const char* error_code_name(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

enum class Device { Auto, Cpu, Cuda };

// How one call runs. threads <= 0 means "all threads of the shared pool".
// cancel, when set, is polled between coarse work items; a set flag ends the call with Aborted.
struct Exec {
  Device device = Device::Cpu;
  int threads = 0;
  const std::atomic<bool>* cancel = nullptr;
};

inline void check_cancel(const Exec& ex) {
  if (ex.cancel != nullptr && ex.cancel->load(std::memory_order_relaxed)) {
    throw Error(ErrorCode::Aborted, "the operation was aborted");
  }
}

}  // namespace gocor
