// The dense descriptor on the GPU: twins of cpp/core's image_resize and features_compute
// (features.cpp describes the design). The CPU code is built for baseline x86-64, so it has no FMA
// and sums in a fixed order; these kernels use the same order with explicitly rounded multiplies
// and adds (__fmul_rn / __fadd_rn, and __dmul_rn / __dadd_rn in double: the library is compiled
// with --fmad=true, which would otherwise fuse a double a * b + c), so every stage reproduces the
// CPU's float32 values. The two per-image reductions (the mean centre-histogram norm and the mean
// descriptor of the zero-mean step) are summed in double in the CPU's order, cell 0 first, by one
// thread per sum: deterministic, and the same bits as std::accumulate / the CPU loop.
#include <algorithm>
#include <cmath>
#include <string>

#include "cuda_util.cuh"
#include "dense_features.h"
#include "gocor_cuda.h"
#include "gocor_cuda_device.cuh"
#include "separable.cuh"

namespace gocor {
namespace cuda {
namespace {

// Must equal features.cpp's private constants (the CPU twin is the specification).
constexpr int kOrient = 8;
constexpr int kRingPoints = 8;
constexpr int kSamples = 1 + 2 * kRingPoints;
constexpr double kRing1 = 1.25, kRing2 = 2.5;
constexpr double kSigmaSmall = 0.9, kSigmaLarge = 1.5;
constexpr double kHistFloor = 0.25;

// The taps of output o of a separable resampler from S to s samples, exactly as resample_taps in
// features.cpp (double arithmetic, weights rounded to float then divided by their double sum);
// recomputed per output instead of tabulated so the device needs no upload. Calls f(i, weight)
// for source indices i in order.
template <typename F>
__device__ __forceinline__ void resample_taps(int S, int s, int o, F f) {
  const double scale = double(S) / s;
  const double support = fmax(1.0, scale);
  const int max_taps = int(ceil(support)) * 2 + 1;
  const double c = __dsub_rn(__dmul_rn(o + 0.5, scale), 0.5);
  int lo = int(floor(c - support)) + 1, hi = int(ceil(c + support)) - 1;
  lo = max(lo, 0);
  hi = min(hi, S - 1);
  if (hi < lo) lo = hi = min(max(int(llround(c)), 0), S - 1);
  hi = min(hi, lo + max_taps - 1);
  double sum = 0;
  for (int i = lo; i <= hi; ++i) sum += fmax(0.0, 1.0 - fabs(i - c) / support);
  if (sum <= 0) {
    f(lo, 1.f);
    return;
  }
  for (int i = lo; i <= hi; ++i) {
    const float v = float(fmax(0.0, 1.0 - fabs(i - c) / support));
    f(i, float(double(v) / sum));
  }
}

// The resampler's taps as a separable filter (separable.cuh).
struct ResampleTaps {
  template <typename F>
  __device__ void operator()(int S, int s, int o, F f) const {
    resample_taps(S, s, o, f);
  }
};

// img (B, C, H, W) -> gray (B, H, W): luma for C >= 3 (alpha ignored), else the first plane.
__global__ void gray_kernel(const float* __restrict__ img, float* __restrict__ gray, int C,
                            long long HW, long long total) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const long long b = i / HW, p = i % HW;
  const float* im = img + b * C * HW + p;
  if (C >= 3) {
    gray[i] = __fadd_rn(__fadd_rn(__fmul_rn(0.299f, im[0]), __fmul_rn(0.587f, im[HW])),
                        __fmul_rn(0.114f, im[2 * HW]));
  } else {
    gray[i] = im[0];
  }
}

struct OrientCoef {
  float cosk[kOrient], sink[kOrient];
};

// work (B, Hk, Wk) -> maps (B, 8, Hk, Wk): half-rectified oriented central differences.
__global__ void orient_kernel(const float* __restrict__ work, float* __restrict__ maps, int Hk,
                              int Wk, OrientCoef co) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x;
  const int y = blockIdx.y;
  const long long b = blockIdx.z;
  if (x >= Wk) return;
  const long long P = (long long)Hk * Wk;
  const float* im = work + b * P;
  const float* row = im + (long long)y * Wk;
  const float* up = im + (long long)max(y - 1, 0) * Wk;
  const float* dn = im + (long long)min(y + 1, Hk - 1) * Wk;
  const float gx = __fmul_rn(0.5f, __fsub_rn(row[min(x + 1, Wk - 1)], row[max(x - 1, 0)]));
  const float gy = __fmul_rn(0.5f, __fsub_rn(dn[x], up[x]));
  float* out = maps + b * kOrient * P + (long long)y * Wk + x;
#pragma unroll
  for (int k = 0; k < kOrient; ++k) {
    out[k * P] = fmaxf(0.f, __fadd_rn(__fmul_rn(gx, co.cosk[k]), __fmul_rn(gy, co.sink[k])));
  }
}

// Gaussian taps as blur_plane builds them (radius ceil(3 sigma), float taps over their double sum).
BlurTaps blur_taps(double sigma) {
  BlurTaps t{};
  t.r = std::max(1, int(std::ceil(3 * sigma)));
  if (2 * t.r + 1 > kMaxBlurTaps) {
    throw Error(ErrorCode::TooLarge,
                "features_compute_cuda: the blur is too wide for the CUDA kernel (cell too large)");
  }
  double sum = 0;
  for (int i = -t.r; i <= t.r; ++i) {
    sum += (t.k[i + t.r] = float(std::exp(-0.5 * i * i / (sigma * sigma))));
  }
  for (int i = 0; i <= 2 * t.r; ++i) t.k[i] = float(t.k[i] / sum);
  return t;
}

struct SampleOffsets {
  double ox[kSamples], oy[kSamples];
};

// Bilinear read with clamped coordinates, as `sample` in features.cpp.
__device__ __forceinline__ float sample_plane(const float* p, int H, int W, double x, double y) {
  x = fmin(fmax(x, 0.0), double(W - 1));
  y = fmin(fmax(y, 0.0), double(H - 1));
  const int x0 = min(int(x), W - 1), y0 = min(int(y), H - 1);
  const int x1 = min(x0 + 1, W - 1), y1 = min(y0 + 1, H - 1);
  const float fx = float(x - x0), fy = float(y - y0);
  const float* r0 = p + (long long)y0 * W;
  const float* r1 = p + (long long)y1 * W;
  const float a = __fadd_rn(r0[x0], __fmul_rn(fx, __fsub_rn(r0[x1], r0[x0])));
  const float b = __fadd_rn(r1[x0], __fmul_rn(fx, __fsub_rn(r1[x1], r1[x0])));
  return __fadd_rn(a, __fmul_rn(fy, __fsub_rn(b, a)));
}

// small, large (B, 8, Hk, Wk) -> desc (B, 136, Hf*Wf) unnormalised, and the centre-histogram norm
// of each cell (B, Hf*Wf).
__global__ void sample_kernel(const float* __restrict__ small, const float* __restrict__ large,
                              float* __restrict__ desc, float* __restrict__ centre_norm, int Hf,
                              int Wf, int cell, int Hk, int Wk, SampleOffsets so) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  const int s = blockIdx.y;
  const long long b = blockIdx.z;
  const int N = Hf * Wf;
  if (n >= N) return;
  const long long P = (long long)Hk * Wk;
  const int i = n / Wf, j = n % Wf;
  const double cx = __dsub_rn(__dmul_rn(j + 0.5, double(cell)), 0.5);
  const double cy = __dsub_rn(__dmul_rn(i + 0.5, double(cell)), 0.5);
  const float* stack = (s > kRingPoints ? large : small) + b * kOrient * P;
  float* d = desc + (b * kFeatureChannels + s * kOrient) * N + n;
  double c2 = 0;
  for (int k = 0; k < kOrient; ++k) {
    const float v = sample_plane(stack + k * P, Hk, Wk, cx + so.ox[s], cy + so.oy[s]);
    d[(long long)k * N] = v;
    c2 = __dadd_rn(c2, __dmul_rn(double(v), double(v)));
  }
  if (s == 0) centre_norm[b * N + n] = float(sqrt(c2));
}

