#include "model/kda_layer.h"

#include <vector>

#include "kernels/conv1d/op.h"
#include "kernels/gemm/op.h"
#include "kernels/kda/op.h"
#include "kernels/norm/op.h"
#include "model/rows.h"

namespace ds {

KdaLayer::KdaLayer(const ModelConfig& c, const KdaWeights<HostTensor>& w, int kda_index)
    : w_(&w), index_(kda_index), hidden_(c.hidden_size), H_(c.kda.num_heads), K_(c.kda.head_dim),
      W_(c.kda.conv_kernel), norm_eps_(c.rms_norm_eps) {}

void KdaLayer::forward(const StepContext& ctx, const float* x, float* y, KdaStateStore& states) const {
  using namespace kernels;
  const int64_t T = ctx.num_tokens, H = H_, K = K_, HK = H * K, C3 = 3 * HK;
  // Raw q | k | v projections side by side, then the short convolutions (tails per state slot).
  std::vector<float> raw(size_t(T * C3)), qkv(size_t(T * C3));
  const HostTensor* proj[3] = {&w_->q_proj, &w_->k_proj, &w_->v_proj};
  const HostTensor* conv[3] = {&w_->q_conv, &w_->k_conv, &w_->v_conv};
  for (int s = 0; s < 3; ++s) {
    run_gemm_cpu({.x = x, .w = proj[s]->ptr(), .y = raw.data() + s * HK, .M = T, .N = HK, .K = hidden_,
                  .ldy = C3});
    run_causal_conv1d_cpu({.x = raw.data() + s * HK, .w = conv[s]->ptr(), .y = qkv.data() + s * HK,
                           .tails = states.conv_pool(index_) + s * HK, .cu_seqlens = ctx.cu_seqlens.data(),
                           .slots = ctx.slots.data(), .num_seqs = ctx.num_seqs(), .C = HK, .W = W_,
                           .ldx = C3, .ldy = C3, .ld_tail = C3,
                           .tail_slot_stride = states.conv_slot_stride()});
  }
  // Forget gate g = −exp(A_log)·softplus(f_b(f_a x) + dt_bias) and β = sigmoid(b_proj x).
  std::vector<float> low(size_t(T * K)), g(size_t(T * HK)), b(size_t(T * H)), beta(size_t(T * H));
  run_gemm_cpu({.x = x, .w = w_->f_a_proj.ptr(), .y = low.data(), .M = T, .N = K, .K = hidden_});
  run_gemm_cpu({.x = low.data(), .w = w_->f_b_proj.ptr(), .y = g.data(), .M = T, .N = HK, .K = K});
  run_kda_gate_cpu({.z = g.data(), .a_log = w_->a_log.ptr(), .dt_bias = w_->dt_bias.ptr(), .g = g.data(),
                    .T = T, .H = H, .K = K});
  run_gemm_cpu({.x = x, .w = w_->b_proj.ptr(), .y = b.data(), .M = T, .N = H, .K = hidden_});
  run_sigmoid_cpu({.x = b.data(), .y = beta.data(), .rows = T, .dim = H});

  // The recurrence: slices of one token take the token-by-token form, longer ones the chunked form.
  // Each group is packed contiguously so one varlen call covers it.
  std::vector<float> o(size_t(T * HK));
  for (int pass = 0; pass < 2; ++pass) {
    const bool single = pass == 0;
    std::vector<int32_t> rows, cu{0}, slots;
    for (int s = 0; s < ctx.num_seqs(); ++s) {
      const bool is_single = ctx.seq_len(s) == 1 || !ctx.opts.kda_chunked_prefill;
      if (is_single != single) continue;
      for (int32_t t = ctx.cu_seqlens[size_t(s)]; t < ctx.cu_seqlens[size_t(s) + 1]; ++t) rows.push_back(t);
      cu.push_back(int32_t(rows.size()));
      slots.push_back(ctx.slots[size_t(s)]);
    }
    if (rows.empty()) continue;
    const int64_t n = int64_t(rows.size());
    std::vector<float> pq(size_t(n * C3)), pg(size_t(n * HK)), pb(size_t(n * H)), po(size_t(n * HK));
    gather_rows(qkv.data(), C3, C3, rows, pq.data(), C3);
    gather_rows(g.data(), HK, HK, rows, pg.data(), HK);
    gather_rows(beta.data(), H, H, rows, pb.data(), H);
    const KdaParams p{.q = pq.data(), .k = pq.data() + HK, .v = pq.data() + 2 * HK, .g = pg.data(),
                      .beta = pb.data(), .o = po.data(), .state = states.state_pool(index_),
                      .cu_seqlens = cu.data(), .slots = slots.data(), .num_seqs = int64_t(slots.size()),
                      .H = H, .K = K, .V = K, .ldq = C3, .ldk = C3, .ldv = C3};
    if (single) run_kda_recurrent_cpu(p);
    else run_kda_chunk_cpu(p);
    scatter_rows(po.data(), HK, HK, rows, o.data(), HK);
  }

  // Output gate: rmsnorm(o)·w·sigmoid(g_b(g_a x)) per head, then o_proj.
  std::vector<float> gate(size_t(T * HK));
  run_gemm_cpu({.x = x, .w = w_->g_a_proj.ptr(), .y = low.data(), .M = T, .N = K, .K = hidden_});
  run_gemm_cpu({.x = low.data(), .w = w_->g_b_proj.ptr(), .y = gate.data(), .M = T, .N = HK, .K = K});
  run_gated_rmsnorm_cpu({.x = o.data(), .gate = gate.data(), .w = w_->o_norm.ptr(), .y = o.data(),
                         .rows = T * H, .dim = K, .eps = norm_eps_});
  run_gemm_cpu({.x = o.data(), .w = w_->o_proj.ptr(), .y = y, .M = T, .N = hidden_, .K = HK});
}

}  // namespace ds
