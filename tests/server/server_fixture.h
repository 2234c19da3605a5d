// An OpenAIServer on an ephemeral loopback port over the fake engine and the tiny tokenizer.
#pragma once
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "fake_engine.h"
#include "http_client.h"
#include "server/openai_server.h"

namespace ds::test {

using nlohmann::json;

inline std::shared_ptr<const Tokenizer> tiny_tokenizer() {
  static std::shared_ptr<const Tokenizer> tok = Tokenizer::from_dir(DS_FIXTURES_DIR "/tiny/tokenizer");
  return tok;
}

struct ServerFixture {
  using Configure = std::function<void(server::ServerOptions&)>;
  explicit ServerFixture(std::string api_key = "", size_t max_body = 1u << 20, int64_t max_model_len = 256,
                         bool specials_in_content = false, const Configure& configure = {})
      : tok(tiny_tokenizer()), engine(tok, max_model_len) {
    server::ServerOptions o;
    o.http.host = "127.0.0.1";
    o.http.port = 0;
    o.http.max_body_bytes = max_body;
    o.api_key = std::move(api_key);
    o.model_names = {"tiny", "tiny-alias"};
    o.model_root = "tests/fixtures/tiny/model";
    o.chat_template_specials_in_content = specials_in_content;
    if (configure) configure(o);
    server = std::make_unique<server::OpenAIServer>(o, engine, tok);
    server->start();
  }
  ~ServerFixture() { server->shutdown(std::chrono::milliseconds(2000)); }

  HttpClient client() { return HttpClient(server->port()); }
  Reply post(const std::string& path, const json& body) { return client().post(path, body.dump()); }

  std::shared_ptr<const Tokenizer> tok;
  FakeEngine engine;
  std::unique_ptr<server::OpenAIServer> server;
};

// What a Kimi model emits for a get_weather tool call, cut into pieces the way a token stream would be.
inline std::vector<std::string> tool_call_pieces() {
  return {"Let me ",
          "check.",
          "<|tool_calls_section_begin|>",
          "<|tool_call_begin|>",
          "functions.get_weather:0",
          "<|tool_call_argument_begin|>",
          "{\"city\": ",
          "\"Paris\"}",
          "<|tool_call_end|>",
          "<|tool_calls_section_end|>"};
}

// The JSON payloads of an SSE body; "[DONE]" is returned as the string "[DONE]".
inline std::vector<json> sse_events(const std::string& body) {
  std::vector<json> out;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) end = body.size();
    std::string ev = body.substr(pos, end - pos);
    pos = end + 2;
    if (ev.empty()) continue;
    EXPECT_EQ(ev.rfind("data: ", 0), 0u) << ev;
    std::string data = ev.substr(6);
    out.push_back(data == "[DONE]" ? json("[DONE]") : json::parse(data));
  }
  return out;
}

}  // namespace ds::test
