// gocor's built-in dense descriptor.
//
// Design (DAISY-like, Tola et al. 2010, written from the idea, not from any code):
//  1. gray = luma of the image, resampled (antialiased) to a working image of `cell` pixels per
//     feature-grid cell, so that every level sees the same structure size in cell units;
//  2. gradients by central differences; 8 half-rectified oriented gradient maps
//     O_k = max(0, gx cos(k pi/4) + gy sin(k pi/4)) (a soft orientation histogram per pixel);
//  3. two Gaussian blur stacks of O (sigma 0.625 and 1.25 cells, the second blurred from the
//  first);
//  4. per cell: the 8-bin histogram at the centre (small blur), at 8 points on a ring of radius
//     1.25 cells (small blur) and 8 points on a ring of 2.5 cells (large blur): 17 x 8 = 136
//     values, about 6 cells of spatial context, which is what lets a descriptor tell one brick from
//     the next row's brick (the brick itself looks the same; its surroundings at different offsets
//     do not);
//  5. each 8-bin histogram divided by max(its norm, 0.25 x the mean centre-histogram norm of the
//     level) (contrast invariance without amplifying noise in flat areas), then the whole
//     136-vector L2-normalised, so plain correlation is a cosine similarity and GLU-Net's
//     normalisation of the global features is a no-op.
// Cost per level with a working image of P = Hf*Wf*cell^2 pixels: resampling ~10P, gradients and
// maps ~20P, blurs 8 maps x (2 x 2 passes x ~(2*3*sigma+1) taps) ~ 8 x (4 x 13) P at cell 4,
// sampling 17 x 8 bilinear reads per cell. The 512x512 pyramid (global 16^2 at cell 8, strides
// 16/8/4 at cell 4) is ~0.45 M working pixels, ~25 M multiply-adds, a few ms per thread.
#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>

#include "dense_features.h"
#include "dispatch.h"
#include "parallel.h"
#include "simd.h"

