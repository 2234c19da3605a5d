#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/parallel.h"
#include "kernels/gemm/op.h"
#include "kernels/mla/op.h"

namespace ds::kernels {
namespace {

inline float dot(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// In place: scores → softmax weights (sum to 1 up to rounding); returns ln Σ exp(scores).
float softmax(float* s, int64_t n) {
  float mx = s[0];
  for (int64_t j = 1; j < n; ++j) mx = std::max(mx, s[j]);
  double sum = 0.0;
  for (int64_t j = 0; j < n; ++j) {
    s[j] = std::exp(s[j] - mx);
    sum += s[j];
  }
  const float inv = float(1.0 / sum);
  for (int64_t j = 0; j < n; ++j) s[j] *= inv;
  return float(double(mx) + std::log(sum));
}

}  // namespace

// Per head and block of queries: scores S = Q·Kᵀ and outputs O = P·V as GEMMs (kernels/gemm), the
// softmax per row in between; keys past a row's causal limit get weight 0.
void run_mla_prefill_cpu(const MlaPrefillParams& p) {
  if (p.Tq == 0) return;
  DS_CHECK(p.q && p.o && p.H > 0 && p.Dqk > 0 && p.Dv > 0 && p.Tk >= 0 && (p.Tk == 0 || (p.k && p.v)),
           "mla prefill: bad parameters");
  DS_CHECK(p.q_pos0 >= 0 && p.k_pos0 >= 0, "mla prefill: negative positions (queries {}, keys {})", p.q_pos0,
           p.k_pos0);
  constexpr int64_t kQB = 64;  // queries per block: the score block is kQB × Tk
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const int64_t H = p.H, ldq = p.ldq ? p.ldq : H * p.Dqk, ldk = p.ldk ? p.ldk : H * p.Dqk,
                ldv = p.ldv ? p.ldv : H * p.Dv, ldo = p.ldo ? p.ldo : H * p.Dv;
  // Keys at positions <= query t's own: the first visible(t) of them.
  auto visible = [&](int64_t t) { return std::clamp<int64_t>(p.q_pos0 + t - p.k_pos0 + 1, 0, p.Tk); };
  std::vector<float> vt(size_t(p.Dv * p.Tk)), sc(size_t(std::min(kQB, p.Tq) * p.Tk));
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t j = 0; j < p.Tk; ++j)  // V of this head transposed: [Dv, Tk], the GEMM's weight layout
      for (int64_t d = 0; d < p.Dv; ++d) vt[size_t(d * p.Tk + j)] = p.v[j * ldv + h * p.Dv + d];
    for (int64_t b0 = 0; b0 < p.Tq; b0 += kQB) {
      const int64_t nq = std::min(kQB, p.Tq - b0), nk = visible(b0 + nq - 1);
      float* o = p.o + b0 * ldo + h * p.Dv;
      if (nk > 0) {
        run_gemm_cpu({.x = p.q + b0 * ldq + h * p.Dqk, .w = p.k + h * p.Dqk, .y = sc.data(), .M = nq, .N = nk,
                      .K = p.Dqk, .ldx = ldq, .ldw = ldk});
      }
      parallel_for(size_t(nq), [&](size_t r0, size_t r1) {
        for (size_t r = r0; r < r1; ++r) {
          const int64_t t = b0 + int64_t(r), n = visible(t);
          float* s = sc.data() + int64_t(r) * nk;
          float lse = kNegInf;
          if (n > 0) {
            for (int64_t j = 0; j < n; ++j) s[j] *= p.scale;
            lse = softmax(s, n);
          }
          std::fill(s + n, s + nk, 0.0f);
          if (p.lse) p.lse[t * H + h] = lse;
        }
      });
      if (nk > 0) {
        run_gemm_cpu({.x = sc.data(), .w = vt.data(), .y = o, .M = nq, .N = p.Dv, .K = nk, .ldx = nk,
                      .ldw = p.Tk, .ldy = ldo});
      } else {
        for (int64_t r = 0; r < nq; ++r) std::fill(o + r * ldo, o + r * ldo + p.Dv, 0.0f);
      }
    }
  }
}

