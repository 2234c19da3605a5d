// Tensor and expert parallelism in the CUDA model on one GPU (issue 18): the model split TP 2 (and TP 2 +
// EP 2: the routed experts by id, each rank holding half of them) over two in-process ranks sharing this GPU
// (cuda/device_comm.h), each a CudaModel of its shard (weights cut by the shard plan at load), run together,
// against the single model: the tiny checkpoint in fp32 (1e-4) and bf16 (2e-2), and the 48B config with
// dummy bf16 weights (twice its measured bf16 floor; the ranks' dummy slices are the single model's
// values). Routing is pinned (the same pseudo-random experts for every model), so that near-tied choices
// cannot flip between the single model's and the ranks' sums; a prefill of two sequences, then decodes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "config/model_config.h"
#include "config/runtime_env.h"
#include "cuda/cuda_backend.h"
#include "cuda/cuda_model.h"
#include "cuda/device_comm.h"
#include "cuda/nccl_comm.h"
#include "cuda/parallel_cuda_backend.h"
#include "model/shard_weights.h"
#include "gpu_test_util.h"
#include "pinned_routes.h"

namespace ds::gpu::test {
namespace {

std::unique_ptr<CudaModel> make_model(const ModelConfig& full, const ShardSpec* spec, DType act,
                                      const std::string& dir, CudaModelOptions o, DeviceComm* comm) {
  ModelConfig c = full;
  WeightLoadOptions wl;
  wl.model_dir = dir;
  wl.dummy = dir.empty();
  if (spec) {
    c = shard_config(full, *spec);
    c.tie_word_embeddings = full.tie_word_embeddings;  // untied: the lm_head by vocabulary rows, gathered
    wl.full = &full;
    wl.shard = *spec;
  }
  o.act = act;
  o.comm = comm;
  Stream load;
  return std::make_unique<CudaModel>(c, load_device_weights(c, act, wl, make_device_context(load.get(), cuda_env())), o);
}

// Pinned routes for state slots 0 and 1, positions 0..positions-1.
std::map<int, RouteIds> pinned(const ModelConfig& c, int positions) {
  const RouteIds r = pinned_routes(c, positions);
  return {{0, r}, {1, r}};
}

// The options of every model here: two sequences of up to 128 tokens, small caches.
CudaModelOptions small_options() {
  CudaModelOptions o;
  o.max_num_seqs = 2;
  o.max_tokens = 128;
  o.max_graph_batch = 2;
  o.num_blocks = 16;
  o.max_model_len = 128;
  return o;
}

// The batches of the run: two prompts (37 and 20 tokens) in one prefill step, then `decodes` steps of both.
// split_at > 0: the first prompt's prefill in two steps (split_at tokens beside the second prompt, then the
// rest alone): the same sequences summed in another order, for the bf16 noise floor.
std::vector<ForwardBatch> batches(int vocab, int decodes, size_t split_at = 0) {
  std::vector<int32_t> a(37), b(20);
  for (size_t i = 0; i < a.size(); ++i) a[i] = int32_t((i * 7919 + 13) % size_t(vocab));
  for (size_t i = 0; i < b.size(); ++i) b[i] = int32_t((i * 104729 + 5) % size_t(vocab));
  std::vector<ForwardBatch> out(1);
  if (split_at > 0) {
    out[0].add(0, 0, std::vector<int32_t>(a.begin(), a.begin() + long(split_at)), {0, 1, 2, 3});
    out[0].add(1, 0, b, {4, 5, 6, 7});
    out.emplace_back().add(0, int64_t(split_at), std::vector<int32_t>(a.begin() + long(split_at), a.end()),
                           {0, 1, 2, 3});
  } else {
    out[0].add(0, 0, a, {0, 1, 2, 3});
    out[0].add(1, 0, b, {4, 5, 6, 7});
  }
  for (int d = 0; d < decodes; ++d) {
    ForwardBatch f;
    f.add(0, int64_t(a.size()) + d, {int32_t(100 + d)}, {0, 1, 2, 3});
    f.add(1, int64_t(b.size()) + d, {int32_t(200 + d)}, {4, 5, 6, 7});
    out.push_back(f);
  }
  return out;
}

// Every batch on every model, each in its own thread (the ranks meet in the collectives); per batch, every
// model's logits.
std::vector<std::vector<std::vector<float>>> run_all(const std::vector<CudaModel*>& ms,
                                                     const std::vector<ForwardBatch>& bs, int vocab) {
  std::vector<std::vector<std::vector<float>>> out(bs.size(), std::vector<std::vector<float>>(ms.size()));
  std::vector<int> devices;
  for (const CudaModel* m : ms) devices.push_back(m->context().device());
  run_on_devices(devices, [&](int r) {
    for (size_t i = 0; i < bs.size(); ++i) {
      ms[size_t(r)]->forward(bs[i]);
      out[i][size_t(r)] = model_logits(*ms[size_t(r)], vocab);
    }
  });
  return out;
}

// tol < 0: the tolerance is twice the bf16 noise floor of this model, measured on the single model as the
// largest decode-step difference between the run and the same run with the first prefill split in two (no
// parallelism: only the summation order differs; 0.04 on the 48B random-weight model, whose 27 bf16 layers
// amplify rounding twice as much as the tiny golden model's 8). A wrong shard or a missing part is O(1).
void expect_tp2_matches(const ModelConfig& full, const std::string& dir, DType act, CudaModelOptions o, double tol,
                        const char* what, bool ep = false) {
  const int V = full.vocab_size, decodes = 3;
  const auto bs = batches(V, decodes);
  std::vector<std::vector<float>> want;
  {
    auto one = make_model(full, nullptr, act, dir, o, nullptr);
    one->force_routes(pinned(full, 64));
    for (auto& r : run_all({one.get()}, bs, V)) want.push_back(r[0]);
    if (tol < 0) {
      const auto split = run_all({one.get()}, batches(V, decodes, 16), V);
      double floor = 0;
      for (int d = 0; d < decodes; ++d)
        floor = std::max(floor, rel_l2(split[size_t(2 + d)][0], want[size_t(1 + d)]));
      std::printf("[%s] bf16 floor (the first prefill split in two, one model): rel L2 %.3g\n", what, floor);
      EXPECT_LT(floor, 0.1) << what;
      tol = std::max(2e-2, 2 * floor);
    }
  }  // (freed: the 48B model and its two shards do not fit beside each other)
  ParallelConfig pc;
  pc.tensor_parallel_size = 2;
  pc.enable_expert_parallel = ep;
  pc.validate(full);
  InProcessDeviceGroup g({test_ctx().device(), test_ctx().device()});
  std::vector<std::unique_ptr<CudaModel>> ranks;
  for (int r = 0; r < 2; ++r) {
    const ShardSpec s = pc.shard(r);
    ranks.push_back(make_model(full, &s, act, dir, o, &g.comm(r)));
    ranks.back()->force_routes(pinned(full, 64));
    // an untied lm_head is split by vocabulary: the workspace plans the gather of the ranks' logits
    if (!full.tie_word_embeddings) {
      EXPECT_EQ(ranks.back()->workspace().plan().lim.vocab_split, 2) << what;
    }
  }
  const auto got = run_all({ranks[0].get(), ranks[1].get()}, bs, V);
  for (size_t i = 0; i < bs.size(); ++i) {
    const double e = rel_l2(got[i][0], want[i]);
    std::printf("[%s] %s on one GPU, step %zu: rel L2 %.3g\n", what, pc.describe().c_str(), i, e);
    EXPECT_LT(e, tol) << what << ", step " << i;
    EXPECT_EQ(got[i][1], got[i][0]) << what << ", step " << i << ": the ranks' logits differ";
  }
}

TEST(TensorParallelCuda, TinyTp2OnOneGpuMatchesTheSingleModel) {
  DS_REQUIRE_GPU();
  const std::string dir = std::string(DS_FIXTURES_DIR) + "/tiny/model";
  const ModelConfig full = ModelConfig::from_file(dir + "/config.json");
  expect_tp2_matches(full, dir, DType::F32, small_options(), 1e-4, "tiny fp32");
  expect_tp2_matches(full, dir, DType::BF16, small_options(), 2e-2, "tiny bf16");
}

// Expert parallelism: each rank holds 8 of the tiny model's 16 routed experts (and half the shared
// expert's columns); the pairs of the other rank's experts are dropped on each rank and added by their owner.
TEST(TensorParallelCuda, TinyEp2OnOneGpuMatchesTheSingleModel) {
  DS_REQUIRE_GPU();
  const std::string dir = std::string(DS_FIXTURES_DIR) + "/tiny/model";
  const ModelConfig full = ModelConfig::from_file(dir + "/config.json");
  expect_tp2_matches(full, dir, DType::F32, small_options(), 1e-4, "tiny fp32", true);
  expect_tp2_matches(full, dir, DType::BF16, small_options(), 2e-2, "tiny bf16", true);
}

TEST(TensorParallelCuda, Dummy48BTp2OnOneGpuMatchesTheSingleModel) {
  DS_REQUIRE_DEVICE_GIB(100, "the 48B dummy bf16 model, sharded twice on one GPU");
  const ModelConfig full =
      ModelConfig::from_file(std::string(DS_SOURCE_DIR) + "/tests/fixtures/kimi-linear-48b-a3b.config.json");
  expect_tp2_matches(full, "", DType::BF16, small_options(), -1, "48B dummy bf16");
}

TEST(TensorParallelCuda, Dummy48BEp2OnOneGpuMatchesTheSingleModel) {
  DS_REQUIRE_DEVICE_GIB(100, "the 48B dummy bf16 model, sharded twice on one GPU");
  const ModelConfig full =
      ModelConfig::from_file(std::string(DS_SOURCE_DIR) + "/tests/fixtures/kimi-linear-48b-a3b.config.json");
  expect_tp2_matches(full, "", DType::BF16, small_options(), -1, "48B dummy bf16", true);
}

// The tiny checkpoint's serving options of the backend tests below: fp32 activations, two sequences of up to
// 128 tokens, small caches.
BackendOptions tiny_backend_options() {
  BackendOptions o;
  o.device = "cuda";
  o.model_dir = std::string(DS_FIXTURES_DIR) + "/tiny/model";
  o.dtype = "float32";
  o.max_num_seqs = 2;
  o.block_size = 16;
  o.num_blocks = 16;
  o.max_model_len = 128;
  o.num_snapshots = 2;
  o.gpu_memory_utilization = 0.5;
  return o;
}

// `par` against `single` through the serving path: the logits of a prefill and two decode steps within 1e-4,
// then the same greedy tokens for one more step of both sequences.
void expect_backends_match(Backend& single, Backend& par, const char* what) {
  const auto bs = batches(single.config().vocab_size, 2);
  for (size_t i = 0; i < bs.size(); ++i) {
    const auto want = forward_logits(single, bs[i]);
    const auto got = forward_logits(par, bs[i]);
    ASSERT_EQ(got.size(), want.size());
    const double e = rel_l2(got, want);
    std::printf("[tiny fp32] %s, step %zu: rel L2 %.3g\n", what, i, e);
    EXPECT_LT(e, 1e-4) << what << ", step " << i;
  }
  SampleParams greedy;
  greedy.temperature = 0.f;
  ForwardBatch next;
  next.add(0, 37 + 2, {7}, {0, 1, 2, 3});
  next.add(1, 20 + 2, {9}, {4, 5, 6, 7});
  const auto a = forward_sample(single, next, {greedy, greedy});
  const auto b = forward_sample(par, next, {greedy, greedy});
  ASSERT_EQ(a.size(), 2u);
  ASSERT_EQ(b.size(), 2u);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].token, b[i].token) << what << ", sequence " << i;
}

