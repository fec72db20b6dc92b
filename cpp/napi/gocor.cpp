// gocorGlobal / gocorLocal jobs and the official default parameters.
#include "gocor.h"

#include <cstring>
#include <memory>
#include <vector>

#include "dispatch.h"
#include "worker.h"

namespace gocor_napi {
namespace {

void read_bins(const Napi::Object& o, const char* key, float* dst) {
  std::vector<float> v = copy_f32(o.Get(key), key, gocor::kNumDistBins);
  std::memcpy(dst, v.data(), sizeof(float) * gocor::kNumDistBins);
}

// The fields global and local parameters share: step length, filter regularisation and the
// functions of distance (absent numbers keep the defaults in *p).
template <typename Params>
void read_shared_params(const Napi::Object& o, Params* p) {
  p->log_step_length = float(read_number(o, "logStepLength", p->log_step_length));
  p->filter_reg = float(read_number(o, "filterReg", p->filter_reg));
  p->min_filter_reg = float(read_number(o, "minFilterReg", p->min_filter_reg));
  read_bins(o, "label", p->dist.label);
  read_bins(o, "weight", p->dist.weight);
  read_bins(o, "maskLogit", p->dist.mask_logit);
}

Napi::Float32Array f32(Napi::Env env, const float* p, size_t n) {
  Napi::Float32Array a = Napi::Float32Array::New(env, n);
  if (n) std::memcpy(a.Data(), p, n * sizeof(float));
  return a;
}

// The inverse of read_shared_params.
template <typename Params>
void write_shared_params(Napi::Env env, Napi::Object o, const Params& p) {
  o.Set("logStepLength", p.log_step_length);
  o.Set("filterReg", p.filter_reg);
  o.Set("minFilterReg", p.min_filter_reg);
  o.Set("label", f32(env, p.dist.label, gocor::kNumDistBins));
  o.Set("weight", f32(env, p.dist.weight, gocor::kNumDistBins));
  o.Set("maskLogit", f32(env, p.dist.mask_logit, gocor::kNumDistBins));
}

struct GocorJob : Job {
  FreshF32 ref, query;
  int B = 0, C = 0, H = 0, W = 0;
  bool want_filter = false, want_diag = false;
  FreshF32 volume, filter;  // written in full by the core
  std::vector<gocor::GocorIterDiag> diag;

  // dims {B,C,H,W}; options {diagnostics, returnFilter, device, threads}.
  void read_shape(Napi::Env env, const Napi::Object& d, const Napi::Object& oo) {
    B = read_int(d, "B", 0);
    C = read_int(d, "C", 0);
    H = read_int(d, "H", 0);
    W = read_int(d, "W", 0);
    count(env, {B, C, H, W}, "reference");
    read_exec(oo, *this);
    want_diag = read_bool(oo, "diagnostics", want_diag);
    want_filter = read_bool(oo, "returnFilter", want_filter);
  }

  void read_common(const Napi::CallbackInfo& info) {
    read_shape(info.Env(), read_object(info[2], "dims"), read_object(info[4], "options"));
    const size_t n = size_t(B) * C * H * W;
    ref = copy_features(info[0], "reference", n);
    query = copy_features(info[1], "query", n);
  }

  // The copied inputs and the outputs, in bytes.
  size_t io_bytes(size_t volume_floats) const {
    const size_t n = size_t(B) * C * H * W;
    return sizeof(float) * (2 * n + volume_floats + (want_filter ? n : 0));
  }

