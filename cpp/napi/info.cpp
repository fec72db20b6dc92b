// backends() and buildInfo(): what this build has and what this machine offers.
#include "correlation.h"
#include "dispatch.h"
#include "parallel.h"
#include "worker.h"

#ifndef GOCOR_BUILD_SYSTEM
#define GOCOR_BUILD_SYSTEM "unknown"
#endif

namespace gocor_napi {
namespace {

Napi::Value Backends(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object cpu = Napi::Object::New(env);
  cpu.Set("simd", gocor::cpu_simd_level());
  cpu.Set("amx", gocor::cpu_amx());
  cpu.Set("threads", gocor::pool_size());

  gocor::CudaInfo ci = gocor::cuda_info();
  Napi::Object cuda = Napi::Object::New(env);
  cuda.Set("compiled", ci.compiled);
  cuda.Set("available", ci.available);
  cuda.Set("devices", ci.devices);
  cuda.Set("reason", ci.reason);
  if (ci.available) {
    cuda.Set("name", ci.name);
    cuda.Set("computeCapability", std::to_string(ci.cc_major) + "." + std::to_string(ci.cc_minor));
    cuda.Set("totalMemory", static_cast<double>(ci.total_memory));
  }
  if (ci.runtime_version) cuda.Set("runtimeVersion", ci.runtime_version);
  if (ci.driver_version) cuda.Set("driverVersion", ci.driver_version);

  Napi::Object out = Napi::Object::New(env);
  out.Set("cpu", cpu);
  out.Set("cuda", cuda);
  return out;
}

Napi::Value BuildInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("buildSystem", GOCOR_BUILD_SYSTEM);
#ifdef GOCOR_WITH_CUDA
  out.Set("cuda", true);
#else
  out.Set("cuda", false);
#endif
  out.Set("napiVersion", NAPI_VERSION);
  out.Set("compiler", __VERSION__);
  return out;
}

}  // namespace

void init_info(Napi::Env env, Napi::Object exports) {
  export_function(env, exports, "backends", Backends);
  export_function(env, exports, "buildInfo", BuildInfo);
}

}  // namespace gocor_napi
