// The OpenAI-compatible HTTP service: routing, API-key check, the simple endpoints (/health,
// /metrics, /v1/models, /version) and a worker thread per generation/tokenizer request (which
// blocks on the engine's output streams while the I/O threads keep serving). Shutdown is
// graceful: new work is refused with 503, requests in progress are answered, then it stops.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "server/engine_client.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "server/serving.h"

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
};

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
  void cancel_all() { cancel_all_ = true; }
  ServerMetrics& metrics() { return metrics_; }
  int requests_in_progress() const;

 private:
  void handle(HttpRequest req, std::shared_ptr<ResponseWriter> w);
  void spawn(std::function<void()> fn);

  ServerOptions opts_;
  EngineClient& engine_;
  ServerMetrics metrics_;
  ServingContext ctx_;
  std::atomic<bool> draining_{false};
  std::atomic<bool> cancel_all_{false};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  int workers_ = 0;
  bool stopped_ = false;
  std::unique_ptr<HttpServer> http_;  // last: stopped before the rest goes
};

}  // namespace ds::server
