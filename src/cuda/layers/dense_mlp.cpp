#include "cuda/layers/dense_mlp.h"

#include <string>

#include "cuda/kernels/elementwise.h"
#include "cuda/kernels/gemv.h"

namespace ds::gpu {

void run_mlp(const LayerStep& s, const WeightView& gate_up, const WeightView& down, int I, int T, LayerInput in) {
  auto& ws = s.ws;
  const int hid = s.cfg.hidden_size;
  if (T <= kGemvMaxRows) {
    GemvParams g;
    g.x = in.x;
    g.ldx = hid;
    g.norm_weight = in.norm;
    g.norm_eps = s.cfg.rms_norm_eps;
    set_gemv_weights(g, gate_up);
    g.y = ws.act;
    g.ldy = I;
    g.N = I;
    g.K = hid;
    g.M = T;
    g.epi = GemvEpilogue::SiluMul;
    run_gemv(g, s.act, s.ctx);
  } else {
    s.linear(in.x, hid, gate_up, 2 * I, hid, ws.proj, 2 * I, T, false, false, nullptr, nullptr, in.split);
    SiluMulParams m;
    m.x = ws.proj;
    m.ldx = 2 * I;
    m.y = ws.act;
    m.ldy = I;
    m.tokens = T;
    m.inter = I;
    run_silu_mul(m, s.act, s.ctx);
  }
  s.linear(ws.act, I, down, hid, I, s.out, hid, T, true);
}

DenseMlp::DenseMlp(DType act, const FfnWeights& w, int layer) : gate_up_(w.gate_up), down_(w.down), inter_(w.inter) {
  const std::string p = "model.layers." + std::to_string(layer) + ".mlp.";
  gate_up_.require(act, p + "gate_proj/up_proj.weight", true);
  down_.require(act, p + "down_proj.weight", true);
}

void DenseMlp::forward(const LayerStep& s, LayerInput in) const { run_mlp(s, gate_up_, down_, inter_, s.m.T, in); }

}  // namespace ds::gpu
