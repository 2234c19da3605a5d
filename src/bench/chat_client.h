// `deltaserve chat` and `deltaserve complete` (vLLM's `vllm chat` / `vllm complete`): a conversation, or prompts
// to continue, sent to a running OpenAI-compatible server (deltaserve, vLLM, SGLang), each reply streamed to the
// caller as it arrives. The request bodies are pure functions (tested alone); the client keeps the conversation.
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "bench/http_client.h"

namespace ds::bench {

struct ClientOptions {
  std::string url = "http://localhost:8000/v1";  // the server's base URL (a trailing /v1 or not)
  std::string model;                             // "": the server's first model (GET /v1/models)
  std::string api_key;                           // "": none
  std::string system_prompt;                     // chat: the conversation's first message, when set
  std::optional<int64_t> max_tokens;             // unset: the server's default
  std::optional<double> temperature;             // unset: the server's default
  std::optional<int64_t> seed;
  double idle_timeout_s = 600;  // a reply fails when the server sends nothing for this long
};

// The streamed request bodies.
nlohmann::json chat_request_body(const ClientOptions& o, const std::string& model, const nlohmann::json& messages);
nlohmann::json completion_request_body(const ClientOptions& o, const std::string& model, const std::string& prompt);

class ApiClient {
 public:
  using OnText = std::function<void(std::string_view)>;
  // Resolves the model when none is given; throws ds::Error when the server cannot be reached or has none.
  explicit ApiClient(ClientOptions o);
  const std::string& model() const { return model_; }
  // The user message after the conversation so far: the reply's text to `on_text` as it streams, returned whole
  // and added to the conversation. Throws ds::Error (the HTTP status and the server's message, or the transport
  // failure), leaving the conversation as it was.
  std::string chat(const std::string& user, const OnText& on_text);
  // The prompt's continuation, streamed the same way (no conversation).
  std::string complete(const std::string& prompt, const OnText& on_text);
  const nlohmann::json& messages() const { return messages_; }

 private:
  std::string stream(const char* path, const nlohmann::json& body, bool chat, const OnText& on_text);

  ClientOptions o_;
  ServerAddress addr_;
  std::string model_;
  nlohmann::json messages_ = nlohmann::json::array();
};

}  // namespace ds::bench
