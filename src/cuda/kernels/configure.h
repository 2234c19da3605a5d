// Kernel attributes (dynamic shared memory limits above the default 48 KiB) are per device, not per
// launch: they are set once per DeviceContext, when it is made (make_device_context calls
// configure_kernels), never lazily from a launcher, so nothing in the kernels holds "already set" state.
#pragma once
#include "cuda/device_context.h"

namespace ds::gpu {

// Every family's configure_xxx(ctx) on ctx's device (the current device is restored afterwards).
void configure_kernels(const DeviceContext& ctx);

}  // namespace ds::gpu
