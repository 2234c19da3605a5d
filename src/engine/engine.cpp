#include "engine/engine.h"
#include "engine/output_delivery.h"

#include <algorithm>
#include <cmath>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "core/log.h"
#include "engine/cache_reset.h"
#include "engine/capacity.h"
#include "engine/output_builder.h"
#include "engine/token_controls.h"
#include "sched/scheduler.h"
#include "tokenizer/tokenizer.h"

namespace ds {
namespace {

struct Pending {
  GenerationRequest req;
  std::shared_ptr<RequestStream> stream;
};

// Wall seconds of one step's phases (EngineStats::schedule_seconds ...).
struct StepTimes {
  double schedule = 0.0, execute = 0.0, update = 0.0;
};

// A request the step thread is working on.
struct Active {
  std::string id;
  std::shared_ptr<RequestStream> stream;
  std::unique_ptr<OutputBuilder> builder;
  std::unique_ptr<TokenControls> controls;  // token masks (grammar, allowed ids, bad words, min_tokens)
  uint64_t sched_id = 0;
  std::chrono::steady_clock::time_point scheduled_at{};  // first time in a step plan
};

// The scheduler (the only place that chunks) within what one backend step may hold; a flag beyond a
// limit is lowered with a warning naming it.
SchedulerConfig scheduler_config(const EngineOptions& opts, const BackendLimits& lim, int64_t max_len) {
  SchedulerConfig sc;
  sc.num_state_slots = lim.num_state_slots;
  sc.max_num_seqs = opts.max_num_seqs;
  sc.max_num_batched_tokens = opts.max_num_batched_tokens;
  auto lower = [](int* value, int limit, const char* flag, const char* what) {
    if (limit <= 0 || *value <= limit) return;
    spdlog::warn("{} {} exceeds the backend's {} ({}); using {}", flag, *value, what, limit, limit);
    *value = limit;
  };
  lower(&sc.max_num_seqs, lim.num_state_slots, "--max-num-seqs", "KDA state slots");
  lower(&sc.max_num_seqs, lim.max_seqs_per_step, "--max-num-seqs", "sequences per step");
  lower(&sc.max_num_seqs, lim.max_logit_rows, "--max-num-seqs", "logits rows per step");
  lower(&sc.max_num_batched_tokens, lim.max_tokens_per_step, "--max-num-batched-tokens", "tokens per step");
  sc.max_model_len = max_len;
  sc.cost = opts.step_cost;
  sc.policy = opts.scheduling_policy;
  sc.max_logit_rows = lim.max_logit_rows;
  sc.num_blocks = lim.num_blocks;
  sc.block_size = lim.num_blocks > 0 ? lim.block_size : 0;  // no MLA cache: no paging
  sc.prefix.enabled = opts.enable_prefix_caching && lim.num_snapshots > 0 && sc.block_size > 0;
  sc.prefix.num_snapshots = lim.num_snapshots;
  sc.prefix.snapshot_interval = opts.prefix_snapshot_interval;
  return sc;
}

}  // namespace

struct Engine::Impl {
  std::unique_ptr<Backend> backend;
  std::shared_ptr<const Tokenizer> tokenizer;
  EngineOptions opts;
  BackendLimits limits;
  int64_t max_len = 0;
  MaxModelLen max_len_info;
  int vocab = 0;
  std::vector<int32_t> eos_ids;  // model EOS ids + the tokenizer's default stop ids
  std::unique_ptr<Scheduler> sched;

  // Shared with submitters (guarded by mu).
  std::mutex mu;
  std::condition_variable cv;       // wakes the step thread
  std::condition_variable idle_cv;  // wakes drain()
  std::deque<Pending> intake;
  std::vector<std::string> aborts;
  std::vector<std::shared_ptr<ResetRequest>> resets;  // prefix cache resets, answered between steps
  std::unordered_set<std::string> live;  // submitted and not finished
  int sched_waiting = 0;                 // scheduler's queue length after the last step
  bool stopping = false, draining = false;
  uint64_t next_auto_id = 0;

