// One benchmark request: its JSON body, and sending it streamed while timing every content chunk.
#pragma once
#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

#include "bench/dataset.h"
#include "bench/http_client.h"
#include "bench/openai_api.h"
#include "bench/stats.h"

namespace ds::bench {

using Clock = std::chrono::steady_clock;

struct RequestOptions {
  EndpointType type = EndpointType::Completions;
  std::string path;  // endpoint path, e.g. /v1/completions
  std::string model;
  std::string api_key;
  bool ignore_eos = false;
  double temperature = 0.0;
  nlohmann::json extra_body = nlohmann::json::object();  // merged last, so it can override anything
};

// The body for `p`: model, prompt or messages, max_tokens, temperature, ignore_eos when set and, when
// streaming, stream_options.include_usage (so token counts come from the server).
nlohmann::json make_request_body(const BenchPrompt& p, const RequestOptions& o, bool stream);

// GET /v1/models: proves the server is there (throws ds::Error naming the address when it is not, or
// when it refuses the API key) and returns `model`, or the server's first model when `model` is empty.
std::string resolve_model(const ServerAddress& addr, const std::string& model, const std::string& api_key,
                          double timeout_s);

// Sends `p` streamed and records its timings relative to t0. Never throws for server or network
// failures: they come back as a failed record with the reason.
boost::asio::awaitable<RequestRecord> run_streaming_request(HttpClient& client, const RequestOptions& o,
                                                            const BenchPrompt& p, Clock::time_point t0);

}  // namespace ds::bench
