// The FP8 MLA latent cache on the GPU (--kv-cache-dtype fp8, config/kv_cache_dtype.h) against its CPU twin:
//  - the write (run_latent_cache_write with fp8_row_bytes): each row's scale and e4m3 bytes against the CPU
//    rule (fp8_latent_round_trip on the CPU rmsnorm);
//  - the gather (prefill's key input): exactly e4m3 · scale of the stored bytes;
//  - the split-K decode (run_mla_decode with fp8_cache) against run_mla_absorbed_cpu over the dequantized
//    latents, fp32 and bf16, both tile shapes, several split counts;
//  - DeviceCaches' page-row copy (a prefix-cache hit's partial page) moves whole FP8 rows, scales included;
//  - the tiny model: the CUDA backend with the FP8 cache against the CPU backend with the FP8 cache, chunked
//    prefill then decode, routing pinned to the CPU's.
//
// Tolerances. Decode and gather read the same bytes on both sides, so they keep the bf16/fp32 cache's
// tolerances (test_mla_decode.cpp; the kernel applies the scale to the scores and to P, the twin to the
// values: fp32 reassociation only). The write computes the normalised latent in fp32 on both sides with a
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
#include "cuda/kernels/mla_decode.h"
#include "kernels/mla/op.h"
#include "kernels/norm/op.h"
#include "model/cpu_backend.h"
#include "model/safetensors.h"
#include "test_kda_util.h"

