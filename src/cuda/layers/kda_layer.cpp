#include "cuda/layers/kda_layer.h"

#include <string>

#include "core/error.h"
#include "cuda/kernels/attn_ref.h"
#include "cuda/kernels/gemv.h"
#include "cuda/kernels/kda_decode.h"
#include "cuda/kernels/kda_prefill.h"
#include "cuda/kernels/norm.h"

namespace ds::gpu {

KdaLayer::KdaLayer(const ModelConfig& c, DType act, const KdaLayerWeights& w, int layer, int kda_index)
    : w_(w), index_(kda_index) {
  hid_ = c.hidden_size;
  H_ = c.kda.num_heads;
  K_ = c.kda.head_dim;
  HK_ = H_ * K_;
  Wc_ = c.kda.conv_kernel;
  P_ = int(kda_in_proj_rows(c));
  const std::string p = "model.layers." + std::to_string(layer) + ".self_attn.";
  w_.in_proj.require(act, p + "q/k/v/f_a/g_a/b_proj.weight", true);
  w_.conv.require(act, p + "q/k/v_conv1d.weight");
  w_.f_b.require(act, p + "f_b_proj.weight");
  w_.g_b.require(act, p + "g_b_proj.weight");
  w_.o_norm.require(act, p + "o_norm.weight");
  w_.o_proj.require(act, p + "o_proj.weight", true);
  DS_CHECK(w_.a_log && w_.dt_bias, "CUDA model: layer {} KDA A_log/dt_bias missing", layer);
  // f_b and g_b run as one batch of two: the weights must be adjacent (as are the outputs)
  DS_CHECK(w_.g_b.ptr == w_.f_b.at(int64_t(HK_) * K_).ptr, "KDA f_b/g_b weights must be adjacent");
}

void KdaLayer::gate_projections(const LayerStep& s) const {
  const DType act = s.act;
  auto& ws = s.ws;
  if (s.m.T <= kGemvMaxRows) {
    GemvParams g;
    g.x = off(ws.proj, 3 * HK_, act);
    g.ldx = P_;
    g.x_group_stride = K_;
    g.w = w_.f_b.ptr;
    g.w_matrix_stride = int64_t(HK_) * K_;
    g.y = ws.fg;
    g.ldy = HK_;
    g.y_group_stride = int64_t(ws.tokens) * HK_;
    g.N = HK_;
    g.K = K_;
    g.M = s.m.T;
    g.num_groups = 2;
    run_gemv(g, act, s.ctx);
    return;
  }
  GemmArgs a;
  a.x = off(ws.proj, 3 * HK_, act);
  a.ldx = P_;
  a.stride_x = K_;
  a.w = w_.f_b.ptr;
  a.ldw = K_;
  a.stride_w = int64_t(HK_) * K_;
  a.y = ws.fg;
  a.ldy = HK_;
  a.stride_y = int64_t(ws.tokens) * HK_;
  a.x_dtype = a.y_dtype = act;
  a.w_dtype = w_.f_b.dtype;
  a.M = s.m.T;
  a.N = HK_;
  a.K = K_;
  a.batch = 2;
  s.gemm.run(a, s.ctx.stream);
}

KdaGateParams KdaLayer::gate_params(const LayerStep& s) const {
  KdaGateParams g;
  g.f = s.ws.fg;
  g.ldf = HK_;
  g.b = off(s.ws.proj, 3 * HK_ + 2 * K_, s.act);
  g.ldb = P_;
  g.A_log = w_.a_log;
  g.dt_bias = w_.dt_bias;
  g.g = s.ws.g32;
  g.beta = s.ws.beta;
  g.tokens = s.m.T;
  g.heads = H_;
  g.head_dim = K_;
  return g;
}

Conv1dParams KdaLayer::conv_params(const LayerStep& s) const {
  Conv1dParams c;
  c.x = s.ws.proj;
  c.ldx = P_;
  c.weight = w_.conv.ptr;
  c.y = s.ws.qkv;
  c.state = s.caches.conv_state(index_, 0);  // a slot's state is [W-1, 3HK] elements
  c.seq_start = s.m.cu_seqlens;
  c.token_seq = s.m.token_seq;
  c.slots = s.m.slots;
  c.num_seqs = s.m.N;
  c.tokens = s.m.T;
  c.channels = 3 * HK_;
  c.kernel = Wc_;
  return c;
}

// The convolution + gate (unless the decode kernel fuses them), then one of three kernels: the
// reference recurrence, the recurrent decode step, or the chunked prefill.
void KdaLayer::attention(const LayerStep& s, const KdaGateParams& g, const Conv1dParams& c) const {
  const DType act = s.act;
  const auto& m = s.m;
  auto& ws = s.ws;
  const bool fused_decode = m.pure_decode && !s.reference_attention;
  if (m.pure_decode && !fused_decode) {
    run_kda_gate_and_conv_decode(g, c, act, s.ctx);
  } else if (!m.pure_decode) {
    run_kda_gate(g, act, s.ctx);
    run_conv1d_prefill(c, act, s.ctx);
  }
  float* pool = s.caches.kda_state(index_, 0);
  // the inputs, outputs and state slots that the decode and prefill kernels share (same field names)
  auto set_io = [&](auto& k) {
    k.q = ws.qkv;
    k.k = off(ws.qkv, HK_, act);
    k.v = off(ws.qkv, 2 * HK_, act);
    k.ldq = k.ldk = k.ldv = 3 * HK_;
    k.g = ws.g32;
    k.beta = ws.beta;
    k.o = ws.attn_o;
    k.ldo = HK_;
    k.state_pool = pool;
    k.state_slots = m.slots;
    k.fresh = m.fresh;
    k.num_seqs = m.N;
    k.num_heads = H_;
    k.head_dim = K_;
  };
  if (s.reference_attention) {
    KdaRefParams k;
    k.q = ws.qkv;
    k.k = off(ws.qkv, HK_, act);
    k.v = off(ws.qkv, 2 * HK_, act);
    k.ldq = k.ldk = k.ldv = 3 * HK_;
    k.g = ws.g32;
    k.beta = ws.beta;
    k.o = ws.attn_o;
    k.state = pool;
    k.cu_seqlens = m.cu_seqlens;
    k.slots = m.slots;
    k.num_seqs = m.N;
    k.heads = H_;
    k.head_dim = K_;
    run_kda_ref(k, act, s.ctx);
  } else if (m.pure_decode) {
    KdaDecodeParams k;
    set_io(k);
    k.fuse_conv = k.fuse_gate = true;
    k.conv = c;
    k.gate = g;
    k.skip_padding = s.ctx.switches.kda_skip_padding;  // (a graph bucket's padding rows: fresh 2)
    run_kda_decode(k, act, s.ctx);
  } else {
    KdaPrefillParams k;
    set_io(k);
    k.cu_seqlens = m.cu_seqlens;
    k.workspace = ws.kda_ws;
    k.total_tokens = m.T;
    run_kda_prefill(k, act, s.ctx);
  }
}

void KdaLayer::output(const LayerStep& s) const {
  const DType act = s.act;
  auto& ws = s.ws;
  if (s.m.T <= kGemvMaxRows) {  // the output norm runs inside o_proj's GEMV as it loads its rows
    GemvParams o;
    o.x = ws.attn_o;
    o.ldx = HK_;
    o.gate = ws.gg;
    o.ld_gate = HK_;
    o.gate_head_dim = K_;
    o.norm_weight = w_.o_norm.ptr;
    o.norm_eps = s.cfg.rms_norm_eps;
    set_gemv_weights(o, w_.o_proj);
    o.y = s.out;
    o.ldy = hid_;
    o.N = hid_;
    o.K = HK_;
    o.M = s.m.T;
    o.epi = GemvEpilogue::Accumulate;
    run_gemv(o, act, s.ctx);
    return;
  }
  GatedRmsNormParams gn;
  gn.o = ws.attn_o;
  gn.gate = ws.gg;
  gn.ldg = HK_;
  gn.weight = w_.o_norm.ptr;
  gn.y = ws.gated;
  gn.tokens = s.m.T;
  gn.heads = H_;
  gn.head_dim = K_;
  gn.eps = s.cfg.rms_norm_eps;
  run_gated_rmsnorm(gn, act, s.ctx);
  s.linear(ws.gated, HK_, w_.o_proj, hid_, HK_, s.out, hid_, s.m.T, true);
}

void KdaLayer::forward(const LayerStep& s, LayerInput in) const {
  s.linear(in.x, hid_, w_.in_proj, P_, hid_, s.ws.proj, P_, s.m.T, false, false, in.norm, nullptr, in.split);
  gate_projections(s);
  attention(s, gate_params(s), conv_params(s));
  output(s);
}

}  // namespace ds::gpu
