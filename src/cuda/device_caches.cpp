#include "cuda/device_caches.h"

#include "core/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/elementwise.h"
#include "cuda/kernels/nonfinite.h"

namespace ds::gpu {

CacheUnitBytes CacheUnitBytes::of(const ModelConfig& c, DType act, int block_size, KvCacheDtype mla_dtype) {
  const int64_t H = c.kda.num_heads, K = c.kda.head_dim, HK = H * K, W = c.kda.conv_kernel;
  CacheUnitBytes u;
  u.state_slot = size_t(H * K * K) * 4;
  u.conv_slot = (size_t((W - 1) * 3 * HK) * dtype_size(act) + 15) / 16 * 16;
  u.per_slot = size_t(c.num_kda_layers()) * (u.state_slot + u.conv_slot);
  u.latent_row = mla_dtype == KvCacheDtype::Fp8 ? size_t(fp8_latent_row_bytes(c.mla.latent_dim()))
                                                : size_t(c.mla.latent_dim()) * dtype_size(act);
  u.per_block = size_t(c.num_mla_layers()) * block_size * u.latent_row;
  return u;
}

DeviceCaches::DeviceCaches(const ModelConfig& c, DType act, const CacheShape& shape, const DeviceContext& ctx)
    : shape_(shape), unit_(CacheUnitBytes::of(c, act, shape.block_size, shape.mla_dtype)),
      kda_layers_(c.num_kda_layers()), mla_layers_(c.num_mla_layers()), act_(act) {
  DS_CHECK(shape.num_slots > 0 && shape.num_blocks > 0 && shape.block_size > 0 && shape.num_snapshots >= 0,
           "device caches: bad shape");
  // the conv kernels address a slot as [W-1, 3HK] elements: the padded size must equal the real one
  DS_CHECK(kda_layers_ == 0 || unit_.conv_slot == size_t((c.kda.conv_kernel - 1) * 3 * c.kda.num_heads *
                                                        c.kda.head_dim) * dtype_size(act),
           "conv state slot size must be a multiple of 16 bytes");
  const size_t L = size_t(kda_layers_), slots = size_t(shape.num_slots) + 1;
  DS_CHECK(shape.mla_dtype == KvCacheDtype::Auto || c.mla.latent_dim() % 16 == 0,
           "FP8 MLA cache: the latent width {} must be a multiple of 16", c.mla.latent_dim());
  mla_layer_bytes_ = int64_t(shape.num_blocks + 1) * shape.block_size * int64_t(unit_.latent_row);
  state_ = DeviceBuffer(std::max<size_t>(1, L * slots * unit_.state_slot), "KDA state slots");
  conv_ = DeviceBuffer(std::max<size_t>(1, L * slots * unit_.conv_slot), "KDA conv state");
  if (shape.num_snapshots > 0 && L > 0) {
    snap_state_ = DeviceBuffer(L * size_t(shape.num_snapshots) * unit_.state_slot, "KDA state snapshots");
    snap_conv_ = DeviceBuffer(L * size_t(shape.num_snapshots) * unit_.conv_slot, "KDA conv snapshots");
  }
  mla_ = DeviceBuffer(std::max<size_t>(1, size_t(shape.num_blocks + 1) * unit_.per_block), "MLA latent cache");
  for (const DeviceBuffer* b : {&state_, &conv_, &snap_state_, &snap_conv_, &mla_})
    if (b->bytes()) DS_CUDA_CHECK(cudaMemsetAsync(b->data(), 0, b->bytes(), ctx.stream));
}

float* DeviceCaches::kda_state(int l, int slot) const {
  const size_t slots = size_t(shape_.num_slots) + 1;
  return reinterpret_cast<float*>(state_.as<char>() + (size_t(l) * slots + size_t(slot)) * unit_.state_slot);
}

void* DeviceCaches::conv_state(int l, int slot) const {
  const size_t slots = size_t(shape_.num_slots) + 1;
  return conv_.as<char>() + (size_t(l) * slots + size_t(slot)) * unit_.conv_slot;
}

void* DeviceCaches::mla_layer(int l) const {
  return mla_.as<char>() + int64_t(l) * mla_layer_bytes_;
}

void DeviceCaches::zero_slots(const int32_t* dev_slots, int n, const DeviceContext& ctx) const {
  if (n == 0 || kda_layers_ == 0) return;
  const int64_t slots = int64_t(shape_.num_slots) + 1;
  ZeroSlotsParams z;
  z.slots = dev_slots;
  z.num_slots = n;
  z.layers = kda_layers_;
  z.base = state_.data();
  z.slot_stride = int64_t(unit_.state_slot);
  z.layer_stride = int64_t(unit_.state_slot) * slots;
  z.bytes_per_slot = int64_t(unit_.state_slot);
  run_zero_slots(z, ctx);
  z.base = conv_.data();
  z.slot_stride = int64_t(unit_.conv_slot);
  z.layer_stride = int64_t(unit_.conv_slot) * slots;
  z.bytes_per_slot = int64_t(unit_.conv_slot);
  run_zero_slots(z, ctx);
}

void DeviceCaches::copy_units(const DeviceBuffer& dst, int dst_count, int dst_i, const DeviceBuffer& src,
                              int src_count, int src_i, size_t unit, const DeviceContext& ctx) const {
  // one copy per KDA layer (a 2-D copy would be one call, but its pitch, the pool's layer stride,
  // may exceed the 2 GiB pitch limit with many slots)
  for (int l = 0; l < kda_layers_; ++l)
    DS_CUDA_CHECK(cudaMemcpyAsync(dst.as<char>() + (size_t(l) * dst_count + size_t(dst_i)) * unit,
                                  src.as<char>() + (size_t(l) * src_count + size_t(src_i)) * unit, unit,
                                  cudaMemcpyDeviceToDevice, ctx.stream));
}

void DeviceCaches::copy_slot(int src, int dst, const DeviceContext& ctx) const {
  DS_CHECK(src >= 0 && src < shape_.num_slots && dst >= 0 && dst < shape_.num_slots,
           "copy_slot: slots {} -> {} outside [0, {})", src, dst, shape_.num_slots);
  if (kda_layers_ == 0 || src == dst) return;
  const int slots = shape_.num_slots + 1;
  copy_units(state_, slots, dst, state_, slots, src, unit_.state_slot, ctx);
  copy_units(conv_, slots, dst, conv_, slots, src, unit_.conv_slot, ctx);
}

void DeviceCaches::save_snapshot(int slot, int snap, const DeviceContext& ctx) const {
  DS_CHECK(slot >= 0 && slot < shape_.num_slots && snap >= 0 && snap < shape_.num_snapshots,
           "save_snapshot: slot {} / snapshot {} outside [0, {}) / [0, {})", slot, snap, shape_.num_slots,
           shape_.num_snapshots);
  if (kda_layers_ == 0) return;
  const int slots = shape_.num_slots + 1, snaps = shape_.num_snapshots;
  copy_units(snap_state_, snaps, snap, state_, slots, slot, unit_.state_slot, ctx);
  copy_units(snap_conv_, snaps, snap, conv_, slots, slot, unit_.conv_slot, ctx);
}

void DeviceCaches::restore_snapshot(int snap, int slot, const DeviceContext& ctx) const {
  DS_CHECK(slot >= 0 && slot < shape_.num_slots && snap >= 0 && snap < shape_.num_snapshots,
           "restore_snapshot: snapshot {} / slot {} outside [0, {}) / [0, {})", snap, slot, shape_.num_snapshots,
           shape_.num_slots);
  if (kda_layers_ == 0) return;
  const int slots = shape_.num_slots + 1, snaps = shape_.num_snapshots;
  copy_units(state_, slots, slot, snap_state_, snaps, snap, unit_.state_slot, ctx);
  copy_units(conv_, slots, slot, snap_conv_, snaps, snap, unit_.conv_slot, ctx);
}

void DeviceCaches::flag_nonfinite_snapshot(int snap, int32_t* dev_flag, const DeviceContext& ctx) const {
  DS_CHECK(snap >= 0 && snap < shape_.num_snapshots, "flag_nonfinite_snapshot: snapshot {} outside [0, {})", snap,
           shape_.num_snapshots);
  if (kda_layers_ == 0) return;
  const int64_t snaps = shape_.num_snapshots;
  NonfiniteParams p;
  p.layers = kda_layers_;
  p.flag = dev_flag;
  p.base = snap_state_.as<char>() + size_t(snap) * unit_.state_slot;
  p.layer_stride = int64_t(unit_.state_slot) * snaps;
  p.unit_bytes = int64_t(unit_.state_slot);
  p.dtype = DType::F32;
  run_flag_nonfinite(p, ctx);
  p.base = snap_conv_.as<char>() + size_t(snap) * unit_.conv_slot;
  p.layer_stride = int64_t(unit_.conv_slot) * snaps;
  p.unit_bytes = int64_t(unit_.conv_slot);
  p.dtype = act_;
  run_flag_nonfinite(p, ctx);
}

void DeviceCaches::copy_page_rows(int src, int dst, int rows, const DeviceContext& ctx) const {
  DS_CHECK(src >= 0 && src < shape_.num_blocks && dst >= 0 && dst < shape_.num_blocks && src != dst && rows > 0 &&
               rows <= shape_.block_size,
           "copy_page_rows: {} rows of page {} -> {} (pages [0, {}), {} rows each)", rows, src, dst, shape_.num_blocks,
           shape_.block_size);
  const size_t row = unit_.latent_row, page = row * size_t(shape_.block_size);
  for (int l = 0; l < mla_layers_; ++l) {
    char* base = static_cast<char*>(mla_layer(l));
    DS_CUDA_CHECK(cudaMemcpyAsync(base + size_t(dst) * page, base + size_t(src) * page, row * size_t(rows),
                                  cudaMemcpyDeviceToDevice, ctx.stream));
  }
}

}  // namespace ds::gpu
