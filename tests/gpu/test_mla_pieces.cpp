// Long-context MLA prefill in pieces (issue 13) at the kernel level: the prefill kernel's key window
// and log-sum-exp output (mla_prefill.h) and the merge kernel (mla_merge.h).
//  - Merge: against the contract computed here in double (the formula of run_mla_merge_cpu), with
//    empty sides (-inf), both empty, and the running accumulator aliased in place.
//  - Pieces: one chunk (q_len queries after ctx earlier positions) attended piece by piece for several
//    piece sizes — one piece, pieces longer than the chunk, pieces smaller than it (queries that see
//    nothing of a piece) — merged in fp32, against the CPU twin's unpieced causal attention
//    (run_mla_prefill_cpu). lse of a whole range against ln Σ exp(scaled scores) computed in double.
// Tolerances (relative L2): fp32 1e-5 (3xTF32, ex2.approx); bf16 1.5e-2 (inputs and P rounded to bf16 as
// in test_mla_prefill's 1e-2, plus one bf16 rounding of each piece's output before the fp32 merge).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "cuda/kernels/mla_merge.h"
#include "cuda/kernels/mla_prefill.h"
#include "cuda/kernels/mla_prefill_wgmma.h"
#include "kernels/mla/op.h"
#include "test_mla_util.h"

