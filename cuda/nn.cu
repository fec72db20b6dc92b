// The layers of the official networks on the GPU: twins of cpp/core/nn.h's conv2d,
// conv_transpose2d, leaky_relu, warp, resize_bilinear, resize_area, maxpool2, l2norm_channels,
// mutual_matching and gocor_local_f64 (one image (C, H, W) per call, as the CPU twins).
// The convolutions are implicit GEMMs (shared-memory tiles of the weight and of the input samples,
// no column matrix) whose float32 sums run in another order than the CPU's packed GEMM: they agree
// with it to the bound that order allows (the parity rows derive it from K and sum |w x|). Every
// other layer repeats the CPU's operations in its order, each rounded on its own (rounded.cuh: the
// CPU builds for baseline x86-64 without FMA, nvcc would fuse), so it gives the CPU's bits.
// The host twins are checks and one cuda::HostCall around the device entries (cuda_dev::nn::),
// which a device-resident forward chains without copies.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "cuda_util.cuh"
#include "dist_table.cuh"
#include "gocor_cuda.h"
#include "gocor_cuda_device.cuh"
#include "nn.h"
#include "rounded.cuh"

namespace gocor {
namespace cuda {
namespace {

__device__ __forceinline__ float activate(float v, nn::Act a) {
  if (a == nn::Act::Relu) return v > 0.f ? v : 0.f;
  if (a == nn::Act::Leaky) return v > 0.f ? v : rn::mul(0.1f, v);
  return v;
}

// ---- convolution: an implicit GEMM out (out, P) = A (out, K) x samples (K, P) ----------------
// K index r = i * kk + t (input channel i, tap t = ky * k + kx); A(o, r) is read from the weight
// (out, in, k, k), the one layout the CPU keeps.
constexpr int kTileM = 64, kTileN = 64, kTileK = 16, kConvThreads = 256;

__global__ void conv2d_kernel(cuda_dev::nn::ConvDevice c, const float* __restrict__ in, int H,
                              int W, int Ho, int Wo, float* __restrict__ out) {
  __shared__ float As[kTileK][kTileM + 1];
  __shared__ float Bs[kTileK][kTileN];
  const int kk = c.k * c.k, K = c.in * kk, P = Ho * Wo;
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int o0 = blockIdx.y * kTileM, p0 = blockIdx.x * kTileN;
  float acc[4][4] = {};
  for (int k0 = 0; k0 < K; k0 += kTileK) {
    for (int l = 0; l < kTileM * kTileK / kConvThreads; ++l) {
      // The weight tile: consecutive threads read consecutive r of one output channel.
      const int e = tid + l * kConvThreads, m = e / kTileK, q = e % kTileK;
      const int o = o0 + m, r = k0 + q;
      float v = 0.f;
      if (o < c.out && r < K) {
        const int i = r / kk, t = r % kk;
        v = c.weight[((long long)o * c.in + i) * kk + t];
      }
      As[q][m] = v;
    }
    for (int l = 0; l < kTileN * kTileK / kConvThreads; ++l) {
      // The samples: consecutive threads read consecutive output positions of one row r.
      const int e = tid + l * kConvThreads, q = e / kTileN, n = e % kTileN;
      const int p = p0 + n, r = k0 + q;
      float v = 0.f;
      if (p < P && r < K) {
        const int i = r / kk, t = r % kk, ky = t / c.k, kx = t % c.k;
        const int iy = (p / Wo) * c.stride - c.pad + ky * c.dil;
        const int ix = (p % Wo) * c.stride - c.pad + kx * c.dil;
        if (iy >= 0 && iy < H && ix >= 0 && ix < W) v = in[((long long)i * H + iy) * W + ix];
      }
      Bs[q][n] = v;
    }
    __syncthreads();
    // Each tile's 16 products summed on their own, then added to the total: a blocked sum, whose
    // rounding error grows with 16 + K/16 instead of K (the CPU's per-tap GEMMs block likewise).
    float part[4][4] = {};
    for (int q = 0; q < kTileK; ++q) {
      float a[4], b[4];
      for (int u = 0; u < 4; ++u) a[u] = As[q][ty * 4 + u];
      for (int u = 0; u < 4; ++u) b[u] = Bs[q][tx * 4 + u];
      for (int u = 0; u < 4; ++u)
        for (int v = 0; v < 4; ++v) part[u][v] += a[u] * b[v];
    }
    for (int u = 0; u < 4; ++u)
      for (int v = 0; v < 4; ++v) acc[u][v] += part[u][v];
    __syncthreads();
  }
  // The CPU's epilogue, rounded as it is: act((acc + bias) * bn_scale + bn_shift).
  for (int u = 0; u < 4; ++u) {
    const int o = o0 + ty * 4 + u;
    if (o >= c.out) continue;
    for (int v = 0; v < 4; ++v) {
      const int p = p0 + tx * 4 + v;
      if (p >= P) continue;
      float x = rn::add(acc[u][v], c.bias[o]);
      if (c.bn_scale != nullptr) x = rn::add(rn::mul(x, c.bn_scale[o]), c.bn_shift[o]);
      out[(long long)o * P + p] = activate(x, c.act);
    }
  }
}

// ---- transposed convolution k 4, s 2, p 1 ------------------------------------------------------
// out[o, Y, X] = bias[o] + the 2x2 taps (ky, kx) with (Y + 1 - ky) and (X + 1 - kx) even, each
// the dot over input channels of weight_t row (o*16 + ky*4 + kx) and the input pixel, added in
// the CPU's order (ky, then kx, ascending).
__global__ void conv_transpose2d_kernel(const float* __restrict__ weight_t,
                                        const float* __restrict__ bias, int Cin, int Cout,
                                        const float* __restrict__ in, int H, int W,
                                        float* __restrict__ out) {
  const int Wo = 2 * W, Ho = 2 * H;
  const int X = blockIdx.x * blockDim.x + threadIdx.x, Y = blockIdx.y, o = blockIdx.z;
  if (X >= Wo) return;
  const long long P = (long long)H * W;
  float acc = bias[o];
  for (int ky = (Y + 1) & 1; ky < 4; ky += 2) {
    const int iy = (Y + 1 - ky) / 2;
    if (iy < 0 || iy >= H) continue;
    for (int kx = (X + 1) & 1; kx < 4; kx += 2) {
      const int ix = (X + 1 - kx) / 2;
      if (ix < 0 || ix >= W) continue;
      const float* w = weight_t + ((long long)o * 16 + ky * 4 + kx) * Cin;
      const float* x = in + (long long)iy * W + ix;
      float dot = 0.f;
      for (int i = 0; i < Cin; ++i) dot += w[i] * x[i * P];
      acc = rn::add(acc, dot);
    }
  }
  out[((long long)o * Ho + Y) * Wo + X] = acc;
}

// ---- element-wise and resampling layers (the CPU's operations, in its order) -------------------

__global__ void leaky_relu_kernel(float* x, long long n) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] = x[i] > 0.f ? x[i] : rn::mul(0.1f, x[i]);
}

__global__ void warp_kernel(const float* __restrict__ in, const float* __restrict__ flow, int C,
                            int H, int W, bool with_mask, float* __restrict__ out) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y;
  if (x >= W) return;
  const long long P = (long long)H * W, p = (long long)y * W + x;
  const float sx = float(max(W - 1, 1)), sy = float(max(H - 1, 1));
  const float hx = rn::div(float(W - 1), 2.f), hy = rn::div(float(H - 1), 2.f);
  const float px = rn::add(float(x), flow[p]), py = rn::add(float(y), flow[P + p]);
  const float gx = rn::sub(rn::div(rn::mul(2.f, px), sx), 1.f);
  const float gy = rn::sub(rn::div(rn::mul(2.f, py), sy), 1.f);
  const float ix = rn::mul(rn::add(gx, 1.f), hx), iy = rn::mul(rn::add(gy, 1.f), hy);
  float w[4] = {0, 0, 0, 0};
  long long at[4] = {0, 0, 0, 0};
  float m = 0.f;
  if (isfinite(ix) && isfinite(iy) && fabsf(ix) < 1e9f && fabsf(iy) < 1e9f) {
    const float fx = floorf(ix), fy = floorf(iy);
    const float tx = rn::sub(ix, fx), ty = rn::sub(iy, fy);
    const int x0 = int(fx), y0 = int(fy);
    const float ux = rn::sub(1.f, tx), uy = rn::sub(1.f, ty);
    const float cw[4] = {rn::mul(ux, uy), rn::mul(tx, uy), rn::mul(ux, ty), rn::mul(tx, ty)};
    const int cx[4] = {x0, x0 + 1, x0, x0 + 1}, cy[4] = {y0, y0, y0 + 1, y0 + 1};
    for (int j = 0; j < 4; ++j) {
      if (cx[j] >= 0 && cx[j] < W && cy[j] >= 0 && cy[j] < H) {
        w[j] = cw[j];
        at[j] = (long long)cy[j] * W + cx[j];
        m = rn::add(m, cw[j]);
      }
    }
  }
  const bool zero = with_mask && !(m >= 0.9999f);
  for (int c = 0; c < C; ++c) {
    const float* src = in + c * P;
    float v = 0.f;
    if (!zero) {
      v = rn::mul(w[0], src[at[0]]);
      v = rn::add(v, rn::mul(w[1], src[at[1]]));
      v = rn::add(v, rn::mul(w[2], src[at[2]]));
      v = rn::add(v, rn::mul(w[3], src[at[3]]));
    }
    out[c * P + p] = v;
  }
}

