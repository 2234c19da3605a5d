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
  // Optional [Tq, H] fp32 (row-major, index (token, head)): the natural-log sum-exp of each query row's
  // scaled scores over the keys it attends to, ln Σ_j exp(scale · q·k_j), for merging partial attentions.
  float* lse = nullptr;
};

void run_mla_prefill(const MlaPrefillParams& p, DType act, const DeviceContext& ctx);
// Sets the kernel's shared-memory limit on ctx's device (configure_kernels calls it once per context).
void configure_mla_prefill(const DeviceContext& ctx);

}  // namespace ds::gpu
