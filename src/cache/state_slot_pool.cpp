#include "cache/state_slot_pool.h"

#include "core/error.h"

namespace ds {

IdPool::IdPool(int capacity, const char* what) : capacity_(capacity), what_(what) {
  DS_CHECK(capacity >= 0, "{} pool: capacity {} < 0", what, capacity);
  for (int i = capacity - 1; i >= 0; --i) free_.push_back(i);
  in_use_.assign(size_t(capacity), 0);
}

bool IdPool::in_use(int32_t id) const { return id >= 0 && id < capacity_ && in_use_[size_t(id)]; }

int32_t IdPool::allocate() {
  if (free_.empty()) return -1;
  int32_t id = free_.back();
  free_.pop_back();
  in_use_[size_t(id)] = 1;
  return id;
}

void IdPool::free(int32_t id) {
  DS_CHECK(id >= 0 && id < capacity_, "{} pool: free of {} out of range [0, {})", what_, id, capacity_);
  DS_CHECK(in_use_[size_t(id)], "{} pool: {} is not in use", what_, id);
  in_use_[size_t(id)] = 0;
  free_.push_back(id);
}

}  // namespace ds
