#include "worker.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <new>
#include <utility>

#include "blocks.h"
#include "dispatch.h"
#include "simd.h"

namespace gocor_napi {

Napi::Error make_error(Napi::Env env, const char* code, const std::string& message) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, code));
  return err;
}

void throw_invalid(Napi::Env env, const std::string& message) {
  throw make_error(env, "ERR_GOCOR_INVALID_ARG", message);
}

namespace {

Napi::Value field(const Napi::Object& o, const char* key, bool (Napi::Value::*is)() const,
                  const char* what) {
  Napi::Value v = o.Get(key);
  if (!v.IsUndefined() && !(v.*is)()) {
    throw_invalid(o.Env(), std::string("Expected ") + what + " for " + key);
  }
  return v;
}

}  // namespace

int32_t read_int(const Napi::Object& o, const char* key, int32_t fallback) {
  Napi::Value v = field(o, key, &Napi::Value::IsNumber, "number");
  return v.IsUndefined() ? fallback : v.As<Napi::Number>().Int32Value();
}

double read_number(const Napi::Object& o, const char* key, double fallback) {
  Napi::Value v = field(o, key, &Napi::Value::IsNumber, "number");
  return v.IsUndefined() ? fallback : v.As<Napi::Number>().DoubleValue();
}

bool read_bool(const Napi::Object& o, const char* key, bool fallback) {
  Napi::Value v = field(o, key, &Napi::Value::IsBoolean, "boolean");
  return v.IsUndefined() ? fallback : v.As<Napi::Boolean>().Value();
}

Napi::Object read_object(const Napi::Value& v, const char* name) {
  if (!v.IsObject()) throw_invalid(v.Env(), std::string("Expected object for ") + name);
  return v.As<Napi::Object>();
}

size_t count(Napi::Env env, std::initializer_list<int64_t> dims, const char* name) {
  // 2^40 elements (4 TiB of float32) is far beyond any memory limit and keeps every later
  // byte-size product exact.
  constexpr uint64_t kMax = uint64_t(1) << 40;
  uint64_t n = 1;
  for (int64_t d : dims) {
    if (d <= 0) {
      throw make_error(env, "ERR_GOCOR_SHAPE", std::string(name) + ": dimensions must be positive");
    }
    if (__builtin_mul_overflow(n, uint64_t(d), &n) || n > kMax) {
      throw make_error(env, "ERR_GOCOR_TOO_LARGE", std::string(name) + ": more than 2^40 elements");
    }
  }
  return size_t(n);
}

namespace {

// The Float32Array argument v; with `length`, one of exactly that many elements.
Napi::Float32Array f32_argument(const Napi::Value& v, const char* name, const size_t* length) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    throw_invalid(v.Env(), std::string("Expected Float32Array for ") + name);
  }
  Napi::Float32Array a = v.As<Napi::Float32Array>();
  if (length != nullptr && a.ElementLength() != *length) {
    throw make_error(v.Env(), "ERR_GOCOR_SHAPE",
                     std::string(name) + ": expected " + std::to_string(*length) +
                         " elements but received " + std::to_string(a.ElementLength()));
  }
  return a;
}

}  // namespace

std::vector<float> copy_f32(const Napi::Value& v, const char* name) {
  Napi::Float32Array a = f32_argument(v, name, nullptr);
  const float* p = a.Data();
  return p ? std::vector<float>(p, p + a.ElementLength()) : std::vector<float>();
}

std::vector<float> copy_f32(const Napi::Value& v, const char* name, size_t length) {
  Napi::Float32Array a = f32_argument(v, name, &length);
  const float* p = a.Data();
  return p ? std::vector<float>(p, p + length) : std::vector<float>();
}

FreshF32 copy_f32_fresh(const Napi::Value& v, const char* name, size_t length) {
  Napi::Float32Array a = f32_argument(v, name, &length);
  FreshF32 out(length);
  if (length > 0) std::memcpy(out.data(), a.Data(), length * sizeof(float));
  return out;
}