namespace ds::attn_test {
namespace {

constexpr int kLat = 512, kRope = 64, kQk = 576;
const int64_t kRow = fp8_latent_row_bytes(kQk);  // 592

// Host FP8 rows of `v` [n, kQk] by the CPU rule; `deq` receives the values they stand for.
std::vector<uint8_t> quantize_rows(const std::vector<float>& v, int64_t n, std::vector<float>* deq) {
  std::vector<uint8_t> out(size_t(n * kRow), 0);
  deq->assign(v.begin(), v.end());
  for (int64_t r = 0; r < n; ++r) {
    float* row = deq->data() + r * kQk;
    const float s = fp8_latent_round_trip(row, kQk);
    for (int i = 0; i < kQk; ++i) out[size_t(r * kRow + i)] = f32_to_fp8_e4m3(v[size_t(r * kQk + i)] / s);
    std::memcpy(out.data() + r * kRow + kQk, &s, 4);
  }
  return out;
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

// Decode over an FP8 cache in shuffled pages (rows nobody owns hold a large sentinel row).
void expect_decode_fp8(const std::vector<int>& ctx, int H, int bs, DType act, const std::vector<int>& splits,
                       uint64_t seed, int kv_tile = 0) {
  std::mt19937_64 rng(seed);
  const int rows = int(ctx.size());
  int max_blocks = 0, total_blocks = 0;
  for (int n : ctx) {
    max_blocks = std::max(max_blocks, (n + bs - 1) / bs);
    total_blocks += (n + bs - 1) / bs;
  }
  const int num_blocks = total_blocks + 3;
  std::vector<int32_t> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<int32_t> tables(size_t(rows) * max_blocks, 0);
  int next = 0;
  for (int r = 0; r < rows; ++r)
    for (int b = 0; b < (ctx[size_t(r)] + bs - 1) / bs; ++b) tables[size_t(r) * max_blocks + b] = perm[size_t(next++)];
  std::vector<float> lat = normal(size_t(num_blocks) * bs * kQk, rng);
  for (size_t i = 0; i < lat.size(); i += kQk) lat[i] *= 30.f;  // an outlier per row sets its scale
  std::vector<float> deq;
  const auto bytes = quantize_rows(lat, int64_t(num_blocks) * bs, &deq);
  Act q = make_act(normal(size_t(rows) * H * kQk, rng), act);
  std::vector<float> ref_o(size_t(rows) * H * kLat);
  std::vector<int32_t> cu(size_t(rows) + 1);
  std::iota(cu.begin(), cu.end(), 0);
  std::vector<int64_t> start(static_cast<size_t>(rows));
  for (int r = 0; r < rows; ++r) start[size_t(r)] = ctx[size_t(r)] - 1;
  kernels::MlaAbsorbedParams rp;
  rp.q = q.host.data();
  rp.cache = deq.data();
  rp.block_tables = tables.data();
  rp.cu_seqlens = cu.data();
  rp.start_pos = start.data();
  rp.o = ref_o.data();
  rp.num_seqs = rows;
  rp.H = H;
  rp.Dl = kLat;
  rp.Dr = kRope;
  rp.block_size = bs;
  rp.max_blocks = max_blocks;
  rp.scale = float(1.0 / std::sqrt(192.0));
  kernels::run_mla_absorbed_cpu(rp);
  auto d_cache = upload(bytes);
  auto d_tables = upload(tables);
  auto d_ctx = upload(ctx);
  for (int sp : splits) {
    auto d_o = poisoned(size_t(rows) * H * kLat, act);
    gpu::DeviceBuffer ws(std::max<size_t>(16, gpu::mla_decode_workspace_bytes(rows, H, sp)), "mla workspace");
    gpu::MlaDecodeParams p;
    p.q = q.dev.data();
    p.cache = d_cache.data();
    p.block_tables = d_tables.as<int32_t>();
    p.context_lens = d_ctx.as<int32_t>();
    p.o = d_o.data();
    p.workspace = ws.data();
    p.rows = rows;
    p.num_heads = H;
    p.block_size = bs;
    p.max_blocks = max_blocks;
    p.num_splits = sp;
    p.kv_tile = kv_tile;
    p.fp8_cache = true;
    gpu::run_mla_decode(p, act, test_ctx());
    DS_CUDA_CHECK(cudaDeviceSynchronize());
    const auto o = download_act(d_o, ref_o.size(), act);
    double worst = 0.0;
    for (int r = 0; r < rows; ++r)
      worst = std::max(worst, rel_l2(o.data() + size_t(r) * H * kLat, ref_o.data() + size_t(r) * H * kLat,
                                     size_t(H) * kLat));
    std::printf("[mla_decode fp8 cache] act=%s H=%d bs=%d ctx=%s splits=%d kv_tile=%d o_err=%.3g\n", act_name(act),
                H, bs, lens_str(ctx).c_str(), sp, kv_tile, worst);
    EXPECT_LE(worst, act == DType::F32 ? 1e-5 : 1e-2) << "splits " << sp;
  }
}

TEST(MlaFp8Cache, DecodeF32) {
  DS_REQUIRE_GPU();
  expect_decode_fp8({1, 63, 64, 700, 5000}, 32, 16, DType::F32, {1, 7, gpu::choose_mla_decode_splits(5, 5000, 132)}, 51);
}
TEST(MlaFp8Cache, DecodeBf16) {
  DS_REQUIRE_GPU();
  expect_decode_fp8({1, 63, 64, 700, 5000}, 32, 16, DType::BF16, {1, 7, gpu::choose_mla_decode_splits(5, 5000, 132)}, 52);
}
TEST(MlaFp8Cache, DecodeBf16Tile32) {
  DS_REQUIRE_GPU();
  expect_decode_fp8({1, 31, 32, 33, 700, 5000}, 32, 16, DType::BF16, {1, 7, 40}, 53, 32);
}
TEST(MlaFp8Cache, DecodeFewHeads) {
  DS_REQUIRE_GPU();
  expect_decode_fp8({300, 129}, 2, 64, DType::F32, {1, 3}, 54);
  expect_decode_fp8({300, 129}, 2, 64, DType::BF16, {1, 3}, 55);
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
// steps of the reference's greedy tokens, MoE routing pinned to the CPU's.
void expect_model_fp8(const std::string& dtype, double tol) {
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
  auto gpu = gpu::make_cuda_backend(o);
  gpu::cuda_force_routes(*gpu, {{0, trace.route_ids}});
  std::vector<float> got;
  for (int p = 0; p < n;) {
    const int len = p < L ? std::min(64, L - p) : 1;  // the prompt in chunks, then one token a step
    ForwardBatch step;
    step.add(0, p, std::vector<int32_t>(all.begin() + p, all.begin() + p + len), table, true);
    const auto lg = forward_logits(*gpu, step);
    got.insert(got.end(), lg.begin(), lg.end());
    p += len;
  }
  gpu::cuda_force_routes(*gpu, {});
  ASSERT_EQ(got.size(), want.size());
  const double e = rel_l2(got, want);
  std::printf("[mla fp8 cache] tiny model %s: GPU vs CPU (both FP8 cache), len150 chunks of 64 + 16 decodes: rel L2 "
              "%.3g\n", dtype.c_str(), e);
  EXPECT_LT(e, tol) << dtype;
}

TEST(MlaFp8Cache, TinyModelF32MatchesCpuTwin) {
  DS_REQUIRE_GPU();
  expect_model_fp8("float32", 2e-3);
}
TEST(MlaFp8Cache, TinyModelBf16MatchesCpuTwin) {
  DS_REQUIRE_GPU();
  expect_model_fp8("bfloat16", 3e-2);
}

}  // namespace
}  // namespace ds::attn_test
