// Op harness, part 2: the small-M GEMV (dense, fused SiLU*mul, residual accumulate, fp32 output,
// grouped with gathered rows) and the cuBLASLt wrapper (TN, [K, N] weights, strided batches), against
// the CPU GEMM twin at the model's projection shapes, lm_head included (vocab 163840).
#include <gtest/gtest.h>

#include "cuda/gemm.h"
#include "cuda/kernels/gemv.h"
#include "gemm_ref.h"
#include "gpu_test_util.h"
#include "kernels/activation/op.h"
#include "kernels/gemm/op.h"
#include "kernels/norm/op.h"

namespace ds::gpu::test {
namespace {

const DType kTypes[] = {DType::F32, DType::BF16};

struct Shape {
  int M, N, K;
};

TEST(GpuOps, GemvDenseShapes) {
  DS_REQUIRE_GPU();
  // KDA input projection, o_proj, dense down, router (fp32 out); M from 1 to 8 and 13 (two passes);
  // M = 1 with K a multiple of 1024 and small N takes the split-K kernel (odd N included); the router and
  // MLA kv_a_proj at 16..32 rows (DELTASERVE_CUDA_NARROW_GEMV_ROWS: four passes)
  const Shape shapes[] = {{1, 12576, 2304}, {3, 2304, 4096}, {8, 2304, 9216}, {13, 256, 2304}, {5, 72, 136},
                          {1, 2304, 4096}, {1, 2304, 9216}, {1, 131, 1024}, {16, 256, 2304}, {32, 256, 2304},
                          {24, 576, 2304}};
  for (DType t : kTypes) {
    for (const auto& s : shapes) {
      auto x = rounded(randn(size_t(s.M) * s.K, 20 + s.N), t);
      auto w = rounded(randn(size_t(s.N) * s.K, 21 + s.K, 0.02f), t);
      auto dx = to_device(x, t), dw = to_device(w, t);
      auto ref = cpu_gemm(x, s.K, w, s.M, s.N, s.K);
      for (int variant = 0; variant < 3; ++variant) {
        bool f32 = variant == 1;
        DType ot = f32 ? DType::F32 : t;
        DeviceBuffer dy(size_t(s.M) * s.N * 4);
        poison(dy);
        GemvParams p;
        p.x = dx.data();
        p.ldx = s.K;
        p.w = dw.data();
        p.y = dy.data();
        p.ldy = s.N;
        p.y_f32 = f32;
        p.N = s.N;
        p.K = s.K;
        p.M = s.M;
        p.row_pairs = variant == 2 ? 4 : 0;  // explicit multi-group warps (ragged last block)
        run_gemv(p, t, test_ctx());
        EXPECT_LT(rel_l2(to_host(dy.data(), ref.size(), ot), ref), tol(ot))
            << dtype_name(t) << " M=" << s.M << " N=" << s.N << " K=" << s.K << " variant " << variant;
      }
    }
  }
}

TEST(GpuOps, GemvLmHeadVocab163840) {
  DS_REQUIRE_GPU();
  const int M = 2, N = 163840, K = 2304;
  for (DType t : kTypes) {
    auto x = rounded(randn(size_t(M) * K, 30), t);
    auto w = rounded(randn(size_t(N) * K, 31, 0.02f), t);
    auto dx = to_device(x, t), dw = to_device(w, t);
    DeviceBuffer dy(size_t(M) * N * 4);
    poison(dy);
    GemvParams p;
    p.x = dx.data();
    p.ldx = K;
    p.w = dw.data();
    p.y = dy.data();
    p.ldy = N;
    p.y_f32 = true;
    p.N = N;
    p.K = K;
    p.M = M;
    run_gemv(p, t, test_ctx());
    auto ref = cpu_gemm(x, K, w, M, N, K);
    EXPECT_LT(rel_l2(to_host(dy.data(), ref.size(), DType::F32), ref), 1e-5) << dtype_name(t);
  }
}

TEST(GpuOps, GemvSiluMulAndAccumulate) {
  DS_REQUIRE_GPU();
  const int M = 4, I = 1024, K = 2304;
  for (DType t : kTypes) {
    auto x = rounded(randn(size_t(M) * K, 40), t);
    auto w = rounded(randn(size_t(2 * I) * K, 41, 0.03f), t);  // [gate; up]
    auto dx = to_device(x, t), dw = to_device(w, t);
    DeviceBuffer dy(size_t(M) * I * 4);
    poison(dy);
    GemvParams p;
    p.x = dx.data();
    p.ldx = K;
    p.w = dw.data();
    p.y = dy.data();
    p.ldy = I;
    p.N = I;
    p.K = K;
    p.M = M;
    p.epi = GemvEpilogue::SiluMul;
    run_gemv(p, t, test_ctx());
    auto gu = cpu_gemm(x, K, w, M, 2 * I, K);
    std::vector<float> ref(size_t(M) * I);
    kernels::SiluMulParams s;
    s.gate = gu.data();
    s.up = gu.data() + I;
    s.y = ref.data();
    s.rows = M;
    s.dim = I;
    s.ld_gate = s.ld_up = 2 * I;
    s.ld_y = I;
    kernels::run_silu_mul_cpu(s);
    EXPECT_LT(rel_l2(to_host(dy.data(), ref.size(), t), ref), tol(t)) << dtype_name(t);

    // residual accumulate: y = r + x . w2^T
    auto w2 = rounded(randn(size_t(K) * I, 42, 0.03f), t);
    auto a = rounded(ref, t);
    auto r0 = rounded(randn(size_t(M) * K, 43), t);
    auto da = to_device(a, t), dw2 = to_device(w2, t), dr = to_device(r0, t);
    GemvParams q;
    q.x = da.data();
    q.ldx = I;
    q.w = dw2.data();
    q.y = dr.data();
    q.ldy = K;
    q.N = K;
    q.K = I;
    q.M = M;
    q.epi = GemvEpilogue::Accumulate;
    run_gemv(q, t, test_ctx());
    auto add = cpu_gemm(a, I, w2, M, K, I);
    for (size_t i = 0; i < add.size(); ++i) add[i] += r0[i];
    EXPECT_LT(rel_l2(to_host(dr.data(), add.size(), t), add), tol(t)) << dtype_name(t);
  }
}

// Grouped: slots pick weight groups and row ranges, rows gathered through an index list.
TEST(GpuOps, GemvGroupedGather) {
  DS_REQUIRE_GPU();
  const int G = 6, N = 128, K = 256, Trows = 10;
  const std::vector<int32_t> slot_weight = {5, 0, 2};   // three active slots
  const std::vector<int32_t> slot_start = {0, 1, 11, 14};  // 1, 10 (two passes) and 3 rows
  const std::vector<int32_t> rows = {9, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 4, 4, 2};
  const int total = slot_start.back();
  for (DType t : kTypes) {
    auto x = rounded(randn(size_t(Trows) * K, 50), t);
    auto w = rounded(randn(size_t(G) * N * K, 51, 0.05f), t);
    auto dx = to_device(x, t), dw = to_device(w, t);
    auto dsw = to_device_raw(slot_weight), dss = to_device_raw(slot_start), drows = to_device_raw(rows);
    std::vector<int32_t> na = {3};
    auto dna = to_device_raw(na);
    DeviceBuffer dy(size_t(total) * N * 4);
    poison(dy);
    GemvParams p;
    p.x = dx.data();
    p.ldx = K;
    p.x_rows = drows.as<int32_t>();
    p.w = dw.data();
    p.w_matrix_stride = int64_t(N) * K;
    p.y = dy.data();
    p.ldy = N;
    p.N = N;
    p.K = K;
    p.num_groups = 5;  // more than active: the extra slots must do nothing
    p.group_weight = dsw.as<int32_t>();
    p.group_start = dss.as<int32_t>();
    p.num_active = dna.as<int32_t>();
    p.max_rows = 10;
    run_gemv(p, t, test_ctx());
    const auto ref = grouped_reference(x, w, N, K, slot_weight, slot_start, rows);
    EXPECT_LT(rel_l2(to_host(dy.data(), ref.size(), t), ref), tol(t)) << dtype_name(t);
  }
}

// Batched slots through strides (KDA f_b / g_b as one launch): slot i reads x + i*K columns, weight
// group i, writes y + i*y_group_stride.
TEST(GpuOps, GemvSlotStrides) {
  DS_REQUIRE_GPU();
  const int M = 3, K = 128, N = 4096, ldx = 12576, ys = 8 * N;
  for (DType t : kTypes) {
    auto x = rounded(randn(size_t(M) * ldx, 55), t);
    auto w = rounded(randn(size_t(2) * N * K, 56, 0.1f), t);
    auto dx = to_device(x, t), dw = to_device(w, t);
    DeviceBuffer dy(size_t(2) * ys * 4);
    poison(dy);
    GemvParams p;
    p.x = static_cast<char*>(dx.data()) + 12288 * dtype_size(t);
    p.ldx = ldx;
    p.x_group_stride = K;
    p.w = dw.data();
    p.w_matrix_stride = int64_t(N) * K;
    p.y = dy.data();
    p.ldy = N;
    p.y_group_stride = ys;
    p.N = N;
    p.K = K;
    p.M = M;
    p.num_groups = 2;
    run_gemv(p, t, test_ctx());
    auto all = to_host(dy.data(), size_t(2) * ys, t);
    for (int i = 0; i < 2; ++i) {
      std::vector<float> xs;
      for (int m = 0; m < M; ++m)
        xs.insert(xs.end(), x.begin() + int64_t(m) * ldx + 12288 + i * K, x.begin() + int64_t(m) * ldx + 12288 + (i + 1) * K);
      std::vector<float> wi(w.begin() + int64_t(i) * N * K, w.begin() + int64_t(i + 1) * N * K);
      auto ref = cpu_gemm(xs, K, wi, M, N, K);
      std::vector<float> got(all.begin() + int64_t(i) * ys, all.begin() + int64_t(i) * ys + int64_t(M) * N);
      EXPECT_LT(rel_l2(got, ref), tol(t)) << dtype_name(t) << " slot " << i;
    }
  }
}

// One row per slot against short weight rows (the small-K kernel): MLA absorb (K 128, N 512, 32 heads,
// strided x and y), unabsorb (K 512, N 128), KDA f_b/g_b (K 128, N 4096, 2 slots), and K 256 / 768 / 1024
// with a ragged last warp; Store, fp32 output and Accumulate.
TEST(GpuOps, GemvSmallKSlots) {
  DS_REQUIRE_GPU();
  struct Case {
    int K, N, slots, xs, ys;
  };
  const Case cases[] = {{128, 512, 32, 192, 576}, {512, 128, 32, 512, 128}, {128, 4096, 2, 128, 4096},
                        {256, 100, 3, 320, 100}, {768, 37, 2, 768, 40}, {1024, 9, 5, 1024, 9}};
  for (DType t : kTypes)
    for (const Case& c : cases)
      for (int variant = 0; variant < 3; ++variant) {  // Store, fp32 Store, Accumulate
        const bool f32 = variant == 1, acc = variant == 2;
        const DType ot = f32 ? DType::F32 : t;
        auto x = rounded(randn(size_t(c.slots) * c.xs + c.K, 61 + c.K), t);
        auto w = rounded(randn(size_t(c.slots) * c.N * c.K, 62 + c.N, 0.05f), t);
        auto y0 = rounded(randn(size_t(c.slots) * c.ys, 63), ot);
        auto dx = to_device(x, t), dw = to_device(w, t), dy = to_device(y0, ot);
        GemvParams p;
        p.x = dx.data();
        p.ldx = c.K;
        p.x_group_stride = c.xs;
        p.w = dw.data();
        p.w_matrix_stride = int64_t(c.N) * c.K;
        p.y = dy.data();
        p.ldy = c.N;
        p.y_group_stride = c.ys;
        p.y_f32 = f32;
        p.N = c.N;
        p.K = c.K;
        p.M = 1;
        p.num_groups = c.slots;
        p.epi = acc ? GemvEpilogue::Accumulate : GemvEpilogue::Store;
        run_gemv(p, t, test_ctx());
        auto got = to_host(dy.data(), y0.size(), ot);
        std::vector<float> ref = y0, gs, rs;
        for (int s = 0; s < c.slots; ++s) {
          std::vector<float> xsl(x.begin() + int64_t(s) * c.xs, x.begin() + int64_t(s) * c.xs + c.K);
          std::vector<float> ws(w.begin() + int64_t(s) * c.N * c.K, w.begin() + int64_t(s + 1) * c.N * c.K);
          auto r = cpu_gemm(xsl, c.K, ws, 1, c.N, c.K);
          for (int n = 0; n < c.N; ++n) {
            float& o = ref[size_t(s) * c.ys + n];
            o = acc ? o + r[size_t(n)] : r[size_t(n)];
          }
          // the rows the slot writes, compared as one vector per slot (gaps between slots untouched)
          gs.insert(gs.end(), got.begin() + int64_t(s) * c.ys, got.begin() + int64_t(s) * c.ys + c.N);
          rs.insert(rs.end(), ref.begin() + int64_t(s) * c.ys, ref.begin() + int64_t(s) * c.ys + c.N);
          for (int n = c.N; n < c.ys; ++n) EXPECT_EQ(got[size_t(s) * c.ys + n], y0[size_t(s) * c.ys + n]);
        }
        EXPECT_LT(rel_l2(gs, rs), tol(ot)) << dtype_name(t) << " K=" << c.K << " N=" << c.N << " variant " << variant;
      }
}

// RMSNorm fused into the GEMV's x-tile load, with gathered rows (final norm + lm_head, router, experts).
// Three rows gathered (row-pair kernel), and one row not gathered: the router's shape, which takes the
// split-K kernel (3 warps of 768, the RMSNorm's sum of squares shared between them).
TEST(GpuOps, GemvFusedNormGather) {
  DS_REQUIRE_GPU();
  const int rows_in = 6, K = 2304;
  for (const std::vector<int32_t>& rows : {std::vector<int32_t>{5, 0, 3}, std::vector<int32_t>{0}})
  for (DType t : kTypes) {
    const int N = rows.size() == 1 ? 256 : 520;
    auto h = rounded(randn(size_t(rows_in) * K, 57, 4.f), t);
    auto nw = rounded(randu(K, 58, 0.5f, 1.5f), t);
    auto w = rounded(randn(size_t(N) * K, 59, 0.02f), t);
    auto dh = to_device(h, t), dnw = to_device(nw, t), dw = to_device(w, t), dr = to_device_raw(rows);
    DeviceBuffer dy(rows.size() * N * 4);
    poison(dy);
    GemvParams p;
    p.x = dh.data();
    p.ldx = K;
    p.x_rows = rows.size() == 1 ? nullptr : dr.as<int32_t>();
    p.w = dw.data();
    p.y = dy.data();
    p.ldy = N;
    p.y_f32 = true;
    p.N = N;
    p.K = K;
    p.M = int(rows.size());
    p.norm_weight = dnw.data();
    p.norm_eps = 1e-5f;
    run_gemv(p, t, test_ctx());
    std::vector<float> xg;
    for (int r : rows) xg.insert(xg.end(), h.begin() + int64_t(r) * K, h.begin() + int64_t(r + 1) * K);
    std::vector<float> xn(xg.size());
    kernels::RmsNormParams c;
    c.x = xg.data();
    c.w = nw.data();
    c.y = xn.data();
    c.rows = int64_t(rows.size());
    c.dim = K;
    kernels::run_rmsnorm_cpu(c);
    xn = rounded(xn, t);  // the GEMV rounds the normalised rows to the activation dtype, as run_rmsnorm does
    auto ref = cpu_gemm(xn, K, w, int(rows.size()), N, K);
    // fp32 output from (near-)identical inputs; bf16: a few normalised values may round the other way
    EXPECT_LT(rel_l2(to_host(dy.data(), ref.size(), DType::F32), ref), t == DType::BF16 ? 2e-3 : 1e-5)
        << dtype_name(t) << " rows " << rows.size();
  }
}

// The KDA output norm (rmsnorm per head * w * sigmoid(gate)) fused into o_proj's GEMV, accumulating.
TEST(GpuOps, GemvGatedNormPrologue) {
  DS_REQUIRE_GPU();
  const int H = 32, D = 128, K = H * D, N = 2304;
  for (int M : {2, 1})  // M = 1: the split-K kernel, norm applied in registers
  for (DType t : kTypes) {
    auto o = rounded(randn(size_t(M) * K, 66), t);
    auto g = rounded(randn(size_t(M) * K, 67, 2.f), t);
    auto nw = rounded(randu(D, 68, 0.5f, 1.5f), t);
    auto w = rounded(randn(size_t(N) * K, 69, 0.02f), t);
    auto r0 = rounded(randn(size_t(M) * N, 70), t);
    auto d_o = to_device(o, t), dg = to_device(g, t), dnw = to_device(nw, t), dw = to_device(w, t);
    auto dr = to_device(r0, t);
    GemvParams p;
    p.x = d_o.data();
    p.ldx = K;
    p.gate = dg.data();
    p.ld_gate = K;
    p.gate_head_dim = D;
    p.norm_weight = dnw.data();
    p.norm_eps = 1e-5f;
    p.w = dw.data();
    p.y = dr.data();
    p.ldy = N;
    p.N = N;
    p.K = K;
    p.M = M;
    p.epi = GemvEpilogue::Accumulate;
    run_gemv(p, t, test_ctx());
    std::vector<float> gated(o.size());
    kernels::GatedRmsNormParams c;
    c.x = o.data();
    c.gate = g.data();
    c.w = nw.data();
    c.y = gated.data();
    c.rows = int64_t(M) * H;
    c.dim = D;
    kernels::run_gated_rmsnorm_cpu(c);
    gated = rounded(gated, t);
    auto ref = cpu_gemm(gated, K, w, M, N, K);
    for (size_t i = 0; i < ref.size(); ++i) ref[i] += r0[i];
    EXPECT_LT(rel_l2(to_host(dr.data(), ref.size(), t), ref), tol(t)) << dtype_name(t) << " M=" << M;
  }
}

// y[M, N] = x[M, K] . w[N, K]^T, packed rows, all in dtype t.
GemmArgs dense_args(const void* x, const void* w, void* y, DType t, int M, int N, int K) {
  GemmArgs a;
  a.x = x;
  a.ldx = K;
  a.w = w;
  a.ldw = K;
  a.y = y;
  a.ldy = N;
  a.x_dtype = a.w_dtype = a.y_dtype = t;
  a.M = M;
  a.N = N;
  a.K = K;
  return a;
}

TEST(GpuOps, CublasLtGemmVariants) {
  DS_REQUIRE_GPU();
  Gemm gemm;
  for (DType t : kTypes) {
    // TN, prefill-sized, bf16/fp32 output, with accumulate
    const int M = 100, N = 2304, K = 4096;
    auto x = rounded(randn(size_t(M) * K, 60), t);
    auto w = rounded(randn(size_t(N) * K, 61, 0.02f), t);
    auto y0 = rounded(randn(size_t(M) * N, 62), t);
    auto dx = to_device(x, t), dw = to_device(w, t), dy = to_device(y0, t);
    GemmArgs a = dense_args(dx.data(), dw.data(), dy.data(), t, M, N, K);
    a.beta = 1.f;
    gemm.run(a, nullptr);
    auto ref = cpu_gemm(x, K, w, M, N, K);
    for (size_t i = 0; i < ref.size(); ++i) ref[i] += y0[i];
    EXPECT_LT(rel_l2(to_host(dy.data(), ref.size(), t), ref), tol(t)) << dtype_name(t);

    // per-head batches with [K, N] weights (MLA W_UK absorption): y_h = x_h . W_h
    const int H = 4, Mb = 9, Kb = 128, Nb = 512, ldx = H * 192, wstride = 256 * 512;
    auto xb = rounded(randn(size_t(Mb) * ldx, 63), t);
    auto wb = rounded(randn(size_t(H) * wstride, 64, 0.05f), t);
    auto dxb = to_device(xb, t), dwb = to_device(wb, t);
    DeviceBuffer dyb(size_t(Mb) * H * Nb * 4);
    poison(dyb);
    GemmArgs b;
    b.x = dxb.data();
    b.ldx = ldx;
    b.stride_x = 192;
    b.w = dwb.data();
    b.w_kn = true;
    b.ldw = Nb;
    b.stride_w = wstride;
    b.y = dyb.data();
    b.ldy = int64_t(H) * Nb;
    b.stride_y = Nb;
    b.x_dtype = b.w_dtype = t;
    b.y_dtype = DType::F32;
    b.M = Mb;
    b.N = Nb;
    b.K = Kb;
    b.batch = H;
    gemm.run(b, nullptr);
    auto got = to_host(dyb.data(), size_t(Mb) * H * Nb, DType::F32);
    std::vector<float> refb(got.size());
    for (int h = 0; h < H; ++h)
      for (int m = 0; m < Mb; ++m)
        for (int n = 0; n < Nb; ++n) {
          double s = 0;
          for (int k = 0; k < Kb; ++k)
            s += double(xb[size_t(m) * ldx + h * 192 + k]) * wb[size_t(h) * wstride + size_t(k) * Nb + n];
          refb[(size_t(m) * H + h) * Nb + n] = float(s);
        }
    EXPECT_LT(rel_l2(got, refb), 1e-5) << dtype_name(t);
  }
}

// Bucketed cuBLASLt algorithms (gemm.h): the buckets are the warm-up's row counts (2^k, 3 x 2^k), and a GEMM
// of any row count matches the CPU with the bucket's algorithm and with its own (odd counts inside buckets,
// one at a bucket, and one past the warm-up's largest).
TEST(GpuOps, CublasLtBucketedAlgorithms) {
  for (auto [m, b] : std::vector<std::pair<int, int>>{
           {1, 1}, {2, 2}, {3, 3}, {4, 4}, {5, 6}, {7, 8}, {100, 128}, {129, 192}, {463, 512}, {7616, 8192}, {8192, 8192}, {8193, 12288}})
    EXPECT_EQ(gemm_bucket_rows(m), b) << m;
  DS_REQUIRE_GPU();
  Gemm bucketed(size_t(32) << 20, true), own(size_t(32) << 20, false);
  for (DType t : kTypes)
    for (int M : {5, 100, 463, 1000, 1536}) {
      const int N = 576, K = 2304;
      auto x = rounded(randn(size_t(M) * K, 70 + M), t);
      auto w = rounded(randn(size_t(N) * K, 71, 0.02f), t);
      auto ref = cpu_gemm(x, K, w, M, N, K);
      auto dx = to_device(x, t), dw = to_device(w, t);
      for (Gemm* g : {&bucketed, &own}) {
        DeviceBuffer dy(size_t(M) * N * dtype_size(t));
        poison(dy);
        g->run(dense_args(dx.data(), dw.data(), dy.data(), t, M, N, K), nullptr);
        DS_CUDA_CHECK(cudaDeviceSynchronize());
        EXPECT_LT(rel_l2(to_host(dy.data(), ref.size(), t), ref), tol(t))
            << dtype_name(t) << " M=" << M << (g == &bucketed ? " bucketed" : " own");
      }
    }
}

}  // namespace
}  // namespace ds::gpu::test
