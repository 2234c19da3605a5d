// NoPE MLA attention on fp32 host memory (CPU twins; spec §5, §5.1). Two forms of the same function:
//  - prefill: plain causal attention over expanded per-head keys [k_nope_h ; k_pe] (192) and values
//    (128), i.e. what the reference computes;
//  - absorbed: MQA of the absorbed queries [W_UKᵀ q_nope ; q_pe] (576) over the paged cache of
//    latents [ĉ ; k_pe] (576); the output is the softmax-weighted latent ĉ (512) per head, which the
//    layer maps through W_UV. Scores are scaled by the caller's scale (1/sqrt(192)) in both.
// Softmax in fp32 with the max subtracted; the normaliser is accumulated in double.
#pragma once
#include <cstdint>

namespace ds::kernels {

struct MlaPrefillParams {
  const float* q = nullptr;  // [Tq, H, Dqk], token stride ldq (0: H·Dqk)
  const float* k = nullptr;  // [Tk, H, Dqk], token stride ldk (0: H·Dqk)
  const float* v = nullptr;  // [Tk, H, Dv],  token stride ldv (0: H·Dv)
  float* o = nullptr;        // [Tq, H, Dv],  token stride ldo (0: H·Dv)
  int64_t Tq = 0, Tk = 0, H = 0, Dqk = 0, Dv = 0;
  int64_t ldq = 0, ldk = 0, ldv = 0, ldo = 0;
  int64_t q_pos0 = 0;        // key index of query 0: query t attends keys [0, q_pos0 + t] (< Tk)
  float scale = 0.0f;
};
void run_mla_prefill_cpu(const MlaPrefillParams& p);

struct MlaAbsorbedParams {
  const float* q = nullptr;              // [T, H, Dl + Dr] absorbed queries of all sequences
  const float* cache = nullptr;          // [num_blocks, block_size, Dl + Dr] latents [ĉ ; k_pe]
  const int32_t* block_tables = nullptr; // [num_seqs, max_blocks] page ids, position p in page p / block_size
  const int32_t* cu_seqlens = nullptr;   // [num_seqs + 1] query token offsets
  const int64_t* start_pos = nullptr;    // [num_seqs] position of each sequence's first query token
  float* o = nullptr;                    // [T, H, Dl]
  int64_t num_seqs = 0, H = 0, Dl = 0, Dr = 0, block_size = 0, max_blocks = 0;
  float scale = 0.0f;
  // A query at position p attends cached positions [0, p]; they must already hold latents.
};
void run_mla_absorbed_cpu(const MlaAbsorbedParams& p);

}  // namespace ds::kernels