// Source index and weight of output o along an axis of n_in -> n_out (align_corners False).
__device__ __forceinline__ void linear_tap(int o, float scale, int n_in, int* i0, int* i1,
                                           float* l) {
  const float s = fmaxf(0.f, rn::sub(rn::mul(rn::add(float(o), 0.5f), scale), 0.5f));
  *i0 = min(int(s), n_in - 1);
  *i1 = min(*i0 + 1, n_in - 1);
  *l = rn::sub(s, float(*i0));
}

__global__ void resize_bilinear_kernel(const float* __restrict__ in, int Hi, int Wi,
                                       float* __restrict__ out, int Ho, int Wo, float sy,
                                       float sx) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y, c = blockIdx.z;
  if (x >= Wo) return;
  int x0, x1, y0, y1;
  float lx, ly;
  linear_tap(x, sx, Wi, &x0, &x1, &lx);
  linear_tap(y, sy, Hi, &y0, &y1, &ly);
  const float* r0 = in + ((long long)c * Hi + y0) * Wi;
  const float* r1 = in + ((long long)c * Hi + y1) * Wi;
  const float ux = rn::sub(1.f, lx);
  const float a = rn::add(rn::mul(ux, r0[x0]), rn::mul(lx, r0[x1]));
  const float b = rn::add(rn::mul(ux, r1[x0]), rn::mul(lx, r1[x1]));
  out[((long long)c * Ho + y) * Wo + x] = rn::add(rn::mul(rn::sub(1.f, ly), a), rn::mul(ly, b));
}

