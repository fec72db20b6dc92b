// Feature extraction, dense matching, flow resizing and image warping jobs (the image-to-flow
// path). Arguments are copied into plain C++ values here; the work runs as a Job (worker.h).
#include "match.h"

#include <memory>
#ifdef __GLIBC__
#include <malloc.h>
#endif
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
  Napi::Object o = read_object(v, "dims");
  return {read_int(o, "C", 0), read_int(o, "H", 0), read_int(o, "W", 0)};
}

// A (C, H, W) image or flow argument, copied.
std::vector<float> copy_image(const Napi::Value& v, const Dims& d, const char* name) {
  return copy_f32(v, name, count(v.Env(), {d.C, d.H, d.W}, name));
}

// {imageWidth, imageHeight, levels: [{data, channels, height, width, strideX, strideY, global}]}
// -> FeaturePyramid (the data is copied: the matcher needs contiguous owned levels anyway;
// without `with_data` only the shapes are read, for estimateBytes).
gocor::FeaturePyramid read_pyramid(const Napi::Value& v, const char* name, bool with_data = true) {
  Napi::Env env = v.Env();
  Napi::Object o = read_object(v, name);
  gocor::FeaturePyramid p;
  p.image_w = read_int(o, "imageWidth", 0);
  p.image_h = read_int(o, "imageHeight", 0);
  Napi::Value list = o.Get("levels");
  if (!list.IsArray()) throw_invalid(env, std::string("Expected array for ") + name + ".levels");
  Napi::Array levels = list.As<Napi::Array>();
  for (uint32_t i = 0; i < levels.Length(); ++i) {
    Napi::Object lo = read_object(levels.Get(i), name);
    gocor::FeatureLevel lv;
    lv.C = read_int(lo, "channels", 0);
    lv.H = read_int(lo, "height", 0);
    lv.W = read_int(lo, "width", 0);
    lv.stride_x = read_number(lo, "strideX", lv.stride_x);
    lv.stride_y = read_number(lo, "strideY", lv.stride_y);
    lv.global = read_bool(lo, "global", lv.global);
    const size_t n = count(env, {lv.C, lv.H, lv.W}, name);
    if (with_data) {
      lv.data = copy_features_vector(lo.Get("data"),
                                     std::string(name) + ".levels[" + std::to_string(i) + "]", n);
    }
    p.levels.push_back(std::move(lv));
  }
  return p;
}

napi_value write_pyramid(Out& out, gocor::FeaturePyramid& p) {
  napi_value o = out.object();
  out.set(o, "imageWidth", p.image_w);
  out.set(o, "imageHeight", p.image_h);
  napi_value levels = out.array(p.levels.size());
  for (size_t i = 0; i < p.levels.size(); ++i) {
    gocor::FeatureLevel& lv = p.levels[i];
    napi_value lo = out.object();
    out.set(lo, "data", out.f32(std::move(lv.data)));
    out.set(lo, "channels", lv.C);
    out.set(lo, "height", lv.H);
    out.set(lo, "width", lv.W);
    out.set(lo, "strideX", lv.stride_x);
    out.set(lo, "strideY", lv.stride_y);
    out.set(lo, "global", out.boolean(lv.global));
    out.set(levels, uint32_t(i), lo);
  }
  out.set(o, "levels", levels);
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
    m.dis_options.spatial_propagation =
        read_bool(d, "spatialPropagation", m.dis_options.spatial_propagation);
  }
  Napi::Value tex = o.Get("texture");
  if (tex.IsObject()) {
    Napi::Object t = tex.As<Napi::Object>();
    m.texture_radius = read_int(t, "radius", m.texture_radius);
    m.texture_gradient = float(read_number(t, "gradient", m.texture_gradient));
    m.flat_gradient = float(read_number(t, "flatGradient", m.flat_gradient));
  }
  m.median = read_bool(o, "median", m.median);
  if (o.Get("similaritySearch").IsString()) {
    const std::string ss = o.Get("similaritySearch").ToString().Utf8Value();
    m.similarity_search = ss == "off"      ? gocor::MatchOptions::SimilaritySearch::Off
                          : ss == "always" ? gocor::MatchOptions::SimilaritySearch::Always
                                           : gocor::MatchOptions::SimilaritySearch::Auto;
  }
  m.seed = static_cast<uint64_t>(read_number(o, "seed", double(m.seed)));
  m.fitted_params = read_bool(o, "fittedParams", m.fitted_params);
  m.out_w = read_int(o, "outWidth", m.out_w);
  m.out_h = read_int(o, "outHeight", m.out_h);
  std::string conf =
      o.Get("confidence").IsString() ? o.Get("confidence").ToString().Utf8Value() : "peak";
  m.confidence = conf == "none"              ? gocor::MatchConfidence::None
                 : conf == "forwardBackward" ? gocor::MatchConfidence::ForwardBackward
                                             : gocor::MatchConfidence::Peak;
  return m;
}

