#include "match.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <functional>
#include <optional>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <string>

#include "blocks.h"
#include "dispatch.h"
#include "flow.h"
#include "gocor.h"
#include "parallel.h"

namespace gocor {

// Fitted by `npm run fit -- --stage global` (bench/fit-params.js: 30 pairs per displacement level
// from pairs/basketball1-2 and pairs/rubberwhale1-2, 3 sweeps, K = 3, query term on, the global
// level with match's constant channel): global cells matched within one cell 91.95 % with the
// spec 4.7 initial values -> 93.04 % (plain correlation 91.96 %). Compared with the initial values:
// more weight on the matching cell and on cells 1-4 cells away, a label that stays high one cell
// away (neighbouring descriptors overlap in context), and negative scores penalised further out.
GlobalGocorParams match_global_params(int C, uint64_t seed, bool fitted) {
  GlobalGocorParams p = default_global_params(C, seed);
  if (!fitted) return p;
  static constexpr DistanceFns kFitted = {
      {1.19996f, 0.882457f, 0.906491f, 0.324612f, 0.0352952f, 0.243897f, 0.0110689f, 0.00214743f,
       0.000295397f, 0.0f},
      {3.36359f, 1.0f, 1.68179f, 1.68179f, 2.0f, 2.0f, 2.82843f, 2.0f, 1.0f, 1.0f},
      {3.85611f, 3.62059f, 3.04638f, 1.84847f, 2.0f, 1.15153f, -0.0463767f, -3.62059f, -3.85611f,
       -5.94646f}};
  p.dist = kFitted;  // filter_reg and log_step_length keep their initial values (the fit kept them)
  return p;
}

namespace {

FlowGrid grid_of(const FeatureLevel& lv) {
  return {lv.H, lv.W, lv.stride_x, lv.stride_y};
}

void check_pyramids(const FeaturePyramid& a, const FeaturePyramid& b) {
  if (a.levels.empty() || a.levels.size() != b.levels.size()) {
    throw Error(ErrorCode::Shape,
                "match: the feature pyramids of a and b need the same, non-zero number of levels");
  }
  if (a.image_h <= 0 || a.image_w <= 0 || b.image_h <= 0 || b.image_w <= 0) {
    throw Error(ErrorCode::Shape, "match: image sizes must be positive");
  }
  for (size_t l = 0; l < a.levels.size(); ++l) {
    const FeatureLevel &la = a.levels[l], &lb = b.levels[l];
    std::string at = "match: level " + std::to_string(l);
    if (la.global != lb.global || (la.global && l != 0)) {
      throw Error(ErrorCode::Shape, at + ": only the first level may be global, in both pyramids");
    }
    if (la.C != lb.C || la.C <= 0) throw Error(ErrorCode::Shape, at + ": channel counts differ");
    if (la.global && (la.H != lb.H || la.W != lb.W)) {
      throw Error(ErrorCode::Shape, at + ": global grids of a and b differ");
    }
    if (la.data.size() != size_t(la.C) * la.H * la.W ||
        lb.data.size() != size_t(lb.C) * lb.H * lb.W) {
      throw Error(ErrorCode::Shape, at + ": data length does not match C*H*W");
    }
  }
}

// The global level with one more channel, constant `bias`, every cell scaled by 1/sqrt(1 + bias^2)
// (unit norm again for unit-norm input). For plain correlation this adds the same bias^2/(1+bias^2)
// to every score and scales them all alike, so nothing that reads the volume changes. For global
// GOCor it gives the initialiser (spec 4.2: w . mu = 0, mu = the mean reference feature) a
// direction to project out that carries no information: the descriptor is zero-mean per image,
// so mu is then almost the constant channel, while without it mu is a small vector along the
// descriptor's strongest direction of variation, and projecting that out of every filter cost
// GOCor about 9 points of global cells matched (bench/README.md). It also lets the filters shift
// all scores by one amount (a bias), which the leaky objective uses to push far cells below 0.
std::vector<float> with_bias_channel(const float* f, int C, size_t N, float bias) {
  std::vector<float> out((size_t(C) + 1) * N);
  const float s = 1.f / std::sqrt(1.f + bias * bias);
  for (size_t i = 0; i < size_t(C) * N; ++i) out[i] = f[i] * s;
  std::fill(out.begin() + size_t(C) * N, out.end(), bias * s);
  return out;
}

// Mutual-consistency check and outlier fill of the global flow (same for GOCor and correlation).
// volume (Nb, Ga.H, Ga.W) as read by flow_from_global_volume, flow (2, Ga.H, Ga.W) in pixels,
// updated in place. A cell r is kept when the best reference cell of its best query cell t lies
// within one cell of r (cyclic consistency); every other cell gets the median of the kept cells
// in the smallest square window that holds at least 3 of them. Wrong global matches are coherent
// blocks on repetitive textures, and the local levels (radius 4) cannot undo a jump of a whole
// global cell, so they must be replaced here rather than by the 3x3 median between levels.
void global_consistency_fill(const float* volume, const FlowGrid& ga, const FlowGrid& gb,
                             float* flow) {
  const int64_t Na = int64_t(ga.H) * ga.W, Nb = int64_t(gb.H) * gb.W;
  std::vector<int64_t> fwd(Na, 0), back(Nb, 0);
  for (int64_t r = 0; r < Na; ++r) {
    float bv = volume[r];
    for (int64_t t = 1; t < Nb; ++t)
      if (volume[t * Na + r] > bv) bv = volume[t * Na + r], fwd[r] = t;
  }
  for (int64_t t = 0; t < Nb; ++t) {
    const float* row = volume + t * Na;
    back[t] = std::max_element(row, row + Na) - row;
  }
  std::vector<char> keep(Na);
  int64_t kept = 0;
  for (int64_t r = 0; r < Na; ++r) {
    int64_t rb = back[fwd[r]];
    keep[r] = std::abs(rb / ga.W - r / ga.W) <= 1 && std::abs(rb % ga.W - r % ga.W) <= 1;
    kept += keep[r];
  }
  if (kept < 3 || kept == Na) return;
  std::vector<float> src(flow, flow + 2 * Na), u, v;
  for (int64_t r = 0; r < Na; ++r) {
    if (keep[r]) continue;
    const int ry = int(r / ga.W), rx = int(r % ga.W);
    for (int k = 1; k < std::max(ga.H, ga.W); ++k) {
      u.clear();
      v.clear();
      for (int y = std::max(ry - k, 0); y <= std::min(ry + k, ga.H - 1); ++y) {
        for (int x = std::max(rx - k, 0); x <= std::min(rx + k, ga.W - 1); ++x) {
          int64_t s = int64_t(y) * ga.W + x;
          if (keep[s]) u.push_back(src[s]), v.push_back(src[Na + s]);
        }
      }
      if (u.size() >= 3) break;
    }
    std::nth_element(u.begin(), u.begin() + u.size() / 2, u.end());
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    flow[r] = u[u.size() / 2];
    flow[Na + r] = v[v.size() / 2];
  }
}

// The coarse-to-fine flow of a onto b on the finest level's grid (or the global grid when there
// is no local level), and that level's peak ratio (when `confidence` is non-null). `lean`: global
// GOCor's per-thread buffers are freed as soon as the global level is done (they would sit
// through the local levels' peak; kept, a next call on this thread reuses them).
struct GridFlow {
  FlowGrid grid{0, 0, 1, 1};
  std::vector<float> flow;        // (2, grid.H, grid.W) in pixels
  std::vector<float> confidence;  // (grid.H, grid.W), empty unless asked for
};

GridFlow match_coarse(const FeaturePyramid& a, const FeaturePyramid& b, const MatchOptions& o,
                      const Exec& ex, bool want_confidence, bool lean = false) {
  GridFlow out;
  std::vector<float>& flow = out.flow;
  FlowGrid& g_prev = out.grid;
  size_t first_local = 0;
  const FeatureLevel& l0 = a.levels[0];
  if (l0.global) {
    const FeatureLevel& m0 = b.levels[0];
    const size_t N = size_t(l0.H) * l0.W;
    WorkVector<float> volume(N * N);
    const std::vector<float> fa = with_bias_channel(l0.data.data(), l0.C, N, kMatchGlobalBias),
                             fb = with_bias_channel(m0.data.data(), m0.C, N, kMatchGlobalBias);
    const int C = l0.C + 1;
    if (o.method == MatchMethod::Gocor) {
      GlobalGocorParams p = match_global_params(C, o.seed, o.fitted_params);
      GlobalGocorOptions go;
      go.num_iter = o.num_iter_global;
      go.apply_query_loss = o.apply_query_loss;
      gocor_global(p, go, fa.data(), fb.data(), volume.data(), nullptr,
                   GocorGlobalShape{1, C, l0.H, l0.W}, ex, nullptr);
      if (lean) gocor_global_release_thread_buffers();
    } else {
      corr_global(fa.data(), fb.data(), volume.data(),
                  CorrGlobalShape{1, C, l0.H, l0.W, m0.H, m0.W}, ex);
    }
    flow.resize(2 * N);
    g_prev = grid_of(l0);
    flow_from_global_volume(volume.data(), g_prev, grid_of(m0), flow.data(), nullptr, ex);
    global_consistency_fill(volume.data(), g_prev, grid_of(m0), flow.data());
    first_local = 1;
  }
  check_cancel(ex);
  const int R = o.search_radius;
  const int D = (2 * R + 1) * (2 * R + 1);
  for (size_t l = first_local; l < a.levels.size(); ++l) {
    const FeatureLevel &la = a.levels[l], &lb = b.levels[l];
    const FlowGrid ga = grid_of(la), gb = grid_of(lb);
    const size_t N = size_t(la.H) * la.W;
    std::vector<float> cur(2 * N, 0.f);
    if (!flow.empty()) {
      if (o.median) flow_median3(flow.data(), g_prev.H, g_prev.W, ex);
      flow_resample(flow.data(), g_prev, cur.data(), ga, ex);
    }
    std::vector<float> warped(size_t(la.C) * N);
    flow_warp(lb.data.data(), lb.C, gb, cur.data(), ga, warped.data(), ex);
    std::vector<float> volume(D * N);
    if (o.method == MatchMethod::Gocor) {
      LocalGocorParams p = default_local_params();
      LocalGocorOptions lo;
      lo.num_iter = o.num_iter_local;
      lo.search_radius = R;
      gocor_local(p, lo, la.data.data(), warped.data(), volume.data(), nullptr, 1, la.C, la.H, la.W,
                  ex, nullptr);
    } else {
      corr_local(la.data.data(), warped.data(), volume.data(),
                 CorrLocalShape{1, la.C, la.H, la.W, R}, ex);
    }
    flow_volume_aggregate(volume.data(), D, la.H, la.W, o.aggregate_radius, ex);
    std::vector<float> residual(2 * N);
    out.confidence.assign(want_confidence ? N : 0, 0.f);
    flow_from_local_volume(volume.data(), R, la.H, la.W, residual.data(),
                           want_confidence ? out.confidence.data() : nullptr, ex);
    for (size_t i = 0; i < N; ++i) {
      cur[i] += float(residual[i] * ga.sx);
      cur[N + i] += float(residual[N + i] * ga.sy);
    }
    if (l + 1 == a.levels.size() && o.refine_iter > 0) {
      flow_refine_symmetric(la.data.data(), ga, lb.data.data(), gb, la.C, cur.data(), o.refine_iter,
                            ex);
    }
    flow.swap(cur);
    g_prev = ga;
    check_cancel(ex);
  }
  return out;
}

// (C, gi) planes -> (C, go) planes, bilinear (flow_resample works on pairs of planes). A pair is
// resampled straight from src into out; only an odd last plane goes through two-plane
// temporaries (copying every pair in and out was serial work between the parallel rows).
std::vector<float> resample_planes(const std::vector<float>& src, int C, const FlowGrid& gi,
                                   const FlowGrid& go, const Exec& ex) {
  const size_t Ni = size_t(gi.H) * gi.W, No = size_t(go.H) * go.W;
  std::vector<float> out(C * No);
  int c = 0;
  for (; c + 2 <= C; c += 2) flow_resample(src.data() + c * Ni, gi, out.data() + c * No, go, ex);
  if (c < C) {
    std::vector<float> two_in(2 * Ni, 0.f), two_out(2 * No);
    std::copy(src.begin() + c * Ni, src.begin() + (c + 1) * Ni, two_in.begin());
    flow_resample(two_in.data(), gi, two_out.data(), go, ex);
    std::copy(two_out.begin(), two_out.begin() + No, out.begin() + c * No);
  }
  return out;
}

// The consistency check of fill_inconsistent: valid (H, W) = flow (2, H, W) agrees with the
// reverse flow other (2, Hb, Wb) within tol; `error` gets the consistency error when non-null.
std::vector<uint8_t> consistent(const std::vector<float>& flow, int H, int W,
                                const std::vector<float>& other, int Hb, int Wb, float tol,
                                const MatchOptions& o, const Exec& ex,
                                std::vector<float>* error = nullptr) {
  std::vector<uint8_t> valid(size_t(H) * W);
  if (error) error->resize(valid.size());
  flow_consistency(flow.data(), H, W, other.data(), Hb, Wb, tol, o.rel_tol, valid.data(),
                   error ? error->data() : nullptr, ex);
  return valid;
}

// The edge-aware fill of fill_inconsistent: flow (2, H, W) on image img's grid is replaced by the
// interpolation of its pixels that are valid (consistent) and textured, where it is not (unchanged
// when fewer than 1 % are: nothing reliable to spread). valid becomes valid & textured.
void fill_invalid(const ImageView& img, std::vector<float>& flow, std::vector<uint8_t>& valid,
                  const std::vector<uint8_t>& textured, const MatchOptions& o, const Exec& ex) {
  const int H = img.H, W = img.W;
  const size_t P = size_t(H) * W;
  size_t kept = 0;
  for (size_t i = 0; i < P; ++i) kept += valid[i] &= textured[i];
  if (kept * 100 >= P) {
    const int C = img.C >= 3 ? 3 : 1;
    InterpOptions io = o.interp;
    // Consistent pixels keep their own flow (the fit would only smooth them): only the invalid
    // pixels' seeds are fitted, and the flow is filled in place (no second copy at the peak).
    io.keep_valid = true;
    flow_interpolate(img.data, C, H, W, flow.data(), valid.data(), flow.data(), io, ex);
  }
}

// A consistency check and an edge-aware fill of one flow from the other direction's flow.
// flow (2, H, W) on image img's grid, other (2, Hb, Wb) the reverse flow; replaced by the
// interpolation of its consistent pixels (unchanged when fewer than 1 % are consistent: nothing
// reliable to spread). `valid_out` gets the consistency mask, `error` the consistency error, when
// non-null.
void fill_inconsistent(const ImageView& img, std::vector<float>& flow, const ImageView& other_img,
                       const std::vector<float>& other, float tol,
                       const std::vector<uint8_t>& textured, const MatchOptions& o, const Exec& ex,
                       std::vector<uint8_t>* valid_out = nullptr,
                       std::vector<float>* error = nullptr) {
  std::vector<uint8_t> valid =
      consistent(flow, img.H, img.W, other, other_img.H, other_img.W, tol, o, ex, error);
  if (valid_out) *valid_out = valid;
  fill_invalid(img, flow, valid, textured, o, ex);
}

void check_options(const MatchOptions& o) {
  if (o.search_radius < 1 || o.num_iter_global < 0 || o.num_iter_local < 0 || o.out_h < 0 ||
      o.out_w < 0 || o.aggregate_radius < 0 || !(o.coarse_tol >= 0) || !(o.fine_tol >= 0) ||
      !(o.rel_tol >= 0)) {
    throw Error(ErrorCode::InvalidArg, "match: invalid options");
  }
}

// The flow (2, H, W) and confidence (H, W) at the output size of the options.
MatchResult to_output(std::vector<float>&& flow, std::vector<float>&& conf,
                      std::vector<uint8_t>&& occlusion, int H, int W, const MatchOptions& o,
                      const Exec& ex) {
  MatchResult r;
  r.H = o.out_h > 0 ? o.out_h : H;
  r.W = o.out_w > 0 ? o.out_w : W;
  if (r.H == H && r.W == W) {
    r.flow = std::move(flow);
    r.confidence = std::move(conf);
    r.occlusion = std::move(occlusion);
    return r;
  }
  const FlowGrid full{H, W, 1, 1}, outg{r.H, r.W, double(W) / r.W, double(H) / r.H};
  r.flow.resize(2 * size_t(r.H) * r.W);
  flow_resize(flow.data(), H, W, r.flow.data(), r.H, r.W, ex);
  if (!conf.empty()) r.confidence = resample_planes(conf, 1, full, outg, ex);
  if (!occlusion.empty()) {
    const std::vector<float> occ(occlusion.begin(), occlusion.end());
    const std::vector<float> o2 = resample_planes(occ, 1, full, outg, ex);
    r.occlusion.resize(o2.size());
    for (size_t i = 0; i < o2.size(); ++i) r.occlusion[i] = o2[i] >= 0.5f;
  }
  return r;
}

// Adds the time since the last lap to the stage's entry of `timings` (first use appends it).
// `trim`: what the stage freed into glibc's arenas (small blocks, fragments) goes back to the
// system before the next stage's peak: with two threads, ~20 MB on a 1282x1110 pair. Below a
// 1-Mpixel pair (kMatchRetainPixels) the freed blocks stay for the next stage to reuse: trimming
// them made every stage fault its memory in again (a 512x512 pair: ~9500 page faults per match, a
// few % of its CPU time) for a resident set that is small anyway.
class StageClock {
 public:
  StageClock(std::vector<std::pair<const char*, double>>& t, bool trim)
      : t_(t), last_(now()), trim_(trim) {}
  void lap(const char* stage) {
#ifdef __GLIBC__
    if (trim_) malloc_trim(0);
#endif
    const auto n = now();
    const double ms = std::chrono::duration<double, std::milli>(n - last_).count();
    last_ = n;
    for (auto& e : t_) {
      if (std::string(e.first) == stage) {
        e.second += ms;
        return;
      }
    }
    t_.emplace_back(stage, ms);
  }

