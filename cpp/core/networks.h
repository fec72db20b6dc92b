// The official networks PWC-Net, PWC-Net-GOCor, GLU-Net and GLU-Net-GOCor (spec networks.md):
// weights from a name -> tensor map with the official state_dict names, and their forward passes.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common.h"

namespace gocor {

enum class NetworkModel { PWCNet, PWCNet_GOCor, GLUNet, GLUNet_GOCor };

// "PWCNet" ... -> model; false for an unknown name.
bool parse_network_model(const std::string& name, NetworkModel* out);
inline bool is_glu(NetworkModel m) {
  return m == NetworkModel::GLUNet || m == NetworkModel::GLUNet_GOCor;
}

// A tensor by name, borrowed: `data` (size elements) stays the caller's and must stay valid during
// Network::create, which copies what the network keeps (so a load holds no second copy of the
// checkpoint).
struct NamedTensor {
  std::vector<int64_t> shape;
  const float* data = nullptr;
  size_t size = 0;
};
using TensorMap = std::map<std::string, NamedTensor>;
using TensorList = std::vector<std::pair<std::string, std::vector<int64_t>>>;

struct NetworkOptions {
  int num_iter_global = 3;  // K_global (GLU-Net-GOCor)
  int num_iter_local = 3;   // K_local (both GOCor networks)
};

// One flow estimate of the official list: (B, 2, h, w).
struct FlowEstimate {
  int B = 0, h = 0, w = 0;
  std::vector<float> data;
};

struct NetworkOutput {
  std::vector<FlowEstimate> estimates256;  // GLU networks: output_256 [flow4, flow3]
  std::vector<FlowEstimate> estimates;     // PWC: [flow6 .. flow2]; GLU: output [flow2, flow1]
};

// The state_dict names and shapes of `m`, in the official order (num_batches_tracked: shape {}).
TensorList network_tensors(NetworkModel m);

class Network {
 public:
  virtual ~Network() = default;
  // Strict, like the official loader: a missing, unexpected or mis-shaped tensor throws
  // InvalidArg naming it; `num_batches_tracked` entries (unused) may be absent.
  static std::unique_ptr<Network> create(NetworkModel m, const TensorMap& tensors,
                                         const NetworkOptions& o);
  virtual NetworkModel model() const = 0;
  // PWC: inputs = {reference, query} (B,3,H,W), H and W multiples of 64.
  // GLU: inputs = {target, source} (B,3,H,W), H and W multiples of 8, then {target256, source256}
  // (B,3,H256,W256). Every layer is a dispatched operation (nn:: in dispatch.h): ex.device is the
  // job's resolved device, and each layer runs on its CUDA twin only once that twin has passed GPU
  // parity (today none has, so the CPU computes whatever the device). Thread-safe (const).
  virtual NetworkOutput forward(const std::vector<const float*>& inputs, int B, int H, int W,
                                int H256, int W256, const Exec& ex) const = 0;
  // Bytes the network keeps between forwards: its parameters in one layout each (conv weights as
  // (out, in, k, k), batch norm folded), about the float32 bytes of the checkpoint's tensors.
  virtual size_t retained_bytes() const = 0;
  // Bytes forward allocates for one batch element at H x W (the largest level's activations and
  // the GOCor working sets, summed generously), for the memory limit.
  virtual size_t work_bytes(int H, int W) const = 0;
};

// Images in, flow out (spec 2.6 / 3.7: the official estimate_flow with source = b, target = a):
// a (C, Ha, Wa), b (C, Hb, Wb) in [0, 1], RGB (C = 3; C = 1 grey; a 4th channel is ignored) ->
// flow (2, Ho, Wo) on a's grid resized to Ho x Wo, pointing into b, in pixels of that grid.
// Pre-processing as the official code: 8-bit values, the smaller image zero-padded at the top and
// left to the larger size; PWC: resized (gocor's bilinear resizer, not PIL's) to multiples of 64,
// BGR / 255; GLU: area-resized to multiples of 8 (at least 256) and to 256 x 256, ImageNet
// normalisation. Post-processing: final flow resized (bilinear) and scaled by the size ratios.
std::vector<float> network_match(const Network& net, const float* a, int C, int Ha, int Wa,
                                 const float* b, int Hb, int Wb, int Ho, int Wo, const Exec& ex);

// Number of GLU-Net's extra iterative levels for width W (spec 3.5 step 9).
int glu_extra_levels(int W);

}  // namespace gocor
