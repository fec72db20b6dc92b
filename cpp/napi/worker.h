// The binding's one pattern. A native function reads its JS arguments into a Job on the main
// thread, copying every array into memory the job owns (so the caller may resize, transfer or
// overwrite its arrays as soon as the call returns), and returns a handle {start(): Promise,
// cancel()}. start() runs the job on a libuv thread, which never touches V8; the completion builds
// the result with calls that cannot throw, because a worker thread's environment may be shutting
// down by then.
#pragma once

// A JS exception that cannot be thrown because the environment is terminating (a worker thread
// ended with a call in flight) is dropped instead of becoming a C++ exception that aborts the
// process. This header is the only one that includes napi.h, so the setting holds everywhere.
#ifndef NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS
#define NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS
#endif
#include <napi.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "common.h"

namespace gocor_napi {

Napi::Error make_error(Napi::Env env, const char* code, const std::string& message);
[[noreturn]] void throw_invalid(Napi::Env env, const std::string& message);

// Reads of option objects that TypeScript has validated and filled in. `fallback` is the core
// struct's own default (never a literal here: defaults live in TypeScript); a mistyped value is a
// bug in the caller of the raw binding and throws ERR_GOCOR_INVALID_ARG.
int32_t read_int(const Napi::Object& o, const char* key, int32_t fallback);
double read_number(const Napi::Object& o, const char* key, double fallback);
bool read_bool(const Napi::Object& o, const char* key, bool fallback);
Napi::Object read_object(const Napi::Value& v, const char* name);

// Element count of a tensor of the given dimensions; throws ERR_GOCOR_SHAPE unless every
// dimension is positive, ERR_GOCOR_TOO_LARGE beyond 2^40 elements.
size_t count(Napi::Env env, std::initializer_list<int64_t> dims, const char* name);

// Float32 memory that its job writes in full (a correlation volume, a copied input): a block of
// the core's pool (blocks.h), never zero-filled. Handed to JS without a copy; when JS drops it, the
// block goes back to the pool for a later output or input of its size class, so a call repeated on
// a shape pays neither page faults nor the kernel's clearing of fresh pages. Move-only.
class FreshF32 {
 public:
  FreshF32() = default;
  explicit FreshF32(size_t n);  // n floats, contents undefined; TooLarge when out of memory
  FreshF32(FreshF32&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr; }
  FreshF32& operator=(FreshF32&& o) noexcept;
  FreshF32(const FreshF32&) = delete;
  FreshF32& operator=(const FreshF32&) = delete;
  ~FreshF32() { recycle(p_, n_); }
  float* data() const { return p_; }
  size_t size() const { return p_ ? n_ : 0; }
  float* begin() const { return p_; }
  float* end() const { return p_ + size(); }
  // Gives up ownership: the block (of n floats) goes back through recycle(p, n).
  float* release() {
    float* p = p_;
    p_ = nullptr;
    return p;
  }
  static void recycle(float* p, size_t n);

