#include "server/openai_server.h"

#include <fmt/format.h>

#include <thread>

#include "core/error.h"
#include "core/log.h"
#include "server/api_error.h"
#include "server/openai_response.h"
#include "tokenizer/tokenizer.h"

namespace ds::server {

using nlohmann::json;

namespace {

// Records each response's status in the metrics once it is complete: 499 when the client went
// away first. Also lets the server cancel every request at once (forced shutdown).
class RecordingWriter : public ResponseWriter {
 public:
  RecordingWriter(std::shared_ptr<ResponseWriter> inner, ServerMetrics& m, std::string endpoint,
                  const std::atomic<bool>& cancel_all)
      : inner_(std::move(inner)), metrics_(m), endpoint_(std::move(endpoint)), cancel_all_(cancel_all) {}
  ~RecordingWriter() override {
    if (!recorded_) record(inner_->client_gone() ? 499 : 500);
  }
  void send(HttpResponse res) override {
    if (started_) return;
    started_ = true;
    record(inner_->client_gone() ? 499 : res.status);
    inner_->send(std::move(res));
  }
  void begin_stream(int status, const std::string& content_type, Headers headers) override {
    if (started_) return;
    started_ = true;
    streaming_ = true;
    status_ = status;
    inner_->begin_stream(status, content_type, std::move(headers));
  }
  void write(std::string data) override { inner_->write(std::move(data)); }
  void end_stream() override {
    if (!streaming_ || recorded_) return;
    record(client_gone() ? 499 : status_);
    inner_->end_stream();
  }
  bool client_gone() const override { return inner_->client_gone() || cancel_all_.load(); }
  bool started() const { return started_; }
  bool streaming() const { return streaming_; }

 private:
  void record(int status) {
    recorded_ = true;
    metrics_.record_http(endpoint_, status);
  }
  std::shared_ptr<ResponseWriter> inner_;
  ServerMetrics& metrics_;
  std::string endpoint_;
  const std::atomic<bool>& cancel_all_;
  bool started_ = false, streaming_ = false, recorded_ = false;
  int status_ = 200;
};

HttpResponse json_response(int status, const json& body) {
  return {status, "application/json", body.dump(-1, ' ', false, json::error_handler_t::replace), {}};
}

HttpResponse error_response(const ApiError& e) {
  HttpResponse r{e.status, "application/json", error_body(e), {}};
  return r;
}

void reply_error(RecordingWriter& w, const ApiError& e) {
  if (!w.started()) {
    w.send(error_response(e));
  } else if (w.streaming()) {
    w.write(sse_event(json::parse(error_body(e))));
    w.write(kSseDone);
    w.end_stream();
  }
}

enum class Work { Inline, Worker };
struct Route {
  const char* path;
  const char* method;
  Work work;
};
constexpr Route kRoutes[] = {
    {"/health", "GET", Work::Inline},          {"/metrics", "GET", Work::Inline},
    {"/v1/models", "GET", Work::Inline},       {"/version", "GET", Work::Inline},
    {"/v1/completions", "POST", Work::Worker}, {"/v1/chat/completions", "POST", Work::Worker},
    {"/tokenize", "POST", Work::Worker},       {"/detokenize", "POST", Work::Worker},
};

bool constant_time_equal(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char d = 0;
  for (size_t i = 0; i < a.size(); ++i) d |= (unsigned char)(a[i] ^ b[i]);
  return d == 0;
}

}  // namespace

OpenAIServer::OpenAIServer(ServerOptions opts, EngineClient& engine, std::shared_ptr<const Tokenizer> tokenizer)
    : opts_(std::move(opts)), engine_(engine) {
  DS_CHECK(!opts_.model_names.empty(), "the server needs at least one served model name");
  DS_CHECK(tokenizer != nullptr, "the server needs a tokenizer");
  ctx_.engine = &engine_;
  ctx_.tokenizer = std::move(tokenizer);
  ctx_.metrics = &metrics_;
  ctx_.model_names = opts_.model_names;
  ctx_.model_root = opts_.model_root;
  ctx_.specials_in_content = opts_.chat_template_specials_in_content;
  HttpServerOptions http = opts_.http;
  http.on_rejected = [this](int status) { metrics_.record_http("other", status); };
  http_ = std::make_unique<HttpServer>(
      http, [this](HttpRequest req, std::shared_ptr<ResponseWriter> w) { handle(std::move(req), std::move(w)); });
}

OpenAIServer::~OpenAIServer() { shutdown(std::chrono::milliseconds(0)); }

void OpenAIServer::start() { http_->start(); }

int OpenAIServer::port() const { return http_->port(); }

int OpenAIServer::requests_in_progress() const {
  std::lock_guard<std::mutex> lk(mu_);
  return workers_;
}

void OpenAIServer::spawn(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    ++workers_;
  }
  std::thread([this, fn = std::move(fn)]() mutable {
    {
      auto f = std::move(fn);  // destroyed (with the writer it holds) before the count drops
      f();
    }
    std::lock_guard<std::mutex> lk(mu_);
    --workers_;
    cv_.notify_all();
  }).detach();
}

