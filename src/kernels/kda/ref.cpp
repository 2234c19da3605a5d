#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/parallel.h"
#include "kernels/common/math.h"
#include "kernels/kda/op.h"
#include "kernels/kda/ref_util.h"

namespace ds::kernels {

void run_kda_gate_cpu(const KdaGateParams& p) {
  if (p.T == 0) return;
  DS_CHECK(p.z && p.a_log && p.dt_bias && p.g && p.H > 0 && p.K > 0, "kda gate: bad parameters");
  const int64_t HK = p.H * p.K, ldz = p.ldz ? p.ldz : HK;
  parallel_for(size_t(p.T), [&](size_t b, size_t e) {
    for (size_t t = b; t < e; ++t) {
      const float* z = p.z + int64_t(t) * ldz;
      float* g = p.g + int64_t(t) * HK;
      for (int64_t h = 0; h < p.H; ++h) {
        const float a = std::exp(p.a_log[h]);
        for (int64_t d = 0; d < p.K; ++d) {
          const int64_t c = h * p.K + d;
          g[c] = -a * softplus(z[c] + p.dt_bias[c], p.threshold);
        }
      }
    }
  }, 16);
}

void run_sigmoid_cpu(const SigmoidParams& p) {
  const int64_t ldx = p.ldx ? p.ldx : p.dim;
  for (int64_t r = 0; r < p.rows; ++r)
    for (int64_t i = 0; i < p.dim; ++i) p.y[r * p.dim + i] = sigmoid(p.x[r * ldx + i]);
}

void run_l2norm_cpu(const L2NormParams& p) {
  const int64_t ldx = p.ldx ? p.ldx : p.dim, ldy = p.ldy ? p.ldy : p.dim;
  parallel_for(size_t(p.rows), [&](size_t b, size_t e) {
    for (size_t r = b; r < e; ++r) {
      const float* x = p.x + int64_t(r) * ldx;
      double ss = 0.0;
      for (int64_t i = 0; i < p.dim; ++i) ss += double(x[i]) * double(x[i]);
      const float s = float(double(p.scale) / std::sqrt(ss + double(p.eps)));
      float* y = p.y + int64_t(r) * ldy;
      for (int64_t i = 0; i < p.dim; ++i) y[i] = x[i] * s;
    }
  }, 16);
}

void run_kda_recurrent_cpu(const KdaParams& p) {
  if (p.num_seqs == 0) return;
  const auto L = kda_detail::resolve(p, "kda recurrent");
  const int64_t H = L.H, K = L.K, V = L.V;
  parallel_for(size_t(p.num_seqs * H), [&](size_t b, size_t e) {
    std::vector<float> qn(K), kn(K), err(V);
    for (size_t task = b; task < e; ++task) {
      const int64_t s = int64_t(task) / H, h = int64_t(task) % H;
      float* S = p.state + (int64_t(p.slots[s]) * H + h) * K * V;
      for (int64_t t = p.cu_seqlens[s]; t < p.cu_seqlens[s + 1]; ++t) {
        kda_detail::load_normalised(p.q + t * L.ldq + h * K, K, p.qk_l2norm, L.scale, qn.data());
        kda_detail::load_normalised(p.k + t * L.ldk + h * K, K, p.qk_l2norm, 1.0f, kn.data());
        const float* g = p.g + (t * H + h) * K;
        const float* v = p.v + t * L.ldv + h * V;
        const float beta = p.beta[t * H + h];
        // Decay, then the prediction error e = v − Sᵀk of the decayed state.
        for (int64_t j = 0; j < V; ++j) err[j] = 0.0f;
        for (int64_t d = 0; d < K; ++d) {
          float* row = S + d * V;
          const float a = std::exp(g[d]), kd = kn[d];
          for (int64_t j = 0; j < V; ++j) {
            row[j] *= a;
            err[j] += kd * row[j];
          }
        }
        for (int64_t j = 0; j < V; ++j) err[j] = beta * (v[j] - err[j]);
        // Rank-1 update, then the read o = Sᵀq of the updated state.
        float* o = p.o + (t * H + h) * V;
        for (int64_t j = 0; j < V; ++j) o[j] = 0.0f;
        for (int64_t d = 0; d < K; ++d) {
          float* row = S + d * V;
          const float kd = kn[d], qd = qn[d];
          for (int64_t j = 0; j < V; ++j) {
            row[j] += kd * err[j];
            o[j] += qd * row[j];
          }
        }
      }
    }
  });
}

}  // namespace ds::kernels
