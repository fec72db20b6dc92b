// GOCor: the globally optimised correlation volume (spec sections 3-6), global and local variants.
#pragma once

#include <cstdint>
#include <vector>

#include "common.h"

namespace gocor {

constexpr int kNumDistBins = 10;
constexpr float kBinDisplacement = 0.5f;

// Weights of the three learnt functions of distance (spec 3.2): label y, weight v+, and the
// logit of the negative slope m (m = sigmoid(interpolated logit)).
struct DistanceFns {
  float label[kNumDistBins];       // label_map_predictor.weight (1,10,1,1)
  float weight[kNumDistBins];      // spatial_weight_predictor.weight (1,10,1,1)
  float mask_logit[kNumDistBins];  // target_mask_predictor.0.weight (1,10,1,1)
};

// Evaluates y, v+ and m at distance d (grid pixels), spec 3.1/3.2.
void distance_fns_eval(const DistanceFns& fns, double d, double* y, double* v, double* m);

// Parameters of global GOCor (GLU-Net-GOCor constructor, spec 4.7).
struct GlobalGocorParams {
  std::vector<float> target_fg;  // (C)
  std::vector<float> target_bg;  // (C)
  float log_step_length = 0.f;
  float filter_reg = 1e-2f;
  float steplength_reg = 0.f;
  float min_filter_reg = 1e-5f;
  int reg_inter_dim = 16;          // I
  int reg_output_dim = 16;         // O
  std::vector<float> reg_weight1;  // (I,1,3,3)
  std::vector<float> reg_weight2;  // (O,I,3,3)
  DistanceFns dist;
};

// Parameters of local GOCor (PWC-Net-GOCor constructor, spec 5.6).
struct LocalGocorParams {
  float scaling = 1.f;
  float log_step_length = 0.f;
  float filter_reg = 1e-2f;
  float min_filter_reg = 1e-5f;
  DistanceFns dist;
};

// Official initial values (spec 3.2, 4.7, 5.6). reg_weight1/2 are drawn N(0, 1e-3) from `seed`
// with gocor's own documented generator (see gocor_params.cpp), not PyTorch's.
DistanceFns default_distance_fns();
GlobalGocorParams default_global_params(int C, uint64_t seed = 0);
LocalGocorParams default_local_params();

// Per-iteration figures for users studying convergence. Global: one entry per batch element and
// iteration, alpha per batch element (query term on) or the mean of per-filter alphas (off).
// Local: alpha statistics over pixels.
struct GocorIterDiag {
  int batch = 0;
  int iter = 0;
  double loss_ref = 0, loss_query = 0, loss_reg = 0;
  double grad_norm = 0;  // ||grad||_2 over all filters of the batch element
  double alpha = 0;      // global with query term: the step length; otherwise the mean alpha
  double alpha_min = 0, alpha_max = 0;
};

struct GlobalGocorOptions {
  int num_iter = 3;
  bool apply_query_loss = true;
};

struct LocalGocorOptions {
  int num_iter = 3;
  int search_radius = 4;
};

struct GocorGlobalShape {
  int B, C, H, W;  // reference and query both (B, C, H, W)
};

// reference, query (B,C,H,W) -> volume (B, H*W, H, W) with volume[b, t, ry, rx] = w_r . g_t.
// filter_out (B, H*W, C) receives the final filters when non-null; diag, when non-null, is filled
// with B*num_iter entries.
void gocor_global_cpu(const GlobalGocorParams& p, const GlobalGocorOptions& o,
                      const float* reference, const float* query, float* volume, float* filter_out,
                      const GocorGlobalShape& s, const Exec& ex, std::vector<GocorIterDiag>* diag);

// Host memory, in bytes, that gocor_global_cpu allocates besides its inputs and outputs (the
// memory limit adds it to the volume). The batch elements share it.
size_t gocor_global_work_bytes(const GocorGlobalShape& s, const GlobalGocorOptions& o);

// reference, query (B,C,H,W) -> volume (B, (2R+1)^2, H, W) = (1/C) Corr(w, query).
// filter_out (B,C,H,W) receives the final filters when non-null.
void gocor_local_cpu(const LocalGocorParams& p, const LocalGocorOptions& o, const float* reference,
                     const float* query, float* volume, float* filter_out, int B, int C, int H,
                     int W, const Exec& ex, std::vector<GocorIterDiag>* diag);
// The same for gocor_local_cpu on (C, H, W) maps; `threads` as in Exec.
size_t gocor_local_work_bytes(int C, int H, int W, const LocalGocorOptions& o, int threads);

// gocor_global_cpu and gocor_local_cpu keep their buffers per thread between calls (up to 64 MiB
// each). These free the calling thread's: a pipeline done with GOCor calls them so that the
// buffers do not sit through its later stages.
void gocor_global_release_thread_buffers();
void gocor_local_release_thread_buffers();

}  // namespace gocor