void OpenAIServer::handle(HttpRequest req, std::shared_ptr<ResponseWriter> raw) {
  const Route* route = nullptr;
  bool path_known = false;
  for (const auto& r : kRoutes) {
    if (req.path != r.path) continue;
    path_known = true;
    if (req.method == r.method) route = &r;
  }
  auto w = std::make_shared<RecordingWriter>(std::move(raw), metrics_, path_known ? req.path : "other", cancel_all_);
  spdlog::debug("http {}: {} {} ({} bytes)", req.remote, req.method, req.target, req.body.size());
  try {
    if (req.path != "/health" && !opts_.api_key.empty()) {
      std::string auth = req.header("authorization");
      if (!constant_time_equal(auth, "Bearer " + opts_.api_key))
        throw unauthorized(auth.empty() ? "Missing API key: send 'Authorization: Bearer <key>'"
                                        : "Incorrect API key provided");
    }
    if (!path_known) throw not_found(fmt::format("no such endpoint: {} {}", req.method, req.path));
    if (!route) {
      std::string allow;
      for (const auto& r : kRoutes)
        if (req.path == r.path) allow = r.method;
      HttpResponse res = error_response(
          ApiError(405, "invalid_request_error", fmt::format("method {} is not allowed on {}", req.method, req.path)));
      res.headers.emplace_back("Allow", allow);
      w->send(std::move(res));
      return;
    }
    if (route->work == Work::Inline) {
      if (req.path == "/health") {
        if (draining_) throw unavailable("the server is shutting down");
        w->send(json_response(200, {{"status", "ok"}}));
      } else if (req.path == "/metrics") {
        w->send({200, "text/plain; version=0.0.4; charset=utf-8", metrics_.render(engine_.stats()), {}});
      } else if (req.path == "/version") {
        w->send(json_response(200, {{"version", "0.1.0"}}));
      } else if (req.path == "/v1/models") {
        json data = json::array();
        for (const auto& name : opts_.model_names)
          data.push_back({{"id", name},
                          {"object", "model"},
                          {"created", unix_time()},
                          {"owned_by", "deltaserve"},
                          {"root", opts_.model_root},
                          {"parent", nullptr},
                          {"max_model_len", engine_.max_model_len()}});
        w->send(json_response(200, {{"object", "list"}, {"data", data}}));
      }
      return;
    }
    if (draining_) throw unavailable("the server is shutting down");
    if (requests_in_progress() >= opts_.max_concurrent_requests)
      throw too_many_requests(fmt::format("too many requests in progress (limit {})", opts_.max_concurrent_requests));
    spawn([this, req = std::move(req), w] {
      try {
        if (req.path == "/v1/completions")
          serve_completions(ctx_, req, *w);
        else if (req.path == "/v1/chat/completions")
          serve_chat_completions(ctx_, req, *w);
        else if (req.path == "/tokenize")
          serve_tokenize(ctx_, req, *w);
        else if (req.path == "/detokenize")
          serve_detokenize(ctx_, req, *w);
      } catch (const ApiError& e) {
        spdlog::debug("http {}: {} {} -> {}: {}", req.remote, req.method, req.path, e.status, e.what());
        reply_error(*w, e);
      } catch (const nlohmann::json::exception& e) {
        // A JSON access the request validation missed: a bug here, but never the library's text in a reply.
        spdlog::error("http {}: {} {} failed reading the request JSON: {}", req.remote, req.method, req.path, e.what());
        reply_error(*w, internal_error("the server failed to read a request field (a server bug; see the log)"));
      } catch (const std::exception& e) {
        spdlog::error("http {}: {} {} failed: {}", req.remote, req.method, req.path, e.what());
        reply_error(*w, internal_error(e.what()));
      }
    });
  } catch (const ApiError& e) {
    spdlog::debug("http {}: {} {} -> {}: {}", req.remote, req.method, req.path, e.status, e.what());
    reply_error(*w, e);
  }
}

void OpenAIServer::shutdown(std::chrono::milliseconds grace) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  draining_ = true;
  http_->stop_accepting();
  auto deadline = std::chrono::steady_clock::now() + grace;
  std::unique_lock<std::mutex> lk(mu_);
  if (!cv_.wait_until(lk, deadline, [&] { return workers_ == 0; })) {
    spdlog::warn("shutdown: {} request(s) still in progress after {} ms; cancelling them", workers_, grace.count());
    cancel_all_ = true;
    cv_.wait(lk, [&] { return workers_ == 0; });
  }
  lk.unlock();
  // Let the last bytes go out before the connections close.
  for (int i = 0; i < 200 && http_->active_responses() > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  http_->stop();
}

}  // namespace ds::server
