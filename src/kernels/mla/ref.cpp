#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/parallel.h"
#include "kernels/mla/op.h"

namespace ds::kernels {
namespace {

inline float dot(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// In place: scores → softmax weights; returns nothing (weights sum to 1 up to rounding).
void softmax(float* s, int64_t n) {
  float mx = s[0];
  for (int64_t j = 1; j < n; ++j) mx = std::max(mx, s[j]);
  double sum = 0.0;
  for (int64_t j = 0; j < n; ++j) {
    s[j] = std::exp(s[j] - mx);
    sum += s[j];
  }
  const float inv = float(1.0 / sum);
  for (int64_t j = 0; j < n; ++j) s[j] *= inv;
}

}  // namespace

void run_mla_prefill_cpu(const MlaPrefillParams& p) {
  if (p.Tq == 0) return;
  DS_CHECK(p.q && p.k && p.v && p.o && p.H > 0 && p.Dqk > 0 && p.Dv > 0, "mla prefill: bad parameters");
  DS_CHECK(p.q_pos0 >= 0 && p.q_pos0 + p.Tq <= p.Tk, "mla prefill: queries at {}..{} exceed {} keys",
           p.q_pos0, p.q_pos0 + p.Tq - 1, p.Tk);
  const int64_t H = p.H, ldq = p.ldq ? p.ldq : H * p.Dqk, ldk = p.ldk ? p.ldk : H * p.Dqk,
                ldv = p.ldv ? p.ldv : H * p.Dv, ldo = p.ldo ? p.ldo : H * p.Dv;
  parallel_for(size_t(p.Tq * H), [&](size_t b, size_t e) {
    std::vector<float> s(size_t(p.Tk));
    for (size_t task = b; task < e; ++task) {
      const int64_t t = int64_t(task) / H, h = int64_t(task) % H;
      const int64_t nk = p.q_pos0 + t + 1;
      const float* q = p.q + t * ldq + h * p.Dqk;
      for (int64_t j = 0; j < nk; ++j) s[j] = dot(q, p.k + j * ldk + h * p.Dqk, p.Dqk) * p.scale;
      softmax(s.data(), nk);
      float* o = p.o + t * ldo + h * p.Dv;
      std::fill(o, o + p.Dv, 0.0f);
      for (int64_t j = 0; j < nk; ++j) {
        const float* v = p.v + j * ldv + h * p.Dv;
        for (int64_t d = 0; d < p.Dv; ++d) o[d] += s[j] * v[d];
      }
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
