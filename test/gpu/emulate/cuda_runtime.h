// Host stand-in for the CUDA runtime, for test/gpu/emulate.sh only: it lets the kernels of
// cuda/interpolate.cu and cuda/dis.cu run as plain C++ on the CPU (every launch a loop over its
// blocks and threads in order, atomics as plain operations, the _rn intrinsics as IEEE operations
// compiled without contraction). Only what those two files use is here.
#pragma once
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>
using std::max;
using std::min;
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// Shared memory: one block runs at a time, so a function's static is its block's.
#define __shared__ static
typedef int cudaError_t;
enum { cudaSuccess = 0, cudaErrorMemoryAllocation = 2 };
enum cudaMemcpyKind { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
typedef void* cudaStream_t;
#define cudaStreamNonBlocking 1
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
inline thread_local dim3 blockIdx, threadIdx, blockDim, gridDim;
inline const char* cudaGetErrorName(cudaError_t) {
  return "emu";
}
inline const char* cudaGetErrorString(cudaError_t) {
  return "emu";
}
inline cudaError_t cudaGetLastError() {
  return 0;
}
inline cudaError_t cudaMalloc(void** p, size_t n) {
  *p = std::malloc(n ? n : 1);
  std::memset(*p, 0xCD, n);
  return 0;
}
inline cudaError_t cudaFree(void* p) {
  std::free(p);
  return 0;
}
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind, cudaStream_t) {
  std::memmove(d, s, n);
  return 0;
}
inline cudaError_t cudaMemsetAsync(void* d, int v, size_t n, cudaStream_t) {
  std::memset(d, v, n);
  return 0;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) {
  return 0;
}
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, int) {
  *s = (void*)1;
  return 0;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t) {
  return 0;
}
// The rounded intrinsics: one IEEE operation each (emulate.sh compiles without contraction).
#define EMU_RN(name, T, op) \
  inline T name(T a, T b) { return a op b; }
EMU_RN(__fadd_rn, float, +)
EMU_RN(__fsub_rn, float, -)
EMU_RN(__fmul_rn, float, *)
EMU_RN(__fdiv_rn, float, /)
EMU_RN(__dadd_rn, double, +)
EMU_RN(__dsub_rn, double, -)
EMU_RN(__dmul_rn, double, *)
EMU_RN(__ddiv_rn, double, /)
#undef EMU_RN
inline float __fsqrt_rn(float x) {
  return std::sqrt(x);
}
inline double __dsqrt_rn(double x) {
  return std::sqrt(x);
}
inline int __float_as_int(float f) {
  int i;
  std::memcpy(&i, &f, 4);
  return i;
}
inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}
using std::isfinite;
template <typename T>
T __ldg(const T* p) {
  return *p;
}
struct float4 {
  float x, y, z, w;
};
inline float4 make_float4(float a, float b, float c, float d) {
  return {a, b, c, d};
}
inline unsigned long long atomicCAS(unsigned long long* p, unsigned long long c,
                                    unsigned long long v) {
  auto o = *p;
  if (o == c) *p = v;
  return o;
}
inline unsigned atomicMin(unsigned* p, unsigned v) {
  auto o = *p;
  if (v < o) *p = v;
  return o;
}
inline int atomicAdd(int* p, int v) {
  auto o = *p;
  *p += v;
  return o;
}
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  auto o = *p;
  *p += v;
  return o;
}
// Every block, every thread, in order (thread-local indices).
inline void emu_launch(dim3 g, dim3 b, const std::function<void()>& fn) {
  gridDim = g;
  blockDim = b;
  for (unsigned bz = 0; bz < g.z; ++bz)
    for (unsigned by = 0; by < g.y; ++by)
      for (unsigned bx = 0; bx < g.x; ++bx)
        for (unsigned tz = 0; tz < b.z; ++tz)
          for (unsigned ty = 0; ty < b.y; ++ty)
            for (unsigned tx = 0; tx < b.x; ++tx) {
              blockIdx = dim3(bx, by, bz);
              threadIdx = dim3(tx, ty, tz);
              fn();
            }
}

// Kernels that synchronise their block (transform.py finds them) run each thread of a block as a
// fiber: __syncthreads() returns to the scheduler, which resumes the block's threads in turn, so
// every thread reaches a barrier before any passes it.
struct EmuBlock {
  std::vector<ucontext_t> fiber;
  std::vector<std::vector<char>> stack;
  std::vector<char> done;
  ucontext_t scheduler;
  const std::function<void()>* fn = nullptr;
  unsigned current = 0;
};
inline EmuBlock emu_block;
inline bool emu_in_fiber = false;

inline void __syncthreads() {
  if (emu_in_fiber) swapcontext(&emu_block.fiber[emu_block.current], &emu_block.scheduler);
}

inline void emu_fiber_main() {
  (*emu_block.fn)();
  emu_block.done[emu_block.current] = 1;  // then uc_link: back to the scheduler
}

inline void emu_launch_sync(dim3 g, dim3 b, const std::function<void()>& fn) {
  gridDim = g;
  blockDim = b;
  EmuBlock& e = emu_block;
  const unsigned n = b.x * b.y * b.z;
  e.fn = &fn;
  e.fiber.resize(n);
  e.stack.resize(n);
  e.done.assign(n, 0);
  for (unsigned block = 0; block < g.x * g.y * g.z; ++block) {
    const dim3 bi(block % g.x, block / g.x % g.y, block / (g.x * g.y));
    for (unsigned t = 0; t < n; ++t) {
      e.stack[t].resize(256 << 10);
      getcontext(&e.fiber[t]);
      e.fiber[t].uc_stack.ss_sp = e.stack[t].data();
      e.fiber[t].uc_stack.ss_size = e.stack[t].size();
      e.fiber[t].uc_link = &e.scheduler;
      makecontext(&e.fiber[t], emu_fiber_main, 0);
      e.done[t] = 0;
    }
    for (unsigned left = n; left > 0;) {
      left = 0;
      for (unsigned t = 0; t < n; ++t) {
        if (e.done[t]) continue;
        blockIdx = bi;
        threadIdx = dim3(t % b.x, t / b.x % b.y, t / (b.x * b.y));
        e.current = t;
        emu_in_fiber = true;
        swapcontext(&e.scheduler, &e.fiber[t]);
        emu_in_fiber = false;
        left += !e.done[t];
      }
    }
  }
}
