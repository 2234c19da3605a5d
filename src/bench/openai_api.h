// The slice of the OpenAI HTTP API the benchmark and the evaluator speak, as pure functions: endpoint
// paths, reading streamed chunks of /v1/completions and /v1/chat/completions, reading non-streamed
// responses, and turning error responses into one-line messages. Servers differ in small ways (vLLM,
// SGLang and deltaserve all accept these shapes); anything unexpected becomes an error string, not a throw.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace ds::bench {

enum class EndpointType { Completions, Chat };

// "completions" | "chat" (also accepts "openai", "openai-chat", "vllm", "sglang", "deltaserve", as
// vLLM's --backend names them); throws ds::Error on anything else.
EndpointType parse_endpoint_type(std::string_view name);
const char* endpoint_type_name(EndpointType t);
const char* endpoint_path(EndpointType t);  // "/v1/completions" or "/v1/chat/completions"

struct Usage {
  int64_t prompt_tokens = -1;  // -1: not reported
  int64_t completion_tokens = -1;
};

// One `data:` payload of a streamed response.
struct StreamChunk {
  bool done = false;         // the `[DONE]` sentinel
  bool has_content = false;  // carries generated output (text, reasoning text or a tool-call delta)
  std::string text;          // choice 0's text delta (completions: text; chat: delta.content)
  std::string finish_reason;
  std::optional<Usage> usage;
  std::string error;  // non-empty when the payload is an error object or is not valid JSON
};
StreamChunk parse_stream_chunk(std::string_view data, EndpointType type);

// A non-streamed response body.
struct Completion {
  std::string text;
  std::string finish_reason;
  Usage usage;
  std::string error;  // non-empty when the body is an error object or malformed
};
Completion parse_completion(std::string_view body, EndpointType type);

// "HTTP <status>: <message>" with the message taken from an OpenAI error object when the body is one,
// else from the start of the body.
std::string http_error_message(int status, std::string_view body);

// The first model id of a GET /v1/models body; throws ds::Error when there is none.
std::string first_model_id(std::string_view models_body);

}  // namespace ds::bench
