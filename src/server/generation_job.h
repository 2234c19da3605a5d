// The engine side of one HTTP generation request: submits its choices (one engine request each:
// n per prompt), reads their output streams until all finish (sleeping on one Notifier shared by
// all its streams: woken only by an engine push or a cancellation, never polling), and aborts whatever is unfinished
// when the client goes away or the job is dropped. Each finished choice is recorded in the
// metrics (tokens, TTFT, TPOT, end-to-end latency, finish reason).
#pragma once
#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "server/engine_client.h"
#include "server/metrics.h"

namespace ds::server {

struct ChoiceState {
  std::string request_id;
  std::shared_ptr<OutputStream> stream;
  int prompt_tokens = 0;
  int cached_tokens = 0;  // GenerationOutput::cached_tokens (usage.prompt_tokens_details.cached_tokens)
  int completion_tokens = 0;
  FinishReason finish = FinishReason::None;
  std::string stop_reason;
  std::string error;
  bool got_token = false;
  std::chrono::steady_clock::time_point first_token, last_token, scheduled_at;
  bool done() const { return finish != FinishReason::None; }
};

class GenerationJob {
 public:
  using Clock = std::chrono::steady_clock;
  // `arrival`: when the HTTP request arrived (TTFT and latency are measured from it).
  GenerationJob(EngineClient& engine, ServerMetrics& metrics, Clock::time_point arrival);
  ~GenerationJob();  // aborts unfinished choices
  GenerationJob(const GenerationJob&) = delete;
  GenerationJob& operator=(const GenerationJob&) = delete;

  // Submits every request (choice i = reqs[i]); on a refusal aborts those already submitted and
  // throws the matching ApiError (429 queue full, 400 too long/invalid, 503 shutting down).
  void submit(std::vector<GenerationRequest> reqs);

  // Delivers every update as on_output(choice, output) until all choices finish (true) or
  // `cancelled()` turns true (false; everything unfinished is aborted and gets a last output with
  // FinishReason::Abort).
  bool run(const std::function<void(int, const GenerationOutput&)>& on_output, const std::function<bool()>& cancelled);

  // The job's wake-up: every stream of the job notifies it; notify it too when `cancelled()` may
  // have turned true (client gone, forced shutdown) so run() looks again.
  const std::shared_ptr<Notifier>& notifier() const { return notifier_; }
  // Times run() woke up, and of those the idle ones: nothing new, no cancellation, and no update
  // taken by the look before (a push racing that look is taken by it and still wakes the next
  // wait once). A timed poll would show idle wake-ups; this loop has none.
  int wakeups() const { return wakeups_; }
  int idle_wakeups() const { return idle_wakeups_; }

  const std::vector<ChoiceState>& choices() const { return choices_; }
  int prompt_tokens_total() const;  // counted once per prompt (choices of a prompt share it)
  int cached_tokens_total() const;  // the same way (each prompt's first choice)
  int completion_tokens_total() const;
  // The usage object of the whole job (prompt, completion and cached-prompt token counts).
  nlohmann::json usage() const;
  // Marks a choice's reported finish reason for the metrics (e.g. "tool_calls").
  void set_reported_reason(int choice, std::string reason);
  void set_prompts_per_choice(int n) { n_per_prompt_ = n; }
  // The request field the engine's "too long" refusal names (max_tokens, max_completion_tokens, ...).
  void set_length_param(std::string field) { length_param_ = std::move(field); }

 private:
  void take(int i, const GenerationOutput& out, const std::function<void(int, const GenerationOutput&)>& on_output);
  void finish_choice(int i);
  void abort_unfinished();

  EngineClient& engine_;
  ServerMetrics& metrics_;
  Clock::time_point arrival_;
  std::shared_ptr<Notifier> notifier_ = std::make_shared<Notifier>();
  int wakeups_ = 0, idle_wakeups_ = 0;
  std::vector<ChoiceState> choices_;
  std::vector<std::string> reported_;
  std::vector<bool> recorded_;
  int n_per_prompt_ = 1;
  std::string length_param_ = "max_tokens";
};

// "stop", "length", "abort", "error".
const char* finish_reason_str(FinishReason r);

}  // namespace ds::server