__global__ void resize_area_kernel(const float* __restrict__ in, int Hi, int Wi,
                                   float* __restrict__ out, int Ho, int Wo) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x, i = blockIdx.y, c = blockIdx.z;
  if (j >= Wo) return;
  const long long ys = (long long)i * Hi / Ho, ye = ((long long)(i + 1) * Hi + Ho - 1) / Ho;
  const long long xs = (long long)j * Wi / Wo, xe = ((long long)(j + 1) * Wi + Wo - 1) / Wo;
  float sum = 0.f;
  for (long long y = ys; y < ye; ++y)
    for (long long x = xs; x < xe; ++x) sum = rn::add(sum, in[((long long)c * Hi + y) * Wi + x]);
  out[((long long)c * Ho + i) * Wo + j] = rn::div(sum, float((ye - ys) * (xe - xs)));
}

__global__ void maxpool2_kernel(const float* __restrict__ in, int H, int W,
                                float* __restrict__ out) {
  const int Ho = H / 2, Wo = W / 2;
  const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y, c = blockIdx.z;
  if (x >= Wo) return;
  const float* r0 = in + ((long long)c * H + 2 * y) * W + 2 * x;
  const float* r1 = r0 + W;
  // std::max(a, b) is (a < b) ? b : a: NaN handling as on the CPU.
  auto mx = [](float a, float b) { return a < b ? b : a; };
  out[((long long)c * Ho + y) * Wo + x] = mx(mx(r0[0], r0[1]), mx(r1[0], r1[1]));
}

