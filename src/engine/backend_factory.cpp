#include "engine/backend_factory.h"

#include "core/error.h"
#include "model/cpu_backend.h"
#include "model/parallel_cpu_backend.h"
#if DS_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "cuda/cuda_backend.h"
#include "cuda/parallel_cuda_backend.h"
#endif

namespace ds {

bool cuda_available() {
#if DS_HAVE_CUDA
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
#else
  return false;
#endif
}

std::unique_ptr<Backend> create_backend(const BackendOptions& opts) {
  opts.parallel.validate();
  const int ranks = opts.parallel.world_size();
  if (opts.device == "cpu") {
    if (ranks > 1) return std::make_unique<ParallelCpuBackend>(opts);
    return make_cpu_backend(opts);
  }
  if (opts.device == "cuda") {
#if DS_HAVE_CUDA
    DS_CHECK(cuda_available(), "device 'cuda' was asked for but no CUDA device is visible");
    if (ranks > 1) return std::make_unique<ParallelCudaBackend>(opts);  // one rank per GPU (docs/PARALLEL.md)
    return make_cuda_backend(opts);
#else
    fail("device 'cuda' was asked for but this deltaserve was built without CUDA (DS_CUDA=OFF or no nvcc)");
#endif
  }
  fail("unknown device '{}' (expected cpu or cuda)", opts.device);
}

}  // namespace ds
