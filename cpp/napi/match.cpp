// Feature extraction, dense matching, flow resizing and image warping workers (the image-to-flow
// path). Arguments are copied into plain C++ values here; the work runs in a PromiseWorker.
#include "match.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "dense_features.h"
#include "dispatch.h"
#include "flow.h"
#include "worker.h"

namespace gocor_napi {
namespace {

struct Dims {
  int C = 0, H = 0, W = 0;
};

Dims read_dims(const Napi::Value& v) {
  Napi::Object o = v.As<Napi::Object>();
  return {read_int(o, "C", 0), read_int(o, "H", 0), read_int(o, "W", 0)};
}

void check_len(Napi::Env env, const F32In& in, size_t want, const char* name) {
  if (in.length != want) {
    throw make_error(env, "ERR_GOCOR_SHAPE",
                     std::string(name) + ": expected " + std::to_string(want) +
                         " elements but received " + std::to_string(in.length));
  }
}

// {imageWidth, imageHeight, levels: [{data, channels, height, width, strideX, strideY, global}]}
// -> FeaturePyramid (the data is copied: the matcher needs contiguous owned levels anyway).
gocor::FeaturePyramid read_pyramid(const Napi::Value& v, const char* name) {
  Napi::Env env = v.Env();
  Napi::Object o = v.As<Napi::Object>();
  gocor::FeaturePyramid p;
  p.image_w = read_int(o, "imageWidth", 0);
  p.image_h = read_int(o, "imageHeight", 0);
  Napi::Array levels = o.Get("levels").As<Napi::Array>();
  for (uint32_t i = 0; i < levels.Length(); ++i) {
    Napi::Object lo = levels.Get(i).As<Napi::Object>();
    gocor::FeatureLevel lv;
    lv.C = read_int(lo, "channels", 0);
    lv.H = read_int(lo, "height", 0);
    lv.W = read_int(lo, "width", 0);
    lv.stride_x = read_number(lo, "strideX", 1);
    lv.stride_y = read_number(lo, "strideY", 1);
    lv.global = read_bool(lo, "global", false);
    F32In d = read_f32(lo.Get("data"), name);
    check_len(env, d, size_t(lv.C) * lv.H * lv.W, name);
    lv.data.assign(d.data, d.data + d.length);
    p.levels.push_back(std::move(lv));
  }
  return p;
}

Napi::Object write_pyramid(Napi::Env env, gocor::FeaturePyramid& p) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("imageWidth", p.image_w);
  o.Set("imageHeight", p.image_h);
  Napi::Array levels = Napi::Array::New(env, p.levels.size());
  for (size_t i = 0; i < p.levels.size(); ++i) {
    gocor::FeatureLevel& lv = p.levels[i];
    Napi::Object lo = Napi::Object::New(env);
    lo.Set("data", to_js(env, std::move(lv.data)));
    lo.Set("channels", lv.C);
    lo.Set("height", lv.H);
    lo.Set("width", lv.W);
    lo.Set("strideX", lv.stride_x);
    lo.Set("strideY", lv.stride_y);
    lo.Set("global", lv.global);
    levels.Set(uint32_t(i), lo);
  }
  o.Set("levels", levels);
  return o;
}

gocor::MatchOptions read_match_options(const Napi::Object& o) {
  gocor::MatchOptions m;
  std::string method =
      o.Get("method").IsString() ? o.Get("method").ToString().Utf8Value() : "gocor";
  m.method = method == "correlation" ? gocor::MatchMethod::Correlation : gocor::MatchMethod::Gocor;
  m.global_size = read_int(o, "globalSize", m.global_size);
  m.finest_stride = read_int(o, "finestStride", m.finest_stride);
  m.use_global = read_bool(o, "useGlobal", m.use_global);
  m.num_iter_global = read_int(o, "numIterGlobal", m.num_iter_global);
  m.num_iter_local = read_int(o, "numIterLocal", m.num_iter_local);
  m.apply_query_loss = read_bool(o, "applyQueryLoss", m.apply_query_loss);
  m.refine_iter = read_int(o, "refineIter", m.refine_iter);
  m.aggregate_radius = read_int(o, "aggregateRadius", m.aggregate_radius);
  m.fill = read_bool(o, "fill", m.fill);
  m.final_fill = read_bool(o, "finalFill", m.final_fill);
  Napi::Value dis = o.Get("dis");
  m.dis = dis.IsObject();
  if (m.dis) {
    Napi::Object d = dis.As<Napi::Object>();
    m.dis_options.coarsest_scale = read_int(d, "coarsestScale", m.dis_options.coarsest_scale);
    m.dis_options.patch_size = read_int(d, "patchSize", m.dis_options.patch_size);
    m.dis_options.patch_stride = read_int(d, "patchStride", m.dis_options.patch_stride);
    m.dis_options.grad_iters = read_int(d, "gradIters", m.dis_options.grad_iters);
    m.dis_options.var_iters = read_int(d, "varIters", m.dis_options.var_iters);
  }
  Napi::Value tex = o.Get("texture");
  if (tex.IsObject()) {
    m.texture_radius = read_int(tex.As<Napi::Object>(), "radius", m.texture_radius);
    m.texture_gradient = float(read_number(tex.As<Napi::Object>(), "gradient", m.texture_gradient));
  }
  m.median = read_bool(o, "median", m.median);
  m.seed = static_cast<uint64_t>(read_number(o, "seed", 0));
  m.fitted_params = read_bool(o, "fittedParams", m.fitted_params);
  m.out_w = read_int(o, "outWidth", 0);
  m.out_h = read_int(o, "outHeight", 0);
  std::string conf =
      o.Get("confidence").IsString() ? o.Get("confidence").ToString().Utf8Value() : "peak";
  m.confidence = conf == "none"              ? gocor::MatchConfidence::None
                 : conf == "forwardBackward" ? gocor::MatchConfidence::ForwardBackward
                                             : gocor::MatchConfidence::Peak;
  return m;
}

struct MatchJob {
  F32In a, b;
  Dims da, db;
  gocor::FeaturePyramid pa, pb;
  bool from_images = true;
  gocor::MatchOptions opts;
  gocor::Exec ex;
  gocor::Device ran = gocor::Device::Cpu;
  gocor::MatchResult result;
};

// extractFeatures(image, {C,H,W}, {globalSize, finestStride, withGlobal, device, threads})
//   -> Promise<{imageWidth, imageHeight, levels}>
Napi::Value ExtractFeatures(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  F32In img = read_f32(info[0], "image");
  Dims d = read_dims(info[1]);
  check_len(env, img, size_t(d.C) * d.H * d.W, "image");
  Napi::Object oo = info[2].As<Napi::Object>();
  gocor::FeatureOptions fo;
  fo.global_size = read_int(oo, "globalSize", fo.global_size);
  fo.finest_stride = read_int(oo, "finestStride", fo.finest_stride);
  fo.coarsest_stride = read_int(oo, "coarsestStride", 0);
  fo.with_global = read_bool(oo, "withGlobal", true);
  gocor::Exec ex = read_exec(oo);
  auto pyr = std::make_shared<gocor::FeaturePyramid>();
  auto* w = new PromiseWorker(
      env,
      [img, d, fo, ex, pyr] {
        // Feature extraction is CPU code; the device option only has to be valid.
        gocor::resolve_device(ex.device);
        *pyr = gocor::features_extract(gocor::ImageView{img.data, d.C, d.H, d.W}, fo, ex);
      },
      [pyr](Napi::Env e) -> Napi::Value { return write_pyramid(e, *pyr); });
  w->keep(info[0]);
  return w->queue_and_promise();
}

Napi::Value finish_match(Napi::Env env, MatchJob& job) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("width", job.result.W);
  o.Set("height", job.result.H);
  o.Set("data", to_js(env, std::move(job.result.flow)));
  if (!job.result.confidence.empty()) {
    o.Set("confidence", to_js(env, std::move(job.result.confidence)));
  }
  if (!job.result.occlusion.empty()) {
    const std::vector<uint8_t>& occ = job.result.occlusion;
    Napi::Uint8Array arr = Napi::Uint8Array::New(env, occ.size());
    std::copy(occ.begin(), occ.end(), arr.Data());
    o.Set("occlusion", arr);
  }
  Napi::Object timings = Napi::Object::New(env);
  for (const auto& [stage, ms] : job.result.timings) timings.Set(stage, ms);
  o.Set("timings", timings);
  o.Set("device", device_name(job.ran));
  return o;
}

