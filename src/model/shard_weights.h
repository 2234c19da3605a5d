// One rank's part of the model (docs/PARALLEL.md): the rank-local config the unchanged CPU layers
// are built from, and its slice of the fp32 weights, cut once at load.
//
//   KDA (tp): heads [rank·H/tp, (rank+1)·H/tp): q/k/v projections and conv taps, dt_bias, f_b/g_b rows,
//     b_proj rows, A_log by head; o_proj by columns (its input); f_a/g_a (low rank) and o_norm whole.
//   MLA (tp): q_proj and kv_b_proj rows by head, o_proj by columns; kv_a_proj and kv_a_layernorm whole
//     (the 576-value latent is computed, and cached, on every rank).
//   Dense MLP (tp) and shared experts (over all ranks): gate/up by rows, down by columns.
//   Routed experts (over all ranks): whole experts by id with ep (the others left empty), else each
//     expert by intermediate rows/columns like the MLP. Router and correction bias whole.
//   lm_head (tp): rows by vocabulary (from the embedding when tie_word_embeddings). Embedding and norms
//     whole.
#pragma once
#include "config/model_config.h"
#include "dist/parallel_config.h"
#include "model/host_weights.h"

namespace ds {

// The config the rank's layers and caches see: KDA/MLA heads and intermediate_size divided by tp,
// moe_intermediate_size by size without ep, tie_word_embeddings off when tp > 1 (the rank has its own
// lm_head slice). vocab_size stays whole (the logits are gathered back to it).
ModelConfig shard_config(const ModelConfig& c, const ShardSpec& s);

// What rank s holds of one tensor of the full model: all of it, nothing (another rank's expert), or the
// elements [begin, begin + count) of dimension `axis` (every other dimension whole).
struct ShardSlice {
  enum class Kind : uint8_t { Whole, Part, Empty } kind = Kind::Whole;
  int axis = 0;
  int64_t begin = 0, count = 0;
};

// The rules above as data: the slice of every tensor of the full config `c` (the one table both the CPU
// ranks and the GPU loader cut by). The lm_head's entry is its vocabulary rows even when tied (the rank's
// slice is then cut from the embedding).
ModelWeights<ShardSlice> shard_plan(const ModelConfig& c, const ShardSpec& s);
// The shape of a tensor of `shape` after the slice (Empty: no elements, shape {0}).
std::vector<int64_t> sliced_shape(const std::vector<int64_t>& shape, const ShardSlice& x);
// Copies the slice of a row-major tensor of `shape` with `esize`-byte elements from src to dst
// (sliced_shape elements, row-major).
void copy_slice(const void* src, const std::vector<int64_t>& shape, size_t esize, const ShardSlice& x, void* dst);

// The rank's slice of `w` (weights of the full config `c`); `c` must pass ParallelConfig::validate.
HostWeights shard_host_weights(const ModelConfig& c, const HostWeights& w, const ShardSpec& s);

}  // namespace ds
