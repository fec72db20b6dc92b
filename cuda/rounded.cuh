// Arithmetic that rounds like the CPU twins: each operation rounded on its own, never fused.
// The library is compiled with --fmad=true (nvcc would contract a * b + c into one FMA, in float
// and in double), while the CPU builds these stages for baseline x86-64, which has no FMA; a twin
// written with these helpers in the CPU's order of operations gives the CPU's bits.
#pragma once

namespace gocor {
namespace cuda {
namespace rn {

__device__ __forceinline__ float add(float a, float b) {
  return __fadd_rn(a, b);
}
__device__ __forceinline__ float sub(float a, float b) {
  return __fsub_rn(a, b);
}
__device__ __forceinline__ float mul(float a, float b) {
  return __fmul_rn(a, b);
}
__device__ __forceinline__ float div(float a, float b) {
  return __fdiv_rn(a, b);
}
__device__ __forceinline__ double add(double a, double b) {
  return __dadd_rn(a, b);
}
__device__ __forceinline__ double sub(double a, double b) {
  return __dsub_rn(a, b);
}
__device__ __forceinline__ double mul(double a, double b) {
  return __dmul_rn(a, b);
}
__device__ __forceinline__ double div(double a, double b) {
  return __ddiv_rn(a, b);
}
// p + t (q - p), the CPU's linear interpolation.
__device__ __forceinline__ float lerp(float p, float q, float t) {
  return add(p, mul(t, sub(q, p)));
}

}  // namespace rn
}  // namespace cuda
}  // namespace gocor
