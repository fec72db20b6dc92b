#include "flow.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "blocks.h"
#include "parallel.h"

namespace gocor {
namespace {

void check_grid(const FlowGrid& g, const char* what) {
  if (g.H <= 0 || g.W <= 0 || !(g.sx > 0) || !(g.sy > 0)) {
    throw Error(ErrorCode::Shape, std::string(what) + ": grid sizes and strides must be positive");
  }
}

// Four taps of a bilinear read at continuous grid coordinates (gx, gy), clamped to the grid.
struct Bilinear {
  size_t i00, i01, i10, i11;
  float w00, w01, w10, w11;
};

inline Bilinear bilinear_taps(double gx, double gy, int H, int W) {
  gx = std::clamp(gx, 0.0, double(W - 1));
  gy = std::clamp(gy, 0.0, double(H - 1));
  int x0 = std::min(int(gx), W - 1), y0 = std::min(int(gy), H - 1);
  int x1 = std::min(x0 + 1, W - 1), y1 = std::min(y0 + 1, H - 1);
  float fx = float(gx - x0), fy = float(gy - y0);
  return {size_t(y0) * W + x0, size_t(y0) * W + x1, size_t(y1) * W + x0, size_t(y1) * W + x1,
          (1 - fx) * (1 - fy), fx * (1 - fy),       (1 - fx) * fy,       fx * fy};
}

inline float read(const float* p, const Bilinear& b) {
  return b.w00 * p[b.i00] + b.w01 * p[b.i01] + b.w10 * p[b.i10] + b.w11 * p[b.i11];
}

// Sub-cell offset of a peak s0 between neighbours sm (at -1) and sp (at +1), in [-0.5, 0.5].
inline float parabola(float sm, float s0, float sp) {
  float den = sm - 2 * s0 + sp;
  if (!(den < 0)) return 0.f;
  return std::clamp(0.5f * (sm - sp) / den, -0.5f, 0.5f);
}

}  // namespace

void flow_resample_cpu(const float* flow_in, const FlowGrid& gi, float* flow_out,
                       const FlowGrid& go, const Exec& ex) {
  check_grid(gi, "flow_resample");
  check_grid(go, "flow_resample");
  const size_t Ni = size_t(gi.H) * gi.W, No = size_t(go.H) * go.W;
  parallel_for(go.H, ex.threads, [&](int64_t i) {
    double py = (i + 0.5) * go.sy - 0.5;
    double gy = (py + 0.5) / gi.sy - 0.5;
    for (int j = 0; j < go.W; ++j) {
      double px = (j + 0.5) * go.sx - 0.5;
      Bilinear b = bilinear_taps((px + 0.5) / gi.sx - 0.5, gy, gi.H, gi.W);
      size_t o = size_t(i) * go.W + j;
      flow_out[o] = read(flow_in, b);
      flow_out[No + o] = read(flow_in + Ni, b);
    }
  });
}

void flow_resize_cpu(const float* flow, int H, int W, float* out, int h, int w, const Exec& ex) {
  if (H <= 0 || W <= 0 || h <= 0 || w <= 0) {
    throw Error(ErrorCode::Shape, "flow_resize: sizes must be positive");
  }
  // The output grid, seen in input pixels, has cells of W/w x H/h pixels.
  FlowGrid gi{H, W, 1, 1}, go{h, w, double(W) / w, double(H) / h};
  flow_resample_cpu(flow, gi, out, go, ex);
  const size_t No = size_t(h) * w;
  const float kx = float(double(w) / W), ky = float(double(h) / H);
  for (size_t i = 0; i < No; ++i) {
    out[i] *= kx;
    out[No + i] *= ky;
  }
}

void flow_warp_cpu(const float* feat_b, int C, const FlowGrid& gb, const float* flow,
                   const FlowGrid& ga, float* out, const Exec& ex) {
  check_grid(ga, "flow_warp");
  check_grid(gb, "flow_warp");
  const size_t Na = size_t(ga.H) * ga.W, Nb = size_t(gb.H) * gb.W;
  parallel_for(ga.H, ex.threads, [&](int64_t i) {
    for (int j = 0; j < ga.W; ++j) {
      size_t o = size_t(i) * ga.W + j;
      double px = (j + 0.5) * ga.sx - 0.5 + flow[o];
      double py = (i + 0.5) * ga.sy - 0.5 + flow[Na + o];
      double gx = (px + 0.5) / gb.sx - 0.5, gy = (py + 0.5) / gb.sy - 0.5;
      if (!(gx >= -0.5 && gx <= gb.W - 0.5 && gy >= -0.5 && gy <= gb.H - 0.5)) {
        for (int c = 0; c < C; ++c) out[c * Na + o] = 0.f;
        continue;
      }
      Bilinear b = bilinear_taps(gx, gy, gb.H, gb.W);
      for (int c = 0; c < C; ++c) out[c * Na + o] = read(feat_b + c * Nb, b);
    }
  });
}

void flow_from_global_volume_cpu(const float* volume, const FlowGrid& ga, const FlowGrid& gb,
                                 float* flow, float* peak, const Exec& ex) {
  check_grid(ga, "flow_from_global_volume");
  check_grid(gb, "flow_from_global_volume");
  const size_t Na = size_t(ga.H) * ga.W;
  const int64_t M = int64_t(gb.H) * gb.W;
  parallel_for(int64_t(Na), ex.threads, [&](int64_t r) {
    int64_t best = 0;
    float bv = volume[r];
    for (int64_t t = 1; t < M; ++t) {
      float v = volume[t * Na + r];
      if (v > bv) {
        bv = v;
        best = t;
      }
    }
    int ty = int(best / gb.W), tx = int(best % gb.W);
    auto at = [&](int y, int x) { return volume[(int64_t(y) * gb.W + x) * Na + r]; };
    float dx = (tx > 0 && tx + 1 < gb.W) ? parabola(at(ty, tx - 1), bv, at(ty, tx + 1)) : 0.f;
    float dy = (ty > 0 && ty + 1 < gb.H) ? parabola(at(ty - 1, tx), bv, at(ty + 1, tx)) : 0.f;
    int ry = int(r / ga.W), rx = int(r % ga.W);
    double pbx = (tx + dx + 0.5) * gb.sx - 0.5, pby = (ty + dy + 0.5) * gb.sy - 0.5;
    double pax = (rx + 0.5) * ga.sx - 0.5, pay = (ry + 0.5) * ga.sy - 0.5;
    flow[r] = float(pbx - pax);
    flow[Na + r] = float(pby - pay);
    if (peak) peak[r] = bv;
  });
}

void flow_from_local_volume_cpu(const float* volume, int R, int H, int W, float* residual,
                                float* confidence, const Exec& ex) {
  if (R < 0 || H <= 0 || W <= 0) throw Error(ErrorCode::Shape, "flow_from_local_volume: bad sizes");
  const int S = 2 * R + 1;
  const int D = S * S;
  const size_t N = size_t(H) * W;
  parallel_for(H, ex.threads, [&](int64_t i) {
    for (int j = 0; j < W; ++j) {
      size_t o = size_t(i) * W + j;
      int best = 0;
      float bv = volume[o];
      for (int k = 1; k < D; ++k) {
        float v = volume[size_t(k) * N + o];
        if (v > bv) {
          bv = v;
          best = k;
        }
      }
      int by = best / S, bx = best % S;
      auto at = [&](int y, int x) { return volume[size_t(y * S + x) * N + o]; };
      float dx = (bx > 0 && bx + 1 < S) ? parabola(at(by, bx - 1), bv, at(by, bx + 1)) : 0.f;
      float dy = (by > 0 && by + 1 < S) ? parabola(at(by - 1, bx), bv, at(by + 1, bx)) : 0.f;
      residual[o] = float(bx - R) + dx;
      residual[N + o] = float(by - R) + dy;
      if (confidence) {
        float second = -INFINITY;
        for (int k = 0; k < D; ++k) {
          int ky = k / S, kx = k % S;
          if (std::abs(ky - by) <= 1 && std::abs(kx - bx) <= 1) continue;
          second = std::max(second, volume[size_t(k) * N + o]);
        }
        float c = 0.f;
        if (bv > 0) c = second <= 0 ? 1.f : std::clamp(1.f - second / bv, 0.f, 1.f);
        confidence[o] = c;
      }
    }
  });
}

void flow_warp_image_cpu(const float* b, int C, int Hb, int Wb, const float* flow, int H, int W,
                         float* out, float* mask, const Exec& ex) {
  if (C <= 0 || Hb <= 0 || Wb <= 0 || H <= 0 || W <= 0) {
    throw Error(ErrorCode::Shape, "flow_warp_image: sizes must be positive");
  }
  const size_t N = size_t(H) * W, Nb = size_t(Hb) * Wb;
  parallel_for(H, ex.threads, [&](int64_t i) {
    for (int j = 0; j < W; ++j) {
      size_t o = size_t(i) * W + j;
      double x = j + double(flow[o]), y = i + double(flow[N + o]);
      bool inside = x >= -0.5 && x <= Wb - 0.5 && y >= -0.5 && y <= Hb - 0.5;
      if (mask) mask[o] = inside ? 1.f : 0.f;
      if (!inside) {
        for (int c = 0; c < C; ++c) out[c * N + o] = 0.f;
        continue;
      }
      Bilinear t = bilinear_taps(x, y, Hb, Wb);
      for (int c = 0; c < C; ++c) out[c * N + o] = read(b + c * Nb, t);
    }
  });
}

namespace {

// (C, N) planes -> (N, C) rows, so that one sample's channels are contiguous.
std::vector<float> channels_last(const float* f, int C, size_t N, const Exec& ex) {
  std::vector<float> out(size_t(C) * N);
  parallel_for(int64_t((N + 255) / 256), ex.threads, [&](int64_t blk) {
    const size_t n0 = size_t(blk) * 256, n1 = std::min(N, n0 + 256);
    for (int c = 0; c < C; ++c)
      for (size_t n = n0; n < n1; ++n) out[n * C + c] = f[size_t(c) * N + n];
  });
  return out;
}

// Dot product over C channels of two bilinear reads of channels-last maps (each channel read as
// `read` does), summed in 16 independent lanes so that the compiler vectorises it.
float bilinear_dot(const float* a, const Bilinear& ta, const float* b, const Bilinear& tb, int C) {
  const float *a00 = a + ta.i00 * C, *a01 = a + ta.i01 * C, *a10 = a + ta.i10 * C,
              *a11 = a + ta.i11 * C;
  const float *b00 = b + tb.i00 * C, *b01 = b + tb.i01 * C, *b10 = b + tb.i10 * C,
              *b11 = b + tb.i11 * C;
  constexpr int L = 16;
  float lane[L] = {};
  auto step = [&](int c, int k) {
    const float va = ta.w00 * a00[c] + ta.w01 * a01[c] + ta.w10 * a10[c] + ta.w11 * a11[c];
    const float vb = tb.w00 * b00[c] + tb.w01 * b01[c] + tb.w10 * b10[c] + tb.w11 * b11[c];
    lane[k] += va * vb;
  };
  int c = 0;
  for (; c + L <= C; c += L)
    for (int k = 0; k < L; ++k) step(c + k, k);
  for (int k = 0; c < C; ++c, ++k) step(c, k);
  for (int w = L / 2; w > 0; w /= 2)
    for (int k = 0; k < w; ++k) lane[k] += lane[k + w];
  return lane[0];
}

}  // namespace

void flow_refine_symmetric_cpu(const float* feat_a, const FlowGrid& ga, const float* feat_b,
                               const FlowGrid& gb, int C, float* flow, int iterations,
                               const Exec& ex) {
  check_grid(ga, "flow_refine_symmetric");
  check_grid(gb, "flow_refine_symmetric");
  if (iterations <= 0) return;
  const size_t Na = size_t(ga.H) * ga.W, Nb = size_t(gb.H) * gb.W;
  const std::vector<float> fa = channels_last(feat_a, C, Na, ex),
                           fb = channels_last(feat_b, C, Nb, ex);
  constexpr double h = 0.5;
  for (int it = 0; it < iterations; ++it) {
    parallel_for(ga.H, ex.threads, [&](int64_t i) {
      for (int j = 0; j < ga.W; ++j) {
        size_t o = size_t(i) * ga.W + j;
        float score[3][3];
        bool ok = true;
        for (int dy = -1; dy <= 1 && ok; ++dy) {
          for (int dx = -1; dx <= 1; ++dx) {
            // a at (cell - d h / 2), b at the pixel of (cell + d h / 2) plus the flow.
            double ax = j - 0.5 * dx * h, ay = i - 0.5 * dy * h;
            double px = (ax + 0.5) * ga.sx - 0.5 + flow[o] + dx * h * ga.sx;
            double py = (ay + 0.5) * ga.sy - 0.5 + flow[Na + o] + dy * h * ga.sy;
            double bx = (px + 0.5) / gb.sx - 0.5, by = (py + 0.5) / gb.sy - 0.5;
            if (!(bx >= 0 && bx <= gb.W - 1 && by >= 0 && by <= gb.H - 1)) {
              ok = false;
              break;
            }
            score[dy + 1][dx + 1] = bilinear_dot(fa.data(), bilinear_taps(ax, ay, ga.H, ga.W),
                                                 fb.data(), bilinear_taps(bx, by, gb.H, gb.W), C);
          }
        }
        if (!ok) continue;
        // Only refine around a local maximum at the centre: elsewhere the profile is not a peak.
        float s0 = score[1][1];
        if (s0 < score[1][0] || s0 < score[1][2] || s0 < score[0][1] || s0 < score[2][1]) {
          int by = 1, bx = 1;
          for (int y = 0; y < 3; ++y)
            for (int x = 0; x < 3; ++x)
              if (score[y][x] > score[by][bx]) by = y, bx = x;
          flow[o] += float((bx - 1) * h * ga.sx);
          flow[Na + o] += float((by - 1) * h * ga.sy);
          continue;
        }
        flow[o] += float(parabola(score[1][0], s0, score[1][2]) * h * ga.sx);
        flow[Na + o] += float(parabola(score[0][1], s0, score[2][1]) * h * ga.sy);
      }
    });
  }
}

void flow_volume_aggregate_cpu(float* volume, int D, int H, int W, int radius, const Exec& ex) {
  if (D <= 0 || H <= 0 || W <= 0 || radius < 0) {
    throw Error(ErrorCode::Shape, "flow_volume_aggregate: sizes must be positive");
  }
  if (radius == 0) return;
  const size_t N = size_t(H) * W;
  parallel_for(D, ex.threads, [&](int64_t d) {
    float* p = volume + d * N;
    // Separable box sums with running totals in double (exact enough for any grid size), then the
    // mean over the cells that exist. The rows' horizontal sums are made as the vertical window
    // reaches them, into a ring of the 2 radius + 2 rows it spans (a plane of doubles per call
    // was a fresh mapping to fault in: a 512x512 texture mask's three planes, 6 MiB); a row is
    // summed before the output overwrites it.
    const int ring_rows = 2 * radius + 2;
    std::vector<double> ring(size_t(ring_rows) * W);
    auto sums = [&](int y) { return ring.data() + size_t(y % ring_rows) * W; };
    auto sum_row = [&](int y) {
      const float* r = p + size_t(y) * W;
      double* out = sums(y);
      double acc = 0;
      for (int x = 0; x < std::min(radius, W); ++x) acc += r[x];
      for (int x = 0; x < W; ++x) {
        if (x + radius < W) acc += r[x + radius];
        if (x - radius - 1 >= 0) acc -= r[x - radius - 1];
        out[x] = acc;
      }
    };
    std::vector<double> acc(W, 0.0);
    for (int y = 0; y < std::min(radius, H); ++y) {
      sum_row(y);
      for (int x = 0; x < W; ++x) acc[x] += sums(y)[x];
    }
    for (int y = 0; y < H; ++y) {
      if (y + radius < H) {
        sum_row(y + radius);
        for (int x = 0; x < W; ++x) acc[x] += sums(y + radius)[x];
      }
      if (y - radius - 1 >= 0)
        for (int x = 0; x < W; ++x) acc[x] -= sums(y - radius - 1)[x];
      const int ny = std::min(H - 1, y + radius) - std::max(0, y - radius) + 1;
      for (int x = 0; x < W; ++x) {
        const int nx = std::min(W - 1, x + radius) - std::max(0, x - radius) + 1;
        p[size_t(y) * W + x] = float(acc[x] / (nx * ny));
      }
    }
  });
}

void flow_consistency_cpu(const float* fwd, int H, int W, const float* bwd, int Hb, int Wb,
                          float abs_tol, float rel_tol, uint8_t* valid, float* error,
                          const Exec& ex) {
  if (H <= 0 || W <= 0 || Hb <= 0 || Wb <= 0 || !(abs_tol >= 0) || !(rel_tol >= 0)) {
    throw Error(ErrorCode::Shape, "flow_consistency: sizes must be positive, tolerances >= 0");
  }
  const size_t N = size_t(H) * W, Nb = size_t(Hb) * Wb;
  parallel_for(H, ex.threads, [&](int64_t y) {
    for (int x = 0; x < W; ++x) {
      const size_t i = size_t(y) * W + x;
      const float u = fwd[i], v = fwd[N + i];
      const double bx = x + double(u), by = y + double(v);
      float e = std::numeric_limits<float>::infinity();
      bool ok = false;
      if (bx > -0.5 && by > -0.5 && bx < Wb - 0.5 && by < Hb - 0.5) {
        Bilinear t = bilinear_taps(bx, by, Hb, Wb);
        const float bu = read(bwd, t), bv = read(bwd + Nb, t);
        const float ex_ = u + bu, ey = v + bv;
        e = std::sqrt(ex_ * ex_ + ey * ey);
        ok = ex_ * ex_ + ey * ey <=
             abs_tol * abs_tol + rel_tol * rel_tol * (u * u + v * v + bu * bu + bv * bv);
      }
      if (error) error[i] = e;
      if (valid) valid[i] = ok;
    }
  });
}

void flow_texture_mask_cpu(const float* gray, int H, int W, int radius, float min_gradient,
                           TextureMeasure measure, uint8_t* textured, const Exec& ex) {
  if (H <= 0 || W <= 0 || radius < 0 || !(min_gradient >= 0)) {
    throw Error(ErrorCode::Shape, "flow_texture_mask: sizes must be positive");
  }
  const size_t N = size_t(H) * W;
  // The products gx^2, gy^2, gx gy of pixel (x, y)'s central differences.
  auto products = [&](int64_t y, int x, float& xx, float& yy, float& xy) {
    const int ym = int(std::max<int64_t>(y - 1, 0)), yp = int(std::min<int64_t>(y + 1, H - 1));
    const int xm = std::max(x - 1, 0), xp = std::min(x + 1, W - 1);
    const float gx = 0.5f * (gray[y * W + xp] - gray[y * W + xm]);
    const float gy = 0.5f * (gray[size_t(yp) * W + x] - gray[size_t(ym) * W + x]);
    xx = gx * gx, yy = gy * gy, xy = gx * gy;
  };
  const double t = double(min_gradient) * min_gradient;
  auto test = [&](double a, double c, double b) {
    const double m = measure == TextureMeasure::Gradient
                         ? a + c
                         : 0.5 * (a + c) - std::sqrt(0.25 * (a - c) * (a - c) + b * b);
    return m >= t;
  };
  if (radius == 0) {
    // A window of one pixel: no planes to average (match's flat-pixel test, once per match).
    parallel_for(H, ex.threads, [&](int64_t y) {
      for (int x = 0; x < W; ++x) {
        float xx, yy, xy;
        products(y, x, xx, yy, xy);
        textured[size_t(y) * W + x] = test(xx, yy, xy);
      }
    });
    return;
  }
  WorkVector<float> g(3 * N);  // planes gx^2, gy^2, gx gy
  float *gxx = g.data(), *gyy = gxx + N, *gxy = gyy + N;
  parallel_for(H, ex.threads, [&](int64_t y) {
    for (int x = 0; x < W; ++x) {
      const size_t i = size_t(y) * W + x;
      products(y, x, gxx[i], gyy[i], gxy[i]);
    }
  });
  // The three products' window means: the same box mean over in-grid cells as a volume's
  // displacement planes get.
  flow_volume_aggregate_cpu(g.data(), 3, H, W, radius, ex);
  parallel_for(H, ex.threads, [&](int64_t y) {
    for (int x = 0; x < W; ++x) {
      const size_t i = size_t(y) * W + x;
      textured[i] = test(gxx[i], gyy[i], gxy[i]);
    }
  });
}

void flow_median3_cpu(float* flow, int H, int W, const Exec& ex) {
  const size_t N = size_t(H) * W;
  std::vector<float> src(flow, flow + 2 * N);
  parallel_for(2 * int64_t(H), ex.threads, [&](int64_t ci) {
    int c = int(ci / H), i = int(ci % H);
    const float* p = src.data() + c * N;
    for (int j = 0; j < W; ++j) {
      float v[9];
      int n = 0;
      for (int y = std::max(i - 1, 0); y <= std::min(i + 1, H - 1); ++y) {
        for (int x = std::max(j - 1, 0); x <= std::min(j + 1, W - 1); ++x)
          v[n++] = p[size_t(y) * W + x];
      }
      std::nth_element(v, v + n / 2, v + n);
      flow[c * N + size_t(i) * W + j] = v[n / 2];
    }
  });
}

}  // namespace gocor
