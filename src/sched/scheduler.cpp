#include "sched/scheduler.h"

#include <algorithm>

#include "core/error.h"

namespace ds {
namespace {
constexpr size_t kMaxPassedOver = 64;  // waiting requests passed over per step (they wait for a prefix hit)
}  // namespace

Scheduler::Scheduler(const SchedulerConfig& cfg)
    : cfg_(cfg),
      cost_(cfg.cost, cfg.max_num_batched_tokens),
      blocks_(cfg.num_blocks, cfg.block_size),
      slots_(cfg.num_state_slots),
      prefix_(cfg.prefix, blocks_) {
  DS_CHECK(cfg.max_num_seqs >= 1, "scheduler: max_num_seqs {} < 1", cfg.max_num_seqs);
  DS_CHECK(cfg.max_num_batched_tokens >= 1, "scheduler: max_num_batched_tokens {} < 1",
           cfg.max_num_batched_tokens);
  DS_CHECK(cfg.max_model_len >= 1, "scheduler: max_model_len {} < 1", cfg.max_model_len);
  DS_CHECK(cfg.num_state_slots >= 1, "scheduler: no KDA state slots");
  DS_CHECK(!blocks_.paging() || cfg.max_model_len <= blocks_.capacity_tokens(),
           "scheduler: max_model_len {} exceeds the MLA page pool ({} pages x {} tokens)",
           cfg.max_model_len, cfg.num_blocks, cfg.block_size);
  cfg_.max_num_seqs = std::min(cfg.max_num_seqs, cfg.num_state_slots);
}

uint64_t Scheduler::add(Request r) {
  DS_CHECK(!r.prompt.empty(), "scheduler: empty prompt");
  DS_CHECK(int64_t(r.prompt.size()) <= cfg_.max_model_len,
           "scheduler: prompt of {} tokens exceeds max_model_len {}", r.prompt.size(), cfg_.max_model_len);
  DS_CHECK(r.max_tokens >= 1, "scheduler: max_tokens {} < 1", r.max_tokens);
  DS_CHECK(r.prompt_logprobs < 0 || cfg_.max_logit_rows <= 0 || cfg_.max_logit_rows >= 2,
           "scheduler: prompt logprobs need 2+ logits rows a step, the backend has {}", cfg_.max_logit_rows);
  r.id = next_id_++;
  r.status = RequestStatus::Waiting;
  r.num_computed = 0;
  r.state_slot = -1;
  r.blocks.clear();
  r.history_sent = false;
  r.block_hashes.clear();
  r.num_cached_tokens = 0;
  prefix_.release(r);
  uint64_t id = r.id;
  requests_.emplace(id, std::make_unique<Request>(std::move(r)));
  enqueue(id, false);
  return id;
}

bool Scheduler::before(uint64_t a, uint64_t b) {
  if (cfg_.policy == SchedulingPolicy::Priority) {
    const int64_t pa = req(a).priority, pb = req(b).priority;
    if (pa != pb) return pa < pb;
  }
  return a < b;
}

void Scheduler::enqueue(uint64_t id, bool preempted) {
  if (cfg_.policy == SchedulingPolicy::Fcfs) {
    if (preempted) waiting_.push_front(id);
    else waiting_.push_back(id);
    return;
  }
  waiting_.insert(std::upper_bound(waiting_.begin(), waiting_.end(), id,
                                   [this](uint64_t a, uint64_t b) { return before(a, b); }),
                  id);
}

const Request* Scheduler::get(uint64_t id) const {
  auto it = requests_.find(id);
  return it == requests_.end() ? nullptr : it->second.get();
}

Request& Scheduler::req(uint64_t id) {
  auto it = requests_.find(id);
  DS_CHECK(it != requests_.end(), "scheduler: unknown request {}", id);
  return *it->second;
}

void Scheduler::release(Request& r) {
  if (r.history_sent) released_.push_back(r.id);  // the backend drops its penalty history with the next plan
  r.history_sent = false;
  if (r.state_slot >= 0) slots_.free(r.state_slot);
  r.state_slot = -1;
  blocks_.free(&r.blocks);
  prefix_.release(r);
  r.num_computed = 0;
}

void Scheduler::remove_running(uint64_t id) {
  auto it = std::find(running_.begin(), running_.end(), id);
  if (it != running_.end()) running_.erase(it);
}

bool Scheduler::finish(uint64_t id, RequestStatus status) {
  DS_CHECK(is_finished(status), "scheduler: finish() needs a finished status");
  auto it = requests_.find(id);
  if (it == requests_.end()) return false;
  Request& r = *it->second;
  if (r.status == RequestStatus::Waiting) {
    waiting_.erase(std::find(waiting_.begin(), waiting_.end(), id));
  } else {
    remove_running(id);
    // the state a finished request leaves is saved for the next turn of its conversation
    if (status == RequestStatus::FinishedStopped || status == RequestStatus::FinishedLength) prefix_.save_finished(r);
  }
  release(r);
  requests_.erase(it);
  return true;
}

uint64_t Scheduler::youngest_unplaced() const {
  for (auto it = running_.rbegin(); it != running_.rend(); ++it)
    if (!placed_.count(*it)) return *it;
  return 0;
}

void Scheduler::preempt(Request& r, StepPlan* plan) {
  release(r);
  r.status = RequestStatus::Waiting;
  ++r.num_preemptions;
  ++num_preemptions_;
  remove_running(r.id);
  enqueue(r.id, true);
  plan->preempted.push_back(r.id);
}

bool Scheduler::reserve_pages(Request& r, int64_t tokens, StepPlan* plan) {
  int need = blocks_.blocks_for(tokens) - int(r.blocks.size());
  if (need > blocks_.num_free()) prefix_.reclaim_pages(need);  // cached partial pages go first
  while (need > blocks_.num_free()) {
    uint64_t victim = youngest_unplaced();
    DS_CHECK(victim != 0, "scheduler: request {} is not running", r.id);
    preempt(req(victim), plan);
    if (victim == r.id) return false;
  }
  if (need > 0) blocks_.allocate(need, &r.blocks);
  return true;
}

int64_t Scheduler::tokens_that_fit(const Request& r, int reserve) const {
  if (!blocks_.paging()) return r.num_remaining();
  const int usable = std::max(0, blocks_.num_free() - reserve);
  int64_t cap = int64_t(r.blocks.size() + size_t(usable)) * blocks_.block_size();
  return std::max<int64_t>(0, std::min(cap - r.num_computed, r.num_remaining()));
}

void Scheduler::place(Request& r, int32_t n, StepPlan* plan) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) ids[size_t(i)] = r.token_at(r.num_computed + i);
  ScheduledSeq s;
  s.request_id = r.id;
  s.num_tokens = n;
  s.sample = r.num_computed + n == r.num_tokens();
  s.decode = r.num_remaining() == 1;
  SeqSlice& slice = plan->batch.add(r.state_slot, r.num_computed, ids, r.blocks);
  // A fresh sequence, or one preempted by recompute (num_computed back at 0), starts from a zero state;
  // one resumed from the prefix cache from its snapshot (and the partial page of the cached prefix).
  slice.state_init = r.num_computed == 0 ? StateInit::Zero : StateInit::Keep;
  if (r.restore_snapshot >= 0) {
    slice.state_init = StateInit::RestoreSnapshot;
    slice.state_src = r.restore_snapshot;
    slice.tail_src_block = r.tail_src_block;
    slice.tail_rows = r.tail_rows;
    r.restore_snapshot = r.tail_src_block = -1;
    r.tail_rows = 0;
  }
  slice.save_snapshot = prefix_.save_after_chunk(r, n, s.decode);
  slice.need_logits = s.sample;
  if (r.scoring()) {  // a row a token: position p scores prompt token p + 1 (the prompt's last one samples)
    const int64_t prompt_len = int64_t(r.prompt.size());
    DS_CHECK(r.num_computed + n <= prompt_len, "scheduler: a scoring chunk past the prompt of request {}", r.id);
    slice.logits_all = true;
    slice.need_logits = true;
    for (int32_t j = 0; j < n; ++j) {
      const int64_t p = r.num_computed + j;
      if (p + 1 >= prompt_len) break;
      SeqSampling row;
      row.seq_id = r.id;
      row.params.temperature = 0.f;
      row.params.num_logprobs = r.prompt_logprobs;
      row.params.forced_token = r.prompt[size_t(p + 1)];
      plan->sampling.push_back(std::move(row));
      ++s.score_rows;
    }
  }
  if (s.sample) {
    SeqSampling row;
    row.seq_id = r.id;
    row.params = r.sampling;
    row.params.step = r.output.size();
    if (row.params.penalties() && !r.history_sent) {  // once per admission: prompt + output so far
      row.history = true;
      row.prompt = r.prompt;
      row.output = r.output;
      r.history_sent = true;
    }
    plan->sampling.push_back(std::move(row));
  }
  (s.decode ? plan->num_decode_tokens : plan->num_prefill_tokens) += n;
  plan->scheduled.push_back(s);
  placed_[r.id] = n;
}

