#include "test_data.h"

#include <cmath>

namespace gocor_test {

uint64_t Rng::next() {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double Rng::uniform() {
  return (static_cast<double>(next() >> 11) + 1.0) / 9007199254740992.0;
}

double Rng::normal() {
  return std::sqrt(-2.0 * std::log(uniform())) * std::cos(6.283185307179586 * uniform());
}

std::vector<float> random_vec(size_t n, uint64_t seed) {
  std::vector<float> v(n);
  Rng rng{seed * 0x9E3779B97F4A7C15ull + 1};
  for (auto& x : v) x = static_cast<float>(static_cast<double>(rng.next() >> 40) / 8388608.0 - 1.0);
  return v;
}

std::vector<float> random_vec_fast(size_t n, uint32_t seed) {
  std::vector<float> v(n);
  uint32_t s = seed * 2654435761u + 12345u;
  for (auto& x : v) {
    s = s * 1664525u + 1013904223u;
    x = static_cast<float>(s >> 8) / 8388608.0f - 1.0f;
  }
  return v;
}

void l2_normalise(std::vector<float>& x, int B, int C, int N) {
  for (int b = 0; b < B; ++b)
    for (int n = 0; n < N; ++n) {
      double ss = 0;
      for (int c = 0; c < C; ++c)
        ss += double(x[((size_t)b * C + c) * N + n]) * x[((size_t)b * C + c) * N + n];
      const float inv = static_cast<float>(1.0 / std::sqrt(ss + 1e-6));
      for (int c = 0; c < C; ++c) x[((size_t)b * C + c) * N + n] *= inv;
    }
}

}  // namespace gocor_test
