// The binding's one pattern: JS arguments are read into plain C++ values on the main thread, a
// PromiseWorker runs the computation on a libuv thread without touching V8, and OnOK converts the
// result. Inputs that are typed arrays stay referenced until the worker is done.
#pragma once

#include <napi.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common.h"

namespace gocor_napi {

// Thrown on the main thread for malformed arguments that TypeScript validation should have caught.
inline Napi::Error make_error(Napi::Env env, const char* code, const std::string& message) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, code));
  return err;
}

[[noreturn]] inline void throw_invalid(Napi::Env env, const std::string& message) {
  throw make_error(env, "ERR_GOCOR_INVALID_ARG", message);
}

// A float32 input viewed from C++: pointer and length, kept alive by a reference.
struct F32In {
  const float* data = nullptr;
  size_t length = 0;
};

// Reads a Float32Array argument; `name` appears in the error message.
F32In read_f32(const Napi::Value& v, const char* name);
int32_t read_int(const Napi::Object& o, const char* key, int32_t fallback);
double read_number(const Napi::Object& o, const char* key, double fallback);
bool read_bool(const Napi::Object& o, const char* key, bool fallback);
gocor::Device read_device(const Napi::Object& o);
// {device, threads} of an options object.
gocor::Exec read_exec(const Napi::Object& opts);
inline const char* device_name(gocor::Device d) {
  return d == gocor::Device::Cuda ? "cuda" : "cpu";
}

// Float32 output that owns its storage until it is handed to JS as an external ArrayBuffer
// (no copy, and no allocation on the event loop for large volumes).
using F32Buffer = std::vector<float>;
Napi::Float32Array to_js(Napi::Env env, F32Buffer&& buf);

class PromiseWorker : public Napi::AsyncWorker {
 public:
  using Compute = std::function<void()>;
  using Finish = std::function<Napi::Value(Napi::Env)>;

  PromiseWorker(Napi::Env env, Compute compute, Finish finish)
      : Napi::AsyncWorker(env, "gocor"),
        deferred_(Napi::Promise::Deferred::New(env)),
        compute_(std::move(compute)),
        finish_(std::move(finish)) {}

  // Keeps a JS value (an input typed array) alive until the worker completes.
  void keep(const Napi::Value& v) { refs_.emplace_back(Napi::Persistent(v)); }

  Napi::Promise queue_and_promise() {
    Queue();
    return deferred_.Promise();
  }

 protected:
  void Execute() override;
  void OnOK() override;
  void OnError(const Napi::Error& e) override;

 private:
  Napi::Promise::Deferred deferred_;
  Compute compute_;
  Finish finish_;
  std::vector<Napi::Reference<Napi::Value>> refs_;
  std::string code_ = "ERR_GOCOR_INTERNAL";
};

// Each area registers its functions on the exports object.
void init_info(Napi::Env env, Napi::Object exports);
void init_correlation(Napi::Env env, Napi::Object exports);
void init_gocor(Napi::Env env, Napi::Object exports);
void init_match(Napi::Env env, Napi::Object exports);

}  // namespace gocor_napi
