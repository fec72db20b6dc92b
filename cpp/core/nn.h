// Layer operations of the official networks (spec networks.md sections 1.3-1.7), CPU, float32,
// one image (C, H, W) per call: batch elements never interact, the networks loop over them.
// Each function works over plain pointers with its shapes in a one-line comment; the
// straightforward twins of the fast convolutions (conv2d_naive, conv_transpose2d_naive) are the
// test oracles. Each layer `x_cpu` is the CPU twin of the dispatched operation `nn::x`
// (dispatch.h), which the networks call; its CUDA twin `x_cuda` is in cuda/nn.cu.
#pragma once

#include <cstdint>
#include <vector>

#include "gocor.h"

namespace gocor {
namespace nn {

enum class Act { None, Relu, Leaky };  // Leaky: LeakyReLU(0.1)

// A Conv2d with the per-channel affine epilogue of an eval-mode BatchNorm2d and an activation:
// out = act((conv(x) + bias) * bn_scale + bn_shift), bn_scale/bn_shift empty without batch norm.
// bn_scale = gamma / sqrt(var + 1e-5) and bn_shift = beta - mean * bn_scale are computed once
// when the weights are loaded (fold_batch_norm), as PyTorch evaluates it (x * a + c).
struct Conv {
  int out = 0, in = 0, k = 3, stride = 1, pad = 1, dil = 1;
  Act act = Act::None;
  // (out, in, k, k): the one layout a network keeps (issue 15's memory bound). The per-tap copy
  // of the shifted views and the Winograd weight are derived from it per call (scratch), and the
  // CUDA twin uploads it as is.
  std::vector<float> weight;
  std::vector<float> bias;  // (out)
  std::vector<float> bn_scale, bn_shift;
};

// ConvTranspose2d k = 4, s = 2, p = 1 (the only one the networks use).
struct Deconv {
  int out = 0, in = 0;
  std::vector<float> weight_t;  // (out*16, in): the official (in, out, 4, 4) weight transposed
  std::vector<float> bias;      // (out)
};

// Output size of a convolution along one axis: floor((n + 2p - d(k-1) - 1)/s) + 1.
inline int conv_out_size(int n, int k, int s, int p, int d) {
  return (n + 2 * p - d * (k - 1) - 1) / s + 1;
}

// gamma, beta, mean, var (out) -> c.bn_scale, c.bn_shift (eps 1e-5).
void fold_batch_norm(Conv& c, const float* gamma, const float* beta, const float* mean,
                     const float* var);

// Whether conv2d takes the shifted-view path (stride 1, padding = dilation * (k-1)/2, at least 16
// input channels), from the weight per tap (k*k, out, in) derived per call.
bool conv_uses_taps(const Conv& c);
// Whether a taps layer runs as Winograd F(2x2, 3x3) instead (k = 3: 2.25x fewer multiplications);
// dilated layers too, on their sub-grids. Its weight G g G^T (16, in, out) is derived per call.
bool conv_uses_winograd(const Conv& c);

// Frees the calling thread's scratch that the convolutions keep between layers (blocks of up to
// 32 MiB, the GEMM paths' buffers): a network's forward ends with it, so that each thread that ran
// one does not keep its largest layers' scratch (the pool's helper threads keep their buffers,
// a few MiB each).
void release_thread_scratch();

// official weight (in, out, 4, 4) -> d.weight_t (out*16, in).
void set_deconv_weight(Deconv& d, const float* weight);

// in (c.in, H, W) -> out (c.out, Ho, Wo) on the packed GEMM. Stride 1 where conv_uses_taps: at
// most 2 output channels as direct loops; Winograd F(2x2, 3x3) where conv_uses_winograd and the
// sub-grids are at least 12 columns wide (W >= 12 c.dil; on narrower ones the transforms' vectors
// run mostly empty), 16 GEMMs over blocks of transformed tiles; otherwise one GEMM per tap on a
// shifted view of the zero-padded input (an implicit im2col: no column matrix). Other layers:
// im2col in column tiles. Threads split the output columns (Winograd: the tiles; direct: the rows).
void conv2d_cpu(const Conv& c, const float* in, int H, int W, float* out, const Exec& ex);
// One path of conv2d_cpu forced (tests): Taps (the shifted views, or the direct loops for at most
// 2 output channels) needs conv_uses_taps, Winograd conv_uses_winograd (any size and dilation).
enum class ConvPath { Im2col, Taps, Winograd };
void conv2d_path_cpu(const Conv& c, ConvPath path, const float* in, int H, int W, float* out,
                     const Exec& ex);
// The same, straightforward loops in float64 (test oracle).
void conv2d_naive(const Conv& c, const float* in, int H, int W, float* out);

// in (d.in, H, W) -> out (d.out, 2H, 2W).
void conv_transpose2d_cpu(const Deconv& d, const float* in, int H, int W, float* out,
                          const Exec& ex);
// The same from the official (in, out, 4, 4) weight, straightforward loops in float64 (oracle).
void conv_transpose2d_naive(const float* weight, const float* bias, int Cin, int Cout,
                            const float* in, int H, int W, float* out);

// x (n) <- LeakyReLU(0.1)(x).
void leaky_relu_cpu(float* x, int64_t n, const Exec& ex);

// in (C, H, W), flow (2, H, W) in pixels of that grid -> out (C, H, W): in sampled at
// (x + u, y + v), bilinear, zero padding, align_corners=True (spec 1.4); with_mask: PWC-Net's
// validity mask (samples whose in-range corner weights sum below 0.9999 are zeroed).
void warp_cpu(const float* in, const float* flow, int C, int H, int W, bool with_mask, float* out,
              const Exec& ex);

// in (C, Hi, Wi) -> out (C, Ho, Wo): bilinear, align_corners=False (spec 1.5), values unscaled.
void resize_bilinear_cpu(const float* in, int C, int Hi, int Wi, float* out, int Ho, int Wo,
                         const Exec& ex);
// in (C, Hi, Wi) -> out (C, Ho, Wo): area (adaptive average pooling, spec 1.5).
void resize_area_cpu(const float* in, int C, int Hi, int Wi, float* out, int Ho, int Wo,
                     const Exec& ex);
// in (C, H, W) -> out (C, H/2, W/2): MaxPool2d(2, 2), floor mode.
void maxpool2_cpu(const float* in, int C, int H, int W, float* out, const Exec& ex);
// x (C, H, W) <- x / sqrt(sum_c x^2 + 1e-6) per pixel (FeatureL2Norm).
void l2norm_channels_cpu(float* x, int C, int H, int W, const Exec& ex);
// v (N, N) as M[t][r] (t: query position, the channel axis; r: reference position) <- mutual
// matching (spec 1.7): M * ((M / (max_r M + 1e-5)) * (M / (max_t M + 1e-5))).
void mutual_matching_cpu(float* v, int N, const Exec& ex);

// Local GOCor (gocor.md section 5, search radius 4) with float64 internals, as the networks run
// it (networks.md 5.5: float32 internals amplify rounding through the local iterations):
// reference, query (C, H, W) -> volume (81, H, W) = (1/C) Corr(w, query), rounded to float32.
void gocor_local_f64_cpu(const LocalGocorParams& p, int num_iter, const float* reference,
                         const float* query, float* volume, int C, int H, int W, const Exec& ex);

}  // namespace nn
}  // namespace gocor