int64_t Scheduler::cost_bounded(const Request& r, int64_t cap, double* cost_left, bool first, bool alone) const {
  cap = prefix_.clip_chunk(r, int32_t(std::min<int64_t>(cap, INT32_MAX)));  // charge what runs
  int64_t n = alone ? cap : cost_.max_tokens(*cost_left, r.num_computed, cap);
  if (first) n = std::max(n, std::min<int64_t>(cap, cost_.min_prefill_chunk()));
  *cost_left -= cost_.cost(n, r.num_computed);
  return n;
}

bool Scheduler::latency_sensitive(const Request& r) const {
  return r.num_remaining() <= cfg_.max_num_batched_tokens;  // decoding, or its first token within a step
}

int64_t Scheduler::rows_left(const StepPlan& plan) const {
  return cfg_.max_logit_rows > 0 ? std::max<int64_t>(0, cfg_.max_logit_rows - int64_t(plan.sampling.size())) : INT32_MAX;
}

int64_t Scheduler::row_capped(const Request& r, int64_t cap, const StepPlan& plan) const {
  const int64_t rows = rows_left(plan);
  if (r.scoring()) {
    // a row a token, and the chunk stops at the prompt's end (its last row samples the first output token)
    cap = std::min(cap, int64_t(r.prompt.size()) - r.num_computed);
    return std::min(cap, rows);
  }
  if (rows > 0 || cap < r.num_remaining()) return cap;  // (a chunk that does not finish the prefill takes no row)
  return std::max<int64_t>(0, r.num_remaining() - 1);
}