// Sum of p[0..n-1] in double, added strictly in index order (as std::accumulate and the CPU's
// loops do): the block stages chunks of p in shared memory with coalesced loads, thread 0 adds.
// Returns the sum in thread 0 (other threads: 0). Every thread of the block must call it.
constexpr int kSumChunk = 1024;
__device__ double sequential_sum(const float* __restrict__ p, long long n) {
  __shared__ float chunk[kSumChunk];
  double s = 0;
  for (long long base = 0; base < n; base += kSumChunk) {
    const int m = n - base < kSumChunk ? int(n - base) : kSumChunk;
    for (int k = threadIdx.x; k < m; k += blockDim.x) chunk[k] = p[base + k];
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int k = 0; k < m; ++k) s = __dadd_rn(s, double(chunk[k]));
    }
    __syncthreads();
  }
  return s;
}

// centre_norm (B, N) -> floor (B): max(0.25 x mean, 1e-12), the mean summed as the CPU does.
__global__ void floor_kernel(const float* __restrict__ centre_norm, double* __restrict__ floor_out,
                             int N) {
  const long long b = blockIdx.x;
  const double s = sequential_sum(centre_norm + b * N, N);
  if (threadIdx.x == 0) floor_out[b] = fmax(__dmul_rn(kHistFloor, s / double(N)), 1e-12);
}

