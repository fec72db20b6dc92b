// Module entry: registers each area's functions. Loaded from lib/native.ts through `bindings`.
#include "worker.h"

#ifdef __GLIBC__
#include <malloc.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#endif

namespace gocor_napi {
void init_networks(Napi::Env env, Napi::Object exports);  // networks.cpp
}  // namespace gocor_napi

namespace {

// glibc's malloc gives a freed block back to the system when it is mmapped (128 KiB and up) or at
// an arena's top beyond the trim threshold (128 KiB), until the first large mmapped block is freed:
// from then on it raises both thresholds itself (up to 32 and 64 MiB). Whether a process has freed
// such a block yet is an accident of its history, and until it has, every large buffer of a stage
// is mapped and faulted in again on every call (a 512x512 match: ~12,000 page faults, 1.5x its
// CPU time in a VM). Loading the addon sets the two thresholds to where glibc itself moves them,
// once per process, unless the environment already sets them (MALLOC_MMAP_THRESHOLD_,
// MALLOC_TRIM_THRESHOLD_ or GLIBC_TUNABLES): the user's choice stands. README, "Limits and failure
// behaviour".
void settle_malloc() {
#ifdef __GLIBC__
  static std::once_flag once;
  std::call_once(once, [] {
    const char* tunables = std::getenv("GLIBC_TUNABLES");
    if (std::getenv("MALLOC_MMAP_THRESHOLD_") != nullptr ||
        std::getenv("MALLOC_TRIM_THRESHOLD_") != nullptr ||
        (tunables != nullptr && (std::strstr(tunables, "mmap_threshold") != nullptr ||
                                 std::strstr(tunables, "trim_threshold") != nullptr)))
      return;
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
  });
#endif
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  settle_malloc();
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
