// Absorbed MLA decode over the paged latent cache, against the CPU twin (run_mla_absorbed_cpu, fp32).
// (The model writes the cache with run_latent_cache_write, tested in test_ops_basic.) The same cases over
// the FP8 cache of --kv-cache-dtype fp8 (MlaDecodeFp8.*): the twin attends over the dequantized latents,
// the kernel reads the same bytes, so the tolerances stay those below (the kernel scales the scores and P,
// the twin the values: fp32 reassociation only).
//
// Tolerances (relative L2 over all rows):
//  - fp32, 1e-5: 3xTF32 products (~fp32), ex2.approx (2^-22), fp32 softmax and accumulation; the split-K
//    combine rescales by 2^(lse_s − max) in fp32. Kernel and twin each sit at ~1e-6 of the exact value.
//  - bf16, 1e-2: q and the cache are rounded to bf16 for both sides; the kernel also rounds the softmax
//    weights P to bf16 (2^-9 relative) before P·C and writes ō in bf16 (2^-9).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "cuda/kernels/mla_decode.h"
#include "kernels/mla/op.h"
#include "test_kda_util.h"
#include "test_mla_util.h"

namespace ds::attn_test {
namespace {

constexpr int kLat = 512, kRope = 64, kQk = 576;

bool g_wgmma_pipe = false;  // MlaDecodeParams::wgmma_pipe of expect_decode's runs (MlaDecode.WgmmaPipelined sets it)
bool g_f8_mma = false;      // MlaDecodeParams::f8_mma (MlaDecode.Fp8TensorCores sets it)
double g_bf16_tol = 1e-2;   // the bf16 tolerance below (MlaDecode.Fp8TensorCores widens it for one case)

struct PagedCase {
  std::vector<int> ctx;  // context length per row (the current token included)
  int H = 32;
  int block_size = 16;
};

// Builds a paged cache of random latents in shuffled pages (unused rows hold a sentinel), then decodes
// every row with several split counts.
void expect_decode(const PagedCase& c, DType act, const std::vector<int>& split_counts, uint64_t seed,
                   int kv_tile = 0, bool fp8 = false, int warps = 0, int ctas = 0, bool wgmma = false,
                   bool wide_scales = false) {
  std::mt19937_64 rng(seed);
  const int rows = int(c.ctx.size()), bs = c.block_size, H = c.H;
  int max_blocks = 0, total_blocks = 0, total_tokens = 0;
  for (int n : c.ctx) {
    max_blocks = std::max(max_blocks, (n + bs - 1) / bs);
    total_blocks += (n + bs - 1) / bs;
    total_tokens += n;
  }
  const int num_blocks = total_blocks + 3;
  std::vector<int32_t> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<int32_t> tables(size_t(rows) * max_blocks, -1), slot_mapping;
  int next = 0;
  for (int r = 0; r < rows; ++r) {
    const int nb = (c.ctx[r] + bs - 1) / bs;
    for (int b = 0; b < nb; ++b) tables[size_t(r) * max_blocks + b] = perm[next++];
    for (int pos = 0; pos < c.ctx[r]; ++pos) slot_mapping.push_back(tables[size_t(r) * max_blocks + pos / bs] * bs + pos % bs);
  }
  // Cache rows [ĉ (512) ; k_pe (64)] in the activation type; rows nobody owns keep a sentinel.
  Act latents = make_act(normal(size_t(total_tokens) * kQk, rng), act);
  Act q = make_act(normal(size_t(rows) * H * kQk, rng), act);
  std::vector<float> cache(size_t(num_blocks) * bs * kQk, 7.0f);
  for (int t = 0; t < total_tokens; ++t)
    std::copy_n(latents.host.data() + size_t(t) * kQk, kQk, cache.data() + size_t(slot_mapping[t]) * kQk);
  gpu::DeviceBuffer d_cache;
  if (fp8) {  // FP8 rows; the twin reads what they stand for
    for (size_t i = 0; i < cache.size(); i += kQk) cache[i] *= 30.f;  // an outlier per row sets its scale
    if (wide_scales)  // row scales 2^-8 .. 2^8 apart (the wgmma kernel keeps its f16 Pᵀ in range by them)
      for (size_t i = 0; i < cache.size(); ++i) cache[i] = std::ldexp(cache[i], int((i / kQk) % 17) - 8);
    std::vector<float> deq;
    std::vector<uint8_t> bytes = fp8_latent_rows(cache, int64_t(num_blocks) * bs, kQk, &deq);
    if (g_f8_mma && wgmma && act == DType::BF16) {  // (the FP8 tensor-core form's runs) rows nobody owns as never-written memory at its worst: e4m3 NaNs and a NaN scale (the
                     // FP8 tensor-core form copies whole pages and must mask the rows past the context)
      std::vector<char> owned(size_t(num_blocks) * bs, 0);
      for (int32_t slot : slot_mapping) owned[size_t(slot)] = 1;
      const size_t rb = bytes.size() / owned.size();
      for (size_t r = 0; r < owned.size(); ++r)
        if (!owned[r]) std::fill_n(bytes.begin() + int64_t(r * rb), rb, uint8_t(0xFF));
    }
    d_cache = upload(bytes);
    cache = std::move(deq);
  } else {
    d_cache = std::move(make_act(cache, act).dev);  // exact: every value is already representable in act
  }

  // Reference: one query token per row at position ctx - 1.
  std::vector<float> ref_o(size_t(rows) * H * kLat);
  std::vector<int32_t> cu(rows + 1);
  std::iota(cu.begin(), cu.end(), 0);
  std::vector<int64_t> start(rows);
  for (int r = 0; r < rows; ++r) start[r] = c.ctx[r] - 1;
  kernels::MlaAbsorbedParams rp;
  rp.q = q.host.data();
  rp.cache = cache.data();
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

  auto d_tables = upload(tables);
  auto d_ctx = upload(c.ctx);
  for (int splits : split_counts) {
    auto d_o = poisoned(size_t(rows) * H * kLat, act);
    gpu::DeviceBuffer ws(std::max<size_t>(16, gpu::mla_decode_workspace_bytes(rows, H, splits)), "mla workspace");
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
    p.num_splits = splits;
    p.kv_tile = kv_tile;
    p.fp8_cache = fp8;
    p.warps = warps;
    p.ctas_per_sm = ctas;
    p.wgmma = wgmma;
    p.wgmma_pipe = g_wgmma_pipe;
    p.f8_mma = g_f8_mma;
    gpu::run_mla_decode(p, act, test_ctx());
    DS_CUDA_CHECK(cudaDeviceSynchronize());
    const auto o = download_act(d_o, ref_o.size(), act);
    double worst = 0.0;
    for (int r = 0; r < rows; ++r)
      worst = std::max(worst, rel_l2(o.data() + size_t(r) * H * kLat, ref_o.data() + size_t(r) * H * kLat, size_t(H) * kLat));
    std::printf("[mla_decode%s] act=%s H=%d bs=%d ctx=%s splits=%d kv_tile=%d warps=%d ctas=%d wgmma=%d%s "
                "%s o_err=%.3g\n",
                fp8 ? " fp8 cache" : "", act_name(act), H, bs, lens_str(c.ctx).c_str(), splits, kv_tile, warps, ctas,
                int(wgmma), g_wgmma_pipe ? " pipelined" : "", g_f8_mma ? " f8mma" : "", worst);
    EXPECT_LE(worst, act == DType::F32 ? 1e-5 : g_bf16_tol) << "splits " << splits;
  }
}

}  // namespace

// Contexts of one position, around the 64-position tile, and long ones; split counts: none, odd, and
// the heuristic's choice (more splits than a short row has tiles leaves empty splits, which the combine
// must ignore).
TEST(MlaDecode, PagedF32) {
  const std::vector<int> ctx = {1, 63, 64, 700, 5000};
  expect_decode({ctx, 32, 16}, DType::F32, {1, 7, gpu::choose_mla_decode_splits(5, 5000, 132)}, 41);
}
TEST(MlaDecode, PagedBf16) {
  const std::vector<int> ctx = {1, 63, 64, 700, 5000};
  expect_decode({ctx, 32, 16}, DType::BF16, {1, 7, gpu::choose_mla_decode_splits(5, 5000, 132)}, 42);
}
// The 4-stage pipeline of 32-position tiles (long contexts): tiles partly past a row's end, splits of a
// few tiles and of none.
TEST(MlaDecode, PagedBf16Tile32) {
  const std::vector<int> ctx = {1, 31, 32, 33, 700, 5000};
  expect_decode({ctx, 32, 16}, DType::BF16, {1, 7, 40, gpu::choose_mla_decode_splits(6, 5000, 132)}, 45, 32);
}
TEST(MlaDecode, FewHeadsBf16Tile32) { expect_decode({{300, 129}, 2, 64}, DType::BF16, {1, 3}, 46, 32); }
// The tiny fixture model's two heads and a larger page.
TEST(MlaDecode, FewHeadsF32) { expect_decode({{300, 129}, 2, 64}, DType::F32, {1, 3}, 43); }
TEST(MlaDecode, FewHeadsBf16) { expect_decode({{300, 129}, 2, 64}, DType::BF16, {1, 3}, 44); }

TEST(MlaDecodeFp8, PagedF32) {
  expect_decode({{1, 63, 64, 700, 5000}, 32, 16}, DType::F32, {1, 7, gpu::choose_mla_decode_splits(5, 5000, 132)}, 51,
                0, true);
}
TEST(MlaDecodeFp8, PagedBf16) {
  expect_decode({{1, 63, 64, 700, 5000}, 32, 16}, DType::BF16, {1, 7, gpu::choose_mla_decode_splits(5, 5000, 132)},
                52, 0, true);
}
TEST(MlaDecodeFp8, PagedBf16Tile32) {
  expect_decode({{1, 31, 32, 33, 700, 5000}, 32, 16}, DType::BF16, {1, 7, 40}, 53, 32, true);
}
TEST(MlaDecodeFp8, FewHeads) {
  expect_decode({{300, 129}, 2, 64}, DType::F32, {1, 3}, 54, 0, true);
  expect_decode({{300, 129}, 2, 64}, DType::BF16, {1, 3}, 55, 0, true);
}

// 16 warps a CTA (DELTASERVE_CUDA_MLA_DECODE_WARPS=16): key groups of 16 (tile 64) and 8 (tile 32) positions,
// 32 output columns a warp, 16 softmax threads a head; bf16 and FP8 caches, few heads. fp32 runs 8 warps.
TEST(MlaDecode, Warps16) {
  const std::vector<int> ctx = {1, 31, 33, 63, 64, 700, 5000};
  const int heur = gpu::choose_mla_decode_splits(int(ctx.size()), 5000, 132);
  expect_decode({ctx, 32, 16}, DType::BF16, {1, 7, heur}, 61, 64, false, 16);
  expect_decode({ctx, 32, 16}, DType::BF16, {1, 7, 40, heur}, 62, 32, false, 16);
  expect_decode({ctx, 32, 16}, DType::BF16, {1, 7, heur}, 63, 64, true, 16);
  expect_decode({ctx, 32, 16}, DType::BF16, {1, 7, 40}, 64, 32, true, 16);
  expect_decode({{300, 129}, 2, 64}, DType::BF16, {1, 3}, 65, 64, false, 16);
  expect_decode({{300, 129}, 2, 64}, DType::F32, {1, 3}, 66, 0, false, 16);
}

// Two CTAs an SM (DELTASERVE_CUDA_MLA_DECODE_CTAS=2, bf16): 32-position tiles in one stage, the FP8 raw rows
// over the scores' shared memory, Q fragments reloaded, L2 prefetch ahead; bf16 and FP8 caches, few heads,
// split counts of the heuristic for two CTAs an SM. fp32 runs its own path.
TEST(MlaDecode, TwoCtasPerSm) {
  const std::vector<int> ctx = {1, 31, 32, 33, 63, 64, 700, 5000};
  const int heur = gpu::choose_mla_decode_splits(int(ctx.size()), 5000, 132, 2);
  expect_decode({ctx, 32, 16}, DType::BF16, {1, 7, 40, heur}, 71, 0, false, 0, 2);
  expect_decode({ctx, 32, 16}, DType::BF16, {1, 7, 40, heur}, 72, 0, true, 0, 2);
  expect_decode({{300, 129}, 2, 64}, DType::BF16, {1, 3}, 73, 0, false, 0, 2);
  expect_decode({{300, 129}, 2, 64}, DType::BF16, {1, 3}, 74, 0, true, 0, 2);
  expect_decode({{300, 129}, 2, 64}, DType::F32, {1, 3}, 75, 0, true, 0, 2);
}

// The Hopper kernel (DELTASERVE_CUDA_MLA_DECODE_WGMMA=1, bf16 on sm_90): contexts of one position, around one
// and two 64-position tiles and long ones (splits of no tile, 1, 2 and 3+ tiles), with the last tile partly
// past the end; bf16 and FP8 caches, few heads, a larger page, FP8 row scales far apart; fp32 ignores the flag.
void expect_wgmma_cases(bool wide_scales = true) {
  const std::vector<int> ctx = {1, 16, 63, 64, 65, 127, 128, 129, 200, 700, 5000};
  const int heur = gpu::choose_mla_decode_splits(int(ctx.size()), 5000, 132);
  expect_decode({ctx, 32, 16}, DType::BF16, {1, 7, 40, 160, heur}, 81, 0, false, 0, 0, true);
  expect_decode({ctx, 32, 16}, DType::BF16, {1, 7, 40, 160, heur}, 82, 0, true, 0, 0, true);
  expect_decode({{300, 129}, 2, 64}, DType::BF16, {1, 3}, 83, 0, false, 0, 0, true);
  expect_decode({{300, 129}, 2, 64}, DType::BF16, {1, 3}, 84, 0, true, 0, 0, true);
  expect_decode({{300, 129}, 2, 64}, DType::F32, {1, 3}, 85, 0, true, 0, 0, true);
  if (wide_scales) expect_decode({{3000, 70, 1}, 32, 16}, DType::BF16, {1, 5}, 86, 0, true, 0, 0, true, true);
}

TEST(MlaDecode, Wgmma) { expect_wgmma_cases(); }

// Its pipelined form (MlaDecodeParams::wgmma_pipe: one warpgroup the scores of all heads, the other the output
// a tile behind), the same cases.
TEST(MlaDecode, WgmmaPipelined) {
  g_wgmma_pipe = true;
  expect_wgmma_cases();
  g_wgmma_pipe = false;
}

// The FP8 tensor-core form over the FP8 cache (MlaDecodeParams::f8_mma, mla_decode_f8.h: e4m3 MMAs on the cache
// bytes, Q and P split into e4m3 hi + lo): the cases above (the bf16-cache and fp32 ones ignore the flag), plus
// splits of many 64-position tiles (more than its 4-stage ring; each tile's product is added outside the tensor
// cores, whose ~14-bit accumulation over 300 tiles measured 0.046 here), pages of 8, 32 and 128 rows (its TMA
// boxes are a page's rows of a tile) and 1-position pages (run by the f16 form: no TMA boxes of one row). Rows
// nobody owns hold NaN bytes here (expect_decode), which its last tiles must mask. Q8 carries ~2^-9
// relative rounding (bf16's) that the twin's exact q does not: with row scales 2^16 apart the logits reach
// ~400, where a 2^-9 error moves them by ~1, so that case measures 0.047 (session 21) and is held to 0.1 (a layout
// or scale error gives O(1)); at ordinary logits the error is ~0.002.
TEST(MlaDecode, Fp8TensorCores) {
  g_f8_mma = true;
  expect_wgmma_cases(false);
  expect_decode({{20000, 9000, 1}, 32, 16}, DType::BF16, {1, 3, 11}, 87, 0, true, 0, 0, true);
  expect_decode({{700, 65}, 32, 1}, DType::BF16, {1, 2}, 88, 0, true, 0, 0, true, true);
  expect_decode({{700, 65, 130}, 32, 8}, DType::BF16, {1, 2}, 89, 0, true, 0, 0, true);
  expect_decode({{700, 65, 130}, 32, 32}, DType::BF16, {1, 3}, 90, 0, true, 0, 0, true);
  expect_decode({{700, 65, 300}, 32, 128}, DType::BF16, {1, 3}, 91, 0, true, 0, 0, true);
  g_bf16_tol = 0.1;
  expect_decode({{3000, 70, 1}, 32, 16}, DType::BF16, {1, 5}, 86, 0, true, 0, 0, true, true);
  g_bf16_tol = 1e-2;
  g_f8_mma = false;
}

TEST(MlaDecode, SplitHeuristic) {
  EXPECT_EQ(gpu::choose_mla_decode_splits(1, 100000, 132), 132);  // one long row fills the GPU
  EXPECT_EQ(gpu::choose_mla_decode_splits(1, 100, 132), 1);       // under two tiles: not split
  EXPECT_EQ(gpu::choose_mla_decode_splits(1, 1024, 132), 16);     // one 64-position tile per split
  EXPECT_EQ(gpu::choose_mla_decode_splits(200, 4000, 132), 1);    // many rows already fill it
  EXPECT_EQ(gpu::choose_mla_decode_splits(0, 0, 132), 1);
  // long contexts: full waves (100 rows: 9 splits, 900 CTAs in 7 waves of 132), never more CTAs than the
  // workspace holds; short contexts keep the old choice
  EXPECT_EQ(gpu::choose_mla_decode_splits(100, 131072, 132), 9);
  EXPECT_EQ(gpu::choose_mla_decode_splits(100, 2048, 132), 1);
  EXPECT_EQ(gpu::choose_mla_decode_splits(64, 4096, 132), 2);
  // two CTAs an SM: twice the CTAs of a wave (one long row: 264, capped at 256 splits)
  EXPECT_EQ(gpu::choose_mla_decode_splits(1, 1048576, 132, 2), 256);
  EXPECT_EQ(gpu::choose_mla_decode_splits(2, 100000, 132, 2), 132);
  for (int rows = 1; rows <= 300; ++rows)
    for (int ctx : {1000, 65536, 1048576}) {
      for (int ctas : {1, 2}) {
        const int s = gpu::choose_mla_decode_splits(rows, ctx, 132, ctas);
        EXPECT_LE(int64_t(rows) * s, std::max<int64_t>(rows, gpu::kMlaDecodeMaxCtasPerSm * 132)) << rows << " " << ctx;
      }
    }
}

// The pipelined form by the split's length unless the switch says: 1M over 132 splits (7,940 positions a
// split) and 8 x 131K over 16 (8,192) take it, 131K over 132 (993) and 100 x 1K do not.
TEST(MlaDecode, PipeChoice) {
  EXPECT_TRUE(gpu::choose_mla_decode_pipe(-1, 1048000, 132));
  EXPECT_TRUE(gpu::choose_mla_decode_pipe(-1, 131072, 16));
  EXPECT_FALSE(gpu::choose_mla_decode_pipe(-1, 131072, 132));
  EXPECT_FALSE(gpu::choose_mla_decode_pipe(-1, 1024, 1));
  EXPECT_TRUE(gpu::choose_mla_decode_pipe(-1, gpu::kMlaDecodePipeMinPositions, 1));
  EXPECT_FALSE(gpu::choose_mla_decode_pipe(-1, gpu::kMlaDecodePipeMinPositions * 2 - 2, 2));  // 4,095 a split
  EXPECT_TRUE(gpu::choose_mla_decode_pipe(-1, gpu::kMlaDecodePipeMinPositions * 2 - 1, 2));   // 4,096 (rounded up)
  EXPECT_TRUE(gpu::choose_mla_decode_pipe(1, 1024, 1));
  EXPECT_FALSE(gpu::choose_mla_decode_pipe(0, 1048000, 132));
}

}  // namespace ds::attn_test
