// The KDA decode kernel with its fused prologue (short convolution with the conv-state update, gate and
// beta computed from the raw projections) against the unfused launches the model used before: the gate
// + convolution kernel followed by the plain decode kernel, on the same inputs. Same roundings in both
// paths, so outputs, recurrent states and conv states agree to fp32 reduction-order noise.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <string>

#include "cuda/kernels/delta_gate.h"
#include "cuda/kernels/kda_decode.h"
#include "gpu_test_util.h"

namespace ds::gpu::test {
namespace {

struct DecodeOut {
  std::vector<float> o, pool, conv, conv0;
};

// N sequences of H = 4 heads in slots 0..slots-1 (seq_slot; fresh: start from S = 0): the fused kernel
// (`fused`) or the gate + convolution kernel then the plain decode kernel.
DecodeOut run_decode(DType t, const std::vector<int32_t>& seq_slot, const std::vector<uint8_t>& fresh, int slots,
                     bool fused, bool skip_padding = false) {
  DeviceContext ctx = test_ctx();
  const int N = int(seq_slot.size()), H = 4, D = 128, HK = H * D, W = 4;
  auto x = to_device(randn(size_t(N) * 3 * HK, 11), t);  // raw q, k, v projections
  auto f = to_device(randn(size_t(N) * HK, 12), t);
  auto b = to_device(randn(size_t(N) * H, 13), t);
  auto cw = to_device(randn(size_t(3) * HK * W, 14, 0.5f), t);
  const auto conv_state0 = rounded(randn(size_t(slots) * (W - 1) * 3 * HK, 15), t);
  const auto pool0 = randn(size_t(slots) * H * D * D, 16, 0.1f);
  auto a_log = to_device(randn(H, 17, 0.5f), DType::F32);
  auto dt_bias = to_device(randn(HK, 18, 0.5f), DType::F32);
  auto d_slots = to_device_raw(seq_slot);
  auto d_fresh = to_device_raw(fresh);
  auto conv_state = to_device(conv_state0, t);
  auto pool = to_device(pool0, DType::F32);
  DeviceBuffer qkv(size_t(N) * 3 * HK * dtype_size(t)), g32(size_t(N) * HK * 4), beta(size_t(N) * H * 4),
      o(size_t(N) * HK * dtype_size(t));
  poison(qkv);
  poison(o);
  Conv1dParams c;
  c.x = x.data();
  c.ldx = 3 * HK;
  c.weight = cw.data();
  c.y = qkv.data();
  c.state = conv_state.data();
  c.slots = d_slots.as<int32_t>();
  c.num_seqs = N;
  c.tokens = N;
  c.channels = 3 * HK;
  c.kernel = W;
  KdaGateParams g;
  g.f = f.data();
  g.ldf = HK;
  g.b = b.data();
  g.ldb = H;
  g.A_log = a_log.as<float>();
  g.dt_bias = dt_bias.as<float>();
  g.g = g32.as<float>();
  g.beta = beta.as<float>();
  g.tokens = N;
  g.heads = H;
  g.head_dim = D;
  KdaDecodeParams k;
  k.o = o.data();
  k.state_pool = pool.as<float>();
  k.state_slots = d_slots.as<int32_t>();
  k.fresh = d_fresh.as<uint8_t>();
  k.num_seqs = N;
  k.num_heads = H;
  k.skip_padding = skip_padding;
  if (fused) {
    k.fuse_conv = k.fuse_gate = true;
    k.conv = c;
    k.gate = g;
  } else {
    run_kda_gate_and_conv_decode(g, c, t, ctx);
    k.q = qkv.data();
    k.k = static_cast<char*>(qkv.data()) + size_t(HK) * dtype_size(t);
    k.v = static_cast<char*>(qkv.data()) + size_t(2 * HK) * dtype_size(t);
    k.ldq = k.ldk = k.ldv = 3 * HK;
    k.g = g32.as<float>();
    k.beta = beta.as<float>();
  }
  run_kda_decode(k, t, ctx);
  DS_CUDA_CHECK(cudaDeviceSynchronize());
  return DecodeOut{to_host(o.data(), size_t(N) * HK, t), to_host(pool.data(), pool0.size(), DType::F32),
                   to_host(conv_state.data(), conv_state0.size(), t), conv_state0};
}

void check_fused_decode(DType t) {
  const std::vector<int32_t> seq_slot = {2, 0, 5};
  const std::vector<uint8_t> fresh = {0, 1, 0};
  const DecodeOut a = run_decode(t, seq_slot, fresh, 6, false), f2 = run_decode(t, seq_slot, fresh, 6, true);
  const double eo = rel_l2(f2.o, a.o), es = rel_l2(f2.pool, a.pool);
  std::printf("[kda_decode fused] %s: o %.3g, state %.3g\n", std::string(dtype_name(t)).c_str(), eo, es);
  EXPECT_LT(eo, t == DType::BF16 ? 4e-3 : 1e-6);  // bf16: at most an output rounding flip here and there
  EXPECT_LT(es, 1e-6);
  EXPECT_EQ(f2.conv, a.conv);                       // the tails hold raw inputs: exact
  EXPECT_NE(f2.conv, a.conv0);                      // and they did move
}

TEST(GpuOps, KdaDecodeFusedPrologueF32) {
  DS_REQUIRE_GPU();
  check_fused_decode(DType::F32);
}

TEST(GpuOps, KdaDecodeFusedPrologueBf16) {
  DS_REQUIRE_GPU();
  check_fused_decode(DType::BF16);
}

// A graph bucket's padding rows (fresh 2, KdaDecodeParams::skip_padding): zeros out, their slot's state and
// conv tail untouched, the other rows exactly as when the padding rows run as fresh rows (1); without
// skip_padding, 2 is a fresh row like 1.
TEST(GpuOps, KdaDecodeSkipsPaddingRows) {
  DS_REQUIRE_GPU();
  const int H = 4, D = 128, HK = H * D, W = 4, pad = 4;
  const std::vector<int32_t> seq_slot = {2, 0, pad, pad};
  for (DType t : {DType::F32, DType::BF16}) {
    const DecodeOut skip = run_decode(t, seq_slot, {0, 1, 2, 2}, 6, true, true);
    const DecodeOut run = run_decode(t, seq_slot, {0, 1, 1, 1}, 6, true, true);
    EXPECT_EQ(std::vector<float>(skip.o.begin(), skip.o.begin() + 2 * HK),
              std::vector<float>(run.o.begin(), run.o.begin() + 2 * HK));
    // skip_padding off: 2 is a fresh row (distinct slots here: rows sharing a slot race on its conv tail)
    const DecodeOut off = run_decode(t, {2, 0, 3, 4}, {0, 1, 2, 2}, 6, true, false);
    const DecodeOut one = run_decode(t, {2, 0, 3, 4}, {0, 1, 1, 1}, 6, true, false);
    EXPECT_EQ(off.o, one.o);
    EXPECT_EQ(off.pool, one.pool);
    EXPECT_EQ(std::vector<float>(skip.o.begin() + 2 * HK, skip.o.end()), std::vector<float>(2 * size_t(HK), 0.f));
    const size_t st = size_t(H) * D * D, cv = size_t(W - 1) * 3 * HK;
    for (int slot = 0; slot < 6; ++slot) {
      const std::vector<float> a(skip.pool.begin() + slot * st, skip.pool.begin() + (slot + 1) * st);
      const std::vector<float> b(run.pool.begin() + slot * st, run.pool.begin() + (slot + 1) * st);
      const std::vector<float> c(skip.conv.begin() + slot * cv, skip.conv.begin() + (slot + 1) * cv);
      const std::vector<float> c0(skip.conv0.begin() + slot * cv, skip.conv0.begin() + (slot + 1) * cv);
      if (slot == pad) {
        EXPECT_NE(a, b) << "the padding slot's state: written when the rows run";
        EXPECT_EQ(c, c0) << "the padding slot's conv tail: untouched when skipped";
      } else {
        EXPECT_EQ(a, b) << "slot " << slot;
      }
    }
    // the padding slot's state, untouched when skipped: the pool it started from (run_decode's seed)
    const DecodeOut again = run_decode(t, {2, 0}, {0, 1}, 6, true, true);
    EXPECT_EQ(std::vector<float>(skip.pool.begin() + pad * st, skip.pool.begin() + (pad + 1) * st),
              std::vector<float>(again.pool.begin() + pad * st, again.pool.begin() + (pad + 1) * st));
  }
}

}  // namespace
}  // namespace ds::gpu::test
