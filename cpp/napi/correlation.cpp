// corrGlobal / corrLocal: plain feature correlation.
#include "correlation.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "dispatch.h"
#include "worker.h"

namespace gocor_napi {
namespace {

// The volumes need no finiteness pass: copy_features admits feature values of magnitude at most
// kMaxFeatureValue (1e6), so every product is at most C * 1e12 <= 2^40 * 1e12 ~ 1.1e24 (C * H * W
// is at most 2^40 elements), far below float32's 3.4e38, rounding included.

struct CorrJob : Job {
  FreshF32 ref, query;
  FreshF32 out;  // written in full by the kernel
  napi_value result(Out& o) override {
    napi_value r = o.object();
    o.set(r, "data", o.f32(std::move(out)));
    return r;
  }
};

struct CorrGlobalJob : CorrJob {
  gocor::CorrGlobalShape s;
  bool packed = false;  // ref and query in the GEMM's packed layout (copy_packed)
  void run(const gocor::Exec& ex) override {
    out = FreshF32(size_t(s.B) * s.Hq * s.Wq * s.H * s.W);
    if (packed) {
      gocor::corr_global_packed_cpu(ref.data(), query.data(), out.data(), s, ex);
    } else {
      gocor::corr_global(ref.data(), query.data(), out.data(), s, ex);
    }
  }
};

// A feature map (B, C, positions) copied straight into the packed layout the CPU GEMM reads
// (corr_global_pack), checked by take_features as it is, so that the GEMM packs nothing: one pass
// over the input per call instead of two. Chunks of whole channel rows, about 32 KiB.
FreshF32 copy_packed(const Napi::Value& v, const char* name, gocor::CorrInput which,
                     const gocor::CorrGlobalShape& s) {
  const size_t L = which == gocor::CorrInput::Query ? size_t(s.Hq) * s.Wq : size_t(s.H) * s.W;
  const size_t per = size_t(s.C) * L;  // one batch element
  FreshF32 out(gocor::corr_global_packed_floats(which, s));
  const size_t rows = std::max<size_t>(1, 8192 / L);
  take_features(v, name, size_t(s.B) * per, rows * L, [&](const float* src, size_t i0, size_t n) {
    for (size_t i = i0; i < i0 + n;) {  // whole rows; a chunk may span two batch elements
      const size_t b = i / per, c0 = i % per / L;
      const size_t c1 = std::min(size_t(s.C), c0 + (i0 + n - i) / L);
      gocor::corr_global_pack(which, s, src + b * per, int(b), int(c0), int(c1), out.data());
      i += (c1 - c0) * L;
    }
  });
  return out;
}

struct CorrLocalJob : CorrJob {
  gocor::CorrLocalShape s;
  void run(const gocor::Exec& ex) override {
    const size_t D = size_t(2 * s.R + 1) * (2 * s.R + 1);
    out = FreshF32(size_t(s.B) * D * s.H * s.W);
    gocor::corr_local(ref.data(), query.data(), out.data(), s, ex);
  }
};

gocor::CorrGlobalShape read_global_shape(Napi::Env env, const Napi::Object& d) {
  gocor::CorrGlobalShape s{read_int(d, "B", 0), read_int(d, "C", 0),  read_int(d, "H", 0),
                           read_int(d, "W", 0), read_int(d, "Hq", 0), read_int(d, "Wq", 0)};
  count(env, {s.B, s.Hq, s.Wq, s.H, s.W}, "corrGlobal output");
  count(env, {s.B, s.C, s.H, s.W}, "reference");
  count(env, {s.B, s.C, s.Hq, s.Wq}, "query");
  return s;
}

gocor::CorrLocalShape read_local_shape(Napi::Env env, const Napi::Object& d) {
  gocor::CorrLocalShape s{read_int(d, "B", 0), read_int(d, "C", 0), read_int(d, "H", 0),
                          read_int(d, "W", 0), read_int(d, "R", -1)};
  if (s.R < 0 || s.R > 64) throw_invalid(env, "corrLocal: R must be between 0 and 64");
  count(env, {s.B, s.C, s.H, s.W}, "reference");
  return s;
}

// corrGlobal(reference (B,C,H,W), query (B,C,Hq,Wq), {B,C,H,W,Hq,Wq}, {device, threads})
//   -> job of {data (B, Hq*Wq, H, W), device}
Napi::Value CorrGlobal(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto job = std::make_unique<CorrGlobalJob>();
  const gocor::CorrGlobalShape s = job->s = read_global_shape(env, read_object(info[2], "dims"));
  read_exec(read_object(info[3], "exec"), *job);
  // Packed on the way in when the call surely runs on the CPU (the device is resolved on the
  // worker thread, after the copy); otherwise copied as they are, for the dispatched twins.
#ifdef GOCOR_WITH_CUDA
  job->packed = job->exec.device == gocor::Device::Cpu;
#else
  job->packed = true;
#endif
  if (job->packed) {
    job->ref = copy_packed(info[0], "reference", gocor::CorrInput::Reference, s);
    job->query = copy_packed(info[1], "query", gocor::CorrInput::Query, s);
  } else {
    job->ref = copy_features(info[0], "reference", size_t(s.B) * s.C * s.H * s.W);
    job->query = copy_features(info[1], "query", size_t(s.B) * s.C * s.Hq * s.Wq);
  }
  return job_handle(env, std::move(job));
}

size_t corr_global_bytes(Napi::Env env, const Napi::Object& dims, const Napi::Object&) {
  const gocor::CorrGlobalShape s = read_global_shape(env, dims);
  const size_t in = size_t(s.B) * s.C * (size_t(s.H) * s.W + size_t(s.Hq) * s.Wq);
  const size_t out = size_t(s.B) * s.Hq * s.Wq * s.H * s.W;
  return sizeof(float) * (in + out) + gocor::corr_global_work_bytes(s);
}

// corrLocal(reference, query (B,C,H,W), {B,C,H,W,R}, {device, threads})
//   -> job of {data (B, (2R+1)^2, H, W), device}
Napi::Value CorrLocal(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto job = std::make_unique<CorrLocalJob>();
  const gocor::CorrLocalShape s = job->s = read_local_shape(env, read_object(info[2], "dims"));
  const size_t n = size_t(s.B) * s.C * s.H * s.W;
  job->ref = copy_features(info[0], "reference", n);
  job->query = copy_features(info[1], "query", n);
  read_exec(read_object(info[3], "exec"), *job);
  return job_handle(env, std::move(job));
}

size_t corr_local_bytes(Napi::Env env, const Napi::Object& dims, const Napi::Object&) {
  const gocor::CorrLocalShape s = read_local_shape(env, dims);
  const size_t D = size_t(2 * s.R + 1) * (2 * s.R + 1), HW = size_t(s.H) * s.W;
  return sizeof(float) * (2 * size_t(s.B) * s.C * HW + size_t(s.B) * D * HW);
}

}  // namespace

void init_correlation(Napi::Env env, Napi::Object exports) {
  export_function(env, exports, "corrGlobal", CorrGlobal);
  export_function(env, exports, "corrLocal", CorrLocal);
  add_estimate(env, "corrGlobal", corr_global_bytes);
  add_estimate(env, "corrLocal", corr_local_bytes);
}

}  // namespace gocor_napi
