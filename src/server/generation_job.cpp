#include "server/generation_job.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/log.h"
#include "server/api_error.h"
#include "server/openai_response.h"

namespace ds::server {

const char* finish_reason_str(FinishReason r) {
  switch (r) {
    case FinishReason::Stop: return "stop";
    case FinishReason::Length: return "length";
    case FinishReason::Abort: return "abort";
    case FinishReason::Error: return "error";
    default: return "none";
  }
}

GenerationJob::GenerationJob(EngineClient& engine, ServerMetrics& metrics, Clock::time_point arrival)
    : engine_(engine), metrics_(metrics), arrival_(arrival) {}

GenerationJob::~GenerationJob() {
  abort_unfinished();
  for (size_t i = 0; i < choices_.size(); ++i) finish_choice(int(i));
}

void GenerationJob::submit(std::vector<GenerationRequest> reqs) {
  choices_.reserve(reqs.size());
  for (auto& r : reqs) {
    ChoiceState c;
    c.request_id = r.request_id;
    c.prompt_tokens = int(r.prompt_tokens.size());
    std::string why;
    SubmitStatus st = engine_.submit(std::move(r), &c.stream, &why);
    if (st != SubmitStatus::Ok) {
      abort_unfinished();
      choices_.clear();  // nothing ran: not recorded
      switch (st) {
        case SubmitStatus::Overloaded: throw too_many_requests("the server is overloaded: " + why);
        case SubmitStatus::TooLong: throw bad_request(why, length_param_);
        case SubmitStatus::ShuttingDown: throw unavailable("the server is shutting down");
        case SubmitStatus::Unavailable: throw unavailable(why);
        default: throw bad_request(why.empty() ? "invalid request" : why);
      }
    }
    c.stream->set_notifier(notifier_);
    spdlog::debug("request {}: submitted ({} prompt tokens)", c.request_id, c.prompt_tokens);
    choices_.push_back(std::move(c));
  }
  reported_.assign(choices_.size(), "");
  recorded_.assign(choices_.size(), false);
}

void GenerationJob::take(int i, const GenerationOutput& out,
                         const std::function<void(int, const GenerationOutput&)>& on_output) {
  auto& c = choices_[i];
  if (out.scheduled_at != Clock::time_point{} && c.scheduled_at == Clock::time_point{}) c.scheduled_at = out.scheduled_at;
  if (!out.token_ids.empty()) {
    const auto now = Clock::now();
    if (!c.got_token) {
      c.got_token = true;
      c.first_token = now;
    } else {
      metrics_.record_inter_token(std::chrono::duration<double>(now - c.last_token).count(), int(out.token_ids.size()));
    }
    c.last_token = now;
  }
  c.completion_tokens = std::max(c.completion_tokens, out.completion_tokens);
  if (out.prompt_tokens > 0) c.prompt_tokens = out.prompt_tokens;
  c.cached_tokens = std::max(c.cached_tokens, out.cached_tokens);
  if (out.finished()) {
    c.finish = out.finish;
    c.stop_reason = out.stop_reason;
    c.error = out.error;
  }
  on_output(i, out);
  if (c.done()) finish_choice(i);
}

bool GenerationJob::run(const std::function<void(int, const GenerationOutput&)>& on_output,
                        const std::function<bool()>& cancelled) {
  bool woke = false, looked_with_news = false;
  for (;;) {
    // Read the counter before looking, so a push after the look still wakes the wait below.
    const uint64_t seen = notifier_->count();
    bool news = false;
    int unfinished = 0;
    for (size_t i = 0; i < choices_.size(); ++i) {
      while (!choices_[i].done()) {
        auto out = choices_[i].stream->try_next();
        if (!out) break;
        news = true;
        take(int(i), *out, on_output);
      }
      unfinished += !choices_[i].done();
    }
    if (unfinished == 0) return true;
    if (cancelled()) {
      spdlog::debug("request {}: cancelled (client gone or server stopping), aborting", choices_[0].request_id);
      // Each cut choice ends with an explicit "abort" output, so a stream still being read says
      // finish_reason "abort" instead of looking complete.
      std::vector<int> cut;
      for (size_t i = 0; i < choices_.size(); ++i)
        if (!choices_[i].done()) cut.push_back(int(i));
      abort_unfinished();
      for (int i : cut) {
        GenerationOutput end;
        end.finish = FinishReason::Abort;
        end.prompt_tokens = choices_[i].prompt_tokens;
        end.completion_tokens = choices_[i].completion_tokens;
        on_output(i, end);
      }
      return false;
    }
    // A wake with nothing new is idle unless the look before took the push that caused it (a push
    // racing that look both lands in it and bumps the counter past `seen`).
    if (woke && !news && !looked_with_news) ++idle_wakeups_;
    looked_with_news = news;
    notifier_->wait(seen);
    woke = true;
    ++wakeups_;
  }
}

void GenerationJob::abort_unfinished() {
  for (auto& c : choices_) {
    if (c.done()) continue;
    engine_.abort(c.request_id);
    c.finish = FinishReason::Abort;
  }
}

void GenerationJob::set_reported_reason(int choice, std::string reason) { reported_[choice] = std::move(reason); }

void GenerationJob::finish_choice(int i) {
  if (recorded_[i] || !choices_[i].done()) return;
  recorded_[i] = true;
  const auto& c = choices_[i];
  GenerationRecord rec;
  rec.prompt_tokens = c.prompt_tokens;
  rec.generation_tokens = c.completion_tokens;
  rec.finish_reason = reported_[i].empty() ? finish_reason_str(c.finish) : reported_[i];
  auto now = Clock::now();
  rec.e2e_s = std::chrono::duration<double>(now - arrival_).count();
  const auto secs = [](Clock::duration d) { return std::chrono::duration<double>(d).count(); };
  const bool scheduled = c.scheduled_at != Clock::time_point{};
  if (scheduled) rec.queue_s = std::max(0.0, secs(c.scheduled_at - arrival_));
  if (c.got_token) {
    rec.ttft_s = secs(c.first_token - arrival_);
    rec.decode_s = secs(c.last_token - c.first_token);
    if (scheduled) rec.prefill_s = std::max(0.0, secs(c.first_token - c.scheduled_at));
  }
  metrics_.record_generation(rec);
  spdlog::debug("request {}: finished ({}), {} prompt + {} generated tokens in {:.3f} s", c.request_id,
                rec.finish_reason, rec.prompt_tokens, rec.generation_tokens, rec.e2e_s);
}

int GenerationJob::prompt_tokens_total() const {
  int n = 0;
  for (size_t i = 0; i < choices_.size(); i += size_t(n_per_prompt_)) n += choices_[i].prompt_tokens;
  return n;
}

int GenerationJob::cached_tokens_total() const {
  int n = 0;
  for (size_t i = 0; i < choices_.size(); i += size_t(n_per_prompt_)) n += choices_[i].cached_tokens;
  return n;
}

int GenerationJob::completion_tokens_total() const {
  int n = 0;
  for (const auto& c : choices_) n += c.completion_tokens;
  return n;
}

nlohmann::json GenerationJob::usage() const {
  return usage_json(prompt_tokens_total(), completion_tokens_total(), cached_tokens_total());
}

}  // namespace ds::server
