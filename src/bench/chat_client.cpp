#include "bench/chat_client.h"

#include "bench/openai_api.h"
#include "bench/sse.h"
#include "core/error.h"

namespace ds::bench {
namespace {

using nlohmann::json;

void add_sampling(json& b, const ClientOptions& o) {
  if (o.max_tokens) b["max_tokens"] = *o.max_tokens;
  if (o.temperature) b["temperature"] = *o.temperature;
  if (o.seed) b["seed"] = *o.seed;
}

// The failure of request `r`, as one line.
std::string failure(const HttpResult& r, const ServerAddress& addr) {
  if (!r.transport_error.empty()) return "cannot reach " + addr.url() + ": " + r.transport_error;
  return http_error_message(r.status, r.body);
}

}  // namespace

json chat_request_body(const ClientOptions& o, const std::string& model, const json& messages) {
  json b = {{"model", model}, {"messages", messages}, {"stream", true}};
  add_sampling(b, o);
  return b;
}

json completion_request_body(const ClientOptions& o, const std::string& model, const std::string& prompt) {
  json b = {{"model", model}, {"prompt", prompt}, {"stream", true}};
  add_sampling(b, o);
  return b;
}

ApiClient::ApiClient(ClientOptions o) : o_(std::move(o)), addr_(parse_base_url(o_.url)), model_(o_.model) {
  if (!o_.system_prompt.empty()) messages_.push_back({{"role", "system"}, {"content", o_.system_prompt}});
  if (!model_.empty()) return;
  const HttpResult r = http_request_blocking(addr_, {"GET", "/v1/models", "", o_.api_key}, o_.idle_timeout_s);
  if (!r.ok()) throw Error("listing the server's models failed: " + failure(r, addr_));
  model_ = first_model_id(r.body);
}

std::string ApiClient::stream(const char* path, const json& body, bool chat, const OnText& on_text) {
  const EndpointType type = chat ? EndpointType::Chat : EndpointType::Completions;
  std::string text, error;
  SseParser parser;
  const SseParser::Callback on_event = [&](const SseEvent& e) {
    if (e.data == "[DONE]" || !error.empty()) return;
    const StreamChunk c = parse_stream_chunk(e.data, type);
    if (!c.error.empty()) {
      error = c.error;
      return;
    }
    if (c.text.empty()) return;
    text += c.text;
    if (on_text) on_text(c.text);
  };
  const HttpResult r = http_request_blocking(addr_, {"POST", path, body.dump(), o_.api_key}, o_.idle_timeout_s,
                                             [&](std::string_view bytes) { parser.feed(bytes, on_event); });
  parser.finish(on_event);
  if (!r.ok()) throw Error(failure(r, addr_));
  if (!error.empty()) throw Error("the server's stream reported: " + error);
  return text;
}

std::string ApiClient::chat(const std::string& user, const OnText& on_text) {
  json messages = messages_;
  messages.push_back({{"role", "user"}, {"content", user}});
  std::string reply = stream("/v1/chat/completions", chat_request_body(o_, model_, messages), true, on_text);
  messages.push_back({{"role", "assistant"}, {"content", reply}});
  messages_ = std::move(messages);
  return reply;
}

std::string ApiClient::complete(const std::string& prompt, const OnText& on_text) {
  return stream("/v1/completions", completion_request_body(o_, model_, prompt), false, on_text);
}

}  // namespace ds::bench
