// Tensor and expert parallelism on the CPU reproduce the single-rank model: the tiny checkpoint split
// TP 2, EP 2, EP 4 (attention replicated) and TP 2 + EP 2, and a 4-head variant of it (dummy weights)
// split TP 4, TP 4 + EP 4 and TP 2, give TP 1's logits within 1e-5 (relative L2) and the same argmax,
// over chunked prefill and decode steps of two sequences in one batch. The shards are the right blocks.
#include <gtest/gtest.h>

#include <future>
#include <map>
#include <string>

#include "core/error.h"
#include "dist/socket_io.h"
#include "dist_test_util.h"
#include "model/cpu_backend.h"
#include "model/parallel_cpu_backend.h"
#include "model/shard_weights.h"

namespace ds::test {
namespace {

constexpr double kTol = 1e-5;

BackendOptions options(const std::string& dir, ParallelConfig p = {}, bool dummy = false) {
  BackendOptions o;
  o.model_dir = dir;
  o.max_num_seqs = 8;
  o.block_size = 16;
  o.num_blocks = 32;
  o.parallel = p;
  if (dummy) {
    o.load_format = "dummy";
    o.dummy_seed = 7;
  }
  return o;
}

const CpuModelFiles& tiny() {
  static const CpuModelFiles m = load_cpu_model(options(tiny_dir()));
  return m;
}

TEST(ParallelTiny, TpAndEpReproduceTp1Logits) {
  CpuBackend one(tiny().config, tiny().weights, options(tiny_dir()));
  const auto ref = two_sequence_run(one);
  for (const ParallelConfig& p : {layout(2), layout(1, true, 2), layout(1, true, 4), layout(2, true)}) {
    ParallelCpuBackend b(tiny().config, tiny().weights, options(tiny_dir(), p));
    EXPECT_EQ(b.world_size(), p.world_size());
    EXPECT_NE(b.device_name().find(p.describe()), std::string::npos) << b.device_name();
    // Each rank's KDA state holds only its heads (attention replicated: all of them).
    EXPECT_EQ(b.rank(1).kda_states().bytes() * size_t(p.tensor_parallel_size), one.kda_states().bytes());
    expect_same_logits(two_sequence_run(b), ref, tiny().config.vocab_size, kTol, p.describe());
  }
}

TEST(ParallelTiny, FourHeadVariantTp4ReproducesTp1) {
  TempModelDir dir(four_head_config_json());
  CpuBackend one(options(dir.path(), {}, true));
  const auto ref = two_sequence_run(one);
  for (const ParallelConfig& p : {layout(4), layout(4, true), layout(2)}) {
    ParallelCpuBackend b(options(dir.path(), p, true));
    EXPECT_EQ(b.world_size(), p.world_size());
    expect_same_logits(two_sequence_run(b), ref, one.config().vocab_size, kTol, p.describe() + " (4 heads)");
  }
}

// A group over nodes (dist/tcp_group.h; here each node's backend in this process, joined over loopback TCP as
// processes would be), with one or two rank threads a node, gives the single-process group's logits bit for
// bit: the TCP group sums in the same rank order, and every rank computes the same.
TEST(ParallelTiny, AGroupOverNodesGivesTheSingleProcessBitsExactly) {
  TempModelDir dir(four_head_config_json());
  for (auto [tp, ep, nnodes] : {std::tuple{4, false, 2}, std::tuple{4, true, 4}, std::tuple{2, false, 2}}) {
    ParallelConfig p = layout(tp, ep);
    const std::string what = p.describe() + " over " + std::to_string(nnodes) + " nodes";
    ParallelCpuBackend in_process(options(dir.path(), p, true));
    const auto want = two_sequence_run(in_process);
    p.nnodes = nnodes;
    p.master_addr = "127.0.0.1";
    p.join_timeout_s = 60;  // a node that cannot start fails the others' wait within a minute
    net::listen_on(0, &p.master_port, "a free port");  // closed again at once: node 0 listens there next
    std::vector<std::future<void>> workers;
    for (int k = 1; k < nnodes; ++k)
      workers.push_back(std::async(std::launch::async, [&, k, p]() mutable {
        p.node_rank = k;
        ParallelCpuBackend node(options(dir.path(), p, true));
        EXPECT_EQ(node.rank(k * tp / nnodes).config().kda.num_heads, 4 / tp) << what;  // its ranks' shards
        node.run_worker_node();
      }));
    {
      ParallelCpuBackend node0(options(dir.path(), p, true));
      EXPECT_NE(node0.device_name().find(what), std::string::npos) << node0.device_name();
      const auto got = two_sequence_run(node0);
      ASSERT_EQ(got.size(), want.size()) << what;
      for (size_t s = 0; s < want.size(); ++s) EXPECT_EQ(got[s], want[s]) << what << " step " << s;
    }  // node 0 stops the other nodes
    for (auto& w : workers) EXPECT_NO_THROW(w.get()) << what;
  }
}

TEST(ParallelTiny, ShardsAreTheRightBlocks) {
  const ModelConfig& c = tiny().config;
  const HostWeights& w = tiny().weights;
  const ShardSpec s = layout(2, true).shard(1);
  const ModelConfig lc = shard_config(c, s);
  const HostWeights o = shard_host_weights(c, w, s);
  EXPECT_EQ(lc.kda.num_heads, 1);
  EXPECT_EQ(lc.mla.num_heads, 1);
  EXPECT_EQ(lc.vocab_size, c.vocab_size);
  const int64_t D = c.hidden_size, K = c.kda.head_dim, HK = int64_t(c.kda.num_heads) * K;
  const auto& L = w.layers[0].kda;  // layer 0 is KDA (dense MLP)
  const auto& S = o.layers[0].kda;
  ASSERT_EQ(S.q_proj.shape, (std::vector<int64_t>{K, D}));
  EXPECT_EQ(S.q_proj.data.front(), L.q_proj.data[size_t(K * D)]);  // head 1's first row
  ASSERT_EQ(S.o_proj.shape, (std::vector<int64_t>{D, K}));
  EXPECT_EQ(S.o_proj.data[size_t(K + 3)], L.o_proj.data[size_t(HK + K + 3)]);  // row 1, column K + 3
  EXPECT_EQ(S.a_log.data, std::vector<float>{L.a_log.data[1]});
  EXPECT_EQ(S.f_a_proj.data, L.f_a_proj.data);  // low rank: whole
  const auto& M = w.layers[3].mla;                // layer 3 is MLA
  const int64_t qw = c.mla.qk_head_dim();
  EXPECT_EQ(o.layers[3].mla.q_proj.shape[0], qw);
  EXPECT_EQ(o.layers[3].mla.q_proj.data.front(), M.q_proj.data[size_t(qw * D)]);
  EXPECT_EQ(o.layers[3].mla.kv_a_proj.data, M.kv_a_proj.data);  // the latent: replicated
  ASSERT_EQ(o.lm_head.shape, (std::vector<int64_t>{c.vocab_size / 2, D}));
  EXPECT_EQ(o.lm_head.data.front(), w.lm_head.data[size_t(c.vocab_size / 2 * D)]);
  // EP over 2 ranks: rank 1 holds experts 8..15 whole and none of 0..7; the shared expert by columns.
  const auto& moe = o.layers[1].moe;
  const int E = c.moe.num_experts;
  for (int e = 0; e < E; ++e) {
    SCOPED_TRACE(e);
    EXPECT_EQ(moe.experts[size_t(e)].gate.empty(), e < E / 2);
    if (e >= E / 2) {
      EXPECT_EQ(moe.experts[size_t(e)].down.data, w.layers[1].moe.experts[size_t(e)].down.data);
    }
  }
  EXPECT_EQ(moe.shared.gate.shape[0], int64_t(c.moe.intermediate_size) * c.moe.num_shared_experts / 2);
  // Without EP every expert is split by its intermediate rows.
  const HostWeights t = shard_host_weights(c, w, layout(2).shard(0));
  EXPECT_EQ(t.layers[1].moe.experts[5].up.shape[0], c.moe.intermediate_size / 2);
  EXPECT_EQ(shard_config(c, layout(2).shard(0)).moe.intermediate_size, c.moe.intermediate_size / 2);
  // Tied embeddings: the rank's lm_head is its slice of the embedding, and the rank's config unties them.
  ModelConfig tied = c;
  tied.tie_word_embeddings = true;
  const HostWeights u = shard_host_weights(tied, w, s);
  EXPECT_FALSE(shard_config(tied, s).tie_word_embeddings);
  ASSERT_EQ(u.lm_head.shape, (std::vector<int64_t>{c.vocab_size / 2, D}));
  EXPECT_EQ(u.lm_head.data.back(), w.embed.data.back());
}

// The shard plan (the table the GPU loader cuts checkpoint tensors by) against the rank's config: every
// tensor's slice of the full shape is the shape the rank's config asks for under that name, for each layout
// and rank; another rank's experts (EP) are empty; the lm_head (tied or not) is planned as its vocabulary rows.
TEST(ParallelTiny, ShardPlanGivesTheRankConfigsShapes) {
  for (const bool tie : {false, true}) {
    ModelConfig c = tiny().config;
    c.tie_word_embeddings = tie;
    for (const ParallelConfig& p : {layout(2), layout(1, true, 2), layout(1, true, 4), layout(2, true)})
      for (int r = 0; r < p.world_size(); ++r) {
        const ShardSpec s = p.shard(r);
        const ModelConfig lc = shard_config(c, s);
        std::map<std::string, std::vector<int64_t>> want;
        ModelWeights<int> rank_specs;
        for_each_weight(lc, rank_specs, [&](const TensorSpec& t, int&) { want[t.name] = t.shape; });
        ModelWeights<ShardSlice> plan = shard_plan(c, s);
        int checked = 0, empty = 0;
        for_each_weight(c, plan, [&](const TensorSpec& t, ShardSlice& x) {
          SCOPED_TRACE(p.describe() + " rank " + std::to_string(r) + ": " + t.name);
          if (t.name == "lm_head.weight") return;  // the rank's rows of the vocabulary (below)
          if (x.kind == ShardSlice::Kind::Empty) {
            ++empty;
            EXPECT_NE(t.name.find(".experts."), std::string::npos);
            return;
          }
          ASSERT_TRUE(want.count(t.name));
          std::vector<int64_t> expect = want.at(t.name);
          if (s.ep && t.name.find("shared_experts") != std::string::npos) {
            // with EP the routed experts are whole but the shared one is still split by its intermediate
            // columns over every rank (the rank config keeps moe_intermediate_size whole for the routed ones)
            expect[t.name.find("down_proj") != std::string::npos ? 1 : 0] /= s.size;
          }
          EXPECT_EQ(sliced_shape(t.shape, x), expect);
          ++checked;
        });
        EXPECT_GT(checked, 0);
        int moe_layers = 0;
        for (int l = 0; l < c.num_layers; ++l) moe_layers += c.is_moe(l) ? 1 : 0;
        EXPECT_EQ(empty, s.ep ? 3 * moe_layers * (c.moe.num_experts - c.moe.num_experts / s.size) : 0);
        // the lm_head (the embedding's rows when tied): the rank's vocabulary rows; the rank config keeps
        // vocab_size whole (the CPU ranks gather the logits back to it)
        const std::vector<int64_t> head = {s.tp > 1 ? c.vocab_size / s.tp : c.vocab_size, c.hidden_size};
        EXPECT_EQ(sliced_shape({c.vocab_size, c.hidden_size}, plan.lm_head), head);
        EXPECT_EQ(want.count("lm_head.weight"), size_t(lc.tie_word_embeddings ? 0 : 1));
      }
  }
}

// A bad plan is refused on rank 0 before the others see it (the group goes on); a step that fails on one
// rank in the middle (here: rank 1 alone is told to force routes it has none for) aborts the group: that
// step and every later one throw naming the rank, and the backend still shuts down.
TEST(ParallelTiny, ABadPlanIsRefusedAndARankFailureAbortsTheGroup) {
  ParallelCpuBackend b(tiny().config, tiny().weights, options(tiny_dir(), layout(2)));
  ForwardBatch bad;
  bad.add(99, 0, {1, 2, 3}, {0});  // slot 99 of 8
  EXPECT_THROW(forward_logits(b, bad), Error);
  ForwardBatch ok;
  ok.add(1, 0, {1, 2, 3}, {0});
  EXPECT_EQ(forward_logits(b, ok).size(), size_t(tiny().config.vocab_size));
  RouteIds none;
  ForwardOptions broken;
  broken.forced_routes = &none;
  b.rank(1).set_forward_options(broken);
  ForwardBatch next;
  next.add(1, 3, {4}, {0});
  try {
    forward_logits(b, next);
    ADD_FAILURE() << "the step succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank 1: forced routes"), std::string::npos) << e.what();
  }
  try {
    forward_logits(b, next);
    ADD_FAILURE() << "the next step succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("a previous step failed on rank 1"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ds::test
