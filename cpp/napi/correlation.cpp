// corrGlobal / corrLocal: plain feature correlation as Promise-returning workers.
#include "correlation.h"

#include <memory>

#include "dispatch.h"
#include "worker.h"

namespace gocor_napi {
namespace {

struct CorrJob {
  F32In ref, query;
  gocor::Exec ex;
  gocor::Device ran = gocor::Device::Cpu;
  F32Buffer out;
};

Napi::Value finish(Napi::Env env, CorrJob& job) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("data", to_js(env, std::move(job.out)));
  o.Set("device", device_name(job.ran));
  return o;
}

// corrGlobal(reference, query, {B,C,H,W,Hq,Wq}, {device, threads}) -> Promise<{data, device}>
Napi::Value CorrGlobal(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto job = std::make_shared<CorrJob>();
  job->ref = read_f32(info[0], "reference");
  job->query = read_f32(info[1], "query");
  Napi::Object d = info[2].As<Napi::Object>();
  gocor::CorrGlobalShape s{read_int(d, "B", 0), read_int(d, "C", 0),  read_int(d, "H", 0),
                           read_int(d, "W", 0), read_int(d, "Hq", 0), read_int(d, "Wq", 0)};
  job->ex = read_exec(info[3].As<Napi::Object>());
  size_t out_len = size_t(s.B) * s.Hq * s.Wq * s.H * s.W;
  if (job->ref.length != size_t(s.B) * s.C * s.H * s.W ||
      job->query.length != size_t(s.B) * s.C * s.Hq * s.Wq) {
    throw make_error(env, "ERR_GOCOR_SHAPE", "corrGlobal: data lengths do not match the shape");
  }
  auto* w = new PromiseWorker(
      env,
      [job, s, out_len] {
        job->ran = gocor::resolve_device(job->ex.device);
        job->out.resize(out_len);
        gocor::Exec ex = job->ex;
        ex.device = job->ran;
        gocor::corr_global(job->ref.data, job->query.data, job->out.data(), s, ex);
      },
      [job](Napi::Env e) { return finish(e, *job); });
  w->keep(info[0]);
  w->keep(info[1]);
  return w->queue_and_promise();
}

// corrLocal(reference, query, {B,C,H,W,R}, {device, threads}) -> Promise<{data, device}>
Napi::Value CorrLocal(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto job = std::make_shared<CorrJob>();
  job->ref = read_f32(info[0], "reference");
  job->query = read_f32(info[1], "query");
  Napi::Object d = info[2].As<Napi::Object>();
  gocor::CorrLocalShape s{read_int(d, "B", 0), read_int(d, "C", 0), read_int(d, "H", 0),
                          read_int(d, "W", 0), read_int(d, "R", 4)};
  job->ex = read_exec(info[3].As<Napi::Object>());
  size_t in_len = size_t(s.B) * s.C * s.H * s.W;
  if (job->ref.length != in_len || job->query.length != in_len) {
    throw make_error(env, "ERR_GOCOR_SHAPE", "corrLocal: data lengths do not match the shape");
  }
  size_t D = size_t(2 * s.R + 1) * (2 * s.R + 1);
  size_t out_len = size_t(s.B) * D * s.H * s.W;
  auto* w = new PromiseWorker(
      env,
      [job, s, out_len] {
        job->ran = gocor::resolve_device(job->ex.device);
        job->out.resize(out_len);
        gocor::Exec ex = job->ex;
        ex.device = job->ran;
        gocor::corr_local(job->ref.data, job->query.data, job->out.data(), s, ex);
      },
      [job](Napi::Env e) { return finish(e, *job); });
  w->keep(info[0]);
  w->keep(info[1]);
  return w->queue_and_promise();
}

}  // namespace

void init_correlation(Napi::Env env, Napi::Object exports) {
  exports.Set("corrGlobal", Napi::Function::New(env, CorrGlobal, "corrGlobal"));
  exports.Set("corrLocal", Napi::Function::New(env, CorrLocal, "corrLocal"));
}

}  // namespace gocor_napi
