// The engine: a step-loop thread that owns the scheduler and the backend, an intake queue, and a
// per-request output channel. The server and the CLI talk only to this.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine/capacity.h"
#include "model/backend.h"
#include "sched/cost_model.h"
#include "sched/scheduler.h"
#include "sampling/sampling_params.h"

namespace ds {

class Tokenizer;
class Grammar;

struct EngineOptions {
  BackendOptions backend;
  int max_num_seqs = 64;
  int max_num_batched_tokens = 2048;  // token budget of one step (decodes + prefill chunks); lowered
                                      // to the backend's max_tokens_per_step with a warning
  int64_t max_model_len = 0;          // 0: the model's
  StepCostConfig step_cost;           // the scheduler's cost budget (sched/cost_model.h; defaults documented there)
  int max_waiting = 1024;             // queue bound: beyond it submit() fails with kOverloaded
  // Prefix caching (docs/PREFIX_CACHE.md): on when the backend has KDA snapshots (BackendOptions::
  // num_snapshots; the CLI sizes them from --prefix-snapshot-memory).
  bool enable_prefix_caching = true;
  int64_t prefix_snapshot_interval = 8192;  // tokens between snapshots inside long prefills (0: none)
  // --scheduling-policy: fcfs, or priority (requests' `priority`, lower first; sched/scheduler.h). Under
  // fcfs a request with a non-zero priority is refused (vLLM's rule).
  SchedulingPolicy scheduling_policy = SchedulingPolicy::Fcfs;
  // Outputs pushed to the request streams on a thread of their own (engine/output_delivery.h), off the step
  // thread's path between two forwards; false: on the step thread (bench/cpu/bench_engine's A/B).
  bool deliver_on_thread = true;
};

enum class FinishReason { None, Stop, Length, Abort, Error };
const char* finish_reason_name(FinishReason r);  // "stop", "length", "abort", "error"

struct GenerationRequest {
  std::string request_id;
  std::vector<int32_t> prompt_tokens;
  SampleParams sampling;               // seed, temperature, penalties...
  int max_tokens = 16;
  int64_t priority = 0;                // EngineOptions::scheduling_policy priority: lower values first
  std::vector<int32_t> stop_token_ids; // besides the model's EOS ids (unless ignore_eos)
  std::vector<std::string> stop;       // stop strings, matched on the detokenized text
  bool ignore_eos = false;
  bool include_stop_str_in_output = false;
  bool skip_special_tokens = true;
  bool detokenize = true;              // produce text deltas (needs a tokenizer)

