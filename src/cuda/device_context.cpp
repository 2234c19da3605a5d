#include "cuda/device_context.h"

#include "cuda/kernels/configure.h"
#include "cuda/kernels/tma.h"

namespace ds::gpu {

DeviceContext make_device_context(cudaStream_t s, const CudaEnv& switches) {
  DeviceContext c;
  c.info = device_info();
  c.stream = s;
  c.switches = switches;
  c.tensor_map_encoder = find_tensor_map_encoder();  // once per context, outside any graph capture
  configure_kernels(c);  // kernel attributes for this device, once per context (not per launch)
  return c;
}

}  // namespace ds::gpu
