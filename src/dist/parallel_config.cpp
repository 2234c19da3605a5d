#include "dist/parallel_config.h"

#include <fmt/format.h>

#include <vector>

#include "core/error.h"

namespace ds {
namespace {

bool power_of_two_upto_8(int n) { return n == 1 || n == 2 || n == 4 || n == 8; }

}  // namespace

int ParallelConfig::world_size() const {
  if (!enable_expert_parallel) return tensor_parallel_size;
  const int ep = expert_parallel_size > 0 ? expert_parallel_size : tensor_parallel_size;
  return ep > tensor_parallel_size ? ep : tensor_parallel_size;
}

void ParallelConfig::validate() const {
  DS_CHECK(power_of_two_upto_8(tensor_parallel_size), "--tensor-parallel-size {}: expected 1, 2, 4 or 8",
           tensor_parallel_size);
  DS_CHECK(nnodes >= 1 && world_size() % nnodes == 0,
           "--nnodes {}: the group's {} ranks ({}) must split evenly over the nodes", nnodes, world_size(), describe());
  DS_CHECK(node_rank >= 0 && node_rank < nnodes, "--node-rank {}: expected 0..{} (--nnodes {})", node_rank,
           nnodes - 1, nnodes);
  DS_CHECK(nnodes == 1 || (master_port >= 0 && master_port <= 65535), "--master-port {}: expected 0..65535",
           master_port);
  DS_CHECK(nnodes == 1 || !master_addr.empty(), "--master-addr: node 0's address is needed with --nnodes {}", nnodes);
  if (expert_parallel_size == 0) return;
  DS_CHECK(enable_expert_parallel, "an expert-parallel size ({}) needs --enable-expert-parallel", expert_parallel_size);
  DS_CHECK(power_of_two_upto_8(expert_parallel_size), "expert-parallel size {}: expected 1, 2, 4 or 8",
           expert_parallel_size);
  DS_CHECK(tensor_parallel_size == 1 || tensor_parallel_size == expert_parallel_size,
           "expert-parallel size {} with --tensor-parallel-size {}: the tensor-parallel size must be 1 (attention "
           "replicated) or the same",
           expert_parallel_size, tensor_parallel_size);
}

void ParallelConfig::validate(const ModelConfig& c) const {
  validate();
  const int world = world_size(), tp = tensor_parallel_size;
  if (world == 1) return;
  const std::string tp_flag = fmt::format("--tensor-parallel-size {}", tp);
  const std::string moe_flag = tp == world ? tp_flag : fmt::format("the expert-parallel size {}", world);
  std::vector<std::string> bad;
  auto check = [&](int64_t value, int parts, const std::string& field, const std::string& flag) {
    if (value % parts != 0) bad.push_back(fmt::format("{} ({}) is not divisible by {}", field, value, flag));
  };
  bool dense = false, moe = false;
  for (int l = 0; l < c.num_layers; ++l) (c.is_moe(l) ? moe : dense) = true;
  if (tp > 1) {
    if (c.num_kda_layers() > 0) check(c.kda.num_heads, tp, "linear_attn_config.num_heads", tp_flag);
    if (c.num_mla_layers() > 0) check(c.mla.num_heads, tp, "num_attention_heads", tp_flag);
    if (dense) check(c.intermediate_size, tp, "intermediate_size", tp_flag);
    check(c.vocab_size, tp, "vocab_size", tp_flag);
  }
  if (moe) {
    if (c.moe.num_shared_experts > 0)
      check(int64_t(c.moe.intermediate_size) * c.moe.num_shared_experts, world,
            "the shared experts' width (moe_intermediate_size x num_shared_experts)", moe_flag);
    if (enable_expert_parallel) check(c.moe.num_experts, world, "num_experts", moe_flag + " (--enable-expert-parallel)");
    else check(c.moe.intermediate_size, world, "moe_intermediate_size", moe_flag);
  }
  if (bad.empty()) return;
  std::string msg = fmt::format("the model cannot be split {}: ", describe());
  for (size_t i = 0; i < bad.size(); ++i) msg += (i ? "; " : "") + bad[i];
  throw Error(msg);
}

ShardSpec ParallelConfig::shard(int rank) const {
  ShardSpec s;
  s.size = world_size();
  DS_CHECK(rank >= 0 && rank < s.size, "rank {} is outside 0..{}", rank, s.size - 1);
  s.rank = rank;
  s.tp = tensor_parallel_size;
  s.ep = enable_expert_parallel && s.size > 1;
  return s;
}

std::string ParallelConfig::describe() const {
  const int world = world_size();
  const std::string nodes = nnodes > 1 ? fmt::format(" over {} nodes", nnodes) : "";
  if (!enable_expert_parallel || world == 1) return fmt::format("TP {}{}", tensor_parallel_size, nodes);
  if (tensor_parallel_size == 1) return fmt::format("EP {} (attention replicated){}", world, nodes);
  return fmt::format("TP {} + EP {}{}", tensor_parallel_size, world, nodes);
}

}  // namespace ds
