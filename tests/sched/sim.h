// A stand-in for the model in scheduler tests: runs a StepPlan on per-slot token histories and
// "samples" a token that is a hash of the sequence's whole history, so any mix-up of slots, context
// lengths or tokens changes the output. Checks the plan's invariants on every step.
#pragma once
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <vector>

#include "sched/scheduler.h"

namespace ds::test {

inline int32_t next_token(const std::vector<int32_t>& history, int vocab = 1000) {
  uint64_t h = 1469598103934665603ull;
  for (int32_t t : history) h = (h ^ uint64_t(uint32_t(t))) * 1099511628211ull;
  return int32_t((h >> 17) % uint64_t(vocab));
}

struct Sim {
  Scheduler& sched;
  std::map<int32_t, std::vector<int32_t>> slot_history;  // what each KDA slot has absorbed
  std::map<uint64_t, std::vector<int32_t>> outputs;       // tokens sampled per request
  std::map<uint64_t, RequestStatus> finished;
  std::map<uint64_t, std::vector<int32_t>> held;         // the backend's penalty histories, modelled
  int64_t steps = 0;

  explicit Sim(Scheduler& s) : sched(s) {}

  // Checks and "runs" the plan, then applies the result to the scheduler.
  std::vector<RequestUpdate> step() {
    StepPlan plan = sched.schedule();
    apply_released(plan);
    ++steps;
    const SchedulerConfig& cfg = sched.config();
    EXPECT_LE(plan.batch.num_tokens(), cfg.max_num_batched_tokens);
    EXPECT_LE(int(plan.batch.seqs.size()), cfg.max_num_seqs);
    EXPECT_EQ(plan.batch.seqs.size(), plan.scheduled.size());
    EXPECT_EQ(size_t(plan.batch.num_logit_rows()), plan.sampling.size());
    std::set<int32_t> slots, pages;
    StepResult result;
    size_t row = 0;
    for (size_t i = 0; i < plan.batch.seqs.size(); ++i) {
      const SeqSlice& s = plan.batch.seqs[i];
      const ScheduledSeq& q = plan.scheduled[i];
      EXPECT_EQ(s.num_tokens, q.num_tokens);
      EXPECT_TRUE(slots.insert(s.state_slot).second) << "slot " << s.state_slot << " used twice";
      EXPECT_GE(s.state_slot, 0);
      const BlockPool& bp = sched.blocks();
      if (bp.paging()) {
        EXPECT_GE(int64_t(s.block_table.size()) * bp.block_size(), s.context_len + s.num_tokens);
      }
      for (int32_t p : s.block_table) EXPECT_TRUE(pages.insert(p).second) << "page " << p << " shared";
      auto& hist = slot_history[s.state_slot];
      EXPECT_EQ(s.state_init == StateInit::Zero, s.context_len == 0) << "a fresh sequence starts from Zero";
      EXPECT_TRUE(s.state_init == StateInit::Zero || s.state_init == StateInit::Keep);
      if (s.state_init == StateInit::Zero) hist.clear();
      EXPECT_EQ(int64_t(hist.size()), s.context_len) << "slot state does not match context_len";
      const Request* r = sched.get(q.request_id);
      EXPECT_NE(r, nullptr);
      for (int32_t k = 0; k < s.num_tokens; ++k) {
        int32_t tok = plan.batch.tokens[size_t(s.token_offset + k)];
        if (r) {
          EXPECT_EQ(tok, r->token_at(s.context_len + k));
        }
        hist.push_back(tok);
      }
      EXPECT_EQ(s.need_logits, q.sample);
      if (q.sample) {
        const SeqSampling& sp = plan.sampling[row];
        EXPECT_EQ(sp.seq_id, q.request_id);
        EXPECT_EQ(sp.params.step, r ? r->output.size() : 0u);
        check_history(sp, r);
        SampleResult sr;
        sr.token = next_token(hist);
        if (held.count(sp.seq_id)) held[sp.seq_id].push_back(sr.token);  // what the backend appends
        result.samples.push_back(sr);
        ++row;
      }
    }
    auto updates = sched.update(plan, result);
    for (const auto& u : updates) {
      outputs[u.request_id].push_back(u.sample.token);
      if (is_finished(u.status)) finished[u.request_id] = u.status;
    }
    last_plan = std::move(plan);
    return updates;
  }

  // A backend drops the histories of the released requests; only requests that sent one are listed.
  void apply_released(const StepPlan& plan) {
    for (uint64_t id : plan.released) EXPECT_EQ(held.erase(id), 1u) << "request " << id << " released twice or "
                                                                       "without a history";
  }

  // Penalised rows find their request's prompt + output in the backend (sent once per admission).
  void check_history(const SeqSampling& sp, const Request* r) {
    if (sp.history) {
      EXPECT_TRUE(sp.params.penalties());
      EXPECT_FALSE(held.count(sp.seq_id)) << "history of " << sp.seq_id << " sent while the backend holds it";
      std::vector<int32_t> h = sp.prompt;
      h.insert(h.end(), sp.output.begin(), sp.output.end());
      held[sp.seq_id] = h;
    }
    if (!sp.params.penalties() || !r) return;
    std::vector<int32_t> want = r->prompt;
    want.insert(want.end(), r->output.begin(), r->output.end());
    ASSERT_TRUE(held.count(sp.seq_id)) << "penalised request " << sp.seq_id << " has no history";
    EXPECT_EQ(held[sp.seq_id], want);
  }

  // After the last step: an empty plan carries no releases; the next plan that runs carries them all.
  void finish_releases() {
    StepPlan empty = sched.schedule();
    EXPECT_TRUE(empty.empty());
    EXPECT_TRUE(empty.released.empty());
    Request r;
    r.prompt = {1};
    r.max_tokens = 1;
    sched.add(r);
    run_to_completion();
    EXPECT_TRUE(held.empty()) << held.size() << " penalty histories never released";
  }

  void run_to_completion(int max_steps = 100000) {
    for (int i = 0; i < max_steps && sched.has_work(); ++i) step();
    EXPECT_FALSE(sched.has_work()) << "did not finish in " << max_steps << " steps";
  }

  StepPlan last_plan;
};

// The tokens a request produces when it runs alone with unlimited memory: the reference.
inline std::vector<int32_t> run_alone(const std::vector<int32_t>& prompt, int max_tokens,
                                      const std::vector<int32_t>& stop_ids = {}) {
  std::vector<int32_t> hist = prompt, out;
  for (int i = 0; i < max_tokens; ++i) {
    int32_t t = next_token(hist);
    out.push_back(t);
    hist.push_back(t);
    bool stop = false;
    for (int32_t s : stop_ids) stop |= s == t;
    if (stop) break;
  }
  return out;
}

}  // namespace ds::test
