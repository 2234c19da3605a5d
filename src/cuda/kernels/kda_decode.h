// KDA decode on the GPU: one token per sequence (spec §4.4), a batch of sequences, each with its own
// state slot. Fuses the q/k L2 norm (eps 1e-6 inside the square root), the q scale, the per-channel
// decay, the delta-rule update and the read:
//   S ← diag(exp g)·S;   e = v − Sᵀk̂;   S ← S + β·k̂ eᵀ;   o = Sᵀ q̂.
// The fp32 state (128 x 128 per head, key-major like the prefill kernel and fla) is read once and
// written once: one CTA of 512 threads per (sequence, head), four groups of 128 threads each holding a
// 128 x 32 slice in registers. Memory bound: 2 x 64 KiB of state traffic per (sequence, head).
// Optionally (the model's decode step) it also runs what precedes it: the short convolution of the raw
// q/k/v projections with the conv-state update (conv1d.h's decode semantics) and the gate/beta
// (delta_gate.h), so neither needs a launch of its own. CPU twin: run_kda_recurrent_cpu.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"
#include "cuda/device_context.h"

#include "cuda/kernels/conv1d.h"
#include "cuda/kernels/delta_gate.h"

namespace ds::gpu {

struct KdaDecodeParams {
  const void* q = nullptr;          // [N, H, 128] act dtype, row stride ldq (0: H*128); raw
  const void* k = nullptr;          // [N, H, 128] act dtype, row stride ldk (0: H*128); raw
  const void* v = nullptr;          // [N, H, 128] act dtype, row stride ldv (0: H*128)
  const float* g = nullptr;         // [N, H, 128] fp32 log-decay, contiguous
  const float* beta = nullptr;      // [N, H] fp32, contiguous
  void* o = nullptr;                // [N, H, 128] act dtype, row stride ldo (0: H*128)
  float* state_pool = nullptr;      // [num_slots, H, 128, 128] fp32, key-major
  const int32_t* state_slots = nullptr;  // [N] device, distinct
  const uint8_t* fresh = nullptr;        // [N] device or null: nonzero = start from S = 0; with skip_padding, 2 =
                                         // a graph bucket's padding row (BatchLayout::fresh): its output is zeros
                                         // and nothing else is read or written (state, conv tail)
  bool skip_padding = false;             // (DeviceContext::switches.kda_skip_padding)
  int64_t ldq = 0, ldk = 0, ldv = 0, ldo = 0;  // elements; multiples of 4
  int num_seqs = 0;                 // N
  int num_heads = 0;                // H
  int head_dim = 128;               // only 128
  float scale = 0.0f;               // 0: 128^-0.5
  // Fused prologue. fuse_conv: q/k/v above are ignored; conv.x holds the raw projections (q, k, v
  // channel blocks of H*128 each), conv.weight/state/slots as for run_conv1d_decode (conv.y unused).
  // fuse_gate: g/beta above are ignored and computed from gate.f / gate.b as run_kda_gate does.
  bool fuse_conv = false, fuse_gate = false;
  Conv1dParams conv;
  KdaGateParams gate;
};

void run_kda_decode(const KdaDecodeParams& p, DType act, const DeviceContext& ctx);
}  // namespace ds::gpu
