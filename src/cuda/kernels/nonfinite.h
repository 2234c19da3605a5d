// The finiteness check of prefix caching: flags a KDA snapshot (or any strided units of memory) that
// holds a NaN or an infinity, so that a state computed with one is never stored for reuse. A plain
// bit test (all exponent bits set), so it works on fp32 and bf16 alike. CPU twin: the check in
// KdaStateStore::save_snapshot (model/kda_state.cpp).
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "cuda/device_context.h"

namespace ds::gpu {

struct NonfiniteParams {
  const void* base = nullptr;  // unit of layer l at base + l * layer_stride
  int64_t layer_stride = 0;    // bytes
  int64_t unit_bytes = 0;      // bytes per unit, a multiple of 16
  int layers = 0;
  DType dtype = DType::F32;    // F32 or BF16
  int32_t* flag = nullptr;     // device; set to 1 when any element is not finite (never cleared here)
};
void run_flag_nonfinite(const NonfiniteParams& p, const DeviceContext& ctx);

}  // namespace ds::gpu
