// gocorGlobal / gocorLocal workers and the official default parameters.
#include "gocor.h"

#include <cstring>
#include <memory>
#include <vector>

#include "dispatch.h"
#include "worker.h"

namespace gocor_napi {
namespace {

std::vector<float> read_vec(const Napi::Object& o, const char* key) {
  F32In in = read_f32(o.Get(key), key);
  return std::vector<float>(in.data, in.data + in.length);
}

void read_bins(const Napi::Object& o, const char* key, float* dst) {
  F32In in = read_f32(o.Get(key), key);
  if (in.length != gocor::kNumDistBins) {
    throw make_error(o.Env(), "ERR_GOCOR_SHAPE", std::string(key) + " must have 10 elements");
  }
  std::memcpy(dst, in.data, sizeof(float) * gocor::kNumDistBins);
}

void read_dist(const Napi::Object& o, gocor::DistanceFns* d) {
  read_bins(o, "label", d->label);
  read_bins(o, "weight", d->weight);
  read_bins(o, "maskLogit", d->mask_logit);
}

Napi::Float32Array f32(Napi::Env env, const float* p, size_t n) {
  Napi::Float32Array a = Napi::Float32Array::New(env, n);
  if (n) std::memcpy(a.Data(), p, n * sizeof(float));
  return a;
}

void write_dist(Napi::Env env, Napi::Object o, const gocor::DistanceFns& d) {
  o.Set("label", f32(env, d.label, gocor::kNumDistBins));
  o.Set("weight", f32(env, d.weight, gocor::kNumDistBins));
  o.Set("maskLogit", f32(env, d.mask_logit, gocor::kNumDistBins));
}

struct GocorJob {
  F32In ref, query;
  gocor::Exec ex;
  gocor::Device ran = gocor::Device::Cpu;
  bool want_filter = false, want_diag = false;
  F32Buffer volume, filter;
  std::vector<gocor::GocorIterDiag> diag;
};

Napi::Value finish(Napi::Env env, GocorJob& job) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("volume", to_js(env, std::move(job.volume)));
  if (job.want_filter) o.Set("filter", to_js(env, std::move(job.filter)));
  if (job.want_diag) {
    Napi::Array arr = Napi::Array::New(env, job.diag.size());
    for (size_t i = 0; i < job.diag.size(); ++i) {
      const gocor::GocorIterDiag& d = job.diag[i];
      Napi::Object e = Napi::Object::New(env);
      e.Set("batch", d.batch);
      e.Set("iter", d.iter);
      e.Set("lossRef", d.loss_ref);
      e.Set("lossQuery", d.loss_query);
      e.Set("lossReg", d.loss_reg);
      e.Set("gradNorm", d.grad_norm);
      e.Set("alpha", d.alpha);
      e.Set("alphaMin", d.alpha_min);
      e.Set("alphaMax", d.alpha_max);
      arr.Set(static_cast<uint32_t>(i), e);
    }
    o.Set("diagnostics", arr);
  }
  o.Set("device", device_name(job.ran));
  return o;
}

// gocorGlobal(reference, query, {B,C,H,W}, params, {numIter, applyQueryLoss, device, threads,
//             diagnostics, returnFilter}) -> Promise<{volume, filter?, diagnostics?, device}>
Napi::Value GocorGlobal(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto job = std::make_shared<GocorJob>();
  job->ref = read_f32(info[0], "reference");
  job->query = read_f32(info[1], "query");
  Napi::Object d = info[2].As<Napi::Object>();
  gocor::GocorGlobalShape s{read_int(d, "B", 0), read_int(d, "C", 0), read_int(d, "H", 0),
                            read_int(d, "W", 0)};
  Napi::Object po = info[3].As<Napi::Object>();
  gocor::GlobalGocorParams p;
  p.target_fg = read_vec(po, "targetFg");
  p.target_bg = read_vec(po, "targetBg");
  p.log_step_length = static_cast<float>(read_number(po, "logStepLength", 0));
  p.filter_reg = static_cast<float>(read_number(po, "filterReg", 1e-2));
  p.steplength_reg = static_cast<float>(read_number(po, "steplengthReg", 0));
  p.min_filter_reg = static_cast<float>(read_number(po, "minFilterReg", 1e-5));
  p.reg_inter_dim = read_int(po, "regInterDim", 16);
  p.reg_output_dim = read_int(po, "regOutputDim", 16);
  p.reg_weight1 = read_vec(po, "regWeight1");
  p.reg_weight2 = read_vec(po, "regWeight2");
  read_dist(po, &p.dist);
  Napi::Object oo = info[4].As<Napi::Object>();
  gocor::GlobalGocorOptions o;
  o.num_iter = read_int(oo, "numIter", 3);
  o.apply_query_loss = read_bool(oo, "applyQueryLoss", true);
  job->ex = read_exec(oo);
  job->want_diag = read_bool(oo, "diagnostics", false);
  job->want_filter = read_bool(oo, "returnFilter", false);

  size_t N = size_t(s.H) * s.W;
  if (job->ref.length != size_t(s.B) * s.C * N || job->query.length != size_t(s.B) * s.C * N ||
      p.target_fg.size() != size_t(s.C) || p.target_bg.size() != size_t(s.C) ||
      p.reg_weight1.size() != size_t(p.reg_inter_dim) * 9 ||
      p.reg_weight2.size() != size_t(p.reg_output_dim) * p.reg_inter_dim * 9) {
    throw make_error(env, "ERR_GOCOR_SHAPE", "gocorGlobal: data lengths do not match the shape");
  }
  auto* w = new PromiseWorker(
      env,
      [job, s, p = std::move(p), o, N] {
        job->ran = gocor::resolve_device(job->ex.device);
        gocor::Exec ex = job->ex;
        ex.device = job->ran;
        job->volume.resize(size_t(s.B) * N * N);
        if (job->want_filter) job->filter.resize(size_t(s.B) * N * s.C);
        gocor::gocor_global(p, o, job->ref.data, job->query.data, job->volume.data(),
                            job->want_filter ? job->filter.data() : nullptr, s, ex,
                            job->want_diag ? &job->diag : nullptr);
      },
      [job](Napi::Env e) { return finish(e, *job); });
  w->keep(info[0]);
  w->keep(info[1]);
  return w->queue_and_promise();
}

// gocorLocal(reference, query, {B,C,H,W}, params, {numIter, searchRadius, device, threads,
//            diagnostics, returnFilter}) -> Promise<{volume, filter?, diagnostics?, device}>
Napi::Value GocorLocal(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto job = std::make_shared<GocorJob>();
  job->ref = read_f32(info[0], "reference");
  job->query = read_f32(info[1], "query");
  Napi::Object d = info[2].As<Napi::Object>();
  int B = read_int(d, "B", 0), C = read_int(d, "C", 0), H = read_int(d, "H", 0),
      W = read_int(d, "W", 0);
  Napi::Object po = info[3].As<Napi::Object>();
  gocor::LocalGocorParams p;
  p.scaling = static_cast<float>(read_number(po, "scaling", 1));
  p.log_step_length = static_cast<float>(read_number(po, "logStepLength", 0));
  p.filter_reg = static_cast<float>(read_number(po, "filterReg", 1e-2));
  p.min_filter_reg = static_cast<float>(read_number(po, "minFilterReg", 1e-5));
  read_dist(po, &p.dist);
  Napi::Object oo = info[4].As<Napi::Object>();
  gocor::LocalGocorOptions o;
  o.num_iter = read_int(oo, "numIter", 3);
  o.search_radius = read_int(oo, "searchRadius", 4);
  job->ex = read_exec(oo);
  job->want_diag = read_bool(oo, "diagnostics", false);
  job->want_filter = read_bool(oo, "returnFilter", false);

  size_t in_len = size_t(B) * C * H * W;
  if (job->ref.length != in_len || job->query.length != in_len) {
    throw make_error(env, "ERR_GOCOR_SHAPE", "gocorLocal: data lengths do not match the shape");
  }
  size_t D = size_t(2 * o.search_radius + 1) * (2 * o.search_radius + 1);
  auto* w = new PromiseWorker(
      env,
      [job, p, o, B, C, H, W, D, in_len] {
        job->ran = gocor::resolve_device(job->ex.device);
        gocor::Exec ex = job->ex;
        ex.device = job->ran;
        job->volume.resize(size_t(B) * D * H * W);
        if (job->want_filter) job->filter.resize(in_len);
        gocor::gocor_local(p, o, job->ref.data, job->query.data, job->volume.data(),
                           job->want_filter ? job->filter.data() : nullptr, B, C, H, W, ex,
                           job->want_diag ? &job->diag : nullptr);
      },
      [job](Napi::Env e) { return finish(e, *job); });
  w->keep(info[0]);
  w->keep(info[1]);
  return w->queue_and_promise();
}

// defaultGlobalParams(C, seed) -> params object with the official initial values.
Napi::Value DefaultGlobalParams(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int C = info[0].As<Napi::Number>().Int32Value();
  double seed = info[1].As<Napi::Number>().DoubleValue();
  gocor::GlobalGocorParams p = gocor::default_global_params(C, static_cast<uint64_t>(seed));
  Napi::Object o = Napi::Object::New(env);
  o.Set("targetFg", f32(env, p.target_fg.data(), p.target_fg.size()));
  o.Set("targetBg", f32(env, p.target_bg.data(), p.target_bg.size()));
  o.Set("logStepLength", p.log_step_length);
  o.Set("filterReg", p.filter_reg);
  o.Set("steplengthReg", p.steplength_reg);
  o.Set("minFilterReg", p.min_filter_reg);
  o.Set("regInterDim", p.reg_inter_dim);
  o.Set("regOutputDim", p.reg_output_dim);
  o.Set("regWeight1", f32(env, p.reg_weight1.data(), p.reg_weight1.size()));
  o.Set("regWeight2", f32(env, p.reg_weight2.data(), p.reg_weight2.size()));
  write_dist(env, o, p.dist);
  return o;
}

// defaultLocalParams() -> params object with the official initial values.
Napi::Value DefaultLocalParams(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  gocor::LocalGocorParams p = gocor::default_local_params();
  Napi::Object o = Napi::Object::New(env);
  o.Set("scaling", p.scaling);
  o.Set("logStepLength", p.log_step_length);
  o.Set("filterReg", p.filter_reg);
  o.Set("minFilterReg", p.min_filter_reg);
  write_dist(env, o, p.dist);
  return o;
}

}  // namespace

void init_gocor(Napi::Env env, Napi::Object exports) {
  exports.Set("gocorGlobal", Napi::Function::New(env, GocorGlobal, "gocorGlobal"));
  exports.Set("gocorLocal", Napi::Function::New(env, GocorLocal, "gocorLocal"));
  exports.Set("defaultGlobalParams", Napi::Function::New(env, DefaultGlobalParams));
  exports.Set("defaultLocalParams", Napi::Function::New(env, DefaultLocalParams));
}

}  // namespace gocor_napi
