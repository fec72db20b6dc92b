// A straightforward float64 GOCor written directly from the specification (sections 3-5), used as
// the test oracle for the fast CPU (and CUDA) implementations. Slow on purpose: no algebra, the
// query regulariser R_theta is applied literally as K1 (query axes, 1->I) then K2 (reference axes,
// I->O) and its adjoint as the two transposed convolutions.
#pragma once

#include <vector>

#include "gocor.h"

namespace gocor_ref {

// reference, query (B,C,H,W) -> volume (B, H*W, H, W) [b, t, ry, rx] = w_r . g_t,
// filter (B, H*W, C); diag gets B*num_iter entries (losses at the filter before each step).
// min_abs_score, when given, gets the smallest |S[r,s]| = |w_r . f_s| met in any iteration: a
// score within float32 rounding of 0 has no reliable sign in float32 (spec 12), so tests use it
// to screen their inputs the way the conformance inputs were screened.
void gocor_global_ref64(const gocor::GlobalGocorParams& p, const gocor::GlobalGocorOptions& o,
                        const float* reference, const float* query,
                        const gocor::GocorGlobalShape& s, std::vector<double>* volume,
                        std::vector<double>* filter, std::vector<gocor::GocorIterDiag>* diag,
                        double* min_abs_score = nullptr);

// reference, query (B,C,H,W) -> volume (B, (2R+1)^2, H, W) = (1/C) Corr(w, query),
// filter (B,C,H,W).
void gocor_local_ref64(const gocor::LocalGocorParams& p, const gocor::LocalGocorOptions& o,
                       const float* reference, const float* query, int B, int C, int H, int W,
                       std::vector<double>* volume, std::vector<double>* filter,
                       std::vector<gocor::GocorIterDiag>* diag);

}  // namespace gocor_ref