namespace {

// Whether any of x[0 .. n) is NaN, infinite or above kMaxFeatureValue in magnitude, at the core's
// widest SIMD level: the addon is built for the baseline ISA, whose 4-lane loop took 36 us per MiB
// of L1-resident chunks against 7 us at AVX-512 (Zen 5), 2 % of a 1024-position correlate().
bool any_out_of_bounds(const float* x, size_t n) {
  return !(gocor::simd::max_magnitude(x, n) <= kMaxFeatureValue);
}

// ERR_GOCOR_INVALID_ARG naming `name`.data and the first element of x[i0 .. i0+n) out of bounds.
[[noreturn]] void throw_out_of_bounds(Napi::Env env, const float* x, size_t i0, size_t n,
                                      const std::string& name) {
  size_t i = i0;
  while (i + 1 < i0 + n && x[i] <= kMaxFeatureValue && x[i] >= -kMaxFeatureValue) ++i;
  const float v = x[i];
  char value[32];
  if (std::isnan(v)) {
    std::snprintf(value, sizeof value, "NaN");
  } else if (std::isinf(v)) {
    std::snprintf(value, sizeof value, v > 0 ? "Infinity" : "-Infinity");
  } else {
    std::snprintf(value, sizeof value, "%.9g", double(v));
  }
  throw make_error(
      env, "ERR_GOCOR_INVALID_ARG",
      std::string("Expected ") +
          (std::isfinite(v) ? "values of magnitude at most 1000000" : "finite values") + " in " +
          name + ".data but element " + std::to_string(i) + " is " + value);
}

// Floats per chunk of copy_features: the check reads what the copy just read, still in L1.
constexpr size_t kCopyChunk = 4096;

}  // namespace

void take_features(const Napi::Value& v, const std::string& name, size_t length, size_t chunk,
                   const std::function<void(const float* src, size_t i0, size_t n)>& take) {
  Napi::Float32Array a = f32_argument(v, name.c_str(), &length);
  const float* src = a.Data();
  for (size_t i0 = 0; i0 < length; i0 += chunk) {
    const size_t n = std::min(chunk, length - i0);
    take(src, i0, n);
    if (any_out_of_bounds(src + i0, n)) throw_out_of_bounds(v.Env(), src, i0, n, name);
  }
}

FreshF32 copy_features(const Napi::Value& v, const char* name, size_t length) {
  FreshF32 out(length);
  take_features(v, name, length, kCopyChunk, [&](const float* src, size_t i0, size_t n) {
    std::memcpy(out.data() + i0, src + i0, n * sizeof(float));
  });
  return out;
}

std::vector<float> copy_features_vector(const Napi::Value& v, const std::string& name,
                                        size_t length) {
  std::vector<float> out(length);
  take_features(v, name, length, kCopyChunk, [&](const float* src, size_t i0, size_t n) {
    std::memcpy(out.data() + i0, src + i0, n * sizeof(float));
  });
  return out;
}

void read_exec(const Napi::Object& opts, Job& job) {
  Napi::Value d = opts.Get("device");
  std::string s = d.IsString() ? d.As<Napi::String>().Utf8Value() : "";
  if (s == "auto")
    job.exec.device = gocor::Device::Auto;
  else if (s == "cpu")
    job.exec.device = gocor::Device::Cpu;
  else if (s == "cuda")
    job.exec.device = gocor::Device::Cuda;
  else
    throw_invalid(opts.Env(), "Expected 'auto', 'cpu' or 'cuda' for device");
  job.exec.threads = read_int(opts, "threads", job.exec.threads);
}

void require_finite(const float* v, size_t n, const char* what) {
  // Exponent bits all set: inf or NaN. Integer ops, so the loop vectorises.
  uint32_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, v + i, sizeof bits);
    bad |= uint32_t((bits & 0x7f800000u) == 0x7f800000u);
  }
  if (bad) {
    throw gocor::Error(gocor::ErrorCode::InvalidArg,
                       std::string(what) +
                           " is not finite: float32 overflowed, so the features or parameters are "
                           "far outside their usual ranges (feature values of order 1; GOCor "
                           "parameters near their defaults or trained values)");
  }
}

// ---- Out -------------------------------------------------------------------------------------

namespace {

// The tag of every ArrayBuffer the binding returns (Out::external, Out::f32): dispose() detaches
// only buffers that carry it, never a caller's own.
constexpr napi_type_tag kOwnedBuffer = {0x676f636f72206f75ull, 0x7470757420627566ull};

}  // namespace

