// Host-side evaluation of GOCor's learnt functions of distance (spec 3.1/3.2), in double, for the
// tables the kernels read. Kept inside cuda/ so the backend library needs nothing from gocor_core.
#pragma once

#include <algorithm>
#include <cmath>

#include "gocor.h"

namespace gocor {
namespace cuda {

struct DistValues {
  double y, v, m;  // label, weight, negative slope
};

inline DistValues dist_eval(const DistanceFns& fns, double d) {
  const double u = d / kBinDisplacement;
  double y = 0, v = 0, logit = 0;
  for (int k = 0; k < kNumDistBins; ++k) {
    double phi = k < kNumDistBins - 1 ? std::max(0.0, 1.0 - std::fabs(u - k))
                                      : std::min(1.0, std::max(0.0, 1.0 + (u - k)));
    y += fns.label[k] * phi;
    v += fns.weight[k] * phi;
    logit += fns.mask_logit[k] * phi;
  }
  return {y, v, 1.0 / (1.0 + std::exp(-logit))};
}

// What the kernels need per distance: y, v, (1-m)/2, (1+m)/2 (so sigma and sigma' are two FMAs).
struct DistEntry {
  float y, v, hm, hp;
};

inline DistEntry dist_entry(const DistanceFns& fns, double d) {
  const DistValues e = dist_eval(fns, d);
  return {static_cast<float>(e.y), static_cast<float>(e.v), static_cast<float>((1.0 - e.m) / 2),
          static_cast<float>((1.0 + e.m) / 2)};
}

}  // namespace cuda
}  // namespace gocor
