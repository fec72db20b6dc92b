// Named dense_features.h, not features.h: cpp/core is on the include path and <features.h> is a
// glibc header that every system header includes; a features.h here would shadow it.
// gocor's built-in dense descriptor: DAISY-like oriented-gradient histograms with spatial context,
// computed on the feature grids the coarse-to-fine matcher needs (see features.cpp for the design).
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "common.h"

namespace gocor {

// A decoded image, CHW float32 (1 channel: gray, 3 or 4: RGB(A), alpha ignored), values ~[0, 1].
struct ImageView {
  const float* data;
  int C, H, W;
};

// One level of a feature pyramid. The grid covers the whole image: cell (i, j) is centred on
// source pixel ((j + 0.5) * stride_x - 0.5, (i + 0.5) * stride_y - 0.5), pixel centres at integers.
struct FeatureLevel {
  int C = 0, H = 0, W = 0;
  double stride_x = 1, stride_y = 1;  // source pixels per cell (real-valued: the grid divides W, H)
  bool global = false;                // the coarse level matched with global correlation / GOCor
  std::vector<float> data;            // (C, H, W)
};

struct FeaturePyramid {
  int image_h = 0, image_w = 0;      // the source image the strides refer to
  std::vector<FeatureLevel> levels;  // levels[0] global (if any), then local levels coarse to fine
};

// Descriptor size: 8 orientations x (1 centre + 8 inner ring + 8 outer ring) samples.
constexpr int kFeatureChannels = 136;

struct FeatureOptions {
  int global_size = 24;   // the global level is global_size x global_size cells (aspect ignored)
  int finest_stride = 4;  // the finest local level's nominal stride in source pixels
  int coarsest_stride =
      0;  // 0: chosen from the global cell size (largest power of two <= 0.75 cell)
  bool with_global = true;
};

// Nominal strides of the local levels, coarse to fine, for an H x W image (powers of two).
inline std::vector<int> features_local_strides(int H, int W, const FeatureOptions& o) {
  int finest = std::max(1, o.finest_stride);
  int coarsest = o.coarsest_stride;
  if (coarsest <= 0) {
    double cell = std::sqrt(double(H) * W) / std::max(1, o.global_size);
    coarsest = finest;
    while (coarsest * 2 <= 0.75 * cell) coarsest *= 2;
  }
  std::vector<int> strides;
  for (int s = std::max(coarsest, finest); s >= finest; s /= 2) {
    strides.push_back(s);
    if (s == finest) break;
  }
  if (strides.empty() || strides.back() != finest) strides.push_back(finest);
  return strides;
}

// Gray of an image (H, W): luma 0.299 R + 0.587 G + 0.114 B for 3 or 4 channels, else channel 0.
std::vector<float> image_gray(const ImageView& img);

// image (C, H, W) -> out (kFeatureChannels, Hf, Wf): one descriptor per cell of an Hf x Wf grid
// over the image; `cell` is how many working pixels one cell spans (the image is resampled to (Hf *
// cell, Wf * cell) first). Each descriptor has unit L2 norm (or is zero on a blank image).
void features_compute_cpu(const ImageView& img, int Hf, int Wf, int cell, float* out,
                          const Exec& ex);

// The pyramid the matcher uses: a global_size^2 level (if with_global) and local levels at the
// strides of features_local_strides.
FeaturePyramid features_extract(const ImageView& img, const FeatureOptions& o, const Exec& ex);
// The levels features_extract makes for an H x W image (sizes, strides, kinds), without data.
FeaturePyramid features_plan(int H, int W, const FeatureOptions& o);

// Host memory, in bytes, that features_extract allocates for an H x W image: the pyramid it
// returns plus the largest level's working set (`threads` as in Exec). The memory limit uses it.
size_t features_extract_bytes(int H, int W, const FeatureOptions& o, int threads);

// Resamples src (C, H, W) to dst (C, h, w) with a triangle filter widened by the scale factor when
// shrinking (antialiased bilinear), pixel centres aligned.
void image_resize_cpu(const float* src, int C, int H, int W, float* dst, int h, int w,
                      const Exec& ex);

}  // namespace gocor
