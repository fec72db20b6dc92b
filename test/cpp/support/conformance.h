// Access to the conformance vectors of spec section 12 (raw little-endian float32 files listed in
// conformance/manifest.json). The file names and shapes are fixed by the manifest, so they are
// spelled out here instead of parsing the JSON.
#pragma once

#include <string>
#include <vector>

#include "gocor.h"

namespace conformance {

// GOCOR_CONFORMANCE_DIR, else "<repo>/../shared/conformance" (repo located from this source file).
std::string default_dir();

// Reads `count` float32 values from `path`; throws std::runtime_error on a missing file or a size
// that differs from count * 4 bytes.
std::vector<float> read_f32(const std::string& path, size_t count);

// Parameters of one parameter set ("<dir>/<case>/<set>/param__*.bin") of the global case.
gocor::GlobalGocorParams load_global_params(const std::string& set_dir, int C);
gocor::LocalGocorParams load_local_params(const std::string& set_dir);

}  // namespace conformance