// desc (B, 136, N) -> mean (B, 136): each channel's mean over the image's cells, in double.
__global__ void channel_mean_kernel(const float* __restrict__ desc, double* __restrict__ mean,
                                    int N) {
  const long long bc = (long long)blockIdx.y * kFeatureChannels + blockIdx.x;
  const double s = sequential_sum(desc + bc * N, N);
  if (threadIdx.x == 0) mean[bc] = s / double(N);
}

// desc (B, 136, N) in place: per-histogram floor-clamped normalisation, centring, unit norm.
__global__ void normalise_kernel(float* __restrict__ desc, const double* __restrict__ floor_norm,
                                 int N) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  const long long b = blockIdx.y;
  if (n >= N) return;
  float* d = desc + b * kFeatureChannels * N + n;
  const double fl = floor_norm[b];
  for (int s = 0; s < kSamples; ++s) {
    float* h = d + (long long)s * kOrient * N;
    double h2 = 0;
    for (int k = 0; k < kOrient; ++k) {
      const double x = h[k * N];
      h2 = __dadd_rn(h2, __dmul_rn(x, x));
    }
    const double inv = 1.0 / fmax(sqrt(h2), fl);
    for (int k = 0; k < kOrient; ++k) h[k * N] = float(__dmul_rn(double(h[k * N]), inv));
  }
  double mean = 0;
  for (int c = 0; c < kFeatureChannels; ++c) mean = __dadd_rn(mean, double(d[(long long)c * N]));
  mean /= kFeatureChannels;
  double total = 0;
  for (int c = 0; c < kFeatureChannels; ++c) {
    const float v = float(__dsub_rn(double(d[(long long)c * N]), mean));
    d[(long long)c * N] = v;
    total = __dadd_rn(total, __dmul_rn(double(v), double(v)));
  }
  const float inv = total > 1e-12 ? float(1.0 / sqrt(total)) : 0.f;
  for (int c = 0; c < kFeatureChannels; ++c) {
    d[(long long)c * N] = __fmul_rn(d[(long long)c * N], inv);
  }
}

// desc (B, 136, N) in place, mean (B, 136): the zero-mean step of features_compute: each cell
// minus the image's mean descriptor (the difference rounded to float), then unit L2 norm again
// (0 when blank).
__global__ void zero_mean_kernel(float* __restrict__ desc, const double* __restrict__ mean, int N) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  const long long b = blockIdx.y;
  if (n >= N) return;
  float* d = desc + b * kFeatureChannels * N + n;
  const double* m = mean + b * kFeatureChannels;
  double total = 0;
  for (int c = 0; c < kFeatureChannels; ++c) {
    const float v = float(__dsub_rn(double(d[(long long)c * N]), m[c]));
    d[(long long)c * N] = v;
    total = __dadd_rn(total, __dmul_rn(double(v), double(v)));
  }
  const float inv = total > 1e-12 ? float(1.0 / sqrt(total)) : 0.f;
  for (int c = 0; c < kFeatureChannels; ++c) {
    d[(long long)c * N] = __fmul_rn(d[(long long)c * N], inv);
  }
}

