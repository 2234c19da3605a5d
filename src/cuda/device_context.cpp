#include "cuda/device_context.h"

namespace ds::gpu {

DeviceContext make_device_context(cudaStream_t s, const CudaEnv& switches) {
  DeviceContext c;
  c.info = device_info();
  c.stream = s;
  c.switches = switches;
  return c;
}

}  // namespace ds::gpu
