#include "worker.h"

#include <exception>
#include <new>

namespace gocor_napi {

F32In read_f32(const Napi::Value& v, const char* name) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    throw_invalid(v.Env(), std::string("Expected Float32Array for ") + name);
  }
  Napi::Float32Array a = v.As<Napi::Float32Array>();
  return F32In{a.Data(), a.ElementLength()};
}

int32_t read_int(const Napi::Object& o, const char* key, int32_t fallback) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return fallback;
  if (!v.IsNumber()) throw_invalid(o.Env(), std::string("Expected number for ") + key);
  return v.As<Napi::Number>().Int32Value();
}

double read_number(const Napi::Object& o, const char* key, double fallback) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return fallback;
  if (!v.IsNumber()) throw_invalid(o.Env(), std::string("Expected number for ") + key);
  return v.As<Napi::Number>().DoubleValue();
}

bool read_bool(const Napi::Object& o, const char* key, bool fallback) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return fallback;
  if (!v.IsBoolean()) throw_invalid(o.Env(), std::string("Expected boolean for ") + key);
  return v.As<Napi::Boolean>().Value();
}

gocor::Device read_device(const Napi::Object& o) {
  Napi::Value v = o.Get("device");
  if (v.IsUndefined()) return gocor::Device::Auto;
  std::string s = v.ToString().Utf8Value();
  if (s == "auto") return gocor::Device::Auto;
  if (s == "cpu") return gocor::Device::Cpu;
  if (s == "cuda") return gocor::Device::Cuda;
  throw_invalid(o.Env(), "Expected 'auto', 'cpu' or 'cuda' for device but received " + s);
}

gocor::Exec read_exec(const Napi::Object& opts) {
  gocor::Exec ex;
  ex.device = read_device(opts);
  ex.threads = read_int(opts, "threads", 0);
  return ex;
}

Napi::Float32Array to_js(Napi::Env env, F32Buffer&& buf) {
  size_t n = buf.size();
  if (n == 0) return Napi::Float32Array::New(env, 0);
  auto* holder = new F32Buffer(std::move(buf));
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(
      env, holder->data(), n * sizeof(float), [](Napi::Env, void*, F32Buffer* h) { delete h; },
      holder);
  return Napi::Float32Array::New(env, n, ab, 0);
}

void PromiseWorker::Execute() {
  try {
    compute_();
  } catch (const gocor::Error& e) {
    code_ = gocor::error_code_name(e.code());
    SetError(e.what());
  } catch (const std::bad_alloc&) {
    code_ = "ERR_GOCOR_TOO_LARGE";
    SetError("out of host memory");
  } catch (const std::exception& e) {
    code_ = "ERR_GOCOR_INTERNAL";
    SetError(e.what());
  } catch (...) {
    code_ = "ERR_GOCOR_INTERNAL";
    SetError("unknown native error");
  }
}

void PromiseWorker::OnOK() {
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  try {
    deferred_.Resolve(finish_(env));
  } catch (const Napi::Error& e) {
    deferred_.Reject(e.Value());
  }
  compute_ = nullptr;
  finish_ = nullptr;
}

void PromiseWorker::OnError(const Napi::Error& e) {
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  Napi::Error err = make_error(env, code_.c_str(), e.Message());
  deferred_.Reject(err.Value());
  compute_ = nullptr;
  finish_ = nullptr;
}

}  // namespace gocor_napi
