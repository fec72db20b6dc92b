// The whole image-to-flow match on the GPU for a batch of B pairs: the algorithm of
// cpp/core/match.cpp (match_images -> match_pyramids -> match_full) step for step, with every stage
// on device memory: dense features of both sides at every level (zero-mean descriptors, as
// features_compute), global GOCor (or correlation), its read-out and the cyclic-consistency check
// with median fill of rejected cells (global_consistency_fill), then per local level median,
// resampling, warping of b's features, local GOCor (or correlation), read-out, residual update,
// symmetric refinement at the finest level, and the final resampling to a's pixel grid; peak or
// forward-backward confidence and outputShape resizing too. The backend needs nothing from
// gocor_core, so the GOCor parameters are the caller's (match_global_params(kFeatureChannels + 1,
// o.seed, o.fitted_params) and default_local_params() for match_images), and the
// pyramid geometry replicates features_extract (with features_local_strides, inline in
// dense_features.h).
#include <algorithm>
#include <cmath>
#include <vector>

#include "cuda_util.cuh"
#include "gocor_cuda.h"
#include "gocor_cuda_device.cuh"

namespace gocor {
namespace cuda {
namespace {

constexpr int kGlobalCell = 8, kLocalCell = 4;  // features.cpp's working pixels per cell

struct Level {
  int Hf, Wf, cell;
  bool global;
  FlowGrid g;
  size_t fa, fb;  // offsets of a's and b's features (B, C, Hf, Wf)
};

struct Plan {
  int B, C, H, W, oh, ow;
  std::vector<Level> levels;
  size_t feat_ws = 0, gbias_a = 0, gbias_b = 0, gvol = 0, gfilt = 0, gws = 0, gfill = 0, warped = 0,
         lvol = 0, lfilt = 0, lws = 0, res = 0, conf = 0, flow0 = 0, flow1 = 0, medtmp = 0,
         full = 0, fullconf = 0, back = 0, backa = 0, mask = 0, photo = 0, total = 0;
};

size_t a256(size_t x) {
  return (x + 255) / 256 * 256;
}

void check_options(const MatchOptions& o) {
  if (o.search_radius < 1 || o.num_iter_global < 0 || o.num_iter_local < 0 || o.out_h < 0 ||
      o.out_w < 0) {
    throw Error(ErrorCode::InvalidArg, "match: invalid options");
  }
}

Plan make_plan(int B, int C, int H, int W, const MatchOptions& o) {
  if (B <= 0 || C <= 0 || H <= 0 || W <= 0) {
    throw Error(ErrorCode::Shape, "match_batch: B, C, H and W must be positive");
  }
  check_options(o);
  Plan p;
  p.B = B;
  p.C = C;
  p.H = H;
  p.W = W;
  p.oh = o.out_h > 0 ? o.out_h : H;
  p.ow = o.out_w > 0 ? o.out_w : W;
  size_t at = 0;
  auto take = [&](size_t bytes) {
    const size_t off = at;
    at += a256(bytes);
    return off;
  };
  const size_t F = kFeatureChannels;
  auto add = [&](int Hf, int Wf, int cell, bool global) {
    Level l{Hf, Wf, cell, global, FlowGrid{Hf, Wf, double(W) / Wf, double(H) / Hf}, 0, 0};
    l.fa = take(size_t(B) * F * Hf * Wf * 4);
    l.fb = take(size_t(B) * F * Hf * Wf * 4);
    p.levels.push_back(l);
  };
  if (o.use_global) add(o.global_size, o.global_size, kGlobalCell, true);
  FeatureOptions fo;
  fo.global_size = o.global_size;
  fo.finest_stride = o.finest_stride;
  for (int s : features_local_strides(H, W, fo)) {
    add(std::max(1, int(std::lround(double(H) / s))), std::max(1, int(std::lround(double(W) / s))),
        kLocalCell, false);
  }
  size_t feat_ws = 0, maxN = 0, lws = 0;
  const int R = o.search_radius;
  const size_t D = size_t(2 * R + 1) * (2 * R + 1);
  LocalGocorOptions lo;
  lo.num_iter = o.num_iter_local;
  lo.search_radius = R;
  for (const Level& l : p.levels) {
    feat_ws = std::max(feat_ws, cuda_dev::features_workspace_bytes(B, H, W, l.Hf, l.Wf, l.cell));
    maxN = std::max(maxN, size_t(l.Hf) * l.Wf);
    if (!l.global && o.method == MatchMethod::Gocor) {
      lws = std::max(lws, cuda_dev::gocor_local_workspace_bytes(B, int(F), l.Hf, l.Wf, lo));
    }
  }
  p.feat_ws = take(feat_ws);
  if (o.use_global) {
    const size_t N = size_t(o.global_size) * o.global_size;
    p.gbias_a = take(size_t(B) * (F + 1) * N * 4);
    p.gbias_b = take(size_t(B) * (F + 1) * N * 4);
    p.gvol = take(size_t(B) * N * N * 4);
    p.gfill = take(cuda_dev::global_fill_workspace_bytes(p.levels[0].g, p.levels[0].g, B));
    if (o.method == MatchMethod::Gocor) {
      GlobalGocorOptions go;
      go.num_iter = o.num_iter_global;
      go.apply_query_loss = o.apply_query_loss;
      p.gfilt = take(size_t(B) * N * (F + 1) * 4);
      p.gws = take(cuda_dev::gocor_global_workspace_bytes(
          GocorGlobalShape{B, int(F) + 1, o.global_size, o.global_size}, go));
    }
  }
  p.warped = take(size_t(B) * F * maxN * 4);
  p.lvol = take(size_t(B) * D * maxN * 4);
  if (o.method == MatchMethod::Gocor) {
    p.lfilt = take(size_t(B) * F * maxN * 4);
    p.lws = take(lws);
  }
  p.res = take(size_t(B) * 2 * maxN * 4);
  p.conf = take(size_t(B) * maxN * 4);
  p.flow0 = take(size_t(B) * 2 * maxN * 4);
  p.flow1 = take(size_t(B) * 2 * maxN * 4);
  p.medtmp = take(size_t(B) * 2 * maxN * 4);
  const size_t P = size_t(H) * W;
  p.full = take(size_t(B) * 2 * P * 4);
  p.fullconf = take(size_t(B) * P * 4);
  if (o.confidence == MatchConfidence::ForwardBackward) {
    p.back = take(size_t(B) * 2 * P * 4);
    p.backa = take(size_t(B) * 2 * P * 4);
    p.mask = take(size_t(B) * P * 4);
  }
  if (o.photometric_iter > 0) p.photo = take(cuda_dev::photometric_workspace_bytes(B, H, W, H, W));
  p.total = at;
  return p;
}

// with_bias_channel of match.cpp: src (B, C, N) -> dst (B, C + 1, N), every value x s and the
// last channel bias x s, s = 1 / sqrt(1 + bias^2) rounded as there (float).
__global__ void bias_channel_kernel(const float* __restrict__ src, float* __restrict__ dst, int C,
                                    long long N, float bias, float s) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const long long b = blockIdx.y;
  if (i >= N) return;
  const float* f = src + b * C * N;
  float* o = dst + b * (C + 1) * N;
  for (int c = 0; c < C; ++c) o[c * N + i] = __fmul_rn(f[c * N + i], s);
  o[C * N + i] = __fmul_rn(bias, s);
}

// flow (B, 2, N) += residual (B, 2, N) x (sx, sy), rounded as match.cpp does.
__global__ void add_residual_kernel(float* __restrict__ flow, const float* __restrict__ res,
                                    long long N, double sx, double sy) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const long long b = blockIdx.y;
  if (i >= N) return;
  float* f = flow + b * 2 * N;
  const float* r = res + b * 2 * N;
  f[i] = __fadd_rn(f[i], float(r[i] * sx));
  f[N + i] = __fadd_rn(f[N + i], float(r[N + i] * sy));
}

// Forward-backward confidence: mask x exp(-|flow + back_on_a|^2 / (2 x 1.5^2)).
__global__ void fb_conf_kernel(const float* __restrict__ flow, const float* __restrict__ backa,
                               const float* __restrict__ mask, float* __restrict__ conf,
                               long long P) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const long long b = blockIdx.y;
  if (i >= P) return;
  const float* f = flow + b * 2 * P;
  const float* k = backa + b * 2 * P;
  const float ex = __fadd_rn(f[i], k[i]), ey = __fadd_rn(f[P + i], k[P + i]);
  const float e2 = __fadd_rn(__fmul_rn(ex, ex), __fmul_rn(ey, ey));
  // exp in double, rounded once: glibc's expf (the CPU side) is within 0.502 ulp of exact, so this
  // agrees with it far more often than CUDA's expf (2 ulp).
  const float arg = __fdiv_rn(-e2, 2 * 1.5f * 1.5f);
  conf[b * P + i] = __fmul_rn(mask[b * P + i], float(exp(double(arg))));
}

