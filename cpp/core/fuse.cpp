#include "fuse.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "flow.h"
#include "parallel.h"

namespace gocor {

namespace {

// Central-difference gradients (one-sided at the border) of img (H, W) -> gx, gy (H, W).
void gradients(const float* img, int H, int W, float* gx, float* gy, const Exec& ex) {
  parallel_for(H, ex.threads, [&](int64_t y) {
    const int y0 = std::max(int(y) - 1, 0), y1 = std::min(int(y) + 1, H - 1);
    for (int x = 0; x < W; ++x) {
      const int x0 = std::max(x - 1, 0), x1 = std::min(x + 1, W - 1);
      const size_t i = size_t(y) * W + x;
      gx[i] = x1 > x0 ? (img[size_t(y) * W + x1] - img[size_t(y) * W + x0]) / float(x1 - x0) : 0.f;
      gy[i] = y1 > y0 ? (img[size_t(y1) * W + x] - img[size_t(y0) * W + x]) / float(y1 - y0) : 0.f;
    }
  });
}

// Bilinear sample of p (H, W) at (x, y), which lies inside [0, W-1] x [0, H-1].
float sample(const float* p, int H, int W, float x, float y) {
  const int x0 = std::min(int(x), W - 2 < 0 ? 0 : W - 2),
            y0 = std::min(int(y), H - 2 < 0 ? 0 : H - 2);
  const int x1 = std::min(x0 + 1, W - 1), y1 = std::min(y0 + 1, H - 1);
  const float fx = x - x0, fy = y - y0;
  const float top = p[size_t(y0) * W + x0] * (1 - fx) + p[size_t(y0) * W + x1] * fx;
  const float bot = p[size_t(y1) * W + x0] * (1 - fx) + p[size_t(y1) * W + x1] * fx;
  return top * (1 - fy) + bot * fy;
}

}  // namespace

void flow_fuse_cpu(const float* gray_a, int H, int W, const float* gray_b, int Hb, int Wb,
                   const float* candidates, const float* fb_error, int K, const FuseOptions& o,
                   float* flow, uint8_t* choice, const Exec& ex) {
  const std::string fn = "flow_fuse";
  if (H <= 0 || W <= 0 || Hb <= 0 || Wb <= 0) throw Error(ErrorCode::Shape, fn + ": empty image");
  if (!gray_a || !gray_b || !candidates || !flow) {
    throw Error(ErrorCode::InvalidArg, fn + ": null pointer");
  }
  if (K < 1 || K > 255 || o.radius < 0 || o.radius > 64 || !(o.photo_tol > 0) || !(o.fb_tol > 0) ||
      !(o.fb_weight >= 0) || !(o.margin >= 0)) {
    throw Error(ErrorCode::InvalidArg, fn + ": invalid options");
  }
  const size_t P = size_t(H) * W, Pb = size_t(Hb) * Wb;
  std::vector<float> ga(2 * P), gb(2 * Pb);
  gradients(gray_a, H, W, ga.data(), ga.data() + P, ex);
  gradients(gray_b, Hb, Wb, gb.data(), gb.data() + Pb, ex);
  std::vector<float> cost(size_t(K) * P);
  for (int k = 0; k < K; ++k) {
    const float* f = candidates + size_t(k) * 2 * P;
    const float* err = fb_error ? fb_error + size_t(k) * P : nullptr;
    float* c = cost.data() + size_t(k) * P;
    parallel_for(H, ex.threads, [&](int64_t y) {
      for (int x = 0; x < W; ++x) {
        const size_t i = size_t(y) * W + x;
        const float bx = x + f[i], by = float(y) + f[P + i];
        float photo = 1.f;
        if (bx >= 0 && by >= 0 && bx <= Wb - 1 && by <= Hb - 1) {
          const float d = std::abs(gray_a[i] - sample(gray_b, Hb, Wb, bx, by)) +
                          std::abs(ga[i] - sample(gb.data(), Hb, Wb, bx, by)) +
                          std::abs(ga[P + i] - sample(gb.data() + Pb, Hb, Wb, bx, by));
          photo = std::min(d / o.photo_tol, 1.f);
        }
        float fb = 0.f;
        if (err) fb = std::isfinite(err[i]) ? std::min(err[i] / o.fb_tol, 1.f) : 1.f;
        c[i] = photo + o.fb_weight * fb;
      }
    });
    check_cancel(ex);
  }
  // The box mean of every cost plane (the local volumes' aggregation, over K planes).
  flow_volume_aggregate_cpu(cost.data(), K, H, W, o.radius, ex);
  parallel_for(H, ex.threads, [&](int64_t y) {
    for (int x = 0; x < W; ++x) {
      const size_t i = size_t(y) * W + x;
      int best = 0;
      for (int k = 1; k < K; ++k) {
        const float ck = cost[size_t(k) * P + i] + o.margin;
        if (ck < cost[size_t(best) * P + i] + (best ? o.margin : 0.f)) best = k;
      }
      const float* f = candidates + size_t(best) * 2 * P;
      flow[i] = f[i];
      flow[P + i] = f[P + i];
      if (choice) choice[i] = uint8_t(best);
    }
  });
}

}  // namespace gocor