// `v` by reference: it is read after the call that fills it (argument order is unspecified).
napi_value Out::check(napi_status s, const napi_value& v) {
  if (s != napi_ok || v == nullptr) ok_ = false;
  return ok_ ? v : nullptr;
}

napi_value Out::object() {
  napi_value v = nullptr;
  return ok_ ? check(napi_create_object(env_, &v), v) : nullptr;
}

napi_value Out::array(size_t length) {
  napi_value v = nullptr;
  return ok_ ? check(napi_create_array_with_length(env_, length, &v), v) : nullptr;
}

napi_value Out::number(double x) {
  napi_value v = nullptr;
  return ok_ ? check(napi_create_double(env_, x, &v), v) : nullptr;
}

napi_value Out::boolean(bool b) {
  napi_value v = nullptr;
  return ok_ ? check(napi_get_boolean(env_, b, &v), v) : nullptr;
}

napi_value Out::string(const char* s) {
  napi_value v = nullptr;
  return ok_ ? check(napi_create_string_utf8(env_, s, NAPI_AUTO_LENGTH, &v), v) : nullptr;
}

// The array buffer owns the moved vector and frees it from its finalizer.
template <typename T>
napi_value Out::external(std::vector<T>& buf, napi_typedarray_type type) {
  if (!ok_) return nullptr;
  const size_t n = buf.size();
  napi_value ab = nullptr, ta = nullptr;
  if (n == 0) {
    void* unused = nullptr;
    if (!check(napi_create_arraybuffer(env_, 0, &unused, &ab), ab)) return nullptr;
  } else {
    auto* holder = new std::vector<T>(std::move(buf));
    napi_status s = napi_create_external_arraybuffer(
        env_, holder->data(), n * sizeof(T),
        [](napi_env, void*, void* hint) { delete static_cast<std::vector<T>*>(hint); }, holder,
        &ab);
    if (s != napi_ok) {
      delete holder;
      ok_ = false;
      return nullptr;
    }
    if (!check(napi_type_tag_object(env_, ab, &kOwnedBuffer), ab)) return nullptr;
  }
  return check(napi_create_typedarray(env_, type, n, ab, 0, &ta), ta);
}

napi_value Out::f32(F32Buffer&& buf) {
  return external(buf, napi_float32_array);
}

napi_value Out::f32(FreshF32&& buf) {
  if (!ok_) return nullptr;
  const size_t n = buf.size();
  if (n == 0) return f32(F32Buffer());
  float* p = buf.release();
  napi_value ab = nullptr, ta = nullptr;
  // The hint carries the block's length; the finalizer hands the block back to the pool.
  auto* hint = reinterpret_cast<void*>(static_cast<uintptr_t>(n));
  if (napi_create_external_arraybuffer(
          env_, p, n * sizeof(float),
          [](napi_env, void* data, void* h) {
            FreshF32::recycle(static_cast<float*>(data),
                              static_cast<size_t>(reinterpret_cast<uintptr_t>(h)));
          },
          hint, &ab) != napi_ok) {
    FreshF32::recycle(p, n);
    ok_ = false;
    return nullptr;
  }
  if (!check(napi_type_tag_object(env_, ab, &kOwnedBuffer), ab)) return nullptr;
  return check(napi_create_typedarray(env_, napi_float32_array, n, ab, 0, &ta), ta);
}

// ---- FreshF32's blocks -------------------------------------------------------------------------

FreshF32::FreshF32(size_t n) : n_(n) {
  if (n == 0) return;
  try {
    p_ = static_cast<float*>(gocor::block_take(n * sizeof(float)));
  } catch (const std::bad_alloc&) {
    throw gocor::Error(
        gocor::ErrorCode::TooLarge,
        "cannot allocate " + std::to_string(n * sizeof(float)) + " bytes for the output");
  }
}

FreshF32& FreshF32::operator=(FreshF32&& o) noexcept {
  if (this != &o) {
    recycle(p_, n_);
    p_ = o.p_;
    n_ = o.n_;
    o.p_ = nullptr;
  }
  return *this;
}

void FreshF32::recycle(float* p, size_t n) {
  gocor::block_give(p, n * sizeof(float));
}

napi_value Out::u8(std::vector<uint8_t>&& buf) {
  return external(buf, napi_uint8_array);
}

