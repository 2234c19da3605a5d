// Kimi Delta Attention on fp32 host memory (CPU twins; spec §4.2–4.5).
//
// Per head, state S ∈ R^{K×V} (rows = key channels, columns = value channels; fla's [N, H, K, V]),
// q/k L2-normalised (x / sqrt(Σx² + 1e-6)) and q scaled by K^-0.5, per token t:
//   S ← diag(exp g_t)·S;   S ← S + β_t · k_t (v_t − Sᵀk_t)ᵀ;   o_t = Sᵀ q_t.
// Two forms of the same function: the token-by-token recurrence (decode) and the chunked WY/UT form
// (prefill, chunk 64). In the chunked form decays are only ever exponentials of differences Γ_i − Γ_j
// with i ≥ j (Γ = in-chunk cumulative g ≤ 0, accumulated in double), so the unbounded softplus gate
// cannot overflow. Both read the initial state from a slot of a state pool and write the final state
// back to it. Several sequences per call (varlen); the work is split over (sequence, head).
#pragma once
#include <cstdint>

namespace ds::kernels {

// Forget gate, softplus form: g[t, h·K + d] = −exp(A_log[h]) · softplus(z[t, h·K + d] + dt_bias[h·K + d]).
struct KdaGateParams {
  const float* z = nullptr;        // [T, H·K] f_b_proj output, row stride ldz (0: H·K)
  const float* a_log = nullptr;    // [H]
  const float* dt_bias = nullptr;  // [H·K]
  float* g = nullptr;              // [T, H·K] log-decay (≤ 0); may alias z when ldz == H·K
  int64_t T = 0, H = 0, K = 0, ldz = 0;
  float threshold = 20.0f;         // softplus(x) = x above it
};
void run_kda_gate_cpu(const KdaGateParams& p);

// y = sigmoid(x) elementwise (β from b_proj).
struct SigmoidParams {
  const float* x = nullptr;  // [rows, dim], row stride ldx (0: dim)
  float* y = nullptr;        // [rows, dim] contiguous
  int64_t rows = 0, dim = 0, ldx = 0;
};
void run_sigmoid_cpu(const SigmoidParams& p);

// Per-vector L2 normalisation times a scale: y = scale · x / sqrt(Σx² + eps), in place allowed.
struct L2NormParams {
  const float* x = nullptr;  // [rows, dim], row stride ldx (0: dim)
  float* y = nullptr;        // [rows, dim], row stride ldy (0: dim)
  int64_t rows = 0, dim = 0, ldx = 0, ldy = 0;
  float eps = 1e-6f;
  float scale = 1.0f;
};
void run_l2norm_cpu(const L2NormParams& p);

struct KdaParams {
  const float* q = nullptr;     // [T, H, K] raw queries, token stride ldq (0: H·K)
  const float* k = nullptr;     // [T, H, K] raw keys, token stride ldk (0: H·K)
  const float* v = nullptr;     // [T, H, V] values, token stride ldv (0: H·V)
  const float* g = nullptr;     // [T, H, K] log-decay (≤ 0), contiguous
  const float* beta = nullptr;  // [T, H] write strength in (0, 1), contiguous
  float* o = nullptr;           // [T, H, V] output, contiguous
  float* state = nullptr;       // pool [num_slots, H, K, V]; initial state in, final state out
  const int32_t* cu_seqlens = nullptr;  // [num_seqs + 1] token offsets
  const int32_t* slots = nullptr;       // [num_seqs] state slot of each sequence (distinct)
  int64_t num_seqs = 0, H = 0, K = 0, V = 0;
  int64_t ldq = 0, ldk = 0, ldv = 0;
  float scale = 0.0f;           // applied to the normalised q; 0: K^-0.5
  bool qk_l2norm = true;        // L2-normalise q and k inside the op (eps 1e-6); false: already done
  int chunk_size = 64;          // chunked form only
};
// Token-by-token recurrence (any T; the decode path).
void run_kda_recurrent_cpu(const KdaParams& p);
// Chunked WY/UT form (spec §4.5); same result as the recurrence up to fp32 rounding.
void run_kda_chunk_cpu(const KdaParams& p);

}  // namespace ds::kernels
