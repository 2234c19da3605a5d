#include "model/kda_state.h"

#include <algorithm>

#include "core/error.h"

namespace ds {

KdaStateStore::KdaStateStore(const ModelConfig& c, int num_slots) : num_slots_(num_slots) {
  DS_CHECK(num_slots > 0, "KDA state store needs at least one slot, got {}", num_slots);
  const int64_t HK = int64_t(c.kda.num_heads) * c.kda.head_dim;
  conv_stride_ = int64_t(std::max(0, c.kda.conv_kernel - 1)) * 3 * HK;
  state_stride_ = HK * c.kda.head_dim;
  for (int i = 0; i < c.num_kda_layers(); ++i) {
    conv_.emplace_back(size_t(conv_stride_ * num_slots));
    state_.emplace_back(size_t(state_stride_ * num_slots));
  }
}

void KdaStateStore::zero_slot(int slot) {
  DS_CHECK(slot >= 0 && slot < num_slots_, "KDA state slot {} is outside 0..{}", slot, num_slots_ - 1);
  for (auto& b : conv_) std::fill_n(b.data() + slot * conv_stride_, conv_stride_, 0.0f);
  for (auto& b : state_) std::fill_n(b.data() + slot * state_stride_, state_stride_, 0.0f);
}

size_t KdaStateStore::bytes() const {
  return size_t(conv_.size()) * size_t(conv_stride_ + state_stride_) * size_t(num_slots_) * sizeof(float);
}

}  // namespace ds
