// Local GOCor (spec 5) on the GPU, the twin of gocor_local_cpu. The problem separates per pixel,
// so one kernel runs the initialiser, all K iterations and the output for a tile of pixels: each
// thread owns a pixel, its (2R+1)^2 window values live in shared memory, its filter and gradient in
// the (B,C,H,W) filter/gradient buffers (only the owning thread touches them), and the reference
// features are staged through a shared halo for every window pass.
#include <cmath>
#include <string>
#include <vector>

#include "cuda_util.cuh"
#include "dist_table.cuh"
#include "gocor_cuda.h"
#include "gocor_cuda_device.cuh"
#include "local_window.cuh"

namespace gocor {
namespace cuda {
namespace {

// Per-pixel diagnostics recorded per iteration: [iter][quantity][b][p].
enum LocalDiagQ { kLdLossRef = 0, kLdLossReg, kLdNum, kLdAlpha, kLdCount };

struct LocalArgs {
  const float* f;        // reference (B,C,H,W)
  const float* g;        // query (B,C,H,W)
  float* w;              // filter iterate (B,C,H,W)
  float* grad;           // gradient scratch (B,C,H,W)
  float* jac;            // J scratch (B,D,H,W)
  float* vol;            // output (B,D,H,W)
  const DistEntry* tab;  // (D)
  float* diag;           // optional [K][kLdCount][B][H*W]
  int B, C, H, W, R, K;
  float scaling, lam, step;
};

__global__ void gocor_local_kernel(LocalArgs a) {
  extern __shared__ __align__(16) float smem[];
  const WinTile t = win_tile(a.R, a.H, a.W);
  float* halo = smem;
  float* win = smem + kWinCC * t.HY * t.HX;
  const int b = blockIdx.z, D = (2 * a.R + 1) * (2 * a.R + 1), C = a.C;
  const long long HW = (long long)a.H * a.W, P = HW;
  const float* f = a.f + b * C * HW;
  const float* g = a.g + b * C * HW;
  float* w = a.w + b * C * HW;
  float* grad = a.grad + b * C * HW;
  float* jac = a.jac + b * D * HW;
  const float inv_c = 1.f / C;

  // Initialiser (spec 5.2): w0 = s f / (mean_c f^2 + 1e-6).
  if (t.inside) {
    float ss = 0.f;
    for (int c = 0; c < C; ++c) {
      const float v = f[c * HW + t.p];
      ss = fmaf(v, v, ss);
    }
    const float scale = a.scaling / (ss * inv_c + 1e-6f);
    for (int c = 0; c < C; ++c) w[c * HW + t.p] = scale * f[c * HW + t.p];
  }

  for (int it = 0; it < a.K; ++it) {
    // 1. S = Corr(w, f); J, rho; the window now holds J*rho.
    win_scores(halo, win, t, w, f, C, a.H, a.W);
    float loss_ref = 0.f;
    for (int k = 0; k < D; ++k) {
      const DistEntry e = a.tab[k];
      const float s = win[k * t.nt + t.tid] * inv_c;
      const float sg = s > 0.f ? 1.f : (s < 0.f ? -1.f : 0.f);
      const float jk = e.v * fmaf(e.hm, sg, e.hp);
      const float rho = e.v * (fmaf(e.hm, fabsf(s), e.hp * s) - e.y);
      loss_ref = fmaf(rho, rho, loss_ref);
      if (t.inside) jac[k * HW + t.p] = jk;
      win[k * t.nt + t.tid] = jk * rho;
    }
    // 2. grad = lam w + Corr^T(J rho, f); num = ||grad||^2; wn = ||w||^2 for the diagnostics.
    float num = 0.f, wn = 0.f;
    win_adjoint(halo, win, t, f, C, a.H, a.W, [&](int c, float v) {
      const float wc = w[c * HW + t.p];
      const float gc = fmaf(a.lam, wc, v * inv_c);
      grad[c * HW + t.p] = gc;
      num = fmaf(gc, gc, num);
      wn = fmaf(wc, wc, wn);
    });
    // 3. Step length from the scores of the gradient.
    win_scores(halo, win, t, grad, f, C, a.H, a.W);
    float den = 0.f;
    if (t.inside) {
      for (int k = 0; k < D; ++k) {
        const float q = jac[k * HW + t.p] * (win[k * t.nt + t.tid] * inv_c);
        den = fmaf(q, q, den);
      }
    }
    den = fmaxf(fmaf(a.lam, num, den), 1e-8f);
    const float alpha = num / den;
    // 4. Update; only this thread reads this pixel's filter, so no barrier is needed.
    if (t.inside) {
      const float sa = a.step * alpha;
      for (int c = 0; c < C; ++c) w[c * HW + t.p] = fmaf(-sa, grad[c * HW + t.p], w[c * HW + t.p]);
      if (a.diag != nullptr) {
        float* d = a.diag + (long long)it * kLdCount * a.B * P + (long long)b * P + t.p;
        d[kLdLossRef * a.B * P] = 0.5f * loss_ref;
        d[kLdLossReg * a.B * P] = 0.5f * a.lam * wn;
        d[kLdNum * a.B * P] = num;
        d[kLdAlpha * a.B * P] = alpha;
      }
    }
  }

  // Output (spec 5.5): Corr(w, g).
  win_scores(halo, win, t, w, g, C, a.H, a.W);
  if (!t.inside) return;
  float* o = a.vol + b * D * HW + t.p;
  for (int k = 0; k < D; ++k) o[k * HW] = win[k * t.nt + t.tid] * inv_c;
}

// Sums (in double, fixed order) and min/max of each row of x (rows, n): out[row] = {sum, min, max}.
__global__ void row_stats_kernel(const float* __restrict__ x, long long n, double* out) {
  __shared__ double s_sum[256];
  __shared__ float s_min[256], s_max[256];
  const float* row = x + blockIdx.x * n;
  double sum = 0;
  float mn = INFINITY, mx = -INFINITY;
  for (long long i = threadIdx.x; i < n; i += blockDim.x) {
    const float v = row[i];
    sum += v;
    mn = fminf(mn, v);
    mx = fmaxf(mx, v);
  }
  s_sum[threadIdx.x] = sum;
  s_min[threadIdx.x] = mn;
  s_max[threadIdx.x] = mx;
  __syncthreads();
  for (int off = blockDim.x / 2; off > 0; off >>= 1) {
    if (threadIdx.x < off) {
      s_sum[threadIdx.x] += s_sum[threadIdx.x + off];
      s_min[threadIdx.x] = fminf(s_min[threadIdx.x], s_min[threadIdx.x + off]);
      s_max[threadIdx.x] = fmaxf(s_max[threadIdx.x], s_max[threadIdx.x + off]);
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    out[blockIdx.x * 3] = s_sum[0];
    out[blockIdx.x * 3 + 1] = s_min[0];
    out[blockIdx.x * 3 + 2] = s_max[0];
  }
}

struct LocalWorkspace {
  size_t grad, jac, tab, diag, total;  // byte offsets
};

LocalWorkspace local_workspace(int B, int C, int H, int W, int R, int K, bool with_diag) {
  auto align = [](size_t x) { return (x + 255) / 256 * 256; };
  const size_t P = (size_t)H * W, D = (size_t)(2 * R + 1) * (2 * R + 1);
  LocalWorkspace ws;
  ws.grad = 0;
  ws.jac = align(ws.grad + (size_t)B * C * P * sizeof(float));
  ws.tab = align(ws.jac + (size_t)B * D * P * sizeof(float));
  ws.diag = align(ws.tab + D * sizeof(DistEntry));
  ws.total = align(ws.diag + (with_diag ? (size_t)K * kLdCount * B * P * sizeof(float) : 0));
  return ws;
}

void check_local_args(const LocalGocorOptions& o, int B, int C, int H, int W) {
  if (B <= 0 || C <= 0 || H <= 0 || W <= 0) {
    throw Error(ErrorCode::Shape, "gocor_local: B, C, H and W must be positive");
  }
  if (o.num_iter < 0 || o.search_radius < 0) {
    throw Error(ErrorCode::InvalidArg, "gocor_local: num_iter and search_radius must be >= 0");
  }
}

// The whole local GOCor on device memory; workspace as local_workspace(..., diag != nullptr).
void gocor_local_device(const LocalGocorParams& p, const LocalGocorOptions& o, const float* d_ref,
                        const float* d_query, float* d_volume, float* d_filter, char* d_ws, int B,
                        int C, int H, int W, cudaStream_t stream,
                        std::vector<GocorIterDiag>* diag) {
  check_local_args(o, B, C, H, W);
  const int R = o.search_radius, K = o.num_iter, S = 2 * R + 1, D = S * S;
  const LocalWorkspace ws = local_workspace(B, C, H, W, R, K, diag != nullptr);

  std::vector<DistEntry> tab(D);
  for (int dy = -R; dy <= R; ++dy)
    for (int dx = -R; dx <= R; ++dx)
      tab[(dy + R) * S + (dx + R)] = dist_entry(p.dist, std::sqrt(double(dy * dy + dx * dx)));
  DistEntry* d_tab = reinterpret_cast<DistEntry*>(d_ws + ws.tab);
  // Synchronous copy: tab is a host temporary.
  check(cudaMemcpyAsync(d_tab, tab.data(), D * sizeof(DistEntry), cudaMemcpyHostToDevice, stream),
        "copy distance table");
  check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");

  const double reg =
      std::max(double(p.filter_reg) * p.filter_reg, double(p.min_filter_reg) * p.min_filter_reg);
  LocalArgs a{};
  a.f = d_ref;
  a.g = d_query;
  a.w = d_filter;
  a.grad = reinterpret_cast<float*>(d_ws + ws.grad);
  a.jac = reinterpret_cast<float*>(d_ws + ws.jac);
  a.vol = d_volume;
  a.tab = d_tab;
  a.diag = diag != nullptr ? reinterpret_cast<float*>(d_ws + ws.diag) : nullptr;
  a.B = B;
  a.C = C;
  a.H = H;
  a.W = W;
  a.R = R;
  a.K = K;
  a.scaling = p.scaling;
  a.lam = static_cast<float>(reg / (double(C) * C));
  a.step = static_cast<float>(std::exp(double(p.log_step_length)));

  size_t smem = 0;
  const int rows = win_tile_rows(R, &smem);
  check(cudaFuncSetAttribute(gocor_local_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(smem)),
        "cudaFuncSetAttribute");
  dim3 block(kWinTX, rows, 1), grid(ceil_div(W, kWinTX), ceil_div(H, rows), B);
  gocor_local_kernel<<<grid, block, smem, stream>>>(a);
  check_launch("gocor_local_kernel");

  if (diag == nullptr) return;
  const long long P = (long long)H * W;
  const int rows_stats = K * kLdCount * B;
  diag->clear();
  if (rows_stats == 0) return;
  DeviceBuffer<double> d_stats((size_t)rows_stats * 3);
  row_stats_kernel<<<rows_stats, 256, 0, stream>>>(a.diag, P, d_stats.get());
  check_launch("row_stats_kernel");
  std::vector<double> st((size_t)rows_stats * 3);
  to_host(st.data(), d_stats.get(), st.size(), stream);
  check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  auto at = [&](int it, int q, int bb, int j) {
    return st[((size_t)(it * kLdCount + q) * B + bb) * 3 + j];
  };
  for (int bb = 0; bb < B; ++bb) {
    for (int it = 0; it < K; ++it) {
      GocorIterDiag d;
      d.batch = bb;
      d.iter = it;
      d.loss_ref = at(it, kLdLossRef, bb, 0);
      d.loss_query = 0;
      d.loss_reg = at(it, kLdLossReg, bb, 0);
      d.grad_norm = std::sqrt(at(it, kLdNum, bb, 0));
      d.alpha = at(it, kLdAlpha, bb, 0) / double(P);
      d.alpha_min = at(it, kLdAlpha, bb, 1);
      d.alpha_max = at(it, kLdAlpha, bb, 2);
      diag->push_back(d);
    }
  }
}

}  // namespace
}  // namespace cuda

void gocor_local_cuda(const LocalGocorParams& p, const LocalGocorOptions& o, const float* reference,
                      const float* query, float* volume, float* filter_out, int B, int C, int H,
                      int W, const Exec& ex, std::vector<GocorIterDiag>* diag) {
  cuda::check_local_args(o, B, C, H, W);
  cuda::HostCall call(ex);
  const int R = o.search_radius;
  const size_t nin = (size_t)B * C * H * W;
  const size_t nout = (size_t)B * (2 * R + 1) * (2 * R + 1) * H * W;
  const cuda::LocalWorkspace ws = cuda::local_workspace(B, C, H, W, R, o.num_iter, diag != nullptr);
  // The filter is the iterate: a device buffer even when the caller does not want it back.
  float* d_w = filter_out != nullptr ? call.out(filter_out, nin) : call.scratch<float>(nin);
  cuda::gocor_local_device(p, o, call.in(reference, nin), call.in(query, nin),
                           call.out(volume, nout), d_w, call.scratch<char>(ws.total), B, C, H, W,
                           call.stream(), diag);
  call.finish();
}

namespace cuda_dev {

size_t gocor_local_workspace_bytes(int B, int C, int H, int W, const LocalGocorOptions& o) {
  return cuda::local_workspace(B, C, H, W, o.search_radius, o.num_iter, false).total;
}

void gocor_local(const LocalGocorParams& p, const LocalGocorOptions& o, const float* d_ref,
                 const float* d_query, float* d_volume, float* d_filter, void* d_workspace, int B,
                 int C, int H, int W, void* stream, std::vector<GocorIterDiag>* diag) {
  if (diag != nullptr) {
    throw Error(ErrorCode::InvalidArg, "cuda_dev::gocor_local: diagnostics need gocor_local_cuda");
  }
  cuda::gocor_local_device(p, o, d_ref, d_query, d_volume, d_filter,
                           static_cast<char*>(d_workspace), B, C, H, W,
                           static_cast<cudaStream_t>(stream), nullptr);
}

}  // namespace cuda_dev
}  // namespace gocor