bool Scheduler::can_admit() const {
  return !waiting_.empty() && int(running_.size()) < cfg_.max_num_seqs && slots_.num_free() > 0 &&
         (!blocks_.paging() || blocks_.num_free() > int(running_.size()));
}

bool Scheduler::admit(size_t i, int* budget, double* cost_left, bool* first_prefill, StepPlan* plan, bool* stop) {
  Request& r = req(waiting_[i]);
  const PrefixHit hit = r.scoring() ? PrefixHit{} : prefix_.lookup(r);  // (cached tokens have no logits)
  std::vector<const Request*> behind;
  if (prefix_.enabled() && !r.scoring()) {
    std::vector<std::pair<Request*, int64_t>> running;  // and where each is computed to after this step
    for (uint64_t id : running_) {
      auto p = placed_.find(id);
      running.push_back({&req(id), req(id).num_computed + (p == placed_.end() ? 0 : p->second)});
    }
    if (prefix_.should_wait(r, hit, running)) return false;
    for (size_t j = i + 1; j < waiting_.size() && behind.size() < 64; ++j) behind.push_back(&req(waiting_[j]));
  }
  prefix_.take(hit, r, behind);
  const int reserve = int(running_.size());
  int64_t cap = std::min<int64_t>(tokens_that_fit(r, reserve), *budget);
  if (cap == 0) {
    prefix_.reclaim_pages(reserve + 1);
    cap = std::min<int64_t>(tokens_that_fit(r, reserve), *budget);
  }
  cap = row_capped(r, cap, *plan);
  // Alone: nothing else runs or waits, so nothing needs the step to be short.
  const bool alone = running_.empty() && waiting_.size() == 1;
  int32_t n = cap > 0 ? int32_t(cost_bounded(r, cap, cost_left, *first_prefill, alone)) : 0;
  if (n == 0) {
    prefix_.untake(r);
    *stop = true;
    return false;
  }
  *first_prefill = false;
  waiting_.erase(waiting_.begin() + std::ptrdiff_t(i));
  r.state_slot = slots_.allocate();
  r.status = RequestStatus::Running;
  bool ok = reserve_pages(r, r.num_computed + n, plan);
  DS_CHECK(ok, "scheduler: pages for an admitted chunk were not available");
  running_.insert(std::upper_bound(running_.begin(), running_.end(), r.id,
                                   [this](uint64_t a, uint64_t b) { return before(a, b); }),
                  r.id);
  place(r, n, plan);
  *budget -= n;
  return true;
}