 private:
  static std::chrono::steady_clock::time_point now() {
    return std::chrono::steady_clock::now();
  }
  std::vector<std::pair<const char*, double>>& t_;
  std::chrono::steady_clock::time_point last_;
  bool trim_;
};

// Runs f(0, ex') and f(1, ex') -- one stage for image a and for image b -- side by side, each on
// half of the call's threads, or one after the other on all of them with one thread, on a GPU or
// when not `together`. The stages give the same result for any thread count, so this changes only
// how the cores are used: the serial parts of one side (the geodesic Voronoi of the
// interpolation, small loops between parallel ones) overlap with the other side's work.
// Exceptions propagate (the first one). SideThreads::All: each side gets all of the call's threads
// instead of half: while both run, each side's loops run on its own thread (the other threads are
// busy with the other side), and the side that finishes first helps with the other's loops
// (parallel_for's waiting caller runs the loops its items started; an idle worker any). For
// stages whose loops hand out small items dynamically and allocate nothing per thread (DIS): its
// b -> a side takes 20-30 % longer than a -> b on a stereo pair, time one core idled before; and
// for the coarse fill of a large pair, whose sides differ more than its bands cost (see there).
enum class SideThreads { Half, All };
void each_side(const Exec& ex, bool together, SideThreads share,
               const std::function<void(int, const Exec&)>& f) {
  const int t = ex.threads <= 0 ? pool_size() : std::min(ex.threads, pool_size());
  if (t < 2 || ex.device != Device::Cpu || !together) {
    f(0, ex);
    f(1, ex);
    return;
  }
  Exec half = ex;
  half.threads = share == SideThreads::All ? t : t / 2;
  parallel_for(2, 2, [&](int64_t side) { f(int(side), half); });
}

size_t match_coarse_bytes(const FeaturePyramid& a, const FeaturePyramid& b, const MatchOptions& o,
                          bool confidence, int threads);

// The coarse stage and DIS run their two sides side by side only while both working sets together
// stay under this (a 512x512 pair: ~20 MB of coarse levels, ~40 MB of DIS planes); larger images
// run them in turn on all threads, lest their buffers be resident together (measured peaks above
// the live estimate there: a 1024x768 pair's coarse stage side by side 125 MB, in turn 75 MB).
constexpr size_t kSideBySideBytes = size_t{48} << 20;

int threads_of(int threads) {
  return threads <= 0 ? pool_size() : std::min(threads, pool_size());
}

bool coarse_side_by_side(const FeaturePyramid& a, const FeaturePyramid& b, const MatchOptions& o,
                         int threads) {
  const int half = threads_of(threads) / 2;
  return half >= 1 && match_coarse_bytes(a, b, o, o.confidence == MatchConfidence::Peak, half) +
                              match_coarse_bytes(b, a, o, false, half) <=
                          kSideBySideBytes;
}

bool dis_side_by_side(int H, int W, int Hb, int Wb, const MatchOptions& o) {
  return flow_refine_dis_work_bytes(H, W, Hb, Wb, o.dis_options) +
             flow_refine_dis_work_bytes(Hb, Wb, H, W, o.dis_options) <=
         kSideBySideBytes;
}

// exp(-e^2 / (2 sigma^2)) of a forward-backward error, sigma = 1.5 px (0 out of view).
float consistency_confidence(float e) {
  return std::isfinite(e) ? std::exp(-e * e / (2 * 1.5f * 1.5f)) : 0.f;
}

// ---- Similarity search: large rotations and zooms between a and b ----
//
// The descriptor is neither rotation- nor scale-invariant: past ~20 degrees or a zoom of ~1.5 the
// global stage finds few true matches and the pipeline cannot recover (Oxford bark 1 -> 3, a zoom
// with a rotation: PCK-5 0 for gocor and every peer). When few coarse matches are consistent,
// similarity_search renders one image rotated and scaled by each of a small set of similarity
// hypotheses on a coarse grid, correlates it globally with the other image and scores the
// hypothesis by the mutual nearest neighbours that agree on one translation (a geometric
// verification); the best similarity warps b and the pipeline runs again on the warped b.

// y = (a x - b y + tx, b x + a y + ty): a rotation by atan2(b, a), a zoom by hypot(a, b), a shift.
struct Similarity {
  double a = 1, b = 0, tx = 0, ty = 0;
  double scale() const { return std::hypot(a, b); }
  void apply(double x, double y, double& u, double& v) const {
    u = a * x - b * y + tx;
    v = b * x + a * y + ty;
  }
  Similarity inverse() const {
    const double s2 = a * a + b * b, ia = a / s2, ib = -b / s2;
    return {ia, ib, -(ia * tx - ib * ty), -(ib * tx + ia * ty)};
  }
  // (*this) o y: y first.
  Similarity after(const Similarity& y) const {
    Similarity r{a * y.a - b * y.b, a * y.b + b * y.a, 0, 0};
    apply(y.tx, y.ty, r.tx, r.ty);
    return r;
  }
};

// An image (C, H, W) resized by 1/s (antialiased, image_resize) when s > 1.25 source pixels per
// output pixel, so that a render that shrinks it averages each output pixel's footprint.
struct Shrunk {
  std::vector<float> storage;
  const float* data;
  int C, H, W;
  double fx = 1, fy = 1;  // this image's pixels per source pixel
};
Shrunk shrink(const float* img, int C, int H, int W, double s, const Exec& ex) {
  Shrunk r{{}, img, C, H, W};
  if (s <= 1.25) return r;
  r.H = std::max(1, int(std::lround(H / s)));
  r.W = std::max(1, int(std::lround(W / s)));
  r.storage.resize(size_t(C) * r.H * r.W);
  image_resize(img, C, H, W, r.storage.data(), r.H, r.W, ex);
  r.data = r.storage.data();
  r.fx = double(r.W) / W;
  r.fy = double(r.H) / H;
  return r;
}

// out (C, h, w): the source image read bilinearly at M(q) (source pixels) for each pixel q, through
// its shrunk copy src; mask (h, w): 1 where M(q) lies in the image, else 0 (out 0 there).
void render_similarity(const Shrunk& src, const Similarity& M, int h, int w, float* out,
                       float* mask, const Exec& ex) {
  const size_t n = size_t(h) * w;
  std::vector<float> flow(2 * n);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      double u, v;
      M.apply(x, y, u, v);
      flow[size_t(y) * w + x] = float((u + 0.5) * src.fx - 0.5 - x);
      flow[n + size_t(y) * w + x] = float((v + 0.5) * src.fy - 0.5 - y);
    }
  }
  flow_warp_image(src.data, src.C, src.H, src.W, flow.data(), h, w, out, mask, ex);
}

