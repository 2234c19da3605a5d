// The OpenAI-compatible HTTP service: routing, API-key check, the simple endpoints (/health,
// /metrics, /v1/models, /version) and, for generation/tokenizer requests, a worker from a pool the
// server owns (bounded by max_concurrent_requests; a generation request sleeps on its job's
// Notifier, woken by engine output, client disconnect or cancel_all, while the I/O threads serve). Shutdown is
// graceful: new work is refused with 503, requests in progress are answered, then it stops.
#pragma once
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "server/engine_client.h"
#include "server/generation_defaults.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "server/one_shot_event.h"
#include "server/serving.h"
#include "server/worker_pool.h"

namespace ds {
class Tokenizer;
}

namespace ds::server {

struct ServerOptions {
  HttpServerOptions http;
  std::string api_key;                   // "" : no authentication
  std::vector<std::string> model_names;  // served model names (at least one)
  std::string model_root;                // reported as /v1/models "root"
  int max_concurrent_requests = 4096;    // requests in progress beyond this get 429 at once
  // Hugging Face's behaviour: special-token text inside message content, names, tools and kwargs is
  // encoded as control tokens (a user can forge turns). Off: request text is always plain text.
  bool chat_template_specials_in_content = false;
  MetricsOptions metrics;          // name prefix, model_name label, cache_config_info
  bool protect_metrics = false;    // /metrics needs the API key too (default: open, as in vLLM)
  bool access_log = false;         // one info line per answered request
  // Unrecognized request fields: a 400 (true) or ignored with one warning per field name (vLLM's way).
  bool strict_request_fields = false;
  // CORS: origins whose browser requests may read the responses ("*": any). Empty: no CORS headers.
  std::vector<std::string> allowed_origins = {"*"};
  // CORS preflights: the methods and request headers allowed ("*": any, the requested headers echoed), and
  // whether browsers may send credentials (then the origin is named instead of "*").
  std::vector<std::string> allowed_methods = {"*"}, allowed_headers = {"*"};
  bool allow_credentials = false;
  // X-Request-Id on every response: the request's own header, else a new random id (vLLM's
  // --enable-request-id-headers).
  bool request_id_headers = false;
  std::string response_role = "assistant";  // chat completion messages' role (--response-role)
  bool force_include_usage = false;  // every stream ends with a usage chunk (--enable-force-include-usage)
  bool content_parts_as_string = false;  // --chat-template-content-format string: text parts joined by "\n"
  // Sampling defaults for the fields a request leaves out, and a cap on max_tokens (--generation-config).
  SamplingDefaults sampling_defaults;
  // --seed: requests without their own seed draw from a sequence seeded here (reproducible runs).
  std::optional<uint64_t> seed;
  // /v1/responses kept for previous_response_id and GET / DELETE /v1/responses/{id}: host memory, least
  // recently used dropped beyond this (--responses-store-mib; 0: none kept, previous_response_id a 400).
  size_t responses_store_bytes = size_t(256) << 20;
};

// The endpoint handlers' shared state for `opts` (what OpenAIServer serves with; `deltaserve run-batch` calls the
// handlers with it directly). `opts`, `metrics` and `unknown_fields` must outlive it (it points at their parts).
ServingContext make_serving_context(const ServerOptions& opts, EngineClient& engine,
                                    std::shared_ptr<const Tokenizer> tokenizer, ServerMetrics& metrics,
                                    const UnknownFieldPolicy& unknown_fields);

class OpenAIServer {
 public:
  OpenAIServer(ServerOptions opts, EngineClient& engine, std::shared_ptr<const Tokenizer> tokenizer);
  ~OpenAIServer();  // shutdown(0) if still running
  OpenAIServer(const OpenAIServer&) = delete;
  OpenAIServer& operator=(const OpenAIServer&) = delete;

  void start();  // throws ds::Error when it cannot listen
  int port() const;
  // Refuses new work (503; /health too), stops accepting connections and waits up to `grace` for
  // the requests in progress; past it, cancels them (their engine requests are aborted). Then
  // closes everything. Idempotent.
  void shutdown(std::chrono::milliseconds grace);
  // Cancels every request in progress now (their engine requests are aborted).
  void cancel_all();
  ServerMetrics& metrics() { return metrics_; }
  int requests_in_progress() const;

 private:
  void handle(HttpRequest req, std::shared_ptr<ResponseWriter> w);
  // The CORS headers for a request from `origin` ("" when it sent none): empty when not allowed.
  Headers cors_headers(const std::string& origin, bool has_cookie) const;
  // The answer to an OPTIONS request (a CORS preflight when it names an origin and a method).
  HttpResponse options_response(const HttpRequest& req) const;

  ServerOptions opts_;
  EngineClient& engine_;
  ServerMetrics metrics_;
  UnknownFieldPolicy unknown_fields_;
  ServingContext ctx_;
  std::atomic<bool> draining_{false};
  OneShotEvent cancel_;  // cancel_all(); waiting requests hook their wake-up on it
  mutable std::mutex mu_;
  bool stopped_ = false;
  WorkerPool pool_;
  std::unique_ptr<HttpServer> http_;  // last: stopped before the rest goes
};

}  // namespace ds::server
