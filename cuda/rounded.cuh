// Arithmetic that rounds like the CPU twins: each operation rounded on its own, never fused.
// The library is compiled with --fmad=true (nvcc would contract a * b + c into one FMA, in float
// and in double), while the CPU builds these stages for baseline x86-64, which has no FMA; a twin
// written with these helpers in the CPU's order of operations gives the CPU's bits.
#pragma once

namespace gocor {
namespace cuda {
namespace rn {

// name(a, b) for float and for double, each rounded once to nearest.
#define GOCOR_RN_OP(name, float_op, double_op)                                       \
  __device__ __forceinline__ float name(float a, float b) { return float_op(a, b); } \
  __device__ __forceinline__ double name(double a, double b) { return double_op(a, b); }
GOCOR_RN_OP(add, __fadd_rn, __dadd_rn)
GOCOR_RN_OP(sub, __fsub_rn, __dsub_rn)
GOCOR_RN_OP(mul, __fmul_rn, __dmul_rn)
GOCOR_RN_OP(div, __fdiv_rn, __ddiv_rn)
#undef GOCOR_RN_OP

// p + t (q - p), the CPU's linear interpolation.
__device__ __forceinline__ float lerp(float p, float q, float t) {
  return add(p, mul(t, sub(q, p)));
}

}  // namespace rn
}  // namespace cuda
}  // namespace gocor
