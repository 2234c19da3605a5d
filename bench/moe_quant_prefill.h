// Quantized MoE prefill rows of bench_kernels (issue 17): the experts of one 8,192-token step with FP8
// (channel scales) and INT4 (group 128, symmetric) weights on the FP8 wgmma kernel, whose x split then covers
// every token and pair, at 16- and 64-token tiles (DELTASERVE_CUDA_XSPLIT_PREFILL_TILE), and FP8 on the
// mma.sync 64-token tiles (the FP8 default at prefill) for comparison. Floor: the FLOPs at the bf16 peak
// (the x split doubles the FP8 MMAs, so the FP8 peak buys no more than bf16's).
#pragma once
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "cuda/device_buffer.h"
#include "cuda/device_context.h"
#include "cuda/kernels/fp8.h"
#include "cuda/kernels/int4.h"
#include "cuda/kernels/moe_gemm.h"
#include "cuda/kernels/moe_gemm_fp8_wgmma.h"
#include "cuda/kernels/moe_route.h"
#include "gpu_bench_util.h"

namespace ds::bench {

// g: the bf16 gate/up launch of the step (64-token tiles, routing done), E experts of width I over D.
inline void moe_quant_prefill_rows(const gpu::DeviceContext& ctx, bool quick, const gpu::MoeGemmParams& g, int E,
                                   int T, int pairs, std::vector<Row>& rows,
                                   const std::function<double(double)>& fl_floor,
                                   const std::function<std::string(double, double)>& note) {
  using gpu::DeviceBuffer;
  const int D = int(g.K), I = int(g.N);
  const int reps = quick ? 5 : 10;
  const double flops = 2.0 * pairs * 3.0 * I * D;
  DeviceBuffer split(gpu::x_split_bytes(std::max<int64_t>(T, pairs), std::max(D, I)));
  // FP8 channel scales: [E, 2I, D] and [E, D, I] e4m3, one fp32 scale a row
  DeviceBuffer q_gu(size_t(E) * 2 * I * D), s_gu(size_t(E) * 2 * I * 4), q_dn(size_t(E) * D * I), s_dn(size_t(E) * D * 4);
  gpu::run_fill_fp8({q_gu.as<uint8_t>(), s_gu.as<float>(), int64_t(E) * 2 * I, D, 1, 0, 31}, int64_t(E) * 2 * I, 0.05f, 81, ctx);
  gpu::run_fill_fp8({q_dn.as<uint8_t>(), s_dn.as<float>(), int64_t(E) * D, I, 1, 0, 31}, int64_t(E) * D, 0.05f, 82, ctx);
  // INT4 group 128 symmetric
  DeviceBuffer n_gu(size_t(E) * 2 * I * D / 2), c_gu(size_t(E) * 2 * I * (D / 128) * 4);
  DeviceBuffer n_dn(size_t(E) * D * I / 2), c_dn(size_t(E) * D * (I / 128) * 4);
  gpu::run_fill_int4({n_gu.as<uint8_t>(), c_gu.as<float>(), nullptr, int64_t(E) * 2 * I, D, D / 128, 7},
                     int64_t(E) * 2 * I * (D / 128), 0.05f, 83, ctx);
  gpu::run_fill_int4({n_dn.as<uint8_t>(), c_dn.as<float>(), nullptr, int64_t(E) * D, I, I / 128, 7},
                     int64_t(E) * D * (I / 128), 0.05f, 84, ctx);
  DeviceBuffer act(size_t(pairs) * I * 2), out(size_t(pairs) * D * 2);
  for (int form = 0; form < 6; ++form) {  // FP8 mma.sync 64; FP8 wgmma 16 / 64; INT4 wgmma 16 / 64; FP8 64 TMA
    const bool int4 = form == 3 || form == 4, xsplit = form > 0;
    const int tile = form == 1 || form == 3 ? 16 : 64;
    gpu::MoeGemmParams gu = g;
    gu.tile_tokens = tile;
    gu.y = act.data();
    gu.w = int4 ? n_gu.data() : q_gu.data();
    gu.w_int4 = int4;
    gu.w_scale = int4 ? c_gu.as<float>() : s_gu.as<float>();
    gu.scale_ld = int4 ? D / 128 : 1;
    gu.scale_k_shift = int4 ? 7 : 31;
    gu.scale_matrix_stride = int4 ? int64_t(2) * I * (D / 128) : int64_t(2) * I;
    gu.w_matrix_stride = int64_t(2) * I * D;
    gu.x_split = xsplit ? split.data() : nullptr;
    gu.x_split_rows = xsplit ? T : 0;
    gpu::MoeGemmParams dn = gpu::moe_down_gemm_params(gu, int4 ? n_dn.data() : q_dn.data(), out.data(), D);
    dn.w_int4 = int4;
    dn.w_scale = int4 ? c_dn.as<float>() : s_dn.as<float>();
    dn.scale_ld = int4 ? I / 128 : 1;
    dn.scale_k_shift = int4 ? 7 : 31;
    dn.scale_matrix_stride = int4 ? int64_t(D) * (I / 128) : int64_t(D);
    gpu::DeviceContext c = ctx;
    c.switches.fp8_xsplit = xsplit;
    c.switches.fp8_tma = form == 5;  // the weight rows by TMA
    if (xsplit && !(gpu::moe_gemm_fp8_wgmma_applies(gu, c) && gpu::moe_gemm_fp8_wgmma_applies(dn, c))) continue;
    const double ms = time_ms(ctx.stream, [&] {
      gpu::run_moe_gemm(gu, c);
      gpu::run_moe_gemm(dn, c);
    }, reps);
    const char* names[] = {"FP8 channel, mma.sync 64-token tiles", "FP8 channel, x split + wgmma, 16-token tiles",
                           "FP8 channel, x split + wgmma, 64-token tiles", "INT4 g128, x split + wgmma, 16-token tiles",
                           "INT4 g128, x split + wgmma, 64-token tiles",
                           "FP8 channel, x split + wgmma, 64-token tiles, TMA weights"};
    char nm[112];
    std::snprintf(nm, sizeof nm, "MoE prefill T=%d experts %s", T, names[form]);
    rows.push_back({nm, ms, fl_floor(flops), note(flops, ms)});
  }
}

}  // namespace ds::bench
