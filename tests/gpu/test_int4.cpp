// INT4 W4A16 weights on the GPU: the dequantizer against model/quant_int4.h (exact), the INT4 GEMV
// (every epilogue, groups of 32 and 128, symmetric and with zero points, 1..13 rows, K tiled, grouped
// with gathered rows) and the batch-1 MoE down projection + combine against the CPU on the dequantized
// weights. Weights: random matrices quantized with model/quant_int4.h's quantize_int4 (F32 scales); the
// packed int32 words are the device's nibble bytes as they are (little-endian).
#include <gtest/gtest.h>

#include <cmath>
#include <tuple>

#include "cuda/kernels/gemv.h"
#include "cuda/kernels/int4.h"
#include "cuda/kernels/moe_gemm.h"
#include "cuda/kernels/moe_gemm_fp8_wgmma.h"
#include "gemm_ref.h"
#include "gpu_test_util.h"
#include "one_token_gate_up.h"
#include "model/quant_int4.h"
#include "model/safetensors.h"

namespace ds::gpu::test {
namespace {

const DType kTypes[] = {DType::F32, DType::BF16};

// `mats` INT4 matrices [N, K] in the device layout (nibbles, fp32 scales [N, K/g], fp32 zero points or
// none) and their dequantized values.
struct HostInt4 {
  int64_t mats = 1, N = 0, K = 0, G = 0;
  int group = 32;
  bool symmetric = true;
  std::vector<int32_t> packed;  // [mats, N, K / 8]
  std::vector<float> scale, zero, dq;
};

HostInt4 random_int4(int64_t mats, int64_t N, int64_t K, int group, bool symmetric, uint64_t seed) {
  HostInt4 m{mats, N, K, (K + group - 1) / group, group, symmetric, {}, {}, {}, {}};
  const auto w = randn(size_t(mats * N * K), seed, 0.05f);
  for (int64_t e = 0; e < mats; ++e) {
    const Int4Quantized q = quantize_int4(w.data() + e * N * K, N, K, group, symmetric, DType::F32);
    m.packed.insert(m.packed.end(), q.packed.begin(), q.packed.end());
    m.scale.insert(m.scale.end(), q.scale32.begin(), q.scale32.end());
    m.dq.insert(m.dq.end(), q.dequantized.begin(), q.dequantized.end());
    if (symmetric) continue;
    // the zero points as the loader reads them (model/quant_int4.h's int4_zeros_f32)
    TensorInfo pk, sc, zp;
    pk.dtype = DType::I32;
    pk.shape = {N, K / 8};
    pk.data = q.packed.data();
    sc.dtype = DType::F32;
    sc.shape = {N, m.G};
    sc.data = q.scale32.data();
    zp.dtype = DType::I32;
    zp.shape = {(N + 7) / 8, m.G};
    zp.data = q.zero.data();
    const Int4Tensor t{&pk, &sc, &zp, nullptr, N, K, group};
    const auto z = int4_zeros_f32(t);
    m.zero.insert(m.zero.end(), z.begin(), z.end());
  }
  return m;
}

int log2i(int v) {
  int s = 0;
  while ((1 << s) < v) ++s;
  return s;
}

struct DevInt4 {
  DeviceBuffer q, scale, zero;
};
DevInt4 upload(const HostInt4& m) {
  DevInt4 d{to_device_raw(m.packed), to_device_raw(m.scale), DeviceBuffer()};
  if (!m.symmetric) d.zero = to_device_raw(m.zero);
  return d;
}

void set_int4(GemvParams& p, const HostInt4& m, const DevInt4& d) {
  p.w = d.q.data();
  p.w_int4 = true;
  p.w_scale = d.scale.as<float>();
  p.w_zero = m.symmetric ? nullptr : d.zero.as<float>();
  p.scale_ld = m.G;
  p.scale_row_shift = 0;
  p.scale_k_shift = log2i(m.group);
  p.scale_matrix_stride = m.N * m.G;
  p.w_matrix_stride = m.N * m.K;
}

struct Scheme {
  int group;
  bool symmetric;
  const char* name;
};
const Scheme kSchemes[] = {{32, true, "g32 sym"}, {128, true, "g128 sym"}, {32, false, "g32 zp"}, {128, false, "g128 zp"}};

TEST(GpuInt4, DequantizeMatchesTheHost) {
  DS_REQUIRE_GPU();
  const int64_t N = 300, K = 544;  // a partial last group of 128
  for (const Scheme& s : kSchemes) {
    const auto m = random_int4(1, N, K, s.group, s.symmetric, 7);
    auto d = upload(m);
    DeviceBuffer out(size_t(N * K) * 4);
    poison(out);
    Int4Matrix im{d.q.as<uint8_t>(), d.scale.as<float>(), s.symmetric ? nullptr : d.zero.as<float>(), N, K, m.G,
                  log2i(s.group)};
    run_dequantize_int4(im, out.data(), DType::F32, K, test_ctx());
    EXPECT_EQ(to_host_raw<float>(out.data(), m.dq.size()), m.dq) << s.name;
  }
}

// y = x . W^T with INT4 W, each epilogue, for every scheme and row count.
TEST(GpuInt4, GemvEpiloguesSchemesAndRows) {
  DS_REQUIRE_GPU();
  const int N = 384, K = 2304;
  for (const Scheme& s : kSchemes)
    for (DType t : kTypes)
      for (int M : {1, 2, 5, 8, 13}) {
        const auto w = random_int4(1, 2 * N, K, s.group, s.symmetric, 100 + M);  // [gate; up] for SiluMul
        auto dw = upload(w);
        const auto x = rounded(randn(size_t(M) * K, 200 + M), t);
        auto dx = to_device(x, t);
        GemvParams p;
        p.x = dx.data();
        p.ldx = K;
        set_int4(p, w, dw);
        p.N = 2 * N;
        p.K = K;
        p.M = M;
        const auto ref = cpu_gemm(x, K, w.dq, M, 2 * N, K);
        const std::string tag = std::string(s.name) + " " + std::string(dtype_name(t)) + " M=" + std::to_string(M);
        {  // Store, fp32 output
          DeviceBuffer dy(size_t(M) * 2 * N * 4);
          poison(dy);
          p.y = dy.data();
          p.ldy = 2 * N;
          p.y_f32 = true;
          run_gemv(p, t, test_ctx());
          EXPECT_LT(rel_l2(to_host(dy.data(), ref.size(), DType::F32), ref), t == DType::F32 ? 1e-5 : 1e-2) << tag;
          p.y_f32 = false;
        }
        {  // Accumulate into a residual in the activation dtype
          const auto r0 = rounded(randn(size_t(M) * 2 * N, 300 + M), t);
          auto dr = to_device(r0, t);
          p.y = dr.data();
          p.epi = GemvEpilogue::Accumulate;
          run_gemv(p, t, test_ctx());
          auto want = ref;
          for (size_t i = 0; i < want.size(); ++i) want[i] += r0[i];
          EXPECT_LT(rel_l2(to_host(dr.data(), want.size(), t), want), tol(t)) << tag << " accumulate";
          p.epi = GemvEpilogue::Store;
        }
        {  // SiluMul: rows [0, N) gate, [N, 2N) up
          DeviceBuffer dy(size_t(M) * N * 4);
          poison(dy);
          p.y = dy.data();
          p.ldy = N;
          p.N = N;
          p.epi = GemvEpilogue::SiluMul;
          run_gemv(p, t, test_ctx());
          const auto want = silu_mul_rows(ref, M, N);
          EXPECT_LT(rel_l2(to_host(dy.data(), want.size(), t), want), tol(t) * 2) << tag << " silu_mul";
        }
      }
}

// K larger than one x tile at 8 fp32 rows (K tiled), a K of one load round, and a partial group of 128.
TEST(GpuInt4, GemvTiledKAndPartialGroups) {
  DS_REQUIRE_GPU();
  for (auto [K, g, sym] : {std::tuple{9216, 128, true}, std::tuple{9216, 32, false}, std::tuple{1024, 128, false},
                           std::tuple{2336, 128, true}}) {
    const int N = 130, M = 8;
    const auto w = random_int4(1, N, K, g, sym, 11);
    auto dw = upload(w);
    const auto x = randn(size_t(M) * K, 12);
    auto dx = to_device(x, DType::F32);
    DeviceBuffer dy(size_t(M) * N * 4);
    poison(dy);
    GemvParams p;
    p.x = dx.data();
    p.ldx = K;
    set_int4(p, w, dw);
    p.y = dy.data();
    p.ldy = N;
    p.N = N;
    p.K = K;
    p.M = M;
    run_gemv(p, DType::F32, test_ctx());
    const auto ref = cpu_gemm(x, K, w.dq, M, N, K);
    EXPECT_LT(rel_l2(to_host(dy.data(), ref.size(), DType::F32), ref), 1e-5) << "K=" << K << " g=" << g;
  }
}

// Grouped (MoE): groups pick weight matrices (their scales and zero points) and gather rows.
TEST(GpuInt4, GemvGroupedGather) {
  DS_REQUIRE_GPU();
  const int G = 6, N = 128, K = 256, Trows = 10;
  const std::vector<int32_t> slot_weight = {5, 0, 2};
  const std::vector<int32_t> slot_start = {0, 1, 11, 14};
  const std::vector<int32_t> rows = {9, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 4, 4, 2};
  const int total = slot_start.back();
  for (const Scheme& s : kSchemes)
    for (DType t : kTypes) {
      const auto w = random_int4(G, N, K, s.group, s.symmetric, 51);
      auto dw = upload(w);
      const auto x = rounded(randn(size_t(Trows) * K, 50), t);
      auto dx = to_device(x, t);
      auto dsw = to_device_raw(slot_weight), dss = to_device_raw(slot_start), drows = to_device_raw(rows);
      std::vector<int32_t> na = {3};
      auto dna = to_device_raw(na);
      DeviceBuffer dy(size_t(total) * N * 4);
      poison(dy);
      GemvParams p;
      p.x = dx.data();
      p.ldx = K;
      p.x_rows = drows.as<int32_t>();
      set_int4(p, w, dw);
      p.y = dy.data();
      p.ldy = N;
      p.N = N;
      p.K = K;
      p.num_groups = 5;
      p.group_weight = dsw.as<int32_t>();
      p.group_start = dss.as<int32_t>();
      p.num_active = dna.as<int32_t>();
      p.max_rows = 10;
      run_gemv(p, t, test_ctx());
      const auto ref = grouped_reference(x, w.dq, N, K, slot_weight, slot_start, rows);
      EXPECT_LT(rel_l2(to_host(dy.data(), ref.size(), t), ref), tol(t)) << s.name << " " << dtype_name(t);
    }
}

// The batch-1 down projection + combine with INT4 experts against a float64 CPU sum on the dequantized
// weights: residual[c] += sum_j weights[j] * W[ids[j]][c, :] . act[pair_pos[j], :]; the per-pair kernel and the
// staged one (switches.down_combine_staged: 18 columns a block at D 2,304, one column a block at D 7..130, a
// 4,096-wide expert of 2 KiB rows, partial column halves, D 2,312 a last block short of its columns).
TEST(GpuInt4, MoeDownCombineMatchesCpu) {
  DS_REQUIRE_GPU();
  struct Case {
    int D, I, k;
  };
  for (const bool staged : {false, true})
  for (Case cs : {Case{2304, 1024, 9}, Case{7, 1024, 9}, Case{130, 2080, 3}, Case{64, 32, 1}, Case{66, 4096, 9},
                  Case{2312, 1024, 9}})  // (2,312: the staged form's last block short of its columns)
    for (const Scheme& s : kSchemes)
      for (DType t : kTypes) {
        DeviceContext ctx = test_ctx();
        ctx.switches.down_combine_staged = staged;
        const int G = 12;
        const auto w = random_int4(G, cs.D, cs.I, s.group, s.symmetric, 91);
        auto dw = upload(w);
        const auto act = rounded(randn(size_t(cs.k + 2) * cs.I, 92), t);
        const auto resid = rounded(randn(size_t(cs.D), 93), t);
        std::vector<int32_t> ids(size_t(cs.k)), pos(size_t(cs.k));
        std::vector<float> wt(size_t(cs.k));
        for (int j = 0; j < cs.k; ++j) {
          ids[size_t(j)] = (5 * j + 3) % G;
          pos[size_t(j)] = (j + 1) % (cs.k + 2);
          wt[size_t(j)] = 0.25f + 0.1f * float(j);
        }
        auto da = to_device(act, t), dres = to_device(resid, t);
        auto dids = to_device_raw(ids), dpos = to_device_raw(pos);
        auto dwt = to_device(wt, DType::F32);
        MoeDownCombineParams p;
        p.act = da.data();
        p.pair_pos = dpos.as<int32_t>();
        p.ids = dids.as<int32_t>();
        p.weights = dwt.as<float>();
        p.w = dw.q.data();
        p.residual = dres.data();
        p.D = cs.D;
        p.I = cs.I;
        p.k = cs.k;
        p.w_int4 = true;
        p.w_scale = dw.scale.as<float>();
        p.w_zero = s.symmetric ? nullptr : dw.zero.as<float>();
        p.scale_ld = w.G;
        p.scale_k_shift = log2i(s.group);
        p.scale_matrix_stride = int64_t(cs.D) * w.G;
        ASSERT_EQ(moe_down_combine_staged_applies(p, t, ctx), staged) << "D " << cs.D << " I " << cs.I;
        run_moe_down_combine(p, t, ctx);
        DS_CUDA_CHECK(cudaDeviceSynchronize());
        const auto got = to_host(dres.data(), size_t(cs.D), t);
        std::vector<float> want(size_t(cs.D));
        for (int c = 0; c < cs.D; ++c) {
          double sum = 0;
          for (int j = 0; j < cs.k; ++j) {
            const float* wr = w.dq.data() + (size_t(ids[size_t(j)]) * cs.D + c) * cs.I;
            const float* x = act.data() + size_t(pos[size_t(j)]) * cs.I;
            double d = 0;
            for (int i = 0; i < cs.I; ++i) d += double(wr[i]) * x[i];
            sum += double(wt[size_t(j)]) * d;
          }
          want[size_t(c)] = float(resid[size_t(c)] + sum);
        }
        EXPECT_LT(rel_l2(got, want), t == DType::BF16 ? 4e-3 : 1e-5)
            << "D " << cs.D << " I " << cs.I << " k " << cs.k << " " << s.name << " " << dtype_name(t)
            << (staged ? " staged" : " per pair");
      }
}

// One token's MoE gate/up (SiLU-mul) with INT4 experts on the staged kernel (moe_gate_up_staged.cu,
// switches.gate_up_staged): the one-token layout (a group a pair, one row each, every row the token), the RMSNorm
// fused, groups of 32 and 128, symmetric and with zero points, fp32 and bf16, all 9 groups active and 5 (the
// rest's rows untouched); against the host on the dequantized weights and the per-row-pair GEMV (switch off).
TEST(GpuInt4, StagedGateUpOneToken) {
  DS_REQUIRE_GPU();
  const int E = 10, K = 1024, N = 1024;  // (9,216 units: 70 a block on 132 SMs, 5 buffers of 16, past the ring of 4)
  for (const Scheme& s : kSchemes) {
    const auto w = random_int4(E, 2 * N, K, s.group, s.symmetric, 301);
    auto dw = upload(w);
    for (DType t : kTypes) {
      const OneTokenGateUp tok({9, 0, 3, 7, 1, 5, 8, 2, 4}, N, K, t, 302);
      for (int active : {tok.groups(), 5}) {
        auto dact = to_device_raw(std::vector<int32_t>{active});
        GemvParams p = tok.params(dact);
        set_int4(p, w, dw);
        std::vector<float> outs[2];
        tok.run_both(p, test_ctx(), tok.want(w.dq.data(), active), active, t == DType::BF16 ? 2e-2 : 1e-5,
                     std::string(s.name) + " " + std::string(dtype_name(t)), outs);
      }
    }
  }
}

// INT4 experts on the FP8 tensor cores (moe_gemm_fp8_wgmma.h: nibbles - zero to e4m3 in shared memory, x split
// in e4m3 hi + lo) against the host on the dequantized weights: gate/up with SiLU-mul through a row gather and
// a plain product (the down projection's form), active experts of 1 to 20 rows (more than one token tile), two
// more slots than experts active, N not a multiple of 64, groups of 32 and 128, symmetric and with zero points;
// then the 64-token tiles of prefill-sized launches (groups of 128) on experts of 1 to 150 rows.
TEST(GpuInt4, GroupedWgmmaMatchesHost) {
  DS_REQUIRE_GPU();
  if (test_ctx().info.sm_major != 9) GTEST_SKIP() << "the FP8 wgmma kernel is for sm_90";
  for (const int tile : {16, 64}) {
    const GroupedMoeCase gc = grouped_moe_case(tile);
    const int mats = gc.mats, N = gc.N, K = gc.K, rows = gc.rows, R = gc.R;
    const std::vector<int32_t>& expert = gc.expert;
    const std::vector<int32_t>& start = gc.start;
    const std::vector<int32_t>& xr = gc.xr;
    auto dae = to_device_raw(expert), das = to_device_raw(start), dna = to_device_raw(gc.num_active),
         dxr = to_device_raw(xr);
    const auto x = rounded(randn(size_t(R) * K, 1200), DType::BF16);
    auto dx = to_device(x, DType::BF16);
    DeviceBuffer split(x_split_bytes(R, K));
    for (const Scheme& sc : kSchemes)
      for (int form = 0; form < 4; ++form) {  // down and gate/up, each with the nibbles converted through f16 and
        const bool sub = form >= 2;           // as e4m3 subnormals (switches.int4_subnormal)
        if (tile == 64 && sc.group < 128) continue;  // 64-token tiles: one partial sum per k block
        const bool gate_up = form % 2;
        const int wrows = gate_up ? 2 * N : N;
        const auto w = random_int4(mats, wrows, K, sc.group, sc.symmetric, 1300 + int(gate_up));
        auto dw = upload(w);
        const auto want = grouped_moe_reference(x, w.dq, N, K, gate_up, expert, start, gate_up ? &xr : nullptr);
        DeviceBuffer dy(size_t(rows) * N * 2);
        poison(dy);
        MoeGemmParams g;
        g.x = dx.data();
        g.ldx = K;
        g.x_rows = gate_up ? dxr.as<int32_t>() : nullptr;
        g.w = dw.q.data();
        g.w_int4 = true;
        g.w_zero = sc.symmetric ? nullptr : dw.zero.as<float>();
        g.w_matrix_stride = int64_t(wrows) * K;
        g.w_scale = dw.scale.as<float>();
        g.scale_ld = w.G;
        g.scale_row_shift = 0;
        g.scale_k_shift = log2i(sc.group);
        g.scale_matrix_stride = int64_t(wrows) * w.G;
        g.y = dy.data();
        g.ldy = N;
        g.N = N;
        g.K = K;
        g.silu_mul = gate_up;
        g.active_expert = dae.as<int32_t>();
        g.active_start = das.as<int32_t>();
        g.num_active = dna.as<int32_t>();
        g.max_active = int(expert.size()) + 2;
        g.max_rows = rows;
        g.tile_tokens = tile;
        g.x_split = split.data();
        g.x_split_rows = gate_up ? R : rows;
        DeviceContext ctx = test_ctx();
        ctx.switches.fp8_xsplit = true;
        ctx.switches.int4_subnormal = sub;
        ASSERT_TRUE(moe_gemm_fp8_wgmma_applies(g, ctx)) << sc.name << ", " << tile << "-token tiles";
        run_moe_gemm(g, ctx);
        EXPECT_LT(rel_l2(to_host(dy.data(), want.size(), DType::BF16), want), tol(DType::BF16))
            << sc.name << (gate_up ? " gate/up" : " down") << ", " << tile << "-token tiles"
            << (sub ? ", nibbles as e4m3 subnormals" : "");
      }
  }
}

}  // namespace
}  // namespace ds::gpu::test
