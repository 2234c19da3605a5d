// MLA prefill attention on the GPU (spec §5, NoPE): causal flash attention with the expanded per-head
// keys [k_nope_h (128) ; k_pe (64)] — k_pe is shared by all heads — and per-head values (128), scores
// scaled by `scale` (1/sqrt(192)), fp32 online softmax and accumulation, varlen.
//
// Context from earlier chunks: the API takes separate query and key ranges per sequence
// (cu_seqlens_q, cu_seqlens_k with k_len >= q_len); the queries are the last q_len positions, so query i
// of a sequence sits at position k_len − q_len + i and attends to keys [0, k_len − q_len + i]. To attend
// to latents already in the paged cache, the caller expands them through kv_b_proj (one GEMM over the
// gathered latents) into k_nope / v rows placed before the new tokens' rows. The absorbed form over the
// cache (mla_decode.h) serves decoding; this kernel serves prefill chunks.
//
// Context pieces (long contexts in a fixed workspace, issue 13): [k_begin, k_end) restricts every
// sequence's keys to that window of its key range (indices j relative to the sequence's first key,
// cu_seqlens_k[s]; rows outside the window are never read, so the caller expands only the piece's
// latents and shifts the k_nope / k_pe / v base pointers back by the piece's first row). The causal
// rule is unchanged: query i still sits at key index klen − q_len + i, so a piece of keys before the
// chunk's own is fully visible and one that overlaps them is masked. The result is that piece's
// PARTIAL attention: with lse set, per (query t, head h), over the visible keys j of the window,
// s_j = scale · q_t,h · k_j,h:
//   lse[t, h] = ln Σ_j exp(s_j)                (natural log; -inf when no key of the window is visible)
//   o[t, h]   = Σ_j exp(s_j − lse) · v_j,h      (normalised within the piece; zeros when none is visible)
// and partial results of disjoint pieces merge exactly with run_mla_merge (mla_merge.h), as the CPU twin's
// MlaPrefillParams (q_pos0 / k_pos0) and run_mla_merge_cpu do (src/kernels/mla/op.h).
// Defaults (k_begin = 0, k_end = 0, lse = nullptr) are the whole causal prefix, as before.
// bf16: tensor cores (mma.sync bf16; on sm_90 with DeviceContext::switches.wgmma, the warp-specialised
// wgmma kernel of mla_prefill_wgmma.h); fp32: 3xTF32. CPU twin: src/kernels/mla (run_mla_prefill_cpu).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"
#include "cuda/device_context.h"

namespace ds::gpu {

struct MlaPrefillParams {
  const void* q = nullptr;        // [Tq, H, 192] act dtype: [q_nope 128 ; q_pe 64]; strides ldq (0: H*192), hq (0: 192)
  const void* k_nope = nullptr;   // [Tk, H, 128] act dtype; strides ldkn (0: H*128), hkn (0: 128)
  const void* k_pe = nullptr;     // [Tk, 64] act dtype, shared by all heads; stride ldkpe (0: 64)
  const void* v = nullptr;        // [Tk, H, 128] act dtype; strides ldv (0: H*128), hv (0: 128)
  void* o = nullptr;              // [Tq, H, 128] act dtype; strides ldo (0: H*128), head stride 128
  const int32_t* cu_seqlens_q = nullptr;  // [num_seqs + 1] device
  const int32_t* cu_seqlens_k = nullptr;  // [num_seqs + 1] device (may equal cu_seqlens_q)
  int64_t ldq = 0, hq = 0, ldkn = 0, hkn = 0, ldkpe = 0, ldv = 0, hv = 0, ldo = 0;  // elements, multiples of 8
  int num_seqs = 0;
  int num_heads = 0;
  int max_seqlen_q = 0;           // host upper bound of q_len (sizes the grid)
  float scale = 0.0f;             // 0: 1/sqrt(192)
  // Optional: the log-sum-exp of each (query, head) row's scaled scores, natural log, fp32
  // ([Tq, H] with row stride ld_lse, 0: H; -inf for a row that sees no key of the window).
  float* lse = nullptr;
  int64_t ld_lse = 0;
  // Key window of every sequence, [k_begin, min(k_end, klen)) (0 <= k_begin; k_end 0: klen): a context
  // piece (see above). The kernel reads key rows cu_seqlens_k[s] + j for j in the window only.
  int k_begin = 0;
  int k_end = 0;
};

void run_mla_prefill(const MlaPrefillParams& p, DType act, const DeviceContext& ctx);
// Sets the kernel's shared-memory limit on ctx's device (configure_kernels calls it once per context).
void configure_mla_prefill(const DeviceContext& ctx);

}  // namespace ds::gpu
