// Host bookkeeping of the KDA state, in the words of the backends' caches (model/kda_state.h on the
// CPU, DeviceCaches on the GPU): a *slot* holds the recurrent state + conv tails of every KDA layer for
// one running sequence; a *snapshot* is a parked copy of a slot's state (prefix caching: the state
// after a known prefix), from a pool sized at start-up (BackendLimits::num_snapshots, 0 by default).
// No storage here: what happens to the memory is asked for per step through SeqSlice — state_init
// Zero (a fresh slot), CopySlot (copy another slot), RestoreSnapshot (restore a snapshot into the
// slot), and save_snapshot (save the slot into a snapshot after the step).
// Invariant of both pools: an id is either free or owned by exactly one user.
#pragma once
#include <cstdint>
#include <vector>

namespace ds {

// A pool of ids [0, capacity): allocate / free with double-free detection, lowest ids first.
class IdPool {
 public:
  IdPool(int capacity, const char* what);

  int capacity() const { return capacity_; }
  int num_free() const { return int(free_.size()); }
  int num_used() const { return capacity_ - num_free(); }
  double usage() const { return capacity_ ? double(num_used()) / capacity_ : 0.0; }
  bool in_use(int32_t id) const;

  // A free id, or -1 when none is left.
  int32_t allocate();
  void free(int32_t id);

 private:
  int capacity_;
  const char* what_;
  std::vector<int32_t> free_;    // stack; lowest ids first
  std::vector<uint8_t> in_use_;  // [capacity]
};

// KDA state slots: one per running sequence.
class StateSlotPool : public IdPool {
 public:
  explicit StateSlotPool(int num_slots) : IdPool(num_slots, "state slot") {}
  int num_slots() const { return capacity(); }
};

// KDA state snapshots: the budget of parked states (a snapshot id is what
// SeqSlice::save_snapshot / RestoreSnapshot name).
class SnapshotPool : public IdPool {
 public:
  explicit SnapshotPool(int num_snapshots) : IdPool(num_snapshots, "snapshot") {}
  int num_snapshots() const { return capacity(); }
};

}  // namespace ds
