// Dense Inverse Search refinement of a given flow (Kroeger et al., "Fast Optical Flow using Dense
// Inverse Search", ECCV 2016), optionally with variational refinement per scale (the
// colour + gradient constancy and smoothness energy of Brox et al. 2004 / DeepFlow).
// Convention of flow.h: flow (2, H, W) lives on a's pixel grid and points into b, a(x) ~ b(x +
// flow(x)); plane 0 = u (x, right), plane 1 = v (y, down), in pixels; pixel centres at integers.
#pragma once

#include <cstddef>

#include "common.h"  // gocor::Exec, gocor::Error, ErrorCode

namespace gocor {

// Defaults: the DIS paper's patch geometry at full resolution, and DeepFlow's / DIS's weights of
// the variational energy (each constancy term is normalised by its gradient, so they carry over
// from 0..255 images); halving or doubling any weight changed PCK-1 by < 0.5% on real pairs
// (Sintel, Middlebury, KITTI, ETH3D) seeded by match. There 8 variational iterations instead of 5
// would add 0.6% PCK-1 for ~15% more time.
struct DisOptions {
  // Refinement starts at 1/2^coarsest_scale of full size, clamped so that the level is >= 2
  // patches across.
  int coarsest_scale = 3;
  // Stops at 1/2^finest_scale (0 = full resolution; > 0: the result is upsampled).
  int finest_scale = 0;
  int patch_size = 8;    // 2 .. 128
  int patch_stride = 4;  // 1 .. patch_size (larger would leave pixels no patch covers)
  int grad_iters = 16;   // inverse-compositional Gauss-Newton iterations per patch, at most
  // Variational refinement iterations per scale (0 = off): each one re-weights the robust terms
  // and runs one red-black SOR sweep.
  int var_iters = 5;
  float var_alpha = 20.f;  // smoothness weight
  float var_gamma = 10.f;  // gradient constancy weight
  float var_delta = 5.f;   // colour (brightness) constancy weight
  // Spatial propagation (as OpenCV's DIS): the patch search runs in two sweeps over the patch
  // grid, from the top left and then from the bottom right, each with half of grad_iters; a patch
  // starts from whichever of its own start and the flows its left / upper (right / lower)
  // neighbours just found has a clearly lower SSD (10 %, 20 % at the finest scale: dis.cpp says
  // why). A motion the coarser scale missed spreads from the
  // patches that found it (Sintel's blurred ground, large motion: DIS from zero flow 20 -> 53 %
  // PCK-5 there in OpenCV). Rows are swept in stripes of 32 patch rows, whatever the threads.
  // The CUDA twin repeats it: one block per stripe, its rows as a wavefront (the CPU's inputs).
  // On a tie of flat fits (both SSDs within dis_propagation_rule's flat: a patch with no texture,
  // where any nearby flow fits) the neighbour's flow wins, so the flow of textured areas spreads
  // into flat ones instead of the seed's interpolation error staying there.
  bool spatial_propagation = false;
};

// Spatial propagation's rule, one definition for the CPU and the CUDA twin: a swept neighbour's
// flow replaces a patch's start when its SSD is below `ratio` times the start's, or when both are
// at most `flat`.
// ratio: the SSD of b read bilinearly is lowest near whole-pixel positions (interpolation blurs b
// less there), so picking the lowest of nearly equal candidates pulls sub-pixel flow towards whole
// pixels (a (5.3, -2.6) shift: median error 0.05 -> 0.22 px with a plain minimum). Propagation is
// for gross errors: at the finest scale, whose flow is the result, it needs 20 % lower SSD
// (0.06 px), at coarser ones 10 % (Sintel, ETH3D: 0.1-0.5 PCK-5 points above 20 %).
// flat: the SSD of a patch of patch_size^2 pixels at 0.1 grey level (of 255) RMS, i.e. a constant
// (e.g. saturated) patch. Integer shift (7, 3) of astronaut.png: 94.96 -> 98.55 % of the overlap
// within 0.1 px; the real pairs' and the chairs' PCK-5 unchanged. Half a grey level also fixed
// Oxford bikes' white wall (99.9 -> 100.0) but took ETH3D's flat areas from their own disparity to
// a neighbour's (99.9 -> 99.2).
struct DisPropagationRule {
  float ratio, flat;
};
inline DisPropagationRule dis_propagation_rule(int patch_size, bool finest_scale) {
  return {finest_scale ? 0.8f : 0.9f,
          float(patch_size * patch_size) * (0.1f / 255.f) * (0.1f / 255.f)};
}

// gray_a (H, W), gray_b (Hb, Wb) float32 in [0, 1]; flow (2, H, W) on a's pixel grid, pointing into
// b: the seed, refined in place. Image pyramids (2x, [1 3 3 1] / 8 blur); the seed, area-averaged,
// starts the coarsest scale; at each scale a patch grid does inverse search from the current flow,
// the patches are densified (photometric weights) and the variational refinement follows; the flow
// is upsampled to the next scale. An image smaller than one patch leaves the seed unchanged.
// Bad sizes throw Shape; bad options, null pointers or a non-finite seed throw InvalidArg.
// Results do not depend on ex.threads; on x86 CPUs with AVX2 + FMA the hot loops run 8 lanes wide
// (GOCOR_SIMD=portable: 4), which changes results only in rounding (under 1e-3 px for 99% of the
// pixels whose match lies inside b).
void flow_refine_dis_cpu(const float* gray_a, int H, int W, const float* gray_b, int Hb, int Wb,
                         float* flow, const DisOptions& o, const Exec& ex);

// Host bytes flow_refine_dis allocates at its peak (an upper estimate), at the finest scale: a's
// image and gradient planes and b's image, the flow planes and the variational refinement's.
size_t flow_refine_dis_work_bytes(int H, int W, int Hb, int Wb, const DisOptions& o);

// One patch of the inverse search at full resolution, the unit flow_refine_dis runs on every patch
// of every scale (exposed for tests against a straightforward Lucas-Kanade): a's patch
// (o.patch_size)^2 with top-left pixel (x0, y0) inside a; uv (2) is its start flow, replaced by the
// visited flow of lowest mean-normalised SSD (the start itself when no step lowered it, or when
// the search drifted more than patch_size away). At most o.grad_iters steps; it stops early once
// a step is under 0.01 px.
void dis_patch_search(const float* gray_a, int H, int W, const float* gray_b, int Hb, int Wb,
                      int x0, int y0, const DisOptions& o, float* uv);

}  // namespace gocor