__global__ void l2norm_channels_kernel(float* x, int C, long long P) {
  const long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= P) return;
  double s = 0;
  for (int c = 0; c < C; ++c) s = rn::add(s, rn::mul(double(x[c * P + p]), double(x[c * P + p])));
  const float n = __fsqrt_rn(rn::add(float(s), 1e-6f));
  for (int c = 0; c < C; ++c) x[c * P + p] = rn::div(x[c * P + p], n);
}

// Row maxima a[t] (over r) when rows is true, else column maxima b[r] (over t), each starting at
// -inf and kept as std::max keeps it.
__global__ void matching_max_kernel(const float* __restrict__ v, int N, bool rows,
                                    float* __restrict__ out) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= N) return;
  float m = -INFINITY;
  for (int k = 0; k < N; ++k) {
    const float e = rows ? v[(long long)j * N + k] : v[(long long)k * N + j];
    m = m < e ? e : m;
  }
  out[j] = m;
}

__global__ void mutual_matching_kernel(float* v, int N, const float* __restrict__ a,
                                       const float* __restrict__ b) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (long long)N * N) return;
  const int t = int(i / N), r = int(i % N);
  float& m = v[i];
  const float ra = rn::div(m, rn::add(a[t], 1e-5f)), rb = rn::div(m, rn::add(b[r], 1e-5f));
  m = rn::mul(m, rn::mul(ra, rb));
}

// ---- local GOCor in float64 (the networks' local correlation layer) ----------------------------
// One thread per pixel, the CPU twin's operations in its order (nn_gocor64.cpp): its filter
// initialised from the pixel's reference feature, num_iter steepest-descent steps against the
// reference features of its 9 x 9 window, then the correlation with the query window. Features
// are read as (C, H, W) floats widened to double; the pixel's filter and gradient live in the
// (2, C, H*W) double workspace, channel-major so that neighbouring threads read neighbouring
// addresses.
constexpr int kLocalR = 4, kLocalS = 2 * kLocalR + 1, kLocalD = kLocalS * kLocalS;

struct Gocor64Args {
  int C, H, W, num_iter;
  double invc, lambda, step, scaling;
  double yk[kLocalD], vk[kLocalD], mk[kLocalD];
};