// The search's grid: the frame image gets about kSearchCells cells of kSearchCell pixels (its
// aspect kept); the other image is rendered at the same pixels per cell under each hypothesis:
// rotations in steps of kSearchRotation degrees (the descriptor tolerates about half a step) and
// zooms of kSearchZoom^k, k = 0..kSearchZooms-1 (either image the larger). The frame is always the
// image shown smaller (zoomed out) and the rendered one is shrunk into its scale on a canvas of its
// own, so that any translation is found: 12 rotations x 7 zooms, 84 global correlations of at most
// ~kSearchCells^2 cells. The best hypothesis is then refined by similarity fits to its agreeing
// matches (kSearchRefine rounds, each rendered and matched again).
constexpr int kSearchCells = 1024;
constexpr int kSearchCell = 8;
constexpr int kSearchRotation = 30;
constexpr double kSearchZoom = 1.4142135623730951;
constexpr int kSearchZooms = 4;
constexpr int kSearchRefine = 3;

// Features (kFeatureChannels, gh, gw) of `img` rendered through M on a gh x gw grid of
// kSearchCell-pixel cells, and which cells lie (90 %) inside the image.
void search_features(const Shrunk& img, const Similarity& M, int gh, int gw,
                     std::vector<float>& feat, std::vector<uint8_t>& inside, const Exec& ex) {
  const int h = gh * kSearchCell, w = gw * kSearchCell;
  std::vector<float> canvas(size_t(h) * w), mask(size_t(h) * w);
  render_similarity(img, M, h, w, canvas.data(), mask.data(), ex);
  feat.resize(size_t(kFeatureChannels) * gh * gw);
  features_compute(ImageView{canvas.data(), 1, h, w}, gh, gw, kSearchCell, feat.data(), ex);
  inside.assign(size_t(gh) * gw, 0);
  for (int i = 0; i < gh; ++i) {
    for (int j = 0; j < gw; ++j) {
      double m = 0;
      for (int y = i * kSearchCell; y < (i + 1) * kSearchCell; ++y)
        for (int x = j * kSearchCell; x < (j + 1) * kSearchCell; ++x) m += mask[size_t(y) * w + x];
      inside[size_t(i) * gw + j] = m >= 0.9 * kSearchCell * kSearchCell;
    }
  }
}