// flow (B, 2, P) *= (kx, ky) per plane.
__global__ void scale_kernel(float* __restrict__ flow, long long P, float kx, float ky) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const long long b = blockIdx.y;
  if (i >= P) return;
  flow[b * 2 * P + i] = __fmul_rn(flow[b * 2 * P + i], kx);
  flow[b * 2 * P + P + i] = __fmul_rn(flow[b * 2 * P + P + i], ky);
}

template <typename T>
T* at(char* ws, size_t off) {
  return reinterpret_cast<T*>(ws + off);
}

// match_full of match.cpp for the batch: features fa (side "a") against fb -> out (B, 2, H, W) on
// a's pixel grid, and the last level's confidence resampled to it when out_conf is non-null.
void match_full(const Plan& p, const MatchOptions& o, const GlobalGocorParams& gp,
                const LocalGocorParams& lp, char* ws, bool swap, float* out, float* out_conf,
                cudaStream_t st) {
  const int B = p.B, C = kFeatureChannels, R = o.search_radius;
  auto fa = [&](const Level& l) { return at<float>(ws, swap ? l.fb : l.fa); };
  auto fb = [&](const Level& l) { return at<float>(ws, swap ? l.fa : l.fb); };
  float* flow = at<float>(ws, p.flow0);
  float* cur = at<float>(ws, p.flow1);
  bool have_flow = false;
  FlowGrid prev{0, 0, 1, 1};
  size_t first_local = 0;
  const Level& l0 = p.levels[0];
  if (l0.global) {
    float* vol = at<float>(ws, p.gvol);
    float* ga = at<float>(ws, p.gbias_a);
    float* gb = at<float>(ws, p.gbias_b);
    const long long N0 = (long long)l0.Hf * l0.Wf;
    const dim3 grid0(ceil_div(N0, 256), B);
    const float s = 1.f / std::sqrt(1.f + kMatchGlobalBias * kMatchGlobalBias);
    bias_channel_kernel<<<grid0, 256, 0, st>>>(fa(l0), ga, C, N0, kMatchGlobalBias, s);
    bias_channel_kernel<<<grid0, 256, 0, st>>>(fb(l0), gb, C, N0, kMatchGlobalBias, s);
    check_launch("bias_channel_kernel");
    if (o.method == MatchMethod::Gocor) {
      GlobalGocorOptions go;
      go.num_iter = o.num_iter_global;
      go.apply_query_loss = o.apply_query_loss;
      cuda_dev::gocor_global(gp, go, ga, gb, vol, at<float>(ws, p.gfilt), ws + p.gws,
                             GocorGlobalShape{B, C + 1, l0.Hf, l0.Wf}, st, nullptr);
    } else {
      cuda_dev::corr_global(ga, gb, vol, CorrGlobalShape{B, C + 1, l0.Hf, l0.Wf, l0.Hf, l0.Wf}, st);
    }
    cuda_dev::flow_from_global_volume(vol, l0.g, l0.g, flow, nullptr, B, st);
    cuda_dev::global_consistency_fill(vol, l0.g, l0.g, flow, ws + p.gfill, B, st);
    have_flow = true;
    prev = l0.g;
    first_local = 1;
  }
  float* conf = at<float>(ws, p.conf);
  for (size_t li = first_local; li < p.levels.size(); ++li) {
    const Level& l = p.levels[li];
    const long long N = (long long)l.Hf * l.Wf;
    if (have_flow) {
      const float* src = flow;
      if (o.median) {
        cuda_dev::flow_median3(flow, at<float>(ws, p.medtmp), prev.H, prev.W, B, st);
        src = at<float>(ws, p.medtmp);
      }
      cuda_dev::flow_resample(src, prev, cur, l.g, B, 2, st);
    } else {
      check(cudaMemsetAsync(cur, 0, size_t(B) * 2 * N * 4, st), "cudaMemsetAsync");
    }
    float* warped = at<float>(ws, p.warped);
    cuda_dev::flow_warp(fb(l), C, l.g, cur, l.g, warped, B, st);
    float* vol = at<float>(ws, p.lvol);
    if (o.method == MatchMethod::Gocor) {
      LocalGocorOptions lo;
      lo.num_iter = o.num_iter_local;
      lo.search_radius = R;
      cuda_dev::gocor_local(lp, lo, fa(l), warped, vol, at<float>(ws, p.lfilt), ws + p.lws, B, C,
                            l.Hf, l.Wf, st, nullptr);
    } else {
      cuda_dev::corr_local(fa(l), warped, vol, CorrLocalShape{B, C, l.Hf, l.Wf, R}, st);
    }
    float* res = at<float>(ws, p.res);
    cuda_dev::flow_from_local_volume(vol, R, l.Hf, l.Wf, res, conf, B, st);
    dim3 grid(ceil_div(N, 256), B);
    add_residual_kernel<<<grid, 256, 0, st>>>(cur, res, N, l.g.sx, l.g.sy);
    check_launch("add_residual_kernel");
    if (li + 1 == p.levels.size() && o.refine_iter > 0) {
      cuda_dev::flow_refine_symmetric(fa(l), l.g, fb(l), l.g, C, cur, o.refine_iter, B, st);
    }
    std::swap(flow, cur);
    have_flow = true;
    prev = l.g;
  }
  const FlowGrid full{p.H, p.W, 1, 1};
  cuda_dev::flow_resample(flow, prev, out, full, B, 2, st);
  if (out_conf != nullptr) cuda_dev::flow_resample(conf, prev, out_conf, full, B, 1, st);
}

