#include "conformance.h"

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace conformance {

std::string default_dir() {
  if (const char* env = std::getenv("GOCOR_CONFORMANCE_DIR")) return env;
  // This file is <repo>/test/cpp/support/conformance.cpp.
  std::string here = __FILE__;
  for (int i = 0; i < 4; ++i) {
    const size_t slash = here.find_last_of('/');
    here = slash == std::string::npos ? std::string(".") : here.substr(0, slash);
  }
  return here + "/../shared/conformance";
}

std::vector<float> read_f32(const std::string& path, size_t count) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw std::runtime_error("cannot open " + path);
  const auto size = static_cast<size_t>(in.tellg());
  if (size != count * sizeof(float))
    throw std::runtime_error(path + ": expected " + std::to_string(count * sizeof(float)) +
                             " bytes, found " + std::to_string(size));
  std::vector<float> v(count);
  in.seekg(0);
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(size));
  return v;  // the files are little-endian, like every machine this project builds for
}

namespace {

void load_dist(const std::string& prefix, gocor::DistanceFns* d) {
  auto y = read_f32(prefix + "label_map_predictor_weight.bin", gocor::kNumDistBins);
  auto v = read_f32(prefix + "spatial_weight_predictor_weight.bin", gocor::kNumDistBins);
  auto m = read_f32(prefix + "target_mask_predictor_0_weight.bin", gocor::kNumDistBins);
  std::memcpy(d->label, y.data(), sizeof(d->label));
  std::memcpy(d->weight, v.data(), sizeof(d->weight));
  std::memcpy(d->mask_logit, m.data(), sizeof(d->mask_logit));
}

}  // namespace

gocor::GlobalGocorParams load_global_params(const std::string& set_dir, int C) {
  const std::string pre = set_dir + "/param__corr_module_";
  gocor::GlobalGocorParams p = gocor::default_global_params(C, 0);
  p.target_fg = read_f32(pre + "filter_initializer_target_fg.bin", C);
  p.target_bg = read_f32(pre + "filter_initializer_target_bg.bin", C);
  p.log_step_length = read_f32(pre + "filter_optimizer_log_step_length.bin", 1)[0];
  p.filter_reg = read_f32(pre + "filter_optimizer_filter_reg.bin", 1)[0];
  p.reg_weight1 = read_f32(pre + "filter_optimizer_reg_layer_weight1.bin", 16 * 9);
  p.reg_weight2 = read_f32(pre + "filter_optimizer_reg_layer_weight2.bin", 16 * 16 * 9);
  load_dist(pre + "filter_optimizer_", &p.dist);
  return p;
}

gocor::LocalGocorParams load_local_params(const std::string& set_dir) {
  const std::string pre = set_dir + "/param__";
  gocor::LocalGocorParams p = gocor::default_local_params();
  p.scaling = read_f32(pre + "filter_initializer_scaling.bin", 1)[0];
  p.log_step_length = read_f32(pre + "filter_optimizer_log_step_length.bin", 1)[0];
  p.filter_reg = read_f32(pre + "filter_optimizer_filter_reg.bin", 1)[0];
  load_dist(pre + "filter_optimizer_", &p.dist);
  return p;
}

}  // namespace conformance