  mutable std::mutex stats_mu;
  EngineStats stats;

  // Step thread only.
  using Delivery = OutputDelivery::Item;
  std::vector<Delivery> outbox;  // posted to `delivery` after the step's stats are published
  std::unordered_map<std::string, Active> active;
  std::unordered_map<uint64_t, std::string> by_sched_id;
  std::shared_ptr<const TokenIndex> token_index;  // the grammar's view of the vocabulary (with a tokenizer)
  MaskWorker mask_worker;
  std::thread warm;  // warm_token_masks at start
  // The streams' pushes (after the members its function uses, so that it goes first)
  std::unique_ptr<OutputDelivery> delivery;
  std::thread loop;

  void run();
  void admit(Pending p);
  void end(const std::string& id, GenerationOutput out);
  void end_with(const std::string& id, FinishReason reason, const std::string& error);
  void step();
  std::shared_ptr<StepMasks> start_masks(const StepPlan& plan);
  // (t: the step's phases' wall seconds, EngineStats::schedule_seconds ...)
  void publish_stats(int64_t new_prompt, int64_t new_gen, bool stepped, const StepTimes& t = StepTimes());
  void deliver();
  void push_outputs(std::vector<Delivery>& batch);  // on the delivery thread
};

Engine::Engine(std::unique_ptr<Backend> backend, std::shared_ptr<const Tokenizer> tokenizer,
               EngineOptions opts)
    : impl_(std::make_unique<Impl>()) {
  DS_CHECK(backend != nullptr, "engine: no backend");
  Impl& m = *impl_;
  m.backend = std::move(backend);
  m.tokenizer = std::move(tokenizer);
  m.opts = opts;
  const ModelConfig& cfg = m.backend->config();
  m.limits = m.backend->limits();
  m.vocab = cfg.vocab_size;
  m.max_len_info = resolve_max_model_len(opts.max_model_len, cfg.max_position_embeddings, m.limits);
  m.max_len = m.max_len_info.len;
  if (m.max_len_info.limited_by == MaxModelLen::Limit::Context || m.max_len_info.from_flag)
    if (!m.max_len_info.why_lowered().empty()) spdlog::warn("{}", m.max_len_info.why_lowered());
  if (m.max_len_info.limited_by == MaxModelLen::Limit::Cache && !m.max_len_info.from_flag)
    spdlog::info("{}", m.max_len_info.why_lowered());
  for (int id : cfg.eos_token_ids) m.eos_ids.push_back(id);
  if (m.tokenizer)
    for (int32_t id : m.tokenizer->default_stop_ids())
      if (id < m.vocab && std::find(m.eos_ids.begin(), m.eos_ids.end(), id) == m.eos_ids.end())
        m.eos_ids.push_back(id);

  const SchedulerConfig sc = scheduler_config(opts, m.limits, m.max_len);
  m.sched = std::make_unique<Scheduler>(sc);
  spdlog::info("engine on {}: max_model_len {}, max_num_seqs {}, max_num_batched_tokens {}, "
               "{} state slots, {} MLA pages x {} tokens",
               m.backend->device_name(), m.max_len,
               sc.max_num_seqs, sc.max_num_batched_tokens, m.limits.num_state_slots,
               m.limits.num_blocks, m.limits.block_size);
  spdlog::info("{}", cache_capacity(m.limits, m.max_len).describe());
  {
    const StepCost cost(sc.cost, sc.max_num_batched_tokens);
    spdlog::info("step budget: {} tokens; beside decodes or waiting requests also {:.0f} units of cost (~{:.0f} ms "
                 "on an H200; a prefill chunk at context {} then gets up to {} tokens)", sc.max_num_batched_tokens,
                 cost.budget(), cost.seconds(cost.budget()) * 1e3, m.max_len,
                 cost.max_tokens(cost.chunk_budget(), m.max_len, sc.max_num_batched_tokens));
  }
  if (m.tokenizer) {  // the vocabulary trie now, the shared JSON masks in the background
    m.token_index = make_token_index(*m.tokenizer, m.vocab);
    m.warm = std::thread([idx = m.token_index] {
      try {
        warm_token_masks(*idx);
      } catch (const std::exception& e) {
        spdlog::warn("grammar mask warm-up failed: {}", e.what());
      }
    });
  }
  if (sc.prefix.enabled) {
    spdlog::info("prefix caching: on ({} KDA snapshots, a snapshot every {} tokens inside long prefills)",
                 sc.prefix.num_snapshots, sc.prefix.snapshot_interval);
  } else {
    spdlog::info("prefix caching: off{}", opts.enable_prefix_caching ? " (the backend has no KDA snapshots)" : "");
  }
  m.delivery = std::make_unique<OutputDelivery>([&m](OutputDelivery::Batch& b) { m.push_outputs(b); },
                                                opts.deliver_on_thread);
  m.loop = std::thread([&m] { m.run(); });
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lk(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  if (impl_->loop.joinable()) impl_->loop.join();
  if (impl_->warm.joinable()) impl_->warm.join();
}

SubmitStatus Engine::submit(GenerationRequest req, std::shared_ptr<RequestStream>* stream,
                            std::string* why) {
  Impl& m = *impl_;
  auto reject = [&](SubmitStatus s, std::string msg) {
    if (why) *why = std::move(msg);
    return s;
  };
  if (req.prompt_tokens.empty()) return reject(SubmitStatus::Invalid, "the prompt is empty");
  for (int32_t t : req.prompt_tokens)
    if (t < 0 || t >= m.vocab)
      return reject(SubmitStatus::Invalid, fmt::format("token id {} is outside the vocabulary [0, {})", t, m.vocab));
  if (int64_t(req.prompt_tokens.size()) > m.max_len) {
    const std::string note = context_limit_note(m.max_len_info);
    return reject(SubmitStatus::TooLong,
                  fmt::format("the prompt has {} tokens; this model's maximum context length is {}{}{}",
                              req.prompt_tokens.size(), m.max_len, note.empty() ? "" : "; ", note));
  }
  if (req.max_tokens < 1)
    return reject(SubmitStatus::Invalid, fmt::format("max_tokens must be at least 1, got {}", req.max_tokens));
  if (req.priority != 0 && m.opts.scheduling_policy != SchedulingPolicy::Priority)
    return reject(SubmitStatus::Invalid,
                  fmt::format("got priority {} but priority scheduling is not enabled (start the server with "
                              "--scheduling-policy priority)",
                              req.priority));
  const SampleParams& sp = req.sampling;
  if (!(sp.temperature >= 0.0f)) return reject(SubmitStatus::Invalid, "temperature must be >= 0");
  if (!(sp.top_p > 0.0f && sp.top_p <= 1.0f)) return reject(SubmitStatus::Invalid, "top_p must be in (0, 1]");
  if (!(sp.min_p >= 0.0f && sp.min_p <= 1.0f)) return reject(SubmitStatus::Invalid, "min_p must be in [0, 1]");
  if (!(sp.repetition_penalty > 0.0f)) return reject(SubmitStatus::Invalid, "repetition_penalty must be > 0");
  if (sp.num_logprobs > m.vocab) return reject(SubmitStatus::Invalid, "too many logprobs requested");
  if (req.prompt_logprobs > m.vocab) return reject(SubmitStatus::Invalid, "too many prompt logprobs requested");
  if (!m.tokenizer && (req.detokenize || !req.stop.empty()))
    return reject(SubmitStatus::Invalid, "text output and stop strings need a tokenizer");
  if (req.grammar && !m.tokenizer) return reject(SubmitStatus::Invalid, "structured output needs a tokenizer");
  auto bad_id = [&](int32_t t) { return t < 0 || t >= m.vocab; };
  for (const auto& [t, bias] : req.logit_bias)
    if (bad_id(t) || !std::isfinite(bias))
      return reject(SubmitStatus::Invalid, fmt::format("logit_bias: token id {} is outside the vocabulary [0, {}) or its "
                                                       "bias is not finite", t, m.vocab));
  for (int32_t t : req.allowed_token_ids)
    if (bad_id(t))
      return reject(SubmitStatus::Invalid, fmt::format("allowed_token_ids: {} is outside the vocabulary [0, {})", t, m.vocab));
  for (const auto& w : req.bad_words) {
    if (w.empty()) return reject(SubmitStatus::Invalid, "bad_words: an empty token sequence");
    for (int32_t t : w)
      if (bad_id(t))
        return reject(SubmitStatus::Invalid, fmt::format("bad_words: token id {} is outside the vocabulary [0, {})", t, m.vocab));
  }
  if (req.min_tokens < 0 || req.min_tokens > req.max_tokens)
    return reject(SubmitStatus::Invalid, fmt::format("min_tokens must be in [0, max_tokens = {}], got {}", req.max_tokens,
                                                     req.min_tokens));

  std::lock_guard<std::mutex> lk(m.mu);
  if (m.stopping || m.draining) return reject(SubmitStatus::ShuttingDown, "the engine is shutting down");
  if (std::string f = m.backend->failure(); !f.empty())
    return reject(SubmitStatus::Unavailable, "the model can run no more steps: " + f);
  if (int(m.intake.size()) + m.sched_waiting >= m.opts.max_waiting)
    return reject(SubmitStatus::Overloaded,
                  fmt::format("{} requests are already waiting", int(m.intake.size()) + m.sched_waiting));
  if (req.request_id.empty()) req.request_id = fmt::format("req-{}", m.next_auto_id++);
  if (m.live.count(req.request_id))
    return reject(SubmitStatus::Invalid, fmt::format("request id '{}' is already in use", req.request_id));
  auto s = std::make_shared<RequestStream>();
  s->id = req.request_id;
  s->arrival = std::chrono::steady_clock::now();
  m.live.insert(req.request_id);
  m.intake.push_back({std::move(req), s});
  if (stream) *stream = s;
  m.cv.notify_all();
  return SubmitStatus::Ok;
}

void Engine::abort(const std::string& request_id) {
  {
    std::lock_guard<std::mutex> lk(impl_->mu);
    impl_->aborts.push_back(request_id);
  }
  impl_->cv.notify_all();
}

void Engine::drain() {
  std::unique_lock<std::mutex> lk(impl_->mu);
  impl_->draining = true;
  impl_->cv.notify_all();
  impl_->idle_cv.wait(lk, [&] { return impl_->live.empty() || impl_->stopping; });
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lk(impl_->stats_mu);
  return impl_->stats;
}

PrefixCacheResetResult Engine::reset_prefix_cache(std::chrono::milliseconds timeout) {
  auto q = std::make_shared<ResetRequest>();
  {
    std::lock_guard<std::mutex> lk(impl_->mu);
    if (impl_->stopping) return ResetRequest::shutting_down();
    impl_->resets.push_back(q);
  }
  impl_->cv.notify_all();
  return q->wait(timeout);
}

const ModelConfig& Engine::model_config() const { return impl_->backend->config(); }
int64_t Engine::max_model_len() const { return impl_->max_len; }
const MaxModelLen& Engine::max_model_len_info() const { return impl_->max_len_info; }
const EngineOptions& Engine::options() const { return impl_->opts; }
BackendLimits Engine::backend_limits() const { return impl_->limits; }
std::string Engine::backend_failure() const { return impl_->backend->failure(); }

// ---------------------------------------------------------------------------------------------
// Step thread
// ---------------------------------------------------------------------------------------------

void Engine::Impl::end(const std::string& id, GenerationOutput out) {
  auto it = active.find(id);
  if (it == active.end()) return;
  outbox.push_back({it->second.stream, std::move(out)});
  by_sched_id.erase(it->second.sched_id);
  active.erase(it);
}

// The step's outputs to the delivery thread (output_delivery.h), in order.
void Engine::Impl::deliver() {
  if (outbox.empty()) return;
  delivery->post(std::move(outbox));
  outbox.clear();
}

// Pushes one step's outputs. A finished request's id is released first, so a consumer that has seen
// the final output can reuse the id at once; drain() is woken only after the pushes.
void Engine::Impl::push_outputs(std::vector<Delivery>& batch) {
  bool ended = false;
  {
    std::lock_guard<std::mutex> lk(mu);
    for (const Delivery& d : batch)
      if (d.out.finished()) ended |= live.erase(d.stream->id) > 0;
  }
  for (Delivery& d : batch) d.stream->push(std::move(d.out));
  if (!ended) return;
  std::lock_guard<std::mutex> lk(mu);
  if (live.empty()) idle_cv.notify_all();
}

void Engine::Impl::end_with(const std::string& id, FinishReason reason, const std::string& error) {
  auto it = active.find(id);
  if (it == active.end()) return;
  sched->finish(it->second.sched_id,
                reason == FinishReason::Error ? RequestStatus::FinishedError : RequestStatus::FinishedAborted);
  end(id, it->second.builder->finish(reason, error));
}

void Engine::Impl::admit(Pending p) {
  Active a;
  a.id = p.req.request_id;
  a.stream = p.stream;
  Request r;
  r.prompt = p.req.prompt_tokens;
  r.sampling = p.req.sampling;
  r.max_tokens = p.req.max_tokens;
  r.priority = p.req.priority;
  r.prompt_logprobs = p.req.prompt_logprobs;
  r.stop_token_ids = p.req.stop_token_ids;
  if (!p.req.ignore_eos) r.stop_token_ids.insert(r.stop_token_ids.end(), eos_ids.begin(), eos_ids.end());
  if (!p.req.logit_bias.empty())
    r.sampling.logit_bias = std::make_shared<const std::vector<std::pair<int32_t, float>>>(p.req.logit_bias);
  try {
    a.controls = TokenControls::make(p.req, r.stop_token_ids, vocab, token_index);
    a.builder = std::make_unique<OutputBuilder>(p.req, tokenizer.get());
    a.sched_id = sched->add(std::move(r));
  } catch (const std::exception& e) {
    GenerationOutput out;
    out.finish = FinishReason::Error;
    out.error = e.what();
    out.prompt_tokens = int(p.req.prompt_tokens.size());
    outbox.push_back({p.stream, std::move(out)});
    return;
  }
  by_sched_id[a.sched_id] = a.id;
  const std::string id = a.id;
  active.emplace(id, std::move(a));
}

void Engine::Impl::step() {
  using Clock = std::chrono::steady_clock;
  auto seconds = [](Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); };
  const auto t0 = Clock::now();
  StepPlan plan = sched->schedule();
  if (plan.empty()) {
    // Only after a preemption freed memory for the next step; never twice in a row in practice.
    publish_stats(0, 0, false);
    if (plan.preempted.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return;
  }
  const auto now = Clock::now();
  StepTimes times;
  times.schedule = seconds(t0, now);
  for (const ScheduledSeq& s : plan.scheduled) {
    auto it = by_sched_id.find(s.request_id);
    if (it == by_sched_id.end()) continue;
    Active& a = active.at(it->second);
    if (a.scheduled_at == std::chrono::steady_clock::time_point{}) a.scheduled_at = now;
  }
  StepResult result;
  try {
    plan.masks = start_masks(plan);  // filled on the mask worker while the forward runs
    result = backend->execute(plan);
    mask_worker.wait();
    DS_CHECK(result.samples.size() == plan.sampling.size(), "backend returned {} samples for {} rows",
             result.samples.size(), plan.sampling.size());
  } catch (const std::exception& e) {
    mask_worker.wait();
    spdlog::error("engine: step failed, ending its {} requests: {}", plan.scheduled.size(), e.what());
    for (const ScheduledSeq& s : plan.scheduled) {
      auto it = by_sched_id.find(s.request_id);
      if (it != by_sched_id.end()) end_with(std::string(it->second), FinishReason::Error, e.what());
    }
    times.execute = seconds(now, Clock::now());
    publish_stats(0, 0, true, times);
    return;
  }
  const auto t1 = Clock::now();
  times.execute = seconds(now, t1);
  int64_t prompt_tokens = 0;  // of requests whose prefill completed in this step
  std::vector<RequestUpdate> updates = sched->update(plan, result);
  for (const RequestUpdate& u : updates) {
    auto it = by_sched_id.find(u.request_id);
    if (it == by_sched_id.end()) continue;
    const std::string id = it->second;
    Active& a = active.at(id);
    if (!u.scores.empty()) a.builder->on_prompt_scores(u.first_scored, u.scores);
    if (!u.sampled) continue;  // a middle prefill chunk's prompt scores: reported with the first token
    bool stop_string = false;
    // A constrained request ends as soon as its grammar is complete and nothing may follow.
    const bool complete = a.controls && a.controls->on_token(u.sample.token) &&
                          u.status != RequestStatus::FinishedStopped;
    if (complete && !is_finished(u.status)) sched->finish(u.request_id, RequestStatus::FinishedStopped);
    GenerationOutput out;
    try {
      out = a.builder->on_token(u, &stop_string, complete);
    } catch (const std::exception& e) {  // e.g. a token the tokenizer does not know
      if (!is_finished(u.status)) sched->finish(u.request_id, RequestStatus::FinishedError);
      end(id, a.builder->finish(FinishReason::Error, e.what()));
      continue;
    }
    out.scheduled_at = a.scheduled_at;
    if (out.completion_tokens == 1) prompt_tokens += out.prompt_tokens;
    if (stop_string && !is_finished(u.status)) sched->finish(u.request_id, RequestStatus::FinishedStopped);
    if (out.finished()) {
      end(id, std::move(out));
    } else {
      outbox.push_back({a.stream, std::move(out)});
    }
  }
  times.update = seconds(t1, Clock::now());
  const int64_t sampled = std::count_if(updates.begin(), updates.end(), [](const RequestUpdate& u) { return u.sampled; });
  publish_stats(prompt_tokens, sampled, true, times);
}

// The step's token masks, when some sampled row's request has controls: started on the mask worker
// (the backend waits for them before sampling; the step thread waits before touching the requests).
std::shared_ptr<StepMasks> Engine::Impl::start_masks(const StepPlan& plan) {
  std::vector<std::pair<int, TokenControls*>> rows;
  for (size_t r = 0; r < plan.sampling.size(); ++r) {
    if (plan.sampling[r].params.forced_token >= 0) continue;  // a prompt-scoring row: nothing sampled
    auto it = by_sched_id.find(plan.sampling[r].seq_id);
    if (it == by_sched_id.end()) continue;
    TokenControls* c = active.at(it->second).controls.get();
    if (c) rows.emplace_back(int(r), c);
  }
  if (rows.empty()) return nullptr;
  auto masks = std::make_shared<StepMasks>(int(plan.sampling.size()), vocab);
  mask_worker.run([masks, rows = std::move(rows)] {
    try {
      for (const auto& [r, c] : rows) {
        c->fill(masks->row(r));
        masks->set_has(r, true);
      }
      masks->publish();
    } catch (...) {
      masks->publish(std::current_exception());
    }
  });
  return masks;
}

void Engine::Impl::publish_stats(int64_t new_prompt, int64_t new_gen, bool stepped, const StepTimes& t) {
  std::lock_guard<std::mutex> lk(stats_mu);
  stats.running = sched->num_running();
  stats.waiting = sched->num_waiting();
  stats.num_preemptions = sched->num_preemptions();
  // As vLLM: pages only the prefix cache holds (given back on demand) are free, so an idle server reads 0.
  const BlockPool& blocks = sched->blocks();
  stats.kv_usage = blocks.num_blocks() > 0 ? double(blocks.num_used() - sched->prefix_cache().reclaimable_pages()) /
                                                 double(blocks.num_blocks())
                                           : 0.0;
  stats.state_usage = sched->slots().usage();
  stats.prompt_tokens_total += new_prompt;
  stats.generation_tokens_total += new_gen;
  stats.steps += stepped ? 1 : 0;
  stats.schedule_seconds += t.schedule;
  stats.execute_seconds += t.execute;
  stats.update_seconds += t.update;
  std::tie(stats.prefill_done, stats.prefill_total) = sched->longest_prefill();
  const PrefixCacheStats& pc = sched->prefix_cache().stats();
  stats.prefix_cache_queries = pc.queries;
  stats.prefix_cache_hits = pc.hits;
  stats.snapshots_used = pc.snapshots_used;
  stats.snapshots_capacity = pc.snapshots_capacity;
  stats.snapshots_saved = pc.snapshots_saved;
  stats.snapshot_evictions = pc.snapshot_evictions;
  stats.snapshots_nonfinite = pc.snapshots_nonfinite;
}

void Engine::Impl::run() {
  for (;;) {
    std::deque<Pending> incoming;
    std::vector<std::string> to_abort;
    std::vector<std::shared_ptr<ResetRequest>> to_reset;
    bool stop = false;
    {
      std::unique_lock<std::mutex> lk(mu);
      sched_waiting = sched->num_waiting();
      const bool busy = sched->has_work();
      cv.wait(lk, [&] { return stopping || busy || !intake.empty() || !aborts.empty() || !resets.empty(); });
      incoming.swap(intake);
      to_abort.swap(aborts);
      to_reset.swap(resets);
      stop = stopping;
      sched_waiting = sched->num_waiting() + int(incoming.size());
    }
    try {
      for (auto& p : incoming) admit(std::move(p));
      for (const std::string& id : to_abort) end_with(id, FinishReason::Abort, {});
      // After the admissions: a request submitted before the reset is in progress and refuses it.
      for (auto& q : to_reset)
        q->run([&] { return stop ? ResetRequest::shutting_down() : ds::reset_prefix_cache(*sched); });
      if (stop) break;
      if (sched->has_work()) {
        step();
      } else {
        publish_stats(0, 0, false);
      }
    } catch (const std::exception& e) {
      // A bug below the step (the backend's own errors are handled in step()): end what is in
      // flight rather than the process, and start over with empty pools.
      spdlog::error("engine: internal error, ending {} requests: {}", active.size(), e.what());
      std::vector<std::string> ids;
      for (const auto& [id, a] : active) ids.push_back(id);
      for (const std::string& id : ids) {
        const uint64_t sid = active.at(id).sched_id;
        end(id, active.at(id).builder->finish(FinishReason::Error, e.what()));
        sched->finish(sid, RequestStatus::FinishedError);
      }
    }
    deliver();
  }
  // Shutting down: everything unfinished ends with Abort.
  std::vector<std::string> ids;
  for (const auto& [id, a] : active) ids.push_back(id);
  for (const std::string& id : ids) end_with(id, FinishReason::Abort, {});
  publish_stats(0, 0, false);
  deliver();
  delivery->flush();
  std::vector<std::shared_ptr<ResetRequest>> left;  // asked after the last look (none can come after this)
  {
    std::lock_guard<std::mutex> lk(mu);
    left.swap(resets);
    idle_cv.notify_all();
  }
  for (auto& q : left) q->run(ResetRequest::shutting_down);
}

}  // namespace ds
