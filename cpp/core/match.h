// Dense matching of two images (or two feature pyramids) to a full-resolution flow, coarse to fine
// in the spirit of GLU-Net: global correlation / GOCor on a coarse grid, then local refinements
// (search radius R) with b's features warped by the current flow.
// Convention: flow lives on the grid of a and points into b: a(x) ~ b(x + flow(x)), x right, y
// down.
#pragma once

#include <cstdint>
#include <vector>

#include "common.h"
#include "dense_features.h"
#include "gocor.h"

namespace gocor {

enum class MatchMethod { Gocor, Correlation };
enum class MatchConfidence { None, Peak, ForwardBackward };

struct MatchOptions {
  MatchMethod method = MatchMethod::Gocor;
  int global_size = 24;    // global grid (global_size^2 cells) when matching images
  int finest_stride = 4;   // finest local level (source pixels per cell)
  bool use_global = true;  // false: start the local levels from zero flow (small motions)
  int num_iter_global = 3;
  int num_iter_local = 7;        // the authors' evaluation setting (spec 6)
  bool apply_query_loss = true;  // global GOCor's query-frame term (spec 4.4)
  int search_radius = 4;
  int refine_iter = 3;       // symmetric sub-cell refinement rounds at the finest level
  int photometric_iter = 2;  // pixel-level Lucas-Kanade rounds on the images (match_images only)
  bool median = true;        // 3x3 median of the flow between levels (drops isolated outliers)
  uint64_t seed = 0;         // seed of the global GOCor regulariser's initial weights
  bool fitted_params =
      true;  // GOCor parameters fitted to the built-in descriptor (false: spec 4.7 init)
  int out_h = 0, out_w = 0;  // output flow size; 0: the size of a (vectors rescaled otherwise)
  MatchConfidence confidence = MatchConfidence::Peak;
};

struct MatchResult {
  int H = 0, W = 0;
  std::vector<float> flow;        // (2, H, W) in pixels of the output grid
  std::vector<float> confidence;  // (H, W) in [0, 1], empty for MatchConfidence::None
};

// match's global stage appends one constant channel of this value to both global levels (then
// scales every cell by 1 / sqrt(1 + bias^2)), so its global GOCor / correlation works on C + 1
// channels; why: with_bias_channel in match.cpp.
constexpr float kMatchGlobalBias = 1.f;

// Window radius of match's pixel-level photometric refinement (15 x 15).
constexpr int kMatchPhotometricRadius = 7;

// The global GOCor parameters match uses: the official initial values (spec 4.7) with, when
// `fitted`, the learnt functions of distance that bench/fit-params.js fitted to gocor's built-in
// descriptor on images the accuracy benchmark does not use. Pass C + 1 (the constant channel).
// The local stage uses default_local_params() either way: a local fit (`--stage local`) raised its
// proxy score but made the matcher worse, and the fitted global values were level there
// (bench/README.md).
GlobalGocorParams match_global_params(int C, uint64_t seed, bool fitted);

// Pyramids of a and b must have the same number of levels with the same kinds and channels;
// level grids of a and b may differ (different image sizes). A global level, if present, is first
// and must have the same grid in a and b. The flow is in pixels of a.image_w x a.image_h.
// With the images (ia, ib non-null, a's and b's), the full-resolution flow gets
// o.photometric_iter rounds of flow_refine_photometric (window 15 x 15) before confidence and
// resizing; the a -> b -> a consistency flow too.
MatchResult match_pyramids(const FeaturePyramid& a, const FeaturePyramid& b, const MatchOptions& o,
                           const Exec& ex, const ImageView* ia = nullptr,
                           const ImageView* ib = nullptr);

// Features with features_extract (b on a's local strides), then match_pyramids with the images.
MatchResult match_images(const ImageView& a, const ImageView& b, const MatchOptions& o,
                         const Exec& ex);

// Host memory, in bytes, that match_pyramids allocates besides its pyramids (levels' C, H, W,
// kinds and the image sizes are read; data may be empty), and that match_images allocates for an
// Ha x Wa and an Hb x Wb image, result included; `threads` as in Exec. The peak of the stages as
// they allocate: keep them next to the code when a stage changes (test/reliability/memory.test.ts
// compares them with the measured peak).
size_t match_pyramids_work_bytes(const FeaturePyramid& a, const FeaturePyramid& b,
                                 const MatchOptions& o, bool with_images, int threads);
size_t match_images_bytes(int Ha, int Wa, int Hb, int Wb, const MatchOptions& o, int threads);

}  // namespace gocor
