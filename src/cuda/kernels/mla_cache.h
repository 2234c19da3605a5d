// Writes new tokens' MLA latents into the paged cache (spec §5.1): cache slot s = block * block_size +
// offset receives [ĉ (512, after kv_a_layernorm) ; k_pe (64, raw)] in the activation type.
// ĉ and k_pe may come from different buffers (the norm output and the tail of kv_a_proj's output).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"

namespace ds::gpu {

struct MlaCacheWriteParams {
  const void* c = nullptr;             // [T, ldc] act dtype: ĉ in columns [0, 512)
  const void* k_pe = nullptr;          // [T, ldpe] act dtype: k_pe in columns [0, 64)
  const int32_t* slot_mapping = nullptr;  // [T] device: cache slot of each token (< 0: skip)
  void* cache = nullptr;               // [num_blocks * block_size, 576] act dtype
  int64_t ldc = 0, ldpe = 0;           // elements, multiples of 8
  int tokens = 0;
};

void run_mla_cache_write(const MlaCacheWriteParams& p, DType act, cudaStream_t stream);

}  // namespace ds::gpu
