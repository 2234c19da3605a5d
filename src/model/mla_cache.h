// Host storage of the paged MLA latent cache (CPU backend). Per MLA layer a pool
// [num_blocks, block_size, R + dr] of latents [ĉ (after kv_a_layernorm) ; k_pe (raw)] (576 values in the
// real model). A sequence's position p lives in page block_table[p / block_size], row p % block_size;
// which pages a sequence owns is decided above the backend (SeqSlice::block_table).
// With KvCacheDtype::Fp8 the rows still hold fp32, but store() rounds each row through e4m3 with its
// per-token scale first (config/kv_cache_dtype.h), so the CPU computes from exactly what the GPU's FP8
// cache returns; bytes() stays the host's fp32 footprint.
#pragma once
#include <cstdint>
#include <vector>

#include "config/kv_cache_dtype.h"
#include "config/model_config.h"
#include "model/host_buffer.h"

namespace ds {

class MlaLatentCache {
 public:
  MlaLatentCache(const ModelConfig& c, int num_blocks, int block_size, KvCacheDtype dtype = KvCacheDtype::Auto);

  int num_blocks() const { return num_blocks_; }
  int block_size() const { return block_size_; }
  int latent_dim() const { return latent_dim_; }
  KvCacheDtype dtype() const { return dtype_; }
  float* pool(int mla_layer) const { return pools_[size_t(mla_layer)].data(); }
  // Row of position `pos` through `block_table` (checked).
  float* row(int mla_layer, const std::vector<int32_t>& block_table, int64_t pos) const;
  // Writes one new latent (latent_dim values) at `pos`, through the FP8 round trip when the cache is FP8.
  void store(int mla_layer, const std::vector<int32_t>& block_table, int64_t pos, const float* latent);
  size_t bytes() const;
  // Copies rows [0, rows) of page `src` into page `dst`, every MLA layer (prefix caching: the partial
  // last block of a cached prefix). Ids and rows are checked.
  void copy_rows(int src, int dst, int rows);

 private:
  int num_blocks_, block_size_, latent_dim_;
  KvCacheDtype dtype_;
  std::vector<HostBuffer> pools_;
};

}  // namespace ds
