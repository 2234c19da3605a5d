#include "engine/output_builder.h"

#include <algorithm>

#include "tokenizer/detokenizer.h"
#include "tokenizer/tokenizer.h"

namespace ds {

OutputBuilder::OutputBuilder(const GenerationRequest& req, const Tokenizer* tok)
    : user_stop_ids_(req.stop_token_ids),
      want_text_(req.detokenize && tok),
      want_logprobs_(req.sampling.num_logprobs >= 0),
      want_prompt_logprobs_(req.prompt_logprobs >= 0),
      include_stop_(req.include_stop_str_in_output),
      prompt_tokens_(int(req.prompt_tokens.size())),
      stops_(req.stop, req.include_stop_str_in_output) {
  if (tok && (want_text_ || !stops_.empty()))
    detok_ = std::make_unique<IncrementalDetokenizer>(*tok, req.skip_special_tokens);
  if (want_prompt_logprobs_) prompt_scores_.resize(size_t(std::max(0, prompt_tokens_ - 1)));
}

void OutputBuilder::on_prompt_scores(int64_t first, const std::vector<SampleResult>& scores) {
  for (size_t i = 0; i < scores.size(); ++i) {
    const int64_t at = first + int64_t(i) - 1;  // prompt token first + i is entry first + i - 1
    if (at >= 0 && at < int64_t(prompt_scores_.size())) prompt_scores_[size_t(at)] = scores[i];
  }
}

OutputBuilder::~OutputBuilder() = default;

std::string OutputBuilder::text_of(int32_t token) { return detok_ ? detok_->push(token) : std::string(); }

GenerationOutput OutputBuilder::on_token(const RequestUpdate& u, bool* stop_string_hit, bool complete) {
  *stop_string_hit = false;
  GenerationOutput out;
  const int32_t token = u.sample.token;
  out.token_ids.push_back(token);
  if (want_logprobs_) out.logprobs.push_back(u.sample);
  if (want_prompt_logprobs_ && completion_tokens_ == 0) out.prompt_logprobs = std::move(prompt_scores_);
  out.prompt_tokens = prompt_tokens_;
  if (completion_tokens_ == 0) cached_tokens_ = int(u.cached_tokens);
  out.cached_tokens = cached_tokens_;
  out.completion_tokens = ++completion_tokens_;

  const bool stop_token = u.status == RequestStatus::FinishedStopped;
  const bool finished = is_finished(u.status) || complete;
  // The text of a stop token is not part of the output unless asked for (vLLM).
  std::string delta = (stop_token && !include_stop_) ? std::string() : text_of(token);
  if (finished && detok_) delta += detok_->flush();
  StopStringMatcher::Result m = stops_.push(delta);
  std::string text = std::move(m.text);
  if (m.stopped) {
    *stop_string_hit = true;
    out.finish = FinishReason::Stop;
    out.stop_reason = m.stop;
  } else if (finished) {
    text += stops_.flush();
    out.finish = stop_token || complete ? FinishReason::Stop : FinishReason::Length;
    if (stop_token &&
        std::find(user_stop_ids_.begin(), user_stop_ids_.end(), token) != user_stop_ids_.end())
      out.stop_reason = std::to_string(token);
  }
  if (want_text_) out.text = std::move(text);
  return out;
}

GenerationOutput OutputBuilder::finish(FinishReason reason, const std::string& error) {
  GenerationOutput out;
  out.finish = reason;
  out.error = error;
  out.prompt_tokens = prompt_tokens_;
  out.cached_tokens = cached_tokens_;
  out.completion_tokens = completion_tokens_;
  return out;
}

}  // namespace ds