void match_device(const Plan& p, const MatchOptions& o, const GlobalGocorParams& gp,
                  const LocalGocorParams& lp, const float* d_a, const float* d_b, float* d_flow,
                  float* d_conf, char* ws, cudaStream_t st) {
  for (const Level& l : p.levels) {
    cuda_dev::features_compute(d_a, p.B, p.C, p.H, p.W, l.Hf, l.Wf, l.cell, at<float>(ws, l.fa),
                               ws + p.feat_ws, st);
    cuda_dev::features_compute(d_b, p.B, p.C, p.H, p.W, l.Hf, l.Wf, l.cell, at<float>(ws, l.fb),
                               ws + p.feat_ws, st);
  }
  const bool same = p.oh == p.H && p.ow == p.W;
  float* flow = same ? d_flow : at<float>(ws, p.full);
  float* conf = nullptr;
  if (o.confidence != MatchConfidence::None) conf = same ? d_conf : at<float>(ws, p.fullconf);
  if (conf == nullptr && o.confidence != MatchConfidence::None) conf = at<float>(ws, p.fullconf);
  match_full(p, o, gp, lp, ws, false, flow, o.confidence == MatchConfidence::Peak ? conf : nullptr,
             st);
  if (o.photometric_iter > 0) {
    cuda_dev::flow_refine_photometric(d_a, d_b, p.C, p.H, p.W, p.H, p.W, flow, o.photometric_iter,
                                      kMatchPhotometricRadius, ws + p.photo, p.B, st);
  }
  const long long P = (long long)p.H * p.W;
  if (o.confidence == MatchConfidence::ForwardBackward) {
    float* back = at<float>(ws, p.back);
    match_full(p, o, gp, lp, ws, true, back, nullptr, st);
    if (o.photometric_iter > 0) {
      cuda_dev::flow_refine_photometric(d_b, d_a, p.C, p.H, p.W, p.H, p.W, back, o.photometric_iter,
                                        kMatchPhotometricRadius, ws + p.photo, p.B, st);
    }
    float* backa = at<float>(ws, p.backa);
    float* mask = at<float>(ws, p.mask);
    cuda_dev::flow_warp_image(back, 2, p.H, p.W, flow, p.H, p.W, backa, mask, p.B, st);
    dim3 grid(ceil_div(P, 256), p.B);
    fb_conf_kernel<<<grid, 256, 0, st>>>(flow, backa, mask, conf, P);
    check_launch("fb_conf_kernel");
  }
  if (same) return;
  // outputShape: flow_resize (resample, then scale the vectors) and the confidence resampled.
  const FlowGrid gi{p.H, p.W, 1, 1}, go{p.oh, p.ow, double(p.W) / p.ow, double(p.H) / p.oh};
  cuda_dev::flow_resample(flow, gi, d_flow, go, p.B, 2, st);
  const long long Po = (long long)p.oh * p.ow;
  dim3 grid(ceil_div(Po, 256), p.B);
  scale_kernel<<<grid, 256, 0, st>>>(d_flow, Po, float(double(p.ow) / p.W),
                                     float(double(p.oh) / p.H));
  check_launch("scale_kernel");
  if (conf != nullptr && d_conf != nullptr) {
    cuda_dev::flow_resample(conf, gi, d_conf, go, p.B, 1, st);
  }
}

}  // namespace
}  // namespace cuda