// Matches of the rendered image's features fr (C, rh, rw) in the frame's fm (C, mh, mw) that
// agree on one translation: the mutual nearest neighbours of their global correlation (the best
// frame cell's best rendered cell within one cell), binned by displacement in cells; those of the
// best 3 x 3 bins. Returns the similarity (rendered canvas pixels -> frame canvas pixels) fitted
// to them by least squares, and their count.
struct Agreement {
  int count = 0;
  Similarity F;
};
Agreement agreeing_matches(const std::vector<float>& fr, const std::vector<uint8_t>& in_r, int rh,
                           int rw, const std::vector<float>& fm, const std::vector<uint8_t>& in_m,
                           int mh, int mw, const Exec& ex) {
  const int Nr = rh * rw, Nm = mh * mw;
  std::vector<float> vol(size_t(Nr) * Nm);
  corr_global(fr.data(), fm.data(), vol.data(),
              CorrGlobalShape{1, kFeatureChannels, rh, rw, mh, mw}, ex);
  std::vector<int> back(Nm, -1), fwd(Nr, -1);
  std::vector<float> best_r(Nr, -1e30f);
  for (int t = 0; t < Nm; ++t) {
    if (!in_m[t]) continue;
    const float* row = vol.data() + size_t(t) * Nr;
    float best = -1e30f;
    for (int r = 0; r < Nr; ++r) {
      if (!in_r[r]) continue;
      if (row[r] > best) best = row[r], back[t] = r;
      if (row[r] > best_r[r]) best_r[r] = row[r], fwd[r] = t;
    }
  }
  const int HW = rw + mw, HH = rh + mh;  // displacement bins (dx + rw, dy + rh)
  std::vector<int> hist(size_t(HW) * HH, 0);
  std::vector<std::pair<int, int>> pairs;  // (r, t)
  for (int r = 0; r < Nr; ++r) {
    const int t = fwd[r];
    if (t < 0 || back[t] < 0) continue;
    const int r2 = back[t];
    if (std::abs(r2 / rw - r / rw) > 1 || std::abs(r2 % rw - r % rw) > 1) continue;
    ++hist[size_t(t / mw - r / rw + rh) * HW + t % mw - r % rw + rw];
    pairs.emplace_back(r, t);
  }
  Agreement ag;
  int bx = 0, by = 0;
  for (int y = 0; y < HH; ++y) {
    for (int x = 0; x < HW; ++x) {
      int c = 0;
      for (int yy = std::max(0, y - 1); yy <= std::min(HH - 1, y + 1); ++yy)
        for (int xx = std::max(0, x - 1); xx <= std::min(HW - 1, x + 1); ++xx)
          c += hist[size_t(yy) * HW + xx];
      if (c > ag.count) ag.count = c, bx = x - rw, by = y - rh;
    }
  }
  // Least-squares similarity q = F(p) over the agreeing pairs (cell centres in canvas pixels);
  // a pure shift when they are too few or span no area.
  double sp[2] = {0, 0}, sq[2] = {0, 0};
  std::vector<std::array<double, 4>> in;
  for (const auto& [r, t] : pairs) {
    const int dx = t % mw - r % rw, dy = t / mw - r / rw;
    if (std::abs(dx - bx) > 1 || std::abs(dy - by) > 1) continue;
    const double px = (r % rw + 0.5) * kSearchCell - 0.5, py = (r / rw + 0.5) * kSearchCell - 0.5;
    const double qx = (t % mw + 0.5) * kSearchCell - 0.5, qy = (t / mw + 0.5) * kSearchCell - 0.5;
    in.push_back({px, py, qx, qy});
    sp[0] += px, sp[1] += py, sq[0] += qx, sq[1] += qy;
  }
  if (in.empty()) return ag;
  const double n = double(in.size());
  for (double& v : sp) v /= n;
  for (double& v : sq) v /= n;
  double pp = 0, dot = 0, cross = 0;
  for (const auto& e : in) {
    const double px = e[0] - sp[0], py = e[1] - sp[1], qx = e[2] - sq[0], qy = e[3] - sq[1];
    pp += px * px + py * py;
    dot += px * qx + py * qy;
    cross += px * qy - py * qx;
  }
  Similarity F{1, 0, 0, 0};
  if (in.size() >= 6 && pp > 4.0 * kSearchCell * kSearchCell * n) F = {dot / pp, cross / pp, 0, 0};
  double ux, uy;
  F.apply(sp[0], sp[1], ux, uy);
  F.tx = sq[0] - ux;
  F.ty = sq[1] - uy;
  ag.F = F;
  return ag;
}

