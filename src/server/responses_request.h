// POST /v1/responses requests (OpenAI's Responses API), validated and turned into the chat request
// the server already knows how to run: `instructions` become a system message, `input` (a string
// or a list of items: messages with input_text/output_text parts, function_call and
// function_call_output items) becomes messages, flat function tools become chat tools,
// `text.format` becomes a response format, `max_output_tokens` the token limit. `previous_response_id`
// puts that response's stored conversation (from `store`) before `input`: a 404 when the store does not
// hold it, a 400 without a store (null or disabled); `conversation` is always a 400. Problems name the
// Responses field.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "server/json_fields.h"
#include "server/openai_request.h"

namespace ds::server {

class ResponseStore;

struct ResponsesRequest {
  ChatRequest chat;
  // Echoed in the response object as the client sent them (or their defaults).
  nlohmann::json instructions;                     // string or null
  nlohmann::json tools = nlohmann::json::array();  // the Responses-format tools
  nlohmann::json tool_choice = "auto";
  nlohmann::json text_format = {{"type", "text"}};
  nlohmann::json metadata = nlohmann::json::object();
  nlohmann::json max_output_tokens;  // integer or null
  nlohmann::json user;               // string or null
  bool parallel_tool_calls = true;
  bool store = true;                 // OpenAI's default: keep the response (when the server has a store)
  std::string previous_response_id;  // the stored response this one continues ("" none)
  nlohmann::json input_items;        // the conversation as items: the previous response's, then this input
  double temperature = 1.0, top_p = 1.0;
};

ResponsesRequest parse_responses_request(const nlohmann::json& body, int vocab_size,
                                         const UnknownFieldPolicy* unknown = nullptr,
                                         const SamplingDefaults* defaults = nullptr,
                                         ResponseStore* store = nullptr);

}  // namespace ds::server