void Out::set(napi_value object, const char* key, napi_value v) {
  if (!ok_ || object == nullptr || v == nullptr) {
    ok_ = false;
    return;
  }
  if (napi_set_named_property(env_, object, key, v) != napi_ok) ok_ = false;
}

void Out::set(napi_value array, uint32_t index, napi_value v) {
  if (!ok_ || array == nullptr || v == nullptr) {
    ok_ = false;
    return;
  }
  if (napi_set_element(env_, array, index, v) != napi_ok) ok_ = false;
}

// ---- running a job ---------------------------------------------------------------------------

namespace {

struct Work {
  std::unique_ptr<Job> job;
  std::shared_ptr<std::atomic<bool>> cancelled;
  napi_deferred deferred = nullptr;
  napi_async_work work = nullptr;
  gocor::Device ran = gocor::Device::Cpu;
  std::string code;  // empty: success
  std::string message;
};

const char* device_name(gocor::Device d) {
  return d == gocor::Device::Cuda ? "cuda" : "cpu";
}

void execute(napi_env, void* data) {
  Work& w = *static_cast<Work*>(data);
  try {
    gocor::Exec ex = w.job->exec;
    ex.cancel = w.cancelled.get();
    gocor::check_cancel(ex);
    ex.device = gocor::resolve_device(ex.device, w.job->has_cuda);
    w.ran = ex.device;
    w.job->run(ex);
  } catch (const gocor::Error& e) {
    w.code = gocor::error_code_name(e.code());
    w.message = e.what();
  } catch (const std::bad_alloc&) {
    w.code = "ERR_GOCOR_TOO_LARGE";
    w.message = "out of host memory";
  } catch (const std::exception& e) {
    w.code = "ERR_GOCOR_INTERNAL";
    w.message = e.what();
  } catch (...) {
    w.code = "ERR_GOCOR_INTERNAL";
    w.message = "unknown native error";
  }
}

void reject(napi_env env, const Work& w) {
  napi_value code = nullptr, message = nullptr, err = nullptr;
  if (napi_create_string_utf8(env, w.code.c_str(), NAPI_AUTO_LENGTH, &code) == napi_ok &&
      napi_create_string_utf8(env, w.message.c_str(), NAPI_AUTO_LENGTH, &message) == napi_ok &&
      napi_create_error(env, code, message, &err) == napi_ok) {
    napi_reject_deferred(env, w.deferred, err);
  }
}

// Settles the promise. When the environment is shutting down (a worker thread was terminated)
// the C API calls fail with a status; then nothing is settled and the result is dropped, since
// no JS will ever observe it.
void settle(napi_env env, Work& w) {
  if (w.code.empty()) {
    Out out(env);
    napi_value v = nullptr;
    try {
      v = w.job->result(out);
    } catch (...) {
      v = nullptr;
    }
    out.set(v, "device", out.string(device_name(w.ran)));
    if (out.ok() && napi_resolve_deferred(env, w.deferred, v) == napi_ok) return;
    w.code = "ERR_GOCOR_INTERNAL";
    w.message = "the result could not be handed to JavaScript";
  }
  reject(env, w);
}

void complete(napi_env env, napi_status status, void* data) {
  std::unique_ptr<Work> w(static_cast<Work*>(data));
  napi_delete_async_work(env, w->work);
  // napi_cancelled: the environment was torn down before the work started.
  if (status != napi_ok) return;
  napi_handle_scope scope = nullptr;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  settle(env, *w);
  napi_close_handle_scope(env, scope);
}

class JobHandle : public Napi::ObjectWrap<JobHandle> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(
        env, "NativeJob",
        {InstanceMethod<&JobHandle::start>("start"), InstanceMethod<&JobHandle::cancel>("cancel")});
  }

  explicit JobHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<JobHandle>(info) {}

  void set(std::unique_ptr<Job> job) { job_ = std::move(job); }

 private:
  Napi::Value start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!job_) throw_invalid(env, "this native job was already started or cancelled");
    auto w = std::make_unique<Work>();
    w->job = std::move(job_);
    w->cancelled = cancelled_;
    napi_value promise = nullptr, name = nullptr;
    if (napi_create_promise(env, &w->deferred, &promise) != napi_ok ||
        napi_create_string_utf8(env, "gocor", NAPI_AUTO_LENGTH, &name) != napi_ok ||
        napi_create_async_work(env, nullptr, name, execute, complete, w.get(), &w->work) !=
            napi_ok) {
      throw Napi::Error::New(env);
    }
    if (napi_queue_async_work(env, w->work) != napi_ok) {
      napi_delete_async_work(env, w->work);
      throw Napi::Error::New(env);
    }
    w.release();  // owned by the async work until `complete`
    return Napi::Value(env, promise);
  }

  // Before start: frees the copied inputs. While running: the job stops at its next stage
  // boundary and rejects with ERR_GOCOR_ABORTED.
  Napi::Value cancel(const Napi::CallbackInfo& info) {
    cancelled_->store(true, std::memory_order_relaxed);
    job_.reset();
    return info.Env().Undefined();
  }

  std::unique_ptr<Job> job_;
  std::shared_ptr<std::atomic<bool>> cancelled_ = std::make_shared<std::atomic<bool>>(false);
};

