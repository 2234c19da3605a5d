// Turns a request's sampled tokens into GenerationOutputs: incremental detokenization, stop strings
// (held-back text, cut at the match), the finish reason and stop_reason, logprobs and counts.
// One per request, used only on the engine's step thread.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/stop_matcher.h"
#include "sched/step_plan.h"

namespace ds {

class IncrementalDetokenizer;

class OutputBuilder {
 public:
  // tok may be null when the request neither detokenizes nor has stop strings.
  OutputBuilder(const GenerationRequest& req, const Tokenizer* tok);
  ~OutputBuilder();

  // One sampled token and the scheduler's verdict. When *stop_string_hit is set, the output is
  // final (FinishReason::Stop) and the caller must end the request in the scheduler. `complete`: the
  // request's grammar is complete with this token (final, Stop, the token's text kept).
  GenerationOutput on_token(const RequestUpdate& u, bool* stop_string_hit, bool complete = false);
  // Prompt scores of a step (prompt token `first` on): kept until the first token's output carries them
  // (a recompute after a preemption scores the same positions again: the later values replace them).
  void on_prompt_scores(int64_t first, const std::vector<SampleResult>& scores);
  // A final output with no new token (abort, error).
  GenerationOutput finish(FinishReason reason, const std::string& error = {});

 private:
  std::string text_of(int32_t token);  // detokenizer delta ("" without a tokenizer)

  std::vector<int32_t> user_stop_ids_;
  bool want_text_;
  bool want_logprobs_;
  bool want_prompt_logprobs_;
  std::vector<SampleResult> prompt_scores_;  // [prompt_tokens - 1]: prompt token i + 1's score
  bool include_stop_;
  int prompt_tokens_;
  int completion_tokens_ = 0;
  int cached_tokens_ = 0;  // of the admission that produced the first token
  std::unique_ptr<IncrementalDetokenizer> detok_;
  StopStringMatcher stops_;
};

}  // namespace ds