namespace ds::attn_test {
namespace {

constexpr int kQk = 192, kV = 128;

// Expected merge per the contract, in double.
void merge_ref(const std::vector<float>& oa, const std::vector<float>& la, bool a_empty, const std::vector<float>& ob,
               const std::vector<float>& lb, int T, int H, std::vector<float>& o, std::vector<float>& l) {
  o.assign(size_t(T) * H * kV, 0.f);
  l.assign(size_t(T) * H, -INFINITY);
  for (int r = 0; r < T * H; ++r) {
    const double a = a_empty ? -INFINITY : double(la[size_t(r)]), b = lb[size_t(r)];
    const double m = std::max(a, b);
    if (m == -INFINITY) continue;
    const double wa = std::exp(a - m), wb = std::exp(b - m);
    l[size_t(r)] = float(m + std::log(wa + wb));
    for (int c = 0; c < kV; ++c) {
      const size_t i = size_t(r) * kV + c;
      o[i] = float(((a_empty ? 0.0 : wa * oa[i]) + wb * ob[i]) / (wa + wb));
    }
  }
}

void expect_merge(DType act, bool a_empty, bool out_act, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int T = 37, H = 3;
  std::vector<float> oa = normal(size_t(T) * H * kV, rng), la = normal(size_t(T) * H, rng, 0.f, 3.f);
  Act ob = make_act(normal(size_t(T) * H * kV, rng), act);
  std::vector<float> lb = normal(size_t(T) * H, rng, 0.f, 3.f);
  // empty rows: A only, B only, both
  for (int r = 0; r < T * H; r += 5) la[size_t(r)] = -INFINITY;
  for (int r = 1; r < T * H; r += 7) lb[size_t(r)] = -INFINITY;
  for (int r = 2; r < T * H; r += 11) la[size_t(r)] = lb[size_t(r)] = -INFINITY;
  for (int r = 0; r < T * H; ++r)
    if (la[size_t(r)] == -INFINITY)
      for (int c = 0; c < kV; ++c) oa[size_t(r) * kV + c] = 0.f;  // as the kernels write an empty side
  std::vector<float> eo, el;
  merge_ref(oa, la, a_empty, ob.host, lb, T, H, eo, el);

  auto d_oa = upload(oa), d_la = upload(la), d_lb = upload(lb);
  gpu::MlaMergeParams p;
  p.o_a = a_empty ? nullptr : d_oa.as<float>();
  p.lse_a = d_la.as<float>();
  p.o_b = ob.dev.data();
  p.lse_b = d_lb.as<float>();
  gpu::DeviceBuffer d_o = poisoned(eo.size(), out_act ? act : DType::F32);
  // the fp32 result goes into the accumulator itself (o = o_a, lse = lse_a), as the layer does
  p.o = out_act ? d_o.data() : d_oa.data();
  p.lse = d_la.as<float>();
  p.out_act = out_act;
  p.T = T;
  p.H = H;
  p.Dv = kV;
  gpu::run_mla_merge(p, act, test_ctx());
  DS_CUDA_CHECK(cudaDeviceSynchronize());
  const auto o = out_act ? download_act(d_o, eo.size(), act) : download<float>(d_oa, eo.size());
  const auto l = download<float>(d_la, el.size());
  int lse_bad = 0;
  for (size_t r = 0; r < el.size(); ++r)
    if (std::isinf(el[r]) ? !(std::isinf(l[r]) && l[r] < 0) : std::fabs(l[r] - el[r]) > 1e-5f * (1.f + std::fabs(el[r])))
      ++lse_bad;
  EXPECT_EQ(lse_bad, 0);
  for (float x : o) ASSERT_TRUE(std::isfinite(x));
  const double err = rel_l2(o.data(), eo.data(), eo.size());
  std::printf("[mla_merge] act=%s a_empty=%d out_act=%d o_err=%.3g\n", act_name(act), a_empty, out_act, err);
  // bf16 output: one rounding (2^-9); fp32: fp32 arithmetic
  EXPECT_LE(err, out_act && act == DType::BF16 ? 4e-3 : 1e-6);
}

TEST(MlaMerge, IntoAccumulatorF32) { expect_merge(DType::F32, false, false, 61); }
TEST(MlaMerge, IntoAccumulatorBf16Piece) { expect_merge(DType::BF16, false, false, 62); }
TEST(MlaMerge, FirstPieceEmptyAccumulator) { expect_merge(DType::BF16, true, false, 63); }
TEST(MlaMerge, LastPieceToActivationsBf16) { expect_merge(DType::BF16, false, true, 64); }
TEST(MlaMerge, LastPieceToActivationsF32) { expect_merge(DType::F32, false, true, 65); }

// One chunk of q_len queries after ctx positions, H heads, keys in the kv_b_proj / kv_a layouts.
// wgmma: the Hopper kernel's schedule (DeviceContext::switches.wgmma, 0: the mma.sync kernel).
void expect_pieces(int q_len, int ctx, int H, DType act, const std::vector<int>& pieces, uint64_t seed,
                   int wgmma = 0) {
  gpu::DeviceContext dctx = test_ctx();
  dctx.switches.wgmma = wgmma;
  std::mt19937_64 rng(seed);
  const int K = ctx + q_len;
  Act q = make_act(normal(size_t(q_len) * H * kQk, rng), act);
  Act kv = make_act(normal(size_t(K) * H * 256, rng), act);  // per head [k_nope 128 ; v 128]
  Act kva = make_act(normal(size_t(K) * 576, rng), act);     // k_pe in columns [512, 576)
  const float scale = float(1.0 / std::sqrt(192.0));

  // CPU twin, unpieced
  std::vector<float> k, v, ref_o(size_t(q_len) * H * kV);
  expanded_keys(kv.host, kva.host, 0, K, H, k, v);
  kernels::MlaPrefillParams rp;
  rp.q = q.host.data();
  rp.k = k.data();
  rp.v = v.data();
  rp.o = ref_o.data();
  rp.Tq = q_len;
  rp.Tk = K;
  rp.H = H;
  rp.Dqk = kQk;
  rp.Dv = kV;
  rp.q_pos0 = ctx;
  rp.scale = scale;
  kernels::run_mla_prefill_cpu(rp);
  // ln Σ exp(scaled scores) over the causal prefix, in double
  std::vector<double> ref_lse(size_t(q_len) * H);
  for (int t = 0; t < q_len; ++t)
    for (int h = 0; h < H; ++h) {
      std::vector<double> s(size_t(ctx + t + 1));
      double m = -INFINITY;
      for (int j = 0; j <= ctx + t; ++j) {
        double d = 0;
        for (int c = 0; c < kQk; ++c)
          d += double(q.host[(size_t(t) * H + h) * kQk + c]) * k[(size_t(j) * H + h) * kQk + c];
        s[size_t(j)] = d * scale;
        m = std::max(m, s[size_t(j)]);
      }
      double sum = 0;
      for (double x : s) sum += std::exp(x - m);
      ref_lse[size_t(t) * H + h] = m + std::log(sum);
    }

  const std::vector<int32_t> cuq{0, q_len}, cuk{0, K};
  auto d_cuq = upload(cuq), d_cuk = upload(cuk);
  const size_t n_o = size_t(q_len) * H * kV;
  gpu::DeviceBuffer d_piece = poisoned(n_o, act), d_out = poisoned(n_o, act);
  gpu::DeviceBuffer d_acc(n_o * 4), d_acc_lse(size_t(q_len) * H * 4), d_lse(size_t(q_len) * H * 4);
  gpu::MlaPrefillParams p = expanded_params(q, kv, kva, H, act);
  p.o = d_piece.data();
  p.lse = d_lse.as<float>();
  p.cu_seqlens_q = d_cuq.as<int32_t>();
  p.cu_seqlens_k = d_cuk.as<int32_t>();
  p.num_seqs = 1;
  p.max_seqlen_q = q_len;
  for (int P : pieces) {
    for (int a = 0; a < K; a += P) {
      const int b = std::min(K, a + P);
      p.k_begin = a;
      p.k_end = b;
      gpu::run_mla_prefill(p, act, dctx);
      gpu::MlaMergeParams mg;
      mg.o_a = a == 0 ? nullptr : d_acc.as<float>();
      mg.lse_a = d_acc_lse.as<float>();
      mg.o_b = d_piece.data();
      mg.lse_b = d_lse.as<float>();
      mg.o = b == K ? d_out.data() : d_acc.data();
      mg.lse = d_acc_lse.as<float>();
      mg.out_act = b == K;
      mg.T = q_len;
      mg.H = H;
      mg.Dv = kV;
      gpu::run_mla_merge(mg, act, test_ctx());
    }
    DS_CUDA_CHECK(cudaDeviceSynchronize());
    const auto o = download_act(d_out, n_o, act);
    const auto lse = download<float>(d_acc_lse, ref_lse.size());
    double lse_err = 0;
    for (size_t i = 0; i < ref_lse.size(); ++i) lse_err = std::max(lse_err, std::fabs(lse[i] - ref_lse[i]));
    const double err = rel_l2(o.data(), ref_o.data(), n_o);
    std::printf("[mla_pieces wgmma=%d] act=%s q=%d ctx=%d H=%d piece=%d o_err=%.3g lse_err=%.3g\n", wgmma,
                act_name(act), q_len, ctx, H, P, err, lse_err);
    EXPECT_LE(err, act == DType::F32 ? 1e-5 : 1.5e-2) << "piece " << P;
    EXPECT_LE(lse_err, 1e-3) << "piece " << P;  // scores in fp32 from the same (rounded) inputs
  }
}

// one piece (the whole range), longer than the chunk, aligned and not to the kernel's 64-key tiles,
// and smaller than the chunk (early queries see nothing of the last pieces)
TEST(MlaPieces, F32) { expect_pieces(70, 300, 4, DType::F32, {370, 128, 100, 64, 37, 1000}, 71); }
TEST(MlaPieces, Bf16) { expect_pieces(70, 300, 4, DType::BF16, {370, 128, 100, 37}, 72); }
TEST(MlaPieces, NoContextSmallPiecesF32) { expect_pieces(150, 0, 2, DType::F32, {40, 64, 149}, 73); }
TEST(MlaPieces, RealHeadsBf16) { expect_pieces(200, 500, 32, DType::BF16, {512, 160}, 74); }
// the Hopper wgmma kernel (128-key tiles), both schedules, cp.async or TMA loads
TEST(MlaPieces, WgmmaBf16) {
  ASSERT_TRUE(gpu::mla_prefill_wgmma_supported(test_ctx())) << "the wgmma kernel needs an sm_90 device";
  for (int v : {1, 2, 3, 4}) expect_pieces(70, 300, 4, DType::BF16, {370, 128, 100, 37}, 75, v);
  for (int v : {1, 2, 3, 4}) expect_pieces(200, 500, 32, DType::BF16, {512, 160, 129}, 76, v);
}

}  // namespace
}  // namespace ds::attn_test
