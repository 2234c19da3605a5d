// Host storage of the KDA recurrent state (CPU backend): state slots and snapshots. A slot belongs to
// one running sequence and holds, for every KDA layer, the short-conv tails of q/k/v and the fp32
// recurrent state:
//   conv pool of KDA layer i:  [num_slots, W-1, 3·H·K]  (channels q | k | v; the W-1 last raw inputs,
//                                                         oldest first)
//   state pool of KDA layer i: [num_slots, H, K, V]     (fla layout: key rows, value columns)
// A snapshot is a parked copy of one slot's state (every layer, conv tails included), kept in a
// separate pool of num_snapshots entries sized at start-up (0 by default). The ops are the ones a
// SeqSlice's state_init / save_snapshot name: zero a slot, copy a slot into another, save a slot
// into a snapshot, restore a snapshot into a slot. Layers hold no state.
#pragma once
#include <cstdint>
#include <vector>

#include "config/model_config.h"
#include "model/host_buffer.h"

namespace ds {

class KdaStateStore {
 public:
  KdaStateStore(const ModelConfig& c, int num_slots, int num_snapshots = 0);

  int num_slots() const { return num_slots_; }
  int num_snapshots() const { return num_snapshots_; }
  int num_layers() const { return int(conv_.size()); }
  float* conv_pool(int kda_layer) const { return conv_[size_t(kda_layer)].data(); }
  float* state_pool(int kda_layer) const { return state_[size_t(kda_layer)].data(); }
  int64_t conv_slot_stride() const { return conv_stride_; }    // floats per slot in a conv pool
  int64_t state_slot_stride() const { return state_stride_; }  // floats per slot in a state pool
  // Every layer; ids are checked (ds::Error).
  void zero_slot(int slot);
  void copy_slot(int src, int dst);
  // Saves and returns whether every saved value is finite (a NaN or an infinity: false, and the
  // snapshot id is also listed by take_nonfinite()).
  bool save_snapshot(int slot, int snapshot);
  // Snapshots saved with a non-finite value since the last call (prefix caching drops them).
  std::vector<int32_t> take_nonfinite();
  void restore_snapshot(int snapshot, int slot);
  size_t bytes() const;           // slots
  size_t snapshot_bytes() const;  // snapshot pool

 private:
  void check_slot(int slot) const;
  void check_snapshot(int snapshot) const;

  int num_slots_, num_snapshots_;
  int64_t conv_stride_, state_stride_;
  std::vector<HostBuffer> conv_, state_;            // per KDA layer: [num_slots, ...]
  std::vector<HostBuffer> snap_conv_, snap_state_;  // per KDA layer: [num_snapshots, ...]
  std::vector<int32_t> nonfinite_;
};

}  // namespace ds