void check_resize(int C, int H, int W, int h, int w) {
  if (C <= 0 || H <= 0 || W <= 0 || h <= 0 || w <= 0) {
    throw Error(ErrorCode::Shape, "image_resize: sizes must be positive");
  }
}

void check_features(int B, int C, int H, int W, int Hf, int Wf, int cell) {
  if (B <= 0 || C <= 0 || H <= 0 || W <= 0 || Hf <= 0 || Wf <= 0 || cell <= 0) {
    throw Error(ErrorCode::Shape, "features_compute: sizes must be positive");
  }
}

struct FeatLayout {
  size_t gray, mid, work, small, large, tmp, norm, floor, mean, total;
};

size_t align256(size_t x) {
  return (x + 255) / 256 * 256;
}

FeatLayout feat_layout(int B, int H, int W, int Hf, int Wf, int cell) {
  const size_t Hk = size_t(Hf) * cell, Wk = size_t(Wf) * cell, P = Hk * Wk;
  FeatLayout l{};
  size_t at = 0;
  auto take = [&](size_t bytes) {
    const size_t off = at;
    at += align256(bytes);
    return off;
  };
  l.gray = take(size_t(B) * H * W * 4);
  l.mid = take(size_t(B) * H * Wk * 4);
  l.work = take(size_t(B) * P * 4);
  l.small = take(size_t(B) * kOrient * P * 4);
  l.large = take(size_t(B) * kOrient * P * 4);
  l.tmp = take(size_t(B) * kOrient * P * 4);
  l.norm = take(size_t(B) * Hf * Wf * 4);
  l.floor = take(size_t(B) * 8);
  l.mean = take(size_t(B) * kFeatureChannels * 8);
  l.total = at;
  return l;
}

void image_resize_device(const float* d_src, long long planes, int H, int W, float* d_dst, int h,
                         int w, float* d_mid, cudaStream_t st) {
  filter_separable(d_src, d_mid, d_dst, planes, H, W, h, w, ResampleTaps{}, st);
}

void blur_device(const float* src, float* dst, float* tmp, long long planes, int H, int W,
                 double sigma, cudaStream_t st) {
  if (sigma <= 0.05) {
    if (src != dst) {
      check(cudaMemcpyAsync(dst, src, size_t(planes) * H * W * 4, cudaMemcpyDeviceToDevice, st),
            "blur copy");
    }
    return;
  }
  filter_separable(src, tmp, dst, planes, H, W, H, W, blur_taps(sigma), st);
}

