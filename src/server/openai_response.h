// Pieces of OpenAI responses shared by the endpoints: ids, usage, the two logprobs formats
// (legacy completions and chat), SSE framing.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "sampling/sampling_params.h"

namespace ds {
class Tokenizer;
}

namespace ds::server {

std::string make_request_id(const char* prefix);  // prefix + 24 random hex digits
int64_t unix_time();
uint64_t random_seed();
// Makes this thread's ids and seeds repeat from `seed` (the fuzz harness: a run must be reproducible).
void seed_request_ids(uint64_t seed);

// {"prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details": {"cached_tokens"}}.
nlohmann::json usage_json(int64_t prompt_tokens, int64_t completion_tokens, int64_t cached_tokens = 0);

// One Server-Sent Events message carrying `j`: "data: {...}\n\n".
std::string sse_event(const nlohmann::json& j);
inline constexpr const char* kSseDone = "data: [DONE]\n\n";

// How a token is shown in logprobs: its text, or "token_id:N" when `as_ids`.
std::string token_text(const Tokenizer& tok, int32_t id, bool as_ids);

// Legacy completions logprobs: {"tokens", "token_logprobs", "top_logprobs", "text_offset"};
// built incrementally (a stream sends one piece per chunk).
class CompletionLogprobs {
 public:
  // `prefix`: the text before the first token (the echoed prompt); offsets count characters.
  CompletionLogprobs(const Tokenizer& tok, bool as_ids, const std::string& prefix);
  // Appends the tokens of one output; returns the JSON for just these tokens.
  nlohmann::json add(const std::vector<SampleResult>& results);
  // Appends the echoed prompt's tokens (echo with logprobs, built with an empty prefix): the first with null
  // logprobs (nothing precedes it), then `scores[i]` for prompt token i + 1 (GenerationOutput::prompt_logprobs,
  // the top `top_k` alternatives kept); returns the JSON for just these tokens.
  nlohmann::json add_prompt(int32_t first_token, const std::vector<SampleResult>& scores, int top_k);
  const nlohmann::json& all() const { return all_; }

 private:
  const Tokenizer& tok_;
  bool as_ids_;
  size_t offset_;
  nlohmann::json all_ = {{"tokens", nlohmann::json::array()},
                         {"token_logprobs", nlohmann::json::array()},
                         {"top_logprobs", nlohmann::json::array()},
                         {"text_offset", nlohmann::json::array()}};
};

// vLLM's prompt_logprobs: [null, {"<id>": {"logprob", "rank", "decoded_token"}, ...}, ...], one entry per prompt
// token (the first has nothing before it); each dict holds the prompt token and the top `top_k` alternatives
// (rank: the place among them, 1 the most likely; null for the prompt token when it is not among them).
nlohmann::json prompt_logprobs_json(const Tokenizer& tok, const std::vector<SampleResult>& scores, int top_k,
                                    bool as_ids);

// Chat logprobs content entries: [{"token", "logprob", "bytes", "top_logprobs": [...]}, ...].
nlohmann::json chat_logprobs_content(const Tokenizer& tok, const std::vector<SampleResult>& results, bool as_ids);

}  // namespace ds::server
