// Op harness, part 4: the straightforward GPU attention kernels (KDA recurrence, absorbed MLA over the
// paged cache) against the golden KDA fixture and the CPU twins, varlen, initial states, real head sizes.
#include <gtest/gtest.h>

#include <cmath>

#include "cuda/kernels/attn_ref.h"
#include "gpu_test_util.h"
#include "kernels/kda/op.h"
#include "kernels/mla/op.h"
#include "model/safetensors.h"

namespace ds::gpu::test {
namespace {

std::vector<float> tensor(const SafetensorsFile& f, const std::string& name) {
  const TensorInfo* t = f.find(name);
  if (!t) ADD_FAILURE() << "missing fixture tensor " << name;
  if (!t) return {};
  std::vector<float> v(size_t(t->numel()));
  convert_to_f32(t->dtype, t->data, v.data(), v.size());
  return v;
}

// fp32: the GPU recurrence reproduces the float64 fixture (o and the final state) per T.
TEST(GpuOps, KdaRecurrenceMatchesFixture) {
  DS_REQUIRE_GPU();
  SafetensorsFile f(std::string(DS_FIXTURES_DIR) + "/tiny/kda_ops.safetensors");
  const int H = 2, K = 128;
  for (int T : {1, 17, 64, 100, 257}) {
    std::string p = "T" + std::to_string(T) + ".";
    auto q = tensor(f, p + "q"), k = tensor(f, p + "k"), v = tensor(f, p + "v"), g = tensor(f, p + "g");
    auto beta = tensor(f, p + "beta"), h0 = tensor(f, p + "h0"), o = tensor(f, p + "o"), hT = tensor(f, p + "hT");
    // state pool with the sequence in slot 1
    std::vector<float> pool(size_t(2) * H * K * K, 0.f);
    std::copy(h0.begin(), h0.end(), pool.begin() + H * K * K);
    auto dq = to_device(q, DType::F32), dk = to_device(k, DType::F32), dv = to_device(v, DType::F32);
    auto dg = to_device(g, DType::F32), db = to_device(beta, DType::F32), ds = to_device(pool, DType::F32);
    std::vector<int32_t> cu = {0, T}, slots = {1};
    auto dcu = to_device_raw(cu), dsl = to_device_raw(slots);
    DeviceBuffer dout(size_t(T) * H * K * 4);
    poison(dout);
    KdaRefParams r;
    r.q = dq.data();
    r.k = dk.data();
    r.v = dv.data();
    r.ldq = r.ldk = r.ldv = H * K;
    r.g = dg.as<float>();
    r.beta = db.as<float>();
    r.o = dout.data();
    r.state = ds.as<float>();
    r.cu_seqlens = dcu.as<int32_t>();
    r.slots = dsl.as<int32_t>();
    r.num_seqs = 1;
    r.heads = H;
    r.head_dim = K;
    run_kda_ref(r, DType::F32, test_ctx());
    auto got_o = to_host(dout.data(), o.size(), DType::F32);
    auto got_s = to_host(ds.as<float>() + H * K * K, hT.size(), DType::F32);
    EXPECT_LT(rel_l2(got_o, o), 1e-5) << "T=" << T;
    EXPECT_LT(rel_l2(got_s, hT), 1e-5) << "T=" << T;
  }
}

// bf16 inputs/outputs, 32 heads, varlen with initial states vs the CPU recurrence on the same inputs.
TEST(GpuOps, KdaRecurrenceVarlenBf16) {
  DS_REQUIRE_GPU();
  const int H = 32, K = 128, HK = H * K, ld = 3 * HK;
  const std::vector<int32_t> cu = {0, 1, 40, 41, 141}, slots = {2, 0, 3, 1};
  const int T = cu.back(), N = 4, S = 4;
  for (DType t : {DType::F32, DType::BF16}) {
    auto qkv = rounded(randn(size_t(T) * ld, 80), t);
    auto g = randu(size_t(T) * HK, 81, -3.f, 0.f);
    auto beta = randu(size_t(T) * H, 82, 0.05f, 0.95f);
    auto pool = randn(size_t(S) * H * K * K, 83, 0.1f);
    auto dqkv = to_device(qkv, t), dg = to_device(g, DType::F32), db = to_device(beta, DType::F32);
    auto ds = to_device(pool, DType::F32);
    auto dcu = to_device_raw(cu), dsl = to_device_raw(slots);
    DeviceBuffer dout(size_t(T) * HK * 4);
    poison(dout);
    KdaRefParams r;
    r.q = dqkv.data();
    r.k = static_cast<char*>(dqkv.data()) + HK * dtype_size(t);
    r.v = static_cast<char*>(dqkv.data()) + 2 * HK * dtype_size(t);
    r.ldq = r.ldk = r.ldv = ld;
    r.g = dg.as<float>();
    r.beta = db.as<float>();
    r.o = dout.data();
    r.state = ds.as<float>();
    r.cu_seqlens = dcu.as<int32_t>();
    r.slots = dsl.as<int32_t>();
    r.num_seqs = N;
    r.heads = H;
    r.head_dim = K;
    run_kda_ref(r, t, test_ctx());
    std::vector<float> o(size_t(T) * HK), cpool = pool;
    kernels::KdaParams c;
    c.q = qkv.data();
    c.k = qkv.data() + HK;
    c.v = qkv.data() + 2 * HK;
    c.ldq = c.ldk = c.ldv = ld;
    c.g = g.data();
    c.beta = beta.data();
    c.o = o.data();
    c.state = cpool.data();
    c.cu_seqlens = cu.data();
    c.slots = slots.data();
    c.num_seqs = N;
    c.H = H;
    c.K = K;
    c.V = K;
    kernels::run_kda_recurrent_cpu(c);
    EXPECT_LT(rel_l2(to_host(dout.data(), o.size(), t), o), tol(t)) << dtype_name(t);
    EXPECT_LT(rel_l2(to_host(ds.data(), pool.size(), DType::F32), cpool), 1e-5) << dtype_name(t);
  }
}

// Absorbed MLA: mixed decode and prefill queries over a paged cache with scattered pages.
TEST(GpuOps, MlaAbsorbedPaged) {
  DS_REQUIRE_GPU();
  const int H = 32, Dl = 512, Dr = 64, D = Dl + Dr, bs = 16, blocks = 40;
  const std::vector<int32_t> cu = {0, 1, 30};         // seq 0: 1 query at pos 99; seq 1: 29 queries at pos 5..33
  const std::vector<int64_t> start = {99, 5};
  const int T = cu.back(), N = 2, maxb = 8;
  std::vector<int32_t> bt = {3, 9, 1, 22, 7, 5, 30, 11,  // seq 0: 100 positions -> 7 pages
                             0, 2, 4, 6, 0, 0, 0, 0};    // seq 1: 34 positions -> 3 pages
  for (DType t : {DType::F32, DType::BF16}) {
    auto cache = rounded(randn(size_t(blocks) * bs * D, 90), t);
    auto q = rounded(randn(size_t(T) * H * D, 91, 0.5f), t);
    auto dc = to_device(cache, t), dq = to_device(q, t), dbt = to_device_raw(bt);
    std::vector<int32_t> tseq, tpos;
    for (int s = 0; s < N; ++s)
      for (int i = cu[size_t(s)]; i < cu[size_t(s) + 1]; ++i) {
        tseq.push_back(s);
        tpos.push_back(int32_t(start[size_t(s)] + (i - cu[size_t(s)])));
      }
    auto dts = to_device_raw(tseq), dtp = to_device_raw(tpos);
    DeviceBuffer dout(size_t(T) * H * Dl * 4);
    poison(dout);
    const float scale = 1.f / std::sqrt(192.f);
    MlaRefParams r;
    r.q_lat = dq.data();
    r.ld_lat = int64_t(H) * D;
    r.head_stride_lat = D;
    r.q_pe = static_cast<char*>(dq.data()) + Dl * dtype_size(t);
    r.ld_pe = int64_t(H) * D;
    r.head_stride_pe = D;
    r.cache = dc.data();
    r.block_tables = dbt.as<int32_t>();
    r.token_seq = dts.as<int32_t>();
    r.token_pos = dtp.as<int32_t>();
    r.o = dout.data();
    r.ldo = int64_t(H) * Dl;
    r.tokens = T;
    r.heads = H;
    r.Dl = Dl;
    r.Dr = Dr;
    r.block_size = bs;
    r.max_blocks = maxb;
    r.scale = scale;
    run_mla_ref(r, t, test_ctx());
    std::vector<float> o(size_t(T) * H * Dl);
    kernels::MlaAbsorbedParams c;
    c.q = q.data();
    c.cache = cache.data();
    c.block_tables = bt.data();
    c.cu_seqlens = cu.data();
    c.start_pos = start.data();
    c.o = o.data();
    c.num_seqs = N;
    c.H = H;
    c.Dl = Dl;
    c.Dr = Dr;
    c.block_size = bs;
    c.max_blocks = maxb;
    c.scale = scale;
    kernels::run_mla_absorbed_cpu(c);
    EXPECT_LT(rel_l2(to_host(dout.data(), o.size(), t), o), tol(t)) << dtype_name(t);
  }
}

}  // namespace
}  // namespace ds::gpu::test
