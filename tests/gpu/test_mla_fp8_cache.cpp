// The FP8 MLA latent cache on the GPU (--kv-cache-dtype fp8, config/kv_cache_dtype.h) against its CPU twin:
//  - the write (run_latent_cache_write with fp8_row_bytes): each row's scale and e4m3 bytes against the CPU
//    rule (fp8_latent_round_trip on the CPU rmsnorm);
//  - the gather (prefill's key input): exactly e4m3 · scale of the stored bytes;
//  (the split-K decode over FP8 rows is MlaDecodeFp8.* in test_mla_decode.cpp);
//  - DeviceCaches' page-row copy (a prefix-cache hit's partial page) moves whole FP8 rows, scales included;
//  - the tiny model: the CUDA backend with the FP8 cache against the CPU backend with the FP8 cache, chunked
//    prefill then decode, routing pinned to the CPU's.
//
// Tolerances. The gather reads the same bytes on both sides: exact. The write computes the normalised latent in fp32 on both sides with a
// different summation order: a value within fp32 rounding of an e4m3 rounding boundary may round the other
// way, i.e. one e4m3 step (2^-3 of it); allowed for at most 1 in 1000 values, every other byte equal.
// Model: fp32 activations 2e-3 (those rare one-step differences, each moving one cached value by 2^-3 of it,
// on top of the 1e-4 of the bf16 cache tests); bf16 activations 3e-2 (the bf16 cache's pinned 2e-2, plus
// the extra rounding of the dequantized keys to bf16 in the prefill expansion).
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "config/kv_cache_dtype.h"
#include "core/dtype.h"
#include "cuda/cuda_backend.h"
#include "cuda/device_caches.h"
#include "cuda/kernels/latent_cache.h"
#include "kernels/norm/op.h"
#include "model/cpu_backend.h"
#include "model/safetensors.h"
#include "test_kda_util.h"
#include "test_mla_util.h"

