#include "model/kda_state.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace ds {

KdaStateStore::KdaStateStore(const ModelConfig& c, int num_slots, int num_snapshots)
    : num_slots_(num_slots), num_snapshots_(num_snapshots) {
  DS_CHECK(num_slots > 0, "KDA state store needs at least one slot, got {}", num_slots);
  DS_CHECK(num_snapshots >= 0, "KDA state store: negative snapshot count {}", num_snapshots);
  const int64_t HK = int64_t(c.kda.num_heads) * c.kda.head_dim;
  conv_stride_ = int64_t(std::max(0, c.kda.conv_kernel - 1)) * 3 * HK;
  state_stride_ = HK * c.kda.head_dim;
  for (int i = 0; i < c.num_kda_layers(); ++i) {
    conv_.emplace_back(size_t(conv_stride_ * num_slots));
    state_.emplace_back(size_t(state_stride_ * num_slots));
    snap_conv_.emplace_back(size_t(conv_stride_ * num_snapshots));
    snap_state_.emplace_back(size_t(state_stride_ * num_snapshots));
  }
}

void KdaStateStore::check_slot(int slot) const {
  DS_CHECK(slot >= 0 && slot < num_slots_, "KDA state slot {} is outside 0..{}", slot, num_slots_ - 1);
}

void KdaStateStore::check_snapshot(int snapshot) const {
  DS_CHECK(snapshot >= 0 && snapshot < num_snapshots_, "KDA snapshot {} is outside the pool of {}", snapshot,
           num_snapshots_);
}

void KdaStateStore::zero_slot(int slot) {
  check_slot(slot);
  for (auto& b : conv_) std::fill_n(b.data() + slot * conv_stride_, conv_stride_, 0.0f);
  for (auto& b : state_) std::fill_n(b.data() + slot * state_stride_, state_stride_, 0.0f);
}

namespace {

// Copies entry `src` of every buffer in `from` to entry `dst` of the same layer's buffer in `to`.
void copy_entries(const std::vector<HostBuffer>& from, int src, std::vector<HostBuffer>& to, int dst,
                  int64_t stride) {
  for (size_t l = 0; l < from.size(); ++l)
    std::copy_n(from[l].data() + src * stride, stride, to[l].data() + dst * stride);
}

}  // namespace

void KdaStateStore::copy_slot(int src, int dst) {
  check_slot(src);
  check_slot(dst);
  if (src == dst) return;
  copy_entries(conv_, src, conv_, dst, conv_stride_);
  copy_entries(state_, src, state_, dst, state_stride_);
}

bool KdaStateStore::save_snapshot(int slot, int snapshot) {
  check_slot(slot);
  check_snapshot(snapshot);
  copy_entries(conv_, slot, snap_conv_, snapshot, conv_stride_);
  copy_entries(state_, slot, snap_state_, snapshot, state_stride_);
  bool finite = true;
  auto scan = [&](const std::vector<HostBuffer>& pool, int64_t stride) {
    for (const auto& b : pool) {
      const float* p = b.data() + snapshot * stride;
      for (int64_t i = 0; i < stride; ++i) finite &= std::isfinite(p[i]);
    }
  };
  scan(snap_conv_, conv_stride_);
  scan(snap_state_, state_stride_);
  if (!finite) nonfinite_.push_back(snapshot);
  return finite;
}

std::vector<int32_t> KdaStateStore::take_nonfinite() {
  std::vector<int32_t> out;
  out.swap(nonfinite_);
  return out;
}

void KdaStateStore::restore_snapshot(int snapshot, int slot) {
  check_snapshot(snapshot);
  check_slot(slot);
  copy_entries(snap_conv_, snapshot, conv_, slot, conv_stride_);
  copy_entries(snap_state_, snapshot, state_, slot, state_stride_);
}

size_t KdaStateStore::bytes() const {
  return size_t(conv_.size()) * size_t(conv_stride_ + state_stride_) * size_t(num_slots_) * sizeof(float);
}

size_t KdaStateStore::snapshot_bytes() const {
  return size_t(conv_.size()) * size_t(conv_stride_ + state_stride_) * size_t(num_snapshots_) * sizeof(float);
}

}  // namespace ds
