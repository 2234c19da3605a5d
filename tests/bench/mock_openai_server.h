// A small OpenAI-compatible server for the bench tests (Boost.Beast, its own thread, a free loopback
// port). It streams "tokens" the way vLLM/SGLang/deltaserve do: SSE over chunked transfer encoding, one
// chunk per token, a usage chunk when stream_options.include_usage is set, then `data: [DONE]`.
// Behaviour knobs let tests provoke errors, missing usage, split events and slow tokens. POST /tokenize
// answers as vLLM and deltaserve do, counting one token per whitespace-separated word.
#pragma once
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ds::bench::testing {

struct MockBehavior {
  int status = 200;  // other: every POST gets this status and an OpenAI error object
  std::string error_message = "mock rejects this request";
  double token_delay_s = 0.0;   // pause before each token chunk
  bool send_usage = true;       // honour stream_options.include_usage
  bool role_chunk = true;       // chat: a first chunk carrying only the role
  int error_after_tokens = -1;  // >= 0: stream an error object after that many tokens
  bool split_events = false;    // write every SSE event in two pieces, with a pause between
  std::string api_key;          // non-empty: requests without "Bearer <api_key>" get 401
  bool tokenize = true;         // POST /tokenize {"prompt"} -> {"count", "tokens"}, a token per word; false: 404
  // Non-streamed replies: the text for a request body (default: "tok0 tok1 ..." of max_tokens tokens).
  std::function<std::string(const nlohmann::json& body)> reply;
};

class MockOpenAIServer {
 public:
  explicit MockOpenAIServer(MockBehavior behavior = {});
  ~MockOpenAIServer();
  MockOpenAIServer(const MockOpenAIServer&) = delete;
  MockOpenAIServer& operator=(const MockOpenAIServer&) = delete;

  int port() const;
  std::string base_url() const;  // http://127.0.0.1:<port>

  struct Received {
    std::string method, target, authorization;
    nlohmann::json body;  // null for GET
  };
  std::vector<Received> received() const;
  int max_in_flight() const;  // most POSTs being answered at once

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace ds::bench::testing