__global__ void gocor_local_f64_kernel(const Gocor64Args k, const float* __restrict__ f,
                                       const float* __restrict__ g, double* __restrict__ ws,
                                       float* __restrict__ volume) {
  const long long P = (long long)k.H * k.W;
  const long long pix = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (pix >= P) return;
  const int y = int(pix / k.W), x = int(pix % k.W), C = k.C;
  double* w = ws + pix;
  double* grad = ws + (long long)C * P + pix;
  long long q[kLocalD];  // the in-image displacements' pixels, and their displacement
  int ks[kLocalD], n = 0;
  double J[kLocalD];
  for (int d = 0; d < kLocalD; ++d) {
    const int qy = y + d / kLocalS - kLocalR, qx = x + d % kLocalS - kLocalR;
    if (qy < 0 || qy >= k.H || qx < 0 || qx >= k.W) continue;
    ks[n] = d;
    q[n++] = (long long)qy * k.W + qx;
  }
  // dot(a, b) of two channel-major vectors (stride P) in double, in channel order.
  auto dot = [&](const double* a, const float* bf, const double* bd, long long b0) {
    double s = 0;
    for (int c = 0; c < C; ++c)
      s = rn::add(s, rn::mul(a[c * P], bf != nullptr ? double(bf[c * P + b0]) : bd[c * P]));
    return s;
  };
  double norm = 0;
  for (int c = 0; c < C; ++c) {
    const double v = f[c * P + pix];
    norm = rn::add(norm, rn::mul(v, v));
  }
  norm = rn::add(rn::mul(norm, k.invc), 1e-6);
  for (int c = 0; c < C; ++c) w[c * P] = rn::div(rn::mul(k.scaling, double(f[c * P + pix])), norm);
  for (int it = 0; it < k.num_iter; ++it) {
    for (int c = 0; c < C; ++c) grad[c * P] = rn::mul(k.lambda, w[c * P]);
    for (int j = 0; j < n; ++j) {
      const int d = ks[j];
      const double s = rn::mul(dot(w, f, nullptr, q[j]), k.invc), m = k.mk[d];
      const double sg = s > 0 ? 1.0 : (s < 0 ? -1.0 : 0.0);
      const double hm = rn::mul(0.5, rn::sub(1.0, m)), hp = rn::mul(0.5, rn::add(1.0, m));
      const double sigma = rn::add(rn::mul(hm, fabs(s)), rn::mul(hp, s));
      J[j] = rn::mul(k.vk[d], rn::add(rn::mul(hm, sg), hp));
      const double a = rn::mul(rn::mul(rn::mul(J[j], k.vk[d]), rn::sub(sigma, k.yk[d])), k.invc);
      for (int c = 0; c < C; ++c)
        grad[c * P] = rn::add(grad[c * P], rn::mul(a, double(f[c * P + q[j]])));
    }
    const double num = dot(grad, nullptr, grad, 0);
    double den = rn::mul(k.lambda, num);
    for (int j = 0; j < n; ++j) {
      const double t = rn::mul(rn::mul(J[j], dot(grad, f, nullptr, q[j])), k.invc);
      den = rn::add(den, rn::mul(t, t));
    }
    const double a = -rn::mul(k.step, rn::div(num, fmax(den, 1e-8)));
    for (int c = 0; c < C; ++c) w[c * P] = rn::add(w[c * P], rn::mul(a, grad[c * P]));
  }
  for (int d = 0, j = 0; d < kLocalD; ++d) {
    double v = 0;
    if (j < n && ks[j] == d) v = rn::mul(dot(w, g, nullptr, q[j++]), k.invc);
    volume[d * P + pix] = float(v);
  }
}

// ---- checks ------------------------------------------------------------------------------------

void check_positive(const char* op, std::initializer_list<long long> sizes) {
  for (long long s : sizes)
    if (s <= 0) throw Error(ErrorCode::Shape, std::string(op) + ": sizes must be positive");
}

int conv_out(int n, const nn::Conv& c) {
  return nn::conv_out_size(n, c.k, c.stride, c.pad, c.dil);
}

void check_conv(const nn::Conv& c, int H, int W) {
  check_positive("nn::conv2d", {c.out, c.in, c.k, c.stride, c.dil, H, W});
  if (c.pad < 0 || conv_out(H, c) <= 0 || conv_out(W, c) <= 0)
    throw Error(ErrorCode::Shape, "nn::conv2d: the kernel does not fit the padded input");
  const size_t n = size_t(c.out) * c.in * c.k * c.k;
  const bool bn_ok = c.bn_scale.empty()
                         ? c.bn_shift.empty()
                         : c.bn_scale.size() == size_t(c.out) && c.bn_shift.size() == size_t(c.out);
  if (c.weight.size() != n || c.bias.size() != size_t(c.out) || !bn_ok)
    throw Error(ErrorCode::Shape, "nn::conv2d: weight, bias or batch norm of the wrong size");
}

}  // namespace
}  // namespace cuda