namespace ds::attn_test {
namespace {

constexpr int kLat = 512, kRope = 64, kQk = 576;
const int64_t kRow = fp8_latent_row_bytes(kQk);  // 592

std::vector<uint8_t> quantize_rows(const std::vector<float>& v, int64_t n, std::vector<float>* deq) {
  return fp8_latent_rows(v, n, kQk, deq);
}

float row_scale(const uint8_t* row) {
  float s;
  std::memcpy(&s, row + kQk, 4);
  return s;
}

TEST(MlaFp8Cache, WriteQuantizesEachRowLikeTheCpu) {
  DS_REQUIRE_GPU();
  const int T = 6, ld = 1024 + kQk, bs = 16, blocks = 4;
  const std::vector<int32_t> mapping = {0, 17, 63, 5, 32, 40};
  for (DType act : {DType::F32, DType::BF16}) {
    std::mt19937_64 rng(91);
    std::vector<float> kv = normal(size_t(T) * ld, rng, 0.f, 2.f);
    for (int t = 0; t < T; ++t)  // k_pe of very different sizes per row: the scale must follow the row
      for (int i = kLat; i < kQk; ++i) kv[size_t(t) * ld + i] *= std::ldexp(1.f, 2 * t - 4);
    Act dkv = make_act(kv, act), dw = make_act(normal(kLat, rng, 1.f, 0.2f), act);
    auto dm = upload(mapping);
    gpu::DeviceBuffer cache(size_t(blocks) * bs * kRow, "fp8 cache");
    DS_CUDA_CHECK(cudaMemset(cache.data(), 0, cache.bytes()));
    gpu::LatentCacheWriteParams p;
    p.kv_a = dkv.dev.data();
    p.ld_kv_a = ld;
    p.norm_weight = dw.dev.data();
    p.cache = cache.data();
    p.cache_rows = dm.as<int32_t>();
    p.tokens = T;
    p.R = kLat;
    p.Dr = kRope;
    p.fp8_row_bytes = kRow;
    gpu::run_latent_cache_write(p, act, test_ctx());
    DS_CUDA_CHECK(cudaDeviceSynchronize());
    const auto got = download<uint8_t>(cache, cache.bytes());
    // CPU: rmsnorm of the (act-rounded) inputs in fp32, k_pe raw, then the FP8 rule.
    std::vector<float> lat(size_t(T) * kQk);
    for (int t = 0; t < T; ++t) std::copy_n(dkv.host.data() + size_t(t) * ld, kQk, lat.data() + size_t(t) * kQk);
    kernels::run_rmsnorm_cpu({.x = lat.data(), .w = dw.host.data(), .y = lat.data(), .rows = T, .dim = kLat,
                              .ldx = kQk, .ldy = kQk, .eps = 1e-6f});
    std::vector<float> deq;
    const auto want = quantize_rows(lat, T, &deq);
    int differ = 0;
    for (int t = 0; t < T; ++t) {
      const uint8_t* g = got.data() + int64_t(mapping[size_t(t)]) * kRow;
      const uint8_t* w = want.data() + int64_t(t) * kRow;
      EXPECT_NEAR(row_scale(g), row_scale(w), 1e-5 * row_scale(w)) << act_name(act) << " token " << t;
      for (int i = 0; i < kQk; ++i) {
        if (g[i] == w[i]) continue;
        ++differ;
        const float a = fp8_e4m3_to_f32(g[i]), b = fp8_e4m3_to_f32(w[i]);
        EXPECT_LE(std::fabs(a - b), std::fabs(b) / 8 + std::ldexp(1.f, -9) + 1e-6f)
            << act_name(act) << " token " << t << " value " << i << ": more than one e4m3 step apart";
      }
    }
    std::printf("[mla fp8 write] act=%s: %d of %d e4m3 bytes differ from the CPU's by one step\n", act_name(act),
                differ, T * kQk);
    EXPECT_LE(differ, std::max(1, T * kQk / 1000)) << act_name(act);
  }
}

TEST(MlaFp8Cache, GatherDequantizesExactly) {
  DS_REQUIRE_GPU();
  std::mt19937_64 rng(92);
  const int rows = 40, bs = 16, blocks = 4;
  std::vector<float> deq;
  const auto bytes = quantize_rows(normal(size_t(blocks) * bs * kQk, rng), int64_t(blocks) * bs, &deq);
  auto cache = upload(bytes);
  const std::vector<int32_t> table = {2, 0, 3, 1};
  auto dt = upload(table);
  for (DType act : {DType::F32, DType::BF16}) {
    auto dst = poisoned(size_t(rows) * kQk, act);
    gpu::LatentGatherParams g;
    g.cache = cache.data();
    g.block_tables = dt.as<int32_t>();
    g.bt_stride = int(table.size());
    g.block_size = bs;
    g.pos0 = 7;
    g.dst = dst.data();
    g.rows = rows;
    g.D = kQk;
    g.fp8_row_bytes = kRow;
    gpu::run_latent_gather(g, act, test_ctx());
    DS_CUDA_CHECK(cudaDeviceSynchronize());
    const auto got = download_act(dst, size_t(rows) * kQk, act);
    for (int r = 0; r < rows; ++r) {
      const int64_t pos = 7 + r, crow = int64_t(table[size_t(pos / bs)]) * bs + pos % bs;
      for (int i = 0; i < kQk; ++i) {
        float want = deq[size_t(crow * kQk + i)];
        if (act == DType::BF16) want = bf16_to_f32(f32_to_bf16(want));
        ASSERT_EQ(got[size_t(r) * kQk + i], want) << act_name(act) << " row " << r << " value " << i;
      }
    }
  }
}

TEST(MlaFp8Cache, PageRowCopyMovesWholeRows) {
  DS_REQUIRE_GPU();
  const ModelConfig c = ModelConfig::from_file(std::string(DS_FIXTURES_DIR) + "/tiny/model/config.json");
  ASSERT_GT(c.num_mla_layers(), 0);
  gpu::CacheShape shape;
  shape.num_slots = 1;
  shape.num_blocks = 4;
  shape.block_size = 16;
  shape.mla_dtype = KvCacheDtype::Fp8;
  gpu::DeviceCaches caches(c, DType::F32, shape, test_ctx());
  const int64_t row = caches.latent_fp8_row_bytes();
  ASSERT_EQ(row, fp8_latent_row_bytes(c.mla.latent_dim()));
  EXPECT_EQ(caches.unit().per_block, size_t(c.num_mla_layers()) * 16 * size_t(row));
  const size_t page = size_t(row) * 16;
  std::vector<uint8_t> src(page);
  for (size_t i = 0; i < page; ++i) src[i] = uint8_t(i * 37 + 11);
  for (int l = 0; l < c.num_mla_layers(); ++l)
    DS_CUDA_CHECK(cudaMemcpy(static_cast<char*>(caches.mla_layer(l)) + 1 * page, src.data(), page, cudaMemcpyHostToDevice));
  caches.copy_page_rows(1, 3, 5, test_ctx());
  DS_CUDA_CHECK(cudaDeviceSynchronize());
  for (int l = 0; l < c.num_mla_layers(); ++l) {
    std::vector<uint8_t> got(page);
    DS_CUDA_CHECK(cudaMemcpy(got.data(), static_cast<char*>(caches.mla_layer(l)) + 3 * page, page, cudaMemcpyDeviceToHost));
    EXPECT_TRUE(std::equal(got.begin(), got.begin() + 5 * row, src.begin())) << "layer " << l;
    EXPECT_TRUE(std::all_of(got.begin() + 5 * row, got.end(), [](uint8_t b) { return b == 0; })) << "layer " << l;
  }
}

// The tiny model end to end: GPU (FP8 cache) against CPU (FP8 cache), len150 in chunks of 64 then 16 decode
// steps of the reference's greedy tokens, MoE routing pinned to the CPU's. piece > 0: the GPU's prefill
// expansion holds that many keys, so later chunks gather and attend the FP8 context piece by piece.
void expect_model_fp8(const std::string& dtype, double tol, int piece = 0) {
  const std::string tiny = std::string(DS_FIXTURES_DIR) + "/tiny";
  SafetensorsFile ref(tiny + "/reference.safetensors");
  auto ints = [&](const std::string& n) {
    const TensorInfo* t = ref.find(n);
    std::vector<int32_t> v(t ? size_t(t->numel()) : 0);
    if (t) std::memcpy(v.data(), t->data, v.size() * 4);
    return v;
  };
  const auto ids = ints("len150.ids"), greedy = ints("len150.greedy");
  ASSERT_FALSE(ids.empty());
  std::vector<int32_t> all = ids;
  all.insert(all.end(), greedy.begin(), greedy.begin() + std::min<size_t>(16, greedy.size()));
  const int L = int(ids.size()), n = int(all.size());
  std::vector<int32_t> table(size_t((n + 15) / 16));
  for (size_t i = 0; i < table.size(); ++i) table[i] = int32_t(i * 5 % 64);  // scattered pages

  BackendOptions o;
  o.model_dir = tiny + "/model";
  o.max_num_seqs = 1;
  o.block_size = 16;
  o.num_blocks = 64;
  o.kv_cache_dtype = KvCacheDtype::Fp8;
  CpuBackend cpu(o);
  ForwardTrace trace;
  cpu.set_trace(&trace);
  ForwardBatch fb;
  fb.add(0, 0, all, table, true);
  const auto want = forward_logits(cpu, fb);
  cpu.set_trace(nullptr);

  o.device = "cuda";
  o.dtype = dtype;
  o.mla_context_piece = piece;
  auto dev = make_cuda_backend(o);
  cuda_force_routes(*dev, {{0, trace.route_ids}});
  std::vector<float> got;
  for (int p = 0; p < n;) {
    const int len = p < L ? std::min(64, L - p) : 1;  // the prompt in chunks, then one token a step
    ForwardBatch step;
    step.add(0, p, std::vector<int32_t>(all.begin() + p, all.begin() + p + len), table, true);
    const auto lg = forward_logits(*dev, step);
    got.insert(got.end(), lg.begin(), lg.end());
    p += len;
  }
  cuda_force_routes(*dev, {});
  ASSERT_EQ(got.size(), want.size());
  const double e = rel_l2(got, want);
  std::printf("[mla fp8 cache] tiny model %s, piece %d: GPU vs CPU (both FP8 cache), len150 chunks of 64 + 16 "
              "decodes: rel L2 %.3g\n", dtype.c_str(), piece, e);
  EXPECT_LT(e, tol) << dtype;
}

TEST(MlaFp8Cache, TinyModelF32MatchesCpuTwin) {
  DS_REQUIRE_GPU();
  expect_model_fp8("float32", 2e-3);
}
TEST(MlaFp8Cache, TinyModelF32ContextPiecesMatchCpuTwin) {
  DS_REQUIRE_GPU();
  expect_model_fp8("float32", 2e-3, 32);
}
TEST(MlaFp8Cache, TinyModelBf16MatchesCpuTwin) {
  DS_REQUIRE_GPU();
  expect_model_fp8("bfloat16", 3e-2);
}

}  // namespace
}  // namespace ds::attn_test
