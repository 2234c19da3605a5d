// Writes new tokens' MLA latents into the paged latent cache (spec 5.1), fusing kv_a_layernorm:
//   cache[cache_rows[t]] = [ rmsnorm(kv_a[t, 0:R]) * w  (eps 1e-6) ; kv_a[t, R:R+Dr] (raw k_pe) ]
// The cache is [num_blocks * block_size, R + Dr] in the activation dtype; cache_rows holds
// block_id * block_size + offset for each token. CPU twin: src/kernels/norm (rmsnorm) + a copy.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"
#include "cuda/device_context.h"

namespace ds::gpu {

struct LatentCacheWriteParams {
  const void* kv_a = nullptr;            // [tokens, ld_kv_a] act dtype: [latent R | k_pe Dr]
  int64_t ld_kv_a = 0;
  const void* norm_weight = nullptr;     // [R] act dtype
  void* cache = nullptr;                 // [num_blocks * block_size, R + Dr] act dtype
  const int32_t* cache_rows = nullptr; // [tokens] cache row of each token
  int tokens = 0, R = 0, Dr = 0;         // R, Dr multiples of 8
  float eps = 1e-6f;
};
void run_latent_cache_write(const LatentCacheWriteParams& p, DType act, const DeviceContext& ctx);

}  // namespace ds::gpu
