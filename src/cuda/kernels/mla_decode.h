// MLA decode in the weight-absorbed form (spec §5.1) over the paged latent cache, on the GPU.
//
// Each query row (one decoding token of one sequence) holds, per head, the absorbed query
// [q_lat (512) ; q_pe (64)]; all heads attend to the same cached latents [ĉ (512) ; k_pe (64)]
// (one latent KV head, MQA). For head h of row r:
//   s_j = scale · q_h · c_j  (576-dim dot, j < context_lens[r]),   ō_h = Σ_j softmax(s)_j · ĉ_j  (512)
// with fp32 softmax and accumulation; ō is written in the activation type. The W_UK absorption and the
// W_UV up-projection are GEMMs of the caller. The cache is [num_blocks, block_size, 576] in the
// activation type; position p of row r lives in block block_tables[r][p / block_size], slot
// p % block_size (write new tokens with run_latent_cache_write first: the current token attends to itself).
//
// Split-K (flash-decoding): each row's context is cut into num_splits ranges, one CTA each; partial
// outputs and log-sum-exps go to the workspace and a second kernel combines them, so one row with a
// long context still fills the GPU. num_splits = 1 writes the output directly (no workspace needed).
// choose_mla_decode_splits() is the heuristic; it depends only on sizes (capture the launch in a CUDA
// graph per (rows, num_splits)). bf16 uses tensor cores (mma.sync bf16), fp32 uses 3xTF32.
// fp8_cache: the cache rows are the FP8 latent cache's (config/kv_cache_dtype.h: 576 e4m3 bytes then the
// row's fp32 scale, 592 bytes a row): the attention is the same over the dequantized latents e4m3 · scale.
// CPU twin: src/kernels/mla (run_mla_absorbed_cpu).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "core/dtype.h"
#include "cuda/device_context.h"

namespace ds::gpu {

struct MlaDecodeParams {
  const void* q = nullptr;             // [rows, H, 576] act dtype; row stride ldq (0: H*576), head stride 576
  const void* cache = nullptr;         // [num_blocks, block_size, 576] act dtype
  const int32_t* block_tables = nullptr;  // [rows, max_blocks] device
  const int32_t* context_lens = nullptr;  // [rows] device: attend to positions [0, len)
  void* o = nullptr;                   // [rows, H, 512] act dtype; row stride ldo (0: H*512), head stride 512
  void* workspace = nullptr;           // mla_decode_workspace_bytes(...) (unused when num_splits == 1)
  int64_t ldq = 0, ldo = 0;            // elements, multiples of 8
  int rows = 0;
  int num_heads = 0;                   // H <= 32
  int block_size = 0;
  int max_blocks = 0;                  // row stride of block_tables
  int num_splits = 1;                  // >= 1
  int kv_lora_rank = 512;              // only 512
  int rope_dim = 64;                   // only 64
  float scale = 0.0f;                  // 0: 1/sqrt(192) (qk_nope 128 + rope 64, spec §5.1)
  int kv_tile = 0;                     // bf16: cached positions per tile, 64 (2 in shared memory; 0 means
                                       // it) or 32 (4 in shared memory: more bytes in flight); fp32: 32
  bool fp8_cache = false;              // FP8 cache rows (see above); the default: the activation type
  int l2_prefetch_tiles = -1;          // bf16: tiles requested into L2 ahead of the shared-memory pipeline
                                       // (bulk prefetch; -1: 2 of 64 / 4 of 32 positions, 0: none)
  int warps = 0;                       // bf16: warps of the attention CTA, 8 (0 means it) or 16 (the same
                                       // shared memory, twice the warps hiding latency); fp32: always 8
  int ctas_per_sm = 0;                 // bf16: 2 runs two CTAs an SM (8 warps, tiles of 32 positions, one stage
                                       // each, no Q fragments in registers: each CTA's phases overlap the
                                       // other's); kv_tile and warps are then ignored. 0 / 1: one CTA an SM
  bool wgmma = false;                  // bf16 on sm_90: the Hopper kernel (mla_decode_wgmma.h: wgmma over the
                                       // transposed products, a producer warpgroup and two consumers; one CTA
                                       // an SM, 64-position tiles); kv_tile, warps and ctas_per_sm are then
                                       // ignored. Elsewhere the other forms run.
  bool wgmma_pipe = false;             // with wgmma: its pipelined form (one consumer warpgroup the scores of
                                       // all 32 heads, the other their output a tile behind; faster on long
                                       // splits: choose_mla_decode_pipe)
  bool f8_mma = false;                 // with wgmma and fp8_cache: the FP8 tensor-core form (mla_decode_f8.h: the
                                       // cache bytes as e4m3 MMA operands, the heads as M); wgmma_pipe ignored
};

// Splits per row so that rows * splits CTAs cover the GPU without splitting short contexts; for long
// contexts, so that the waves of ctas_per_sm CTAs an SM (MlaDecodeParams::ctas_per_sm) are full. rows * splits <= max(rows, num_sms) or
// <= kMlaDecodeMaxCtasPerSm * num_sms (what the workspace is sized for).
constexpr int kMlaDecodeMaxCtasPerSm = 8;
int choose_mla_decode_splits(int rows, int max_context_len, int num_sms, int ctas_per_sm = 1);
size_t mla_decode_workspace_bytes(int rows, int num_heads, int num_splits);
// The Hopper kernel's pipelined form (MlaDecodeParams::wgmma_pipe) for splits of this many positions or more:
// its pipeline fill and drain cost more than its overlap saves on short splits (session 19, docs/PERF.md).
constexpr int kMlaDecodePipeMinPositions = 4096;
// switch: DeviceContext::switches.mla_decode_pipe (-1: by the split's length; 0 / 1: off / on). Depends only
// on sizes, like the split count (a CUDA graph keeps the form it was captured with).
bool choose_mla_decode_pipe(int switch_value, int max_context_len, int num_splits);

void run_mla_decode(const MlaDecodeParams& p, DType act, const DeviceContext& ctx);
// Sets the kernel's shared-memory limit on ctx's device (configure_kernels calls it once per context).
void configure_mla_decode(const DeviceContext& ctx);

}  // namespace ds::gpu
