#include "bench/openai_api.h"

#include "core/error.h"

namespace ds::bench {

using nlohmann::json;

EndpointType parse_endpoint_type(std::string_view name) {
  if (name == "completions" || name == "openai" || name == "vllm" || name == "sglang" || name == "deltaserve")
    return EndpointType::Completions;
  if (name == "chat" || name == "openai-chat" || name == "chat-completions") return EndpointType::Chat;
  fail("unknown endpoint type '{}' (expected completions or chat)", name);
}

const char* endpoint_type_name(EndpointType t) { return t == EndpointType::Chat ? "chat" : "completions"; }

const char* endpoint_path(EndpointType t) {
  return t == EndpointType::Chat ? "/v1/chat/completions" : "/v1/completions";
}

namespace {

std::string error_object_message(const json& j) {
  const json& e = j.at("error");
  if (e.is_string()) return e.get<std::string>();
  if (e.is_object() && e.contains("message") && e["message"].is_string()) return e["message"].get<std::string>();
  return e.dump();
}

Usage read_usage(const json& u) {
  Usage usage;
  if (u.contains("prompt_tokens") && u["prompt_tokens"].is_number_integer())
    usage.prompt_tokens = u["prompt_tokens"].get<int64_t>();
  if (u.contains("completion_tokens") && u["completion_tokens"].is_number_integer())
    usage.completion_tokens = u["completion_tokens"].get<int64_t>();
  return usage;
}

std::string string_field(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

StreamChunk parse_stream_chunk(std::string_view data, EndpointType type) {
  StreamChunk c;
  if (data == "[DONE]") {
    c.done = true;
    return c;
  }
  json j = json::parse(data, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    c.error = "malformed stream chunk: " + std::string(data.substr(0, 200));
    return c;
  }
  if (j.contains("error")) {
    c.error = error_object_message(j);
    return c;
  }
  if (auto u = j.find("usage"); u != j.end() && u->is_object()) c.usage = read_usage(*u);
  auto choices = j.find("choices");
  if (choices == j.end() || !choices->is_array() || choices->empty()) return c;
  const json& ch = (*choices)[0];
  if (!ch.is_object()) return c;
  c.finish_reason = string_field(ch, "finish_reason");
  if (type == EndpointType::Completions) {
    c.text = string_field(ch, "text");
    c.has_content = !c.text.empty();
  } else if (auto d = ch.find("delta"); d != ch.end() && d->is_object()) {
    c.text = string_field(*d, "content");
    const bool reasoning = !string_field(*d, "reasoning_content").empty() || !string_field(*d, "reasoning").empty();
    auto tc = d->find("tool_calls");
    const bool tool_delta = tc != d->end() && tc->is_array() && !tc->empty();
    c.has_content = !c.text.empty() || reasoning || tool_delta;
  }
  return c;
}

Completion parse_completion(std::string_view body, EndpointType type) {
  Completion c;
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    c.error = "malformed response: " + std::string(body.substr(0, 200));
    return c;
  }
  if (j.contains("error")) {
    c.error = error_object_message(j);
    return c;
  }
  if (auto u = j.find("usage"); u != j.end() && u->is_object()) c.usage = read_usage(*u);
  auto choices = j.find("choices");
  if (choices == j.end() || !choices->is_array() || choices->empty() || !(*choices)[0].is_object()) {
    c.error = "response has no choices";
    return c;
  }
  const json& ch = (*choices)[0];
  c.finish_reason = string_field(ch, "finish_reason");
  if (type == EndpointType::Completions) {
    c.text = string_field(ch, "text");
  } else if (auto m = ch.find("message"); m != ch.end() && m->is_object()) {
    c.text = string_field(*m, "content");
  }
  return c;
}

std::string http_error_message(int status, std::string_view body) {
  std::string msg;
  json j = json::parse(body, nullptr, false);
  if (!j.is_discarded() && j.is_object() && j.contains("error")) {
    msg = error_object_message(j);
  } else if (!j.is_discarded() && j.is_object() && j.contains("detail")) {  // FastAPI-style
    msg = j["detail"].is_string() ? j["detail"].get<std::string>() : j["detail"].dump();
  } else {
    msg = std::string(body.substr(0, 300));
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == '\r')) msg.pop_back();
  }
  return msg.empty() ? fmt::format("HTTP {}", status) : fmt::format("HTTP {}: {}", status, msg);
}

std::string first_model_id(std::string_view models_body) {
  json j = json::parse(models_body, nullptr, false);
  if (j.is_object() && j.contains("data") && j["data"].is_array() && !j["data"].empty() && j["data"][0].is_object() &&
      j["data"][0].contains("id") && j["data"][0]["id"].is_string())
    return j["data"][0]["id"].get<std::string>();
  fail("GET /v1/models listed no model; pass --model");
}

}  // namespace ds::bench
