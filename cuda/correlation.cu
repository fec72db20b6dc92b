// Plain correlation on the GPU: the twins of cpp/core's corr_global_cpu and corr_local_cpu (spec
// 5.1 and 7).
#include <string>

#include "cuda_util.cuh"
#include "gocor_cuda.h"
#include "gocor_cuda_device.cuh"
#include "local_window.cuh"
#include "sgemm.cuh"

namespace gocor {
namespace cuda {

int win_tile_rows(int R, size_t* smem_bytes) {
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  int optin = 0;
  check(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev),
        "cudaDeviceGetAttribute");
  for (int rows : {8, 4, 2, 1}) {
    const size_t bytes = win_smem_floats(R, rows) * sizeof(float);
    if (bytes <= static_cast<size_t>(optin)) {
      *smem_bytes = bytes;
      return rows;
    }
  }
  throw Error(ErrorCode::TooLarge, "search radius " + std::to_string(R) +
                                       " needs more shared memory than this GPU offers");
}

namespace {

// reference, query (B,C,H,W) -> out (B,D,H,W), 1/C scaled window scores.
__global__ void corr_local_kernel(const float* __restrict__ ref, const float* __restrict__ query,
                                  float* __restrict__ out, int C, int H, int W, int R) {
  extern __shared__ __align__(16) float smem[];
  const WinTile t = win_tile(R, H, W);
  float* halo = smem;
  float* win = smem + kWinCC * t.HY * t.HX;
  const long long HW = (long long)H * W;
  const int b = blockIdx.z, D = (2 * R + 1) * (2 * R + 1);
  win_scores(halo, win, t, ref + b * C * HW, query + b * C * HW, C, H, W);
  if (!t.inside) return;
  const float inv_c = 1.f / C;
  float* o = out + b * D * HW + t.p;
  for (int k = 0; k < D; ++k) o[k * HW] = win[k * t.nt + t.tid] * inv_c;
}

// Register-tiled local correlation for radius 1..4. A block covers kLY x kLX pixels; thread
// (dy, row, column group) holds 8 pixels x (2R+1) horizontal displacements of one vertical
// displacement in registers, so each channel costs 6 16-byte shared loads for 8 (2R+1) FMAs
// (the one-thread-per-pixel kernel needed a shared load per FMA). Channels are staged kLC at a
// time by cp.async into two buffers (zero outside the image). Each score sums c = 0..C-1 in order
// with one fmaf per term, as the per-pixel kernel and the CPU twin do.
constexpr int kLX = 32, kLY = 8, kLC = 8, kLHX = kLX + 8;  // halo columns x0-4 .. x0+kLX+3

template <int R>
struct LocalTiledCfg {
  static constexpr int S = 2 * R + 1, kThreads = kLY * (kLX / 8) * S, kHY = kLY + 2 * R;
  static constexpr int kSrc = kLC * kLY * kLX, kFeat = kLC * kHY * kLHX, kStage = kSrc + kFeat;
  static constexpr size_t kSmemBytes = 2 * kStage * sizeof(float);
};

// reference, query (B,C,H,W) -> out (B,D,H,W), 1/C scaled window scores.
template <int R>
__global__ void __launch_bounds__(LocalTiledCfg<R>::kThreads)
    corr_local_tiled_kernel(const float* __restrict__ ref, const float* __restrict__ query,
                            float* __restrict__ out, int C, int H, int W, bool vec) {
  using Cfg = LocalTiledCfg<R>;
  constexpr int S = Cfg::S, HY = Cfg::kHY, NT = Cfg::kThreads;
  extern __shared__ __align__(16) float smem[];
  const int tid = threadIdx.x, b = blockIdx.z;
  const int x0 = blockIdx.x * kLX, y0 = blockIdx.y * kLY;
  const long long HW = (long long)H * W;
  const float* src = ref + b * C * HW;
  const float* feat = query + b * C * HW;

  auto load = [&](int c0, int buf) {
    float* ss = smem + buf * Cfg::kStage;
    float* fs = ss + Cfg::kSrc;
    if (vec) {
      for (int i = tid; i < Cfg::kSrc / 4; i += NT) {
        const int cc = i / (kLY * kLX / 4), rem = i % (kLY * kLX / 4);
        const int ry = rem / (kLX / 4), rx = (rem % (kLX / 4)) * 4;
        const int c = c0 + cc, gy = y0 + ry, gx = x0 + rx;
        const bool in = c < C && gy < H && gx < W;
        cp_async16(ss + i * 4, in ? src + c * HW + (long long)gy * W + gx : src, in ? 16 : 0);
      }
      for (int i = tid; i < Cfg::kFeat / 4; i += NT) {
        const int cc = i / (HY * kLHX / 4), rem = i % (HY * kLHX / 4);
        const int hy = rem / (kLHX / 4), hx = (rem % (kLHX / 4)) * 4;
        const int c = c0 + cc, gy = y0 - R + hy, gx = x0 - 4 + hx;
        const bool in = c < C && gy >= 0 && gy < H && gx >= 0 && gx < W;
        cp_async16(fs + i * 4, in ? feat + c * HW + (long long)gy * W + gx : feat, in ? 16 : 0);
      }
    } else {
      for (int i = tid; i < Cfg::kSrc; i += NT) {
        const int cc = i / (kLY * kLX), rem = i % (kLY * kLX);
        const int ry = rem / kLX, rx = rem % kLX;
        const int c = c0 + cc, gy = y0 + ry, gx = x0 + rx;
        const bool in = c < C && gy < H && gx < W;
        cp_async4(ss + i, in ? src + c * HW + (long long)gy * W + gx : src, in ? 4 : 0);
      }
      for (int i = tid; i < Cfg::kFeat; i += NT) {
        const int cc = i / (HY * kLHX), rem = i % (HY * kLHX);
        const int hy = rem / kLHX, hx = rem % kLHX;
        const int c = c0 + cc, gy = y0 - R + hy, gx = x0 - 4 + hx;
        const bool in = c < C && gy >= 0 && gy < H && gx >= 0 && gx < W;
        cp_async4(fs + i, in ? feat + c * HW + (long long)gy * W + gx : feat, in ? 4 : 0);
      }
    }
  };

  const int dy = tid / (kLY * kLX / 8), rem = tid % (kLY * kLX / 8);
  const int ry = rem / (kLX / 8), px0 = (rem % (kLX / 8)) * 8;
  float acc[8][S];
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int j = 0; j < S; ++j) acc[i][j] = 0.f;