// matchImages(a, {C,H,W}, b, {C,H,W}, opts) -> Promise<{data, width, height, confidence?, device}>
Napi::Value MatchImages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto job = std::make_shared<MatchJob>();
  job->a = read_f32(info[0], "a");
  job->da = read_dims(info[1]);
  job->b = read_f32(info[2], "b");
  job->db = read_dims(info[3]);
  check_len(env, job->a, size_t(job->da.C) * job->da.H * job->da.W, "a");
  check_len(env, job->b, size_t(job->db.C) * job->db.H * job->db.W, "b");
  Napi::Object oo = info[4].As<Napi::Object>();
  job->opts = read_match_options(oo);
  job->ex = read_exec(oo);
  auto* w = new PromiseWorker(
      env,
      [job] {
        job->ran = gocor::resolve_device(job->ex.device);
        gocor::Exec ex = job->ex;
        ex.device = job->ran;
        job->result = gocor::match_images(
            gocor::ImageView{job->a.data, job->da.C, job->da.H, job->da.W},
            gocor::ImageView{job->b.data, job->db.C, job->db.H, job->db.W}, job->opts, ex);
      },
      [job](Napi::Env e) { return finish_match(e, *job); });
  w->keep(info[0]);
  w->keep(info[2]);
  return w->queue_and_promise();
}