  napi_value result(Out& o) override {
    napi_value r = o.object();
    o.set(r, "volume", o.f32(std::move(volume)));
    if (want_filter) o.set(r, "filter", o.f32(std::move(filter)));
    if (want_diag) {
      napi_value arr = o.array(diag.size());
      for (size_t i = 0; i < diag.size(); ++i) {
        const gocor::GocorIterDiag& d = diag[i];
        napi_value e = o.object();
        o.set(e, "batch", d.batch);
        o.set(e, "iter", d.iter);
        o.set(e, "lossRef", d.loss_ref);
        o.set(e, "lossQuery", d.loss_query);
        o.set(e, "lossReg", d.loss_reg);
        o.set(e, "gradNorm", d.grad_norm);
        o.set(e, "alpha", d.alpha);
        o.set(e, "alphaMin", d.alpha_min);
        o.set(e, "alphaMax", d.alpha_max);
        o.set(arr, uint32_t(i), e);
      }
      o.set(r, "diagnostics", arr);
    }
    return r;
  }
};

struct GocorGlobalJob : GocorJob {
  gocor::GlobalGocorParams p;
  gocor::GlobalGocorOptions o;
  void read_options(Napi::Env, const Napi::Object& oo) {
    o.num_iter = read_int(oo, "numIter", o.num_iter);
    o.apply_query_loss = read_bool(oo, "applyQueryLoss", o.apply_query_loss);
  }
  void read_params(Napi::Env env, const Napi::Object& po) {
    read_shared_params(po, &p);
    p.steplength_reg = float(read_number(po, "steplengthReg", p.steplength_reg));
    p.reg_inter_dim = read_int(po, "regInterDim", 0);
    p.reg_output_dim = read_int(po, "regOutputDim", 0);
    const size_t I = count(env, {p.reg_inter_dim}, "regInterDim");
    const size_t O = count(env, {p.reg_output_dim}, "regOutputDim");
    p.target_fg = copy_f32(po.Get("targetFg"), "targetFg", size_t(C));
    p.target_bg = copy_f32(po.Get("targetBg"), "targetBg", size_t(C));
    p.reg_weight1 = copy_f32(po.Get("regWeight1"), "regWeight1", I * 9);
    p.reg_weight2 = copy_f32(po.Get("regWeight2"), "regWeight2", O * I * 9);
  }
  size_t bytes() const {
    const size_t N = size_t(H) * W;
    return io_bytes(size_t(B) * N * N) +
           gocor::gocor_global_work_bytes(gocor::GocorGlobalShape{B, C, H, W}, o);
  }
  void run(const gocor::Exec& ex) override {
    const size_t N = size_t(H) * W;
    volume = FreshF32(size_t(B) * N * N);
    if (want_filter) filter = FreshF32(size_t(B) * N * C);
    gocor::gocor_global(p, o, ref.data(), query.data(), volume.data(),
                        want_filter ? filter.data() : nullptr, gocor::GocorGlobalShape{B, C, H, W},
                        ex, want_diag ? &diag : nullptr);
    require_finite(volume.data(), volume.size(), "the GOCor volume");
  }
};

struct GocorLocalJob : GocorJob {
  gocor::LocalGocorParams p;
  gocor::LocalGocorOptions o;
  void read_options(Napi::Env env, const Napi::Object& oo) {
    o.num_iter = read_int(oo, "numIter", o.num_iter);
    o.search_radius = read_int(oo, "searchRadius", o.search_radius);
    if (o.search_radius < 1 || o.search_radius > 64) {
      throw_invalid(env, "gocorLocal: searchRadius must be between 1 and 64");
    }
  }
  void read_params(Napi::Env, const Napi::Object& po) {
    p.scaling = float(read_number(po, "scaling", p.scaling));
    read_shared_params(po, &p);
  }
  size_t bytes() const {
    const size_t D = size_t(2 * o.search_radius + 1) * (2 * o.search_radius + 1);
    return io_bytes(size_t(B) * D * H * W) +
           gocor::gocor_local_work_bytes(C, H, W, o, exec.threads);
  }
  void run(const gocor::Exec& ex) override {
    const size_t D = size_t(2 * o.search_radius + 1) * (2 * o.search_radius + 1);
    volume = FreshF32(size_t(B) * D * H * W);
    if (want_filter) filter = FreshF32(ref.size());
    gocor::gocor_local(p, o, ref.data(), query.data(), volume.data(),
                       want_filter ? filter.data() : nullptr, B, C, H, W, ex,
                       want_diag ? &diag : nullptr);
    require_finite(volume.data(), volume.size(), "the GOCor volume");
  }
};

// gocorGlobal(reference, query (B,C,H,W), {B,C,H,W}, params, {numIter, applyQueryLoss, device,
//             threads, diagnostics, returnFilter})
//   -> job of {volume (B, H*W, H, W), filter? (B, H*W, C), diagnostics?, device}
// gocorLocal(reference, query (B,C,H,W), {B,C,H,W}, params, {numIter, searchRadius, device,
//            threads, diagnostics, returnFilter})
//   -> job of {volume (B, (2R+1)^2, H, W), filter? (B,C,H,W), diagnostics?, device}
template <class GocorJobT>
Napi::Value gocor_call(const Napi::CallbackInfo& info) {
  auto job = std::make_unique<GocorJobT>();
  job->read_common(info);
  job->read_params(info.Env(), read_object(info[3], "params"));
  job->read_options(info.Env(), read_object(info[4], "options"));
  return job_handle(info.Env(), std::move(job));
}

// estimateBytes('gocorGlobal' | 'gocorLocal', {B,C,H,W}, the job's options)
template <class GocorJobT>
size_t gocor_bytes(Napi::Env env, const Napi::Object& dims, const Napi::Object& opts) {
  GocorJobT job;
  job.read_shape(env, dims, opts);
  job.read_options(env, opts);
  return job.bytes();
}

// defaultGlobalParams(C, seed) -> params object with the official initial values.
Napi::Value DefaultGlobalParams(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const double c = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : 0;
  const double seed = info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : -1;
  if (!(c >= 1 && c <= 65536 && c == int(c))) {
    throw_invalid(env, "defaultGlobalParams: channels must be an integer between 1 and 65536");
  }
  if (!(seed >= 0 && seed <= 9007199254740991.0)) {
    throw_invalid(env, "defaultGlobalParams: seed must be between 0 and 2^53-1");
  }
  gocor::GlobalGocorParams p = gocor::default_global_params(int(c), uint64_t(seed));
  Napi::Object o = Napi::Object::New(env);
  o.Set("targetFg", f32(env, p.target_fg.data(), p.target_fg.size()));
  o.Set("targetBg", f32(env, p.target_bg.data(), p.target_bg.size()));
  o.Set("steplengthReg", p.steplength_reg);
  o.Set("regInterDim", p.reg_inter_dim);
  o.Set("regOutputDim", p.reg_output_dim);
  o.Set("regWeight1", f32(env, p.reg_weight1.data(), p.reg_weight1.size()));
  o.Set("regWeight2", f32(env, p.reg_weight2.data(), p.reg_weight2.size()));
  write_shared_params(env, o, p);
  return o;
}

// defaultLocalParams() -> params object with the official initial values.
Napi::Value DefaultLocalParams(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  gocor::LocalGocorParams p = gocor::default_local_params();
  Napi::Object o = Napi::Object::New(env);
  o.Set("scaling", p.scaling);
  write_shared_params(env, o, p);
  return o;
}

}  // namespace

void init_gocor(Napi::Env env, Napi::Object exports) {
  export_function(env, exports, "gocorGlobal", gocor_call<GocorGlobalJob>);
  export_function(env, exports, "gocorLocal", gocor_call<GocorLocalJob>);
  export_function(env, exports, "defaultGlobalParams", DefaultGlobalParams);
  export_function(env, exports, "defaultLocalParams", DefaultLocalParams);
  add_estimate(env, "gocorGlobal", gocor_bytes<GocorGlobalJob>);
  add_estimate(env, "gocorLocal", gocor_bytes<GocorLocalJob>);
}

}  // namespace gocor_napi