  const int nchunks = (C + kLC - 1) / kLC;
  load(0, 0);
  cp_async_commit();
  for (int ch = 0; ch < nchunks; ++ch) {
    cp_async_wait<0>();
    __syncthreads();
    if (ch + 1 < nchunks) load((ch + 1) * kLC, (ch + 1) & 1);
    cp_async_commit();
    const float* ss = smem + (ch & 1) * Cfg::kStage;
    const float* fs = ss + Cfg::kSrc;
#pragma unroll 2
    for (int cc = 0; cc < kLC; ++cc) {
      const float* sp = ss + (cc * kLY + ry) * kLX + px0;
      const float4 s0 = *reinterpret_cast<const float4*>(sp);
      const float4 s1 = *reinterpret_cast<const float4*>(sp + 4);
      const float sv[8] = {s0.x, s0.y, s0.z, s0.w, s1.x, s1.y, s1.z, s1.w};
      // halo column px0 + k holds x = x0 + px0 + k - 4; pixel i, displacement dx needs
      // k = i + dx + 4 - R (dx = 0..2R).
      const float* fp = fs + (cc * HY + ry + dy) * kLHX + px0;
      float fv[16];
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const float4 t = *reinterpret_cast<const float4*>(fp + 4 * q);
        fv[4 * q] = t.x;
        fv[4 * q + 1] = t.y;
        fv[4 * q + 2] = t.z;
        fv[4 * q + 3] = t.w;
      }
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < S; ++j) acc[i][j] = fmaf(sv[i], fv[i + j + 4 - R], acc[i][j]);
    }
  }
  cp_async_wait<0>();

  const int y = y0 + ry, x = x0 + px0;
  if (y >= H) return;
  const float inv_c = 1.f / C;
  const int D = S * S;
#pragma unroll
  for (int j = 0; j < S; ++j) {
    float* o = out + (b * D + dy * S + j) * HW + (long long)y * W + x;
    if (vec && x + 7 < W) {
      __stcs(reinterpret_cast<float4*>(o), make_float4(acc[0][j] * inv_c, acc[1][j] * inv_c,
                                                       acc[2][j] * inv_c, acc[3][j] * inv_c));
      __stcs(reinterpret_cast<float4*>(o + 4), make_float4(acc[4][j] * inv_c, acc[5][j] * inv_c,
                                                           acc[6][j] * inv_c, acc[7][j] * inv_c));
    } else {
#pragma unroll
      for (int i = 0; i < 8; ++i)
        if (x + i < W) o[i] = acc[i][j] * inv_c;
    }
  }
}

template <int R>
void launch_corr_local_tiled(const float* d_ref, const float* d_query, float* d_out,
                             const CorrLocalShape& s, cudaStream_t stream) {
  using Cfg = LocalTiledCfg<R>;
  check(
      cudaFuncSetAttribute(corr_local_tiled_kernel<R>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(Cfg::kSmemBytes)),
      "cudaFuncSetAttribute");
  const bool vec = s.W % 4 == 0 && aligned16(d_ref) && aligned16(d_query) && aligned16(d_out);
  dim3 grid(ceil_div(s.W, kLX), ceil_div(s.H, kLY), s.B);
  corr_local_tiled_kernel<R>
      <<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(d_ref, d_query, d_out, s.C, s.H, s.W, vec);
  check_launch("corr_local_tiled_kernel");
}

