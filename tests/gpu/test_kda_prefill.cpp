// KDA chunked prefill and decode on the GPU against the CPU twin (token-by-token recurrence, fp32) and
// the float64-derived golden fixture.
//
// Tolerances (relative L2 over a whole sequence's output or final state):
//  - fp32 activations, 1e-5: every product is 3xTF32 (error ~2^-21 relative per product, like fp32),
//    exponentials use ex2.approx (2^-22), accumulation is fp32 over <= 128-term dot products, so the
//    kernel and the fp32 CPU twin each sit at ~1e-6 of the exact result; 1e-5 leaves a 10x margin but
//    still catches any wrong term (a single missing token's contribution is >= 1e-3).
//  - bf16 activations, 1e-2: the reference gets the same bf16-rounded q/k/v; the kernel additionally
//    rounds its tensor-core operands (W, U, Qg, KdT, M, the state and u) to bf16, relative 2^-9 = 2e-3
//    each, a handful of them in series per output, and writes o in bf16 (another 2^-9).
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "cuda/kernels/kda_decode.h"
#include "cuda/kernels/kda_prefill.h"
#include "kernels/kda/op.h"
#include "model/safetensors.h"
#include "test_kda_util.h"

namespace ds::attn_test {
namespace {

constexpr int D = 128;
constexpr size_t kSlotFloats = size_t(D) * D;

struct Batch {
  std::vector<int> lens;
  std::vector<int32_t> cu, slots;
  std::vector<uint8_t> fresh;
  int T = 0, N = 0, num_slots = 0;
};

// Sequences get distinct slots out of a pool with two extra (untouched) slots; every other is fresh.
Batch make_batch(const std::vector<int>& lens, std::mt19937_64& rng, bool any_fresh = true) {
  Batch b;
  b.lens = lens;
  b.N = int(lens.size());
  b.num_slots = b.N + 2;
  b.cu.assign(1, 0);
  for (int l : lens) b.cu.push_back(b.cu.back() + l);
  b.T = b.cu.back();
  std::vector<int32_t> perm(b.num_slots);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  b.slots.assign(perm.begin(), perm.begin() + b.N);
  for (int i = 0; i < b.N; ++i) b.fresh.push_back(any_fresh && i % 2 == 1);
  return b;
}

struct Errors {
  double o = 0.0, state = 0.0;
  bool untouched_ok = true;
};

// Runs the batch on the GPU (prefill kernel) and on the CPU twin; returns the worst per-sequence errors.
Errors check_prefill(const Batch& b, const KdaData& x, DType act, std::mt19937_64& rng) {
  const int H = x.H;
  Act q = make_act(x.q, act), k = make_act(x.k, act), v = make_act(x.v, act);
  std::vector<float> pool = normal(size_t(b.num_slots) * H * kSlotFloats, rng, 0.f, 0.3f);

  // CPU reference on the same (rounded) inputs; fresh slots start from zero.
  std::vector<float> ref_pool = pool;
  for (int s = 0; s < b.N; ++s)
    if (b.fresh[s]) std::fill_n(ref_pool.begin() + size_t(b.slots[s]) * H * kSlotFloats, H * kSlotFloats, 0.f);
  std::vector<float> ref_o(size_t(b.T) * H * D);
  kernels::KdaParams rp;
  rp.q = q.host.data();
  rp.k = k.host.data();
  rp.v = v.host.data();
  rp.g = x.g.data();
  rp.beta = x.beta.data();
  rp.o = ref_o.data();
  rp.state = ref_pool.data();
  rp.cu_seqlens = b.cu.data();
  rp.slots = b.slots.data();
  rp.num_seqs = b.N;
  rp.H = H;
  rp.K = D;
  rp.V = D;
  kernels::run_kda_recurrent_cpu(rp);

  auto d_g = upload(x.g), d_beta = upload(x.beta), d_pool = upload(pool), d_cu = upload(b.cu),
       d_slots = upload(b.slots), d_fresh = upload(b.fresh);
  auto d_o = poisoned(size_t(b.T) * H * D, act);
  gpu::DeviceBuffer ws(gpu::kda_prefill_workspace_bytes(b.T, b.N, H, act), "kda workspace");
  gpu::KdaPrefillParams p;
  p.q = q.dev.data();
  p.k = k.dev.data();
  p.v = v.dev.data();
  p.g = d_g.as<float>();
  p.beta = d_beta.as<float>();
  p.o = d_o.data();
  p.state_pool = d_pool.as<float>();
  p.cu_seqlens = d_cu.as<int32_t>();
  p.state_slots = d_slots.as<int32_t>();
  p.fresh = d_fresh.as<uint8_t>();
  p.workspace = ws.data();
  p.total_tokens = b.T;
  p.num_seqs = b.N;
  p.num_heads = H;
  gpu::run_kda_prefill(p, act, test_ctx());
  DS_CUDA_CHECK(cudaDeviceSynchronize());

  const auto o = download_act(d_o, size_t(b.T) * H * D, act);
  const auto got_pool = download<float>(d_pool, pool.size());
  Errors e;
  for (int s = 0; s < b.N; ++s) {
    const size_t off = size_t(b.cu[s]) * H * D, n = size_t(b.lens[s]) * H * D;
    if (n) e.o = std::max(e.o, rel_l2(o.data() + off, ref_o.data() + off, n));
    const size_t so = size_t(b.slots[s]) * H * kSlotFloats;
    e.state = std::max(e.state, rel_l2(got_pool.data() + so, ref_pool.data() + so, H * kSlotFloats));
  }
  for (int slot = 0; slot < b.num_slots; ++slot) {
    if (std::find(b.slots.begin(), b.slots.end(), slot) != b.slots.end()) continue;
    const size_t so = size_t(slot) * H * kSlotFloats;
    e.untouched_ok &= std::memcmp(got_pool.data() + so, pool.data() + so, H * kSlotFloats * sizeof(float)) == 0;
  }
  std::printf("[kda_prefill] act=%s H=%d lens=%s  o_err=%.3g state_err=%.3g\n", act_name(act), H,
              lens_str(b.lens).c_str(), e.o, e.state);
  return e;
}

constexpr double kTolF32 = 1e-5;
constexpr double kTolBf16 = 1e-2;

double tol(DType act) { return act == DType::F32 ? kTolF32 : kTolBf16; }

void expect_prefill(const std::vector<int>& lens, int H, DType act, bool strong, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const Batch b = make_batch(lens, rng);
  const KdaData x = make_kda_data(b.T, H, rng, strong);
  const Errors e = check_prefill(b, x, act, rng);
  EXPECT_LE(e.o, tol(act)) << "output, lens " << lens_str(lens);
  EXPECT_LE(e.state, tol(act)) << "final state, lens " << lens_str(lens);
  EXPECT_TRUE(e.untouched_ok) << "a slot outside the batch was modified";
}

}  // namespace

// Varlen batch with lengths around the chunk size (1, 63, 64, 65) and several chunks with a partial
// last one; initial states from the pool, every other sequence fresh.
TEST(KdaPrefill, VarlenF32) { expect_prefill({1, 63, 64, 65, 200, 300}, 4, DType::F32, false, 11); }
TEST(KdaPrefill, VarlenBf16) { expect_prefill({1, 63, 64, 65, 200, 300}, 4, DType::BF16, false, 12); }

// The real model's 32 heads.
TEST(KdaPrefill, RealHeadsF32) { expect_prefill({517, 130}, 32, DType::F32, false, 13); }
TEST(KdaPrefill, RealHeadsBf16) { expect_prefill({517, 130}, 32, DType::BF16, false, 14); }

// Channels decaying by 5..60 nats per token: in-chunk cumulative decays reach thousands of nats, the
// diagonal tiles take the element-wise path, and nothing may overflow.
TEST(KdaPrefill, StrongDecayF32) { expect_prefill({64, 190, 33}, 4, DType::F32, true, 15); }
TEST(KdaPrefill, StrongDecayBf16) { expect_prefill({64, 190, 33}, 4, DType::BF16, true, 16); }

namespace {
// A prompt prefilled in two chunks (state carried through the slot), then decoded token by token with
// the decode kernel, equals the recurrence over the whole sequence: prefill and decode agree on the
// state layout.
void expect_prefill_then_decode(DType act, uint64_t seed) {
  constexpr int H = 32, kFirst = 100, kSecond = 37, kDecode = 8, T = kFirst + kSecond + kDecode;
  std::mt19937_64 rng(seed);
  const KdaData x = make_kda_data(T, H, rng, false);
  Act q = make_act(x.q, act), k = make_act(x.k, act), v = make_act(x.v, act);
  const int slot = 1, num_slots = 3;
  std::vector<float> pool = normal(size_t(num_slots) * H * kSlotFloats, rng, 0.f, 0.3f);

  std::vector<float> ref_pool = pool, ref_o(size_t(T) * H * D);
  const std::vector<int32_t> ref_cu = {0, T}, ref_slot = {slot};
  kernels::KdaParams rp;
  rp.q = q.host.data();
  rp.k = k.host.data();
  rp.v = v.host.data();
  rp.g = x.g.data();
  rp.beta = x.beta.data();
  rp.o = ref_o.data();
  rp.state = ref_pool.data();
  rp.cu_seqlens = ref_cu.data();
  rp.slots = ref_slot.data();
  rp.num_seqs = 1;
  rp.H = H;
  rp.K = D;
  rp.V = D;
  kernels::run_kda_recurrent_cpu(rp);

  auto d_g = upload(x.g), d_beta = upload(x.beta), d_pool = upload(pool), d_slot = upload(ref_slot);
  auto d_o = poisoned(size_t(T) * H * D, act);
  const size_t esz = act_size(act);
  auto at = [&](const gpu::DeviceBuffer& buf, int t) { return static_cast<const char*>(buf.data()) + size_t(t) * H * D * esz; };
  int t0 = 0;
  for (int len : {kFirst, kSecond}) {
    const std::vector<int32_t> cu = {0, len};
    auto d_cu = upload(cu);
    gpu::DeviceBuffer ws(gpu::kda_prefill_workspace_bytes(len, 1, H, act), "kda workspace");
    gpu::KdaPrefillParams p;
    p.q = at(q.dev, t0);
    p.k = at(k.dev, t0);
    p.v = at(v.dev, t0);
    p.g = d_g.as<float>() + size_t(t0) * H * D;
    p.beta = d_beta.as<float>() + size_t(t0) * H;
    p.o = const_cast<char*>(at(d_o, t0));
    p.state_pool = d_pool.as<float>();
    p.cu_seqlens = d_cu.as<int32_t>();
    p.state_slots = d_slot.as<int32_t>();
    p.workspace = ws.data();
    p.total_tokens = len;
    p.num_seqs = 1;
    p.num_heads = H;
    gpu::run_kda_prefill(p, act, test_ctx());
    DS_CUDA_CHECK(cudaDeviceSynchronize());
    t0 += len;
  }
  for (; t0 < T; ++t0) {
    gpu::KdaDecodeParams p;
    p.q = at(q.dev, t0);
    p.k = at(k.dev, t0);
    p.v = at(v.dev, t0);
    p.g = d_g.as<float>() + size_t(t0) * H * D;
    p.beta = d_beta.as<float>() + size_t(t0) * H;
    p.o = const_cast<char*>(at(d_o, t0));
    p.state_pool = d_pool.as<float>();
    p.state_slots = d_slot.as<int32_t>();
    p.num_seqs = 1;
    p.num_heads = H;
    gpu::run_kda_decode(p, act, test_ctx());
  }
  DS_CUDA_CHECK(cudaDeviceSynchronize());
  const auto o = download_act(d_o, size_t(T) * H * D, act);
  const auto got_pool = download<float>(d_pool, pool.size());
  const size_t dec0 = size_t(kFirst + kSecond) * H * D;
  const double e_all = rel_l2(o, ref_o);
  const double e_dec = rel_l2(o.data() + dec0, ref_o.data() + dec0, size_t(kDecode) * H * D);
  const double e_state = rel_l2(got_pool.data() + slot * H * kSlotFloats, ref_pool.data() + slot * H * kSlotFloats,
                                H * kSlotFloats);
  std::printf("[kda_prefill_then_decode] act=%s o_err=%.3g decode_o_err=%.3g state_err=%.3g\n", act_name(act), e_all,
              e_dec, e_state);
  EXPECT_LE(e_all, tol(act));
  EXPECT_LE(e_dec, tol(act));
  EXPECT_LE(e_state, tol(act));
}
}  // namespace
TEST(KdaPrefill, ChunkedPrefillThenDecodeF32) { expect_prefill_then_decode(DType::F32, 21); }
TEST(KdaPrefill, ChunkedPrefillThenDecodeBf16) { expect_prefill_then_decode(DType::BF16, 22); }

// tests/fixtures/tiny/kda_ops.safetensors (float64-derived): H = 2, initial state h0, T = 1..257, both
// through the prefill kernel and token by token through the decode kernel (fp32; tolerance as above).
TEST(KdaPrefill, GoldenFixture) {
  SafetensorsFile f(std::string(DS_FIXTURES_DIR) + "/tiny/kda_ops.safetensors");
  auto get = [&](const std::string& name) {
    const TensorInfo* t = f.find(name);
    EXPECT_NE(t, nullptr) << name;
    EXPECT_EQ(t->dtype, DType::F32) << name;
    const float* p = static_cast<const float*>(t->data);
    return std::vector<float>(p, p + t->numel());
  };
  constexpr int H = 2;
  for (int T : {1, 17, 64, 100, 257}) {
    std::string pre = "T";  // (built in steps: "T" + to_string + "." trips GCC 12's -Wrestrict at -O3)
    pre += std::to_string(T);
    pre += '.';
    const auto q = get(pre + "q"), k = get(pre + "k"), v = get(pre + "v"), g = get(pre + "g"), beta = get(pre + "beta"),
               h0 = get(pre + "h0"), o_ref = get(pre + "o"), hT_ref = get(pre + "hT");
    auto d_q = upload(q), d_k = upload(k), d_v = upload(v), d_g = upload(g), d_beta = upload(beta);
    const std::vector<int32_t> cu = {0, T}, slot = {0};
    auto d_cu = upload(cu), d_slot = upload(slot);
    // prefill
    {
      auto d_pool = upload(h0);
      auto d_o = poisoned(size_t(T) * H * D, DType::F32);
      gpu::DeviceBuffer ws(gpu::kda_prefill_workspace_bytes(T, 1, H, DType::F32), "kda workspace");
      gpu::KdaPrefillParams p;
      p.q = d_q.data();
      p.k = d_k.data();
      p.v = d_v.data();
      p.g = d_g.as<float>();
      p.beta = d_beta.as<float>();
      p.o = d_o.data();
      p.state_pool = d_pool.as<float>();
      p.cu_seqlens = d_cu.as<int32_t>();
      p.state_slots = d_slot.as<int32_t>();
      p.workspace = ws.data();
      p.total_tokens = T;
      p.num_seqs = 1;
      p.num_heads = H;
      gpu::run_kda_prefill(p, DType::F32, test_ctx());
      DS_CUDA_CHECK(cudaDeviceSynchronize());
      const double eo = rel_l2(download<float>(d_o, o_ref.size()), o_ref);
      const double es = rel_l2(download<float>(d_pool, hT_ref.size()), hT_ref);
      std::printf("[kda_golden] prefill T=%d o_err=%.3g state_err=%.3g\n", T, eo, es);
      EXPECT_LE(eo, kTolF32) << "prefill o, T=" << T;
      EXPECT_LE(es, kTolF32) << "prefill hT, T=" << T;
    }
    // decode, one token per call
    {
      auto d_pool = upload(h0);
      auto d_o = poisoned(size_t(T) * H * D, DType::F32);
      for (int t = 0; t < T; ++t) {
        gpu::KdaDecodeParams p;
        p.q = d_q.as<float>() + size_t(t) * H * D;
        p.k = d_k.as<float>() + size_t(t) * H * D;
        p.v = d_v.as<float>() + size_t(t) * H * D;
        p.g = d_g.as<float>() + size_t(t) * H * D;
        p.beta = d_beta.as<float>() + size_t(t) * H;
        p.o = d_o.as<float>() + size_t(t) * H * D;
        p.state_pool = d_pool.as<float>();
        p.state_slots = d_slot.as<int32_t>();
        p.num_seqs = 1;
        p.num_heads = H;
        gpu::run_kda_decode(p, DType::F32, test_ctx());
      }
      DS_CUDA_CHECK(cudaDeviceSynchronize());
      const double eo = rel_l2(download<float>(d_o, o_ref.size()), o_ref);
      const double es = rel_l2(download<float>(d_pool, hT_ref.size()), hT_ref);
      std::printf("[kda_golden] decode  T=%d o_err=%.3g state_err=%.3g\n", T, eo, es);
      EXPECT_LE(eo, kTolF32) << "decode o, T=" << T;
      EXPECT_LE(es, kTolF32) << "decode hT, T=" << T;
    }
  }
}

namespace {
// A batch of decoding sequences (some fresh) at the real head count, against the recurrence.
void expect_decode_batch(DType act, uint64_t seed) {
  constexpr int H = 32, N = 7;
  std::mt19937_64 rng(seed);
  const Batch b = make_batch(std::vector<int>(N, 1), rng);
  const KdaData x = make_kda_data(N, H, rng, false);
  Act q = make_act(x.q, act), k = make_act(x.k, act), v = make_act(x.v, act);
  std::vector<float> pool = normal(size_t(b.num_slots) * H * kSlotFloats, rng, 0.f, 0.3f);
  std::vector<float> ref_pool = pool, ref_o(size_t(N) * H * D);
  for (int s = 0; s < N; ++s)
    if (b.fresh[s]) std::fill_n(ref_pool.begin() + size_t(b.slots[s]) * H * kSlotFloats, H * kSlotFloats, 0.f);
  kernels::KdaParams rp;
  rp.q = q.host.data();
  rp.k = k.host.data();
  rp.v = v.host.data();
  rp.g = x.g.data();
  rp.beta = x.beta.data();
  rp.o = ref_o.data();
  rp.state = ref_pool.data();
  rp.cu_seqlens = b.cu.data();
  rp.slots = b.slots.data();
  rp.num_seqs = N;
  rp.H = H;
  rp.K = D;
  rp.V = D;
  kernels::run_kda_recurrent_cpu(rp);

  auto d_g = upload(x.g), d_beta = upload(x.beta), d_pool = upload(pool), d_slots = upload(b.slots),
       d_fresh = upload(b.fresh);
  auto d_o = poisoned(size_t(N) * H * D, act);
  gpu::KdaDecodeParams p;
  p.q = q.dev.data();
  p.k = k.dev.data();
  p.v = v.dev.data();
  p.g = d_g.as<float>();
  p.beta = d_beta.as<float>();
  p.o = d_o.data();
  p.state_pool = d_pool.as<float>();
  p.state_slots = d_slots.as<int32_t>();
  p.fresh = d_fresh.as<uint8_t>();
  p.num_seqs = N;
  p.num_heads = H;
  gpu::run_kda_decode(p, act, test_ctx());
  DS_CUDA_CHECK(cudaDeviceSynchronize());
  const auto o = download_act(d_o, size_t(N) * H * D, act);
  const auto got_pool = download<float>(d_pool, pool.size());
  const double eo = rel_l2(o, ref_o), es = rel_l2(got_pool, ref_pool);
  std::printf("[kda_decode] act=%s N=%d o_err=%.3g state_err=%.3g\n", act_name(act), N, eo, es);
  // The decode kernel rounds nothing but its inputs and output, so bf16 is held to the output rounding.
  EXPECT_LE(eo, tol(act));
  EXPECT_LE(es, act == DType::F32 ? kTolF32 : 1e-5);  // the state stays fp32 in both paths
}
}  // namespace
TEST(KdaDecode, BatchF32) { expect_decode_batch(DType::F32, 31); }
TEST(KdaDecode, BatchBf16) { expect_decode_batch(DType::BF16, 32); }

}  // namespace ds::attn_test
