// Tensor maps for the Hopper TMA copies of the wgmma kernels (mla_prefill_wgmma.cu, moe_gemm_wgmma.cu,
// moe_gemm_fp8_wgmma.cu, mla_decode_f8.cu): a 2D row-major matrix (columns, rows) read in boxes whose rows are
// 128 bytes, landing in shared memory in the 128-byte-swizzled layout the wgmma descriptors read (wgmma.cuh), or
// (no swizzle) narrower boxes whose rows land one after another. The driver's encoder
// is found once per DeviceContext through the runtime (DeviceContext::tensor_map_encoder; the build links no
// libcuda). The device side (the copies, expect_tx) is in wgmma.cuh.
#pragma once
#include <cuda.h>

#include <cstdint>

namespace ds::gpu {

// cuTensorMapEncodeTiled, or nullptr where the driver has none (the kernels then copy with cp.async).
void* find_tensor_map_encoder();

struct RowsMapDesc {
  const void* base = nullptr;  // 16-byte aligned (the row of coordinate 0, possibly before the allocation)
  CUtensorMapDataType type = CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  int elem_bytes = 2;
  int64_t cols = 0;            // columns a box may read (elements)
  int64_t ld = 0;              // row stride (elements; elem_bytes * ld a multiple of 16)
  uint32_t box_rows = 128;     // box: box_col_bytes of columns x box_rows rows (at most 256)
  uint32_t box_col_bytes = 128;  // 128 with the 128-byte swizzle; a multiple of 16 without
  CUtensorMapSwizzle swizzle = CU_TENSOR_MAP_SWIZZLE_128B;  // (SWIZZLE_NONE: rows land box_col_bytes apart)
  const char* what = "";       // for the error message
};
// The map; the row extent is 2^31 (the rows read are bounded by the kernels, which copy only whole tiles
// inside their matrices). Throws ds::Error naming `what` when the driver refuses the description.
CUtensorMap rows_tensor_map(void* encoder, const RowsMapDesc& d);

}  // namespace ds::gpu