struct SimilarityScore {
  Similarity S;   // a's pixels -> b's pixels
  int count = 0;  // agreeing matches
};

// The frame image of a search direction (dir 0: b, shown smaller than a; 1: a) on its grid.
struct SearchFrame {
  int mh = 0, mw = 0;
  double f = 1;     // frame canvas pixels per frame image pixel
  Similarity m_of;  // frame canvas pixel -> frame image pixel
  std::vector<float> feat;
  std::vector<uint8_t> inside;
};

// One hypothesis: the rendered image R (HR x WR; `sr` its copy shrunk for zoom k, shrink(R, 1 /
// (fr.f k))) at zoom k (R pixels -> frame pixels) and rotation deg against the frame; its agreeing
// matches and the fitted similarity R pixels -> frame pixels.
SimilarityScore score_hypothesis(const Shrunk& sr, int HR, int WR, const SearchFrame& fr, double k,
                                 double deg, const Exec& ex) {
  constexpr double kPi = 3.14159265358979323846;
  SimilarityScore sc;
  const double g = fr.f * k;  // canvas pixels per R pixel
  const double c = std::cos(deg * kPi / 180), s = std::sin(deg * kPi / 180);
  const int rw =
      std::max(2, int(std::lround(g * (WR * std::abs(c) + HR * std::abs(s)) / kSearchCell)));
  const int rh =
      std::max(2, int(std::lround(g * (WR * std::abs(s) + HR * std::abs(c)) / kSearchCell)));
  if (double(rw) * rh > 4.0 * kSearchCells) return sc;
  // canvas pixel q -> R pixel cR + Rot(-deg) (q - cq) / g
  Similarity r_of{c / g, -s / g, 0, 0};
  double ux, uy;
  r_of.apply(0.5 * (rw * kSearchCell - 1), 0.5 * (rh * kSearchCell - 1), ux, uy);
  r_of.tx = 0.5 * (WR - 1) - ux;
  r_of.ty = 0.5 * (HR - 1) - uy;
  std::vector<float> feat;
  std::vector<uint8_t> inside;
  search_features(sr, r_of, rh, rw, feat, inside, ex);
  const Agreement ag = agreeing_matches(feat, inside, rh, rw, fr.feat, fr.inside, fr.mh, fr.mw, ex);
  // R pixel -> R canvas -> F -> frame canvas -> frame pixel
  sc.S = fr.m_of.after(ag.F).after(r_of.inverse());
  sc.count = ag.count;
  return sc;
}

// The best similarity a -> b of the search and its count of agreeing matches, and that count for b
// as it is (no rotation or zoom, any shift).
struct SearchResult {
  SimilarityScore best, identity;
};
SearchResult similarity_scores(const float* gray_a, int Ha, int Wa, const float* gray_b, int Hb,
                               int Wb, const Exec& ex) {
  SearchResult res;
  SearchFrame frames[2];
  int best_dir = 0;
  SimilarityScore best_T;  // R pixels -> frame pixels
  for (int dir = 0; dir < 2; ++dir) {
    const float* gm = dir == 0 ? gray_b : gray_a;
    const float* gr = dir == 0 ? gray_a : gray_b;
    const int HM = dir == 0 ? Hb : Ha, WM = dir == 0 ? Wb : Wa;
    const int HR = dir == 0 ? Ha : Hb, WR = dir == 0 ? Wa : Wb;
    SearchFrame& fr = frames[dir];
    const double f0 = std::min(
        1.0, std::sqrt(double(kSearchCells) * kSearchCell * kSearchCell / (double(HM) * WM)));
    fr.mw = std::max(2, int(std::lround(WM * f0 / kSearchCell)));
    fr.mh = std::max(2, int(std::lround(HM * f0 / kSearchCell)));
    fr.f = std::min(double(fr.mw) * kSearchCell / WM, double(fr.mh) * kSearchCell / HM);
    fr.m_of = {1 / fr.f, 0, 0.5 / fr.f - 0.5, 0.5 / fr.f - 0.5};
    search_features(shrink(gm, 1, HM, WM, 1 / fr.f, ex), fr.m_of, fr.mh, fr.mw, fr.feat, fr.inside,
                    ex);
    for (int z = dir; z < kSearchZooms; ++z) {
      const double k = std::pow(kSearchZoom, -z);
      const Shrunk sr = shrink(gr, 1, HR, WR, 1 / (fr.f * k), ex);
      for (int deg = 0; deg < 360; deg += kSearchRotation) {
        const SimilarityScore sc = score_hypothesis(sr, HR, WR, fr, k, deg, ex);
        if (dir == 0 && z == 0 && deg == 0) res.identity = sc;
        if (sc.count > best_T.count) best_T = sc, best_dir = dir;
      }
      check_cancel(ex);
    }
  }
  // Refinement: the fitted similarity's zoom and rotation as a hypothesis of their own.
  const int HR = best_dir == 0 ? Ha : Hb, WR = best_dir == 0 ? Wa : Wb;
  for (int it = 0; it < kSearchRefine && best_T.count > 0; ++it) {
    const double k = best_T.S.scale(),
                 deg = std::atan2(best_T.S.b, best_T.S.a) * 180 / 3.14159265358979323846;
    const Shrunk sr =
        shrink(best_dir == 0 ? gray_a : gray_b, 1, HR, WR, 1 / (frames[best_dir].f * k), ex);
    const SimilarityScore sc = score_hypothesis(sr, HR, WR, frames[best_dir], k, deg, ex);
    if (sc.count < best_T.count) break;
    best_T = sc;
  }
  res.best = best_T;
  if (best_dir == 1) res.best.S = best_T.S.inverse();
  return res;
}

// The search's decision: the best hypothesis when it has at least kSearchMinCount agreeing matches
// and kSearchMargin times as many as b as it is, else none.
constexpr int kSearchMinCount = 12;
constexpr double kSearchMargin = 2.0;
bool similarity_search(const float* gray_a, int Ha, int Wa, const float* gray_b, int Hb, int Wb,
                       const Exec& ex, Similarity& S) {
  const SearchResult r = similarity_scores(gray_a, Ha, Wa, gray_b, Hb, Wb, ex);
  if (r.best.count < kSearchMinCount || r.best.count < kSearchMargin * r.identity.count)
    return false;
  S = r.best.S;
  return true;
}

// The coarse stage failed when fewer than kSimilarityTrigger of a's pixels have forward-backward
// coarse flows that agree within half a global cell (kSimilarityTolMin px at least). Measured
// (bench/accuracy.js): real pairs 0.58 (Sintel market) to 1.0, the chairs 0.44 to 0.9; Oxford
// bark 1 -> 3 (zoom 1.8, rotation 149 degrees) 0.05; cc0 crops rotated by 30 degrees 0.14-0.32.
constexpr double kSimilarityTrigger = 0.4;
constexpr float kSimilarityTolMin = 8.f;

// match_images of a and of b warped by S (b read at S(x) on a's grid, shrunk first when S
// zooms out of b), without a search of its own and at a's size; its flow composed back into b:
// flow(x) = S(x + flow'(x)) - x, and out-of-b matches added to the occlusion mask.
MatchResult match_warped(const ImageView& a, const ImageView& b, const Similarity& S,
                         const MatchOptions& o, const Exec& ex) {
  const int H = a.H, W = a.W;
  const size_t P = size_t(H) * W;
  std::vector<float> bw(size_t(b.C) * P), mask(P);
  render_similarity(shrink(b.data, b.C, b.H, b.W, S.scale(), ex), S, H, W, bw.data(), mask.data(),
                    ex);
  mask = std::vector<float>();
  MatchOptions o2 = o;
  o2.similarity_search = MatchOptions::SimilaritySearch::Off;
  o2.out_h = o2.out_w = 0;
  MatchResult r = match_images(a, ImageView{bw.data(), b.C, H, W}, o2, ex);
  for (int y = 0; y < H; ++y) {
    for (int x = 0; x < W; ++x) {
      const size_t i = size_t(y) * W + x;
      double u, v;
      S.apply(x + r.flow[i], y + r.flow[P + i], u, v);
      r.flow[i] = float(u - x);
      r.flow[P + i] = float(v - y);
      if (!r.occlusion.empty() && (u < 0 || v < 0 || u > b.W - 1 || v > b.H - 1))
        r.occlusion[i] = 1;
    }
  }
  return r;
}

}  // namespace

