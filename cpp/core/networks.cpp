// The official networks (networks.h): weight loading and the forward passes of spec sections 2-3.
#include "networks.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <set>

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "dispatch.h"
#include "gemm.h"
#include "gocor.h"
#include "nn.h"

namespace gocor {
namespace {

using nn::Act;

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

bool is_counter(const std::string& name) {
  static const std::string suffix = "num_batches_tracked";
  return name.size() >= suffix.size() &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Hands out tensors by name and shape, in the order the network registers them. Without a map
// (describe mode) it only lists the names and shapes and returns nullptr.
class Loader {
 public:
  explicit Loader(const TensorMap* t) : t_(t) {}
  const float* take(const std::string& name, std::vector<int64_t> shape) {
    listed.emplace_back(name, shape);
    if (t_ == nullptr) return nullptr;
    auto it = t_->find(name);
    if (it == t_->end()) {
      if (is_counter(name)) return nullptr;
      throw Error(ErrorCode::InvalidArg, "network tensor " + name + " is missing (expected shape " +
                                             shape_str(shape) + ")");
    }
    used_.insert(name);
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    if (is_counter(name)) {
      if (it->second.size > 1)
        throw Error(ErrorCode::InvalidArg, "network tensor " + name + " is not a scalar");
      return nullptr;
    }
    const NamedTensor& t = it->second;
    if (t.shape != shape || int64_t(t.size) != n) {
      throw Error(ErrorCode::InvalidArg, "network tensor " + name + " has shape " +
                                             shape_str(t.shape) + ", expected " + shape_str(shape));
    }
    for (size_t i = 0; i < t.size; ++i)
      if (!std::isfinite(t.data[i]))
        throw Error(
            ErrorCode::InvalidArg,
            "network tensor " + name + " holds a non-finite value at element " + std::to_string(i));
    return t.data;
  }
  // After every take: a tensor nobody asked for is an error naming it.
  void finish() const {
    if (t_ == nullptr) return;
    for (const auto& kv : *t_)
      if (!used_.count(kv.first))
        throw Error(ErrorCode::InvalidArg,
                    "unexpected network tensor " + kv.first + " (not part of this model)");
  }
  TensorList listed;

 private:
  const TensorMap* t_;
  std::set<std::string> used_;
};

void copy_into(std::vector<float>& dst, const float* src, size_t n) {
  dst.assign(n, 0.f);
  if (src != nullptr) std::memcpy(dst.data(), src, n * sizeof(float));
}

// Heap bytes of the parameters a network keeps (retained_bytes).
size_t heap_bytes(const std::vector<float>& v) {
  return v.capacity() * sizeof(float);
}
size_t heap_bytes(const nn::Conv& c) {
  return heap_bytes(c.weight) + heap_bytes(c.bias) + heap_bytes(c.bn_scale) +
         heap_bytes(c.bn_shift);
}
size_t heap_bytes(const nn::Deconv& d) {
  return heap_bytes(d.weight_t) + heap_bytes(d.bias);
}
template <class T, size_t N>
size_t heap_bytes(const T (&a)[N]) {
  size_t n = 0;
  for (const T& x : a) n += heap_bytes(x);
  return n;
}

// Conv2d k x k stored as `wname`, `bname`; stride, padding = dilation (k = 3) or 0 (k = 1).
nn::Conv load_conv(Loader& L, const std::string& wname, const std::string& bname, int out, int in,
                   int stride, int dil, Act act) {
  nn::Conv c;
  c.out = out;
  c.in = in;
  c.k = 3;
  c.stride = stride;
  c.pad = dil;
  c.dil = dil;
  c.act = act;
  copy_into(c.weight, L.take(wname, {out, in, 3, 3}), size_t(out) * in * 9);
  copy_into(c.bias, L.take(bname, {out}), size_t(out));
  return c;
}

// A Sequential block `prefix`: Conv2d as prefix.0.*, BatchNorm2d as prefix.1.* when bn.
nn::Conv load_block(Loader& L, const std::string& prefix, int out, int in, int stride, int dil,
                    Act act, bool bn) {
  nn::Conv c = load_conv(L, prefix + ".0.weight", prefix + ".0.bias", out, in, stride, dil, act);
  if (bn) {
    const float* g = L.take(prefix + ".1.weight", {out});
    const float* b = L.take(prefix + ".1.bias", {out});
    const float* m = L.take(prefix + ".1.running_mean", {out});
    const float* v = L.take(prefix + ".1.running_var", {out});
    L.take(prefix + ".1.num_batches_tracked", {});
    if (g != nullptr) {
      nn::fold_batch_norm(c, g, b, m, v);
    } else {
      c.bn_scale.assign(out, 1.f);
      c.bn_shift.assign(out, 0.f);
    }
  }
  return c;
}

// A plain Conv2d 3x3 p1 stored directly as prefix.weight / prefix.bias.
nn::Conv load_plain(Loader& L, const std::string& prefix, int out, int in) {
  return load_conv(L, prefix + ".weight", prefix + ".bias", out, in, 1, 1, Act::None);
}

nn::Deconv load_deconv(Loader& L, const std::string& prefix, int in, int out) {
  nn::Deconv d;
  d.in = in;
  d.out = out;
  const float* w = L.take(prefix + ".weight", {in, out, 4, 4});
  if (w != nullptr) {
    nn::set_deconv_weight(d, w);
  } else {
    d.weight_t.assign(size_t(out) * 16 * in, 0.f);
  }
  copy_into(d.bias, L.take(prefix + ".bias", {out}), size_t(out));
  return d;
}

float take_scalar(Loader& L, const std::string& name, float fallback) {
  const float* p = L.take(name, {1});
  return p != nullptr ? p[0] : fallback;
}

void take_dist(Loader& L, const std::string& prefix, DistanceFns& d) {
  const float* a =
      L.take(prefix + "filter_optimizer.label_map_predictor.weight", {1, kNumDistBins, 1, 1});
  const float* b =
      L.take(prefix + "filter_optimizer.spatial_weight_predictor.weight", {1, kNumDistBins, 1, 1});
  const float* c =
      L.take(prefix + "filter_optimizer.target_mask_predictor.0.weight", {1, kNumDistBins, 1, 1});
  if (a != nullptr) std::memcpy(d.label, a, sizeof(d.label));
  if (b != nullptr) std::memcpy(d.weight, b, sizeof(d.weight));
  if (c != nullptr) std::memcpy(d.mask_logit, c, sizeof(d.mask_logit));
}

LocalGocorParams load_local_gocor(Loader& L, const std::string& prefix) {
  LocalGocorParams p = default_local_params();
  p.scaling = take_scalar(L, prefix + "filter_initializer.scaling", p.scaling);
  p.log_step_length =
      take_scalar(L, prefix + "filter_optimizer.log_step_length", p.log_step_length);
  p.filter_reg = take_scalar(L, prefix + "filter_optimizer.filter_reg", p.filter_reg);
  take_dist(L, prefix, p.dist);
  return p;
}

GlobalGocorParams load_global_gocor(Loader& L, const std::string& prefix, int C) {
  GlobalGocorParams p = default_global_params(C);
  copy_into(p.target_fg, L.take(prefix + "filter_initializer.target_fg", {C}), size_t(C));
  copy_into(p.target_bg, L.take(prefix + "filter_initializer.target_bg", {C}), size_t(C));
  p.log_step_length =
      take_scalar(L, prefix + "filter_optimizer.log_step_length", p.log_step_length);
  p.filter_reg = take_scalar(L, prefix + "filter_optimizer.filter_reg", p.filter_reg);
  const int I = p.reg_inter_dim, O = p.reg_output_dim;
  copy_into(p.reg_weight1, L.take(prefix + "filter_optimizer.reg_layer.weight1", {I, 1, 3, 3}),
            size_t(I) * 9);
  copy_into(p.reg_weight2, L.take(prefix + "filter_optimizer.reg_layer.weight2", {O, I, 3, 3}),
            size_t(O) * I * 9);
  take_dist(L, prefix, p.dist);
  return p;
}

// Frees the calling thread's convolution scratch when a forward ends (nn.h), also on a throw,
// and gives what the forward freed into glibc's arenas back to the system: each thread that runs
// a forward (libuv's pool: 4) would otherwise keep its own scratch and its arena's free blocks
// (glibc serves blocks up to 32 MiB from the arena once one that large was freed), and the
// resident set grow by ~40 MB with each new thread.
struct ScratchRelease {
  ScratchRelease() = default;
  ScratchRelease(const ScratchRelease&) = delete;
  ScratchRelease& operator=(const ScratchRelease&) = delete;
  ~ScratchRelease() {
    nn::release_thread_scratch();
    gocor_detail::gemm_release_thread_buffers();
    gocor_global_release_thread_buffers();
    gocor_local_release_thread_buffers();
#ifdef __GLIBC__
    malloc_trim(0);
#endif
  }
};

// A feature map of one image.
struct Map {
  int C = 0, H = 0, W = 0;
  std::vector<float> v;
  Map() = default;
  Map(int c, int h, int w) : C(c), H(h), W(w), v(size_t(c) * h * w, 0.f) {}
  float* data() { return v.data(); }
  const float* data() const { return v.data(); }
  size_t plane() const { return size_t(H) * W; }
};

Map conv(const nn::Conv& c, const float* in, int H, int W, const Exec& ex) {
  Map out(c.out, nn::conv_out_size(H, c.k, c.stride, c.pad, c.dil),
          nn::conv_out_size(W, c.k, c.stride, c.pad, c.dil));
  nn::conv2d(c, in, H, W, out.data(), ex);
  return out;
}
Map conv(const nn::Conv& c, const Map& in, const Exec& ex) {
  return conv(c, in.data(), in.H, in.W, ex);
}

Map deconv(const nn::Deconv& d, const float* in, int H, int W, const Exec& ex) {
  Map out(d.out, 2 * H, 2 * W);
  nn::conv_transpose2d(d, in, H, W, out.data(), ex);
  return out;
}

Map scaled(const Map& f, float sx, float sy) {
  Map r = f;
  const size_t P = f.plane();
  for (size_t i = 0; i < P; ++i) {
    r.v[i] *= sx;
    r.v[P + i] *= sy;
  }
  return r;
}

// The OpticalFlowEstimator dense block (spec 2.3 / 3.3): convs of 128, 128, 96, 64, 32 channels,
// each output prepended to its input, then the 2-channel prediction.
struct DenseDecoder {
  int od = 0;
  nn::Conv conv[5];
  nn::Conv predict;
  static constexpr int kOut[5] = {128, 128, 96, 64, 32};
  // Channel offset of conv j's output in the final x (x = [conv4 | conv3 | conv2 | conv1 | conv0 |
  // input]).
  static int offset(int j) {
    int o = 0;
    for (int i = j + 1; i < 5; ++i) o += kOut[i];
    return o;
  }
  void load(Loader& L, const std::string& conv_name, const std::string& predict_name, int in,
            bool bn) {
    od = in;
    int cum = 0;
    for (int j = 0; j < 5; ++j) {
      conv[j] =
          load_block(L, conv_name + std::to_string(j), kOut[j], in + cum, 1, 1, Act::Leaky, bn);
      cum += kOut[j];
    }
    predict = load_plain(L, predict_name, 2, in + 448);
  }
  size_t bytes() const { return heap_bytes(conv) + heap_bytes(predict); }
  // x: (od + 448, H, W) with the decoder input already at channel 448; fills the rest, returns
  // the flow (2, H, W).
  Map run(Map& x, const Exec& ex) const {
    const size_t P = x.plane();
    for (int j = 0; j < 5; ++j) {
      const int out_at = offset(j), in_at = out_at + kOut[j];
      nn::conv2d(conv[j], x.data() + in_at * P, x.H, x.W, x.data() + out_at * P, ex);
    }
    return gocor::conv(predict, x, ex);
  }
};
constexpr int DenseDecoder::kOut[5];

// The context / refinement network (spec 2.4 step 4, 3.3): dilations 1, 2, 4, 8, 16, 1, then a
// plain 32 -> 2 conv.
struct Context {
  nn::Conv conv[7];
  void load(Loader& L, const std::string& name, int in, bool bn) {
    const int outs[6] = {128, 128, 128, 96, 64, 32}, dils[6] = {1, 2, 4, 8, 16, 1};
    int c = in;
    for (int j = 0; j < 6; ++j) {
      conv[j] = load_block(L, name + std::to_string(j + 1), outs[j], c, 1, dils[j], Act::Leaky, bn);
      c = outs[j];
    }
    conv[6] = load_plain(L, name + "7", 2, 32);
  }
  size_t bytes() const { return heap_bytes(conv); }
  // x: the decoder's input, which the caller no longer needs: freed after the first layer.
  Map run(Map x, const Exec& ex) const {
    Map a = gocor::conv(conv[0], x, ex);
    x = Map();
    for (int j = 1; j < 7; ++j) a = gocor::conv(conv[j], a, ex);
    return a;
  }
};

// Writes src's channels into x starting at channel `at`.
void put(Map& x, int at, const Map& src) {
  std::memcpy(x.data() + size_t(at) * x.plane(), src.data(), src.v.size() * sizeof(float));
}

void add(Map& a, const Map& b) {
  for (size_t i = 0; i < a.v.size(); ++i) a.v[i] += b.v[i];
}

// Local correlation (plain or GOCor) of reference and warped query, then LeakyReLU(0.1): (81, H,
// W).
Map local_corr(const LocalGocorParams* gp, int num_iter, const Map& ref, const Map& query,
               const Exec& ex) {
  Map out(81, ref.H, ref.W);
  if (gp == nullptr) {
    corr_local(ref.data(), query.data(), out.data(), CorrLocalShape{1, ref.C, ref.H, ref.W, 4}, ex);
  } else {
    check_cancel(ex);
    nn::gocor_local_f64(*gp, num_iter, ref.data(), query.data(), out.data(), ref.C, ref.H, ref.W,
                        ex);
  }
  nn::leaky_relu(out.data(), int64_t(out.v.size()), ex);
  return out;
}

// A decoder's x (448 + od channels) with its input at channel 448: LeakyReLU(local correlation of
// ref and query warped by flow * (sx, sy)) (query unwarped without a flow), then `extra` in order.
Map decoder_input(const LocalGocorParams* gp, int num_iter, const Map& ref, const Map& query,
                  const Map* flow, float sx, float sy, bool mask, int od,
                  std::initializer_list<const Map*> extra, const Exec& ex) {
  Map corr;
  if (flow == nullptr) {
    corr = local_corr(gp, num_iter, ref, query, ex);
  } else {
    Map sf = scaled(*flow, sx, sy), warped(query.C, ref.H, ref.W);
    nn::warp(query.data(), sf.data(), query.C, ref.H, ref.W, mask, warped.data(), ex);
    corr = local_corr(gp, num_iter, ref, warped, ex);
  }
  Map x(448 + od, ref.H, ref.W);
  put(x, 448, corr);
  int at = 448 + corr.C;
  for (const Map* m : extra) {
    put(x, at, *m);
    at += m->C;
  }
  return x;
}

void append_estimate(std::vector<FlowEstimate>& list, size_t index, const Map& f, int b, int B) {
  if (list.size() <= index) list.resize(index + 1);
  FlowEstimate& e = list[index];
  if (e.data.empty()) {
    e.B = B;
    e.h = f.H;
    e.w = f.W;
    e.data.assign(size_t(B) * f.v.size(), 0.f);
  }
  std::memcpy(e.data.data() + size_t(b) * f.v.size(), f.data(), f.v.size() * sizeof(float));
}

// ---- PWC-Net ------------------------------------------------------------------------------------

class PwcNet : public Network {
 public:
  PwcNet(NetworkModel m, Loader& L, const NetworkOptions& o) : model_(m), opt_(o) {
    const int od[7] = {0, 0, 117, 149, 181, 213, 81};
    for (int l = 6; l >= 2; --l) {
      const std::string s = std::to_string(l);
      dec_[l].load(L, "conv" + s + "_", "predict_flow" + s, od[l], false);
      deconv_[l] = load_deconv(L, "deconv" + s, 2, 2);
      if (l >= 3) upfeat_[l] = load_deconv(L, "upfeat" + s, od[l] + 448, 2);
    }
    ctx_.load(L, "dc_conv", od[2] + 448, false);
    const char* names[18] = {"conv1a", "conv1aa", "conv1b", "conv2a",  "conv2aa", "conv2b",
                             "conv3a", "conv3aa", "conv3b", "conv4a",  "conv4aa", "conv4b",
                             "conv5a", "conv5aa", "conv5b", "conv6aa", "conv6a",  "conv6b"};
    const int chans[7] = {3, 16, 32, 64, 96, 128, 196};
    for (int i = 0; i < 18; ++i) {
      const int level = i / 3 + 1, first = i % 3 == 0;
      pyr_[i] = load_block(L, names[i], chans[level], first ? chans[level - 1] : chans[level],
                           first ? 2 : 1, 1, Act::Leaky, false);
    }
    if (m == NetworkModel::PWCNet_GOCor)
      for (int l = 6; l >= 2; --l)
        gocor_[l] = load_local_gocor(L, "local_corr_" + std::to_string(l) + ".");
  }
  NetworkModel model() const override { return model_; }

  NetworkOutput forward(const std::vector<const float*>& in, int B, int H, int W, int, int,
                        const Exec& ex) const override {
    const ScratchRelease scratch;
    NetworkOutput out;
    const size_t n = size_t(3) * H * W;
    for (int b = 0; b < B; ++b) {
      std::vector<Map> c1 = pyramid(in[0] + b * n, H, W, ex), c2 = pyramid(in[1] + b * n, H, W, ex);
      Map up_flow, up_feat, x;
      Map flow;
      for (int l = 6; l >= 2; --l) {
        check_cancel(ex);
        const Map& r = c1[l];
        const LocalGocorParams* gp = model_ == NetworkModel::PWCNet_GOCor ? &gocor_[l] : nullptr;
        const float f = 20.f / float(1 << l);  // the warp's factor from pixels / 20 (spec 2.4)
        x = l == 6 ? decoder_input(gp, opt_.num_iter_local, r, c2[l], nullptr, 1.f, 1.f, true,
                                   dec_[l].od, {}, ex)
                   : decoder_input(gp, opt_.num_iter_local, r, c2[l], &up_flow, f, f, true,
                                   dec_[l].od, {&r, &up_flow, &up_feat}, ex);
        // Each level's features are used by its decoder only: freed before the next level's
        // activations are made (as x below, kept at level 2 for the context network).
        c1[l] = Map();
        c2[l] = Map();
        flow = dec_[l].run(x, ex);
        if (l >= 3) {
          up_flow = deconv(deconv_[l], flow.data(), flow.H, flow.W, ex);
          up_feat = deconv(upfeat_[l], x.data(), x.H, x.W, ex);
          x = Map();
        }
        if (l == 2) add(flow, ctx_.run(std::move(x), ex));
        append_estimate(out.estimates, size_t(6 - l), flow, b, B);
      }
    }
    return out;
  }

  size_t retained_bytes() const override {
    size_t n =
        sizeof(*this) + heap_bytes(deconv_) + heap_bytes(upfeat_) + ctx_.bytes() + heap_bytes(pyr_);
    for (const DenseDecoder& d : dec_) n += d.bytes();
    return n;
  }

  size_t work_bytes(int H, int W) const override {
    // Two pyramids (about 16 ch at 1/2 plus smaller levels), the level-2 decoder's x (565 ch at
    // 1/4), the im2col tile (4 MiB) and the local GOCor's double features.
    const size_t P2 = size_t(H / 2) * (W / 2), P4 = size_t(H / 4) * (W / 4);
    // gocor_local_f64: both feature maps in double at the 1/4 level (32 channels).
    const size_t g = model_ == NetworkModel::PWCNet_GOCor ? 2 * sizeof(double) * 32 * P4 : 0;
    return sizeof(float) * (2 * 2 * 16 * P2 + 3 * 600 * P4) + (size_t(5) << 20) + g;
  }

 private:
  // c[2..6] of one image (3, H, W) (level 1 feeds level 2 only and is freed once it has).
  std::vector<Map> pyramid(const float* img, int H, int W, const Exec& ex) const {
    std::vector<Map> c(7);
    Map a = conv(pyr_[0], img, H, W, ex);
    for (int i = 1; i < 18; ++i) {
      // Conv i belongs to level i / 3 + 1; its first reads the previous level's output.
      Map next = conv(pyr_[i], i % 3 == 0 ? c[i / 3] : a, ex);
      if (i == 3) c[1] = Map();
      if (i % 3 == 2) {
        c[i / 3 + 1] = std::move(next);
        a = Map();
      } else {
        a = std::move(next);
      }
    }
    return c;
  }

  NetworkModel model_;
  NetworkOptions opt_;
  DenseDecoder dec_[7];
  nn::Deconv deconv_[7], upfeat_[7];
  Context ctx_;
  nn::Conv pyr_[18];
  LocalGocorParams gocor_[7];
};

// ---- GLU-Net ------------------------------------------------------------------------------------

class GluNet : public Network {
 public:
  GluNet(NetworkModel m, Loader& L, const NetworkOptions& o) : model_(m), opt_(o) {
    const int outs[5] = {128, 128, 96, 64, 32};
    int c = 258;
    for (int j = 0; j < 5; ++j) {
      map_[j] =
          load_block(L, "decoder4.conv" + std::to_string(j), outs[j], c, 1, 1, Act::Relu, true);
      c = outs[j];
    }
    map_[5] = load_plain(L, "decoder4.final", 2, 32);
    deconv4_ = load_deconv(L, "deconv4", 2, 2);
    dec3_.load(L, "decoder3.conv_", "decoder3.predict_flow", 83, true);
    dc_.load(L, "dc_conv", 531, true);
    dec2_.load(L, "decoder2.conv_", "decoder2.predict_flow", 83, true);
    upfeat2_ = load_deconv(L, "upfeat2", 531, 2);
    deconv2_ = load_deconv(L, "deconv2", 2, 2);
    dec1_.load(L, "decoder1.conv_", "decoder1.predict_flow", 85, true);
    ldc_.load(L, "l_dc_conv", 533, true);
    if (m == NetworkModel::GLUNet_GOCor) {
      global_ = load_global_gocor(L, "corr.corr_module.", 512);
      local_ = load_local_gocor(L, "local_corr.");
    }
    const int vgg[10][2] = {{3, 64},    {64, 64},   {64, 128},  {128, 128}, {128, 256},
                            {256, 256}, {256, 256}, {256, 512}, {512, 512}, {512, 512}};
    const char* names[10] = {"pyramid.level_0",   "pyramid.level_1",   "pyramid.level_2.0",
                             "pyramid.level_2.2", "pyramid.level_3.0", "pyramid.level_3.2",
                             "pyramid.level_3.4", "pyramid.level_4.0", "pyramid.level_4.2",
                             "pyramid.level_4.4"};
    for (int i = 0; i < 10; ++i) {
      const std::string nm = i < 2 ? std::string(names[i]) + ".0" : std::string(names[i]);
      vgg_[i] = load_conv(L, nm + ".weight", nm + ".bias", vgg[i][1], vgg[i][0], 1, 1, Act::Relu);
    }
  }
  NetworkModel model() const override { return model_; }

  NetworkOutput forward(const std::vector<const float*>& in, int B, int H, int W, int H256,
                        int W256, const Exec& ex) const override {
    const ScratchRelease scratch;
    NetworkOutput out;
    const size_t n = size_t(3) * H * W, n256 = size_t(3) * H256 * W256;
    const LocalGocorParams* lp = model_ == NetworkModel::GLUNet_GOCor ? &local_ : nullptr;
    for (int b = 0; b < B; ++b) {
      std::vector<Map> t = vgg(in[0] + b * n, H, W, 3, ex), s = vgg(in[1] + b * n, H, W, 3, ex);
      std::vector<Map> t256 = vgg(in[2] + b * n256, H256, W256, 4, ex),
                       s256 = vgg(in[3] + b * n256, H256, W256, 4, ex);
      const Map &c11 = t[2], &c12 = t[3], &c21 = s[2], &c22 = s[3];
      const Map &c13 = t256[3], &c14 = t256[4], &c23 = s256[3], &c24 = s256[4];
      check_cancel(ex);

      // Level 4: global correlation on L2-normalised features, mapping decoder.
      Map f = c14, g = c24;
      nn::l2norm_channels(f.data(), f.C, f.H, f.W, ex);
      nn::l2norm_channels(g.data(), g.C, g.H, g.W, ex);
      const int h4 = f.H, w4 = f.W, N4 = h4 * w4;
      Map x4(N4 + 2, h4, w4);
      if (model_ == NetworkModel::GLUNet) {
        corr_global(f.data(), g.data(), x4.data(), CorrGlobalShape{1, f.C, h4, w4, g.H, g.W}, ex);
        nn::mutual_matching(x4.data(), N4, ex);
        for (int64_t i = 0; i < int64_t(N4) * N4; ++i) x4.v[i] = std::max(x4.v[i], 0.f);
        nn::l2norm_channels(x4.data(), N4, h4, w4, ex);
      } else {
        GlobalGocorOptions o;
        o.num_iter = opt_.num_iter_global;
        o.apply_query_loss = true;
        gocor_global(global_, o, f.data(), g.data(), x4.data(), nullptr,
                     GocorGlobalShape{1, f.C, h4, w4}, ex, nullptr);
        nn::leaky_relu(x4.data(), int64_t(N4) * N4, ex);
      }
      Map a = conv(map_[0], x4, ex);
      for (int j = 1; j < 6; ++j) a = conv(map_[j], a, ex);
      Map flow4(2, h4, w4);
      {
        const float dx = 16.f / float(W256), dy = 16.f / float(H256);
        for (int y = 0; y < h4; ++y)
          for (int x = 0; x < w4; ++x) {
            const size_t p = size_t(y) * w4 + x;
            const float X = ((a.v[p] + 1.f) * float(w4 - 1)) / 2.f;
            const float Y = ((a.v[size_t(N4) + p] + 1.f) * float(h4 - 1)) / 2.f;
            flow4.v[p] = (X - float(x)) / dx;
            flow4.v[size_t(N4) + p] = (Y - float(y)) / dy;
          }
      }
      Map up4 = deconv(deconv4_, flow4.data(), h4, w4, ex);
      check_cancel(ex);

      // Level 3 (32 x 32 of the 256 images).
      Map flow3;
      {
        Map x = decoder_input(lp, opt_.num_iter_local, c13, c23, &up4, 32.f / float(W256),
                              32.f / float(H256), false, 83, {&up4}, ex);
        Map res = dec3_.run(x, ex);
        add(res, dc_.run(std::move(x), ex));
        add(res, up4);
        flow3 = std::move(res);
      }
      flow3 = scaled(flow3, float(W) / 256.f, float(H) / 256.f);

      // Extra iterative levels (decoder2's weights, area-resized 1/8 features).
      const int NL = glu_extra_levels(W);
      for (int k = 0; k < NL; ++k) {
        check_cancel(ex);
        const double r = 1.0 / (8.0 * double(1 << (NL - k)));
        const int hs = int(std::floor(H * r)), ws = int(std::floor(W * r));
        Map upf(2, hs, ws), c2b(c22.C, hs, ws), c1b(c12.C, hs, ws);
        nn::resize_bilinear(flow3.data(), 2, flow3.H, flow3.W, upf.data(), hs, ws, ex);
        nn::resize_area(c22.data(), c22.C, c22.H, c22.W, c2b.data(), hs, ws, ex);
        nn::resize_area(c12.data(), c12.C, c12.H, c12.W, c1b.data(), hs, ws, ex);
        Map x = decoder_input(lp, opt_.num_iter_local, c1b, c2b, &upf, float(r), float(r), false,
                              83, {&upf}, ex);
        Map res = dec2_.run(x, ex);
        add(res, upf);
        flow3 = std::move(res);
      }
      append_estimate(out.estimates256, 0, flow4, b, B);
      append_estimate(out.estimates256, 1, flow3, b, B);

      // Level 2 (1/8 of the original).
      check_cancel(ex);
      Map up3(2, H / 8, W / 8);
      nn::resize_bilinear(flow3.data(), 2, flow3.H, flow3.W, up3.data(), up3.H, up3.W, ex);
      Map x2 = decoder_input(lp, opt_.num_iter_local, c12, c22, &up3, 1.f / 8.f, 1.f / 8.f, false,
                             83, {&up3}, ex);
      Map flow2 = dec2_.run(x2, ex);
      add(flow2, up3);
      Map up2 = deconv(deconv2_, flow2.data(), flow2.H, flow2.W, ex);
      Map upfeat2 = deconv(upfeat2_, x2.data(), x2.H, x2.W, ex);
      x2 = Map();
      append_estimate(out.estimates, 0, flow2, b, B);

      // Level 1 (1/4 of the original).
      check_cancel(ex);
      {
        Map x = decoder_input(lp, opt_.num_iter_local, c11, c21, &up2, 1.f / 4.f, 1.f / 4.f, false,
                              85, {&up2, &upfeat2}, ex);
        Map res = dec1_.run(x, ex);
        add(res, ldc_.run(std::move(x), ex));
        add(res, up2);
        append_estimate(out.estimates, 1, res, b, B);
      }
    }
    return out;
  }

  size_t retained_bytes() const override {
    return sizeof(*this) + heap_bytes(map_) + heap_bytes(deconv4_) + heap_bytes(upfeat2_) +
           heap_bytes(deconv2_) + dec3_.bytes() + dec2_.bytes() + dec1_.bytes() + dc_.bytes() +
           ldc_.bytes() + heap_bytes(global_.target_fg) + heap_bytes(global_.target_bg) +
           heap_bytes(global_.reg_weight1) + heap_bytes(global_.reg_weight2) + heap_bytes(vgg_);
  }

  size_t work_bytes(int H, int W) const override {
    // VGG at full resolution: two 64-channel maps plus the im2col tile; the 1/4 decoder x (533
    // ch); both images' retained features; the global GOCor working set at 16 x 16.
    const size_t P = size_t(H) * W;
    size_t g = 0;
    if (model_ == NetworkModel::GLUNet_GOCor) {
      GlobalGocorOptions o;
      o.num_iter = opt_.num_iter_global;
      g = gocor_global_work_bytes(GocorGlobalShape{1, 512, 16, 16}, o);
      g += 2 * sizeof(double) * 128 * P / 16;  // gocor_local_f64 at the 1/4 level
    }
    return sizeof(float) * (3 * 64 * P + 2 * 533 * P / 16 + 4 * 256 * P / 16) + (size_t(5) << 20) +
           g;
  }

 private:
  // VGG-16 levels 0 .. last of one image (3, H, W): c[k] = the output of level k.
  std::vector<Map> vgg(const float* img, int H, int W, int last, const Exec& ex) const {
    static const int first_conv[5] = {0, 1, 2, 4, 7}, nconv[5] = {1, 1, 2, 3, 3};
    std::vector<Map> c(last + 1);
    Map a;
    const Map* src = nullptr;  // the next convolution's input (null: the image)
    for (int k = 0; k <= last; ++k) {
      for (int j = 0; j < nconv[k]; ++j) {
        const nn::Conv& cv = vgg_[first_conv[k] + j];
        Map next = src == nullptr ? conv(cv, img, H, W, ex) : conv(cv, *src, ex);
        a = std::move(next);
        src = &a;
      }
      if (k > 0) {
        Map p(a.C, a.H / 2, a.W / 2);
        nn::maxpool2(a.data(), a.C, a.H, a.W, p.data(), ex);
        a = std::move(p);
      }
      if (k >= 2) {
        // Kept without a copy; the next level reads it from there.
        c[k] = std::move(a);
        a = Map();
        src = &c[k];
      }
      check_cancel(ex);
    }
    return c;
  }

  NetworkModel model_;
  NetworkOptions opt_;
  nn::Conv map_[6];
  nn::Deconv deconv4_, upfeat2_, deconv2_;
  DenseDecoder dec3_, dec2_, dec1_;
  Context dc_, ldc_;
  GlobalGocorParams global_;
  LocalGocorParams local_;
  nn::Conv vgg_[10];
};

std::unique_ptr<Network> build(NetworkModel m, Loader& L, const NetworkOptions& o) {
  if (is_glu(m)) return std::make_unique<GluNet>(m, L, o);
  return std::make_unique<PwcNet>(m, L, o);
}

// (C, h, w) in [0, 1] -> (3, H, W) of 8-bit values (as floats), placed at the bottom right (the
// official zero padding at the top and left).
std::vector<float> to_u8_rgb(const float* img, int C, int h, int w, int H, int W) {
  std::vector<float> out(size_t(3) * H * W, 0.f);
  const int oy = H - h, ox = W - w;
  for (int c = 0; c < 3; ++c) {
    const float* src = img + int64_t(C >= 3 ? c : 0) * h * w;
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        const float v = std::min(1.f, std::max(0.f, src[int64_t(y) * w + x]));
        out[(int64_t(c) * H + y + oy) * W + x + ox] = std::nearbyint(v * 255.f);
      }
  }
  return out;
}

// PWC-Net's pre-processing of one (3, H, W) 8-bit image to (3, Hn, Wn): resize, 8-bit, BGR / 255.
std::vector<float> pwc_input(const std::vector<float>& u8, int H, int W, int Hn, int Wn,
                             const Exec& ex) {
  std::vector<float> r(size_t(3) * Hn * Wn);
  if (Hn == H && Wn == W) {
    r = u8;
  } else {
    nn::resize_bilinear(u8.data(), 3, H, W, r.data(), Hn, Wn, ex);
    for (float& v : r) v = std::min(255.f, std::max(0.f, std::nearbyint(v)));
  }
  std::vector<float> out(r.size());
  const size_t P = size_t(Hn) * Wn;
  for (int c = 0; c < 3; ++c)
    for (size_t i = 0; i < P; ++i) out[c * P + i] = r[(2 - c) * P + i] / 255.f;
  return out;
}

// GLU-Net's pre-processing of one (3, H, W) 8-bit image to (3, Hn, Wn): area resize, truncation
// to 8 bits, / 255, ImageNet normalisation (RGB).
std::vector<float> glu_input(const std::vector<float>& u8, int H, int W, int Hn, int Wn,
                             const Exec& ex) {
  static const float mean[3] = {0.485f, 0.456f, 0.406f}, stdev[3] = {0.229f, 0.224f, 0.225f};
  std::vector<float> r(size_t(3) * Hn * Wn);
  nn::resize_area(u8.data(), 3, H, W, r.data(), Hn, Wn, ex);
  const size_t P = size_t(Hn) * Wn;
  for (int c = 0; c < 3; ++c)
    for (size_t i = 0; i < P; ++i)
      r[c * P + i] = (std::floor(r[c * P + i]) / 255.f - mean[c]) / stdev[c];
  return r;
}

// flow (2, h, w) -> (2, Ho, Wo): bilinear (align_corners False), channels scaled by sx, sy.
std::vector<float> resize_flow(const std::vector<float>& f, int h, int w, int Ho, int Wo, float sx,
                               float sy, const Exec& ex) {
  std::vector<float> out(size_t(2) * Ho * Wo);
  nn::resize_bilinear(f.data(), 2, h, w, out.data(), Ho, Wo, ex);
  const size_t P = size_t(Ho) * Wo;
  for (size_t i = 0; i < P; ++i) {
    out[i] *= sx;
    out[P + i] *= sy;
  }
  return out;
}

}  // namespace

std::vector<float> network_match(const Network& net, const float* a, int C, int Ha, int Wa,
                                 const float* b, int Hb, int Wb, int Ho, int Wo, const Exec& ex) {
  const int H = std::max(Ha, Hb), W = std::max(Wa, Wb);
  const std::vector<float> ua = to_u8_rgb(a, C, Ha, Wa, H, W), ub = to_u8_rgb(b, C, Hb, Wb, H, W);
  int Hn, Wn;
  NetworkOutput out;
  float unit = 1.f;
  if (is_glu(net.model())) {
    Hn = H < 256 ? 256 : H / 8 * 8;
    Wn = W < 256 ? 256 : W / 8 * 8;
    const std::vector<float> t = glu_input(ua, H, W, Hn, Wn, ex),
                             s = glu_input(ub, H, W, Hn, Wn, ex),
                             t256 = glu_input(ua, H, W, 256, 256, ex),
                             s256 = glu_input(ub, H, W, 256, 256, ex);
    out = net.forward({t.data(), s.data(), t256.data(), s256.data()}, 1, Hn, Wn, 256, 256, ex);
  } else {
    Hn = (H + 63) / 64 * 64;
    Wn = (W + 63) / 64 * 64;
    const std::vector<float> t = pwc_input(ua, H, W, Hn, Wn, ex),
                             s = pwc_input(ub, H, W, Hn, Wn, ex);
    out = net.forward({t.data(), s.data()}, 1, Hn, Wn, 0, 0, ex);
    unit = 20.f;  // PWC-Net's flows are in pixels / 20
  }
  FlowEstimate& e = out.estimates.back();
  for (float& v : e.data) v *= unit;
  const float rx = float(W) / float(Wn), ry = float(H) / float(Hn);
  if (Ha == H && Hb == H && Wa == W && Wb == W)
    return resize_flow(e.data, e.h, e.w, Ho, Wo, rx * float(Wo) / float(W),
                       ry * float(Ho) / float(H), ex);
  // Different sizes: the flow on the padded grid, a's part of it, the two paddings' offset.
  std::vector<float> full = resize_flow(e.data, e.h, e.w, H, W, rx, ry, ex);
  std::vector<float> crop(size_t(2) * Ha * Wa);
  const int oy = H - Ha, ox = W - Wa;
  const float shift[2] = {float(ox - (W - Wb)), float(oy - (H - Hb))};
  for (int c = 0; c < 2; ++c)
    for (int y = 0; y < Ha; ++y)
      for (int x = 0; x < Wa; ++x)
        crop[(size_t(c) * Ha + y) * Wa + x] =
            full[(size_t(c) * H + y + oy) * W + x + ox] + shift[c];
  if (Ho == Ha && Wo == Wa) return crop;
  return resize_flow(crop, Ha, Wa, Ho, Wo, float(Wo) / float(Wa), float(Ho) / float(Ha), ex);
}

bool parse_network_model(const std::string& name, NetworkModel* out) {
  static const std::pair<const char*, NetworkModel> table[] = {
      {"PWCNet", NetworkModel::PWCNet},
      {"PWCNet_GOCor", NetworkModel::PWCNet_GOCor},
      {"GLUNet", NetworkModel::GLUNet},
      {"GLUNet_GOCor", NetworkModel::GLUNet_GOCor}};
  for (const auto& e : table)
    if (name == e.first) {
      *out = e.second;
      return true;
    }
  return false;
}

int glu_extra_levels(int W) {
  const double R = double(W) / 8.0 / 32.0;
  const double v = std::nearbyint(std::log(R / 3.0) / std::log(2.0));
  return std::max(0, int(v));
}

TensorList network_tensors(NetworkModel m) {
  Loader L(nullptr);
  build(m, L, NetworkOptions{});
  return L.listed;
}

std::unique_ptr<Network> Network::create(NetworkModel m, const TensorMap& tensors,
                                         const NetworkOptions& o) {
  std::unique_ptr<Network> net;
  {
    Loader L(&tensors);
    net = build(m, L, o);
    L.finish();
  }
#ifdef __GLIBC__
  // The load's temporaries (names, lists, the layers' vectors as they were built: blocks under
  // glibc's mmap threshold) go back to the system instead of staying in the arenas.
  malloc_trim(0);
#endif
  return net;
}

}  // namespace gocor
