// Straightforward GPU attention kernels: the KDA token-by-token recurrence (spec 4.4) and absorbed
// NoPE MLA over the paged latent cache (spec 5.1), for any mix of prefill and decode tokens. They are
// simple and exact (fp32 state and softmax), not fast: the GPU model uses them when the optimised
// kernels (cuda/kernels/kda_*, mla_*) are not selected, and the op harness compares against them.
// CPU twins: src/kernels/kda (run_kda_recurrent_cpu), src/kernels/mla (run_mla_absorbed_cpu).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"
#include "cuda/device_context.h"

namespace ds::gpu {

// One block per (sequence, head); head_dim K = V = 128. q/k are L2-normalised inside (eps 1e-6) and
// q scaled by `scale`; state rows are key channels (fla's [N, H, K, V]).
struct KdaRefParams {
  const void* q = nullptr;        // [T, ldq] act dtype, head h at columns [h*K, (h+1)*K)
  const void* k = nullptr;        // [T, ldk]
  const void* v = nullptr;        // [T, ldv]
  int64_t ldq = 0, ldk = 0, ldv = 0;
  const float* g = nullptr;       // [T, H*K] log-decay
  const float* beta = nullptr;    // [T, H]
  void* o = nullptr;              // [T, H*V] act dtype
  float* state = nullptr;         // [num_slots, H, K, V] fp32, initial state in, final state out
  const int32_t* cu_seqlens = nullptr;  // [num_seqs+1]
  const int32_t* slots = nullptr;       // [num_seqs]
  int num_seqs = 0, heads = 0, head_dim = 128;
  float scale = 0.f;              // 0: head_dim^-0.5
};
void run_kda_ref(const KdaRefParams& p, DType act, const DeviceContext& ctx);

// One block per (query token, head): the query at cache position pos attends positions [0, pos].
struct MlaRefParams {
  // absorbed query of token t, head h: [q_lat + t*ld_lat + h*head_stride_lat (Dl values) ;
  //                                      q_pe + t*ld_pe + h*head_stride_pe (Dr values)], act dtype
  const void* q_lat = nullptr;
  int64_t ld_lat = 0, head_stride_lat = 0;
  const void* q_pe = nullptr;
  int64_t ld_pe = 0, head_stride_pe = 0;
  const void* cache = nullptr;           // [num_blocks * block_size, Dl + Dr] act dtype
  const int32_t* block_tables = nullptr; // [num_seqs, max_blocks]
  const int32_t* token_seq = nullptr;    // [T] sequence of each query token
  const int32_t* token_pos = nullptr;    // [T] position of each query token in its sequence
  void* o = nullptr;                     // [T, H, Dl] act dtype (row stride ldo, head stride Dl)
  int64_t ldo = 0;
  int tokens = 0, heads = 0, Dl = 512, Dr = 64, block_size = 16, max_blocks = 0;
  float scale = 0.f;
};
void run_mla_ref(const MlaRefParams& p, DType act, const DeviceContext& ctx);

}  // namespace ds::gpu
