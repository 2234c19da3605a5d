// Validated OpenAI requests: the raw JSON body of /v1/completions or /v1/chat/completions checked
// field by field (types, ranges, unknown fields, unsupported options) into plain structs. Anything
// wrong is an ApiError 400 naming the field. Tokenization and length checks come later (they need
// the tokenizer and the engine's limits).
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "sampling/sampling_params.h"
#include "server/generation_defaults.h"
#include "server/json_fields.h"
#include "server/structured_output.h"

namespace ds::server {

inline constexpr int kMaxLogprobs = 20;  // top logprobs per token (vLLM's default max_logprobs)
inline constexpr int kMaxChoices = 128;  // n
inline constexpr int64_t kMaxTokensLimit = int64_t(1) << 40;  // max_tokens: larger is certainly a mistake

// Options both endpoints share.
struct SamplingOptions {
  std::string model;             // "" when not given
  SampleParams sampling;         // temperature, top_k/p, min_p, penalties; num_logprobs (-1: none)
  std::optional<uint64_t> seed;  // choice i uses seed + i
  std::optional<int64_t> max_tokens;
  int64_t priority = 0;          // vLLM's `priority` (--scheduling-policy priority; lower first)
  int n = 1;
  bool stream = false;
  bool include_usage = false;     // stream_options.include_usage
  bool continuous_usage = false;  // stream_options.continuous_usage_stats (usage in every chunk)
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  bool include_stop_str_in_output = false;
  bool skip_special_tokens = true;
  bool tokens_as_ids = false;              // return_tokens_as_token_ids: logprob tokens as "token_id:N"
  int prompt_logprobs = -1;                // vLLM prompt_logprobs: the prompt's tokens scored, k alternatives
  OutputConstraint constraint;             // response_format / structured_outputs / guided_* / forced tool call
  TokenControls tokens;                    // logit_bias, min_tokens, allowed_token_ids, bad_words
  std::shared_ptr<const Grammar> grammar;  // `constraint` compiled by the handler (null: none)
};

// One prompt of a completions request: text, or token ids.
struct PromptInput {
  bool is_text = true;
  std::string text;
  std::vector<int32_t> ids;
};

struct CompletionRequest {
  SamplingOptions opt;
  std::vector<PromptInput> prompts;  // a batch: choices are prompt-major (index = p * n + i)
  bool echo = false;
  bool echo_only = false;  // echo with max_tokens 0 (vLLM's echo without generation): the prompt alone is returned
                           // (one token is generated and dropped; opt.max_tokens is 1)
};

enum class ToolChoice { None, Auto, Required, Named };

struct ChatRequest {
  SamplingOptions opt;
  nlohmann::json messages;  // validated, "developer" mapped to "system"
  nlohmann::json tools;     // null or a non-empty array
  ToolChoice tool_choice = ToolChoice::Auto;
  std::string tool_choice_name;  // for Named
  bool add_generation_prompt = true;
  bool continue_final_message = false;
  // vLLM's chat echo: the last message's content leads each choice's content when its role is the reply's
  // (a conversation continued without a generation prompt); otherwise nothing.
  bool echo = false;
  nlohmann::json template_kwargs = nlohmann::json::object();
  std::string max_tokens_field = "max_tokens";  // the field that set opt.max_tokens (errors name it)
  bool parse_tool_calls() const { return tools.is_array() && !tools.empty() && tool_choice != ToolChoice::None; }
};

// `vocab_size` bounds token ids (prompt ids, stop_token_ids). `unknown`: what unrecognized fields
// do (nullptr: strict, a 400). `defaults`: the server's sampling defaults for the fields the request
// leaves out (nullptr: the OpenAI API's: temperature 1, top_p 1, no top_k/min_p, repetition_penalty 1).
CompletionRequest parse_completion_request(const nlohmann::json& body, int vocab_size,
                                           const UnknownFieldPolicy* unknown = nullptr,
                                           const SamplingDefaults* defaults = nullptr);
ChatRequest parse_chat_request(const nlohmann::json& body, int vocab_size, const UnknownFieldPolicy* unknown = nullptr,
                               const SamplingDefaults* defaults = nullptr);

}  // namespace ds::server
