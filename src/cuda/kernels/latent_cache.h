// Writes new tokens' MLA latents into the paged latent cache (spec 5.1), fusing kv_a_layernorm:
//   cache[cache_rows[t]] = [ rmsnorm(kv_a[t, 0:R]) * w  (eps 1e-6) ; kv_a[t, R:R+Dr] (raw k_pe) ]
// The cache is [num_blocks * block_size, R + Dr] in the activation dtype; cache_rows holds
// block_id * block_size + offset for each token. CPU twin: src/kernels/norm (rmsnorm) + a copy.
// FP8 cache (fp8_row_bytes > 0, --kv-cache-dtype fp8, config/kv_cache_dtype.h): row r is fp8_row_bytes
// bytes at r * fp8_row_bytes: the R + Dr values e4m3(v / scale) then the fp32 scale = amax / 448 of the row
// (1 when all zero), v computed in fp32 (not rounded to the activation dtype first). CPU twin:
// MlaLatentCache::store (fp8_latent_round_trip).
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
  int tokens = 0, R = 0, Dr = 0;         // R, Dr multiples of 8 (FP8: R + Dr a multiple of 16)
  float eps = 1e-6f;
  int64_t fp8_row_bytes = 0;             // 0: the cache is in the act dtype; else FP8 rows (see above)
};
void run_latent_cache_write(const LatentCacheWriteParams& p, DType act, const DeviceContext& ctx);

// Gathers cached latents [ĉ ; k_pe] by position through the block tables (the MLA prefill's key
// expansion input): with cu_rows, sequence s (block-table row s) fills dst rows
// [cu_rows[s] − row0, cu_rows[s + 1] − row0) with its positions pos0, pos0 + 1, ...; without, one
// sequence (block-table row 0) fills dst rows [0, rows) with positions [pos0, pos0 + rows).
// Position q of a sequence is cache row block_tables[s * bt_stride + q / block_size] * block_size
// + q % block_size. With fp8_row_bytes > 0 the cache holds FP8 rows (see above) and dst receives the
// dequantized values e4m3 · scale (fp32, then rounded to the act dtype).
struct LatentGatherParams {
  const void* cache = nullptr;            // [num_blocks * block_size, D] act dtype
  const int32_t* block_tables = nullptr;  // [num_seqs, bt_stride] device
  int bt_stride = 0, block_size = 0;
  const int32_t* cu_rows = nullptr;       // [num_seqs + 1] device, optional (see above)
  int num_seqs = 1;
  int row0 = 0;                           // subtracted from cu_rows' values
  int64_t pos0 = 0;
  void* dst = nullptr;                    // [rows, ld_dst] act dtype
  int64_t ld_dst = 0;                     // 0: D
  int rows = 0, D = 0;                    // D a multiple of 8 (FP8: of 16)
  int64_t fp8_row_bytes = 0;              // 0: the cache is in the act dtype; else its FP8 row size
};
void run_latent_gather(const LatentGatherParams& p, DType act, const DeviceContext& ctx);

}  // namespace ds::gpu
