// KDA decode on the GPU: one token per sequence (spec §4.4), a batch of sequences, each with its own
// state slot. Fuses the q/k L2 norm (eps 1e-6 inside the square root), the q scale, the per-channel
// decay, the delta-rule update and the read:
//   S ← diag(exp g)·S;   e = v − Sᵀk̂;   S ← S + β·k̂ eᵀ;   o = Sᵀ q̂.
// The fp32 state (128 x 128 per head, key-major like the prefill kernel and fla) is read once and
// written once: one CTA per (sequence, head, 32 value columns), the slice held in registers. Memory
// bound: 2 x 64 KiB of state traffic per (sequence, head). CPU twin: run_kda_recurrent_cpu.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"

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
  const uint8_t* fresh = nullptr;        // [N] device or null: nonzero = start from S = 0
  int64_t ldq = 0, ldk = 0, ldv = 0, ldo = 0;  // elements; multiples of 4
  int num_seqs = 0;                 // N
  int num_heads = 0;                // H
  int head_dim = 128;               // only 128
  float scale = 0.0f;               // 0: 128^-0.5
};

void run_kda_decode(const KdaDecodeParams& p, DType act, cudaStream_t stream);

}  // namespace ds::gpu
