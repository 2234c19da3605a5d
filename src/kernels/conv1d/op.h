// Depthwise causal short convolution + SiLU with a carried tail, on fp32 host memory (CPU twin; KDA
// q/k/v streams, spec §4.1). For channel c of a sequence:
//   y_t[c] = silu( Σ_{j=0..W-1} w[c, j] · x_{t-(W-1)+j}[c] )
// where inputs before the chunk come from the sequence's tail (its last W-1 raw inputs, zero for a fresh
// sequence). Afterwards the tail holds the last W-1 raw inputs (pre-conv, pre-SiLU), so the next chunk or
// decode step continues exactly. Several sequences of any lengths per call (varlen).
#pragma once
#include <cstdint>

namespace ds::kernels {

struct CausalConv1dParams {
  const float* x = nullptr;           // [T, C] raw inputs of all sequences, row stride ldx
  const float* w = nullptr;           // [C, W] taps (checkpoint [C, 1, W]); w[c, W-1] takes the current token
  float* y = nullptr;                 // [T, C] outputs, row stride ldy; must not alias x
  float* tails = nullptr;             // slot s: tails + s·tail_slot_stride, [W-1, C] (row stride ld_tail),
                                      // oldest first; read, then overwritten with the new tail
  const int32_t* cu_seqlens = nullptr;  // [num_seqs + 1] token offsets into x / y
  const int32_t* slots = nullptr;       // [num_seqs] tail slot of each sequence (distinct)
  int64_t num_seqs = 0, C = 0, W = 0;
  int64_t ldx = 0, ldy = 0, ld_tail = 0;  // 0: C
  int64_t tail_slot_stride = 0;           // 0: (W-1)·ld_tail
  bool silu = true;
};
void run_causal_conv1d_cpu(const CausalConv1dParams& p);

}  // namespace ds::kernels