MatchResult match_pyramids(const FeaturePyramid& a, const FeaturePyramid& b, const MatchOptions& o,
                           const Exec& ex) {
  check_pyramids(a, b);
  check_options(o);
  const bool peak = o.confidence == MatchConfidence::Peak;
  GridFlow fa = match_coarse(a, b, o, ex, peak);
  const int H = a.image_h, W = a.image_w;
  const size_t P = size_t(H) * W;
  const FlowGrid full{H, W, 1, 1};
  std::vector<float> flow = resample_planes(fa.flow, 2, fa.grid, full, ex), conf;
  if (peak && !fa.confidence.empty()) conf = resample_planes(fa.confidence, 1, fa.grid, full, ex);
  if (peak && fa.confidence.empty()) conf.assign(P, 0.f);
  if (o.confidence == MatchConfidence::ForwardBackward) {
    GridFlow fb = match_coarse(b, a, o, ex, false);
    const std::vector<float> back =
        resample_planes(fb.flow, 2, fb.grid, FlowGrid{b.image_h, b.image_w, 1, 1}, ex);
    std::vector<float> err(P);
    flow_consistency(flow.data(), H, W, back.data(), b.image_h, b.image_w, 0, 0, nullptr,
                     err.data(), ex);
    conf.resize(P);
    for (size_t i = 0; i < P; ++i) conf[i] = consistency_confidence(err[i]);
  }
  return to_output(std::move(flow), std::move(conf), {}, H, W, o, ex);
}

MatchResult match_images(const ImageView& a, const ImageView& b, const MatchOptions& o,
                         const Exec& ex, std::vector<float>* b_pixels) {
  check_options(o);
  std::vector<std::pair<const char*, double>> timings;
  const bool large = size_t(a.H) * a.W + size_t(b.H) * b.W >= kMatchRetainPixels;
  StageClock clock(timings, large);
  // A large pair: the pool keeps nothing from here on (blocks.h), and what it kept from earlier
  // calls goes back before the first stage's peak.
  std::optional<BlocksUnkept> unkept;
  if (large) {
    unkept.emplace();
    blocks_trim();
  }
  FeatureOptions fo;
  fo.global_size = o.global_size;
  fo.finest_stride = o.finest_stride;
  fo.with_global = o.use_global;
  std::vector<int> strides = features_local_strides(a.H, a.W, fo);
  fo.coarsest_stride = strides.front();
  // The descriptor of every level starts from the gray image: made once per image (a one-channel
  // image is its own gray), not once per level.
  FeaturePyramid pyr[2];
  each_side(ex, true, SideThreads::Half, [&](int side, const Exec& run) {
    const ImageView& img = side == 0 ? a : b;
    const std::vector<float> gray = image_gray(img);
    pyr[side] = features_extract(ImageView{gray.data(), 1, img.H, img.W}, fo, run);
    check_cancel(run);
  });
  FeaturePyramid &pa = pyr[0], &pb = pyr[1];
  check_pyramids(pa, pb);
  clock.lap("features");

  const bool peak = o.confidence == MatchConfidence::Peak;
  const bool fb_conf = o.confidence == MatchConfidence::ForwardBackward;
  const bool both = o.fill || o.final_fill || fb_conf;
  const int H = a.H, W = a.W;
  const size_t P = size_t(H) * W;
  const FlowGrid full_a{H, W, 1, 1}, full_b{b.H, b.W, 1, 1};

  // The coarse flows a -> b and b -> a (side by side while small, kSideBySideBytes), resampled to
  // full resolution once both are done; the peak confidence stays on a's grid until the output
  // (resampled there, it would sit through every later stage).
  GridFlow coarse[2];
  const bool coarse_together = both && coarse_side_by_side(pa, pb, o, ex.threads);
  each_side(ex, coarse_together, SideThreads::Half, [&](int side, const Exec& run) {
    if (side == 1 && !both) return;
    coarse[side] = side == 0 ? match_coarse(pa, pb, o, run, peak, true)
                             : match_coarse(pb, pa, o, run, false, true);
    // Local GOCor keeps tens of MB per thread for its next call; the pipeline makes no more (in
    // turn, the second side reuses the first one's).
    if (coarse_together) gocor_local_release_thread_buffers();
    check_cancel(run);
  });
  gocor_local_release_thread_buffers();
  pa = FeaturePyramid();
  pb = FeaturePyramid();
  // Each side's flow to full resolution on its own thread: mapping and clearing a new plane is
  // serial (a 512x512 flow: 512 page faults, ~5 ms in this VM).
  std::vector<float> fwd, back;
  each_side(ex, both, SideThreads::Half, [&](int side, const Exec& run) {
    if (side == 0) fwd = resample_planes(coarse[0].flow, 2, coarse[0].grid, full_a, run);
    if (side == 1 && both) back = resample_planes(coarse[1].flow, 2, coarse[1].grid, full_b, run);
  });
  GridFlow conf_grid{coarse[0].grid, {}, std::move(coarse[0].confidence)};
  coarse[0] = coarse[1] = GridFlow();
  clock.lap("coarse");
  // Made again rather than held through the coarse stage's peak (a few ms), one side per thread.
  std::vector<float> gray[2];
  each_side(ex, true, SideThreads::Half,
            [&](int side, const Exec&) { gray[side] = image_gray(side == 0 ? a : b); });
  const std::vector<float>& gray_a = gray[0];
  const std::vector<float>& gray_b = gray[1];
  if (o.fill) {
    // Each side's flow is checked against the other side's coarse flow (not yet filled), both
    // checks before either fill, and its rejected pixels are interpolated; only the coarse fill
    // reads the texture masks.
    std::vector<uint8_t> valid[2];
    // a's consistency error, for the similarity check below (the check's own pass).
    const bool check_similarity = o.similarity_search == MatchOptions::SimilaritySearch::Auto;
    std::vector<float> err;
    each_side(ex, true, SideThreads::Half, [&](int side, const Exec& run) {
      valid[side] = side == 0 ? consistent(fwd, H, W, back, b.H, b.W, o.coarse_tol, o, run,
                                           check_similarity ? &err : nullptr)
                              : consistent(back, b.H, b.W, fwd, H, W, o.coarse_tol, o, run);
    });
    // Few coarse matches even roughly consistent: b may be rotated or zoomed beyond what the
    // descriptor follows (similarity_search).
    if (o.similarity_search != MatchOptions::SimilaritySearch::Off) {
      bool search = o.similarity_search == MatchOptions::SimilaritySearch::Always;
      if (!search) {
        const float tol =
            std::max(kSimilarityTolMin, float(std::sqrt(double(P)) / (2 * o.global_size)));
        size_t rough = 0;
        for (float e : err) rough += e <= tol;
        search = double(rough) < kSimilarityTrigger * double(P);
        err = std::vector<float>();
      }
      Similarity S;
      const bool found =
          search && similarity_search(gray_a.data(), H, W, gray_b.data(), b.H, b.W, ex, S);
      if (search) clock.lap("similarity");
      if (found) {
        fwd = back = std::vector<float>();
        valid[0] = valid[1] = std::vector<uint8_t>();
        gray[0] = gray[1] = std::vector<float>();
        MatchResult r = match_warped(a, b, S, o, ex);
        if (b_pixels) *b_pixels = std::vector<float>();
        for (const auto& [stage, ms] : r.timings) {
          auto it = std::find_if(timings.begin(), timings.end(),
                                 [&](const auto& e) { return std::string(e.first) == stage; });
          if (it == timings.end())
            timings.emplace_back(stage, ms);
          else
            it->second += ms;
        }
        MatchResult out = to_output(std::move(r.flow), std::move(r.confidence),
                                    std::move(r.occlusion), H, W, o, ex);
        out.timings = std::move(timings);
        return out;
      }
    }
    // On a large pair the two sides' fills differ more (aloe at two threads: the caller waited
    // ~100 ms at the end of this stage for the other side's serial interpolation), and a side that
    // finishes first helps with the other's loops (All); on a small pair they are about equal and
    // splitting each side's Voronoi diagram into bands costs more than it evens out (a 512x512
    // pair: the same within the noise). Aloe at two threads, seven alternated runs: fill 260-327
    // ms against 283-391 with one thread per side, peak RSS unchanged.
    each_side(
        ex, true, large ? SideThreads::All : SideThreads::Half, [&](int side, const Exec& run) {
          const ImageView& img = side == 0 ? a : b;
          std::vector<uint8_t> tex(size_t(img.H) * img.W, 1);
          if (o.texture_gradient > 0) {
            flow_texture_mask(gray[side].data(), img.H, img.W, o.texture_radius, o.texture_gradient,
                              TextureMeasure::SmallerEigenvalue, tex.data(), run);
          }
          fill_invalid(img, side == 0 ? fwd : back, valid[side], tex, o, run);
          valid[side] = std::vector<uint8_t>();
        });
    check_cancel(ex);
    clock.lap("fill");
  }
  // Nothing reads b's colours from here on: a caller that lent them has them freed.
  if (b_pixels) *b_pixels = std::vector<float>();
  if (o.dis) {
    each_side(ex, both && dis_side_by_side(H, W, b.H, b.W, o), SideThreads::All,
              [&](int side, const Exec& run) {
                if (side == 0) {
                  flow_refine_dis(gray_a.data(), H, W, gray_b.data(), b.H, b.W, fwd.data(),
                                  o.dis_options, run);
                } else if (both) {
                  flow_refine_dis(gray_b.data(), b.H, b.W, gray_a.data(), H, W, back.data(),
                                  o.dis_options, run);
                }
              });
    check_cancel(ex);
    clock.lap("refine");
  }
  // A flat pixel's own match says nothing (every flow fits it equally, and forward and backward
  // guesses can agree on a wrong one): the final fill does not take it as a seed, so flat areas
  // get the flow of their structured surroundings (an integer shift over a saturated area:
  // astronaut 98.55 % -> 100 % of the overlap within 0.1 px; real pairs unchanged).
  std::vector<uint8_t> structured;
  if (o.final_fill && o.flat_gradient > 0) {
    structured.resize(P);
    flow_texture_mask(gray_a.data(), H, W, 0, o.flat_gradient, TextureMeasure::Gradient,
                      structured.data(), ex);
  }
  gray[0] = gray[1] = std::vector<float>();  // DIS was their last reader
  std::vector<uint8_t> occlusion;
  if (o.final_fill || fb_conf) {
    std::vector<float> err;
    if (o.final_fill) {
      std::vector<uint8_t> valid;
      // A match within half a DIS patch of b's border was refined from a patch partly outside b
      // (read clamped): consistent or not, it seeds nothing; its pixel is interpolated from the
      // interior (an integer shift: 98.9 % -> 100 % of the overlap within 0.1 px).
      const float m = o.dis ? 0.5f * o.dis_options.patch_size : 0.f;
      std::vector<uint8_t> inner(P);
      parallel_for(H, ex.threads, [&](int64_t y) {
        for (int x = 0; x < W; ++x) {
          const size_t i = size_t(y) * W + x;
          const float bx = x + fwd[i], by = y + fwd[P + i];
          inner[i] = bx >= m && by >= m && bx <= b.W - 1 - m && by <= b.H - 1 - m &&
                     (structured.empty() || structured[i]);
        }
      });
      // The consistency error only for the forward-backward confidence (the default, peak,
      // does not read it: a full-resolution plane less to map and clear).
      fill_inconsistent(a, fwd, b, back, o.fine_tol, inner, o, ex, &valid,
                        fb_conf ? &err : nullptr);
      occlusion.resize(P);
      for (size_t i = 0; i < P; ++i) occlusion[i] = !valid[i];
    } else {
      err.resize(P);
      flow_consistency(fwd.data(), H, W, back.data(), b.H, b.W, 0, 0, nullptr, err.data(), ex);
    }
    if (fb_conf) {
      conf_grid.confidence.resize(P);
      std::vector<float>& conf = conf_grid.confidence;
      for (size_t i = 0; i < P; ++i) conf[i] = consistency_confidence(err[i]);
    }
    clock.lap("finalFill");
  }
  std::vector<float> conf = std::move(conf_grid.confidence);
  if (peak) {
    conf = conf.empty() ? std::vector<float>(P, 0.f)
                        : resample_planes(conf, 1, conf_grid.grid, full_a, ex);
  }
  MatchResult r = to_output(std::move(fwd), std::move(conf), std::move(occlusion), H, W, o, ex);
  clock.lap("output");
  r.timings = std::move(timings);
  return r;
}