gocor::FeatureOptions read_feature_options(const Napi::Object& oo) {
  gocor::FeatureOptions fo;
  fo.global_size = read_int(oo, "globalSize", fo.global_size);
  fo.finest_stride = read_int(oo, "finestStride", fo.finest_stride);
  fo.coarsest_stride = read_int(oo, "coarsestStride", fo.coarsest_stride);
  fo.with_global = read_bool(oo, "withGlobal", fo.with_global);
  return fo;
}

struct FeaturesJob : Job {
  std::vector<float> image;
  Dims d;
  gocor::FeatureOptions fo;
  gocor::FeaturePyramid pyramid;
  void run(const gocor::Exec& ex) override {
    pyramid = gocor::features_extract(gocor::ImageView{image.data(), d.C, d.H, d.W}, fo, ex);
  }
  napi_value result(Out& out) override { return write_pyramid(out, pyramid); }
};

// extractFeatures(image, {C,H,W}, {globalSize, finestStride, coarsestStride, withGlobal, device,
//                 threads}) -> job of {imageWidth, imageHeight, levels, device}
Napi::Value ExtractFeatures(const Napi::CallbackInfo& info) {
  auto job = std::make_unique<FeaturesJob>();
  job->has_cuda = gocor::stage_on_cuda(gocor::Stage::FeaturesCompute);
  job->d = read_dims(info[1]);
  job->image = copy_image(info[0], job->d, "image");
  Napi::Object oo = read_object(info[2], "options");
  job->fo = read_feature_options(oo);
  read_exec(oo, *job);
  return job_handle(info.Env(), std::move(job));
}

// estimateBytes('extractFeatures', {C,H,W}, the job's options)
size_t features_bytes(Napi::Env env, const Napi::Object& dims, const Napi::Object& opts) {
  const Dims d = read_dims(dims);
  const size_t image = count(env, {d.C, d.H, d.W}, "image");
  return sizeof(float) * image + gocor::features_extract_bytes(d.H, d.W, read_feature_options(opts),
                                                               read_int(opts, "threads", 0));
}

struct MatchJob : Job {
  // The images: a pair below kMatchRetainPixels in pooled blocks (FreshF32: a call repeated on a
  // shape maps no fresh pages for them; mapped afresh, a 512x512 pair's 6 MiB of inputs took ~1500
  // page faults, ~15 ms of the main thread in this VM), a larger one in vectors, b's freed back to
  // the system as soon as the pipeline is done with its colours (b_pixels).
  std::vector<float> a, b;
  FreshF32 pooled_a, pooled_b;
  Dims da, db;
  gocor::FeaturePyramid pa, pb;
  bool from_images = true;
  gocor::MatchOptions opts;
  gocor::MatchResult result_;
  void run(const gocor::Exec& ex) override {
    const bool pooled = pooled_a.size() > 0;
    result_ = from_images
                  ? gocor::match_images(
                        gocor::ImageView{pooled ? pooled_a.data() : a.data(), da.C, da.H, da.W},
                        gocor::ImageView{pooled ? pooled_b.data() : b.data(), db.C, db.H, db.W},
                        opts, ex, pooled ? nullptr : &b)
                  : gocor::match_pyramids(pa, pb, opts, ex);
  }
  napi_value result(Out& out) override {
    napi_value o = out.object();
    out.set(o, "width", result_.W);
    out.set(o, "height", result_.H);
    out.set(o, "data", out.f32(std::move(result_.flow)));
    if (!result_.confidence.empty()) {
      out.set(o, "confidence", out.f32(std::move(result_.confidence)));
    }
    if (!result_.occlusion.empty()) out.set(o, "occlusion", out.u8(std::move(result_.occlusion)));
    if (!result_.timings.empty()) {
      napi_value t = out.object();
      for (const auto& [stage, ms] : result_.timings) out.set(t, stage, ms);
      out.set(o, "timings", t);
    }
    return o;
  }
};