void features_device(const float* d_img, int B, int C, int H, int W, int Hf, int Wf, int cell,
                     float* d_out, char* ws, cudaStream_t st) {
  check_features(B, C, H, W, Hf, Wf, cell);
  const FeatLayout l = feat_layout(B, H, W, Hf, Wf, cell);
  const int Hk = Hf * cell, Wk = Wf * cell;
  const long long HW = (long long)H * W, P = (long long)Hk * Wk;
  float* gray = reinterpret_cast<float*>(ws + l.gray);
  float* mid = reinterpret_cast<float*>(ws + l.mid);
  float* work = reinterpret_cast<float*>(ws + l.work);
  float* small = reinterpret_cast<float*>(ws + l.small);
  float* large = reinterpret_cast<float*>(ws + l.large);
  float* tmp = reinterpret_cast<float*>(ws + l.tmp);
  float* norm = reinterpret_cast<float*>(ws + l.norm);
  double* fl = reinterpret_cast<double*>(ws + l.floor);
  double* mean = reinterpret_cast<double*>(ws + l.mean);

  gray_kernel<<<ceil_div(B * HW, 256), 256, 0, st>>>(d_img, gray, C, HW, B * HW);
  check_launch("gray_kernel");
  image_resize_device(gray, B, H, W, work, Hk, Wk, mid, st);

  OrientCoef co;
  for (int k = 0; k < kOrient; ++k) {
    co.cosk[k] = float(std::cos(k * M_PI / 4));
    co.sink[k] = float(std::sin(k * M_PI / 4));
  }
  {
    dim3 block(128), grid(ceil_div(Wk, 128), Hk, B);
    orient_kernel<<<grid, block, 0, st>>>(work, small, Hk, Wk, co);
    check_launch("orient_kernel");
  }
  const double s1 = kSigmaSmall * cell, s2 = kSigmaLarge * cell;
  blur_device(small, small, tmp, (long long)B * kOrient, Hk, Wk, s1, st);
  blur_device(small, large, tmp, (long long)B * kOrient, Hk, Wk, std::sqrt(s2 * s2 - s1 * s1), st);

  SampleOffsets so{};
  for (int m = 0; m < kRingPoints; ++m) {
    const double a = 2 * M_PI * m / kRingPoints;
    so.ox[1 + m] = kRing1 * cell * std::cos(a);
    so.oy[1 + m] = kRing1 * cell * std::sin(a);
    so.ox[1 + kRingPoints + m] = kRing2 * cell * std::cos(a);
    so.oy[1 + kRingPoints + m] = kRing2 * cell * std::sin(a);
  }
  const int N = Hf * Wf;
  {
    dim3 block(128), grid(ceil_div(N, 128), kSamples, B);
    sample_kernel<<<grid, block, 0, st>>>(small, large, d_out, norm, Hf, Wf, cell, Hk, Wk, so);
    check_launch("sample_kernel");
  }
  floor_kernel<<<B, 256, 0, st>>>(norm, fl, N);
  check_launch("floor_kernel");
  {
    dim3 block(128), grid(ceil_div(N, 128), B);
    normalise_kernel<<<grid, block, 0, st>>>(d_out, fl, N);
    check_launch("normalise_kernel");
  }
  {
    dim3 grid(kFeatureChannels, B);
    channel_mean_kernel<<<grid, 256, 0, st>>>(d_out, mean, N);
    check_launch("channel_mean_kernel");
  }
  {
    dim3 block(128), grid(ceil_div(N, 128), B);
    zero_mean_kernel<<<grid, block, 0, st>>>(d_out, mean, N);
    check_launch("zero_mean_kernel");
  }
  (void)P;
}

}  // namespace
}  // namespace cuda

void image_resize_cuda(const float* src, int C, int H, int W, float* dst, int h, int w,
                       const Exec& ex) {
  cuda::check_resize(C, H, W, h, w);
  cuda::HostCall call(ex);
  cuda::image_resize_device(call.in(src, size_t(C) * H * W), C, H, W,
                            call.out(dst, size_t(C) * h * w), h, w,
                            call.scratch<float>(size_t(C) * H * w), call.stream());
  call.finish();
}

void features_compute_cuda(const ImageView& img, int Hf, int Wf, int cell, float* out,
                           const Exec& ex) {
  cuda::check_features(1, img.C, img.H, img.W, Hf, Wf, cell);
  cuda::HostCall call(ex);
  const size_t nin = size_t(img.C) * img.H * img.W, nout = size_t(kFeatureChannels) * Hf * Wf;
  cuda::features_device(
      call.in(img.data, nin), 1, img.C, img.H, img.W, Hf, Wf, cell, call.out(out, nout),
      call.scratch<char>(cuda::feat_layout(1, img.H, img.W, Hf, Wf, cell).total), call.stream());
  call.finish();
}

namespace cuda_dev {

size_t features_workspace_bytes(int B, int H, int W, int Hf, int Wf, int cell) {
  return cuda::feat_layout(B, H, W, Hf, Wf, cell).total;
}

void features_compute(const float* d_img, int B, int C, int H, int W, int Hf, int Wf, int cell,
                      float* d_out, void* d_workspace, void* stream) {
  cuda::features_device(d_img, B, C, H, W, Hf, Wf, cell, d_out, static_cast<char*>(d_workspace),
                        static_cast<cudaStream_t>(stream));
}

}  // namespace cuda_dev
}  // namespace gocor
