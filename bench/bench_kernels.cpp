// Kernel timings of the CUDA backend at the 48B model's decode and prefill shapes, each beside its
// roofline (weights or bytes read at 4.3 TB/s, or FLOPs at 790 TFLOP/s). Random data, warm-up,
// CUDA-event medians; weight sets that fit in L2 are rotated so every call reads HBM.
//   bench_kernels [--quick] [--prefill] [--moe B]   (--prefill: only the wgmma-vs-mma.sync prefill rows: MLA attention,
//                                         MoE grouped GEMM, each kernel pair in the same run)
#include <algorithm>
#include <cstring>
#include <functional>
#include <nvtx3/nvToolsExt.h>
#include <string>
#include <random>

#include "gpu_bench_util.h"
#include "mla_bench.h"
#include "moe_quant_prefill.h"
#include "config/runtime_env.h"
#include "cuda/device_buffer.h"
#include "cuda/device_context.h"
#include "cuda/gemm.h"
#include "cuda/kernels/elementwise.h"
#include "cuda/kernels/gemv.h"
#include "cuda/kernels/int4.h"
#include "cuda/kernels/mla_prefill.h"
#include "cuda/kernels/fp8.h"
#include "cuda/kernels/moe_gemm.h"
#include "cuda/kernels/moe_gemm_fp8_wgmma.h"
#include "cuda/kernels/moe_params.h"
#include "cuda/kernels/moe_route.h"
#include "cuda/kernels/norm.h"
#include "cuda/kernels/sampling.h"
#include "cuda/stream.h"

using namespace ds;
using namespace ds::gpu;
using ds::bench::Row;

