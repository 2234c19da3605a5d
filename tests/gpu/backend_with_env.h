// A CUDA backend built with one developer switch (src/config/runtime_env.h) set in the environment. The
// switches are read once, when the backend's device context is made, so the variable is set around the
// construction only (and unset again, also when construction throws).
#pragma once
#include <cstdlib>
#include <memory>

#include "cuda/cuda_backend.h"
#include "model/backend.h"

namespace ds::gpu::test {

inline std::unique_ptr<Backend> make_cuda_backend_with(const BackendOptions& o, const char* var, const char* value) {
  ::setenv(var, value, 1);
  struct Unset {
    const char* var;
    ~Unset() { ::unsetenv(var); }
  } unset{var};
  return make_cuda_backend(o);
}

}  // namespace ds::gpu::test