// The serving path: ParallelCudaBackend (two ranks sharing this GPU, rank 0 sampling) against the single
// CUDA backend on the tiny checkpoint, fp32 activations, routing pinned on every rank.
TEST(TensorParallelCuda, ParallelBackendOnOneGpuMatchesTheSingleBackend) {
  DS_REQUIRE_GPU();
  const BackendOptions o = tiny_backend_options();
  auto single = make_cuda_backend(o);
  const auto routes = pinned(single->config(), 64);
  cuda_force_routes(*single, routes);
  BackendOptions po = o;
  po.parallel.tensor_parallel_size = 2;
  ParallelCudaBackend par(po);
  ASSERT_EQ(par.world_size(), 2);
  for (int r = 0; r < 2; ++r) cuda_force_routes(par.rank(r), routes);
  EXPECT_EQ(par.limits().num_blocks, par.rank(1).limits().num_blocks);
  expect_backends_match(*single, par, "TP 2 sharing one GPU");
}

// Two GPUs (skipped with one): the serving path over NCCL, one rank per GPU, decode steps replayed from CUDA
// graphs that hold the collectives (routing not pinned: pinning turns graphs off), against the single backend
// on the tiny checkpoint in fp32; with DELTASERVE_CUDA_TP_COMM=inprocess the same over the in-process group.
TEST(TensorParallelCuda, NcclOnTwoGpusMatchesTheSingleBackend) {
  DS_REQUIRE_GPU();
  if (device_count() < 2) GTEST_SKIP() << "needs 2 GPUs (one rank per GPU over NCCL)";
  std::string why;
  if (!nccl_available(&why)) GTEST_SKIP() << why;
  const BackendOptions o = tiny_backend_options();
  auto single = make_cuda_backend(o);
  BackendOptions po = o;
  po.parallel.tensor_parallel_size = 2;
  ParallelCudaBackend par(po);
  ASSERT_EQ(par.world_size(), 2);
  EXPECT_FALSE(par.limits().graph_buckets.empty()) << "the ranks' decode steps should replay graphs";
  expect_backends_match(*single, par, "TP 2 over NCCL on two GPUs");
}

}  // namespace
}  // namespace ds::gpu::test