template <typename Kernel>
dim3 win_launch_setup(Kernel kernel, int R, int B, int H, int W, dim3* block, size_t* smem) {
  const int rows = win_tile_rows(R, smem);
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(*smem)),
        "cudaFuncSetAttribute");
  *block = dim3(kWinTX, rows, 1);
  return dim3(ceil_div(W, kWinTX), ceil_div(H, rows), B);
}

void check_local_shape(const CorrLocalShape& s) {
  if (s.B <= 0 || s.C <= 0 || s.H <= 0 || s.W <= 0 || s.R < 0) {
    throw Error(ErrorCode::Shape, "corr_local: every dimension must be positive and R >= 0");
  }
}

}  // namespace

void corr_global_device(const float* d_ref, const float* d_query, float* d_out,
                        const CorrGlobalShape& s, cudaStream_t stream) {
  // out[b][t][r] = sum_c query[b][c][t] * ref[b][c][r]: A = query viewed (t, c) column-major,
  // B = ref (c, r) row-major.
  const int N = s.H * s.W, M = s.Hq * s.Wq;
  GemmArgs g{};
  g.M = M;
  g.N = N;
  g.K = s.C;
  g.A = d_query;
  g.lda = M;
  g.strideA = (long long)s.C * M;
  g.B = d_ref;
  g.ldb = N;
  g.strideB = (long long)s.C * N;
  g.rowpart = nullptr;
  StoreEp ep{d_out, N, (long long)M * N};
  launch_sgemm<Layout::kColMajor, Layout::kRowMajor>(g, s.B, ep, stream);
}

void corr_local_device(const float* d_ref, const float* d_query, float* d_out,
                       const CorrLocalShape& s, cudaStream_t stream) {
  check_local_shape(s);
  switch (s.R) {  // register-tiled radii; others take the per-pixel kernel
    case 1: return launch_corr_local_tiled<1>(d_ref, d_query, d_out, s, stream);
    case 2: return launch_corr_local_tiled<2>(d_ref, d_query, d_out, s, stream);
    case 3: return launch_corr_local_tiled<3>(d_ref, d_query, d_out, s, stream);
    case 4: return launch_corr_local_tiled<4>(d_ref, d_query, d_out, s, stream);
    default: break;
  }
  dim3 block;
  size_t smem = 0;
  dim3 grid = win_launch_setup(corr_local_kernel, s.R, s.B, s.H, s.W, &block, &smem);
  corr_local_kernel<<<grid, block, smem, stream>>>(d_ref, d_query, d_out, s.C, s.H, s.W, s.R);
  check_launch("corr_local_kernel");
}

}  // namespace cuda

namespace {

void check_global_shape(const CorrGlobalShape& s) {
  if (s.B <= 0 || s.C <= 0 || s.H <= 0 || s.W <= 0 || s.Hq <= 0 || s.Wq <= 0) {
    throw Error(ErrorCode::Shape, "corr_global: every dimension must be positive");
  }
}

}  // namespace

void corr_global_cuda(const float* reference, const float* query, float* out,
                      const CorrGlobalShape& s, const Exec& ex) {
  check_global_shape(s);
  cuda::HostCall call(ex);
  const size_t nref = (size_t)s.B * s.C * s.H * s.W, nq = (size_t)s.B * s.C * s.Hq * s.Wq;
  const size_t nout = (size_t)s.B * s.Hq * s.Wq * s.H * s.W;
  cuda::corr_global_device(call.in(reference, nref), call.in(query, nq), call.out(out, nout), s,
                           call.stream());
  call.finish();
}

void corr_local_cuda(const float* reference, const float* query, float* out,
                     const CorrLocalShape& s, const Exec& ex) {
  cuda::check_local_shape(s);
  cuda::HostCall call(ex);
  const size_t nin = (size_t)s.B * s.C * s.H * s.W;
  const size_t D = (size_t)(2 * s.R + 1) * (2 * s.R + 1);
  const size_t nout = (size_t)s.B * D * s.H * s.W;
  cuda::corr_local_device(call.in(reference, nin), call.in(query, nin), call.out(out, nout), s,
                          call.stream());
  call.finish();
}

namespace cuda_dev {

void corr_global(const float* d_ref, const float* d_query, float* d_out, const CorrGlobalShape& s,
                 void* stream) {
  check_global_shape(s);
  cuda::corr_global_device(d_ref, d_query, d_out, s, static_cast<cudaStream_t>(stream));
}

void corr_local(const float* d_ref, const float* d_query, float* d_out, const CorrLocalShape& s,
                void* stream) {
  cuda::corr_local_device(d_ref, d_query, d_out, s, static_cast<cudaStream_t>(stream));
}

}  // namespace cuda_dev
}  // namespace gocor
