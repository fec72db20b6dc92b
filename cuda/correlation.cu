// Plain correlation on the GPU: the twins of cpp/core's corr_global_cpu, corr_local_cpu and
// corr_local_adjoint_cpu (spec 5.1 and 7).
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

// rho (B,D,H,W), query (B,C,H,W) -> out (B,C,H,W).
__global__ void corr_local_adjoint_kernel(const float* __restrict__ rho,
                                          const float* __restrict__ query, float* __restrict__ out,
                                          int C, int H, int W, int R) {
  extern __shared__ __align__(16) float smem[];
  const WinTile t = win_tile(R, H, W);
  float* halo = smem;
  float* win = smem + kWinCC * t.HY * t.HX;
  const long long HW = (long long)H * W;
  const int b = blockIdx.z, D = (2 * R + 1) * (2 * R + 1);
  for (int k = 0; k < D; ++k) {
    win[k * t.nt + t.tid] = t.inside ? __ldg(rho + (b * D + k) * HW + t.p) : 0.f;
  }
  const float inv_c = 1.f / C;
  float* o = out + b * C * HW + t.p;
  win_adjoint(halo, win, t, query + b * C * HW, C, H, W,
              [&](int c, float v) { o[c * HW] = v * inv_c; });
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
  dim3 block;
  size_t smem = 0;
  dim3 grid = win_launch_setup(corr_local_kernel, s.R, s.B, s.H, s.W, &block, &smem);
  corr_local_kernel<<<grid, block, smem, stream>>>(d_ref, d_query, d_out, s.C, s.H, s.W, s.R);
  check_launch("corr_local_kernel");
}

void corr_local_adjoint_device(const float* d_rho, const float* d_query, float* d_out,
                               const CorrLocalShape& s, cudaStream_t stream) {
  check_local_shape(s);
  dim3 block;
  size_t smem = 0;
  dim3 grid = win_launch_setup(corr_local_adjoint_kernel, s.R, s.B, s.H, s.W, &block, &smem);
  corr_local_adjoint_kernel<<<grid, block, smem, stream>>>(d_rho, d_query, d_out, s.C, s.H, s.W,
                                                           s.R);
  check_launch("corr_local_adjoint_kernel");
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
  cuda::require_device();
  check_cancel(ex);
  const size_t nref = (size_t)s.B * s.C * s.H * s.W, nq = (size_t)s.B * s.C * s.Hq * s.Wq;
  const size_t nout = (size_t)s.B * s.Hq * s.Wq * s.H * s.W;
  cuda::Stream stream;
  cuda::DeviceBuffer<float> d_ref(nref), d_q(nq), d_out(nout);
  cuda::to_device(d_ref.get(), reference, nref, stream.get());
  cuda::to_device(d_q.get(), query, nq, stream.get());
  cuda::corr_global_device(d_ref.get(), d_q.get(), d_out.get(), s, stream.get());
  cuda::to_host(out, d_out.get(), nout, stream.get());
  stream.sync();
}

void corr_local_cuda(const float* reference, const float* query, float* out,
                     const CorrLocalShape& s, const Exec& ex) {
  cuda::check_local_shape(s);
  cuda::require_device();
  check_cancel(ex);
  const size_t nin = (size_t)s.B * s.C * s.H * s.W;
  const size_t D = (size_t)(2 * s.R + 1) * (2 * s.R + 1);
  const size_t nout = (size_t)s.B * D * s.H * s.W;
  cuda::Stream stream;
  cuda::DeviceBuffer<float> d_ref(nin), d_q(nin), d_out(nout);
  cuda::to_device(d_ref.get(), reference, nin, stream.get());
  cuda::to_device(d_q.get(), query, nin, stream.get());
  cuda::corr_local_device(d_ref.get(), d_q.get(), d_out.get(), s, stream.get());
  cuda::to_host(out, d_out.get(), nout, stream.get());
  stream.sync();
}

void corr_local_adjoint_cuda(const float* rho, const float* query, float* out,
                             const CorrLocalShape& s, const Exec& ex) {
  cuda::check_local_shape(s);
  cuda::require_device();
  check_cancel(ex);
  const size_t nin = (size_t)s.B * s.C * s.H * s.W;
  const size_t D = (size_t)(2 * s.R + 1) * (2 * s.R + 1);
  const size_t nrho = (size_t)s.B * D * s.H * s.W;
  cuda::Stream stream;
  cuda::DeviceBuffer<float> d_rho(nrho), d_q(nin), d_out(nin);
  cuda::to_device(d_rho.get(), rho, nrho, stream.get());
  cuda::to_device(d_q.get(), query, nin, stream.get());
  cuda::corr_local_adjoint_device(d_rho.get(), d_q.get(), d_out.get(), s, stream.get());
  cuda::to_host(out, d_out.get(), nin, stream.get());
  stream.sync();
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

void corr_local_adjoint(const float* d_rho, const float* d_query, float* d_out,
                        const CorrLocalShape& s, void* stream) {
  cuda::corr_local_adjoint_device(d_rho, d_query, d_out, s, static_cast<cudaStream_t>(stream));
}

}  // namespace cuda_dev
}  // namespace gocor