namespace cuda_dev {
namespace nn {

void conv2d(const ConvDevice& c, const float* d_in, int H, int W, float* d_out, void* stream) {
  const int Ho = gocor::nn::conv_out_size(H, c.k, c.stride, c.pad, c.dil),
            Wo = gocor::nn::conv_out_size(W, c.k, c.stride, c.pad, c.dil);
  const dim3 grid(cuda::ceil_div((long long)Ho * Wo, cuda::kTileN),
                  cuda::ceil_div(c.out, cuda::kTileM));
  cuda::conv2d_kernel<<<grid, cuda::kConvThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      c, d_in, H, W, Ho, Wo, d_out);
  cuda::check_launch("conv2d_kernel");
}

void conv_transpose2d(const float* d_weight_t, const float* d_bias, int Cin, int Cout,
                      const float* d_in, int H, int W, float* d_out, void* stream) {
  const dim3 grid(cuda::ceil_div(2 * W, 128), 2 * H, Cout);
  cuda::conv_transpose2d_kernel<<<grid, 128, 0, static_cast<cudaStream_t>(stream)>>>(
      d_weight_t, d_bias, Cin, Cout, d_in, H, W, d_out);
  cuda::check_launch("conv_transpose2d_kernel");
}

void leaky_relu(float* d_x, int64_t n, void* stream) {
  if (n <= 0) return;
  cuda::leaky_relu_kernel<<<cuda::ceil_div(n, 256), 256, 0, static_cast<cudaStream_t>(stream)>>>(
      d_x, n);
  cuda::check_launch("leaky_relu_kernel");
}

void warp(const float* d_in, const float* d_flow, int C, int H, int W, bool with_mask, float* d_out,
          void* stream) {
  const dim3 grid(cuda::ceil_div(W, 128), H);
  cuda::warp_kernel<<<grid, 128, 0, static_cast<cudaStream_t>(stream)>>>(d_in, d_flow, C, H, W,
                                                                         with_mask, d_out);
  cuda::check_launch("warp_kernel");
}

void resize_bilinear(const float* d_in, int C, int Hi, int Wi, float* d_out, int Ho, int Wo,
                     void* stream) {
  const dim3 grid(cuda::ceil_div(Wo, 128), Ho, C);
  cuda::resize_bilinear_kernel<<<grid, 128, 0, static_cast<cudaStream_t>(stream)>>>(
      d_in, Hi, Wi, d_out, Ho, Wo, float(Hi) / float(Ho), float(Wi) / float(Wo));
  cuda::check_launch("resize_bilinear_kernel");
}

void resize_area(const float* d_in, int C, int Hi, int Wi, float* d_out, int Ho, int Wo,
                 void* stream) {
  const dim3 grid(cuda::ceil_div(Wo, 128), Ho, C);
  cuda::resize_area_kernel<<<grid, 128, 0, static_cast<cudaStream_t>(stream)>>>(d_in, Hi, Wi, d_out,
                                                                                Ho, Wo);
  cuda::check_launch("resize_area_kernel");
}

void maxpool2(const float* d_in, int C, int H, int W, float* d_out, void* stream) {
  if (H < 2 || W < 2) return;
  const dim3 grid(cuda::ceil_div(W / 2, 128), H / 2, C);
  cuda::maxpool2_kernel<<<grid, 128, 0, static_cast<cudaStream_t>(stream)>>>(d_in, H, W, d_out);
  cuda::check_launch("maxpool2_kernel");
}

void l2norm_channels(float* d_x, int C, int H, int W, void* stream) {
  const long long P = (long long)H * W;
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  cuda::l2norm_channels_kernel<<<cuda::ceil_div(P, 128), 128, 0, st>>>(d_x, C, P);
  cuda::check_launch("l2norm_channels_kernel");
}

size_t gocor_local_f64_workspace_bytes(int C, int H, int W) {
  return sizeof(double) * 2 * size_t(C) * H * W;
}

void gocor_local_f64(const LocalGocorParams& p, int num_iter, const float* d_ref,
                     const float* d_query, float* d_volume, int C, int H, int W,
                     double* d_workspace, void* stream) {
  cuda::Gocor64Args k{};
  k.C = C;
  k.H = H;
  k.W = W;
  k.num_iter = num_iter;
  k.invc = 1.0 / C;
  k.lambda =
      std::max(double(p.filter_reg) * p.filter_reg, double(p.min_filter_reg) * p.min_filter_reg) /
      (double(C) * C);
  k.step = std::exp(double(p.log_step_length));
  k.scaling = double(p.scaling);
  for (int d = 0; d < cuda::kLocalD; ++d) {
    const int dy = d / cuda::kLocalS - cuda::kLocalR, dx = d % cuda::kLocalS - cuda::kLocalR;
    const cuda::DistValues e = cuda::dist_eval(p.dist, std::sqrt(double(dy * dy + dx * dx)));
    k.yk[d] = e.y;
    k.vk[d] = e.v;
    k.mk[d] = e.m;
  }
  const long long P = (long long)H * W;
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  cuda::gocor_local_f64_kernel<<<cuda::ceil_div(P, 128), 128, 0, st>>>(k, d_ref, d_query,
                                                                       d_workspace, d_volume);
  cuda::check_launch("gocor_local_f64_kernel");
}

void mutual_matching(float* d_v, int N, float* d_workspace, void* stream) {
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  float* a = d_workspace;
  float* b = d_workspace + N;
  cuda::matching_max_kernel<<<cuda::ceil_div(N, 128), 128, 0, st>>>(d_v, N, true, a);
  cuda::check_launch("matching_max_kernel");
  cuda::matching_max_kernel<<<cuda::ceil_div(N, 128), 128, 0, st>>>(d_v, N, false, b);
  cuda::check_launch("matching_max_kernel");
  cuda::mutual_matching_kernel<<<cuda::ceil_div((long long)N * N, 256), 256, 0, st>>>(d_v, N, a, b);
  cuda::check_launch("mutual_matching_kernel");
}

}  // namespace nn
}  // namespace cuda_dev

