// Dense flow fields: reading flow off correlation volumes, resampling, warping.
// Convention everywhere: flow lives on the grid of image a and points into image b:
// a(x) corresponds to b(x + flow(x)); x right, y down, pixel centres at integer coordinates.
// A flow field is (2, H, W) float32: plane 0 = u (x), plane 1 = v (y), in source pixels of a/b.
#pragma once

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
void flow_resample(const float* flow_in, const FlowGrid& gi, float* flow_out, const FlowGrid& go,
                   const Exec& ex);

// flow (2, H, W) of an image of size (H, W) -> out (2, h, w) for the same image resized to (h, w):
// vectors scaled by (w / W, h / H) (the outputShape of match).
void flow_resize(const float* flow, int H, int W, float* out, int h, int w, const Exec& ex);

// Brings features of b onto the grid of a along the flow.
// feat_b (C, gb.H, gb.W), flow (2, ga.H, ga.W) in pixels -> out (C, ga.H, ga.W):
// out[:, i, j] = feat_b sampled bilinearly at the b-cell of pixel p_a(i, j) + flow(i, j);
// zero where that point lies more than half a cell outside b's grid.
void flow_warp(const float* feat_b, int C, const FlowGrid& gb, const float* flow,
               const FlowGrid& ga, float* out, const Exec& ex);

// Global volume (Gb.H*Gb.W, Ga.H, Ga.W) in the layout of corr_global / gocor_global
// (query cell t in the channel axis, reference cell in space) -> flow (2, Ga.H, Ga.W) in pixels
// and peak (Ga.H, Ga.W): arg-max over t, refined by a 1-D parabola fit per axis (sub-cell).
void flow_from_global_volume(const float* volume, const FlowGrid& ga, const FlowGrid& gb,
                             float* flow, float* peak, const Exec& ex);

// Local volume (D = (2R+1)^2, H, W), layout of corr_local -> residual displacement (2, H, W) in
// cells of the grid (arg-max with a parabola fit per axis) and confidence (H, W) in [0, 1]:
// 1 - (best score outside the peak's 3x3) / (peak), clamped (a peak-ratio; 0 when not positive).
void flow_from_local_volume(const float* volume, int R, int H, int W, float* residual,
                            float* confidence, const Exec& ex);

// Bilinear backward warp: image b (C, Hb, Wb), flow (2, H, W) on a's pixel grid -> out (C, H, W)
// with out(x) = b(x + flow(x)); points outside b are 0 and their mask entry (H, W) is 0 (else 1).
void flow_warp_image(const float* b, int C, int Hb, int Wb, const float* flow, int H, int W,
                     float* out, float* mask, const Exec& ex);

// Sub-cell refinement with a symmetric similarity profile. Reading sub-cell flow off a local volume
// (score of a's cell against b's neighbouring cells) is biased wherever the descriptor field is not
// symmetric around the cell; sampling a at x - d/2 and b at x + flow + d/2 instead gives a profile
// that is symmetric about the true match for a locally translating pair, so a parabola fit is not.
// feat_a (C, ga.H, ga.W), feat_b (C, gb.H, gb.W), flow (2, ga.H, ga.W) in pixels, updated in place;
// `iterations` rounds with offsets d in {-h, 0, h}^2 cells, h = 0.5 cell; each step <= 0.5 cell.
void flow_refine_symmetric(const float* feat_a, const FlowGrid& ga, const float* feat_b,
                           const FlowGrid& gb, int C, float* flow, int iterations, const Exec& ex);

// Pixel-level Lucas-Kanade refinement on the images (the last step of match_images). gray_a
// (H, W), gray_b (Hb, Wb) in [0, 1]; flow (2, H, W) on a's pixel grid, updated in place.
// Both images are turned into local contrast first (3x3 box mean minus the 9x9 box mean of that),
// which removes brightness offsets. Each of `iterations` rounds: at every pixel j the gradient g_j
// (mean of a's and of b's at the current match) and b(x_j + f_j) - a(x_j), linearised about the
// pixel's own flow f_j; each pixel's new flow is the least-squares constant flow of its
// (2 radius + 1)^2 window (a Gauss-Newton step, so the rounds converge), taken where the window's
// structure tensor is well conditioned (det > 1e-3 trace^2) and the change is at most 1 px per
// axis. Pixels whose match lies outside b keep their flow and add nothing to the windows.
void flow_refine_photometric(const float* gray_a, int H, int W, const float* gray_b, int Hb, int Wb,
                             float* flow, int iterations, int radius, const Exec& ex);

// 3x3 median of each flow component (2, H, W) in place: removes isolated wrong peaks between
// levels.
void flow_median3(float* flow, int H, int W, const Exec& ex);

}  // namespace gocor
