// The GPU model's per-sequence state, and its layout in one place:
//   KDA state slots  [kda layers][slots + 1][H][K][K] fp32   (slot `slots` is the graph-padding scratch)
//   KDA conv tails   [kda layers][slots + 1][W - 1][3HK] act (conv_slot_bytes apart, a multiple of 16)
//   KDA snapshots    the same two, [kda layers][num_snapshots][...] (prefix caching; 0 by default)
//   MLA latent pages [mla layers][(blocks + 1) * block_size][R + dr] act (page `blocks` is scratch), or
//                    with KvCacheDtype::Fp8 rows of fp8_latent_row_bytes(R + dr) bytes (e4m3 + the scale)
// and the state operations a step's layout asks for (zero, copy, snapshot, restore), enqueued on the
// context's stream before the step's layers (save_snapshot after them).
#pragma once
#include <cstdint>

#include "config/kv_cache_dtype.h"
#include "config/model_config.h"
#include "core/dtype.h"
#include "cuda/device_buffer.h"
#include "cuda/device_context.h"

namespace ds::gpu {

struct CacheShape {
  int num_slots = 0;      // usable KDA state slots [0, num_slots)
  int num_blocks = 0;     // usable MLA pages [0, num_blocks)
  int block_size = 16;
  int num_snapshots = 0;  // KDA state snapshots
  KvCacheDtype mla_dtype = KvCacheDtype::Auto;  // the MLA latent rows' format
};

// Bytes of one slot, page and snapshot (for the memory budget and the start-up log).
struct CacheUnitBytes {
  size_t state_slot = 0;  // one KDA layer's fp32 state of one slot
  size_t conv_slot = 0;   // one KDA layer's conv tail of one slot (16-byte aligned)
  size_t per_slot = 0;    // all KDA layers: one sequence's state (= one snapshot)
  size_t latent_row = 0;  // one MLA layer's cached token (act: (R + dr) x the act size; FP8: R + dr + 16)
  size_t per_block = 0;   // all MLA layers: one page
  static CacheUnitBytes of(const ModelConfig& c, DType act, int block_size,
                           KvCacheDtype mla_dtype = KvCacheDtype::Auto);
  // Device bytes of `num_slots` state slots (+ the scratch slot) and `num_snapshots` snapshots.
  size_t state_bytes(int num_slots, int num_snapshots) const {
    return size_t(num_slots + 1 + num_snapshots) * per_slot;
  }
  // Device bytes of `num_blocks` MLA pages (+ the scratch page).
  size_t page_bytes(int num_blocks) const { return size_t(num_blocks + 1) * per_block; }
};

class DeviceCaches {
 public:
  DeviceCaches(const ModelConfig& c, DType act, const CacheShape& shape, const DeviceContext& ctx);

  const CacheShape& shape() const { return shape_; }
  const CacheUnitBytes& unit() const { return unit_; }
  int num_slots() const { return shape_.num_slots; }
  int num_blocks() const { return shape_.num_blocks; }
  int block_size() const { return shape_.block_size; }
  int pad_slot() const { return shape_.num_slots; }    // scratch slot of graph-padding rows
  int pad_block() const { return shape_.num_blocks; }  // scratch page of graph-padding rows
  // Bytes of one FP8 latent row, 0 when the MLA cache is in the activation dtype (the kernels' switch).
  int64_t latent_fp8_row_bytes() const {
    return shape_.mla_dtype == KvCacheDtype::Fp8 ? int64_t(unit_.latent_row) : 0;
  }
  size_t bytes() const { return state_.bytes() + conv_.bytes() + snap_state_.bytes() + snap_conv_.bytes() + mla_.bytes(); }

  // KDA layer `kda_layer` (its index among KDA layers): the state pool / conv pool base at `slot`.
  float* kda_state(int kda_layer, int slot) const;
  void* conv_state(int kda_layer, int slot) const;
  // MLA layer `mla_layer` (its index among MLA layers): its paged latent cache.
  void* mla_layer(int mla_layer) const;

  // Zeroes the state and conv tails of `n` slots listed on the device (all KDA layers).
  void zero_slots(const int32_t* dev_slots, int n, const DeviceContext& ctx) const;
  void copy_slot(int src, int dst, const DeviceContext& ctx) const;
  void save_snapshot(int slot, int snapshot, const DeviceContext& ctx) const;
  void restore_snapshot(int snapshot, int slot, const DeviceContext& ctx) const;
  // Sets *dev_flag to 1 when snapshot `snapshot` holds a NaN or an infinity (every KDA layer).
  void flag_nonfinite_snapshot(int snapshot, int32_t* dev_flag, const DeviceContext& ctx) const;
  // Copies rows [0, rows) of MLA page `src` into page `dst`, every MLA layer (a cached partial block).
  void copy_page_rows(int src, int dst, int rows, const DeviceContext& ctx) const;

 private:
  // Copies one slot's bytes of every KDA layer between two pools ([layers][count][unit] each).
  void copy_units(const DeviceBuffer& dst, int dst_count, int dst_i, const DeviceBuffer& src, int src_count,
                  int src_i, size_t unit, const DeviceContext& ctx) const;

  CacheShape shape_;
  CacheUnitBytes unit_;
  int kda_layers_ = 0, mla_layers_ = 0;
  int64_t mla_layer_bytes_ = 0;
  DType act_;
  DeviceBuffer state_, conv_, snap_state_, snap_conv_, mla_;
};

}  // namespace ds::gpu
