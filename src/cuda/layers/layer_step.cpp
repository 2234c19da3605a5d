#include "cuda/layers/layer_step.h"

#include "core/error.h"
#include "cuda/kernels/fp8.h"
#include "cuda/kernels/gemv.h"
#include "cuda/kernels/int4.h"
#include "cuda/kernels/moe_gemm.h"
#include "cuda/kernels/moe_gemm_fp8_wgmma.h"
#include "cuda/kernels/norm.h"

namespace ds::gpu {

const void* LayerStep::norm_into_x(const void* x, int64_t ldx, const void* weight, int rows, int dim,
                                   void* split) const {
  RmsNormParams n;
  n.x = x;
  n.ldx = ldx;
  n.weight = weight;
  n.y = ws.x;
  n.ldy = dim;
  n.rows = rows;
  n.dim = dim;
  n.eps = cfg.rms_norm_eps;
  n.split = split;
  run_rmsnorm(n, act, ctx);
  return ws.x;
}

void LayerStep::linear(const void* x, int64_t ldx, const WeightView& w, int N, int K, void* y, int64_t ldy, int M,
                       bool accumulate, bool out_f32, const void* norm, const int32_t* x_rows,
                       const void* x_split) const {
  if (M == 0) return;
  if (w.tail && w.tail_row0 < N) {  // the high-precision rows: a product of their own into columns tail_row0..
    WeightView t;
    t.ptr = w.tail;
    t.dtype = act;
    const int n0 = w.tail_row0;
    linear(x, ldx, t, N - n0, K, off(y, n0, out_f32 ? DType::F32 : act), ldy, M, accumulate, out_f32, norm, x_rows);
    WeightView main = w;
    main.tail = nullptr;
    linear(x, ldx, main, n0, K, y, ldy, M, accumulate, out_f32, norm, x_rows, x_split);
    return;
  }
  const bool quant = w.fp8() || w.int4();
  // FP8 at GEMV-sized batches from switches.fp8_tile_min_rows rows on (off by default until measured): the FP8
  // wgmma kernel when its 64-row blocks fill the GPU (wide projections: the KDA in_proj) or split-K is on
  // (switches.fp8_split_k spreads the narrow ones); a fused RMSNorm
  // then runs first, into ws.x (free at these sizes: the layers fuse their norms into the GEMVs)
  const bool small_tile = w.fp8() && act == DType::BF16 && !out_f32 && !x_rows && M <= kFp8GemvMaxRows &&
                          M >= ctx.switches.fp8_tile_min_rows && ctx.switches.fp8_xsplit && K % 128 == 0 &&
                          ((N + 63) / 64 >= ctx.num_sms() || ctx.switches.fp8_split_k);
  // INT4 beyond the INT4 GEMV's rows with switches.int4_dense (INT4 views beside the experts' shared slice, which
  // without the switch keeps its earlier path): the fused norm first, into ws.x, since the tiles and the GEMM below
  // read normalised rows
  const bool int4_tiles = w.int4() && ctx.switches.int4_dense;
  const bool int4_rows = int4_tiles && M > kFp8GemvMaxRows && !x_rows;
  if ((small_tile || int4_rows) && norm) {
    x = norm_into_x(x, ldx, norm, M, K);
    ldx = K;
    norm = nullptr;
  }
  const bool fp8_gemv = quant && !small_tile && (M <= kFp8GemvMaxRows || norm || x_rows);  // fused prologues: GEMV
  // narrow projections in the activation dtype (router, kv_a_proj): the GEMV spreads their few rows over
  // every SM, where cuBLASLt's tiles would leave most idle (switches.narrow_gemv_rows)
  const bool narrow_gemv = !quant && w.dtype == act && N <= 1024 && M <= ctx.switches.narrow_gemv_rows;
  if ((M <= kGemvMaxRows && !small_tile) || narrow_gemv || fp8_gemv || (quant && !dequant_scratch)) {
    GemvParams g;
    g.x = x;
    g.ldx = ldx;
    g.x_rows = x_rows;
    g.norm_weight = norm;
    g.norm_eps = cfg.rms_norm_eps;
    set_gemv_weights(g, w);
    g.y = y;
    g.ldy = ldy;
    g.y_f32 = out_f32;
    g.N = N;
    g.K = K;
    g.M = M;
    g.num_groups = 1;
    g.epi = accumulate ? GemvEpilogue::Accumulate : GemvEpilogue::Store;
    run_gemv(g, act, ctx);
    return;
  }
  DS_CHECK(!norm && !x_rows, "linear: fused norm / row gather only on the GEMV path");
  if (!out_f32 && linear_fp8_cublas(x, ldx, w, N, K, y, ldy, M, accumulate)) return;
  if ((w.fp8() || int4_tiles) && ctx.switches.fp8_dense_tile && act == DType::BF16 && !out_f32 && M <= kFp8TileMaxRows &&
      K % 64 == 0 && w.scale_k_shift >= 4 && ldx % 8 == 0 && ldy % 8 == 0) {
    // FP8 (or INT4) at 9..160 rows: the grouped GEMM's FP8 kernel over one matrix (moe_gemm.h, dense_rows); INT4
    // only on its x-split wgmma form (the other kernels take no INT4: else the dequantized GEMM below)
    MoeGemmParams g;
    g.x = x;
    g.ldx = ldx;
    set_gemv_weights(g, w);
    g.y = y;
    g.ldy = ldy;
    g.N = N;
    g.K = K;
    g.dense_rows = g.max_rows = M;
    g.accumulate = accumulate;
    g.x_split = x_split ? const_cast<void*>(x_split) : ws.x_split;  // on Hopper: x split for the FP8 tensor cores
    g.x_split_ready = x_split != nullptr;                          // (moe_gemm.h); given: the norm's
    g.x_split_rows = M;
    g.splitk_partials = ws.splitk_partials;
    g.splitk_capacity = ws.splitk_capacity;
    g.splitk_counters = ws.splitk_counters;
    g.splitk_items = ws.splitk_items;
    // 64-token tiles from switches.fp8_dense_tile64_rows rows (each weight tile read by a quarter of the
    // CTAs), else 16
    const bool fits = x_split || x_split_bytes(M, K) <= ws.x_split_capacity;
    auto split_at = [&](int tile) {
      g.tile_tokens = tile;
      return fits && moe_gemm_fp8_wgmma_applies(g, ctx);
    };
    const int t64 = ctx.switches.fp8_dense_tile64_rows;
    const bool split = (t64 > 0 && M >= t64 && split_at(64)) || split_at(16);
    if (split || !w.int4()) {
      if (!split) g.x_split = nullptr;
      if (!split && M > 16) g.tile_tokens = 64;
      run_moe_gemm(g, ctx);
      return;
    }
  }
  GemmArgs a;
  a.x = x;
  a.ldx = ldx;
  a.w = w.ptr;
  if (w.fp8()) {  // dequantize into the scratch, then the GEMM in the activation dtype
    Fp8Matrix fm;
    fm.q = static_cast<uint8_t*>(const_cast<void*>(w.ptr));
    fm.scale = const_cast<float*>(w.scale);
    fm.rows = N;
    fm.K = K;
    fm.ld = w.scale_ld;
    fm.row_shift = w.scale_row_shift;
    fm.k_shift = w.scale_k_shift;
    run_dequantize_fp8(fm, dequant_scratch, act, K, ctx);
    a.w = dequant_scratch;
  } else if (w.int4()) {  // the same with INT4 weights
    Int4Matrix im{static_cast<uint8_t*>(const_cast<void*>(w.ptr)), const_cast<float*>(w.scale),
                  const_cast<float*>(w.zero), N, K, w.scale_ld, w.scale_k_shift};
    run_dequantize_int4(im, dequant_scratch, act, K, ctx);
    a.w = dequant_scratch;
  }
  a.ldw = K;
  a.y = y;
  a.ldy = ldy;
  a.x_dtype = act;
  a.w_dtype = quant ? act : w.dtype;
  a.y_dtype = out_f32 ? DType::F32 : act;
  a.M = M;
  a.N = N;
  a.K = K;
  a.beta = accumulate ? 1.f : 0.f;
  gemm.run(a, ctx.stream);
}

// FP8 weights with 128 x 128 block scales in cuBLASLt's layout (Fp8Plan::pad4): x quantized per row and 128
// columns into the workspace (hi; at up to kFp8TileMaxRows rows also lo, mode 2), then the block-scaled FP8 GEMM
// (the lo part's a second one, accumulating).
bool LayerStep::linear_fp8_cublas(const void* x, int64_t ldx, const WeightView& w, int N, int K, void* y, int64_t ldy,
                                  int M, bool accumulate) const {
  const int mode = ctx.switches.fp8_cublas;
  const bool decode_rows = M <= kFp8TileMaxRows;
  const bool with_lo = decode_rows && mode == 2;  // (mode 3: x's hi part alone, W8A8)
  if (mode == 0 || (decode_rows && (mode < 2 || N < ctx.switches.fp8_cublas_decode_min_n ||
                                     M < ctx.switches.fp8_cublas_decode_min_rows)))
    return false;  // (decode-sized launches: modes 2 and 3, outputs wide and batches tall enough)
  if (!w.fp8() || act != DType::BF16 || w.scale_row_shift != 7 || w.scale_k_shift != 7 ||
      w.scale_ld != fp8_block_scale_ld(K) || K % 128 != 0 || N % 16 != 0 || ldy % 8 != 0 || ws.fp8_act_hi == nullptr ||
      M > ws.fp8_act_rows || K > ws.fp8_act_k || (with_lo && M > ws.fp8_act_lo_rows))
    return false;
  GemmArgs g;
  g.x = ws.fp8_act_hi;
  g.ldx = K;
  g.w = w.ptr;
  g.ldw = K;
  g.y = y;
  g.ldy = ldy;
  g.x_dtype = g.w_dtype = DType::F8_E4M3;
  g.y_dtype = DType::BF16;
  g.M = M;
  g.N = N;
  g.K = K;
  g.beta = accumulate ? 1.f : 0.f;
  g.w_scale = w.scale;
  g.x_scale = ws.fp8_act_scale;
  GemmArgs g_lo = g;  // the lo part's product, accumulating
  g_lo.x = ws.fp8_act_lo;
  g_lo.beta = 1.f;
  if (!gemm.supports(g) || (with_lo && !gemm.supports(g_lo))) return false;  // (cuBLASLt without an algorithm)
  ActQuantParams a;
  a.x = x;
  a.ldx = ldx;
  a.rows = M;
  a.K = K;
  a.hi = ws.fp8_act_hi;
  a.lo = with_lo ? ws.fp8_act_lo : nullptr;
  a.scale = ws.fp8_act_scale;
  run_quantize_act_fp8(a, act, ctx);
  gemm.run(g, ctx.stream);
  if (with_lo) gemm.run(g_lo, ctx.stream);
  return true;
}

}  // namespace ds::gpu
