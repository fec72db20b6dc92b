// Device-resident entry points of the CUDA backend, for benchmarks that time kernels without the
// host<->device copies. Host-only C++ (no CUDA types: streams are passed as void* holding a
// cudaStream_t), so ordinary .cpp programs can include it. Pointers named d_* are device pointers.
#pragma once

#ifdef GOCOR_WITH_CUDA

#include <cstddef>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "correlation.h"
#include "gocor.h"

namespace gocor {
namespace cuda_dev {

void* alloc(size_t bytes);  // throws CudaOom / Cuda
void free(void* p);
void upload(void* d_dst, const void* src, size_t bytes);
void download(void* dst, const void* d_src, size_t bytes);
void* stream_create();
void stream_destroy(void* stream);
void stream_sync(void* stream);

// Runs fn `warmup` times, then `reps` times each bracketed by CUDA events on `stream`; returns the
// per-run milliseconds (sorted ascending).
std::vector<double> time_on_stream(void* stream, int warmup, int reps,
                                   const std::function<void()>& fn);

// Same contracts as the _cpu/_cuda twins, on device memory, enqueued on `stream`.
void corr_global(const float* d_ref, const float* d_query, float* d_out, const CorrGlobalShape& s,
                 void* stream);
void corr_local(const float* d_ref, const float* d_query, float* d_out, const CorrLocalShape& s,
                void* stream);
// rho (B,D,H,W), query (B,C,H,W) -> out (B,C,H,W), the adjoint of corr_local in its first argument.
void corr_local_adjoint(const float* d_rho, const float* d_query, float* d_out,
                        const CorrLocalShape& s, void* stream);

// Workspace (bytes of device memory) global GOCor needs for shape s and options o.
size_t gocor_global_workspace_bytes(const GocorGlobalShape& s, const GlobalGocorOptions& o);
// reference, query (B,C,H,W) -> d_volume (B,H*W,H,W); d_filter (B,H*W,C) receives the final filters
// (required: it is the iterate). d_workspace holds gocor_global_workspace_bytes(s, o) bytes.
void gocor_global(const GlobalGocorParams& p, const GlobalGocorOptions& o, const float* d_ref,
                  const float* d_query, float* d_volume, float* d_filter, void* d_workspace,
                  const GocorGlobalShape& s, void* stream, std::vector<GocorIterDiag>* diag);
// gocor_global (no diagnostics) with a CUDA event before each stage; waits for the stream and
// returns the milliseconds of each stage summed over iterations, in order. For the benchmark.
std::vector<std::pair<std::string, double>> gocor_global_stages(
    const GlobalGocorParams& p, const GlobalGocorOptions& o, const float* d_ref,
    const float* d_query, float* d_volume, float* d_filter, void* d_workspace,
    const GocorGlobalShape& s, void* stream);

size_t gocor_local_workspace_bytes(int B, int C, int H, int W, const LocalGocorOptions& o);
// reference, query (B,C,H,W) -> d_volume (B,(2R+1)^2,H,W); d_filter (B,C,H,W) is the iterate.
void gocor_local(const LocalGocorParams& p, const LocalGocorOptions& o, const float* d_ref,
                 const float* d_query, float* d_volume, float* d_filter, void* d_workspace, int B,
                 int C, int H, int W, void* stream, std::vector<GocorIterDiag>* diag);

}  // namespace cuda_dev
}  // namespace gocor

#endif  // GOCOR_WITH_CUDA