namespace {

DeviceBuffer filled(const DeviceContext& ctx, int64_t n, DType t, uint64_t seed, float a = 0.05f) {
  DeviceBuffer b(size_t(n) * dtype_size(t));
  run_fill_uniform(b.data(), t, n, -a, a, seed, ctx);
  return b;
}

double gemv_ms(const DeviceContext& ctx, int M, int N, int K, int copies, bool f32out, int reps, int groups = 0,
               bool hint = false, bool pipelined = true, bool split_k = true, bool async = true) {
  const DType t = DType::BF16;
  std::vector<DeviceBuffer> w;
  for (int i = 0; i < copies; ++i) w.push_back(filled(ctx, int64_t(N) * K, t, 100 + i));
  auto x = filled(ctx, int64_t(M) * K, t, 1, 1.f);
  DeviceBuffer y(size_t(M) * N * 4);
  int i = 0;
  return ds::bench::time_ms(ctx.stream, [&] {
    GemvParams p;
    p.x = x.data();
    p.ldx = K;
    p.w = w[size_t(i++ % copies)].data();
    p.y = y.data();
    p.ldy = N;
    p.y_f32 = f32out;
    p.N = N;
    p.K = K;
    p.M = M;
    p.row_pairs = groups;
    p.stream_hint = hint;
    p.pipelined = pipelined;
    p.split_k = split_k;
    p.async_stream = async;
    run_gemv(p, t, ctx);
  }, reps);
}

double fl_floor(double flops) { return flops / ds::bench::kBf16Flops * 1e3; }

std::string tflops_note(double flops, double ms, const char* extra = "") {
  char b[128];
  std::snprintf(b, sizeof b, "%.0f TFLOP/s = %.0f%% of 790%s", flops / ms * 1e-9,
                100.0 * flops / ms * 1e-9 / (ds::bench::kBf16Flops * 1e-12), extra);
  return b;
}

// MLA prefill attention, 32 heads, causal, bf16: the mma.sync kernel and the wgmma kernel
// (DeviceContext::switches.wgmma) on the same data. FLOPs: 640 per (query, key, head) pair attended.
void mla_prefill_rows(const DeviceContext& ctx, bool quick, std::vector<Row>& rows) {
  const int H = 32;
  const DType bf = DType::BF16;
  struct Case {
    const char* name;
    std::vector<int> q, c;
  };
  for (const Case& cs : {Case{"1x8192 causal", {8192}, {0}}, Case{"4x2048 causal", {2048, 2048, 2048, 2048}, {0, 0, 0, 0}},
                         Case{"1x8192 after 24576 of context", {8192}, {24576}}}) {
    std::vector<int32_t> cuq(1, 0), cuk(1, 0);
    double pairs = 0;
    int max_q = 0;
    for (size_t i = 0; i < cs.q.size(); ++i) {
      cuq.push_back(cuq.back() + cs.q[i]);
      cuk.push_back(cuk.back() + cs.q[i] + cs.c[i]);
      pairs += double(cs.q[i]) * cs.c[i] + double(cs.q[i]) * (cs.q[i] + 1) / 2;
      max_q = std::max(max_q, cs.q[i]);
    }
    const int Tq = cuq.back(), Tk = cuk.back();
    auto q = filled(ctx, int64_t(Tq) * H * 192, bf, 1000, 1.f);
    auto kv = filled(ctx, int64_t(Tk) * H * 256, bf, 1001, 1.f);
    auto kva = filled(ctx, int64_t(Tk) * 576, bf, 1002, 1.f);
    DeviceBuffer o(size_t(Tq) * H * 128 * 2), dq(cuq.size() * 4), dk(cuk.size() * 4);
    DS_CUDA_CHECK(cudaMemcpy(dq.data(), cuq.data(), dq.bytes(), cudaMemcpyHostToDevice));
    DS_CUDA_CHECK(cudaMemcpy(dk.data(), cuk.data(), dk.bytes(), cudaMemcpyHostToDevice));
    MlaPrefillParams p;
    p.q = q.data();
    p.k_nope = kv.data();
    p.ldkn = int64_t(H) * 256;
    p.hkn = 256;
    p.v = static_cast<const char*>(kv.data()) + 256;
    p.ldv = int64_t(H) * 256;
    p.hv = 256;
    p.k_pe = static_cast<const char*>(kva.data()) + 1024;
    p.ldkpe = 576;
    p.o = o.data();
    p.cu_seqlens_q = dq.as<int32_t>();
    p.cu_seqlens_k = dk.as<int32_t>();
    p.num_seqs = int(cs.q.size());
    p.num_heads = H;
    p.max_seqlen_q = max_q;
    const double flops = 640.0 * H * pairs;
    for (int wg : {0, 1, 2, 3, 4}) {
      DeviceContext c = ctx;
      c.switches.wgmma = wg;
      const double ms = ds::bench::time_ms(ctx.stream, [&] { run_mla_prefill(p, bf, c); }, quick ? 5 : 20);
      char nm[96];
      std::snprintf(nm, sizeof nm, "MLA prefill %s, %s", cs.name,
                    wg == 0   ? "mma.sync"
                    : wg == 1 ? "wgmma"
                    : wg == 2 ? "wgmma ping-pong"
                    : wg == 3 ? "wgmma, TMA"
                              : "wgmma ping-pong, TMA");
      rows.push_back({nm, ms, fl_floor(flops), tflops_note(flops, ms)});
    }
  }
}

// MoE prefill, 8192 tokens routed over 256 experts (top 8): gate/up (SiLU·mul) and down, the mma.sync
// kernel (64-token tiles) and the wgmma kernel, each launch alone and with route + align.
void moe_prefill_rows(const DeviceContext& ctx, bool quick, const DeviceBuffer& gu, const DeviceBuffer& dn,
                      const DeviceBuffer& zero_bias, std::vector<Row>& rows) {
  const int E = 256, D = 2304, I = 1024, k = 8, T = 8192, pairs = T * k;
  const DType bf = DType::BF16;
  auto x = filled(ctx, int64_t(T) * D, bf, 900, 1.f);
  DeviceBuffer logits(size_t(T) * E * 4), ids(size_t(pairs) * 4), w(size_t(pairs) * 4), pp(size_t(pairs) * 4),
      srt(size_t(pairs) * 4), se(size_t(E) * 4), ss(size_t(E + 1) * 4), na(4), act(size_t(pairs) * I * 2),
      out(size_t(pairs) * D * 2);
  run_fill_uniform(logits.data(), DType::F32, int64_t(T) * E, -3.f, 3.f, 901, ctx);
  const MoeRouteParams r{.logits = logits.as<float>(),
                         .bias = zero_bias.as<float>(),
                         .topk_ids = ids.as<int32_t>(),
                         .topk_weights = w.as<float>(),
                         .tokens = T,
                         .num_experts = E,
                         .top_k = k,
                         .scale = 2.446f};
  const MoeAlignParams a = moe_align_params(r, {.pair_pos = pp.as<int32_t>(),
                                                .sorted_token = srt.as<int32_t>(),
                                                .active_expert = se.as<int32_t>(),
                                                .active_start = ss.as<int32_t>(),
                                                .num_active = na.as<int32_t>()});
  run_moe_route_align(r, a, ctx);
  const MoeGemmParams g = moe_gate_up_gemm_params(a, x.data(), D, gu.data(), D, I, act.data(), 64);
  const MoeGemmParams d = moe_down_gemm_params(g, dn.data(), out.data(), D);
  const double f_gu = 2.0 * pairs * 2.0 * I * D, f_dn = 2.0 * pairs * I * D;
  const int reps = quick ? 5 : 10;
  for (int v : {0, 1, 2}) {
    DeviceContext c = ctx;
    c.switches.wgmma = v > 0;
    c.switches.moe_tma = v == 2;
    const char* impl = v == 2 ? "wgmma 128x256, TMA weights" : v == 1 ? "wgmma 128x256" : "mma.sync 64x64";
    char nm[96];
    double ms = ds::bench::time_ms(ctx.stream, [&] { run_moe_gemm(g, c); }, reps);
    std::snprintf(nm, sizeof nm, "MoE prefill T=8192 gate_up (2048x2304), %s", impl);
    rows.push_back({nm, ms, fl_floor(f_gu), tflops_note(f_gu, ms)});
    ms = ds::bench::time_ms(ctx.stream, [&] { run_moe_gemm(d, c); }, reps);
    std::snprintf(nm, sizeof nm, "MoE prefill T=8192 down (2304x1024), %s", impl);
    rows.push_back({nm, ms, fl_floor(f_dn), tflops_note(f_dn, ms)});
    ms = ds::bench::time_ms(ctx.stream, [&] {
      run_moe_route_align(r, a, c);
      run_moe_gemm(g, c);
      run_moe_gemm(d, c);
    }, reps);
    std::snprintf(nm, sizeof nm, "MoE prefill T=8192 route+align+experts, %s", impl);
    rows.push_back({nm, ms, fl_floor(f_gu + f_dn), tflops_note(f_gu + f_dn, ms, "; issue 13 target <= 2.4 ms")});
  }
  ds::bench::moe_quant_prefill_rows(ctx, quick, g, E, T, pairs, rows, fl_floor,
                                    [](double f, double ms) { return tflops_note(f, ms); });
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, prefill_only = false, mla_decode_only = false;
  int moe_b = 0;  // --moe B: only the MoE rows of batch B, each variant also launched once in an NVTX range
  for (int i = 1; i < argc; ++i) {
    quick = quick || std::strcmp(argv[i], "--quick") == 0;
    prefill_only = prefill_only || std::strcmp(argv[i], "--prefill") == 0;
    mla_decode_only = mla_decode_only || std::strcmp(argv[i], "--mla-decode") == 0;
    if (std::strcmp(argv[i], "--moe") == 0 && i + 1 < argc) moe_b = std::atoi(argv[++i]);
  }
  const int reps = quick ? 10 : 30;
  Stream st;
  cudaStream_t s = st;
  const DeviceContext ctx = make_device_context(st, cuda_env());
  const DType bf = DType::BF16;
  std::vector<Row> rows;
  auto bw_floor = [](double bytes) { return bytes / ds::bench::kBandwidth * 1e3; };
  std::printf("device: %s\n", device_info().summary().c_str());
  if (mla_decode_only) {  // the MLA decode rows alone (kernel iterations)
    ds::bench::mla_attention_rows(ctx, quick, rows, true);
    ds::bench::print_table("MLA decode (--mla-decode; H200 roofline: 4.3 TB/s)", rows);
    return 0;
  }
  if (prefill_only) {
    const int E = 256, D = 2304, I = 1024;
    auto gu = filled(ctx, int64_t(E + 1) * 2 * I * D, bf, 200);
    auto dn = filled(ctx, int64_t(E + 1) * D * I, bf, 201);
    DeviceBuffer zero_bias(size_t(E) * 4);
    DS_CUDA_CHECK(cudaMemset(zero_bias.data(), 0, zero_bias.bytes()));
    mla_prefill_rows(ctx, quick, rows);
    moe_prefill_rows(ctx, quick, gu, dn, zero_bias, rows);
    ds::bench::print_table("Prefill kernels, wgmma vs mma.sync (H200 roofline: 790 TFLOP/s bf16)", rows);
    return 0;
  }

  // ---- dense projections at decode (GEMV) -------------------------------------------------------
  if (moe_b == 0) {
  rows.push_back({"gemv lm_head M=1 163840x2304 (fp32 out)", gemv_ms(ctx, 1, 163840, 2304, 1, true, reps),
                  bw_floor(163840.0 * 2304 * 2), "weights 755 MB"});
  rows.push_back({"gemv KDA in_proj M=1 12576x2304", gemv_ms(ctx, 1, 12576, 2304, 4, false, reps),
                  bw_floor(12576.0 * 2304 * 2), "weights 58 MB, 4 copies rotated"});
  rows.push_back({"gemv o_proj M=1 2304x4096", gemv_ms(ctx, 1, 2304, 4096, 8, false, reps),
                  bw_floor(2304.0 * 4096 * 2), "weights 19 MB, 8 copies rotated"});
  rows.push_back({"gemv KDA in_proj M=8 12576x2304", gemv_ms(ctx, 8, 12576, 2304, 4, false, reps),
                  bw_floor(12576.0 * 2304 * 2), ""});
  // the same three through the plain (not pipelined) loop, and with the L2::256B streaming hint
  rows.push_back({"gemv lm_head M=1, plain loop", gemv_ms(ctx, 1, 163840, 2304, 1, true, reps, 0, false, false),
                  bw_floor(163840.0 * 2304 * 2), ""});
  rows.push_back({"gemv KDA in_proj M=1, plain loop", gemv_ms(ctx, 1, 12576, 2304, 4, false, reps, 0, false, false),
                  bw_floor(12576.0 * 2304 * 2), ""});
  rows.push_back({"gemv o_proj M=1, plain loop", gemv_ms(ctx, 1, 2304, 4096, 8, false, reps, 0, false, false),
                  bw_floor(2304.0 * 4096 * 2), ""});
  rows.push_back({"gemv KDA in_proj M=1, plain loop + L2::256B hint", gemv_ms(ctx, 1, 12576, 2304, 4, false, reps, 0, true),
                  bw_floor(12576.0 * 2304 * 2), ""});
  rows.push_back({"gemv lm_head M=1, register loads (no cp.async)", gemv_ms(ctx, 1, 163840, 2304, 1, true, reps, 0, false, true, true, false),
                  bw_floor(163840.0 * 2304 * 2), ""});
  rows.push_back({"gemv KDA in_proj M=1, register loads (no cp.async)", gemv_ms(ctx, 1, 12576, 2304, 4, false, reps, 0, false, true, true, false),
                  bw_floor(12576.0 * 2304 * 2), ""});
  rows.push_back({"gemv o_proj M=1, row-pair kernel (no split-K)", gemv_ms(ctx, 1, 2304, 4096, 8, false, reps, 0, false, true, false),
                  bw_floor(2304.0 * 4096 * 2), ""});
  // row-group sweep (the heuristic's choice is the first set of rows above)
  for (int g : {1, 2, 4, 8}) {
    char name[96];
    std::snprintf(name, sizeof name, "  sweep: in_proj M=1 row_pairs=%d", g);
    rows.push_back({name, gemv_ms(ctx, 1, 12576, 2304, 4, false, reps, g), bw_floor(12576.0 * 2304 * 2), ""});
    std::snprintf(name, sizeof name, "  sweep: o_proj M=1 row_pairs=%d", g);
    rows.push_back({name, gemv_ms(ctx, 1, 2304, 4096, 8, false, reps, g), bw_floor(2304.0 * 4096 * 2), ""});
  }

  }

  // ---- MoE experts: one layer's 256 + shared expert weights -----------------------------------------
  const int E = 256, D = 2304, I = 1024, k = 8, kp = 9;
  auto gu = filled(ctx, int64_t(E + 1) * 2 * I * D, bf, 200);
  auto dn = filled(ctx, int64_t(E + 1) * D * I, bf, 201);
  auto router_w = filled(ctx, int64_t(E) * D, bf, 202, 0.02f);
  DeviceBuffer zero_bias(size_t(E) * 4);
  DS_CUDA_CHECK(cudaMemset(zero_bias.data(), 0, zero_bias.bytes()));
  // the same experts quantized to FP8 with 128x128 block scales (the FP8 grouped-GEMM rows)
  DeviceBuffer q_gu(size_t(E + 1) * 2 * I * D), s_gu(size_t(E + 1) * 2 * I / 128 * (D / 128) * 4);
  DeviceBuffer q_dn(size_t(E + 1) * D * I), s_dn(size_t(E + 1) * D / 128 * (I / 128) * 4);
  run_quantize_fp8(gu.data(), bf, {q_gu.as<uint8_t>(), s_gu.as<float>(), int64_t(E + 1) * 2 * I, D, D / 128, 7, 7}, ctx);
  run_quantize_fp8(dn.data(), bf, {q_dn.as<uint8_t>(), s_dn.as<float>(), int64_t(E + 1) * D, I, I / 128, 7, 7}, ctx);
  // one launch of a variant inside the NVTX range `tag` (for `ncu --nvtx --nvtx-include TAG/`), with --moe
  auto profiled = [&](const char* tag, const std::function<void()>& f) {
    if (moe_b == 0) return;
    nvtxRangePushA(tag);
    f();
    nvtxRangePop();
    DS_CUDA_CHECK(cudaStreamSynchronize(s));
  };
  for (int B : moe_b ? std::vector<int>{moe_b} : std::vector<int>{1, 8, 16, 64, 100}) {
    auto x = filled(ctx, int64_t(B) * D, bf, 300 + B, 1.f);
    DeviceBuffer logits(size_t(B) * E * 4), ids(size_t(B) * kp * 4), w(size_t(B) * kp * 4), pp(size_t(B) * kp * 4),
        srt(size_t(B) * kp * 4), se(size_t(E + 1) * 4), ss(size_t(E + 2) * 4), na(4), act(size_t(B) * kp * I * 2),
        out(size_t(B) * kp * D * 2);
    // several routings (different tokens) so consecutive calls read different experts
    const int variants = 8;
    std::vector<DeviceBuffer> xs;
    for (int v = 0; v < variants; ++v) xs.push_back(filled(ctx, int64_t(B) * D, bf, 400 + 17 * v + B, 1.f));
    const MoeRouteParams r{.logits = logits.as<float>(),
                           .bias = zero_bias.as<float>(),
                           .topk_ids = ids.as<int32_t>(),
                           .topk_weights = w.as<float>(),
                           .tokens = B,
                           .num_experts = E,
                           .top_k = k,
                           .scale = 2.446f,
                           .ldk = kp,
                           .shared_expert_id = E};
    const MoeAlignParams a = moe_align_params(r, {.pair_pos = pp.as<int32_t>(),
                                                  .sorted_token = srt.as<int32_t>(),
                                                  .active_expert = se.as<int32_t>(),
                                                  .active_start = ss.as<int32_t>(),
                                                  .num_active = na.as<int32_t>()});
    // the gate/up launch without the host hint for the shared expert's group (as this bench always ran)
    auto gate_up = [&] {
      GemvParams g = moe_gate_up_gemv_params(r, a, x.data(), D, gu.data(), D, I, act.data());
      g.known_group = g.known_weight = -1;
      return g;
    };
    auto route = [&](int v) {
      GemvParams rg;
      rg.x = xs[size_t(v)].data();
      rg.ldx = D;
      rg.w = router_w.data();
      rg.y = logits.data();
      rg.ldy = E;
      rg.y_f32 = true;
      rg.N = E;
      rg.K = D;
      rg.M = B;
      if (B <= 8) run_gemv(rg, bf, ctx);
      run_moe_route_align(r, a, ctx);
    };
    if (B > 8) {  // random logits instead of a router GEMM (cuBLAS territory)
      run_fill_uniform(logits.data(), DType::F32, int64_t(B) * E, -3.f, 3.f, 500, ctx);
    }
    route(0);
    DS_CUDA_CHECK(cudaStreamSynchronize(s));
    int active = 0;
    DS_CUDA_CHECK(cudaMemcpy(&active, na.data(), 4, cudaMemcpyDeviceToHost));
    DeviceBuffer resid(size_t(D) * 2);
    DS_CUDA_CHECK(cudaMemset(resid.data(), 0, resid.bytes()));
    auto experts = [&] {
      const GemvParams g = gate_up();
      run_gemv(g, bf, ctx);
      if (B == 1) {  // what the model runs at batch 1: down projection + combine in one launch
        run_moe_down_combine(moe_down_combine_params(g, pp.as<int32_t>(), ids.as<int32_t>(), w.as<float>(), kp,
                                                     dn.data(), resid.data()), bf, ctx);
      } else {
        run_gemv(moe_down_gemv_params(g, dn.data(), out.data(), D), bf, ctx);
      }
    };
    int v = 0;
    double ms = ds::bench::time_ms(s, [&] {
      if (B <= 8) route(v++ % variants);  // new experts each call (B=100 touches nearly all anyway)
      experts();
    }, reps);
    double bytes = double(active) * 3.0 * I * D * 2;
    if (B == 1) {  // where the batch-1 MoE time goes
      auto split = [&](const char* what, const std::function<void()>& fn, double floor_bytes) {
        rows.push_back({std::string("  MoE B=1 part: ") + what, ds::bench::time_ms(s, fn, reps), bw_floor(floor_bytes), ""});
      };
      split("router gemv 256x2304 fp32 out", [&] {
        GemvParams rg;
        rg.x = xs[0].data();
        rg.ldx = D;
        rg.w = router_w.data();
        rg.y = logits.data();
        rg.ldy = E;
        rg.y_f32 = true;
        rg.N = E;
        rg.K = D;
        rg.M = 1;
        run_gemv(rg, bf, ctx);
      }, double(E) * D * 2);
      split("router gemv + route_align", [&] { route(0); }, double(E) * D * 2);
      GemvParams g = gate_up();
      for (int rg_ : {0, 1, 2, 8}) {
        for (int plain = 0; plain < 2; ++plain) {
          g.row_pairs = rg_;
          g.pipelined = !plain;
          char nm[80];
          std::snprintf(nm, sizeof nm, "gate_up 9x2048x2304 row_pairs=%d%s", rg_, plain ? " plain loop" : "");
          split(nm, [&] { run_gemv(g, bf, ctx); }, 9.0 * 2 * I * D * 2);
        }
      }
      g.row_pairs = 0;
      g.pipelined = true;
      GemvParams d = moe_down_gemv_params(g, dn.data(), out.data(), D);
      split("down 9x2304x1024", [&] { run_gemv(d, bf, ctx); }, 9.0 * I * D * 2);
      split("down 9x2304x1024 + combine, one launch", [&] {
        run_moe_down_combine(moe_down_combine_params(g, pp.as<int32_t>(), ids.as<int32_t>(), w.as<float>(), kp,
                                                     dn.data(), resid.data()), bf, ctx);
      }, 9.0 * I * D * 2);
    }
    if (B > 8) {
      for (int cfg = 0; cfg < 4; ++cfg) {
        int tile = cfg < 2 ? 16 : 64, bk = cfg % 2 ? 64 : 32;
        auto call = [&] {
          MoeGemmParams g = moe_gate_up_gemm_params(a, x.data(), D, gu.data(), D, I, act.data(), tile);
          g.max_active = E + 1;  // the bound this bench always launched with
          g.k_tile = bk;
          run_moe_gemm(g, ctx);
          run_moe_gemm(moe_down_gemm_params(g, dn.data(), out.data(), D), ctx);
        };
        double mms = ds::bench::time_ms(s, call, reps);
        char tag[32];
        std::snprintf(tag, sizeof tag, "bf16_%dx%d", tile, bk);
        profiled(tag, call);
        char nm[96];
        std::snprintf(nm, sizeof nm, "MoE B=%d experts, tensor cores %dx%d", B, tile, bk);
        rows.push_back({nm, mms, bw_floor(bytes), "same routing as the GEMV row below"});
      }
      // FP8 experts (128x128 block scales), the same routing: raw bytes staged by cp.async (default) against
      // session 5's register path; floor = the active experts' FP8 bytes
      const Fp8Matrix qgu{q_gu.as<uint8_t>(), s_gu.as<float>(), int64_t(E + 1) * 2 * I, D, D / 128, 7, 7};
      const Fp8Matrix qdn{q_dn.as<uint8_t>(), s_dn.as<float>(), int64_t(E + 1) * D, I, I / 128, 7, 7};
      // (variant 4: x split in e4m3 hi + lo and FP8 wgmma, the split counted in the time)
      DeviceBuffer split(x_split_bytes(int64_t(B) * kp, std::max(D, I)));
      for (int variant = 0; variant < 7; ++variant) {  // fragment kernel 8 / 16 token tiles, staged, registers
        const int staged = variant != 3;
        DeviceContext fctx = ctx;
        fctx.switches.fp8_frag = variant == 0 ? 8 : variant == 1 ? 16 : 0;
        fctx.switches.fp8_xsplit = variant >= 4;
        fctx.switches.fp8_wgmma_stages = variant >= 5 ? 3 : 4;
        fctx.switches.fp8_tma = variant == 6;  // the weight rows by TMA
        auto call = [&] {
          MoeGemmParams g = moe_gate_up_gemm_params(a, x.data(), D, qgu.q, D, I, act.data(), 16);
          g.w_matrix_stride = int64_t(2) * I * D;
          g.w_scale = qgu.scale;
          g.scale_matrix_stride = int64_t(2) * I / 128 * qgu.ld;
          g.scale_ld = qgu.ld;
          g.scale_row_shift = g.scale_k_shift = 7;
          g.fp8_staged = staged;
          g.x_split = split.data();
          g.x_split_rows = B;
          run_moe_gemm(g, fctx);
          MoeGemmParams d = moe_down_gemm_params(g, qdn.q, out.data(), D);
          d.w_scale = qdn.scale;
          d.scale_matrix_stride = int64_t(D) / 128 * qdn.ld;
          d.scale_ld = qdn.ld;
          d.scale_row_shift = d.scale_k_shift = 7;
          d.fp8_staged = staged;
          run_moe_gemm(d, fctx);
        };
        double mms = ds::bench::time_ms(s, call, reps);
        const char* tags[] = {"fp8_frag8", "fp8_frag16", "fp8_staged", "fp8_registers", "fp8_wgmma_split",
                              "fp8_wgmma_split3", "fp8_wgmma_split3_tma"};
        profiled(tags[variant], call);
        char nm[96];
        const char* kind[] = {"fragments, 8-token tiles", "fragments, 16-token tiles", "16x64 staged", "16x64 registers",
                              "x split + FP8 wgmma", "x split + FP8 wgmma, 3 stages",
                              "x split + FP8 wgmma, 3 stages, TMA weights"};
        std::snprintf(nm, sizeof nm, "MoE B=%d experts FP8 128x128, %s", B, kind[variant]);
        rows.push_back({nm, mms, bw_floor(bytes / 2), "FP8 floor: half the bf16 bytes"});
      }
      // INT4 experts (dummy nibbles, group 32 and 128, symmetric) on the same kernel: nibbles -> e4m3 in shared
      // memory; floor = the active experts' nibbles and scales
      for (int variant = 0; variant < 4; ++variant) {  // groups of 128 and 32; f16 conversion or subnormals
        const int group = variant % 2 ? 32 : 128;
        const bool sub = variant >= 2;  // switches.int4_subnormal
        const int ks = group == 128 ? 7 : 5;
        DeviceBuffer n_gu(size_t(E + 1) * 2 * I * D / 2), c_gu(size_t(E + 1) * 2 * I * (D / group) * 4);
        DeviceBuffer n_dn(size_t(E + 1) * D * I / 2), c_dn(size_t(E + 1) * D * (I / group) * 4);
        run_fill_int4({n_gu.as<uint8_t>(), c_gu.as<float>(), nullptr, int64_t(E + 1) * 2 * I, D, D / group, ks},
                      int64_t(E + 1) * 2 * I * (D / group), 0.05f, 71, ctx);
        run_fill_int4({n_dn.as<uint8_t>(), c_dn.as<float>(), nullptr, int64_t(E + 1) * D, I, I / group, ks},
                      int64_t(E + 1) * D * (I / group), 0.05f, 72, ctx);
        DeviceContext ictx = ctx;
        ictx.switches.fp8_xsplit = true;
        ictx.switches.int4_subnormal = sub;
        auto call = [&] {
          MoeGemmParams g = moe_gate_up_gemm_params(a, x.data(), D, n_gu.data(), D, I, act.data(), 16);
          g.w_int4 = true;
          g.w_scale = c_gu.as<float>();
          g.scale_ld = D / group;
          g.scale_k_shift = ks;
          g.scale_matrix_stride = int64_t(2) * I * (D / group);
          g.x_split = split.data();
          g.x_split_rows = B;
          run_moe_gemm(g, ictx);
          MoeGemmParams d = moe_down_gemm_params(g, n_dn.data(), out.data(), D);
          d.w_int4 = true;
          d.w_scale = c_dn.as<float>();
          d.scale_ld = I / group;
          d.scale_k_shift = ks;
          d.scale_matrix_stride = int64_t(D) * (I / group);
          run_moe_gemm(d, ictx);
        };
        double mms = ds::bench::time_ms(s, call, reps);
        const char* tags[] = {"int4_g128_wgmma", "int4_g32_wgmma", "int4_g128_wgmma_sub", "int4_g32_wgmma_sub"};
        profiled(tags[variant], call);
        char nm[112];
        std::snprintf(nm, sizeof nm, "MoE B=%d experts INT4 g%d, nibbles -> e4m3%s + FP8 wgmma", B, group,
                      sub ? " subnormals" : "");
        rows.push_back({nm, mms, bw_floor(bytes / 4 * (1.0 + 8.0 / group)), "INT4 floor: nibbles + fp32 scales"});
      }
    }
    char name[96], note[96];
    std::snprintf(name, sizeof name, B <= 8 ? "MoE B=%d router+route+align+experts" : "MoE B=%d experts (gate_up+down)", B);
    std::snprintf(note, sizeof note, "%d experts active incl. shared, %.0f MB", active, bytes / 1e6);
    rows.push_back({name, ms, bw_floor(bytes), note});
  }

  if (moe_b) {
    ds::bench::print_table("MoE kernel timings (--moe)", rows);
    return 0;
  }

  // ---- prefill on tensor cores: MLA attention and the MoE grouped GEMM, mma.sync and wgmma ---------
  mla_prefill_rows(ctx, quick, rows);
  moe_prefill_rows(ctx, quick, gu, dn, zero_bias, rows);

  // ---- cuBLASLt: prefill GEMM and a batch-100 projection -----------------------------------------
  {
    Gemm gemm;
    auto run = [&](int M, int N, int K) {
      auto x = filled(ctx, int64_t(M) * K, bf, 600, 1.f);
      auto w = filled(ctx, int64_t(N) * K, bf, 601);
      DeviceBuffer y(size_t(M) * N * 2);
      return ds::bench::time_ms(s, [&] {
        GemmArgs a;
        a.x = x.data();
        a.ldx = K;
        a.w = w.data();
        a.ldw = K;
        a.y = y.data();
        a.ldy = N;
        a.M = M;
        a.N = N;
        a.K = K;
        gemm.run(a, s);
      }, reps);
    };
    rows.push_back({"cuBLASLt M=8192 N=12576 K=2304", run(8192, 12576, 2304), fl_floor(2.0 * 8192 * 12576 * 2304),
                    "prefill KDA in_proj, FLOP floor"});
    rows.push_back({"cuBLASLt M=100 N=12576 K=2304", run(100, 12576, 2304), bw_floor(12576.0 * 2304 * 2),
                    "decode B=100 KDA in_proj, weight floor"});
  }

  // ---- norm and sampling ------------------------------------------------------------------------
  {
    const int T = 8192;
    auto x = filled(ctx, int64_t(T) * D, bf, 700, 1.f);
    auto wn = filled(ctx, D, bf, 701);
    DeviceBuffer y(size_t(T) * D * 2);
    double ms = ds::bench::time_ms(s, [&] {
      RmsNormParams p;
      p.x = x.data();
      p.ldx = D;
      p.weight = wn.data();
      p.y = y.data();
      p.ldy = D;
      p.rows = T;
      p.dim = D;
      run_rmsnorm(p, bf, ctx);
    }, reps);
    rows.push_back({"rmsnorm 8192x2304 bf16", ms, bw_floor(2.0 * T * D * 2), ""});
  }
  for (int variant = 0; variant < 3; ++variant) {  // greedy; top-p by bisection; top-p by radix select
    const bool greedy = variant == 0;
    DeviceContext sctx = ctx;
    sctx.switches.sampling_radix = variant == 2;
    const int R = 100, V = 163840;
    auto logits = filled(ctx, int64_t(R) * V, DType::F32, 800, 8.f);
    std::vector<SampleRow> rp(R);
    for (int r = 0; r < R; ++r) {
      rp[size_t(r)].temperature = greedy ? 0.f : 1.f;
      rp[size_t(r)].top_p = greedy ? 1.f : 0.9f;
      rp[size_t(r)].u = 0.37;
    }
    DeviceBuffer drp(rp.size() * sizeof(SampleRow)), work(sampling_workspace_floats(R, V) * 4), tok(R * 4), lp(R * 4);
    DS_CUDA_CHECK(cudaMemcpy(drp.data(), rp.data(), drp.bytes(), cudaMemcpyHostToDevice));
    double ms = ds::bench::time_ms(s, [&] {
      SamplingParams p;
      p.logits = logits.as<float>();
      p.ld = V;
      p.rows = R;
      p.vocab = V;
      p.row_params = drp.as<SampleRow>();
      p.work = work.as<float>();
      p.out_token = tok.as<int32_t>();
      p.out_logprob = lp.as<float>();
      run_sampling(p, sctx);
    }, quick ? 3 : 10);
    rows.push_back({greedy ? "sampling 100 rows greedy"
                           : variant == 1 ? "sampling 100 rows T=1 top-p 0.9" : "sampling 100 rows T=1 top-p 0.9, radix", ms,
                    bw_floor(double(R) * V * 4 * 3), "floor: 3 passes over fp32 logits"});
  }
  ds::bench::mla_attention_rows(ctx, quick, rows);
  ds::bench::print_table("Kernel timings (H200 roofline: 4.3 TB/s, 790 TFLOP/s bf16)", rows);
  return 0;
}