namespace gocor {
namespace {

constexpr int kOrient = 8;
constexpr int kRingPoints = 8;
constexpr double kRing1 = 1.25, kRing2 = 2.5;           // ring radii in cells
constexpr double kSigmaSmall = 0.9, kSigmaLarge = 1.5;  // blur in cells (DAISY: sigma = r / 2)
constexpr double kHistFloor = 0.25;                     // relative floor of the histogram norms
constexpr int kGlobalCell = 8;                          // working pixels per global cell
constexpr int kLocalCell = 4;                           // working pixels per local cell

// Source taps of one output sample of the separable resampler.
struct Taps {
  std::vector<int> start, count;
  std::vector<float> w;  // count[i] weights per output i, packed; row i starts at i * max_taps
  int max_taps = 0;
};

Taps resample_taps(int S, int s) {
  Taps t;
  double scale = double(S) / s;
  double support = std::max(1.0, scale);
  t.max_taps = int(std::ceil(support)) * 2 + 1;
  t.start.resize(s);
  t.count.resize(s);
  t.w.assign(size_t(s) * t.max_taps, 0.f);
  for (int o = 0; o < s; ++o) {
    double c = (o + 0.5) * scale - 0.5;
    int lo = int(std::floor(c - support)) + 1, hi = int(std::ceil(c + support)) - 1;
    lo = std::max(lo, 0);
    hi = std::min(hi, S - 1);
    if (hi < lo) lo = hi = std::clamp(int(std::lround(c)), 0, S - 1);
    hi = std::min(hi, lo + t.max_taps - 1);
    double sum = 0;
    float* w = &t.w[size_t(o) * t.max_taps];
    for (int i = lo; i <= hi; ++i) {
      double v = std::max(0.0, 1.0 - std::abs(i - c) / support);
      w[i - lo] = float(v);
      sum += v;
    }
    if (sum <= 0) {
      w[0] = 1.f;
      hi = lo;
      sum = 1;
    }
    for (int i = lo; i <= hi; ++i) w[i - lo] = float(w[i - lo] / sum);
    t.start[o] = lo;
    t.count[o] = hi - lo + 1;
  }
  return t;
}

// Separable Gaussian blur of one plane (H, W) in place, border replicated. tmp: H*W floats;
// k: the 2r + 1 taps.
GOCOR_INLINE void blur_plane_body(float* p, int H, int W, const std::vector<float>& k, float* tmp) {
  const int r = int(k.size() / 2);
  // Rows: a replicated-border copy, then one vectorisable pass per tap.
  std::vector<float> pad(W + 2 * r);
  for (int y = 0; y < H; ++y) {
    const float* row = p + size_t(y) * W;
    std::fill(pad.begin(), pad.begin() + r, row[0]);
    std::copy(row, row + W, pad.begin() + r);
    std::fill(pad.begin() + r + W, pad.end(), row[W - 1]);
    float* out = tmp + size_t(y) * W;
    std::fill(out, out + W, 0.f);
    for (int i = 0; i <= 2 * r; ++i) {
      const float* src = pad.data() + i;
      const float kk = k[i];
      for (int x = 0; x < W; ++x) out[x] += kk * src[x];
    }
  }
  std::vector<float> acc(W);
  for (int y = 0; y < H; ++y) {
    std::fill(acc.begin(), acc.end(), 0.f);
    for (int i = -r; i <= r; ++i) {
      const float* row = tmp + size_t(std::clamp(y + i, 0, H - 1)) * W;
      float kk = k[i + r];
      for (int x = 0; x < W; ++x) acc[x] += kk * row[x];
    }
    std::copy(acc.begin(), acc.end(), p + size_t(y) * W);
  }
}

// The same loops 8 lanes wide where the CPU has AVX2. Without FMA on purpose: every value is the
// same sequence of separately rounded multiplies and adds as in the baseline build, so the
// descriptor keeps its bits whichever entry runs.
#if GOCOR_SIMD_X86
__attribute__((target("avx2"), flatten, noinline)) void blur_plane_avx2(float* p, int H, int W,
                                                                        const std::vector<float>& k,
                                                                        float* tmp) {
  blur_plane_body(p, H, W, k, tmp);
}
#endif
__attribute__((flatten, noinline)) void blur_plane_portable(float* p, int H, int W,
                                                            const std::vector<float>& k,
                                                            float* tmp) {
  blur_plane_body(p, H, W, k, tmp);
}

void blur_plane(float* p, int H, int W, double sigma, float* tmp) {
  if (sigma <= 0.05) return;
  int r = std::max(1, int(std::ceil(3 * sigma)));
  std::vector<float> k(2 * r + 1);
  double sum = 0;
  for (int i = -r; i <= r; ++i) sum += (k[i + r] = float(std::exp(-0.5 * i * i / (sigma * sigma))));
  for (float& v : k) v = float(v / sum);
#if GOCOR_SIMD_X86
  if (simd::simd_active() != simd::Simd::Portable) return blur_plane_avx2(p, H, W, k, tmp);
#endif
  blur_plane_portable(p, H, W, k, tmp);
}

// Bilinear read of plane (H, W) at (x, y), coordinates clamped to the image.
inline float sample(const float* p, int H, int W, double x, double y) {
  x = std::clamp(x, 0.0, double(W - 1));
  y = std::clamp(y, 0.0, double(H - 1));
  int x0 = std::min(int(x), W - 1), y0 = std::min(int(y), H - 1);
  int x1 = std::min(x0 + 1, W - 1), y1 = std::min(y0 + 1, H - 1);
  float fx = float(x - x0), fy = float(y - y0);
  const float* r0 = p + size_t(y0) * W;
  const float* r1 = p + size_t(y1) * W;
  float a = r0[x0] + fx * (r0[x1] - r0[x0]);
  float b = r1[x0] + fx * (r1[x1] - r1[x0]);
  return a + fy * (b - a);
}

}  // namespace

void image_resize_cpu(const float* src, int C, int H, int W, float* dst, int h, int w,
                      const Exec& ex) {
  if (C <= 0 || H <= 0 || W <= 0 || h <= 0 || w <= 0) {
    throw Error(ErrorCode::Shape, "image_resize: sizes must be positive");
  }
  Taps tx = resample_taps(W, w), ty = resample_taps(H, h);
  std::vector<float> mid(size_t(C) * H * w);
  parallel_for(int64_t(C) * H, ex.threads, [&](int64_t cy) {
    const float* row = src + size_t(cy) * W;
    float* out = mid.data() + size_t(cy) * w;
    for (int o = 0; o < w; ++o) {
      const float* k = &tx.w[size_t(o) * tx.max_taps];
      const float* s = row + tx.start[o];
      float acc = 0;
      for (int i = 0; i < tx.count[o]; ++i) acc += k[i] * s[i];
      out[o] = acc;
    }
  });
  parallel_for(int64_t(C) * h, ex.threads, [&](int64_t co) {
    int c = int(co / h), o = int(co % h);
    float* out = dst + (size_t(c) * h + o) * w;
    std::fill(out, out + w, 0.f);
    const float* k = &ty.w[size_t(o) * ty.max_taps];
    for (int i = 0; i < ty.count[o]; ++i) {
      const float* row = mid.data() + (size_t(c) * H + ty.start[o] + i) * w;
      for (int x = 0; x < w; ++x) out[x] += k[i] * row[x];
    }
  });
}

std::vector<float> image_gray(const ImageView& img) {
  const size_t HW = size_t(img.H) * img.W;
  std::vector<float> gray(HW);
  if (img.C >= 3) {
    for (size_t i = 0; i < HW; ++i) {
      gray[i] = 0.299f * img.data[i] + 0.587f * img.data[HW + i] + 0.114f * img.data[2 * HW + i];
    }
  } else {
    std::copy(img.data, img.data + HW, gray.begin());
  }
  return gray;
}

void features_compute_cpu(const ImageView& img, int Hf, int Wf, int cell, float* out,
                          const Exec& ex) {
  if (img.C <= 0 || img.H <= 0 || img.W <= 0 || Hf <= 0 || Wf <= 0 || cell <= 0) {
    throw Error(ErrorCode::Shape, "features_compute: sizes must be positive");
  }
  // An image of fewer than 3 channels is read through its first plane as it is (image_gray would
  // copy it: match passes gray images, one copy per level).
  std::vector<float> gray;
  if (img.C >= 3) gray = image_gray(img);
  const float* g = img.C >= 3 ? gray.data() : img.data;
  const int Hk = Hf * cell, Wk = Wf * cell;
  const size_t P = size_t(Hk) * Wk;
  std::vector<float> work(P);
  image_resize_cpu(g, 1, img.H, img.W, work.data(), Hk, Wk, ex);

  // The 17 sample points of a cell's histograms: the centre (small blur), a ring at kRing1 (small
  // blur) and a ring at kRing2 (large blur).
  constexpr int kSamples = 1 + 2 * kRingPoints;
  double ox[kSamples], oy[kSamples];
  bool use_large[kSamples];
  ox[0] = oy[0] = 0;
  use_large[0] = false;
  for (int m = 0; m < kRingPoints; ++m) {
    double a = 2 * M_PI * m / kRingPoints;
    ox[1 + m] = kRing1 * cell * std::cos(a);
    oy[1 + m] = kRing1 * cell * std::sin(a);
    use_large[1 + m] = false;
    ox[1 + kRingPoints + m] = kRing2 * cell * std::cos(a);
    oy[1 + kRingPoints + m] = kRing2 * cell * std::sin(a);
    use_large[1 + kRingPoints + m] = true;
  }
  const size_t N = size_t(Hf) * Wf;
  std::vector<float> desc(N * kFeatureChannels);  // (N, 136) while normalising
  const double s1 = kSigmaSmall * cell, s2 = kSigmaLarge * cell;
  // One orientation k per task: its oriented gradient map, the small blur O_k * G(s1) and the
  // large one, small * G(sqrt(s2^2 - s1^2)), then channel k of every histogram of every cell.
  // Three planes per task in flight (not two stacks of kOrient planes).
  parallel_for(kOrient, ex.threads, [&](int64_t k) {
    const float ck = float(std::cos(k * M_PI / 4)), sk = float(std::sin(k * M_PI / 4));
    // Uninitialised: every value is written before it is read (zeroing them was ~1 % of a match).
    const std::unique_ptr<float[]> planes(new float[3 * P]);
    float *small = planes.get(), *large = small + P, *tmp = large + P;
    for (int y = 0; y < Hk; ++y) {
      const float* up = work.data() + size_t(std::max(y - 1, 0)) * Wk;
      const float* dn = work.data() + size_t(std::min(y + 1, Hk - 1)) * Wk;
      const float* row = work.data() + size_t(y) * Wk;
      float* o = small + size_t(y) * Wk;
      auto at = [&](int x, int xl, int xr) {
        float gx = 0.5f * (row[xr] - row[xl]);
        float gy = 0.5f * (dn[x] - up[x]);
        o[x] = std::max(0.f, gx * ck + gy * sk);
      };
      // The border columns clamp their neighbour; the interior loop has no clamps and vectorises.
      at(0, 0, std::min(1, Wk - 1));
      for (int x = 1; x < Wk - 1; ++x) at(x, x - 1, x + 1);
      if (Wk > 1) at(Wk - 1, Wk - 2, Wk - 1);
    }
    blur_plane(small, Hk, Wk, s1, tmp);
    std::copy(small, small + P, large);
    blur_plane(large, Hk, Wk, std::sqrt(s2 * s2 - s1 * s1), tmp);
    for (int i = 0; i < Hf; ++i) {
      for (int j = 0; j < Wf; ++j) {
        float* d = desc.data() + (size_t(i) * Wf + j) * kFeatureChannels;
        const double cx = (j + 0.5) * cell - 0.5, cy = (i + 0.5) * cell - 0.5;
        for (int s = 0; s < kSamples; ++s) {
          d[s * kOrient + k] = sample(use_large[s] ? large : small, Hk, Wk, cx + ox[s], cy + oy[s]);
        }
      }
    }
  });
  check_cancel(ex);
  std::vector<float> centre_norm(N);
  for (size_t n = 0; n < N; ++n) {
    const float* d = desc.data() + n * kFeatureChannels;
    double c2 = 0;
    for (int k = 0; k < kOrient; ++k) c2 += double(d[k]) * d[k];
    centre_norm[n] = float(std::sqrt(c2));
  }
  double mean_norm = std::accumulate(centre_norm.begin(), centre_norm.end(), 0.0) / double(N);
  const double floor_norm = std::max(kHistFloor * mean_norm, 1e-12);
  parallel_for(Hf, ex.threads, [&](int64_t i) {
    for (int j = 0; j < Wf; ++j) {
      size_t n = size_t(i) * Wf + j;
      float* d = desc.data() + n * kFeatureChannels;
      double total = 0;
      for (int s = 0; s < kSamples; ++s) {
        float* h = d + s * kOrient;
        double h2 = 0;
        for (int k = 0; k < kOrient; ++k) h2 += double(h[k]) * h[k];
        double inv = 1.0 / std::max(std::sqrt(h2), floor_norm);
        for (int k = 0; k < kOrient; ++k) {
          h[k] = float(h[k] * inv);
          total += double(h[k]) * h[k];
        }
      }
      // Centre the vector (cosine becomes a Pearson correlation): all entries are non-negative,
      // so without this every pair of descriptors has a cosine near 1 and peaks are flat.
      double mean = 0;
      for (int c = 0; c < kFeatureChannels; ++c) mean += d[c];
      mean /= kFeatureChannels;
      total = 0;
      for (int c = 0; c < kFeatureChannels; ++c) {
        d[c] = float(d[c] - mean);
        total += double(d[c]) * d[c];
      }
      float inv = total > 1e-12 ? float(1.0 / std::sqrt(total)) : 0.f;
      for (int c = 0; c < kFeatureChannels; ++c) d[c] *= inv;
    }
  });
  // Zero-mean over the image, then unit norm again: the descriptors are built from non-negative
  // histograms, so every cell shares a large common component. Removing the image's mean
  // descriptor leaves signed vectors whose dot products measure what tells cells apart; GOCor's
  // global initialiser (spec 4.2, w . mu = 0) then projects out a small direction instead of the
  // bulk of every descriptor (measured on integer shifts: brick 3/144 -> 101/144 global cells
  // right).
  {
    std::vector<double> mean(kFeatureChannels, 0.0);
    for (size_t n = 0; n < N; ++n)
      for (int c = 0; c < kFeatureChannels; ++c) mean[c] += desc[n * kFeatureChannels + c];
    for (double& m : mean) m /= double(N);
    for (size_t n = 0; n < N; ++n) {
      float* d = desc.data() + n * kFeatureChannels;
      double total = 0;
      for (int c = 0; c < kFeatureChannels; ++c) {
        d[c] = float(d[c] - mean[c]);
        total += double(d[c]) * d[c];
      }
      float inv = total > 1e-12 ? float(1.0 / std::sqrt(total)) : 0.f;
      for (int c = 0; c < kFeatureChannels; ++c) d[c] *= inv;
    }
  }
  for (size_t n = 0; n < N; ++n)
    for (int c = 0; c < kFeatureChannels; ++c)
      out[size_t(c) * N + n] = desc[n * kFeatureChannels + c];
}

FeaturePyramid features_plan(int H, int W, const FeatureOptions& o) {
  FeaturePyramid pyr;
  pyr.image_h = H;
  pyr.image_w = W;
  auto add = [&](int Hf, int Wf, bool global) {
    FeatureLevel lv;
    lv.C = kFeatureChannels;
    lv.H = Hf;
    lv.W = Wf;
    lv.stride_x = double(W) / Wf;
    lv.stride_y = double(H) / Hf;
    lv.global = global;
    pyr.levels.push_back(std::move(lv));
  };
  if (o.with_global) add(o.global_size, o.global_size, true);
  for (int s : features_local_strides(H, W, o)) {
    add(std::max(1, int(std::lround(double(H) / s))), std::max(1, int(std::lround(double(W) / s))),
        false);
  }
  return pyr;
}

FeaturePyramid features_extract(const ImageView& img, const FeatureOptions& o, const Exec& ex) {
  if (img.C <= 0 || img.H <= 0 || img.W <= 0) {
    throw Error(ErrorCode::Shape, "features_extract: image sizes must be positive");
  }
  FeaturePyramid pyr = features_plan(img.H, img.W, o);
  for (FeatureLevel& lv : pyr.levels) {
    lv.data.resize(size_t(lv.C) * lv.H * lv.W);
    features_compute(img, lv.H, lv.W, lv.global ? kGlobalCell : kLocalCell, lv.data.data(), ex);
  }
  return pyr;
}

namespace {

size_t features_compute_work_bytes(int H, int W, int Hf, int Wf, int cell, int threads) {
  // features_compute: gray (H W) and the working image (P) live throughout; then the larger of the
  // resampler's middle image (H x Wk) and, from the orientation tasks on, the descriptors and norms
  // (137 N) with three planes (3 P) per task in flight.
  const size_t Wk = size_t(Wf) * cell, P = size_t(Hf) * cell * Wk, N = size_t(Hf) * Wf;
  const int t = threads <= 0 ? pool_size() : std::min(threads, pool_size());
  const size_t peak =
      std::max(size_t(H) * Wk, (kFeatureChannels + 1) * N + size_t(std::min(kOrient, t)) * 3 * P);
  return sizeof(float) * (size_t(H) * W + P + peak);
}

}  // namespace

size_t features_extract_bytes(int H, int W, const FeatureOptions& o, int threads) {
  size_t pyramid = 0, work = 0;
  for (const FeatureLevel& lv : features_plan(H, W, o).levels) {
    pyramid += sizeof(float) * size_t(lv.C) * lv.H * lv.W;
    work = std::max(work, features_compute_work_bytes(
                              H, W, lv.H, lv.W, lv.global ? kGlobalCell : kLocalCell, threads));
  }
  return pyramid + work;
}

}  // namespace gocor