// matchImages(a, {C,H,W}, b, {C,H,W}, opts)
//   -> job of {data (2,H,W), width, height, confidence? (H,W), occlusion? (H,W) uint8,
//              timings, device}
Napi::Value MatchImages(const Napi::CallbackInfo& info) {
  auto job = std::make_unique<MatchJob>();
  job->da = read_dims(info[1]);
  job->db = read_dims(info[3]);
  const Dims &da = job->da, &db = job->db;
  if (int64_t(da.H) * da.W + int64_t(db.H) * db.W < int64_t(gocor::kMatchRetainPixels)) {
    job->pooled_a = copy_f32_fresh(info[0], "a", count(info.Env(), {da.C, da.H, da.W}, "a"));
    job->pooled_b = copy_f32_fresh(info[2], "b", count(info.Env(), {db.C, db.H, db.W}, "b"));
  } else {
    job->a = copy_image(info[0], da, "a");
    job->b = copy_image(info[2], db, "b");
  }
  Napi::Object oo = read_object(info[4], "options");
  job->opts = read_match_options(oo);
  read_exec(oo, *job);
  return job_handle(info.Env(), std::move(job));
}

// matchPyramids(pyramidA, pyramidB, opts)
//   -> job of {data (2,H,W), width, height, confidence? (H,W), device}
Napi::Value MatchPyramids(const Napi::CallbackInfo& info) {
  auto job = std::make_unique<MatchJob>();
  job->from_images = false;
  job->pa = read_pyramid(info[0], "a");
  job->pb = read_pyramid(info[1], "b");
  Napi::Object oo = read_object(info[2], "options");
  job->opts = read_match_options(oo);
  read_exec(oo, *job);
  return job_handle(info.Env(), std::move(job));
}

// estimateBytes('matchImages', {a: {C,H,W}, b: {C,H,W}}, the job's options)
size_t match_images_bytes(Napi::Env env, const Napi::Object& dims, const Napi::Object& opts) {
  const Dims da = read_dims(dims.Get("a")), db = read_dims(dims.Get("b"));
  const size_t in = count(env, {da.C, da.H, da.W}, "a") + count(env, {db.C, db.H, db.W}, "b");
  return sizeof(float) * in + gocor::match_images_bytes(da.H, da.W, db.H, db.W,
                                                        read_match_options(opts),
                                                        read_int(opts, "threads", 0));
}

// estimateBytes('matchPyramids', {a, b} (pyramids; level data not needed), the job's options)
size_t match_pyramids_bytes(Napi::Env env, const Napi::Object& dims, const Napi::Object& opts) {
  const gocor::FeaturePyramid pa = read_pyramid(dims.Get("a"), "a", false),
                              pb = read_pyramid(dims.Get("b"), "b", false);
  size_t in = 0;
  for (const gocor::FeaturePyramid* p : {&pa, &pb})
    for (const gocor::FeatureLevel& lv : p->levels) in += size_t(lv.C) * lv.H * lv.W;
  count(env, {pa.image_h, pa.image_w}, "a");
  count(env, {pb.image_h, pb.image_w}, "b");
  return sizeof(float) * in + gocor::match_pyramids_work_bytes(pa, pb, read_match_options(opts),
                                                               false, read_int(opts, "threads", 0));
}

struct WarpJob : Job {
  std::vector<float> b, flow;
  Dims db, df;
  F32Buffer out, mask;
  void run(const gocor::Exec& ex) override {
    out.resize(size_t(db.C) * df.H * df.W);
    mask.resize(size_t(df.H) * df.W);
    gocor::flow_warp_image(b.data(), db.C, db.H, db.W, flow.data(), df.H, df.W, out.data(),
                           mask.data(), ex);
  }
  napi_value result(Out& o) override {
    napi_value r = o.object();
    o.set(r, "data", o.f32(std::move(out)));
    o.set(r, "mask", o.f32(std::move(mask)));
    return r;
  }
};

