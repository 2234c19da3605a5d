// FP8 weight kernels on the H200 at the 48B config's decode and prefill shapes, against the bf16 path
// and the bandwidth floor of the bytes they read (weights + scales): the FP8 GEMV (dense projections at
// 1 and 8 rows; the MoE gate/up and down of one token's 9 experts out of 257), the FP8 grouped GEMM
// (MoE at 100 and 8192 tokens) and the online block quantizer.
//   bench_fp8 [--quick] [--dense-tiles]   (--dense-tiles: only the dense tile GEMMs, a small process for ncu)
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <tuple>
#include <vector>

#include "bench/gpu_bench_util.h"
#include "config/runtime_env.h"
#include "cuda/cuda_check.h"
#include "cuda/device_buffer.h"
#include "cuda/gemm.h"
#include "cuda/kernels/elementwise.h"
#include "cuda/kernels/fp8.h"
#include "cuda/kernels/gemv.h"
#include "cuda/kernels/moe_gemm.h"
#include "cuda/kernels/moe_gemm_fp8_wgmma.h"
#include "cuda/stream.h"

using namespace ds;
using namespace ds::gpu;
using ds::bench::Row;

namespace {

struct Fp8Weights {
  DeviceBuffer q, scale;
  int64_t rows = 0, K = 0, ld = 1;
  int rs = 7, ks = 7;
  int64_t scale_rows() const { return (rows + (int64_t(1) << rs) - 1) >> rs; }
  double bytes() const { return double(rows) * K + double(scale_rows()) * ld * 4; }
};

// [rows, K] random FP8 with 128x128 block scales (rs = ks = 7) or per-channel scales (0, 31).
Fp8Weights fp8(const DeviceContext& ctx, int64_t rows, int64_t K, int rs, int ks, uint64_t seed) {
  Fp8Weights w;
  w.rows = rows;
  w.K = K;
  w.rs = rs;
  w.ks = ks;
  w.ld = ks >= 31 ? 1 : (K + (int64_t(1) << ks) - 1) >> ks;
  w.q = DeviceBuffer(size_t(rows * K));
  w.scale = DeviceBuffer(size_t(w.scale_rows() * w.ld) * 4);
  Fp8Matrix m{w.q.as<uint8_t>(), w.scale.as<float>(), rows, K, w.ld, rs, ks};
  run_fill_fp8(m, w.scale_rows() * w.ld, 0.035f, seed, ctx);
  return w;
}

DeviceBuffer filled(const DeviceContext& ctx, int64_t n, DType t, uint64_t seed, float a = 0.05f) {
  DeviceBuffer b(size_t(n) * dtype_size(t));
  run_fill_uniform(b.data(), t, n, -a, a, seed, ctx);
  return b;
}

void set(GemvParams& p, const Fp8Weights& w) {
  p.w = w.q.data();
  p.w_scale = w.scale.as<float>();
  p.scale_ld = w.ld;
  p.scale_row_shift = w.rs;
  p.scale_k_shift = w.ks;
}

// The FP8 wgmma GEMM over one dense matrix (LayerStep::linear at 9..kFp8TileMaxRows rows) at the 48B
// config's projections of a batch-16 and a batch-100 decode step, as the model runs it (the x split launch,
// split-K and 64-token tiles by the defaults), then with split-K off and with 16-token tiles: the shapes
// whose ncu times sit furthest from their floors (docs/PERF.md, session 20). Copies rotated (HBM, not L2).
void dense_tiles(const DeviceContext& ctx0, int reps, std::vector<Row>& rows) {
  struct Shape {
    const char* name;
    int N, K, copies;
    bool accumulate;
  };
  const DType bf = DType::BF16;
  const int sms = ctx0.num_sms();
  DeviceBuffer partials(size_t(2) * sms * 32 * 128 * 4), counters(size_t(sms) * 4);
  DS_CUDA_CHECK(cudaMemset(counters.data(), 0, counters.bytes()));
  DeviceBuffer split(x_split_bytes(kFp8TileMaxRows, 4096));
  for (const Shape& d : {Shape{"KDA in_proj 12544x2304", 12544, 2304, 6, false},
                         Shape{"o_proj 2304x4096 (+=)", 2304, 4096, 12, true},
                         Shape{"shared gate_up 2048x2304", 2048, 2304, 24, false},
                         Shape{"shared down 2304x1024 (+=)", 2304, 1024, 24, true}}) {
    std::vector<Fp8Weights> ws;
    for (int c = 0; c < d.copies; ++c) ws.push_back(fp8(ctx0, d.N, d.K, 7, 7, 70 + c));
    for (int M : {16, 100}) {
      auto x = filled(ctx0, int64_t(M) * d.K, bf, 4, 1.f);
      DeviceBuffer y(size_t(M) * d.N * 2);
      DS_CUDA_CHECK(cudaMemset(y.data(), 0, y.bytes()));
      for (int variant = 0; variant < 3; ++variant) {  // 0: the defaults; 1: split-K off; 2: 16-token tiles
        if (M == 16 && variant == 2) continue;
        DeviceContext ctx = ctx0;
        ctx.switches.fp8_split_k = variant != 1;
        const int t64 = variant == 2 ? 0 : ctx.switches.fp8_dense_tile64_rows;
        MoeGemmParams g;
        g.x = x.data();
        g.ldx = d.K;
        g.y = y.data();
        g.ldy = d.N;
        g.N = d.N;
        g.K = d.K;
        g.dense_rows = g.max_rows = M;
        g.accumulate = d.accumulate;
        g.x_split = split.data();
        g.x_split_rows = M;
        g.splitk_partials = partials.as<float>();
        g.splitk_capacity = int64_t(2) * sms * 32 * 128;
        g.splitk_counters = counters.as<int>();
        g.splitk_items = sms;
        g.tile_tokens = t64 > 0 && M >= t64 ? 64 : 16;  // LayerStep::linear's choice
        int i = 0;
        const double ms = ds::bench::time_ms(ctx.stream, [&] {
          const Fp8Weights& w = ws[size_t(i++ % d.copies)];
          g.w = w.q.data();
          g.w_scale = w.scale.as<float>();
          g.scale_ld = w.ld;
          g.scale_row_shift = w.rs;
          g.scale_k_shift = w.ks;
          run_moe_gemm(g, ctx);
        }, reps);
        const double bytes = ws[0].bytes() + double(M) * d.K * 2 + double(M) * d.N * 2 * (d.accumulate ? 2 : 1);
        const double mma_ms = 2.0 * 2 * M * double(d.N) * d.K / (2 * ds::bench::kBf16Flops) * 1e3;
        char nm[128], note[96];
        std::snprintf(nm, sizeof nm, "fp8 tile %s M=%d%s", d.name, M,
                      variant == 1 ? " no split-K" : variant == 2 ? " 16-token tiles" : "");
        std::snprintf(nm + std::strlen(nm), sizeof nm - std::strlen(nm), " (t%d)", g.tile_tokens);
        std::snprintf(note, sizeof note, "MMA floor %.4f ms", mma_ms);
        rows.push_back({nm, ms, bytes / ds::bench::kBandwidth * 1e3, note});
      }
    }
  }
}

// cuBLASLt's block-scaled FP8 GEMM (gemm.h: w per 128 x 128 block, x per row and 128 columns by
// run_quantize_act_fp8) at the dense projections' shapes, x's hi part alone and hi + lo (two GEMMs, the second
// accumulating), beside the bf16 GEMM on the same weights dequantized and, at prefill sizes, today's path there
// (LayerStep::linear: dequantize, then the bf16 GEMM). Times include the activation launch; the note gives the
// output's relative L2 against the bf16 product (random block scales and a magnitude per row and 128 columns
// of x, so a wrong scale layout shows as an O(1) error).
void cublas_fp8(const DeviceContext& ctx, int reps, std::vector<Row>& rows) {
  struct Shape {
    const char* name;
    int N, K;
  };
  const DType bf = DType::BF16;
  Gemm gemm;
  for (const Shape& d : {Shape{"KDA in_proj 12544x2304", 12544, 2304}, Shape{"o_proj 2304x4096", 2304, 4096},
                         Shape{"shared gate_up 2048x2304", 2048, 2304}, Shape{"shared down 2304x1024", 2304, 1024}}) {
    const int64_t ld = fp8_block_scale_ld(d.K), srows = (d.N + 127) / 128;
    DeviceBuffer q(size_t(d.N) * d.K), sc(size_t(srows * ld) * 4), wbf(size_t(d.N) * d.K * 2);
    Fp8Matrix m{q.as<uint8_t>(), sc.as<float>(), d.N, d.K, ld, 7, 7};
    run_fill_fp8(m, srows * ld, 0.035f, 90, ctx);
    run_fill_uniform(sc.data(), DType::F32, srows * ld, 0.5f * 0.035f / 448, 2.f * 0.035f / 448, 91, ctx);
    run_dequantize_fp8(m, wbf.data(), bf, d.K, ctx);
    for (int M : {16, 100, 2048, 8192}) {
      std::vector<uint16_t> xh(size_t(M) * d.K);
      uint64_t st = 12345;
      for (int r = 0; r < M; ++r)
        for (int k = 0; k < d.K; ++k) {
          st = st * 6364136223846793005ull + 1442695040888963407ull;
          const float u = float(st >> 40) * (1.f / 16777216.f) * 2.f - 1.f;
          xh[size_t(r) * d.K + k] = f32_to_bf16(u * std::ldexp(1.f, int((r * 7 + (k >> 7) * 3) % 9) - 4));
        }
      DeviceBuffer x(xh.size() * 2), xq(size_t(M) * d.K), xlo(size_t(M) * d.K), xs(size_t(M) * (d.K / 128) * 4);
      DS_CUDA_CHECK(cudaMemcpy(x.data(), xh.data(), x.bytes(), cudaMemcpyHostToDevice));
      DeviceBuffer yref(size_t(M) * d.N * 2), y(size_t(M) * d.N * 2), scratch(size_t(d.N) * d.K * 2);
      GemmArgs b;
      b.x = x.data();
      b.ldx = d.K;
      b.w = wbf.data();
      b.ldw = d.K;
      b.y = yref.data();
      b.ldy = d.N;
      b.M = M;
      b.N = d.N;
      b.K = d.K;
      GemmArgs f = b;
      f.x = xq.data();
      f.w = q.data();
      f.y = y.data();
      f.x_dtype = f.w_dtype = DType::F8_E4M3;
      f.w_scale = sc.as<float>();
      f.x_scale = xs.as<float>();
      ActQuantParams a;
      a.x = x.data();
      a.ldx = d.K;
      a.rows = M;
      a.K = d.K;
      a.hi = xq.as<uint8_t>();
      a.scale = xs.as<float>();
      auto rel = [&]() {
        std::vector<uint16_t> r(size_t(M) * d.N), o(r.size());
        DS_CUDA_CHECK(cudaMemcpy(r.data(), yref.data(), yref.bytes(), cudaMemcpyDeviceToHost));
        DS_CUDA_CHECK(cudaMemcpy(o.data(), y.data(), y.bytes(), cudaMemcpyDeviceToHost));
        double num = 0, den = 0;
        for (size_t i = 0; i < r.size(); ++i) {
          const double e = double(bf16_to_f32(o[i])) - bf16_to_f32(r[i]);
          num += e * e;
          den += double(bf16_to_f32(r[i])) * bf16_to_f32(r[i]);
        }
        return std::sqrt(num / std::max(den, 1e-30));
      };
      char nm[128], note[96];
      try {
        const double ms_bf = ds::bench::time_ms(ctx.stream, [&] { gemm.run(b, ctx.stream); }, reps);
        std::snprintf(nm, sizeof nm, "cublasLt bf16 %s M=%d", d.name, M);
        rows.push_back({nm, ms_bf, (double(d.N) * d.K * 2 + double(M) * (d.K + d.N) * 2) / ds::bench::kBandwidth * 1e3,
                        "weights dequantized beforehand"});
        if (M >= 2048) {
          const double ms = ds::bench::time_ms(ctx.stream, [&] {
            run_dequantize_fp8(m, scratch.data(), bf, d.K, ctx);
            GemmArgs c = b;
            c.w = scratch.data();
            gemm.run(c, ctx.stream);
          }, reps);
          std::snprintf(nm, sizeof nm, "dequantize + bf16 %s M=%d", d.name, M);
          rows.push_back({nm, ms, 2.0 * M * double(d.N) * d.K / ds::bench::kBf16Flops * 1e3, "today's prefill path"});
        }
        const double ms_hi = ds::bench::time_ms(ctx.stream, [&] {
          run_quantize_act_fp8(a, bf, ctx);
          gemm.run(f, ctx.stream);
        }, reps);
        std::snprintf(nm, sizeof nm, "cublasLt fp8 blk hi %s M=%d", d.name, M);
        std::snprintf(note, sizeof note, "rel L2 %.4f vs bf16", rel());
        rows.push_back({nm, ms_hi, (double(d.N) * d.K + double(M) * d.K * 3 + double(M) * d.N * 2) /
                                       ds::bench::kBandwidth * 1e3, note});
        ActQuantParams a2 = a;
        a2.lo = xlo.as<uint8_t>();
        GemmArgs f2 = f;
        f2.x = xlo.data();
        f2.beta = 1.f;
        const double ms_hl = ds::bench::time_ms(ctx.stream, [&] {
          run_quantize_act_fp8(a2, bf, ctx);
          gemm.run(f, ctx.stream);
          gemm.run(f2, ctx.stream);
        }, reps);
        std::snprintf(nm, sizeof nm, "cublasLt fp8 blk hi+lo %s M=%d", d.name, M);
        std::snprintf(note, sizeof note, "rel L2 %.4f vs bf16", rel());
        rows.push_back({nm, ms_hl, (double(d.N) * d.K + double(M) * d.K * 4 + double(M) * d.N * 2) /
                                       ds::bench::kBandwidth * 1e3, note});
      } catch (const std::exception& e) {
        std::snprintf(nm, sizeof nm, "cublasLt fp8 %s M=%d", d.name, M);
        rows.push_back({nm, 0, 0, e.what()});
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, dense_only = false;
  for (int i = 1; i < argc; ++i) {
    quick |= std::strcmp(argv[i], "--quick") == 0;
    dense_only |= std::strcmp(argv[i], "--dense-tiles") == 0;
  }
  const int reps = quick ? 10 : 30;
  Stream st;
  const DeviceContext ctx = make_device_context(st, cuda_env());
  const DType bf = DType::BF16;
  std::vector<Row> rows;
  auto bw_floor = [](double bytes) { return bytes / ds::bench::kBandwidth * 1e3; };
  std::printf("device: %s\n", device_info().summary().c_str());
  DeviceContext mma_ctx = ctx;  // FP8 GEMVs at one row on the tensor cores (gemv_fp8_mma.cu)
  mma_ctx.switches.fp8_mma_gemv = true;

  if (dense_only) {
    dense_tiles(ctx, reps, rows);
    cublas_fp8(ctx, reps, rows);
    ds::bench::print_table("FP8 dense tile GEMMs (floor: bytes at 4.3 TB/s; note: the hi/lo MMAs at 2 x the bf16 rate)",
                           rows);
    return 0;
  }
  dense_tiles(ctx, reps, rows);
  cublas_fp8(ctx, reps, rows);

  // ---- dense projections (copies rotated so the weights come from HBM, not L2) ----------------------
  struct Dense {
    const char* name;
    int N, K, copies;
  };
  for (const Dense& d : {Dense{"KDA in_proj q|k|v|f_a|g_a 12544x2304", 12544, 2304, 6},
                         Dense{"o_proj 2304x4096", 2304, 4096, 12}, Dense{"dense gate_up 18432x2304", 18432, 2304, 4},
                         Dense{"MLA q_proj 6144x2304", 6144, 2304, 8}, Dense{"big 163840x2304", 163840, 2304, 1}})
    for (auto [rs, ks, lay] : {std::tuple{7, 7, "block128"}, std::tuple{0, 31, "channel"}})
      for (int M : {1, 8})
      // form at M = 1: 2 the tensor cores (switches.fp8_mma_gemv), 1 the cp.async ring, 0 the FP8 row-pair kernel
      for (int form = M == 1 ? 2 : 0; form >= 0; --form) {
        std::vector<Fp8Weights> ws;
        for (int c = 0; c < d.copies; ++c) ws.push_back(fp8(ctx, d.N, d.K, rs, ks, 10 + c));
        auto x = filled(ctx, int64_t(M) * d.K, bf, 1, 1.f);
        DeviceBuffer y(size_t(M) * d.N * 2);
        int i = 0;
        const double ms = ds::bench::time_ms(ctx.stream, [&] {
          GemvParams p;
          p.x = x.data();
          p.ldx = d.K;
          set(p, ws[size_t(i++ % d.copies)]);
          p.y = y.data();
          p.ldy = d.N;
          p.N = d.N;
          p.K = d.K;
          p.M = M;
          p.async_stream = form > 0;
          run_gemv(p, bf, form == 2 ? mma_ctx : ctx);
        }, reps);
        char nm[128];
        std::snprintf(nm, sizeof nm, "fp8 gemv %s M=%d %s%s", d.name, M, lay,
                      M == 1 ? (form == 2 ? " mma" : form ? " ring" : " row-pair") : "");
        rows.push_back({nm, ms, bw_floor(ws[0].bytes()), ""});
      }

  // ---- MoE at batch 1: 9 of 257 experts (gate/up SiLU, then down) ---------------------------------
  const int E = 257, D = 2304, I = 1024;
  for (auto [rs, ks, lay] : {std::tuple{7, 7, "block128"}, std::tuple{0, 31, "channel"}}) {
    auto gu = fp8(ctx, int64_t(E) * 2 * I, D, rs, ks, 50);
    auto dn = fp8(ctx, int64_t(E) * D, I, rs, ks, 51);
    auto x = filled(ctx, D, bf, 2, 1.f);
    DeviceBuffer act(size_t(9) * I * 2), out(size_t(9) * D * 2);
    const int variants = 16;
    std::vector<DeviceBuffer> ids;
    for (int v = 0; v < variants; ++v) {
      std::vector<int32_t> h(9);
      for (int j = 0; j < 8; ++j) h[size_t(j)] = (v * 37 + j * 31) % 256;
      h[8] = 256;
      DeviceBuffer b(9 * 4);
      DS_CUDA_CHECK(cudaMemcpy(b.data(), h.data(), 36, cudaMemcpyHostToDevice));
      ids.push_back(std::move(b));
    }
    int i = 0;
    GemvParams g;
    g.x = x.data();
    g.ldx = D;
    set(g, gu);
    g.w_matrix_stride = int64_t(2) * I * D;
    g.scale_matrix_stride = ((int64_t(2) * I) >> rs) * gu.ld;
    g.y = act.data();
    g.ldy = I;
    g.y_group_stride = I;
    g.N = I;
    g.K = D;
    g.M = 1;
    g.num_groups = 9;
    g.epi = GemvEpilogue::SiluMul;
    GemvParams d = moe_down_gemv_params(g, dn.q.data(), out.data(), D);
    set(d, dn);
    d.x_group_stride = I;
    d.y_group_stride = D;
    d.scale_matrix_stride = (int64_t(D) >> rs) * dn.ld;
    g.async_stream = false;  // the FP8 row-pair kernel, then (below) the cp.async ring
    const double ms_gu_rp = ds::bench::time_ms(ctx.stream, [&] {
      g.group_weight = ids[size_t(i++ % variants)].as<int32_t>();
      run_gemv(g, bf, ctx);
    }, reps);
    g.async_stream = true;
    const double ms_gu = ds::bench::time_ms(ctx.stream, [&] {
      g.group_weight = ids[size_t(i++ % variants)].as<int32_t>();
      run_gemv(g, bf, ctx);
    }, reps);
    const double ms_gu_mma = ds::bench::time_ms(ctx.stream, [&] {
      g.group_weight = ids[size_t(i++ % variants)].as<int32_t>();
      run_gemv(g, bf, mma_ctx);
    }, reps);
    const double ms_dn = ds::bench::time_ms(ctx.stream, [&] {
      d.group_weight = ids[size_t(i++ % variants)].as<int32_t>();
      run_gemv(d, bf, ctx);
    }, reps);
    // down + combine (the model's batch-1 form): CUDA cores, then the tensor cores
    std::vector<int32_t> pos_h = {0, 1, 2, 3, 4, 5, 6, 7, 8};
    std::vector<float> wts_h(9, 0.125f);
    DeviceBuffer pos(36), wts(36), resid(size_t(D) * 2);
    DS_CUDA_CHECK(cudaMemcpy(pos.data(), pos_h.data(), 36, cudaMemcpyHostToDevice));
    DS_CUDA_CHECK(cudaMemcpy(wts.data(), wts_h.data(), 36, cudaMemcpyHostToDevice));
    DS_CUDA_CHECK(cudaMemset(resid.data(), 0, resid.bytes()));
    MoeDownCombineParams dc = moe_down_combine_params(g, pos.as<int32_t>(), nullptr, wts.as<float>(), 9, dn.q.data(),
                                                      resid.data());
    dc.w_scale = dn.scale.as<float>();
    dc.scale_ld = dn.ld;
    dc.scale_row_shift = dn.rs;
    dc.scale_k_shift = dn.ks;
    dc.scale_matrix_stride = (int64_t(D) >> rs) * dn.ld;
    double ms_dc[2];
    for (int on = 0; on < 2; ++on)
      ms_dc[on] = ds::bench::time_ms(ctx.stream, [&] {
        dc.ids = ids[size_t(i++ % variants)].as<int32_t>();
        run_moe_down_combine(dc, bf, on ? mma_ctx : ctx);
      }, reps);
    char nm[128];
    for (int on = 0; on < 2; ++on) {
      std::snprintf(nm, sizeof nm, "fp8 MoE B=1 down+combine 9x2304x1024 %s%s", lay, on ? " mma" : "");
      rows.push_back({nm, ms_dc[on], bw_floor(9.0 * (double(D) * I) * (1 + 4.0 / 16384)), ""});
    }
    std::snprintf(nm, sizeof nm, "fp8 MoE B=1 gate/up 9x2048x2304 %s row-pair", lay);
    rows.push_back({nm, ms_gu_rp, bw_floor(9.0 * (2 * I * double(D)) * (1 + 4.0 / 16384)), ""});
    std::snprintf(nm, sizeof nm, "fp8 MoE B=1 gate/up 9x2048x2304 %s ring", lay);
    rows.push_back({nm, ms_gu, bw_floor(9.0 * (2 * I * double(D)) * (1 + 4.0 / 16384)), ""});
    std::snprintf(nm, sizeof nm, "fp8 MoE B=1 gate/up 9x2048x2304 %s mma", lay);
    rows.push_back({nm, ms_gu_mma, bw_floor(9.0 * (2 * I * double(D)) * (1 + 4.0 / 16384)), ""});
    std::snprintf(nm, sizeof nm, "fp8 MoE B=1 down 9x2304x1024 %s", lay);
    rows.push_back({nm, ms_dn, bw_floor(9.0 * (double(D) * I) * (1 + 4.0 / 16384)), ""});
  }

  // ---- online quantization of one expert-sized and one big matrix -----------------------------------
  {
    auto src = filled(ctx, int64_t(18432) * 2304, bf, 3);
    DeviceBuffer q(size_t(18432) * 2304), s(size_t(144 * 18) * 4);
    Fp8Matrix m{q.as<uint8_t>(), s.as<float>(), 18432, 2304, 18, 7, 7};
    const double ms = ds::bench::time_ms(ctx.stream, [&] { run_quantize_fp8(src.data(), bf, m, ctx); }, reps);
    rows.push_back({"quantize 18432x2304 bf16 -> fp8 128x128", ms, bw_floor(18432.0 * 2304 * 3), ""});
  }
  ds::bench::print_table("FP8 kernel timings (H200 roofline: 4.3 TB/s; floor = weight + scale bytes)", rows);
  return 0;
}