// Per environment (the main thread and each worker thread load the addon separately).
struct AddonData {
  Napi::FunctionReference job_class;
  std::map<std::string, Estimate> estimates;
};

// estimateBytes(op, dims, options) -> number of bytes (see worker.h).
Napi::Value EstimateBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  const auto& table = env.GetInstanceData<AddonData>()->estimates;
  auto it = table.find(op);
  if (it == table.end()) throw_invalid(env, "estimateBytes: unknown operation '" + op + "'");
  return Napi::Number::New(
      env, double(it->second(env, read_object(info[1], "dims"), read_object(info[2], "options"))));
}

}  // namespace

void add_estimate(Napi::Env env, const char* op, Estimate fn) {
  env.GetInstanceData<AddonData>()->estimates[op] = fn;
}

Napi::Value job_handle(Napi::Env env, std::unique_ptr<Job> job) {
  Napi::Object handle = env.GetInstanceData<AddonData>()->job_class.New({});
  JobHandle::Unwrap(handle)->set(std::move(job));
  return handle;
}

void export_function(Napi::Env env, Napi::Object exports, const char* name,
                     Napi::Value (*fn)(const Napi::CallbackInfo&)) {
  auto guarded = [fn](const Napi::CallbackInfo& info) -> Napi::Value {
    try {
      return fn(info);
    } catch (const Napi::Error&) {
      throw;
    } catch (const gocor::Error& e) {
      throw make_error(info.Env(), gocor::error_code_name(e.code()), e.what());
    } catch (const std::bad_alloc&) {
      throw make_error(info.Env(), "ERR_GOCOR_TOO_LARGE", "out of host memory");
    } catch (const std::exception& e) {
      throw make_error(info.Env(), "ERR_GOCOR_INTERNAL", e.what());
    }
  };
  exports.Set(name, Napi::Function::New(env, guarded, name));
}

// dispose(typedArray) -> the bytes its buffer held if this call detached it (an ArrayBuffer the
// binding returned: its block goes back to the pool as soon as V8 lets go of the backing store,
// without waiting for a collection), 0 if it was detached already, -1 for any other value (the
// caller's own arrays are never touched). lib/dispose.ts turns -1 into an error.
Napi::Value Dispose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  napi_value ab = nullptr;
  bool owned = false, detached = false;
  size_t bytes = 0;
  if (!info[0].IsTypedArray() ||
      napi_get_typedarray_info(env, info[0], nullptr, nullptr, nullptr, &ab, nullptr) != napi_ok ||
      napi_check_object_type_tag(env, ab, &kOwnedBuffer, &owned) != napi_ok || !owned) {
    return Napi::Number::New(env, -1);
  }
  if (napi_is_detached_arraybuffer(env, ab, &detached) != napi_ok || detached) {
    return Napi::Number::New(env, 0);
  }
  if (napi_get_arraybuffer_info(env, ab, nullptr, &bytes) != napi_ok ||
      napi_detach_arraybuffer(env, ab) != napi_ok) {
    throw make_error(env, "ERR_GOCOR_INTERNAL", "dispose: the array's buffer cannot be detached");
  }
  return Napi::Number::New(env, double(bytes));
}

void init_jobs(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  data->job_class = Napi::Persistent(JobHandle::define(env));
  env.SetInstanceData(data);
  export_function(env, exports, "estimateBytes", EstimateBytes);
  export_function(env, exports, "dispose", Dispose);
}

}  // namespace gocor_napi
