// MLA attention rows of bench_kernels (issue 13: long contexts): the absorbed decode over a paged latent
// cache of 131K and 1M positions (cache bytes / time against 4.3 TB/s; both tile pipelines, with and
// without the L2 prefetch; and over the FP8 cache of --kv-cache-dtype fp8, 592 bytes a position instead
// of 1,152), and one 8,192-query prefill chunk attending to a 131K context piece
// by piece (the windowed prefill kernel + the log-sum-exp merge, per piece size; FLOP floor).
#pragma once
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "cuda/device_buffer.h"
#include "cuda/device_context.h"
#include "cuda/kernels/elementwise.h"
#include "cuda/kernels/fp8.h"
#include "cuda/kernels/mla_decode.h"
#include "cuda/kernels/mla_merge.h"
#include "cuda/kernels/mla_prefill.h"
#include "gpu_bench_util.h"

namespace ds::bench {

// decode_only: the decode rows alone (bench_kernels --mla-decode, for kernel iterations)
inline void mla_attention_rows(const gpu::DeviceContext& ctx, bool quick, std::vector<Row>& rows,
                               bool decode_only = false) {
  using gpu::DeviceBuffer;
  const int H = 32, bs = 16, reps = quick ? 5 : 15;
  // ---- decode: 1 row (batch 1) and 8 rows over long contexts, and the serving batches' short ones (100 x 1K,
  // 16 x 8K), scattered pages
  // (--mla-decode adds 262K and 524K at batch 1: ~2K and ~4K positions a split, where the pipelined form's
  // length rule, kMlaDecodePipeMinPositions, is decided)
  std::vector<std::pair<int, int>> shapes{{1, 131072}, {1, 1048000}, {8, 131072}, {100, 1024}, {16, 8192}};
  if (decode_only) shapes.insert(shapes.end(), {{1, 262144}, {1, 524288}, {4, 131072}});
  for (const auto& [nrows, context] : shapes) {
    const int nb = (context + bs - 1) / bs;
    const size_t blocks = size_t(nrows) * nb;
    DeviceBuffer cache(blocks * bs * 576 * 2, "bench mla cache"), q(size_t(nrows) * H * 576 * 2),
        o(size_t(nrows) * H * 512 * 2);
    gpu::run_fill_uniform(cache.data(), DType::BF16, int64_t(blocks) * bs * 576, -1.f, 1.f, 14, ctx);
    gpu::run_fill_uniform(q.data(), DType::BF16, int64_t(nrows) * H * 576, -1.f, 1.f, 15, ctx);
    std::vector<int32_t> tables(blocks), lens(size_t(nrows), context);
    for (size_t i = 0; i < blocks; ++i) tables[i] = int32_t((i * 7919) % blocks);  // scattered pages
    DeviceBuffer d_tables(tables.size() * 4), d_lens(lens.size() * 4);
    DS_CUDA_CHECK(cudaMemcpy(d_tables.data(), tables.data(), tables.size() * 4, cudaMemcpyHostToDevice));
    DS_CUDA_CHECK(cudaMemcpy(d_lens.data(), lens.data(), lens.size() * 4, cudaMemcpyHostToDevice));
    const int heur = gpu::choose_mla_decode_splits(nrows, context, ctx.num_sms());
    const int heur2 = gpu::choose_mla_decode_splits(nrows, context, ctx.num_sms(), 2);  // two CTAs an SM
    const double bytes = double(nrows) * context * 576 * 2;
    DeviceBuffer ws(std::max<size_t>(16, gpu::mla_decode_workspace_bytes(nrows, H, std::max(heur, heur2))));
    auto params = [&](const void* cache_ptr, int kv_tile) {  // the split heuristic's choice
      gpu::MlaDecodeParams p;
      p.q = q.data();
      p.cache = cache_ptr;
      p.block_tables = d_tables.as<int32_t>();
      p.context_lens = d_lens.as<int32_t>();
      p.o = o.data();
      p.workspace = ws.data();
      p.rows = nrows;
      p.num_heads = H;
      p.block_size = bs;
      p.max_blocks = nb;
      p.num_splits = heur;
      p.kv_tile = kv_tile;
      return p;
    };
    for (int kv_tile : {64, 32})
      for (int variant : {0, 1, 2, 3, 4}) {  // 4: the Hopper kernel's pipelined form  // 8 warps with and without the L2 prefetch; two CTAs an SM (32-position
                                          // tiles) and the Hopper kernel (its own 64-position tiles), once each
        if (variant >= 2 && kv_tile != 32) continue;
        const int splits = variant == 2 ? heur2 : heur, prefetch = variant == 1 ? 0 : -1;
        gpu::MlaDecodeParams p = params(cache.data(), kv_tile);
        p.l2_prefetch_tiles = prefetch;
        p.num_splits = splits;
        p.ctas_per_sm = variant == 2 ? 2 : 1;
        p.wgmma = variant >= 3;
        p.wgmma_pipe = variant == 4;
        const double ms = time_ms(ctx.stream, [&] { gpu::run_mla_decode(p, DType::BF16, ctx); }, reps);
        char name[96], note[96];
        std::snprintf(name, sizeof name, "mla decode %d row x %d ctx, tile %d, %d splits%s", nrows, context, kv_tile,
                      splits,
                      variant == 1   ? ", no L2 prefetch"
                      : variant == 2 ? ", 2 CTAs/SM"
                      : variant == 3 ? ", wgmma"
                      : variant == 4 ? ", wgmma, pipelined"
                                     : "");
        std::snprintf(note, sizeof note, "cache %.0f GB/s", bytes / (ms * 1e-3) / 1e9);
        rows.push_back({name, ms, bytes / kBandwidth * 1e3, note});
      }
    // the same rows over an FP8 cache (random e4m3 values, every row's scale 0x3c3c3c3c ~ 0.0115)
    {
      const int64_t row_bytes = 576 + 16, cache_rows = int64_t(blocks) * bs;
      DeviceBuffer cache8(size_t(cache_rows * row_bytes), "bench mla fp8 cache"), dummy_scale(16);
      gpu::Fp8Matrix fm;
      fm.q = cache8.as<uint8_t>();
      fm.scale = dummy_scale.as<float>();
      fm.rows = cache_rows;
      fm.K = row_bytes;
      gpu::run_fill_fp8(fm, 1, 1.f, 19, ctx);
      DS_CUDA_CHECK(cudaMemset2DAsync(cache8.as<char>() + 576, size_t(row_bytes), 0x3c, 4, size_t(cache_rows),
                                      ctx.stream));
      const double bytes8 = double(nrows) * context * double(row_bytes);
      for (int kv_tile : {64, 32})
        for (int ctas : {1, 2, 3, 4, 5}) {  // 3: the Hopper kernel (one CTA an SM), 4: its pipelined form, 5: FP8 MMAs
          if (ctas >= 2 && kv_tile != 32) continue;  // (two CTAs an SM: 32-position tiles; wgmma: once)
          gpu::MlaDecodeParams p = params(cache8.data(), kv_tile);
          p.fp8_cache = true;
          p.ctas_per_sm = ctas == 2 ? 2 : 1;
          p.wgmma = ctas >= 3;
          p.wgmma_pipe = ctas == 4;
          p.f8_mma = ctas == 5;
          p.num_splits = ctas == 2 ? heur2 : heur;
          const double ms = time_ms(ctx.stream, [&] { gpu::run_mla_decode(p, DType::BF16, ctx); }, reps);
          char name[96], note[96];
          std::snprintf(name, sizeof name, "mla decode %d row x %d ctx, FP8 cache, tile %d, %d splits%s", nrows,
                        context, kv_tile, p.num_splits,
                        ctas == 2   ? ", 2 CTAs/SM"
                        : ctas == 3 ? ", wgmma"
                        : ctas == 4 ? ", wgmma, pipelined"
                        : ctas == 5 ? ", FP8 MMA"
                                    : "");
          std::snprintf(note, sizeof note, "cache %.0f GB/s", bytes8 / (ms * 1e-3) / 1e9);
          rows.push_back({name, ms, bytes8 / kBandwidth * 1e3, note});
        }
    }
  }
  if (decode_only) return;
  // ---- prefill: 8192 queries after a 131,072-position context, piece by piece (kernel + merge only:
  // the expansion GEMMs are cuBLASLt's, timed above at their shapes)
  {
    const int n = 8192, context = 131072, K = context + n;
    for (int piece : {16384, 32768, K}) {
      // one piece's keys/values (every piece reads the same buffer: the kernel's cost does not depend on
      // the values), the queries, outputs and the merge state
      const int kp = std::min(piece, K);
      DeviceBuffer qb(size_t(n) * H * 192 * 2), kv(size_t(kp) * H * 256 * 2), kva(size_t(kp) * 576 * 2),
          ob(size_t(n) * H * 128 * 2), acc(size_t(n) * H * 128 * 4), acc_lse(size_t(n) * H * 4),
          lse(size_t(n) * H * 4);
      gpu::run_fill_uniform(qb.data(), DType::BF16, int64_t(n) * H * 192, -1.f, 1.f, 16, ctx);
      gpu::run_fill_uniform(kv.data(), DType::BF16, int64_t(kp) * H * 256, -1.f, 1.f, 17, ctx);
      gpu::run_fill_uniform(kva.data(), DType::BF16, int64_t(kp) * 576, -1.f, 1.f, 18, ctx);
      const std::vector<int32_t> cuq{0, n}, cuk{0, K};
      DeviceBuffer d_cuq(8), d_cuk(8);
      DS_CUDA_CHECK(cudaMemcpy(d_cuq.data(), cuq.data(), 8, cudaMemcpyHostToDevice));
      DS_CUDA_CHECK(cudaMemcpy(d_cuk.data(), cuk.data(), 8, cudaMemcpyHostToDevice));
      gpu::DeviceContext c = ctx;  // the wgmma kernel's variant (switches.wgmma: 1 cp.async, 3 and 4 TMA)
      auto all_pieces = [&] {
        for (int a = 0; a < K; a += piece) {
          const int b = std::min(K, a + piece);
          gpu::MlaPrefillParams p;
          p.q = qb.data();
          p.k_nope = static_cast<char*>(kv.data()) - int64_t(a) * H * 256 * 2;  // row a at the buffer's start
          p.ldkn = int64_t(H) * 256;
          p.hkn = 256;
          p.v = static_cast<char*>(kv.data()) - int64_t(a) * H * 256 * 2 + 256;
          p.ldv = int64_t(H) * 256;
          p.hv = 256;
          p.k_pe = static_cast<char*>(kva.data()) - int64_t(a) * 576 * 2 + 1024;
          p.ldkpe = 576;
          p.o = ob.data();
          p.lse = lse.as<float>();
          p.cu_seqlens_q = d_cuq.as<int32_t>();
          p.cu_seqlens_k = d_cuk.as<int32_t>();
          p.num_seqs = 1;
          p.num_heads = H;
          p.max_seqlen_q = n;
          p.k_begin = a;
          p.k_end = b;
          gpu::run_mla_prefill(p, DType::BF16, c);
          if (piece >= K) break;  // one piece: no merge
          gpu::MlaMergeParams m;
          m.o_a = a == 0 ? nullptr : acc.as<float>();
          m.lse_a = acc_lse.as<float>();
          m.o_b = ob.data();
          m.lse_b = lse.as<float>();
          m.o = b == K ? ob.data() : acc.data();
          m.out_act = b == K;
          m.lse = b == K ? nullptr : acc_lse.as<float>();
          m.T = n;
          m.H = H;
          m.Dv = 128;
          gpu::run_mla_merge(m, DType::BF16, c);
        }
      };
      for (int level : {1, 3, 4}) {
        if (level != 1 && piece == 32768) continue;
        c.switches.wgmma = level;
        const double ms = time_ms(ctx.stream, all_pieces, quick ? 2 : 5, 1);
        const double flops = double(H) * n * (double(context) + n / 2.0) * (192 + 128) * 2;
        char name[96], note[96];
        std::snprintf(name, sizeof name, "mla prefill 8192 q over 131072 ctx, piece %d%s", piece,
                      level == 3 ? ", TMA" : level == 4 ? ", TMA ping-pong" : "");
        std::snprintf(note, sizeof note, "%.0f TFLOP/s, %d pieces", flops / (ms * 1e-3) / 1e12, (K + piece - 1) / piece);
        rows.push_back({name, ms, flops / kBf16Flops * 1e3, note});
      }
    }
  }
}

}  // namespace ds::bench
