// Host storage of the KDA recurrent state slots (CPU backend). A slot belongs to one running sequence
// and holds, for every KDA layer, the short-conv tails of q/k/v and the fp32 recurrent state:
//   conv pool of KDA layer i:  [num_slots, W-1, 3·H·K]  (channels q | k | v; the W-1 last raw inputs,
//                                                         oldest first)
//   state pool of KDA layer i: [num_slots, H, K, V]     (fla layout: key rows, value columns)
// A sequence that starts (context_len == 0) has its slot zeroed first. Layers hold no state.
#pragma once
#include <cstdint>
#include <vector>

#include "config/model_config.h"
#include "model/host_buffer.h"

namespace ds {

class KdaStateStore {
 public:
  KdaStateStore(const ModelConfig& c, int num_slots);

  int num_slots() const { return num_slots_; }
  int num_layers() const { return int(conv_.size()); }
  float* conv_pool(int kda_layer) const { return conv_[size_t(kda_layer)].data(); }
  float* state_pool(int kda_layer) const { return state_[size_t(kda_layer)].data(); }
  int64_t conv_slot_stride() const { return conv_stride_; }    // floats per slot in a conv pool
  int64_t state_slot_stride() const { return state_stride_; }  // floats per slot in a state pool
  void zero_slot(int slot);                                    // every layer
  size_t bytes() const;

 private:
  int num_slots_;
  int64_t conv_stride_, state_stride_;
  std::vector<HostBuffer> conv_, state_;
};

}  // namespace ds
