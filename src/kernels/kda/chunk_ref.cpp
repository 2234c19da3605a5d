// Chunked KDA (WY representation / UT transform), spec §4.5. Per chunk of n ≤ C tokens, per head:
//   Γ_i = Σ_{t≤i} g_t (in-chunk, per key channel; double)
//   A[i,j] = β_i Σ_d k_i[d] k_j[d] exp(Γ_i[d] − Γ_j[d])      j < i
//   M[i,j] =     Σ_d q_i[d] k_j[d] exp(Γ_i[d] − Γ_j[d])      j ≤ i
//   T = (I + A)^{-1}  (unit lower-triangular, forward substitution)
//   W = T·diag(β)·(exp(Γ) ⊙ K),   U = T·diag(β)·V,   V' = U − W·S
//   O = (Q ⊙ exp(Γ))·S + M·V'
//   S ← diag(exp Γ_last)·S + Σ_j (exp(Γ_last − Γ_j) ⊙ k_j) V'_jᵀ
// Every exponent is ≤ 0, so nothing overflows however strong the decay.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/parallel.h"
#include "kernels/kda/op.h"
#include "kernels/kda/ref_util.h"

namespace ds::kernels {
namespace {

// Scratch for one (sequence, head) task, sized for chunk C.
struct ChunkScratch {
  int64_t C, K, V;
  std::vector<float> qn, kn, A, M, T, W, U, Vn, Kb;
  std::vector<double> G;
  std::vector<float> beta;
  ChunkScratch(int64_t c, int64_t k, int64_t v)
      : C(c), K(k), V(v), qn(c * k), kn(c * k), A(c * c), M(c * c), T(c * c), W(c * k), U(c * v),
        Vn(c * v), Kb(c * k), G(c * k), beta(c) {}
};

// One chunk of n tokens starting at token t0 of head h; S is [K, V], updated in place.
void chunk_step(const KdaParams& p, const kda_detail::Layout& L, int64_t t0, int64_t n, int64_t h,
                float* S, float* out, ChunkScratch& w) {
  const int64_t H = L.H, K = L.K, V = L.V;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = t0 + i;
    kda_detail::load_normalised(p.q + t * L.ldq + h * K, K, p.qk_l2norm, L.scale, &w.qn[i * K]);
    kda_detail::load_normalised(p.k + t * L.ldk + h * K, K, p.qk_l2norm, 1.0f, &w.kn[i * K]);
    const float* g = p.g + (t * H + h) * K;
    for (int64_t d = 0; d < K; ++d) w.G[i * K + d] = (i ? w.G[(i - 1) * K + d] : 0.0) + double(g[d]);
    w.beta[i] = p.beta[t * H + h];
  }
  // A (strictly lower) and M (lower with diagonal) share the decays exp(Γ_i − Γ_j).
  for (int64_t i = 0; i < n; ++i) {
    const float* qi = &w.qn[i * K];
    const float* ki = &w.kn[i * K];
    const double* Gi = &w.G[i * K];
    for (int64_t j = 0; j < i; ++j) {
      const float* kj = &w.kn[j * K];
      const double* Gj = &w.G[j * K];
      float a = 0.0f, m = 0.0f;
      for (int64_t d = 0; d < K; ++d) {
        const float kd = kj[d] * std::exp(float(Gi[d] - Gj[d]));
        a += ki[d] * kd;
        m += qi[d] * kd;
      }
      w.A[i * w.C + j] = w.beta[i] * a;
      w.M[i * w.C + j] = m;
    }
    float m = 0.0f;
    for (int64_t d = 0; d < K; ++d) m += qi[d] * ki[d];
    w.M[i * w.C + i] = m;
  }
  // T = (I + A)^{-1}: T[i,j] = −Σ_{l=j..i−1} A[i,l] T[l,j].
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < i; ++j) {
      float acc = 0.0f;
      for (int64_t l = j; l < i; ++l) acc += w.A[i * w.C + l] * w.T[l * w.C + j];
      w.T[i * w.C + j] = -acc;
    }
    w.T[i * w.C + i] = 1.0f;
  }
  // W = T·diag(β)·(exp(Γ) ⊙ K), U = T·diag(β)·V.
  for (int64_t j = 0; j < n; ++j)
    for (int64_t d = 0; d < K; ++d) w.Kb[j * K + d] = std::exp(float(w.G[j * K + d])) * w.kn[j * K + d];
  for (int64_t i = 0; i < n; ++i) {
    float* Wi = &w.W[i * K];
    float* Ui = &w.U[i * V];
    std::fill(Wi, Wi + K, 0.0f);
    std::fill(Ui, Ui + V, 0.0f);
    for (int64_t j = 0; j <= i; ++j) {
      const float c = w.T[i * w.C + j] * w.beta[j];
      const float* kbj = &w.Kb[j * K];
      for (int64_t d = 0; d < K; ++d) Wi[d] += c * kbj[d];
      const float* vj = p.v + (t0 + j) * L.ldv + h * V;
      for (int64_t e = 0; e < V; ++e) Ui[e] += c * vj[e];
    }
  }
  // V' = U − W·S and O = (Q ⊙ exp(Γ))·S + M·V' (both read the incoming state).
  for (int64_t i = 0; i < n; ++i) {
    float* Vi = &w.Vn[i * V];
    float* Oi = out + ((t0 + i) * H + h) * V;
    std::copy(&w.U[i * V], &w.U[i * V] + V, Vi);
    std::fill(Oi, Oi + V, 0.0f);
    const float* Wi = &w.W[i * K];
    const float* qi = &w.qn[i * K];
    const double* Gi = &w.G[i * K];
    for (int64_t d = 0; d < K; ++d) {
      const float* Sd = S + d * V;
      const float wd = Wi[d], qd = qi[d] * std::exp(float(Gi[d]));
      for (int64_t e = 0; e < V; ++e) {
        Vi[e] -= wd * Sd[e];
        Oi[e] += qd * Sd[e];
      }
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    float* Oi = out + ((t0 + i) * H + h) * V;
    for (int64_t j = 0; j <= i; ++j) {
      const float m = w.M[i * w.C + j];
      const float* Vj = &w.Vn[j * V];
      for (int64_t e = 0; e < V; ++e) Oi[e] += m * Vj[e];
    }
  }
  // State to the next chunk.
  const double* Gl = &w.G[(n - 1) * K];
  for (int64_t d = 0; d < K; ++d) {
    float* Sd = S + d * V;
    const float a = std::exp(float(Gl[d]));
    for (int64_t e = 0; e < V; ++e) Sd[e] *= a;
  }
  for (int64_t j = 0; j < n; ++j) {
    const float* kj = &w.kn[j * K];
    const double* Gj = &w.G[j * K];
    const float* Vj = &w.Vn[j * V];
    for (int64_t d = 0; d < K; ++d) {
      const float c = std::exp(float(Gl[d] - Gj[d])) * kj[d];
      float* Sd = S + d * V;
      for (int64_t e = 0; e < V; ++e) Sd[e] += c * Vj[e];
    }
  }
}

}  // namespace

void run_kda_chunk_cpu(const KdaParams& p) {
  if (p.num_seqs == 0) return;
  const auto L = kda_detail::resolve(p, "kda chunk");
  DS_CHECK(p.chunk_size > 0, "kda chunk: chunk_size must be positive, got {}", p.chunk_size);
  const int64_t C = p.chunk_size;
  parallel_for(size_t(p.num_seqs * L.H), [&](size_t b, size_t e) {
    ChunkScratch w(C, L.K, L.V);
    for (size_t task = b; task < e; ++task) {
      const int64_t s = int64_t(task) / L.H, h = int64_t(task) % L.H;
      float* S = p.state + (int64_t(p.slots[s]) * L.H + h) * L.K * L.V;
      const int64_t begin = p.cu_seqlens[s], end = p.cu_seqlens[s + 1];
      for (int64_t t0 = begin; t0 < end; t0 += C)
        chunk_step(p, L, t0, std::min(C, end - t0), h, S, p.o, w);
    }
  });
}

}  // namespace ds::kernels