std::optional<PrefixCacheCleared> Scheduler::reset_prefix_cache() {
  if (!waiting_.empty() || !running_.empty()) return std::nullopt;
  return prefix_.reset();
}

StepPlan Scheduler::schedule() {
  StepPlan plan;
  prefix_.begin_plan();
  plan.batch.saves_before = prefix_.take_saves_before();
  plan.released.swap(released_);
  placed_.clear();
  int budget = cfg_.max_num_batched_tokens;
  double cost_left = cost_.chunk_budget();
  bool first_prefill = true;  // the step's first prefill chunk gets at least min_prefill_chunk tokens

  // 1. Decodes, oldest first. Preemption removes requests from running_, so iterate over a copy.
  std::vector<uint64_t> order = running_;
  for (uint64_t id : order) {
    if (budget == 0) break;
    if (!requests_.count(id)) continue;
    Request& r = req(id);
    if (r.status != RequestStatus::Running || r.num_remaining() != 1) continue;
    if (!reserve_pages(r, r.num_computed + 1, &plan)) continue;
    place(r, 1, &plan);
    budget -= 1;
    cost_left -= cost_.cost(1, r.num_computed);
  }

  // 2. Next prefill chunk of running requests, oldest first; a chunk shrinks to the free pages, and
  //    only when not one token fits are younger requests preempted. A long prefill (see
  //    latency_sensitive) with nothing latency-sensitive beside it takes whole token-budget chunks; beside
  //    such work it is cost-bounded and leaves the short prefills behind it and the admissions up to half
  //    the step (tokens and cost).
  order = running_;
  int sensitive = 0;
  for (uint64_t id : order) sensitive += latency_sensitive(req(id));
  const bool admissions = can_admit();
  // While requests decode, long prefills may sit out steps (long_prefill_interval > 1): a decode-only step
  // is short, and each step a long prefill joins pays its fixed cost (docs/SCHEDULER.md, "Step cost").
  const int interval = cost_.config().long_prefill_interval;
  const bool long_sits_out = plan.num_decode_tokens > 0 && interval > 1 && decode_steps_++ % interval != 0;
  for (uint64_t id : order) {
    if (budget == 0) break;
    Request& r = req(id);
    if (r.status != RequestStatus::Running || placed_.count(id)) continue;
    const bool long_prefill = !latency_sensitive(r);
    if (long_prefill && long_sits_out) continue;
    const bool alone = sensitive == (long_prefill ? 0 : 1) && !admissions;  // nothing else to protect
    int64_t fit = tokens_that_fit(r);
    if (fit == 0) {
      if (!reserve_pages(r, r.num_computed + 1, &plan)) continue;
      fit = tokens_that_fit(r);
    }
    int64_t cap = row_capped(r, std::min<int64_t>(fit, budget), plan);
    if (cap == 0) continue;
    double share = cost_left;  // what this chunk may spend
    if (long_prefill && !alone) {  // leave the prefills behind it and the admissions up to half the step
      int64_t leave_tokens = admissions ? budget / 2 : 0;
      double leave_cost = admissions ? cost_left / 2 : 0;
      for (uint64_t other : order) {
        const Request* o = requests_.count(other) ? &req(other) : nullptr;
        if (!o || o == &r || placed_.count(other) || o->status != RequestStatus::Running || !latency_sensitive(*o))
          continue;
        leave_tokens += o->num_remaining();
        leave_cost += cost_.cost(o->num_remaining(), o->num_computed);
      }
      cap = std::max<int64_t>(1, std::min<int64_t>(cap, budget - std::min<int64_t>(leave_tokens, budget / 2)));
      share = std::max(0.0, cost_left - std::min(leave_cost, cost_left / 2));
    }
    const double share_before = share;
    int32_t n = int32_t(cost_bounded(r, cap, &share, first_prefill, alone));
    cost_left -= share_before - share;
    if (n == 0) continue;
    first_prefill = false;
    bool ok = reserve_pages(r, r.num_computed + n, &plan);
    DS_CHECK(ok, "scheduler: pages for a chunk that fits were not available");
    place(r, n, &plan);
    budget -= n;
  }

  // 3. Admission from the waiting queue, in order, while a slot, pages and budget remain. One free
  //    page per running request stays in reserve so that they can grow without being preempted
  //    at once by the newcomer's first chunk (less thrashing when the pool is tight).
  //    A request that waits for a deeper prefix hit (sched/prefix_cache.h) is passed over.
  size_t i = 0, passed = 0;
  while (plan.preempted.empty() && budget > 0 && i < waiting_.size() &&
         int(running_.size()) < cfg_.max_num_seqs && slots_.num_free() > 0) {
    bool stop = false;
    if (admit(i, &budget, &cost_left, &first_prefill, &plan, &stop)) continue;
    if (stop || ++passed > kMaxPassedOver) break;
    ++i;
  }
  placed_.clear();
  if (plan.empty()) {  // nothing runs this step: the releases wait for a plan the backend executes
    released_.insert(released_.begin(), plan.released.begin(), plan.released.end());
    plan.released.clear();
  }
  return plan;
}

