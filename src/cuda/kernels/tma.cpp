#include "cuda/kernels/tma.h"

#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <string>

#include "cuda/cuda_check.h"

namespace ds::gpu {

void* find_tensor_map_encoder() {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult q{};
  if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q) != cudaSuccess ||
      q != cudaDriverEntryPointSuccess) {
    (void)cudaGetLastError();  // not sticky: clear it
    return nullptr;
  }
  return fn;
}

CUtensorMap rows_tensor_map(void* encoder, const RowsMapDesc& d) {
  DS_GPU_REQUIRE(encoder != nullptr, std::string("tensor map for ") + d.what + ": the driver has no cuTensorMapEncodeTiled");
  CUtensorMap m;
  const cuuint64_t dims[2] = {cuuint64_t(d.cols), cuuint64_t(1) << 31};
  const cuuint64_t strides[1] = {cuuint64_t(d.ld) * cuuint64_t(d.elem_bytes)};
  DS_GPU_REQUIRE(d.box_col_bytes % 16 == 0 && d.box_col_bytes > 0 &&
                     (d.swizzle != CU_TENSOR_MAP_SWIZZLE_128B || d.box_col_bytes == 128),
                 std::string("tensor map for ") + d.what + ": bad box width");
  const cuuint32_t box[2] = {cuuint32_t(d.box_col_bytes / d.elem_bytes), d.box_rows}, elem[2] = {1, 1};
  const CUresult r = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(encoder)(
      &m, d.type, 2, const_cast<void*>(d.base), dims, strides, box, elem, CU_TENSOR_MAP_INTERLEAVE_NONE,
      d.swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  DS_GPU_REQUIRE(r == CUDA_SUCCESS, std::string("tensor map for ") + d.what + ": the driver refused it (CUresult " +
                                        std::to_string(int(r)) + ")");
  return m;
}

}  // namespace ds::gpu
