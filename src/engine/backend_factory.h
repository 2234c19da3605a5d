#pragma once
#include <memory>

#include "model/backend.h"

namespace ds {
// Creates the backend named by opts.device ("cpu" or "cuda"); throws ds::Error with the reason
// when it cannot (unknown device, no CUDA build, no GPU, bad checkpoint, a parallel config the model
// does not divide into, several ranks on cuda). Several ranks on the CPU: ParallelCpuBackend.
std::unique_ptr<Backend> create_backend(const BackendOptions& opts);
bool cuda_available();  // built with CUDA and a device is present
}  // namespace ds