void run_mla_merge_cpu(const MlaMergeParams& p) {
  if (p.T == 0) return;
  DS_CHECK(p.o_a && p.lse_a && p.o_b && p.lse_b && p.o && p.lse && p.H > 0 && p.Dv > 0,
           "mla merge: bad parameters");
  const int64_t H = p.H, lda = p.lda ? p.lda : H * p.Dv, ldb = p.ldb ? p.ldb : H * p.Dv,
                ldo = p.ldo ? p.ldo : H * p.Dv;
  constexpr double kNegInf = -std::numeric_limits<double>::infinity();
  parallel_for(size_t(p.T * H), [&](size_t b, size_t e) {
    for (size_t task = b; task < e; ++task) {
      const int64_t t = int64_t(task) / H, h = int64_t(task) % H, r = t * H + h;
      const double la = p.lse_a[r], lb = p.lse_b[r], m = std::max(la, lb);
      const float* oa = p.o_a + t * lda + h * p.Dv;
      const float* ob = p.o_b + t * ldb + h * p.Dv;
      float* o = p.o + t * ldo + h * p.Dv;
      if (m == kNegInf) {
        std::fill(o, o + p.Dv, 0.0f);
        p.lse[r] = float(kNegInf);
        continue;
      }
      const double wa = la == kNegInf ? 0.0 : std::exp(la - m), wb = lb == kNegInf ? 0.0 : std::exp(lb - m);
      const double inv = 1.0 / (wa + wb);
      // Element-wise, so o aliasing o_a or o_b is safe.
      for (int64_t d = 0; d < p.Dv; ++d) o[d] = float((wa * oa[d] + wb * ob[d]) * inv);
      p.lse[r] = float(m + std::log(wa + wb));
    }
  });
}

void run_mla_absorbed_cpu(const MlaAbsorbedParams& p) {
  if (p.num_seqs == 0) return;
  DS_CHECK(p.q && p.cache && p.block_tables && p.cu_seqlens && p.start_pos && p.o && p.H > 0 &&
               p.Dl > 0 && p.Dr >= 0 && p.block_size > 0,
           "mla absorbed: bad parameters");
  const int64_t H = p.H, D = p.Dl + p.Dr, T = p.cu_seqlens[p.num_seqs];
  // Token → sequence map so the work splits over (token, head).
  std::vector<int32_t> seq_of(static_cast<size_t>(T));
  for (int64_t s = 0; s < p.num_seqs; ++s) {
    for (int64_t t = p.cu_seqlens[s]; t < p.cu_seqlens[s + 1]; ++t) seq_of[t] = int32_t(s);
    const int64_t last = p.start_pos[s] + (p.cu_seqlens[s + 1] - p.cu_seqlens[s]) - 1;
    DS_CHECK(last < p.max_blocks * p.block_size, "mla absorbed: sequence {} reaches position {} beyond "
             "its {} pages", s, last, p.max_blocks);
  }
  parallel_for(size_t(T * H), [&](size_t b, size_t e) {
    std::vector<float> s;
    for (size_t task = b; task < e; ++task) {
      const int64_t t = int64_t(task) / H, h = int64_t(task) % H, sq = seq_of[t];
      const int64_t pos = p.start_pos[sq] + (t - p.cu_seqlens[sq]), nk = pos + 1;
      const int32_t* table = p.block_tables + sq * p.max_blocks;
      auto latent = [&](int64_t j) {
        return p.cache + (int64_t(table[j / p.block_size]) * p.block_size + j % p.block_size) * D;
      };
      const float* q = p.q + (t * H + h) * D;
      s.resize(size_t(nk));
      for (int64_t j = 0; j < nk; ++j) s[j] = dot(q, latent(j), D) * p.scale;
      softmax(s.data(), nk);
      float* o = p.o + (t * H + h) * p.Dl;
      std::fill(o, o + p.Dl, 0.0f);
      for (int64_t j = 0; j < nk; ++j) {
        const float* c = latent(j);
        for (int64_t d = 0; d < p.Dl; ++d) o[d] += s[j] * c[d];
      }
    }
  });
}

}  // namespace ds::kernels
