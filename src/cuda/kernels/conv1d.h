// Depthwise causal short convolution + SiLU of the KDA q/k/v streams, with the per-sequence tail
// state (spec 4.1). State layout per slot: [kernel-1, channels] raw (pre-conv) inputs, oldest first;
// it continues across prefill chunks and decode steps. A fresh sequence's slot must be zeroed first.
// CPU twin: src/kernels/conv1d (run_conv1d_cpu).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"
#include "cuda/device_context.h"

namespace ds::gpu {

struct Conv1dParams {
  const void* x = nullptr;            // [tokens, ldx] act dtype, raw projections in columns [0, channels)
  int64_t ldx = 0;
  const void* weight = nullptr;       // [channels, kernel] act dtype; tap kernel-1 multiplies the current token
  void* y = nullptr;                  // [tokens, channels] act dtype: silu(conv(x))
  void* state = nullptr;              // [num_slots, kernel-1, channels] act dtype, read and updated
  const int32_t* seq_start = nullptr; // [num_seqs+1] token offsets (varlen)
  const int32_t* token_seq = nullptr; // [tokens] sequence of each token (prefill only)
  const int32_t* slots = nullptr;     // [num_seqs] state slot of each sequence
  int num_seqs = 0, tokens = 0, channels = 0, kernel = 4;  // kernel <= 8
};
// Varlen prefill (any number of tokens per sequence); then the tails are written back.
void run_conv1d_prefill(const Conv1dParams& p, DType act, const DeviceContext& ctx);
// One token per sequence (token i belongs to sequence i; seq_start/token_seq unused); fused state update.
void run_conv1d_decode(const Conv1dParams& p, DType act, const DeviceContext& ctx);

}  // namespace ds::gpu