 private:
  float* p_ = nullptr;
  size_t n_ = 0;
};

// A Float32Array argument copied into owned memory (on the main thread, during the call);
// throws ERR_GOCOR_SHAPE unless it holds exactly `length` elements.
std::vector<float> copy_f32(const Napi::Value& v, const char* name, size_t length);
// The same without a length check (parameter vectors whose length depends on other fields).
std::vector<float> copy_f32(const Napi::Value& v, const char* name);
// The length-checked copy_f32 into a FreshF32 (pooled blocks: an input repeated on a shape maps
// no fresh pages).
FreshF32 copy_f32_fresh(const Napi::Value& v, const char* name, size_t length);
// The bound on feature values: lib/validate.ts's MAX_VALUE (README "Limits and failure
// behaviour"), far above real data and far enough below float32's range that the products the
// correlations and GOCor form stay finite.
constexpr float kMaxFeatureValue = 1e6f;
// The one check of feature values, made as the binding copies a feature map's data (`name`.data,
// a Float32Array of exactly `length` elements, else ERR_GOCOR_SHAPE) into a job: chunk by chunk,
// take(src, i0, n) copies elements i0 .. i0+n-1 of src (n = chunk but for the last) wherever and
// in whatever layout the job keeps them, then they are checked while still in L1: every value
// finite and at most kMaxFeatureValue in magnitude (ERR_GOCOR_INVALID_ARG naming `name`.data and
// the first element out of bounds). TypeScript checks the shapes only.
void take_features(const Napi::Value& v, const std::string& name, size_t length, size_t chunk,
                   const std::function<void(const float* src, size_t i0, size_t n)>& take);
// A feature map's data copied as it is into a FreshF32 (inputs of a few MiB that a call repeated
// on a shape would otherwise map afresh each time: their page faults cost as much as a large part
// of a correlation), checked by take_features.
FreshF32 copy_features(const Napi::Value& v, const char* name, size_t length);
// The same into a vector (a pyramid level of match).
std::vector<float> copy_features_vector(const Napi::Value& v, const std::string& name,
                                        size_t length);

// Float32 output owned by the job until it is handed to JS as an external ArrayBuffer (no copy).
using F32Buffer = std::vector<float>;

// A volume with a non-finite value is refused rather than returned (thrown from Job::run as
// ERR_GOCOR_INVALID_ARG): float32 overflowed because features or parameters, although within
// the bounds TypeScript checks, are far outside their usual ranges.
void require_finite(const float* v, size_t n, const char* what);
inline void require_finite(const F32Buffer& v, const char* what) {
  require_finite(v.data(), v.size(), what);
}

// Builds a result in the completion callback with the plain C API: every call is checked and
// nothing throws. After the first failure (the environment is shutting down) the remaining calls
// do nothing and the result is dropped.
class Out {
 public:
  explicit Out(napi_env env) : env_(env) {}
  bool ok() const { return ok_; }
  napi_value object();
  napi_value array(size_t length);
  napi_value number(double v);
  napi_value boolean(bool v);
  napi_value string(const char* s);
  napi_value f32(F32Buffer&& buf);            // zero-copy Float32Array
  napi_value f32(FreshF32&& buf);             // zero-copy Float32Array
  napi_value u8(std::vector<uint8_t>&& buf);  // zero-copy Uint8Array
  void set(napi_value object, const char* key, napi_value v);
  void set(napi_value array, uint32_t index, napi_value v);
  void set(napi_value object, const char* key, double v) { set(object, key, number(v)); }

 private:
  napi_value check(napi_status s, const napi_value& v);
  // A typed array of `type` over buf's storage without a copy (f32, u8).
  template <typename T>
  napi_value external(std::vector<T>& buf, napi_typedarray_type type);
  napi_env env_;
  bool ok_ = true;
};

// One native call. Subclasses hold the copied inputs and the outputs.
class Job {
 public:
  virtual ~Job() = default;
  // On a libuv thread, with ex.device already resolved by dispatch (Cpu or Cuda). Throws
  // gocor::Error (or bad_alloc) on failure; polls ex.cancel through the core's check_cancel.
  virtual void run(const gocor::Exec& ex) = 0;
  // On the main thread after run succeeded: the result object ("device" is added to it).
  virtual napi_value result(Out& out) = 0;

  gocor::Exec exec;      // as requested: device Auto, Cpu or Cuda; threads
  bool has_cuda = true;  // false: no CUDA twin, runs on the CPU once the device was checked
};

// Reads {device, threads} of an options object into job.exec.
void read_exec(const Napi::Object& opts, Job& job);

// The JS handle of a prepared job: {start(): Promise<result>, cancel(): void}.
Napi::Value job_handle(Napi::Env env, std::unique_ptr<Job> job);

// Bytes one call would allocate, from shapes and options alone: the binding's copies of the
// inputs, the outputs, and the core's working set (its *_bytes functions, computed next to its
// allocations). estimateBytes(op, dims, options) looks `op` up among the registered estimators.
using Estimate = size_t (*)(Napi::Env env, const Napi::Object& dims, const Napi::Object& opts);
void add_estimate(Napi::Env env, const char* op, Estimate fn);

// Registers `fn` on exports; any C++ exception it throws becomes a JS error with a gocor code.
void export_function(Napi::Env env, Napi::Object exports, const char* name,
                     Napi::Value (*fn)(const Napi::CallbackInfo&));

// Each area registers its functions on the exports object.
void init_jobs(Napi::Env env, Napi::Object exports);
void init_info(Napi::Env env, Napi::Object exports);
void init_correlation(Napi::Env env, Napi::Object exports);
void init_gocor(Napi::Env env, Napi::Object exports);
void init_match(Napi::Env env, Napi::Object exports);

}  // namespace gocor_napi
