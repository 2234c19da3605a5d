// Host bookkeeping of KDA state slots: one slot (recurrent state + conv tails of every KDA layer)
// per running sequence. No storage here; the backend zeroes a slot when a slice arrives with
// context_len == 0. Invariant: a slot is either free or owned by exactly one sequence.
#pragma once
#include <cstdint>
#include <vector>

namespace ds {

class StateSlotPool {
 public:
  explicit StateSlotPool(int num_slots);

  int num_slots() const { return num_slots_; }
  int num_free() const { return int(free_.size()); }
  int num_used() const { return num_slots_ - num_free(); }
  double usage() const { return num_slots_ ? double(num_used()) / num_slots_ : 0.0; }

  // A free slot id, or -1 when none is left.
  int32_t allocate();
  void free(int32_t slot);

 private:
  int num_slots_;
  std::vector<int32_t> free_;    // stack; lowest ids first
  std::vector<uint8_t> in_use_;  // [num_slots]
};

}  // namespace ds
