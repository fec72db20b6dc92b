// corrGlobal / corrLocal: plain feature correlation.
#include "correlation.h"

#include "dispatch.h"
#include "worker.h"

namespace gocor_napi {
namespace {

struct CorrJob : Job {
  std::vector<float> ref, query;
  F32Buffer out;
  napi_value result(Out& o) override {
    napi_value r = o.object();
    o.set(r, "data", o.f32(std::move(out)));
    return r;
  }
};

struct CorrGlobalJob : CorrJob {
  gocor::CorrGlobalShape s;
  void run(const gocor::Exec& ex) override {
    out.resize(size_t(s.B) * s.Hq * s.Wq * s.H * s.W);
    gocor::corr_global(ref.data(), query.data(), out.data(), s, ex);
  }
};

struct CorrLocalJob : CorrJob {
  gocor::CorrLocalShape s;
  void run(const gocor::Exec& ex) override {
    const size_t D = size_t(2 * s.R + 1) * (2 * s.R + 1);
    out.resize(size_t(s.B) * D * s.H * s.W);
    gocor::corr_local(ref.data(), query.data(), out.data(), s, ex);
  }
};

// corrGlobal(reference (B,C,H,W), query (B,C,Hq,Wq), {B,C,H,W,Hq,Wq}, {device, threads})
//   -> job of {data (B, Hq*Wq, H, W), device}
Napi::Value CorrGlobal(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto job = std::make_unique<CorrGlobalJob>();
  Napi::Object d = read_object(info[2], "dims");
  gocor::CorrGlobalShape& s = job->s;
  s = {read_int(d, "B", 0), read_int(d, "C", 0),  read_int(d, "H", 0),
       read_int(d, "W", 0), read_int(d, "Hq", 0), read_int(d, "Wq", 0)};
  count(env, {s.B, s.Hq, s.Wq, s.H, s.W}, "corrGlobal output");
  job->ref = copy_f32(info[0], "reference", count(env, {s.B, s.C, s.H, s.W}, "reference"));
  job->query = copy_f32(info[1], "query", count(env, {s.B, s.C, s.Hq, s.Wq}, "query"));
  read_exec(read_object(info[3], "exec"), *job);
  return job_handle(env, std::move(job));
}

// corrLocal(reference, query (B,C,H,W), {B,C,H,W,R}, {device, threads})
//   -> job of {data (B, (2R+1)^2, H, W), device}
Napi::Value CorrLocal(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto job = std::make_unique<CorrLocalJob>();
  Napi::Object d = read_object(info[2], "dims");
  gocor::CorrLocalShape& s = job->s;
  s = {read_int(d, "B", 0), read_int(d, "C", 0), read_int(d, "H", 0), read_int(d, "W", 0),
       read_int(d, "R", -1)};
  if (s.R < 0 || s.R > 64) throw_invalid(env, "corrLocal: R must be between 0 and 64");
  const size_t n = count(env, {s.B, s.C, s.H, s.W}, "reference");
  job->ref = copy_f32(info[0], "reference", n);
  job->query = copy_f32(info[1], "query", n);
  read_exec(read_object(info[3], "exec"), *job);
  return job_handle(env, std::move(job));
}

}  // namespace

void init_correlation(Napi::Env env, Napi::Object exports) {
  export_function(env, exports, "corrGlobal", CorrGlobal);
  export_function(env, exports, "corrLocal", CorrLocal);
}

}  // namespace gocor_napi
