// How a model is split over ranks (docs/PARALLEL.md), typed and validated against the model config.
//
//   tensor_parallel_size (--tensor-parallel-size, 1/2/4/8): ranks of the group, and the split of the
//     attention heads (KDA and MLA), the dense MLP and the lm_head (by vocabulary). The MoE blocks are
//     split over every rank of the group: the shared experts by intermediate columns, and the routed
//     experts too without expert parallelism.
//   enable_expert_parallel (--enable-expert-parallel): routed experts sharded by id instead, whole
//     experts on each rank.
//   expert_parallel_size: ranks of an expert-only group (no flag: tests and tools): with
//     tensor_parallel_size 1 and EP, attention and the dense layers are replicated on every rank and only
//     the MoE blocks are split. 0 (the default): tensor_parallel_size.
//   nnodes, node_rank, master_addr, master_port (--nnodes, --node-rank, --master-addr, --master-port, as
//     torchrun's): the group spans nnodes processes, one a node (or several on one host); node k's process
//     holds ranks [k·L, (k+1)·L), L = world_size / nnodes, and node 0 runs the engine (dist/tcp_group.h).
#pragma once
#include <string>

#include "config/model_config.h"

namespace ds {

// What rank `rank` of a group holds (ParallelConfig::shard).
struct ShardSpec {
  int rank = 0;
  int size = 1;          // ranks in the group
  int tp = 1;            // attention heads, dense MLP, lm_head: split this many ways (1: replicated, or size)
  bool ep = false;       // routed experts by id over `size` ranks (false: by intermediate columns over `size`)
  // (The MoE block, routed + shared experts, is split over all `size` ranks either way.)
  // The rank that holds routed expert e (ep only): contiguous blocks of num_experts / size.
  int expert_owner(int e, int num_experts) const { return e / (num_experts / size); }
};

struct ParallelConfig {
  int tensor_parallel_size = 1;
  bool enable_expert_parallel = false;
  int expert_parallel_size = 0;  // 0: tensor_parallel_size (see above)
  int nnodes = 1;
  int node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  double join_timeout_s = 300;   // for every node to join (node 0 waits that long, the others try that long)

  int world_size() const;
  int ranks_per_node() const { return world_size() / nnodes; }
  int first_local_rank() const { return node_rank * ranks_per_node(); }
  // Sizes alone: tensor_parallel_size in {1, 2, 4, 8}; expert_parallel_size (when given) likewise, with EP
  // on, and tensor_parallel_size 1 or equal to it; nnodes dividing the ranks, node_rank below it, a port.
  // Throws ds::Error naming the flag.
  void validate() const;
  // validate(), then every dimension the split cuts must divide: throws ds::Error naming the config
  // field, its value and the flag ("linear_attn_config.num_heads (2) is not divisible by
  // --tensor-parallel-size 4").
  void validate(const ModelConfig& c) const;
  ShardSpec shard(int rank) const;
  std::string describe() const;  // "TP 2", "TP 2 + EP 2", "EP 4 (attention replicated)", "TP 4 over 2 nodes"
};

}  // namespace ds
