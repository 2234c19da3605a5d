// NoPE MLA attention on fp32 host memory (CPU twins; spec §5, §5.1). Two forms of the same function:
//  - prefill: plain causal attention over expanded per-head keys [k_nope_h ; k_pe] (192) and values
//    (128), i.e. what the reference computes;
//  - absorbed: MQA of the absorbed queries [W_UKᵀ q_nope ; q_pe] (576) over the paged cache of
//    latents [ĉ ; k_pe] (576); the output is the softmax-weighted latent ĉ (512) per head, which the
//    layer maps through W_UV. Scores are scaled by the caller's scale (1/sqrt(192)) in both.
// Softmax in fp32 with the max subtracted; the normaliser is accumulated in double.
// Long contexts: the prefill form runs over one context piece at a time and the pieces merge exactly
// (log-sum-exp), see MlaMergeParams.
#pragma once
#include <cstdint>

namespace ds::kernels {

// Keys and queries carry positions in the sequence: key j is at k_pos0 + j, query t at q_pos0 + t, and a
// query attends the keys at positions <= its own (causal). With k_pos0 = 0 and Tk = q_pos0 + Tq this is the
// whole causal prefix; with k_pos0 > 0 or a shorter Tk, the keys are one context PIECE and the result is
// that piece's partial attention, to be merged with the others' by run_mla_merge_cpu.
// For every (query t, head h), with s_j = scale · q_t,h · k_j,h over the piece's visible keys j:
//   lse[t, h] = ln Σ_j exp(s_j)                  (natural log; -inf when no key is visible: an empty piece)
//   o[t, h]   = Σ_j exp(s_j − lse) · v_j,h        (normalised within the piece; all zeros when empty)
struct MlaPrefillParams {
  const float* q = nullptr;  // [Tq, H, Dqk], token stride ldq (0: H·Dqk)
  const float* k = nullptr;  // [Tk, H, Dqk], token stride ldk (0: H·Dqk)
  const float* v = nullptr;  // [Tk, H, Dv],  token stride ldv (0: H·Dv)
  float* o = nullptr;        // [Tq, H, Dv],  token stride ldo (0: H·Dv)
  float* lse = nullptr;      // [Tq, H] contiguous, optional (nullptr: not written)
  int64_t Tq = 0, Tk = 0, H = 0, Dqk = 0, Dv = 0;
  int64_t ldq = 0, ldk = 0, ldv = 0, ldo = 0;
  int64_t q_pos0 = 0;        // position of query 0: query t attends keys at positions <= q_pos0 + t
  int64_t k_pos0 = 0;        // position of key 0 (0 unless the keys are a later context piece)
  float scale = 0.0f;
};
void run_mla_prefill_cpu(const MlaPrefillParams& p);

// Exact merge of two partial attentions of the same queries over DISJOINT key sets A and B (two context
// pieces), each given as its normalised output and log-sum-exp (the MlaPrefillParams outputs above).
// Per (token t, head h), with m = max(lse_a, lse_b):
//   m = -inf (both pieces empty):  lse = -inf, o = 0
//   otherwise:  w_a = exp(lse_a − m), w_b = exp(lse_b − m)      (an empty side has weight exactly 0)
//               lse = m + ln(w_a + w_b)
//               o   = (w_a · o_a + w_b · o_b) / (w_a + w_b)
// so (o, lse) is the attention over A ∪ B. Commutative; merging an empty piece leaves the other unchanged.
// o may alias o_a or o_b, and lse may alias lse_a or lse_b (a running accumulator); nothing else overlaps.
// The CPU twin computes the weights in double; results equal unpieced attention within fp32 rounding.
struct MlaMergeParams {
  const float* o_a = nullptr;    // [T, H, Dv], token stride lda (0: H·Dv)
  const float* lse_a = nullptr;  // [T, H] contiguous
  const float* o_b = nullptr;    // [T, H, Dv], token stride ldb (0: H·Dv)
  const float* lse_b = nullptr;  // [T, H] contiguous
  float* o = nullptr;            // [T, H, Dv], token stride ldo (0: H·Dv)
  float* lse = nullptr;          // [T, H] contiguous
  int64_t T = 0, H = 0, Dv = 0;
  int64_t lda = 0, ldb = 0, ldo = 0;
};
void run_mla_merge_cpu(const MlaMergeParams& p);

// Context piece: the number of context positions whose keys/values a prefill chunk expands and attends at
// once (its partial results merged with run_mla_merge_cpu), so the expansion workspace is bounded by the
// piece, not by the context. Any value >= 1 gives the same result within fp32 rounding. The CPU model reads
// ForwardOptions::mla_context_piece (default below; tests set it small).
inline constexpr int64_t kMlaContextPieceDefault = 4096;

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
