// Nothing grows while serving: after the CUDA backend is made (workspace planned, every decode graph
// captured, the sampler warmed up), a run of steps of every kind -- prefills, mixed prefill + decode,
// decodes at batch sizes 1, 3, 17 and the maximum with contexts crossing several block-table strides
// (so several graph keys), prefill chunks whose context exceeds the MLA context piece (attended piece by
// piece, merged by log-sum-exp), and sampling with penalties, top-k/p
// and logprobs -- leaves the device's free memory exactly as it was (cudaMemGetInfo). Before the
// sampler used the planned buffers and graphs were captured at start-up, the first steps of a new
// batch size or stride allocated (sampling workspace, graph instantiation).
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <vector>

#include "cuda/cuda_backend.h"
#include "gpu_test_util.h"
#include "model/step.h"

namespace ds::gpu::test {
namespace {

const std::string kTiny = std::string(DS_FIXTURES_DIR) + "/tiny";
constexpr int kSlots = 20, kBlock = 16, kMaxLen = 2048, kPiece = 512;

size_t free_now() {
  DS_CUDA_CHECK(cudaDeviceSynchronize());
  size_t f = 0, t = 0;
  DS_CUDA_CHECK(cudaMemGetInfo(&f, &t));
  return f;
}

SampleParams sampled(uint64_t step) {
  SampleParams p;
  p.temperature = 0.8f;
  p.top_k = 50;
  p.top_p = 0.9f;
  p.repetition_penalty = 1.2f;
  p.frequency_penalty = 0.5f;
  p.presence_penalty = 0.3f;
  p.num_logprobs = 5;
  p.seed = 7;
  p.step = step;
  return p;
}

// A sequence in one slot with its own pages; tokens() is everything fed so far.
struct Seq {
  int slot = 0;
  int first_page = 0;
  std::vector<int32_t> prompt, output;
  int64_t len = 0;  // tokens in the cache
  std::vector<int32_t> pages(int64_t tokens) const {
    std::vector<int32_t> v;
    for (int64_t i = 0; i < (tokens + kBlock - 1) / kBlock; ++i) v.push_back(first_page + int32_t(i));
    return v;
  }
};

class Runner {
 public:
  explicit Runner(Backend& b) : b_(b) {}
  // One step: the given sequences each feed `n[i]` tokens (their next prompt tokens, or their last
  // sampled token when the prompt is done) and sample one token.
  void step(std::vector<Seq*> seqs, std::vector<int> n) {
    StepPlan plan;
    for (size_t i = 0; i < seqs.size(); ++i) {
      Seq& s = *seqs[i];
      std::vector<int32_t> ids;
      if (s.len < int64_t(s.prompt.size()))
        ids.assign(s.prompt.begin() + s.len, s.prompt.begin() + std::min<int64_t>(s.len + n[i], s.prompt.size()));
      else
        ids.push_back(s.output.back());
      plan.batch.add(s.slot, s.len, ids, s.pages(s.len + int64_t(ids.size())));
      SeqSampling row;
      row.seq_id = uint64_t(s.slot);
      row.params = sampled(s.output.size());
      row.history = s.len == 0;
      if (row.history) row.prompt = s.prompt;
      plan.sampling.push_back(std::move(row));
      s.len += int64_t(ids.size());
    }
    const StepResult r = b_.execute(plan);
    ASSERT_EQ(r.samples.size(), seqs.size());
    for (size_t i = 0; i < seqs.size(); ++i) {
      const SampleResult& o = r.samples[i];
      ASSERT_GE(o.token, 0);
      ASSERT_LT(o.token, b_.config().vocab_size);
      EXPECT_EQ(o.top_logprobs.size(), 5u);
      seqs[i]->output.push_back(o.token);
    }
  }

 private:
  Backend& b_;
};

TEST(NoGrowth, ServingStepsAllocateNothing) {
  DS_REQUIRE_GPU();
  unsetenv("DELTASERVE_CUDA_GRAPHS");
  unsetenv("DELTASERVE_CUDA_ATTENTION");
  BackendOptions o;
  o.device = "cuda";
  o.model_dir = kTiny + "/model";
  o.load_format = "dummy";
  o.dtype = "bfloat16";
  o.max_num_seqs = kSlots;
  o.max_model_len = kMaxLen;
  o.block_size = kBlock;
  o.num_blocks = 1024;
  o.mla_context_piece = kPiece;  // seq 0 (1,500 tokens) and 1 (700) are attended piece by piece
  auto backend = make_cuda_backend(o);
  const BackendLimits lim = backend->limits();
  ASSERT_FALSE(lim.graph_buckets.empty()) << "no decode graphs were captured at start-up";
  EXPECT_EQ(lim.graph_buckets.back(), 24);  // graph_bucket(20)
  const int V = backend->config().vocab_size;

  // prompt lengths: long ones put decode steps in strides 128 (> 1024 tokens), 64 and 32; short ones in 16
  std::vector<Seq> seqs(kSlots);
  int page = 0;
  for (int i = 0; i < kSlots; ++i) {
    const int len = i == 0 ? 1500 : i == 1 ? 700 : i == 2 ? 300 : 20 + 9 * i;
    seqs[size_t(i)].slot = i;
    seqs[size_t(i)].first_page = page;
    page += (len + 64) / kBlock + 1;  // room for the decode steps
    for (int t = 0; t < len; ++t) seqs[size_t(i)].prompt.push_back(int32_t((31 * t + 17 * i + 3) % V));
  }
  ASSERT_LE(page, o.num_blocks);
  Runner run(*backend);
  const size_t free0 = free_now();

  // prefills: seq 0 in two chunks (the second with a 1000-token context), the others up to three to a
  // step, the last of them (slot 19) mixed with decodes
  run.step({&seqs[0]}, {1000});
  run.step({&seqs[0], &seqs[1]}, {500, 700});
  for (int i = 2; i + 2 < kSlots - 1; i += 3)  // 2..16
    run.step({&seqs[size_t(i)], &seqs[size_t(i + 1)], &seqs[size_t(i + 2)]}, {400, 400, 400});
  run.step({&seqs[17], &seqs[18]}, {400, 400});
  run.step({&seqs[0], &seqs[1], &seqs[kSlots - 1]}, {1, 1, 400});
  for (auto& s : seqs) ASSERT_GE(s.len, int64_t(s.prompt.size())) << "slot " << s.slot;  // 0 and 1 decoded once

  auto decode = [&](std::vector<int> slots, int steps) {
    std::vector<Seq*> ss;
    for (int i : slots) ss.push_back(&seqs[size_t(i)]);
    for (int k = 0; k < steps; ++k) run.step(ss, std::vector<int>(ss.size(), 1));
  };
  std::vector<int> all(kSlots), seventeen;
  for (int i = 0; i < kSlots; ++i) all[size_t(i)] = i;
  for (int i = 3; i < kSlots; ++i) seventeen.push_back(i);
  decode({0}, 3);          // batch 1, stride 128
  decode({kSlots - 1}, 3);  // batch 1, stride 16
  decode({1, 2, 3}, 3);     // batch 3, stride 64
  decode({2, 3, 4}, 3);     // batch 3, stride 32
  decode(seventeen, 3);     // batch 17, stride 16
  decode(all, 3);           // the maximum batch, stride 128
  const size_t free1 = free_now();
  EXPECT_EQ(free0, free1) << "device memory in use grew by " << (double(free0) - double(free1)) / 1048576.0
                          << " MiB while serving";
}

}  // namespace
}  // namespace ds::gpu::test
