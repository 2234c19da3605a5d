#include "cache/state_slot_pool.h"

#include "core/error.h"

namespace ds {

StateSlotPool::StateSlotPool(int num_slots) : num_slots_(num_slots) {
  DS_CHECK(num_slots >= 0, "StateSlotPool: num_slots {} < 0", num_slots);
  for (int i = num_slots - 1; i >= 0; --i) free_.push_back(i);
  in_use_.assign(size_t(num_slots), 0);
}

int32_t StateSlotPool::allocate() {
  if (free_.empty()) return -1;
  int32_t id = free_.back();
  free_.pop_back();
  in_use_[size_t(id)] = 1;
  return id;
}

void StateSlotPool::free(int32_t slot) {
  DS_CHECK(slot >= 0 && slot < num_slots_, "StateSlotPool::free: slot {} out of range [0, {})", slot,
           num_slots_);
  DS_CHECK(in_use_[size_t(slot)], "StateSlotPool::free: slot {} is not in use", slot);
  in_use_[size_t(slot)] = 0;
  free_.push_back(slot);
}

}  // namespace ds
