// What the endpoint handlers share: the engine, the tokenizer, the metrics and the served names;
// and the steps common to both generation endpoints (model check, length check, building the
// engine requests). Handlers run on a worker thread and throw ApiError for client errors.
#pragma once
#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "server/api_error.h"
#include "server/engine_client.h"
#include "server/generation_job.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "server/openai_request.h"
#include "server/response_store.h"
#include "tokenizer/chat_template.h"

namespace ds {
class Tokenizer;
}

namespace ds::server {

struct ServingContext {
  EngineClient* engine = nullptr;
  std::shared_ptr<const Tokenizer> tokenizer;
  ServerMetrics* metrics = nullptr;
  std::vector<std::string> model_names;                // served names; the first is reported in responses
  std::string model_root;                              // the checkpoint directory (/v1/models "root")
  bool specials_in_content = false;                    // ServerOptions::chat_template_specials_in_content
  const UnknownFieldPolicy* unknown_fields = nullptr;  // lenient or strict (nullptr: strict)
  const SamplingDefaults* defaults = nullptr;          // --generation-config (nullptr: the OpenAI API's)
  // --seed: requests without a seed take seeds from this sequence (the k-th such request, in arrival
  // order, gets mix(seed, k)), so a run repeats; unset: random seeds.
  std::optional<uint64_t> seed;
  std::shared_ptr<std::atomic<uint64_t>> seeded_requests = std::make_shared<std::atomic<uint64_t>>(0);
  std::shared_ptr<ResponseStore> responses;  // /v1/responses kept (nullptr or disabled: none)
  std::string response_role = "assistant";   // chat messages' role (ServerOptions::response_role)
  bool force_include_usage = false;          // ServerOptions::force_include_usage
  bool content_parts_as_string = false;      // ServerOptions::content_parts_as_string

  const std::string& model_name() const { return model_names.front(); }
  // Throws 404 when `requested` is given and is not a served name; returns the name to report.
  std::string resolve_model(const std::string& requested) const;
  int vocab_size() const { return engine->model_vocab_size(); }
  int64_t max_model_len() const { return engine->max_model_len(); }
  // Checks the prompt against max_model_len; returns the max_tokens to use (`requested`, or
  // all the room left when not given; at most the defaults' max_new_tokens). Throws 400 like vLLM
  // ("maximum context length ..."), naming the request's own fields: `prompt_param` (prompt, messages,
  // input) and `max_tokens_param` (max_tokens, max_completion_tokens, max_output_tokens).
  int resolve_max_tokens(size_t prompt_len, std::optional<int64_t> requested,
                         const std::string& prompt_param = "prompt",
                         const std::string& max_tokens_param = "max_tokens") const;
  // The stream's usage options after --enable-force-include-usage (a stream always ends with usage).
  void apply_usage_policy(SamplingOptions& opt) const {
    if (force_include_usage && opt.stream) opt.include_usage = true;
  }
  // One engine request per choice: prompt-major, n per prompt, seeds seed + i.
  std::vector<GenerationRequest> make_requests(const SamplingOptions& opt, const std::string& id,
                                               const std::vector<std::vector<int32_t>>& prompts,
                                               const std::vector<int>& max_tokens) const;
};

nlohmann::json parse_json_body(const std::string& body);  // 400 on malformed JSON

// The stop_reason field (vLLM extension): the stop string, the stop token id, or null (EOS).
nlohmann::json stop_reason_json(const SamplingOptions& opt, FinishReason finish, const std::string& stop_reason);

// The "stop producing" test of a generation job answering `w` (client gone, or the server's
// cancel_all); also makes those events wake the job's wait, so it never polls for them.
std::function<bool()> watch_cancellation(const GenerationJob& job, ResponseWriter& w);

void serve_completions(const ServingContext& ctx, const HttpRequest& req, ResponseWriter& w);
void serve_chat_completions(const ServingContext& ctx, const HttpRequest& req, ResponseWriter& w);
void serve_tokenize(const ServingContext& ctx, const HttpRequest& req, ResponseWriter& w);
void serve_detokenize(const ServingContext& ctx, const HttpRequest& req, ResponseWriter& w);
// SageMaker's POST /invocations (as vLLM): a body with "messages" is a chat completion, one with "prompt" a completion.
void serve_invocation(const ServingContext& ctx, const HttpRequest& req, ResponseWriter& w);
// The generation endpoints (/v1/completions, /v1/chat/completions, /v1/responses) by req.path: false (nothing done)
// for another path. The HTTP router and `deltaserve run-batch` (batch_file.h) both call them through this.
bool serve_generation(const ServingContext& ctx, const HttpRequest& req, ResponseWriter& w);
// Inside a catch of a handler of `req`: the answer to the exception in flight, logged as the router logs it (an
// ApiError as it is, at debug; a JSON access the validation missed, or anything else, a 500 at error level; the
// library's text never in the answer).
ApiError handler_failure(const HttpRequest& req);
void serve_responses(const ServingContext& ctx, const HttpRequest& req, ResponseWriter& w);  // responses_api.cpp
// GET (the response object) or DELETE /v1/responses/{id} of a stored response; 404 when not kept.
void serve_stored_response(const ServingContext& ctx, const std::string& method, const std::string& id,
                           ResponseWriter& w);

// Renders a chat request's prompt (template, tools, continue_final_message), with the parts that came
// from the request marked as data.
ChatPrompt render_chat_prompt(const Tokenizer& tok, const ChatRequest& req);
// The prompt's token ids: request data as plain text, unless ctx.specials_in_content.
std::vector<int32_t> chat_prompt_ids(const ServingContext& ctx, const ChatRequest& req);

}  // namespace ds::server