namespace cuda_dev {

size_t match_workspace_bytes(int B, int C, int H, int W, const MatchOptions& o) {
  return cuda::make_plan(B, C, H, W, o).total;
}

void match_batch(const MatchOptions& o, const GlobalGocorParams& gp, const LocalGocorParams& lp,
                 const float* d_a, const float* d_b, int B, int C, int H, int W, float* d_flow,
                 float* d_conf, void* d_workspace, void* stream) {
  const cuda::Plan p = cuda::make_plan(B, C, H, W, o);
  cuda::match_device(p, o, gp, lp, d_a, d_b, d_flow, d_conf, static_cast<char*>(d_workspace),
                     static_cast<cudaStream_t>(stream));
}

}  // namespace cuda_dev

void match_images_batch_cuda(const ImageView* a, const ImageView* b, int B, const MatchOptions& o,
                             const GlobalGocorParams& gp, const LocalGocorParams& lp,
                             const Exec& ex, MatchResult* out) {
  if (B <= 0 || a == nullptr || b == nullptr || out == nullptr) {
    throw Error(ErrorCode::InvalidArg, "match_images_batch_cuda: empty batch");
  }
  const int C = a[0].C, H = a[0].H, W = a[0].W;
  for (int i = 0; i < B; ++i) {
    for (const ImageView* v : {&a[i], &b[i]}) {
      if (v->C != C || v->H != H || v->W != W || v->data == nullptr) {
        throw Error(ErrorCode::Shape,
                    "match_images_batch_cuda: every image of the batch, a and b, needs the same "
                    "channels and size");
      }
    }
  }
  const cuda::Plan p = cuda::make_plan(B, C, H, W, o);
  cuda::require_device();
  check_cancel(ex);
  const size_t img = size_t(C) * H * W, Po = size_t(p.oh) * p.ow;
  const bool want_conf = o.confidence != MatchConfidence::None;
  cuda::Stream st;
  cuda::DeviceBuffer<float> d_a(B * img), d_b(B * img), d_flow(B * 2 * Po),
      d_conf(want_conf ? B * Po : 0);
  cuda::DeviceBuffer<char> d_ws(p.total);
  for (int i = 0; i < B; ++i) {
    cuda::to_device(d_a.get() + i * img, a[i].data, img, st.get());
    cuda::to_device(d_b.get() + i * img, b[i].data, img, st.get());
  }
  cuda::match_device(p, o, gp, lp, d_a.get(), d_b.get(), d_flow.get(), d_conf.get(), d_ws.get(),
                     st.get());
  for (int i = 0; i < B; ++i) {
    out[i].H = p.oh;
    out[i].W = p.ow;
    out[i].flow.resize(2 * Po);
    cuda::to_host(out[i].flow.data(), d_flow.get() + i * 2 * Po, 2 * Po, st.get());
    out[i].confidence.clear();
    if (want_conf) {
      out[i].confidence.resize(Po);
      cuda::to_host(out[i].confidence.data(), d_conf.get() + i * Po, Po, st.get());
    }
  }
  st.sync();
}

MatchResult match_images_cuda(const ImageView& a, const ImageView& b, const MatchOptions& o,
                              const GlobalGocorParams& gp, const LocalGocorParams& lp,
                              const Exec& ex) {
  MatchResult r;
  match_images_batch_cuda(&a, &b, 1, o, gp, lp, ex, &r);
  return r;
}

}  // namespace gocor