namespace {

// Peak bytes of match_coarse(a, b), stage by stage as it allocates; the result included.
size_t match_coarse_bytes(const FeaturePyramid& a, const FeaturePyramid& b, const MatchOptions& o,
                          bool confidence, int threads) {
  constexpr size_t F = sizeof(float);
  size_t peak = 0, flow = 0;  // flow: the running flow kept between stages
  size_t first_local = 0;
  if (a.levels[0].global) {
    const FeatureLevel &l0 = a.levels[0], &m0 = b.levels[0];
    const size_t N = size_t(l0.H) * l0.W, M = size_t(m0.H) * m0.W;
    const int C = l0.C + 1;
    const size_t work =
        o.method == MatchMethod::Gocor
            ? gocor_global_work_bytes(GocorGlobalShape{1, C, l0.H, l0.W},
                                      GlobalGocorOptions{o.num_iter_global, o.apply_query_loss})
            : corr_global_work_bytes(CorrGlobalShape{1, C, l0.H, l0.W, m0.H, m0.W});
    // volume, the two biased copies, flow, and global_consistency_fill's indices and copy
    peak = F * (N * M + size_t(C) * (N + M) + 2 * N) + work + 8 * (N + M) + N + F * 2 * N;
    flow = F * 2 * N;
    first_local = 1;
  }
  const int R = o.search_radius;
  const size_t D = size_t(2 * R + 1) * (2 * R + 1);
  for (size_t l = first_local; l < a.levels.size(); ++l) {
    const FeatureLevel& la = a.levels[l];
    const size_t N = size_t(la.H) * la.W;
    const size_t work = o.method == MatchMethod::Gocor
                            ? gocor_local_work_bytes(
                                  la.C, la.H, la.W, LocalGocorOptions{o.num_iter_local, R}, threads)
                            : 0;
    // previous flow (and its median copy), cur, warped b, volume (and the aggregation's rings of
    // row sums and column totals in double, one per thread), residual, confidence
    const size_t agg = o.aggregate_radius > 0 ? 8 * size_t(la.W) * (2 * o.aggregate_radius + 3) *
                                                    size_t(std::max(1, threads))
                                              : 0;
    peak = std::max(peak, 2 * flow + F * (2 * N + size_t(la.C) * N + D * N + 3 * N) + work + agg);
    flow = F * 2 * N;
  }
  return peak + (confidence ? flow / 2 : 0);
}

// Peak of resample_planes of `planes` grid planes to P pixels: the result and its two-plane
// temporaries (the grid side is small next to P).
size_t resample_bytes(size_t planes, size_t P) {
  return sizeof(float) * (planes * P + 4 * P);
}

// Peak of to_output when the output size differs from a's: the resized flow, confidence and
// occlusion next to the full-resolution ones (`held` bytes, P pixels); each resampled plane goes
// through a two-plane temporary (3 floats per output pixel).
size_t output_bytes(size_t held, size_t P, const MatchOptions& o, bool occlusion, int Ha, int Wa) {
  const size_t out = size_t(o.out_h > 0 ? o.out_h : Ha) * (o.out_w > 0 ? o.out_w : Wa);
  if (out == P) return 0;
  const bool conf = o.confidence != MatchConfidence::None;
  return held + P + sizeof(float) * (2 * out + (conf ? out : 0) + 3 * out) + (occlusion ? out : 0);
}

// Peaks of match_images after its features: the coarse stage (next to the pyramids) and the
// stages after it (the pyramids freed).
struct ImageStageBytes {
  size_t coarse, after;
};
ImageStageBytes image_stage_bytes(const FeaturePyramid& a, const FeaturePyramid& b,
                                  const MatchOptions& o, int threads) {
  constexpr size_t F = sizeof(float);
  const size_t P = size_t(a.image_h) * a.image_w, Pb = size_t(b.image_h) * b.image_w;
  const bool both = o.fill || o.final_fill || o.confidence == MatchConfidence::ForwardBackward;
  const bool peak_conf = o.confidence == MatchConfidence::Peak;
  // The two coarse sides side by side on half of the threads each, or in turn on all of them (their
  // grid flows are small); then both flows resampled to full resolution, the peak confidence kept
  // on the grid.
  const int half = threads_of(threads) / 2;
  const size_t coarse =
      both && coarse_side_by_side(a, b, o, threads)
          ? match_coarse_bytes(a, b, o, peak_conf, half) + match_coarse_bytes(b, a, o, false, half)
          : std::max(match_coarse_bytes(a, b, o, peak_conf, threads),
                     both ? match_coarse_bytes(b, a, o, false, threads) : 0);
  size_t flows = F * 2 * (P + (both ? Pb : 0));
  size_t peak = flows + resample_bytes(0, P);
  // The gray images next to both flows.
  const size_t base = flows + F * (P + Pb);
  // A fill: the validity and texture masks and the interpolation (in place).
  auto fill = [&](int h, int w, size_t p) {
    return 2 * p + flow_interpolate_work_bytes(3, h, w, o.interp);
  };
  // The fills run their two sides side by side (each_side) with two threads or more.
  const int t = threads_of(threads);
  if (o.fill) {
    // Both consistency masks first; then the two sides' fills, side by side or in turn.
    const size_t fa = fill(a.image_h, a.image_w, P), fb = fill(b.image_h, b.image_w, Pb);
    peak = std::max(peak, base + P + Pb + (t >= 2 ? fa + fb : std::max(fa, fb)));
  }
  if (o.dis) {
    // DIS of a -> b and of b -> a, side by side (while small, with two threads) or in turn.
    const int H = a.image_h, W = a.image_w, Hb = b.image_h, Wb = b.image_w;
    const size_t da = flow_refine_dis_work_bytes(H, W, Hb, Wb, o.dis_options),
                 db = both ? flow_refine_dis_work_bytes(Hb, Wb, H, W, o.dis_options) : 0;
    const bool together = both && t >= 2 && dis_side_by_side(H, W, Hb, Wb, o);
    peak = std::max(peak, base + (together ? da + db : std::max(da, db)));
  }
  // The final fill and its consistency error and mask, then the confidence at full resolution.
  if (o.final_fill) peak = std::max(peak, base + fill(a.image_h, a.image_w, P) + F * P + P);
  if (o.confidence != MatchConfidence::None) {
    peak = std::max(peak, flows + P + resample_bytes(1, P));
    flows += F * P;
  }
  peak = std::max(peak, output_bytes(flows, P, o, o.final_fill, a.image_h, a.image_w));
  return {coarse, peak};
}

}  // namespace

