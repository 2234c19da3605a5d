// A deterministic stand-in for the model, for engine tests. Each sequence's logits are a hash of
// its whole token history, read back from the paged cache through the block table and checked
// against the running hash kept in its state slot, so any mix-up of slots, pages, context lengths
// or tokens (by batching, chunking or preemption) changes the output or throws. Sampling is the
// real CPU sampler with the real penalty tracker.
#pragma once
#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "model/backend.h"
#include "sampling/cpu_sampler.h"
#include "sampling/rng.h"

namespace ds::test {

struct FakeOptions {
  int vocab = 2048;
  int num_slots = 64;
  int num_blocks = 4096;
  int block_size = 16;
  int64_t max_position_embeddings = 4096;
  std::vector<int> eos_token_ids;
  int max_tokens_per_step = 0;    // > 0: published in limits(); a larger batch throws
  int64_t max_context = 0;        // > 0: published in limits() (the longest sequence a step attends over)
  int32_t poison_token = -1;      // execute() throws when this token is in the batch
  bool poison_fails_backend = false;  // ... and from then on failure() says so (a parallel group that failed)
  int step_delay_ms = 0;          // sleep in every step (to hold requests in the queue)
  int32_t token_range = -1;       // > 0: only ids [0, token_range) get high logits
  std::vector<int32_t> script;    // non-empty: after n tokens of history the best token is
                                  // script[n % size] (a prompt of script[0] replays the script)
};

class FakeBackend : public Backend {
 public:
  explicit FakeBackend(FakeOptions o) : o_(std::move(o)) {
    cfg_.vocab_size = o_.vocab;
    cfg_.eos_token_ids = o_.eos_token_ids;
    cfg_.max_position_embeddings = o_.max_position_embeddings;
    slot_hash_.assign(size_t(o_.num_slots), 0);
    slot_len_.assign(size_t(o_.num_slots), -1);
    pages_.assign(size_t(o_.num_blocks) * size_t(o_.block_size), -1);
  }

  const ModelConfig& config() const override { return cfg_; }
  BackendLimits limits() const override {
    BackendLimits l;
    l.max_tokens_per_step = o_.max_tokens_per_step;
    l.max_context = o_.max_context;
    l.num_state_slots = o_.num_slots;
    l.num_blocks = o_.num_blocks;
    l.block_size = o_.block_size;
    return l;
  }
  std::string device_name() const override { return "fake"; }

  static uint64_t extend(uint64_t h, int32_t t) { return mix64(h ^ uint64_t(uint32_t(t)) * 0x100000001b3ull); }

  // The model part of a step; sampling is the real CPU sampler with the real penalty tracker.
  StepResult execute(const StepPlan& plan) override {
    check_sampling_rows(plan);
    penalties_.release(plan.released);
    forward(plan.batch);
    StepResult res;
    if (!plan.sampling.empty()) res.samples = sample_rows_cpu(logits_.data(), o_.vocab, plan.sampling, penalties_);
    if (plan.return_logits) res.logits = logits_;
    return res;
  }

  std::string failure() const override {
    std::lock_guard<std::mutex> lk(failure_mu_);
    return failure_;
  }

  std::atomic<int64_t> steps{0};
  size_t num_penalty_histories() const { return penalties_.num_tracked(); }

 private:
  void forward(const ForwardBatch& b) {
    if (o_.step_delay_ms) std::this_thread::sleep_for(std::chrono::milliseconds(o_.step_delay_ms));
    DS_CHECK(o_.max_tokens_per_step <= 0 || b.num_tokens() <= o_.max_tokens_per_step,
             "fake: a batch of {} tokens exceeds the published limit of {}", b.num_tokens(), o_.max_tokens_per_step);
    for (int32_t t : b.tokens) {
      DS_CHECK(t >= 0 && t < o_.vocab, "fake: token {} out of range", t);
      if (t == o_.poison_token) {
        if (o_.poison_fails_backend) {
          std::lock_guard<std::mutex> lk(failure_mu_);
          failure_ = fmt::format("rank 1: poisoned token {}", t);
        }
        fail("fake backend: poisoned token {}", t);
      }
    }
    logits_.clear();
    rows_ = 0;
    for (const SeqSlice& s : b.seqs) {
      DS_CHECK(s.state_slot >= 0 && s.state_slot < o_.num_slots, "fake: bad slot {}", s.state_slot);
      uint64_t& h = slot_hash_[size_t(s.state_slot)];
      int64_t& len = slot_len_[size_t(s.state_slot)];
      DS_CHECK((s.context_len == 0) == (s.state_init == StateInit::Zero),
               "fake: slice of slot {} at context {} has state_init {}", s.state_slot, s.context_len,
               int(s.state_init));
      if (s.state_init == StateInit::Zero) {
        h = 0;
        len = 0;
      }
      DS_CHECK(len == s.context_len, "fake: slot {} holds {} tokens, slice says {}", s.state_slot, len,
               s.context_len);
      for (int32_t i = 0; i < s.num_tokens; ++i) {
        const int32_t tok = b.tokens[size_t(s.token_offset + i)];
        *page_cell(s, len) = tok;
        h = extend(h, tok);
        ++len;
      }
      if (!s.need_logits) continue;
      // The history as the paged cache holds it must give the same hash as the slot state.
      uint64_t h2 = 0;
      for (int64_t p = 0; p < len; ++p) h2 = extend(h2, *page_cell(s, p));
      DS_CHECK(h2 == h, "fake: paged cache and slot state disagree for slot {}", s.state_slot);
      for (int v = 0; v < o_.vocab; ++v) {
        const uint64_t r = mix64(h ^ (uint64_t(v) << 32));
        float x = float(double(r >> 11) / 9007199254740992.0) * 8.0f;
        if (o_.token_range > 0 && v >= o_.token_range) x -= 30.0f;
        if (!o_.script.empty() && v == o_.script[size_t(len) % o_.script.size()]) x += 100.0f;
        logits_.push_back(x);
      }
      ++rows_;
    }
    DS_CHECK(rows_ == b.num_logit_rows(), "fake: {} rows, batch says {}", rows_, b.num_logit_rows());
    ++steps;
  }

  int32_t* page_cell(const SeqSlice& s, int64_t pos) {
    const size_t page = size_t(pos / o_.block_size);
    DS_CHECK(page < s.block_table.size(), "fake: position {} beyond the block table", pos);
    const int32_t id = s.block_table[page];
    DS_CHECK(id >= 0 && id < o_.num_blocks, "fake: bad page {}", id);
    return &pages_[size_t(id) * size_t(o_.block_size) + size_t(pos % o_.block_size)];
  }

  FakeOptions o_;
  mutable std::mutex failure_mu_;
  std::string failure_;  // guarded by failure_mu_
  ModelConfig cfg_;
  std::vector<uint64_t> slot_hash_;
  std::vector<int64_t> slot_len_;
  std::vector<int32_t> pages_;
  std::vector<float> logits_;
  int rows_ = 0;
  PenaltyTracker penalties_{o_.vocab};
};

}  // namespace ds::test