// ---- the host twins
// ------------------------------------------------------------------------------
namespace nn {

void conv2d_cuda(const Conv& c, const float* in, int H, int W, float* out, const Exec& ex) {
  cuda::check_conv(c, H, W);
  cuda::HostCall call(ex);
  cuda_dev::nn::ConvDevice d;
  d.out = c.out;
  d.in = c.in;
  d.k = c.k;
  d.stride = c.stride;
  d.pad = c.pad;
  d.dil = c.dil;
  d.act = c.act;
  d.weight = call.in(c.weight.data(), c.weight.size());
  d.bias = call.in(c.bias.data(), c.bias.size());
  if (!c.bn_scale.empty()) {
    d.bn_scale = call.in(c.bn_scale.data(), c.bn_scale.size());
    d.bn_shift = call.in(c.bn_shift.data(), c.bn_shift.size());
  }
  const size_t n_out = size_t(c.out) * cuda::conv_out(H, c) * cuda::conv_out(W, c);
  cuda_dev::nn::conv2d(d, call.in(in, size_t(c.in) * H * W), H, W, call.out(out, n_out),
                       call.stream());
  call.finish();
}

void conv_transpose2d_cuda(const Deconv& d, const float* in, int H, int W, float* out,
                           const Exec& ex) {
  cuda::check_positive("nn::conv_transpose2d", {d.in, d.out, H, W});
  if (d.weight_t.size() != size_t(d.out) * 16 * d.in || d.bias.size() != size_t(d.out))
    throw Error(ErrorCode::Shape, "nn::conv_transpose2d: weight or bias of the wrong size");
  cuda::HostCall call(ex);
  cuda_dev::nn::conv_transpose2d(call.in(d.weight_t.data(), d.weight_t.size()),
                                 call.in(d.bias.data(), d.bias.size()), d.in, d.out,
                                 call.in(in, size_t(d.in) * H * W), H, W,
                                 call.out(out, size_t(d.out) * 4 * H * W), call.stream());
  call.finish();
}

void leaky_relu_cuda(float* x, int64_t n, const Exec& ex) {
  if (n < 0) throw Error(ErrorCode::Shape, "nn::leaky_relu: negative length");
  cuda::HostCall call(ex);
  cuda_dev::nn::leaky_relu(call.inout(x, size_t(n)), n, call.stream());
  call.finish();
}

void warp_cuda(const float* in, const float* flow, int C, int H, int W, bool with_mask, float* out,
               const Exec& ex) {
  cuda::check_positive("nn::warp", {C, H, W});
  cuda::HostCall call(ex);
  const size_t P = size_t(H) * W;
  cuda_dev::nn::warp(call.in(in, C * P), call.in(flow, 2 * P), C, H, W, with_mask,
                     call.out(out, C * P), call.stream());
  call.finish();
}

// The resizers' twins: in (C, Hi, Wi) -> out (C, Ho, Wo) through the device entry `resize`.
template <typename Resize>
void resize_twin(const char* op, Resize resize, const float* in, int C, int Hi, int Wi, float* out,
                 int Ho, int Wo, const Exec& ex) {
  cuda::check_positive(op, {C, Hi, Wi, Ho, Wo});
  cuda::HostCall call(ex);
  resize(call.in(in, size_t(C) * Hi * Wi), C, Hi, Wi, call.out(out, size_t(C) * Ho * Wo), Ho, Wo,
         call.stream());
  call.finish();
}

void resize_bilinear_cuda(const float* in, int C, int Hi, int Wi, float* out, int Ho, int Wo,
                          const Exec& ex) {
  resize_twin("nn::resize_bilinear", cuda_dev::nn::resize_bilinear, in, C, Hi, Wi, out, Ho, Wo, ex);
}

void resize_area_cuda(const float* in, int C, int Hi, int Wi, float* out, int Ho, int Wo,
                      const Exec& ex) {
  resize_twin("nn::resize_area", cuda_dev::nn::resize_area, in, C, Hi, Wi, out, Ho, Wo, ex);
}

void maxpool2_cuda(const float* in, int C, int H, int W, float* out, const Exec& ex) {
  cuda::check_positive("nn::maxpool2", {C, H / 2, W / 2});
  cuda::HostCall call(ex);
  cuda_dev::nn::maxpool2(call.in(in, size_t(C) * H * W), C, H, W,
                         call.out(out, size_t(C) * (H / 2) * (W / 2)), call.stream());
  call.finish();
}

void l2norm_channels_cuda(float* x, int C, int H, int W, const Exec& ex) {
  cuda::check_positive("nn::l2norm_channels", {C, H, W});
  cuda::HostCall call(ex);
  cuda_dev::nn::l2norm_channels(call.inout(x, size_t(C) * H * W), C, H, W, call.stream());
  call.finish();
}

void mutual_matching_cuda(float* v, int N, const Exec& ex) {
  cuda::check_positive("nn::mutual_matching", {N});
  cuda::HostCall call(ex);
  cuda_dev::nn::mutual_matching(call.inout(v, size_t(N) * N), N, call.scratch<float>(2 * size_t(N)),
                                call.stream());
  call.finish();
}

void gocor_local_f64_cuda(const LocalGocorParams& p, int num_iter, const float* reference,
                          const float* query, float* volume, int C, int H, int W, const Exec& ex) {
  cuda::check_positive("nn::gocor_local_f64", {C, H, W});
  if (num_iter < 0) throw Error(ErrorCode::Shape, "nn::gocor_local_f64: negative num_iter");
  cuda::HostCall call(ex);
  const size_t n = size_t(C) * H * W;
  cuda_dev::nn::gocor_local_f64(
      p, num_iter, call.in(reference, n), call.in(query, n),
      call.out(volume, size_t(cuda::kLocalD) * H * W), C, H, W,
      call.scratch<double>(cuda_dev::nn::gocor_local_f64_workspace_bytes(C, H, W) / sizeof(double)),
      call.stream());
  call.finish();
}

}  // namespace nn
}  // namespace gocor
