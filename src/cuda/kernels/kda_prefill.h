// KDA (Kimi Delta Attention) chunked prefill on the GPU: spec §4.4–4.5, chunk size 64, WY/UT form.
//
// Per sequence and head, state S ∈ R^{K×V} (K = V = 128; rows = key channels, fla's [N, H, K, V]),
// q/k L2-normalised inside (x / sqrt(Σx² + 1e-6)), q scaled by `scale`, per token:
//   S ← diag(exp g_t)·S;   S ← S + β_t·k_t (v_t − Sᵀk_t)ᵀ;   o_t = Sᵀ q_t.
// Varlen: sequences are concatenated along T (cu_seqlens); each one reads its initial state from
// state_pool[state_slots[s]] (or starts from zero when fresh[s] != 0) and writes its final state back
// to the same slot. Decays are only ever exponentials of in-chunk differences Γ_i − Γ_j with i ≥ j,
// so the unbounded softplus gate cannot overflow. CPU twin: src/kernels/kda (run_kda_chunk_cpu).
//
// Two kernels (design notes and measurements: docs/kernels/kda.md):
//   1. intra-chunk, one CTA per (chunk, head): L2 norms, in-chunk cumulative decay, the 64x64 matrices
//      A (keys) and M (query-key), T = (I + A)^-1, W and U, written to the workspace;
//   2. state pass, one CTA per (sequence, head, 32 value columns): the chunk-to-chunk recurrence
//      with the state slice held in registers (fp32), writing o and the final state.
// Activations (q, k, v, o) are bf16 (tensor-core bf16 math) or fp32 (3xTF32 math, ~fp32 accuracy);
// g and β are always fp32, the state always fp32.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "core/dtype.h"
#include "cuda/device_context.h"

namespace ds::gpu {

struct KdaPrefillParams {
  const void* q = nullptr;           // [T, H, 128] act dtype, token stride ldq (0: H*128); raw (not normalised)
  const void* k = nullptr;           // [T, H, 128] act dtype, token stride ldk (0: H*128); raw
  const void* v = nullptr;           // [T, H, 128] act dtype, token stride ldv (0: H*128)
  const float* g = nullptr;          // [T, H, 128] fp32 log-decay (<= 0), contiguous
  const float* beta = nullptr;       // [T, H] fp32 in (0, 1), contiguous
  void* o = nullptr;                 // [T, H, 128] act dtype, token stride ldo (0: H*128)
  float* state_pool = nullptr;       // [num_slots, H, 128, 128] fp32, key-major (S[d][v])
  const int32_t* cu_seqlens = nullptr;   // [num_seqs + 1] device, token offsets (cu[0] = 0)
  const int32_t* state_slots = nullptr;  // [num_seqs] device, distinct slots
  const uint8_t* fresh = nullptr;        // [num_seqs] device or null: nonzero = start from S = 0
  void* workspace = nullptr;         // kda_prefill_workspace_bytes(...) bytes, 256-byte aligned
  int64_t ldq = 0, ldk = 0, ldv = 0, ldo = 0;  // strides in elements; multiples of 8 (16-byte rows)
  int total_tokens = 0;              // T = cu_seqlens[num_seqs]
  int num_seqs = 0;
  int num_heads = 0;                 // H
  int head_dim = 128;                // K = V; only 128 is supported
  float scale = 0.0f;                // applied to the normalised q; 0: 128^-0.5
};

// Device bytes of workspace for a batch of `total_tokens` tokens in `num_seqs` sequences.
size_t kda_prefill_workspace_bytes(int total_tokens, int num_seqs, int num_heads, DType act);

// Runs both kernels on ctx.stream. Throws ds::Error on bad parameters or a launch failure.
void run_kda_prefill(const KdaPrefillParams& p, DType act, const DeviceContext& ctx);
// Sets the kernels' shared-memory limits on ctx's device (configure_kernels calls it once per context).
void configure_kda_prefill(const DeviceContext& ctx);

}  // namespace ds::gpu
