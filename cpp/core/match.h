// Dense matching of two images (or two feature pyramids) to a full-resolution flow, coarse to fine
// in the spirit of GLU-Net: global correlation / GOCor on a coarse grid, then local refinements
// (search radius R) with b's features warped by the current flow.
// Convention: flow lives on the grid of a and points into b: a(x) ~ b(x + flow(x)), x right, y
// down.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "common.h"
#include "dense_features.h"
#include "dis.h"
#include "gocor.h"
#include "interpolate.h"

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
  bool median = true;        // 3x3 median of the flow between levels (drops isolated outliers)
  int aggregate_radius = 2;  // local volumes box-aggregated over (2r+1)^2 cells before the arg-max
  // The image stages (match_images only). Each flow is matched in both directions when any of them
  // needs the other direction (fill, final_fill, forward-backward confidence).
  bool fill = true;        // consistency check + edge-aware interpolation of the coarse flows
  bool dis = true;         // DIS refinement of both flows at pixel level
  bool final_fill = true;  // consistency check + interpolation of the refined flow
  float coarse_tol = 3.f;  // consistency tolerance of the coarse flows (px)
  float fine_tol = 0.75f;  // consistency tolerance of the refined flows (px)
  float rel_tol = 0.1f;    // consistency tolerance relative to the flow magnitude
  // Pixels without 2-D structure (flow_texture_mask: window radius, gradient) are interpolated by
  // the fills too, consistent or not. texture_gradient 0: off.
  int texture_radius = 4;
  float texture_gradient = 0.01f;
  // The final fill's seeds leave out flat pixels: those whose own gradient magnitude
  // (flow_texture_mask, TextureMeasure::Gradient, one pixel) is below flat_gradient. 0: off.
  float flat_gradient = 0.002f;
  // The fills use Nadaraya-Watson averages, not affine fits: the fills' seeds carry the coarse
  // stage's noise (up to coarse_tol), and an affine fit extrapolates it into large holes (an
  // integer shift came out within 0.1 px on 92 % of astronaut.png with affine fits, 97.5 %
  // without).
  InterpOptions interp = [] {
    InterpOptions i;
    i.affine = false;
    return i;
  }();
  // With spatial propagation (the presets' value): refining from the filled coarse flow, it
  // recovers regions the coarse stage got wrong from the neighbours that are right (Sintel
  // 80.8 -> 86.9 PCK-5, aloe 72 -> 85, bench/accuracy-results.md).
  DisOptions dis_options = [] {
    DisOptions d;
    d.spatial_propagation = true;
    return d;
  }();
  // Similarity search (match_images only, with the reverse flow): when few coarse matches are
  // forward-backward consistent (kSimilarityTrigger), rotations and zooms of b are tried at a
  // coarse grid (similarity_search in match.cpp); the best one, when it clearly beats b as it is,
  // warps b and the pipeline runs again on the warped b (flow composed back into b).
  // Off, Auto (the check decides), Always (the search runs on every pair).
  enum class SimilaritySearch { Off, Auto, Always };
  SimilaritySearch similarity_search = SimilaritySearch::Auto;
  uint64_t seed = 0;  // seed of the global GOCor regulariser's initial weights
  bool fitted_params =
      true;  // GOCor parameters fitted to the built-in descriptor (false: spec 4.7 init)
  int out_h = 0, out_w = 0;  // output flow size; 0: the size of a (vectors rescaled otherwise)
  MatchConfidence confidence = MatchConfidence::Peak;
};

struct MatchResult {
  int H = 0, W = 0;
  std::vector<float> flow;        // (2, H, W) in pixels of the output grid
  std::vector<float> confidence;  // (H, W) in [0, 1], empty for MatchConfidence::None
  // (H, W), 1 where the final forward-backward check failed (occluded, out of view or unreliable:
  // the flow there is interpolated from consistent neighbours); empty without final_fill.
  std::vector<uint8_t> occlusion;
  // Wall time of each stage in milliseconds, in pipeline order (both directions summed).
  std::vector<std::pair<const char*, double>> timings;
};

// match's global stage appends one constant channel of this value to both global levels (then
// scales every cell by 1 / sqrt(1 + bias^2)), so its global GOCor / correlation works on C + 1
// channels; why: with_bias_channel in match.cpp.
constexpr float kMatchGlobalBias = 1.f;

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
MatchResult match_pyramids(const FeaturePyramid& a, const FeaturePyramid& b, const MatchOptions& o,
                           const Exec& ex);

// Pairs of fewer pixels than this (a's and b's together) keep the memory their stages free for
// the next stage and call to reuse; larger ones hand it back to the system between stages (their
// peak matters more than the page faults of mapping it again).
constexpr size_t kMatchRetainPixels = size_t{1} << 20;

// The image pipeline: features (b on a's local strides); the coarse-to-fine flow of match_pyramids
// in both directions (when a stage needs the reverse flow); forward-backward check, pixels without
// 2-D structure and inconsistent ones filled by flow_interpolate (fill); flow_refine_dis of both
// flows; a second check whose failures are filled again and reported as `occlusion` (final_fill).
// b_pixels, when given, is the storage b.data points into, lent by the caller: it is freed as soon
// as no stage reads b's colours any more (after the coarse fill), which lowers the peak.
MatchResult match_images(const ImageView& a, const ImageView& b, const MatchOptions& o,
                         const Exec& ex, std::vector<float>* b_pixels = nullptr);

// Host memory, in bytes, that match_pyramids allocates besides its pyramids (levels' C, H, W,
// kinds and the image sizes are read; data may be empty), and that match_images allocates for an
// Ha x Wa and an Hb x Wb image, result included; `threads` as in Exec. The peak of the stages as
// they allocate: keep them next to the code when a stage changes (test/reliability/memory.test.ts
// compares them with the measured peak).
size_t match_pyramids_work_bytes(const FeaturePyramid& a, const FeaturePyramid& b,
                                 const MatchOptions& o, bool with_images, int threads);
size_t match_images_bytes(int Ha, int Wa, int Hb, int Wb, const MatchOptions& o, int threads);

}  // namespace gocor
