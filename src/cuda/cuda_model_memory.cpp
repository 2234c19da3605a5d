// CudaModel's memory plan at start-up: the step workspace first (WorkspacePlan: activations, logits,
// metadata, sampling, MLA prefill expansion: one context piece, its size from the memory budget), then the caches from what the budget leaves
// (gpu_memory_utilization x total - in use - reserve): the KDA state slots (+1 scratch) and snapshots,
// then as many MLA pages as fit. Everything is logged line by line (the CUDA graphs captured next,
// cuda_model_graphs.cpp, come out of the reserve and add their line).
#include <spdlog/spdlog.h>

#include <algorithm>

#include "core/error.h"
#include "cuda/cuda_check.h"
#include "cuda/cuda_model.h"

#include "cuda/device_comm.h"
#include "cuda/kernels/moe_gemm.h"

namespace ds::gpu {
namespace {

constexpr double kGiB = double(size_t(1) << 30);
constexpr size_t kReserve = size_t(768) << 20;  // left free for cuBLAS, graphs and the runtime

}  // namespace

void CudaModel::plan_memory() {
  const CudaModelOptions& o = opt_;
  WorkspaceLimits lim;
  lim.max_tokens = o.max_tokens;
  lim.max_seqs = o.max_num_seqs;
  lim.max_graph_batch = o.max_graph_batch;
  lim.max_logit_rows = o.max_logit_rows;
  lim.max_context = o.max_model_len;
  lim.block_size = o.block_size;
  lim.mla_expand_keys = o.mla_expand_keys;
  lim.rank_partials = o.comm && o.comm->size() > 1;
  if (w_.lm_head_rows > 0 && w_.lm_head_rows < cfg_.vocab_size) {
    DS_CHECK(lim.rank_partials && cfg_.vocab_size % w_.lm_head_rows == 0 &&
                 cfg_.vocab_size / w_.lm_head_rows == o.comm->size(),
             "CUDA model: an lm_head of {} of {} vocabulary rows needs a group of {} ranks", w_.lm_head_rows,
             cfg_.vocab_size, cfg_.vocab_size / std::max<int64_t>(1, w_.lm_head_rows));
    lim.vocab_split = int(cfg_.vocab_size / w_.lm_head_rows);
  }
  // quantized experts that prefill on the FP8 wgmma kernel's 16-token tiles need every token's x split
  for (const LayerWeightsDev& l : w_.layers)
    if ((l.ffn.experts_gate_up.int4() && o.switches.int4_tiles) ||
        (l.ffn.experts_gate_up.fp8() && o.switches.fp8_prefill_tiles))
      lim.moe_split_tokens = std::max(lim.moe_split_tokens, lim.max_tokens);
  // FP8 dense projections on cuBLASLt (switches.fp8_cublas): a step's rows of x quantized for it
  for (const LayerWeightsDev& l : w_.layers)
    if (o.switches.fp8_cublas > 0 && (l.kda.in_proj.fp8() || l.kda.o_proj.fp8() || l.mla.in_proj.fp8() ||
                                      l.mla.o_proj.fp8() || l.ffn.gate_up.fp8() || l.ffn.down.fp8())) {
      lim.fp8_act_rows = lim.max_tokens;
      lim.fp8_act_lo_rows = o.switches.fp8_cublas == 2 ? kFp8TileMaxRows : 0;
    }
  if (lim.mla_expand_keys <= 0 && cfg_.num_mla_layers() > 0) {
    size_t free0 = 0, total0 = 0;
    DS_CUDA_CHECK(cudaMemGetInfo(&free0, &total0));
    const double budget0 = o.gpu_memory_utilization * double(total0) - double(total0 - free0) - double(kReserve);
    const int64_t max_context = o.max_model_len > 0 ? o.max_model_len : cfg_.max_position_embeddings;
    lim.mla_expand_keys = mla_piece_keys(cfg_, o.act, max_context, budget0);
  }
  const WorkspacePlan plan = WorkspacePlan::make(cfg_, o.act, lim, ctx_.num_sms());
  ws_ = std::make_unique<Workspace>(cfg_, o.act, plan, ctx_.num_sms());

  const CacheUnitBytes unit = CacheUnitBytes::of(cfg_, o.act, o.block_size, o.kv_cache_dtype);
  size_t free_b = 0, total_b = 0;
  DS_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  const double budget = o.gpu_memory_utilization * double(total_b) - double(total_b - free_b) - double(kReserve);
  const int num_snapshots =
      o.num_snapshots >= 0 ? o.num_snapshots : snapshots_in_budget(budget - double(unit.state_bytes(o.max_num_seqs, 0)), unit.per_slot);
  const size_t slots_bytes = unit.state_bytes(o.max_num_seqs, num_snapshots);
  DS_CHECK(budget > double(slots_bytes + 2 * unit.per_block),
           "CUDA backend: not enough device memory for {} KDA state slots and {} snapshots ({:.2f} GiB) and the MLA "
           "cache: {:.2f} GiB available under gpu_memory_utilization {} (weights {:.2f} GiB, workspace {:.2f} GiB)",
           o.max_num_seqs, num_snapshots, slots_bytes / kGiB, std::max(0.0, budget) / kGiB,
           o.gpu_memory_utilization, w_.bytes / kGiB, ws_->device_bytes() / kGiB);
  CacheShape shape;
  shape.num_slots = o.max_num_seqs;
  shape.block_size = o.block_size;
  shape.num_snapshots = num_snapshots;
  shape.mla_dtype = o.kv_cache_dtype;
  if (o.num_blocks > 0) {
    shape.num_blocks = o.num_blocks;
  } else {
    int64_t fit = unit.per_block ? int64_t((budget - double(slots_bytes)) / double(unit.per_block)) - 1
                                 : (int64_t(1) << 20);  // - 1: the scratch page
    shape.num_blocks = int(std::min<int64_t>(fit, int64_t(1) << 30 >> 4));
  }
  DS_CHECK(shape.num_blocks > 0, "CUDA backend: no room for the MLA cache");
  caches_ = std::make_unique<DeviceCaches>(cfg_, o.act, shape, ctx_);
  allocate_save_flags();
  DS_CUDA_CHECK(cudaMemsetAsync(ws_->arena_data(), 0, ws_->device_bytes(), ctx_.stream));
  stream_.sync();

  const auto& u = caches_->unit();
  const int64_t page_tokens = int64_t(shape.num_blocks) * shape.block_size;
  spdlog::info("CUDA memory plan ({:.2f} GiB device, gpu_memory_utilization {} -> cache budget {:.2f} GiB after "
               "weights, workspace and a {:.2f} GiB reserve):",
               total_b / kGiB, o.gpu_memory_utilization, std::max(0.0, budget) / kGiB, kReserve / kGiB);
  spdlog::info("  weights: {:.2f} GiB ({})", w_.bytes / kGiB, w_.format);
  if (w_.fp8_matrices > 0 && ctx_.info.sm_major == 9 && ctx_.switches.fp8_xsplit)
    spdlog::info("  FP8 activations: x split into e4m3 hi + lo (the bf16 product) at decode batches; {}",
                 ctx_.switches.fp8_prefill_hi && ctx_.switches.fp8_prefill_tiles
                     ? "the experts of 512+-token steps on the hi part alone (W8A8: x rounded to e4m3 per token and "
                       "128 columns; DELTASERVE_CUDA_FP8_PREFILL_HI=0 for hi + lo)"
                     : "hi + lo at every step");
  spdlog::info("  KDA state slots: {} + 1 scratch x {:.2f} MiB ({} layers x ({:.2f} MiB state + {:.1f} KiB conv)) "
               "= {:.2f} GiB",
               shape.num_slots, u.per_slot / 1048576.0, cfg_.num_kda_layers(), u.state_slot / 1048576.0,
               u.conv_slot / 1024.0, u.state_bytes(shape.num_slots, 0) / kGiB);
  spdlog::info("  KDA snapshot pool (prefix caching): {} x {:.2f} MiB = {:.2f} GiB{}", shape.num_snapshots,
               u.per_slot / 1048576.0, double(shape.num_snapshots) * double(u.per_slot) / kGiB,
               o.num_snapshots >= 0 ? "" : o.snapshot_memory_gib > 0 ? " (--prefix-snapshot-memory)"
                                                                      : " (20% of the cache budget)");
  spdlog::info("  MLA pages: {} + 1 scratch x {} tokens x {:.1f} KiB ({} layers, {} B a token each: {}) = {} "
               "tokens, {:.2f} GiB",
               shape.num_blocks, shape.block_size, u.per_block / 1024.0 / shape.block_size, cfg_.num_mla_layers(),
               u.latent_row,
               o.kv_cache_dtype == KvCacheDtype::Fp8 ? "fp8 e4m3 + a scale, --kv-cache-dtype fp8" : "activation dtype",
               page_tokens, u.page_bytes(shape.num_blocks) / kGiB);
  const int64_t full_len = ws_->plan().lim.max_context;
  spdlog::info("  full-length sequences ({} tokens, max_model_len): {} fit in the MLA pages, {} in the KDA state "
               "slots", full_len, full_len > 0 ? page_tokens / full_len : 0, shape.num_slots);
  for (const auto& line : ws_->plan().describe(cfg_, o.act)) spdlog::info("  workspace: {}", line);
  // then capture_graphs() adds the CUDA graphs' line and the constructor the memory in use
}

}  // namespace ds::gpu
