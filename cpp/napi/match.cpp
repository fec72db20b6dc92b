// Feature extraction, flow read-out and warping workers (the image-to-flow path).
#include "worker.h"

namespace gocor_napi {

void init_match(Napi::Env /*env*/, Napi::Object /*exports*/) {}

}  // namespace gocor_napi