  // Constrained decoding and token controls (docs/STRUCTURED_OUTPUT.md). The server fills them; submit()
  // checks ids against the vocabulary (SubmitStatus::Invalid with the reason: a 400).
  // grammar: compile_constraint(spec) (grammar/constraint.h; its ds::Error is the 400); null: none. The
  // output then follows the grammar token by token, EOS / stop token ids only where it may end, and the
  // request finishes ("stop") as soon as the grammar is complete and nothing more can follow.
  std::shared_ptr<const Grammar> grammar;
  // OpenAI logit_bias ({"id": bias} with string keys → ints; bias in [-100, 100], checked by the server;
  // ids distinct): added to the logits before sampling.
  std::vector<std::pair<int32_t, float>> logit_bias;
  // vLLM allowed_token_ids: when non-empty only these may be sampled (EOS too only when listed or when
  // a grammar ends; a constrained request intersects both).
  std::vector<int32_t> allowed_token_ids;
  // vLLM bad_words, already tokenized by the server: each word encoded twice, as-is and with a leading
  // space (vLLM's rule), both sequences listed. A sequence's last token is banned whenever the output so
  // far ends with the sequence's other tokens (a one-token sequence: always banned).
  std::vector<std::vector<int32_t>> bad_words;
  // vLLM min_tokens: EOS and stop_token_ids are masked until this many tokens were generated (stop
  // strings still apply). Must be <= max_tokens.
  int min_tokens = 0;
  // vLLM prompt_logprobs / completions echo with logprobs: >= 0 scores the prompt (every token after the
  // first: its logprob under the raw logits of the positions before it, with this many top alternatives,
  // at most the vocabulary); the first output carries them (GenerationOutput::prompt_logprobs). The prompt
  // is then computed whole (no prefix-cache hit) with a logits row per token.
  int prompt_logprobs = -1;
};

// One update for a request: tokens produced since the last one, their text, and maybe the end.
struct GenerationOutput {
  std::vector<int32_t> token_ids;
  std::string text;                    // text delta (stop strings already cut)
  std::vector<SampleResult> logprobs;  // one per token when requested
  // With GenerationRequest::prompt_logprobs, on the first output only: entry i is prompt token i + 1 (its id
  // in `token`, its logprob and top alternatives); prompt_tokens - 1 entries.
  std::vector<SampleResult> prompt_logprobs;
  FinishReason finish = FinishReason::None;
  std::string stop_reason;             // the stop string or token id that ended it, if any
  std::string error;                   // when finish == Error
  int prompt_tokens = 0;
  int cached_tokens = 0;               // of prompt_tokens, those served from a prefix cache (0 without one)
  int completion_tokens = 0;           // total so far
  // When the request was first scheduled (its prefill started); unset (epoch) before that. For the
  // queue-time and prefill-time metrics.
  std::chrono::steady_clock::time_point scheduled_at{};
  bool finished() const { return finish != FinishReason::None; }
};

// A wake-up shared by the streams of one consumer (e.g. the n choices of one HTTP request): every
// push to any of them, or a notify() from elsewhere (client gone, forced shutdown), bumps a counter
// and wakes the waiter. The consumer waits on the counter it last saw, so no news is ever missed
// and it never wakes without a reason.
class Notifier {
 public:
  void notify();
  // Blocks until the counter differs from `seen`; returns the new value.
  uint64_t wait(uint64_t seen);
  uint64_t count() const;

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint64_t count_ = 0;
};

// Thread-safe channel the engine writes and the consumer reads.
class RequestStream {
 public:
  // Blocks until an output is available or `timeout` passes; nullopt on timeout.
  std::optional<GenerationOutput> next(std::chrono::milliseconds timeout);
  // The next output if one is queued, without waiting.
  std::optional<GenerationOutput> try_next();
  // From now on every push also notifies `n` (at once when outputs are already queued).
  void set_notifier(std::shared_ptr<Notifier> n);
  void push(GenerationOutput out);
  std::string id;
  std::chrono::steady_clock::time_point arrival;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<GenerationOutput> q_;
  std::shared_ptr<Notifier> notifier_;
};

struct EngineStats {
  int running = 0, waiting = 0;
  int64_t num_preemptions = 0;
  double kv_usage = 0.0;     // fraction of MLA pages in use (by requests: the prefix cache's are free, as vLLM)
  double state_usage = 0.0;  // fraction of KDA state slots in use
  int64_t prompt_tokens_total = 0, generation_tokens_total = 0;
  int64_t steps = 0;
  // Where the step thread's time went, summed over steps (wall seconds): planning the step (scheduler),
  // executing it (the backend: layout, forward, sampling, waiting for the device), and taking its outputs
  // (scheduler update, detokenizing, stop checks). The device idles during the first and the last.
  double schedule_seconds = 0.0, execute_seconds = 0.0, update_seconds = 0.0;
  // The running request with the most prompt left to prefill: tokens computed / to compute (0 / 0: none).
  int64_t prefill_done = 0, prefill_total = 0;
  // Prefix cache: tokens looked up and found at admissions, and the KDA snapshot pool.
  int64_t prefix_cache_queries = 0, prefix_cache_hits = 0;
  int snapshots_used = 0, snapshots_capacity = 0;
  int64_t snapshots_saved = 0, snapshot_evictions = 0, snapshots_nonfinite = 0;
};

// The answer to Engine::reset_prefix_cache (POST /reset_prefix_cache, /flush_cache).
struct PrefixCacheResetResult {
  enum class Status {
    Done,         // the cache was emptied
    Disabled,     // prefix caching is off: nothing to flush (a success)
    Busy,         // requests are running or waiting: nothing changed
    Unavailable,  // the engine is shutting down, or its step thread did not answer in time: nothing changed
  };
  Status status = Status::Unavailable;
  int running = 0, waiting = 0;                   // Busy: the requests in progress
  int snapshots_freed = 0, pages_unregistered = 0;  // Done
  std::string message;                            // what happened, or why not, in words
  bool ok() const { return status == Status::Done || status == Status::Disabled; }
};

// Unavailable: the backend can run no more steps (Backend::failure(), e.g. a node of the group went away).
enum class SubmitStatus { Ok, Overloaded, TooLong, Invalid, ShuttingDown, Unavailable };

class Engine {
 public:
  // Takes ownership of the backend; `tokenizer` may be null (then requests must not detokenize).
  Engine(std::unique_ptr<Backend> backend, std::shared_ptr<const Tokenizer> tokenizer, EngineOptions opts);
  ~Engine();  // stops the loop; unfinished requests end with FinishReason::Abort

  // Queues a request. On success *stream receives its outputs.
  SubmitStatus submit(GenerationRequest req, std::shared_ptr<RequestStream>* stream, std::string* why);
  void abort(const std::string& request_id);  // frees its memory; its stream ends with Abort
  // Finish what is running and queued, accept nothing new, then return (SIGTERM path).
  void drain();
  EngineStats stats() const;
  // Empties the prefix cache (docs/PREFIX_CACHE.md, "Resetting the cache"), as vLLM's POST
  // /reset_prefix_cache and SGLang's /flush_cache: only when no request is running or waiting (those
  // admitted before it count), and then every cached KDA snapshot is freed and every page registered for
  // sharing is unregistered; the hit/query counters stay. It runs on the step thread between two steps;
  // this thread waits for the answer up to `timeout` (Unavailable after it: then it never runs).
  PrefixCacheResetResult reset_prefix_cache(std::chrono::milliseconds timeout);
  const ModelConfig& model_config() const;
  int64_t max_model_len() const;
  // How max_model_len was resolved (asked, the cache's tokens, what lowered it): for messages.
  const MaxModelLen& max_model_len_info() const;
  const EngineOptions& options() const;
  BackendLimits backend_limits() const;
  // Why the backend can run no more steps (Backend::failure()); empty while it can.
  std::string backend_failure() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ds
