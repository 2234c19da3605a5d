// Everything a GPU op needs to know about "the device" it runs on, passed explicitly to every run_*
// launcher and layer: the device's properties, the stream, and the developer switches. There are no
// process-wide statics standing for the device: kernel attributes are set once per context by
// configure_kernels(), so two contexts (two devices, or two ranks on one device) never share state.
#pragma once
#include <cuda_runtime.h>

#include "config/runtime_env.h"
#include "cuda/stream.h"

namespace ds::gpu {

struct DeviceContext {
  DeviceInfo info;                 // device id, SM count, shared memory per block, ...
  cudaStream_t stream = nullptr;   // every launch of this context goes here
  CudaEnv switches;                // pdl, graphs, reference attention (parsed in src/config)
  void* tensor_map_encoder = nullptr;  // the driver's cuTensorMapEncodeTiled (kernels/tma.h), null: no TMA

  int device() const { return info.device; }
  int num_sms() const { return info.num_sms; }
  bool pdl() const { return switches.pdl; }
  // The same context on another stream (side streams, loading).
  DeviceContext on(cudaStream_t s) const {
    DeviceContext c = *this;
    c.stream = s;
    return c;
  }
};

// A context for the current device on stream `s`, with the process's switches (config/runtime_env.h).
// It also configures the kernels for that device (cuda/kernels/configure.h), so every context that
// exists has been configured: make one per device (or rank) at start-up, then copy it or use on().
DeviceContext make_device_context(cudaStream_t s, const CudaEnv& switches);

}  // namespace ds::gpu
