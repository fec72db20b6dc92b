// Fusion of several dense flow hypotheses by a robust, locally aggregated matching cost.
// Convention (flow.h): flow (2, H, W) float32 on a's pixel grid pointing into b, plane 0 = u (x),
// plane 1 = v (y), in pixels; x right, y down, pixel centres at integer coordinates.
#pragma once

#include <cstddef>

#include "common.h"

namespace gocor {

struct FuseOptions {
  // Costs are box-averaged over (2 radius + 1)^2 pixels before the choice: one pixel's cost is
  // noise (a wrong flow matches some pixels by chance), a window's is evidence. In [0, 64].
  int radius = 4;
  // Photometric term: |a - b_w| + |d/dx a - d/dx b_w| + |d/dy a - d/dy b_w| (b_w: b warped by the
  // candidate, bilinear; gradients by central differences), divided by photo_tol and capped at 1.
  // The gradient terms keep the choice right under brightness changes; the cap keeps occluded and
  // blurred pixels from outvoting the rest of the window. > 0.
  float photo_tol = 0.1f;
  // Forward-backward term: the candidate's consistency error (px, +inf out of view) / fb_tol,
  // capped at 1; weighted by fb_weight (0: photometric cost alone). > 0, >= 0.
  float fb_tol = 3.f;
  float fb_weight = 1.f;
  // Added to the aggregated cost of every candidate but the first: the first is the one to keep
  // unless another is clearly better (the costs of two wrong or two right flows differ by noise).
  // >= 0.
  float margin = 0.f;
};

// gray_a (H, W), gray_b (Hb, Wb) in [0, 1]; candidates (K, 2, H, W): K flows of a into b;
// fb_error (K, H, W): each candidate's forward-backward error (flow_consistency's `error`; null:
// no consistency term) -> flow (2, H, W): at each pixel the candidate of the lowest aggregated
// cost (ties: the lower index), and choice (H, W) its index when non-null. Bad sizes throw Shape,
// bad options or K < 1 throw InvalidArg. Results do not depend on ex.threads.
void flow_fuse_cpu(const float* gray_a, int H, int W, const float* gray_b, int Hb, int Wb,
                   const float* candidates, const float* fb_error, int K, const FuseOptions& o,
                   float* flow, uint8_t* choice, const Exec& ex);

}  // namespace gocor
