// Op harness, part 1: norms, embedding, SiLU*mul, the KDA short conv (prefill varlen + decode with
// initial tails), the KDA gate, the MLA latent-cache write; GPU vs the CPU twins in src/kernels at the
// real model's shapes, bf16 and fp32.
#include <gtest/gtest.h>

#include <numeric>

#include "cuda/kernels/conv1d.h"
#include "cuda/kernels/delta_gate.h"
#include "cuda/kernels/elementwise.h"
#include "cuda/kernels/latent_cache.h"
#include "cuda/kernels/norm.h"
#include "gpu_test_util.h"
#include "kernels/activation/op.h"
#include "kernels/conv1d/op.h"
#include "kernels/embedding/op.h"
#include "kernels/kda/op.h"
#include "kernels/norm/op.h"

namespace ds::gpu::test {
namespace {

// The prefill kernels' vector forms (DeviceContext::switches.prefill_vec), on or off for the calls below.
bool g_vec = false;
DeviceContext vctx() {
  DeviceContext c = test_ctx();
  c.switches.prefill_vec = g_vec;
  return c;
}

const DType kTypes[] = {DType::F32, DType::BF16};

TEST(GpuOps, RmsNormGatherRows) {
  DS_REQUIRE_GPU();
  const int rows_in = 11;
  const std::vector<int32_t> idx = {10, 0, 3, 3, 7};
  // 2304: the row in registers in bf16, two passes in f32; 72: lanes past the row; 4096: two passes in bf16
  for (int dim : {2304, 72, 4096})
  for (DType t : kTypes) {
    auto x = rounded(randn(size_t(rows_in) * dim, 1, 3.f), t);
    auto w = rounded(randu(dim, 2, 0.5f, 1.5f), t);
    auto dx = to_device(x, t), dw = to_device(w, t);
    auto di = to_device_raw(idx);
    DeviceBuffer dy(idx.size() * dim * 4);
    poison(dy);
    RmsNormParams p;
    p.x = dx.data();
    p.ldx = dim;
    p.row_index = di.as<int32_t>();
    p.weight = dw.data();
    p.y = dy.data();
    p.ldy = dim;
    p.rows = int(idx.size());
    p.dim = dim;
    p.eps = 1e-5f;
    run_rmsnorm(p, t, test_ctx());
    auto got = to_host(dy.data(), idx.size() * dim, t);
    std::vector<float> xg, ref(idx.size() * dim);
    for (int r : idx) xg.insert(xg.end(), x.begin() + int64_t(r) * dim, x.begin() + int64_t(r + 1) * dim);
    kernels::RmsNormParams c;
    c.x = xg.data();
    c.w = w.data();
    c.y = ref.data();
    c.rows = int64_t(idx.size());
    c.dim = dim;
    c.eps = 1e-5f;
    kernels::run_rmsnorm_cpu(c);
    EXPECT_LT(rel_l2(got, ref), tol(t)) << dtype_name(t) << " dim " << dim;
  }
}

// head_dim 128 and 256: the vector kernel (one and two 128-value passes); 64: the scalar one.
void GatedRmsNormBody() {
  for (const int D : {128, 256, 64})
    for (DType t : kTypes) {
      SCOPED_TRACE("head_dim " + std::to_string(D));
      const int T = 7, H = 32;
      auto o = rounded(randn(size_t(T) * H * D, 3), t);
      auto g = rounded(randn(size_t(T) * H * D, 4, 2.f), t);
      auto w = rounded(randu(D, 5, 0.5f, 1.5f), t);
      auto d_o = to_device(o, t), d_g = to_device(g, t), d_w = to_device(w, t);
      DeviceBuffer dy(o.size() * 4);
      poison(dy);
      GatedRmsNormParams p;
      p.o = d_o.data();
      p.gate = d_g.data();
      p.ldg = H * D;
      p.weight = d_w.data();
      p.y = dy.data();
      p.tokens = T;
      p.heads = H;
      p.head_dim = D;
      run_gated_rmsnorm(p, t, vctx());
      std::vector<float> ref(o.size());
      kernels::GatedRmsNormParams c;
      c.x = o.data();
      c.gate = g.data();
      c.w = w.data();
      c.y = ref.data();
      c.rows = int64_t(T) * H;
      c.dim = D;
      kernels::run_gated_rmsnorm_cpu(c);
      EXPECT_LT(rel_l2(to_host(dy.data(), o.size(), t), ref), tol(t)) << dtype_name(t);
    }
}

TEST(GpuOps, GatedRmsNorm) {
  DS_REQUIRE_GPU();
  with_switch_off_and_on(g_vec, "prefill_vec", GatedRmsNormBody);
}

void silu_mul_case(DType t, int T, int I);

void EmbeddingAndSiluMulBody() {
  const int V = 1000, D = 2304, T = 9;
  for (DType t : kTypes) {
    auto table = rounded(randn(size_t(V) * D, 6), t);
    std::vector<int32_t> ids = {0, 999, 17, 17, 500, 3, 998, 1, 42};
    auto dt = to_device(table, t);
    auto di = to_device_raw(ids);
    DeviceBuffer dy(size_t(T) * D * 4);
    poison(dy);
    EmbeddingParams e;
    e.ids = di.as<int32_t>();
    e.table = dt.data();
    e.y = dy.data();
    e.tokens = T;
    e.dim = D;
    run_embedding(e, t, test_ctx());
    std::vector<float> ref(size_t(T) * D);
    kernels::EmbeddingParams c;
    c.ids = ids.data();
    c.table = table.data();
    c.y = ref.data();
    c.T = T;
    c.vocab = V;
    c.dim = D;
    kernels::run_embedding_cpu(c);
    EXPECT_EQ(rel_l2(to_host(dy.data(), ref.size(), t), ref), 0.0);  // a copy: exact

    for (const int I : {1024, 1020})  // the vector kernel; the scalar one (a width not a multiple of 8)
      silu_mul_case(t, T, I);
  }
}

TEST(GpuOps, EmbeddingAndSiluMul) {
  DS_REQUIRE_GPU();
  with_switch_off_and_on(g_vec, "prefill_vec", EmbeddingAndSiluMulBody);
}

void silu_mul_case(DType t, int T, int I) {
  {
    auto gu = rounded(randn(size_t(T) * 2 * I, 7, 2.f), t);
    auto dgu = to_device(gu, t);
    DeviceBuffer da(size_t(T) * I * 4);
    poison(da);
    SiluMulParams s;
    s.x = dgu.data();
    s.ldx = 2 * I;
    s.y = da.data();
    s.ldy = I;
    s.tokens = T;
    s.inter = I;
    run_silu_mul(s, t, vctx());
    std::vector<float> sref(size_t(T) * I);
    kernels::SiluMulParams sc;
    sc.gate = gu.data();
    sc.up = gu.data() + I;
    sc.y = sref.data();
    sc.rows = T;
    sc.dim = I;
    sc.ld_gate = sc.ld_up = 2 * I;
    sc.ld_y = I;
    kernels::run_silu_mul_cpu(sc);
    EXPECT_LT(rel_l2(to_host(da.data(), sref.size(), t), sref), tol(t)) << dtype_name(t);
  }
}

// Varlen prefill chunks (with and without carried tails), then one decode step, vs the CPU twin.
void short_conv_case(int C, int W);

// The vector kernel (channels a multiple of 8) at the model's 4 taps and at 3 and 6 (the general form); the
// scalar kernel at 100 channels.
void ShortConvPrefillThenDecodeBody() {
  for (const auto& [C, W] : {std::pair{3 * 4096, 4}, std::pair{3 * 4096, 3}, std::pair{1024, 6}, std::pair{100, 4}})
    short_conv_case(C, W);
}

TEST(GpuOps, ShortConvPrefillThenDecode) {
  DS_REQUIRE_GPU();
  with_switch_off_and_on(g_vec, "prefill_vec", ShortConvPrefillThenDecodeBody);
}

void short_conv_case(int C, int W) {
  SCOPED_TRACE("channels " + std::to_string(C) + ", kernel " + std::to_string(W));
  const int slots_n = 5;
  const std::vector<int32_t> lens = {1, 2, 70, 5};  // shorter and longer than the tail
  const std::vector<int32_t> slots = {3, 0, 4, 1};
  std::vector<int32_t> cu = {0};
  for (int l : lens) cu.push_back(cu.back() + l);
  const int T = cu.back(), N = int(lens.size());
  for (DType t : kTypes) {
    const int ldx = C + 8;
    auto x = rounded(randn(size_t(T) * ldx, 8), t);
    auto w = rounded(randu(size_t(C) * W, 9, -0.5f, 0.5f), t);
    auto tails = rounded(randn(size_t(slots_n) * (W - 1) * C, 10), t);  // initial tails (continuing)
    auto dx = to_device(x, t), dw = to_device(w, t), dst = to_device(tails, t);
    auto dcu = to_device_raw(cu), dsl = to_device_raw(slots);
    std::vector<int32_t> tseq;
    for (int s = 0; s < N; ++s)
      for (int i = 0; i < lens[size_t(s)]; ++i) tseq.push_back(s);
    auto dts = to_device_raw(tseq);
    DeviceBuffer dy(size_t(T) * C * 4);
    poison(dy);
    Conv1dParams p;
    p.x = dx.data();
    p.ldx = ldx;
    p.weight = dw.data();
    p.y = dy.data();
    p.state = dst.data();
    p.seq_start = dcu.as<int32_t>();
    p.token_seq = dts.as<int32_t>();
    p.slots = dsl.as<int32_t>();
    p.num_seqs = N;
    p.tokens = T;
    p.channels = C;
    p.kernel = W;
    run_conv1d_prefill(p, t, vctx());
    std::vector<float> ref(size_t(T) * C), ctails = tails;
    kernels::CausalConv1dParams c;
    c.x = x.data();
    c.w = w.data();
    c.y = ref.data();
    c.tails = ctails.data();
    c.cu_seqlens = cu.data();
    c.slots = slots.data();
    c.num_seqs = N;
    c.C = C;
    c.W = W;
    c.ldx = ldx;
    kernels::run_causal_conv1d_cpu(c);
    EXPECT_LT(rel_l2(to_host(dy.data(), ref.size(), t), ref), tol(t)) << dtype_name(t);
    // tails hold raw inputs: exact copies
    EXPECT_EQ(rel_l2(to_host(dst.data(), tails.size(), t), ctails), 0.0) << dtype_name(t);

    // one decode token per sequence
    auto x1 = rounded(randn(size_t(N) * ldx, 11), t);
    auto dx1 = to_device(x1, t);
    DeviceBuffer dy1(size_t(N) * C * 4);
    poison(dy1);
    p.x = dx1.data();
    p.y = dy1.data();
    p.tokens = N;
    run_conv1d_decode(p, t, test_ctx());
    std::vector<int32_t> cu1(size_t(N) + 1);
    std::iota(cu1.begin(), cu1.end(), 0);
    std::vector<float> ref1(size_t(N) * C);
    c.x = x1.data();
    c.y = ref1.data();
    c.cu_seqlens = cu1.data();
    kernels::run_causal_conv1d_cpu(c);
    EXPECT_LT(rel_l2(to_host(dy1.data(), ref1.size(), t), ref1), tol(t)) << dtype_name(t);
    EXPECT_EQ(rel_l2(to_host(dst.data(), tails.size(), t), ctails), 0.0) << dtype_name(t);
  }
}

void KdaGateAndBetaBody() {
  const int T = 6, H = 32, K = 128, HK = H * K, ldb = 40;
  for (DType t : kTypes) {
    auto f = rounded(randn(size_t(T) * HK, 12, 4.f), t);  // wide range: both softplus branches
    for (int i = 0; i < 50; ++i) f[size_t(i)] = 25.f + float(i);  // above the threshold 20
    f = rounded(f, t);
    auto b = rounded(randn(size_t(T) * ldb, 13, 3.f), t);
    auto a_log = randu(H, 14, 0.f, 2.77f);
    auto dt_bias = randu(HK, 15, -4.f, -2.f);
    auto df = to_device(f, t), db = to_device(b, t);
    auto da = to_device(a_log, DType::F32), dd = to_device(dt_bias, DType::F32);
    DeviceBuffer dg(size_t(T) * HK * 4), dbeta(size_t(T) * H * 4);
    poison(dg);
    poison(dbeta);
    KdaGateParams p;
    p.f = df.data();
    p.ldf = HK;
    p.b = db.data();
    p.ldb = ldb;
    p.A_log = da.as<float>();
    p.dt_bias = dd.as<float>();
    p.g = dg.as<float>();
    p.beta = dbeta.as<float>();
    p.tokens = T;
    p.heads = H;
    p.head_dim = K;
    run_kda_gate(p, t, vctx());
    std::vector<float> gref(size_t(T) * HK), bref(size_t(T) * H);
    kernels::KdaGateParams c;
    c.z = f.data();
    c.a_log = a_log.data();
    c.dt_bias = dt_bias.data();
    c.g = gref.data();
    c.T = T;
    c.H = H;
    c.K = K;
    kernels::run_kda_gate_cpu(c);
    kernels::SigmoidParams sg;
    sg.x = b.data();
    sg.y = bref.data();
    sg.rows = T;
    sg.dim = H;
    sg.ldx = ldb;
    kernels::run_sigmoid_cpu(sg);
    // fp32 outputs from identical inputs: only expf/log1pf rounding differs
    EXPECT_LT(rel_l2(to_host(dg.data(), gref.size(), DType::F32), gref), 1e-5) << dtype_name(t);
    EXPECT_LT(rel_l2(to_host(dbeta.data(), bref.size(), DType::F32), bref), 1e-5) << dtype_name(t);
  }
}

TEST(GpuOps, KdaGateAndBeta) {
  DS_REQUIRE_GPU();
  with_switch_off_and_on(g_vec, "prefill_vec", KdaGateAndBetaBody);
}

TEST(GpuOps, LatentCacheWrite) {
  DS_REQUIRE_GPU();
  const int T = 5, R = 512, Dr = 64, ld = 6144 + 576, bs = 16, blocks = 4;
  const std::vector<int32_t> mapping = {0, 17, 63, 5, 32};
  for (DType t : kTypes) {
    auto kv = rounded(randn(size_t(T) * ld, 16, 2.f), t);
    auto w = rounded(randu(R, 17, 0.5f, 1.5f), t);
    auto dkv = to_device(kv, t), dw = to_device(w, t);
    auto dm = to_device_raw(mapping);
    DeviceBuffer cache(size_t(blocks) * bs * (R + Dr) * 4);
    DS_CUDA_CHECK(cudaMemset(cache.data(), 0, cache.bytes()));
    LatentCacheWriteParams p;
    p.kv_a = dkv.data();
    p.ld_kv_a = ld;
    p.norm_weight = dw.data();
    p.cache = cache.data();
    p.cache_rows = dm.as<int32_t>();
    p.tokens = T;
    p.R = R;
    p.Dr = Dr;
    p.eps = 1e-6f;
    run_latent_cache_write(p, t, test_ctx());
    auto all = to_host(cache.data(), size_t(blocks) * bs * (R + Dr), t);
    std::vector<float> got, ref(size_t(T) * R), pe_got, pe_ref;
    for (int i = 0; i < T; ++i) {
      const float* row = all.data() + int64_t(mapping[size_t(i)]) * (R + Dr);
      got.insert(got.end(), row, row + R);
      pe_got.insert(pe_got.end(), row + R, row + R + Dr);
      pe_ref.insert(pe_ref.end(), kv.begin() + int64_t(i) * ld + R, kv.begin() + int64_t(i) * ld + R + Dr);
    }
    kernels::RmsNormParams c;
    c.x = kv.data();
    c.ldx = ld;
    c.w = w.data();
    c.y = ref.data();
    c.rows = T;
    c.dim = R;
    c.eps = 1e-6f;
    kernels::run_rmsnorm_cpu(c);
    EXPECT_LT(rel_l2(got, ref), tol(t)) << dtype_name(t);
    EXPECT_EQ(rel_l2(pe_got, pe_ref), 0.0) << dtype_name(t);
  }
}

}  // namespace
}  // namespace ds::gpu::test
