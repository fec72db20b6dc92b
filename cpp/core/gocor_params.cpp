// Learnt functions of distance (spec 3.1/3.2) and the official initial parameter values (4.7, 5.6).
#include <cmath>
#include <cstdint>

#include "gocor.h"

namespace gocor {

void distance_fns_eval(const DistanceFns& fns, double d, double* y, double* v, double* m) {
  // Triangular bins of spacing kBinDisplacement; the last bin is a ramp that saturates at 1 so
  // that every distance beyond the last centre falls entirely into it.
  const double u = d / static_cast<double>(kBinDisplacement);
  double ys = 0, vs = 0, ms = 0;
  for (int k = 0; k < kNumDistBins; ++k) {
    double phi;
    if (k < kNumDistBins - 1) {
      phi = std::fmax(0.0, 1.0 - std::fabs(u - k));
    } else {
      phi = std::fmin(1.0, std::fmax(0.0, 1.0 + (u - k)));
    }
    ys += phi * fns.label[k];
    vs += phi * fns.weight[k];
    ms += phi * fns.mask_logit[k];
  }
  // The sigmoid is applied after interpolating the logits (spec 9.6).
  if (y != nullptr) *y = ys;
  if (v != nullptr) *v = vs;
  if (m != nullptr) *m = 1.0 / (1.0 + std::exp(-ms));
}

DistanceFns default_distance_fns() {
  DistanceFns f;
  const double last = static_cast<double>(kNumDistBins - 1) * kBinDisplacement;  // 4.5 px
  for (int k = 0; k < kNumDistBins; ++k) {
    const double dk = k * static_cast<double>(kBinDisplacement);
    // init_gauss_sigma = 1: Gaussian label shifted so that the last bin is exactly 0.
    f.label[k] = static_cast<float>(std::exp(-dk * dk / 2.0) - std::exp(-last * last / 2.0));
    f.weight[k] = 1.f;
    // v_minus_init_factor = 4, v_minus_act = sigmoid.
    f.mask_logit[k] = static_cast<float>(4.0 * std::tanh(2.0 - dk));
  }
  return f;
}

namespace {

// gocor's own deterministic generator for the random R_theta weights. PyTorch's normal_() stream
// cannot be reproduced outside PyTorch, so a seed here gives different (equally distributed)
// values from the official ones; the conformance vectors carry the official draws explicitly.
// splitmix64 (Steele, Lea, Flood 2014) feeds Box-Muller with 53-bit uniforms.
struct SplitMix64 {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in (0, 1]: never 0, so log() in Box-Muller is finite.
  double uniform() {
    return (static_cast<double>(next() >> 11) + 1.0) * (1.0 / 9007199254740992.0);
  }
};

void fill_normal(std::vector<float>& out, double stddev, SplitMix64& rng) {
  const double two_pi = 6.283185307179586476925286766559;
  for (size_t i = 0; i < out.size(); i += 2) {
    const double r = std::sqrt(-2.0 * std::log(rng.uniform()));
    const double t = two_pi * rng.uniform();
    out[i] = static_cast<float>(stddev * r * std::cos(t));
    if (i + 1 < out.size()) out[i + 1] = static_cast<float>(stddev * r * std::sin(t));
  }
}

}  // namespace

GlobalGocorParams default_global_params(int C, uint64_t seed) {
  if (C < 1) throw Error(ErrorCode::InvalidArg, "default_global_params: C must be >= 1");
  GlobalGocorParams p;
  p.target_fg.assign(C, 1.f);
  p.target_bg.assign(C, 0.f);
  p.log_step_length = 0.f;
  p.filter_reg = 1e-2f;
  p.steplength_reg = 0.f;
  p.min_filter_reg = 1e-5f;
  p.reg_inter_dim = 16;
  p.reg_output_dim = 16;
  p.reg_weight1.resize(static_cast<size_t>(p.reg_inter_dim) * 9);
  p.reg_weight2.resize(static_cast<size_t>(p.reg_output_dim) * p.reg_inter_dim * 9);
  // The official constructor draws both kernels with normal_(0, 1e-3): standard deviation 1e-3.
  SplitMix64 rng{seed};
  fill_normal(p.reg_weight1, 1e-3, rng);
  fill_normal(p.reg_weight2, 1e-3, rng);
  p.dist = default_distance_fns();
  return p;
}

LocalGocorParams default_local_params() {
  LocalGocorParams p;
  p.dist = default_distance_fns();
  return p;
}

}  // namespace gocor
