// Edge-aware sparse-to-dense flow interpolation in the manner of EpicFlow (Revaud et al., CVPR
// 2015): trusted flow at sparse seeds is spread to every pixel along paths that avoid image edges,
// so that motion boundaries, which mostly coincide with image edges, stay sharp where a Euclidean
// interpolation would blur the two motions into each other.
// Convention (flow.h): flow (2, H, W) float32 on the image's pixel grid, plane 0 = u (x),
// plane 1 = v (y), in pixels; x right, y down, pixel centres at integer coordinates.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common.h"

namespace gocor {

struct InterpOptions {
  // Seeds: one per seed_stride x seed_stride cell, the valid pixel nearest to the cell centre
  // (s/2 + i*s): the centre itself when valid, else the closest valid pixel of the cell, so that a
  // few invalid pixels do not leave holes in the seed grid next to occlusions. In [1, 256].
  int seed_stride = 4;
  // K: seeds each local fit uses, geodesically nearest first (the seed itself included). 32 spans
  // about 3 seed steps around the seed at stride 4, enough for a stable affine fit. In [1, 1024].
  int num_neighbors = 32;
  // Fit weights exp(-alpha * d), d the geodesic distance in pixel-equivalents (1 per pixel of flat
  // image). 0.1: the weight halves every 7 px of flat image, so the K neighbours all count in a
  // flat region (a smooth, stable fit), while a seed behind a full edge (+edge_cost per edge pixel,
  // about 90 px for a sharp step) weighs e^-9 or less. >= 0 (0: plain average of the K).
  float alpha = 0.1f;
  // true: locally weighted affine fit per seed (follows zooms and rotations); it falls back to the
  // weighted average when the weighted neighbours do not span 2-D (spread below 0.05 seed steps^2,
  // where the slopes would amplify noise). false: weighted average (Nadaraya-Watson) only.
  bool affine = true;
  // Edge map: gradient magnitude of the image smoothed by a Gaussian of edge_sigma px (0: none),
  // the largest over colour channels. We have no learnt edge detector (EpicFlow uses structured
  // forests); the blur takes the pixel noise and the finest texture out of the gradients.
  // In [0, 20].
  float edge_sigma = 1.f;
  // Gradient (per pixel, image in [0, 1]) that counts as a full edge: 0.1 is the peak gradient of
  // an intensity step of about 0.25 after the default blur. Below it the edge strength is
  // (gradient / edge_scale)^2: squaring keeps texture and noise, whose gradients sit well below
  // object boundaries, cheap (a third of edge_scale costs a ninth) while a real edge costs fully.
  // The scale is absolute, not normalised per image, so that a low-contrast image falls back to
  // Euclidean interpolation instead of having its noise promoted to edges. > 0.
  float edge_scale = 0.1f;
  // Cost of a pixel = 1 + edge_cost * strength (strength in [0, 1]): a full-edge pixel is worth a
  // detour of edge_cost px. 30 puts a sharp boundary (about 3 px of full strength after the blur)
  // about 90 px away, farther than the K neighbours reach on one side. In [0, 1000]; 0 makes the
  // interpolation Euclidean.
  float edge_cost = 30.f;
  // true: out is the flow itself at the trusted pixels (valid, finite), and only the seeds whose
  // Voronoi cells hold an untrusted pixel are fitted (a fill that keeps its trusted values needs
  // no other model: in match's fills 75-95 % of the fits are saved). The untrusted pixels get
  // the same values as with false.
  bool keep_valid = false;
};

// Dense flow from trusted sparse flow, edge-aware.
// image (C, H, W) float32 in [0, 1], C = 1 (gray) or 3 (RGB): the image the flow lives on;
// flow (2, H, W) in pixels; valid (H, W), nonzero where the flow is trusted (a pixel with a
// non-finite flow is never trusted); out (2, H, W), which may not overlap flow, except that with
// keep_valid it may be flow itself (filled in place: the fills need no second copy of the flow).
// Every pixel, valid ones included, gets the model of its geodesically nearest seed evaluated at
// the pixel (EpicFlow's output: it also smooths the noise of the trusted flow; a caller that wants
// the trusted values kept copies them back, or sets keep_valid). With no valid seed at all out is
// a copy of flow: there is nothing to interpolate from, and the caller's fallback stays in its
// hands.
// Steps: edge cost map; seeds; multi-source Dijkstra on the pixel grid giving each pixel its
// nearest seed (the geodesic Voronoi diagram, flow_interpolate_voronoi); a seed graph whose edges
// join seeds with touching Voronoi cells, weighted by the shortest geodesic path through their
// common boundary (EpicFlow's approximation of the seed-to-seed distance); per seed a Dijkstra on
// that graph to its K nearest seeds and the weighted fit. Deterministic: the result does not
// depend on ex.threads (the per-seed fits run in parallel, each on its own data).
// Throws Error(Shape) for bad sizes, Error(InvalidArg) for bad options or pointers,
// Error(TooLarge) for an image past 2^31 pixels or whose distances could overflow 32 bits.
void flow_interpolate_cpu(const float* image, int C, int H, int W, const float* flow,
                          const uint8_t* valid, float* out, const InterpOptions& o, const Exec& ex);

// Host bytes flow_interpolate allocates for an H x W image with C channels (an upper estimate:
// every seed-grid cell holding a seed; the edge map, costs and queue keys per pixel, the seed
// graph, the seeds' models and the K-nearest search states).
size_t flow_interpolate_work_bytes(int C, int H, int W, const InterpOptions& o);

// The geodesic Voronoi diagram of flow_interpolate, exposed so it can be checked on its own.
// cost (H, W) per-pixel cost >= 1 (flow_interpolate uses 1/32 px units: 32 for a flat pixel);
// seeds (n) pixel indices y * W + x (duplicates allowed); nearest (H, W) receives the index into
// seeds of the seed with the smallest geodesic distance to the pixel, ties going to the smaller
// index (-1 when n = 0); dist (H, W) that distance (UINT32_MAX when n = 0).
// Paths step between 8-neighbours; a step between p and q costs cost[p] + cost[q] when axial and
// (1448 (cost[p] + cost[q]) + 512) >> 10 when diagonal (sqrt 2 to 1/1024): integers, so the
// distances are exact, ties are real ties, and a bucket queue (Dial's algorithm) replaces the heap.
// `bands` > 1: the rows cut into that many bands, each band's diagram made on a thread of its own
// and the paths across the cuts added after (what flow_interpolate does with several threads):
// the same result for any number of bands.
// Throws Error(Shape) for bad sizes, Error(InvalidArg) for a seed outside the image or a zero
// cost, Error(TooLarge) when distances could overflow 32 bits.
void flow_interpolate_voronoi(const uint16_t* cost, int H, int W, const int32_t* seeds, int n,
                              int32_t* nearest, uint32_t* dist, int bands = 1);

}  // namespace gocor
