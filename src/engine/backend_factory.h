#pragma once
#include <memory>

#include "model/backend.h"

namespace ds {
// Creates the backend named by opts.device ("cpu" or "cuda"); throws ds::Error with the reason
// when it cannot (unknown device, no CUDA build, no GPU, bad checkpoint).
std::unique_ptr<Backend> create_backend(const BackendOptions& opts);
bool cuda_available();  // built with CUDA and a device is present
}  // namespace ds
