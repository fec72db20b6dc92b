// Dense flow fields: reading flow off correlation volumes, resampling, warping.
// Convention everywhere: flow lives on the grid of image a and points into image b:
// a(x) corresponds to b(x + flow(x)); x right, y down, pixel centres at integer coordinates.
// A flow field is (2, H, W) float32: plane 0 = u (x), plane 1 = v (y), in source pixels of a/b.
#pragma once

#include <cstdint>

#include "common.h"

namespace gocor {

// A grid of cells over an image: cell (i, j) is centred on pixel ((j+0.5)*sx - 0.5, (i+0.5)*sy -
// 0.5). A full-resolution pixel grid is {H, W, 1, 1}.
struct FlowGrid {
  int H, W;
  double sx, sy;
};

// flow_in (2, gi.H, gi.W) -> flow_out (2, go.H, go.W): bilinear in pixel coordinates of the same
// image (border clamped); vectors unchanged (both grids measure the same pixels).
void flow_resample_cpu(const float* flow_in, const FlowGrid& gi, float* flow_out,
                       const FlowGrid& go, const Exec& ex);

// flow (2, H, W) of an image of size (H, W) -> out (2, h, w) for the same image resized to (h, w):
// vectors scaled by (w / W, h / H) (the outputShape of match).
void flow_resize_cpu(const float* flow, int H, int W, float* out, int h, int w, const Exec& ex);

// Brings features of b onto the grid of a along the flow.
// feat_b (C, gb.H, gb.W), flow (2, ga.H, ga.W) in pixels -> out (C, ga.H, ga.W):
// out[:, i, j] = feat_b sampled bilinearly at the b-cell of pixel p_a(i, j) + flow(i, j);
// zero where that point lies more than half a cell outside b's grid.
void flow_warp_cpu(const float* feat_b, int C, const FlowGrid& gb, const float* flow,
                   const FlowGrid& ga, float* out, const Exec& ex);

// Global volume (Gb.H*Gb.W, Ga.H, Ga.W) in the layout of corr_global / gocor_global
// (query cell t in the channel axis, reference cell in space) -> flow (2, Ga.H, Ga.W) in pixels
// and peak (Ga.H, Ga.W): arg-max over t, refined by a 1-D parabola fit per axis (sub-cell).
void flow_from_global_volume_cpu(const float* volume, const FlowGrid& ga, const FlowGrid& gb,
                                 float* flow, float* peak, const Exec& ex);

// Local volume (D = (2R+1)^2, H, W), layout of corr_local -> residual displacement (2, H, W) in
// cells of the grid (arg-max with a parabola fit per axis) and confidence (H, W) in [0, 1]:
// 1 - (best score outside the peak's 3x3) / (peak), clamped (a peak-ratio; 0 when not positive).
void flow_from_local_volume_cpu(const float* volume, int R, int H, int W, float* residual,
                                float* confidence, const Exec& ex);

// Bilinear backward warp: image b (C, Hb, Wb), flow (2, H, W) on a's pixel grid -> out (C, H, W)
// with out(x) = b(x + flow(x)); points outside b are 0 and their mask entry (H, W) is 0 (else 1).
void flow_warp_image_cpu(const float* b, int C, int Hb, int Wb, const float* flow, int H, int W,
                         float* out, float* mask, const Exec& ex);

// Sub-cell refinement with a symmetric similarity profile. Reading sub-cell flow off a local volume
// (score of a's cell against b's neighbouring cells) is biased wherever the descriptor field is not
// symmetric around the cell; sampling a at x - d/2 and b at x + flow + d/2 instead gives a profile
// that is symmetric about the true match for a locally translating pair, so a parabola fit is not.
// feat_a (C, ga.H, ga.W), feat_b (C, gb.H, gb.W), flow (2, ga.H, ga.W) in pixels, updated in place;
// `iterations` rounds with offsets d in {-h, 0, h}^2 cells, h = 0.5 cell; each step <= 0.5 cell.
void flow_refine_symmetric_cpu(const float* feat_a, const FlowGrid& ga, const float* feat_b,
                               const FlowGrid& gb, int C, float* flow, int iterations,
                               const Exec& ex);

// Cost aggregation of a local volume (D, H, W) in place: every displacement plane becomes its mean
// over the (2 radius + 1)^2 cells around each cell (the in-grid part). The local stage's arg-max
// of one cell alone jumps to a wrong peak wherever the descriptor is ambiguous (flat or repetitive
// areas, occlusions); neighbours share the displacement relative to the (smooth) flow they were
// warped with, so summing their scores keeps the peak that the neighbourhood agrees on.
void flow_volume_aggregate_cpu(float* volume, int D, int H, int W, int radius, const Exec& ex);

// Forward-backward consistency of two flows: fwd (2, H, W) on a's pixel grid into b, bwd
// (2, Hb, Wb) on b's grid into a. error (H, W) = |fwd(x) + bwd(x + fwd(x))| (bwd read bilinearly),
// or +inf where x + fwd(x) falls outside b (out of view). valid (H, W) = 1 where
// error^2 <= abs_tol^2 + rel_tol^2 (|fwd(x)|^2 + |bwd(x + fwd(x))|^2) (Sundaram et al. 2010's
// test with a floor), else 0: occluded pixels and wrong matches fail it.
void flow_consistency_cpu(const float* fwd, int H, int W, const float* bwd, int Hb, int Wb,
                          float abs_tol, float rel_tol, uint8_t* valid, float* error,
                          const Exec& ex);

// What flow_texture_mask measures of the structure tensor T (the central-difference gradients'
// products averaged over the window).
enum class TextureMeasure : int {
  // The smaller eigenvalue of T: 2-D structure (a straight edge has none).
  SmallerEigenvalue = 0,
  // Its trace, the mean squared gradient magnitude: any structure (only flat areas have none).
  Gradient = 1,
};

// Where an image has enough structure to pin a match down: textured (H, W) = 1 where the measure
// of the structure tensor (central-difference gradients of gray (H, W), averaged over a
// (2 radius + 1)^2 window) is at least min_gradient^2. In flat or one-directional areas (sky, a
// dark background, a straight edge) every descriptor looks alike along some direction, so a match
// there is a guess that may still pass the forward-backward check; interpolating those pixels from
// textured neighbours is the better guess.
void flow_texture_mask_cpu(const float* gray, int H, int W, int radius, float min_gradient,
                           TextureMeasure measure, uint8_t* textured, const Exec& ex);

// 3x3 median of each flow component (2, H, W) in place: removes isolated wrong peaks between
// levels.
void flow_median3_cpu(float* flow, int H, int W, const Exec& ex);

}  // namespace gocor
