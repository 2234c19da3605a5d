// A stand-in for the model in scheduler tests: runs a StepPlan on per-slot token histories and
// "samples" a token that is a hash of the sequence's whole history, so any mix-up of slots, context
// lengths or tokens changes the output. Checks the plan's invariants on every step. KDA snapshots and
// MLA pages are modelled too: a snapshot holds the token history of the slot it saved, and each page
// row holds a hash of the whole prefix that wrote it, so a prefix-cache hit that restores the wrong
// state, shares a page with other contents or copies the wrong partial page fails the checks.
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
  std::map<int32_t, std::vector<int32_t>> snapshots;      // what each snapshot holds
  std::map<int32_t, std::vector<uint64_t>> page_rows;     // per page: prefix hash of each row (0: never written)
  std::map<uint64_t, std::map<int64_t, int32_t>> scored;  // prompt logprobs: per request, position -> token
                                                          // scored (RequestUpdate::scores)
  std::set<int32_t> poisoned_slots;                       // their saves are reported non-finite
  int64_t steps = 0, restores = 0, tail_copies = 0, prefill_tokens = 0;

  static uint64_t prefix_hash(uint64_t h, int32_t t) { return (h ^ uint64_t(uint32_t(t) + 1)) * 1099511628211ull; }
  std::vector<uint64_t>& page(int32_t p) {
    auto& rows = page_rows[p];
    rows.resize(size_t(std::max(1, sched.config().block_size)), 0);
    return rows;
  }

  explicit Sim(Scheduler& s) : sched(s) {}

  // Checks and "runs" the plan, then applies the result to the scheduler.
  std::vector<RequestUpdate> step() {
    StepPlan plan = sched.schedule();
    apply_released(plan);
    ++steps;
    prefill_tokens += plan.num_prefill_tokens;
    const SchedulerConfig& cfg = sched.config();
    EXPECT_LE(plan.batch.num_tokens(), cfg.max_num_batched_tokens);
    EXPECT_LE(int(plan.batch.seqs.size()), cfg.max_num_seqs);
    EXPECT_EQ(plan.batch.seqs.size(), plan.scheduled.size());
    EXPECT_EQ(size_t(plan.batch.num_logit_rows()), plan.sampling.size());
    std::set<int32_t> slots, pages;
    StepResult result;
    size_t row = 0;
    const int bs = sched.config().block_size;
    const bool paging = sched.blocks().paging();
    for (const SlotSave& v : plan.batch.saves_before) {
      snapshots[v.snapshot] = slot_history[v.slot];
      if (poisoned_slots.count(v.slot)) result.nonfinite_snapshots.push_back(v.snapshot);
    }
    // pages written by a slice are read by no other slice of the step
    std::map<int32_t, size_t> writer;
    for (size_t i = 0; paging && i < plan.batch.seqs.size(); ++i) {
      const SeqSlice& s = plan.batch.seqs[i];
      for (int64_t b = s.context_len / bs; b <= (s.context_len + s.num_tokens - 1) / bs; ++b)
        EXPECT_TRUE(writer.emplace(s.block_table[size_t(b)], i).second) << "page written twice in a step";
    }
    for (size_t i = 0; paging && i < plan.batch.seqs.size(); ++i)
      for (int32_t p : plan.batch.seqs[i].block_table)
        if (writer.count(p)) {
          EXPECT_EQ(writer[p], i) << "page " << p << " written by one slice, read by another";
        }
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
      for (int32_t p : s.block_table) EXPECT_TRUE(pages.insert(p).second) << "page " << p << " twice in a table";
      pages.clear();
      auto& hist = slot_history[s.state_slot];
      EXPECT_EQ(s.state_init == StateInit::Zero, s.context_len == 0) << "a fresh sequence starts from Zero";
      EXPECT_NE(s.state_init, StateInit::CopySlot);
      if (s.state_init == StateInit::Zero) hist.clear();
      if (s.state_init == StateInit::RestoreSnapshot) {
        EXPECT_TRUE(snapshots.count(s.state_src)) << "restores snapshot " << s.state_src << " never saved";
        hist = snapshots[s.state_src];
        ++restores;
      }
      if (s.tail_src_block >= 0) {
        EXPECT_EQ(s.state_init, StateInit::RestoreSnapshot);
        EXPECT_EQ(s.context_len % bs, s.tail_rows);
        const auto src = page(s.tail_src_block);
        auto& dst = page(s.block_table[size_t(s.context_len / bs)]);
        std::copy_n(src.begin(), s.tail_rows, dst.begin());
        ++tail_copies;
      }
      EXPECT_EQ(int64_t(hist.size()), s.context_len) << "slot state does not match context_len";
      const Request* r = sched.get(q.request_id);
      EXPECT_NE(r, nullptr);
      if (r) {
        uint64_t h = 1469598103934665603ull;
        for (int64_t p = 0; p < s.context_len + s.num_tokens; ++p) {
          h = prefix_hash(h, r->token_at(p));
          if (p < s.context_len) {
            EXPECT_EQ(hist[size_t(p)], r->token_at(p)) << "slot state is another prefix's";
            if (paging) {
              EXPECT_EQ(page(s.block_table[size_t(p / bs)])[size_t(p % bs)], h)
                  << "request " << r->id << " position " << p << " reads another prefix's latent";
            }
          } else if (paging) {
            page(s.block_table[size_t(p / bs)])[size_t(p % bs)] = h;
          }
        }
      }
      for (int32_t k = 0; k < s.num_tokens; ++k) {
        int32_t tok = plan.batch.tokens[size_t(s.token_offset + k)];
        if (r) {
          EXPECT_EQ(tok, r->token_at(s.context_len + k));
        }
        hist.push_back(tok);
      }
      if (s.save_snapshot >= 0) {
        snapshots[s.save_snapshot] = hist;
        if (poisoned_slots.count(s.state_slot)) result.nonfinite_snapshots.push_back(s.save_snapshot);
      }
      EXPECT_EQ(s.need_logits, q.sample || q.score_rows > 0);
      EXPECT_EQ(s.logits_all ? s.num_tokens : int(s.need_logits), q.score_rows + int(q.sample))
          << "a slice's logits rows are its scoring rows and its sampled one";
      for (int32_t k = 0; k < q.score_rows; ++k) {  // prompt logprobs: row k scores the token after position k
        const SeqSampling& sp = plan.sampling[row];
        EXPECT_EQ(sp.seq_id, q.request_id);
        EXPECT_TRUE(r && r->prompt_logprobs >= 0);
        if (r) {
          EXPECT_EQ(sp.params.forced_token, r->token_at(s.context_len + k + 1));
          EXPECT_EQ(sp.params.num_logprobs, r->prompt_logprobs);
        }
        EXPECT_TRUE(sp.params.greedy() && !sp.params.penalties() && !sp.history);
        SampleResult sr;
        sr.token = sp.params.forced_token;
        sr.logprob = -float(s.context_len + k + 1);  // the position it scores, to check the report's order
        result.samples.push_back(sr);
        ++row;
      }
      if (q.sample) {
        EXPECT_LT(plan.sampling[row].params.forced_token, 0) << "a sampled row is not a scoring row";
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
    EXPECT_EQ(row, plan.sampling.size());
    if (sched.config().max_logit_rows > 0) {
      EXPECT_LE(int(plan.sampling.size()), sched.config().max_logit_rows);
    }
    auto updates = sched.update(plan, result);
    for (const auto& u : updates) {
      for (size_t k = 0; k < u.scores.size(); ++k) {
        const int64_t pos = u.first_scored + int64_t(k);
        EXPECT_EQ(u.scores[k].logprob, -float(pos)) << "scores out of order";
        scored[u.request_id][pos] = u.scores[k].token;
      }
      if (!u.sampled) continue;
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