// warpImage(b, {C,H,W}, flow, {C: 2, H, W}, exec) -> job of {data (C,H,W), mask (H,W), device}
Napi::Value WarpImage(const Napi::CallbackInfo& info) {
  auto job = std::make_unique<WarpJob>();
  job->has_cuda = gocor::stage_on_cuda(gocor::Stage::FlowWarpImage);
  job->db = read_dims(info[1]);
  job->df = read_dims(info[3]);
  job->df.C = 2;
  job->b = copy_image(info[0], job->db, "b");
  job->flow = copy_image(info[2], job->df, "flow");
  read_exec(read_object(info[4], "exec"), *job);
  return job_handle(info.Env(), std::move(job));
}

// estimateBytes('warpImage', {b: {C,H,W}, flow: {H,W}}, exec)
size_t warp_bytes(Napi::Env env, const Napi::Object& dims, const Napi::Object&) {
  const Dims db = read_dims(dims.Get("b")), df = read_dims(dims.Get("flow"));
  // b, and per pixel of the flow's grid: the flow (2), the warped image (C) and the mask (1)
  return sizeof(float) *
         (count(env, {db.C, db.H, db.W}, "b") + count(env, {2 + db.C + 1, df.H, df.W}, "flow"));
}

struct ResizeFlowJob : Job {
  std::vector<float> flow;
  Dims from, to;
  F32Buffer out;
  void run(const gocor::Exec& ex) override {
    out.resize(size_t(2) * to.H * to.W);
    gocor::flow_resize(flow.data(), from.H, from.W, out.data(), to.H, to.W, ex);
  }
  napi_value result(Out& o) override {
    napi_value r = o.object();
    o.set(r, "data", o.f32(std::move(out)));
    return r;
  }
};

// estimateBytes('resizeFlow', {from: {H,W}, to: {H,W}}, exec)
size_t resize_flow_bytes(Napi::Env env, const Napi::Object& dims, const Napi::Object&) {
  const Dims from = read_dims(dims.Get("from")), to = read_dims(dims.Get("to"));
  return sizeof(float) *
         (count(env, {2, from.H, from.W}, "flow") + count(env, {2, to.H, to.W}, "output"));
}

// resizeFlow(flow, {H,W}, {H,W}, exec) -> job of {data (2,h,w), device} (vectors rescaled)
Napi::Value ResizeFlow(const Napi::CallbackInfo& info) {
  auto job = std::make_unique<ResizeFlowJob>();
  job->has_cuda = gocor::stage_on_cuda(gocor::Stage::FlowResize);
  job->from = read_dims(info[1]);
  job->to = read_dims(info[2]);
  job->from.C = job->to.C = 2;
  job->flow = copy_image(info[0], job->from, "flow");
  count(info.Env(), {2, job->to.H, job->to.W}, "output");
  read_exec(read_object(info[3], "exec"), *job);
  return job_handle(info.Env(), std::move(job));
}

}  // namespace

void init_match(Napi::Env env, Napi::Object exports) {
#ifdef __GLIBC__
  // glibc raises its mmap threshold to the size of every large block freed (up to 32 MiB), after
  // which match's stage buffers come from the heap and stay resident, fragmented, once freed: on
  // a 1282x1110 pair ~100 MB above the live peak. A fixed threshold keeps the large ones (float
  // planes of half a million pixels and up) mapped and returns them to the system when freed;
  // smaller ones are reused from the heap (no page faults) and trimmed between match's stages.
  mallopt(M_MMAP_THRESHOLD, 2 << 20);
#endif
  export_function(env, exports, "extractFeatures", ExtractFeatures);
  export_function(env, exports, "matchImages", MatchImages);
  export_function(env, exports, "matchPyramids", MatchPyramids);
  export_function(env, exports, "warpImage", WarpImage);
  export_function(env, exports, "resizeFlow", ResizeFlow);
  add_estimate(env, "extractFeatures", features_bytes);
  add_estimate(env, "matchImages", match_images_bytes);
  add_estimate(env, "matchPyramids", match_pyramids_bytes);
  add_estimate(env, "warpImage", warp_bytes);
  add_estimate(env, "resizeFlow", resize_flow_bytes);
}

}  // namespace gocor_napi