// matchPyramids(pyramidA, pyramidB, opts) -> Promise<{data, width, height, confidence?, device}>
Napi::Value MatchPyramids(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto job = std::make_shared<MatchJob>();
  job->pa = read_pyramid(info[0], "a");
  job->pb = read_pyramid(info[1], "b");
  Napi::Object oo = info[2].As<Napi::Object>();
  job->opts = read_match_options(oo);
  job->ex = read_exec(oo);
  auto* w = new PromiseWorker(
      env,
      [job] {
        job->ran = gocor::resolve_device(job->ex.device);
        gocor::Exec ex = job->ex;
        ex.device = job->ran;
        job->result = gocor::match_pyramids(job->pa, job->pb, job->opts, ex);
      },
      [job](Napi::Env e) { return finish_match(e, *job); });
  return w->queue_and_promise();
}

// warpImage(b, {C,H,W}, flow, {H,W}, exec) -> Promise<{data, mask}> (data (C,H,W), mask (H,W))
Napi::Value WarpImage(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  F32In b = read_f32(info[0], "b");
  Dims db = read_dims(info[1]);
  F32In flow = read_f32(info[2], "flow");
  Dims df = read_dims(info[3]);
  check_len(env, b, size_t(db.C) * db.H * db.W, "b");
  check_len(env, flow, size_t(2) * df.H * df.W, "flow");
  gocor::Exec ex = read_exec(info[4].As<Napi::Object>());
  auto out = std::make_shared<std::pair<F32Buffer, F32Buffer>>();
  auto* w = new PromiseWorker(
      env,
      [b, db, flow, df, ex, out] {
        out->first.resize(size_t(db.C) * df.H * df.W);
        out->second.resize(size_t(df.H) * df.W);
        gocor::flow_warp_image(b.data, db.C, db.H, db.W, flow.data, df.H, df.W, out->first.data(),
                               out->second.data(), ex);
      },
      [out](Napi::Env e) -> Napi::Value {
        Napi::Object o = Napi::Object::New(e);
        o.Set("data", to_js(e, std::move(out->first)));
        o.Set("mask", to_js(e, std::move(out->second)));
        return o;
      });
  w->keep(info[0]);
  w->keep(info[2]);
  return w->queue_and_promise();
}

// resizeFlow(flow, {H,W}, {H,W}, exec) -> Promise<Float32Array> (vectors rescaled)
Napi::Value ResizeFlow(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  F32In flow = read_f32(info[0], "flow");
  Dims di = read_dims(info[1]), dout = read_dims(info[2]);
  check_len(env, flow, size_t(2) * di.H * di.W, "flow");
  gocor::Exec ex = read_exec(info[3].As<Napi::Object>());
  auto out = std::make_shared<F32Buffer>();
  auto* w = new PromiseWorker(
      env,
      [flow, di, dout, ex, out] {
        out->resize(size_t(2) * dout.H * dout.W);
        gocor::flow_resize(flow.data, di.H, di.W, out->data(), dout.H, dout.W, ex);
      },
      [out](Napi::Env e) -> Napi::Value { return to_js(e, std::move(*out)); });
  w->keep(info[0]);
  return w->queue_and_promise();
}

}  // namespace

void init_match(Napi::Env env, Napi::Object exports) {
  exports.Set("extractFeatures", Napi::Function::New(env, ExtractFeatures, "extractFeatures"));
  exports.Set("matchImages", Napi::Function::New(env, MatchImages, "matchImages"));
  exports.Set("matchPyramids", Napi::Function::New(env, MatchPyramids, "matchPyramids"));
  exports.Set("warpImage", Napi::Function::New(env, WarpImage, "warpImage"));
  exports.Set("resizeFlow", Napi::Function::New(env, ResizeFlow, "resizeFlow"));
}

}  // namespace gocor_napi