size_t match_pyramids_work_bytes(const FeaturePyramid& a, const FeaturePyramid& b,
                                 const MatchOptions& o, bool with_images, int threads) {
  if (a.levels.empty() || a.levels.size() != b.levels.size()) {
    throw Error(ErrorCode::Shape, "match: the pyramids need the same, non-zero number of levels");
  }
  if (with_images) {
    const ImageStageBytes st = image_stage_bytes(a, b, o, threads);
    return std::max(st.coarse, st.after);
  }
  constexpr size_t F = sizeof(float);
  const size_t P = size_t(a.image_h) * a.image_w, Pb = size_t(b.image_h) * b.image_w;
  const bool fb = o.confidence == MatchConfidence::ForwardBackward;
  // match_pyramids: a's coarse flow at full resolution (and its confidence), then b's while a's
  // is held.
  const size_t held = F * (2 * P + (o.confidence == MatchConfidence::None ? 0 : P));
  size_t peak = match_coarse_bytes(a, b, o, o.confidence == MatchConfidence::Peak, threads) +
                resample_bytes(3, P);
  if (fb) {
    peak =
        std::max(peak, held + match_coarse_bytes(b, a, o, false, threads) + resample_bytes(2, Pb));
  }
  const size_t flows = held + (fb ? F * 2 * Pb : 0);
  if (fb) peak = std::max(peak, flows + F * P + P);  // the consistency error and mask
  return std::max(peak, output_bytes(flows, P, o, false, a.image_h, a.image_w));
}

size_t match_images_bytes(int Ha, int Wa, int Hb, int Wb, const MatchOptions& o, int threads) {
  FeatureOptions fo;
  fo.global_size = o.global_size;
  fo.finest_stride = o.finest_stride;
  fo.with_global = o.use_global;
  fo.coarsest_stride = features_local_strides(Ha, Wa, fo).front();
  const FeaturePyramid pa = features_plan(Ha, Wa, fo), pb = features_plan(Hb, Wb, fo);
  auto pyramid_bytes = [](const FeaturePyramid& p) {
    size_t n = 0;
    for (const FeatureLevel& lv : p.levels) n += sizeof(float) * size_t(lv.C) * lv.H * lv.W;
    return n;
  };
  // a's features and b's, each from its gray image (side by side with two threads or more, each
  // on half of them; else b's next to a's pyramid), then the coarse stage next to both pyramids,
  // then the stages after it.
  const int t = threads <= 0 ? pool_size() : std::min(threads, pool_size());
  const size_t ga = sizeof(float) * size_t(Ha) * Wa, gb = sizeof(float) * size_t(Hb) * Wb;
  const size_t features =
      t >= 2 ? ga + features_extract_bytes(Ha, Wa, fo, t / 2) + gb +
                   features_extract_bytes(Hb, Wb, fo, t / 2)
             : std::max(ga + features_extract_bytes(Ha, Wa, fo, threads),
                        pyramid_bytes(pa) + gb + features_extract_bytes(Hb, Wb, fo, threads));
  const ImageStageBytes st = image_stage_bytes(pa, pb, o, threads);
  size_t total = std::max({features, pyramid_bytes(pa) + pyramid_bytes(pb) + st.coarse, st.after});
  if (o.similarity_search != MatchOptions::SimilaritySearch::Off && o.fill) {
    // The search (a volume of at most 4 x kSearchCells^2 cells and its features, next to both
    // flows and gray images), then the pipeline again on b warped to a's size (3 channels at most)
    // with the flows freed.
    const size_t P = size_t(Ha) * Wa, Pb = size_t(Hb) * Wb,
                 cells = 4 * size_t(kSearchCells) * 11 / 10;
    const size_t search = sizeof(float) * (cells * cells / 4 + 2 * cells * kFeatureChannels +
                                           3 * (P + Pb) + 2 * kSearchCells * 64);
    MatchOptions o2 = o;
    o2.similarity_search = MatchOptions::SimilaritySearch::Off;
    total = std::max(
        {total, search, match_images_bytes(Ha, Wa, Ha, Wa, o2, threads) + sizeof(float) * 3 * P});
  }
  return total;
}

}  // namespace gocor
