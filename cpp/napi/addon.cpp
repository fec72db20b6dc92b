// Module entry: registers each area's functions. Loaded from lib/native.ts through `bindings`.
#include "worker.h"

namespace gocor_napi {
void init_networks(Napi::Env env, Napi::Object exports);  // networks.cpp
}  // namespace gocor_napi

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  gocor_napi::init_jobs(env, exports);
  gocor_napi::init_info(env, exports);
  gocor_napi::init_correlation(env, exports);
  gocor_napi::init_gocor(env, exports);
  gocor_napi::init_match(env, exports);
  gocor_napi::init_networks(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(gocor, Init)