RequestStatus Scheduler::check_stop(const Request& r) const {
  int32_t last = r.output.back();
  if (std::find(r.stop_token_ids.begin(), r.stop_token_ids.end(), last) != r.stop_token_ids.end())
    return RequestStatus::FinishedStopped;
  if (int64_t(r.output.size()) >= r.max_tokens || r.num_tokens() >= cfg_.max_model_len)
    return RequestStatus::FinishedLength;
  return RequestStatus::Running;
}

std::vector<RequestUpdate> Scheduler::update(const StepPlan& plan, const StepResult& result) {
  DS_CHECK(result.samples.size() == plan.sampling.size(),
           "scheduler: {} samples for {} logits rows", result.samples.size(), plan.sampling.size());
  prefix_.resolve(result.nonfinite_snapshots);
  std::vector<RequestUpdate> updates;
  size_t row = 0;
  for (const ScheduledSeq& s : plan.scheduled) {
    auto it = requests_.find(s.request_id);
    const size_t score0 = row;
    row += size_t(s.score_rows);
    const SampleResult* sample = s.sample ? &result.samples[row++] : nullptr;
    if (it == requests_.end()) continue;  // finished by the caller between schedule and update
    Request& r = *it->second;
    RequestUpdate u;
    u.request_id = r.id;
    if (s.score_rows > 0) {
      u.first_scored = r.num_computed + 1;
      u.scores.assign(result.samples.begin() + std::ptrdiff_t(score0),
                      result.samples.begin() + std::ptrdiff_t(score0 + size_t(s.score_rows)));
    }
    r.num_computed += s.num_tokens;
    prefix_.advance(r);
    if (!sample) {
      if (!u.scores.empty()) {
        u.sampled = false;
        u.cached_tokens = r.num_cached_tokens;
        updates.push_back(std::move(u));
      }
      continue;
    }
    r.output.push_back(sample->token);
    u.sample = *sample;
    u.cached_tokens = r.num_cached_tokens;
    u.status = check_stop(r);
    if (is_finished(u.status)) finish(r.id, u.status);
    updates.push_back(std::move(u));
  }
  return updates;
}

std::pair<int64_t, int64_t> Scheduler::longest_prefill() const {
  std::pair<int64_t, int64_t> best{0, 0};
  for (uint64_t id : running_) {
    const Request& r = *requests_.at(id);
    if (r.num_remaining() <= 1) continue;  // decoding (or about to)
    if (r.num_remaining() > best.second - best.first) best = {r.num_computed, r.num_tokens()};
  }
  return best;
}

}  // namespace ds
