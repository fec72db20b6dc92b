// Deterministic inputs shared by the C++ test and benchmark programs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace gocor_test {

// splitmix64 from the raw state s: next() gives 64 random bits, uniform() a double in (0, 1],
// normal() an N(0, 1) draw (Box-Muller, two uniforms per draw).
struct Rng {
  uint64_t s;
  uint64_t next();
  double uniform();
  double normal();
};

// n floats uniform in [-1, 1) from splitmix64 (tests: well-mixed, independent of n).
std::vector<float> random_vec(size_t n, uint64_t seed);

// n floats uniform in [-1, 1) from a 32-bit LCG (benchmarks: cheap to fill large inputs).
std::vector<float> random_vec_fast(size_t n, uint32_t seed);

// L2-normalises (B, C, N) features over channels in place, x / sqrt(sum_c x^2 + 1e-6), as GLU-Net
// does before global GOCor (spec 4.1).
void l2_normalise(std::vector<float>& x, int B, int C, int N);

}  // namespace gocor_test
