#include "server/openai_server.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <optional>
#include <string_view>
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
// The request as the access log names it (absent: no access log).
struct AccessInfo {
  std::string remote, method, target;
  std::chrono::steady_clock::time_point received;
};

class RecordingWriter : public ResponseWriter {
 public:
  RecordingWriter(std::shared_ptr<ResponseWriter> inner, ServerMetrics& m, std::string endpoint,
                  OneShotEvent& cancel, Headers extra, std::optional<AccessInfo> access = std::nullopt)
      : inner_(std::move(inner)),
        metrics_(m),
        endpoint_(std::move(endpoint)),
        cancel_(cancel),
        access_(std::move(access)),
        extra_(std::move(extra)) {}
  ~RecordingWriter() override {
    for (uint64_t id : hooks_) cancel_.remove(id);
    if (!recorded_) record(inner_->client_gone() ? 499 : 500);
  }
  void send(HttpResponse res) override {
    if (started_) return;
    started_ = true;
    record(inner_->client_gone() ? 499 : res.status);
    res.headers.insert(res.headers.end(), extra_.begin(), extra_.end());
    inner_->send(std::move(res));
  }
  void begin_stream(int status, const std::string& content_type, Headers headers) override {
    if (started_) return;
    started_ = true;
    streaming_ = true;
    status_ = status;
    headers.insert(headers.end(), extra_.begin(), extra_.end());
    inner_->begin_stream(status, content_type, std::move(headers));
  }
  void write(std::string data) override {
    // A stream cut by the server (second signal, shutdown timeout) must not end like a complete
    // one: an error event goes before the final [DONE] (the choices already said "abort").
    if (streaming_ && cancel_.fired() && !inner_->client_gone() && data == kSseDone && !error_sent_)
      inner_->write(sse_event(json::parse(error_body(unavailable("the request was cancelled: the server is shutting down")))));
    error_sent_ |= data.starts_with(kSseErrorPrefix);
    inner_->write(std::move(data));
  }
  void end_stream() override {
    if (!streaming_ || recorded_) return;
    record(client_gone() ? 499 : status_);
    inner_->end_stream();
  }
  bool client_gone() const override { return inner_->client_gone() || cancel_.fired(); }
  void on_gone(std::function<void()> fn) override {
    inner_->on_gone(fn);
    std::lock_guard<std::mutex> lk(mu_);
    if (uint64_t id = cancel_.add(std::move(fn))) hooks_.push_back(id);
  }
  bool started() const { return started_; }
  bool streaming() const { return streaming_; }

 private:
  void record(int status) {
    recorded_ = true;
    metrics_.record_http(endpoint_, status);
    if (access_)
      spdlog::info("access: {} \"{} {}\" {} {:.1f} ms", access_->remote, access_->method, access_->target, status,
                   std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - access_->received).count());
  }
  std::shared_ptr<ResponseWriter> inner_;
  ServerMetrics& metrics_;
  std::string endpoint_;
  OneShotEvent& cancel_;
  std::optional<AccessInfo> access_;
  std::mutex mu_;
  std::vector<uint64_t> hooks_;
  Headers extra_;  // added to the response (CORS)
  static constexpr std::string_view kSseErrorPrefix = "data: {\"error\"";
  bool started_ = false, streaming_ = false, recorded_ = false, error_sent_ = false;
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
    {"/ping", "GET", Work::Inline},            {"/ping", "POST", Work::Inline},
    {"/v1/completions", "POST", Work::Worker}, {"/v1/chat/completions", "POST", Work::Worker},
    {"/v1/responses", "POST", Work::Worker},   {"/tokenize", "POST", Work::Worker},
    {"/detokenize", "POST", Work::Worker},     {"/v1/responses/{id}", "GET", Work::Inline},
    {"/v1/responses/{id}", "DELETE", Work::Inline}, {"/v1/models/{id}", "GET", Work::Inline},
    {"/invocations", "POST", Work::Worker},
    // vLLM's and SGLang's names for one thing: empty the prefix cache (waits for the step thread: a worker).
    {"/reset_prefix_cache", "POST", Work::Worker}, {"/flush_cache", "POST", Work::Worker},
};

// How long POST /reset_prefix_cache waits for the step thread to take the reset up (one step at most).
constexpr std::chrono::seconds kResetTimeout{30};

// POST /reset_prefix_cache (vLLM) and /flush_cache (SGLang): 200 {"status": "ok", "message"} when the cache was
// emptied or prefix caching is off; 409 (SGLang answers 400) naming the requests in progress, nothing changed;
// 503 when the engine is shutting down or did not answer in time.
void serve_reset_prefix_cache(EngineClient& engine, ResponseWriter& w) {
  const PrefixCacheResetResult r = engine.reset_prefix_cache(kResetTimeout);
  if (r.ok()) {
    w.send(json_response(200, {{"status", "ok"}, {"message", r.message}}));
  } else if (r.status == PrefixCacheResetResult::Status::Busy) {
    throw ApiError(409, "invalid_request_error", r.message, "", "requests_in_progress");
  } else {
    throw unavailable(r.message);
  }
}

// %XX escapes decoded (a model id in a path: "org%2Fname"); a malformed escape stays as it is.
std::string percent_decoded(std::string_view s) {
  std::string out;
  auto hex = [](char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
  };
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      out.push_back(char(hex(s[i + 1]) * 16 + hex(s[i + 2])));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// A stored response's path, /v1/responses/ID (ID without a slash), as its route's pattern; other paths as
// they are.
std::string route_path(const std::string& path, std::string* id) {
  const std::string prefix = "/v1/responses/";
  if (path.size() > prefix.size() && path.rfind(prefix, 0) == 0 && path.find('/', prefix.size()) == std::string::npos) {
    *id = path.substr(prefix.size());
    return "/v1/responses/{id}";
  }
  // OpenAI's model retrieval; the id may hold slashes ("org/name"), escaped or not.
  const std::string models = "/v1/models/";
  if (path.size() > models.size() && path.rfind(models, 0) == 0) {
    *id = percent_decoded(std::string_view(path).substr(models.size()));
    return "/v1/models/{id}";
  }
  return path;
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char d = 0;
  for (size_t i = 0; i < a.size(); ++i) d |= (unsigned char)(a[i] ^ b[i]);
  return d == 0;
}

// `Authorization: Bearer KEY`: the scheme is case-insensitive and separated from the credentials
// by one or more spaces (RFC 7235 section 2.1); the key itself is compared exactly.
bool bearer_matches(std::string_view header, const std::string& key) {
  constexpr std::string_view kScheme = "bearer";
  if (header.size() <= kScheme.size() || header[kScheme.size()] != ' ') return false;
  for (size_t i = 0; i < kScheme.size(); ++i)
    if (std::tolower((unsigned char)header[i]) != kScheme[i]) return false;
  std::string_view cred = header.substr(kScheme.size());
  cred.remove_prefix(std::min(cred.find_first_not_of(' '), cred.size()));
  return constant_time_equal(cred, key);
}

}  // namespace

ServingContext make_serving_context(const ServerOptions& opts, EngineClient& engine,
                                    std::shared_ptr<const Tokenizer> tokenizer, ServerMetrics& metrics,
                                    const UnknownFieldPolicy& unknown_fields) {
  DS_CHECK(!opts.model_names.empty(), "the server needs at least one served model name");
  DS_CHECK(tokenizer != nullptr, "the server needs a tokenizer");
  ServingContext ctx;
  ctx.engine = &engine;
  ctx.tokenizer = std::move(tokenizer);
  ctx.metrics = &metrics;
  ctx.model_names = opts.model_names;
  ctx.model_root = opts.model_root;
  ctx.specials_in_content = opts.chat_template_specials_in_content;
  ctx.unknown_fields = &unknown_fields;
  ctx.defaults = &opts.sampling_defaults;
  ctx.seed = opts.seed;
  ctx.responses = std::make_shared<ResponseStore>(opts.responses_store_bytes);
  ctx.response_role = opts.response_role;
  ctx.force_include_usage = opts.force_include_usage;
  ctx.content_parts_as_string = opts.content_parts_as_string;
  return ctx;
}

OpenAIServer::OpenAIServer(ServerOptions opts, EngineClient& engine, std::shared_ptr<const Tokenizer> tokenizer)
    : opts_(std::move(opts)),
      engine_(engine),
      metrics_(opts_.metrics),
      unknown_fields_(opts_.strict_request_fields),
      pool_(opts_.max_concurrent_requests) {
  ctx_ = make_serving_context(opts_, engine_, std::move(tokenizer), metrics_, unknown_fields_);
  HttpServerOptions http = opts_.http;
  http.on_rejected = [this](int status) { metrics_.record_http("other", status); };
  http_ = std::make_unique<HttpServer>(
      http, [this](HttpRequest req, std::shared_ptr<ResponseWriter> w) { handle(std::move(req), std::move(w)); });
}

OpenAIServer::~OpenAIServer() { shutdown(std::chrono::milliseconds(0)); }

void OpenAIServer::start() { http_->start(); }

int OpenAIServer::port() const { return http_->port(); }

int OpenAIServer::requests_in_progress() const { return pool_.busy(); }

void OpenAIServer::cancel_all() { cancel_.fire(); }


Headers OpenAIServer::cors_headers(const std::string& origin, bool has_cookie) const {
  if (origin.empty()) return {};
  Headers h;
  for (const auto& o : opts_.allowed_origins) {
    // "*" cannot go with credentials (browsers refuse it) nor answer a request with cookies: name the origin.
    if (o == "*" && !opts_.allow_credentials && !has_cookie) {
      h = {{"Access-Control-Allow-Origin", "*"}};
      break;
    }
    if (o == "*" || o == origin) {
      h = {{"Access-Control-Allow-Origin", origin}, {"Vary", "Origin"}};
      break;
    }
  }
  if (!h.empty() && opts_.allow_credentials) h.emplace_back("Access-Control-Allow-Credentials", "true");
  return h;
}

HttpResponse OpenAIServer::options_response(const HttpRequest& req) const {
  static const char* const kAllMethods = "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT";
  const std::string origin = req.header("origin"), method = req.header("access-control-request-method");
  if (origin.empty() || method.empty()) return {200, "text/plain", "", {{"Allow", "DELETE, GET, POST, OPTIONS"}}};
  // A CORS preflight: the origin, the method and every requested header must be allowed.
  const auto listed = [](const std::vector<std::string>& list, std::string item) {
    for (char& c : item) c = char(std::tolower((unsigned char)c));
    for (std::string x : list) {
      for (char& c : x) c = char(std::tolower((unsigned char)c));
      if (x == "*" || x == item) return true;
    }
    return false;
  };
  std::vector<std::string> failures;
  Headers h = cors_headers(origin, false);
  if (h.empty()) failures.push_back("origin");
  if (!listed(opts_.allowed_methods, method)) failures.push_back("method");
  const std::string asked = req.header("access-control-request-headers");
  // Headers a browser may always send (the CORS safelist) are allowed whatever the list says.
  std::vector<std::string> headers = opts_.allowed_headers;
  headers.insert(headers.end(), {"accept", "accept-language", "content-language", "content-type"});
  for (size_t b = 0; b < asked.size();) {
    size_t e = std::min(asked.find(',', b), asked.size());
    std::string name = asked.substr(b, e - b);
    name.erase(0, name.find_first_not_of(" \t"));
    name.erase(name.find_last_not_of(" \t") + 1);
    if (!name.empty() && !listed(headers, name)) {
      failures.push_back("headers");
      break;
    }
    b = e + 1;
  }
  if (!failures.empty()) {
    std::string what;
    for (const auto& f : failures) what += (what.empty() ? "" : ", ") + f;
    return {400, "text/plain", "Disallowed CORS " + what, {}};
  }
  std::string methods;
  for (const auto& m : opts_.allowed_methods) methods += (methods.empty() ? "" : ", ") + m;
  if (listed(opts_.allowed_methods, "*")) methods = kAllMethods;
  std::string allowed_headers = asked.empty() ? "*" : asked;  // any: the requested ones echoed
  if (!listed(opts_.allowed_headers, "*")) {
    allowed_headers.clear();
    for (const auto& x : headers) allowed_headers += (allowed_headers.empty() ? "" : ", ") + x;
  }
  h.emplace_back("Access-Control-Allow-Methods", methods);
  h.emplace_back("Access-Control-Allow-Headers", allowed_headers);
  h.emplace_back("Access-Control-Max-Age", "600");
  return {200, "text/plain", "", std::move(h)};
}

void OpenAIServer::handle(HttpRequest req, std::shared_ptr<ResponseWriter> raw) {
  Headers extra = cors_headers(req.header("origin"), !req.header("cookie").empty());
  if (opts_.request_id_headers) {
    const std::string id = req.header("x-request-id");
    extra.emplace_back("X-Request-Id", id.empty() ? (make_request_id("") + make_request_id("")).substr(0, 32) : id);
  }
  if (req.method == "OPTIONS") {
    // CORS preflight (or a plain OPTIONS): answered here, without an API key (browsers send none).
    HttpResponse res = options_response(req);
    if (opts_.request_id_headers) res.headers.push_back(extra.back());
    metrics_.record_http("other", res.status);
    raw->send(std::move(res));
    return;
  }
  const Route* route = nullptr;
  bool path_known = false;
  std::string stored_id;
  const std::string path = route_path(req.path, &stored_id);
  for (const auto& r : kRoutes) {
    if (path != r.path) continue;
    path_known = true;
    if (req.method == r.method) route = &r;
  }
  std::optional<AccessInfo> access;
  if (opts_.access_log) access = AccessInfo{req.remote, req.method, req.target, req.received};
  auto w = std::make_shared<RecordingWriter>(std::move(raw), metrics_, path_known ? path : "other", cancel_,
                                             std::move(extra), std::move(access));
  spdlog::debug("http {}: {} {} ({} bytes)", req.remote, req.method, req.target, req.body.size());
  try {
    // As in vLLM, the key guards the API under /v1 only: the probes, /tokenize, /detokenize and the scrape stay
    // open (--protect-metrics closes /metrics).
    const bool guarded = req.path.starts_with("/v1") || (req.path == "/metrics" && opts_.protect_metrics);
    if (guarded && !opts_.api_key.empty()) {
      std::string auth = req.header("authorization");
      if (!bearer_matches(auth, opts_.api_key))
        throw unauthorized(auth.empty() ? "Missing API key: send 'Authorization: Bearer <key>'"
                                        : "Incorrect API key provided");
    }
    if (!path_known) throw not_found(fmt::format("no such endpoint: {} {}", req.method, req.path));
    if (!route) {
      std::string allow;
      for (const auto& r : kRoutes)
        if (path == r.path) allow += (allow.empty() ? "" : ", ") + std::string(r.method);
      HttpResponse res = error_response(
          ApiError(405, "invalid_request_error", fmt::format("method {} is not allowed on {}", req.method, req.path)));
      res.headers.emplace_back("Allow", allow);
      w->send(std::move(res));
      return;
    }
    if (route->work == Work::Inline) {
      if (req.path == "/health" || req.path == "/ping") {
        if (draining_) throw unavailable("the server is shutting down");
        if (std::string f = engine_.failure(); !f.empty()) throw unavailable("the model can run no more steps: " + f);
        w->send(json_response(200, {{"status", "ok"}}));
      } else if (req.path == "/metrics") {
        w->send({200, "text/plain; version=0.0.4; charset=utf-8", metrics_.render(engine_.stats()), {}});
      } else if (req.path == "/version") {
        w->send(json_response(200, {{"version", "0.1.0"}}));
      } else if (req.path == "/v1/models" || path == "/v1/models/{id}") {
        auto card = [&](const std::string& name) {
          return json{{"id", name},
                      {"object", "model"},
                      {"created", unix_time()},
                      {"owned_by", "deltaserve"},
                      {"root", opts_.model_root},
                      {"parent", nullptr},
                      {"max_model_len", engine_.max_model_len()}};
        };
        if (path == "/v1/models/{id}") {
          if (std::find(opts_.model_names.begin(), opts_.model_names.end(), stored_id) == opts_.model_names.end())
            throw not_found(fmt::format("The model `{}` does not exist.", stored_id), "model_not_found");
          w->send(json_response(200, card(stored_id)));
          return;
        }
        json data = json::array();
        for (const auto& name : opts_.model_names) data.push_back(card(name));
        w->send(json_response(200, {{"object", "list"}, {"data", data}}));
      } else if (path == "/v1/responses/{id}") {
        serve_stored_response(ctx_, req.method, stored_id, *w);
      }
      return;
    }
    if (draining_) throw unavailable("the server is shutting down");
    const auto too_many = [&] {
      return too_many_requests(fmt::format("too many requests in progress (limit {})", opts_.max_concurrent_requests));
    };
    if (requests_in_progress() >= opts_.max_concurrent_requests) throw too_many();
    // The pool re-checks the bound atomically (two I/O threads may pass the check above at once).
    bool accepted = pool_.try_run([this, req = std::move(req), w] {
      try {
        if (serve_generation(ctx_, req, *w)) return;
        if (req.path == "/tokenize")
          serve_tokenize(ctx_, req, *w);
        else if (req.path == "/detokenize")
          serve_detokenize(ctx_, req, *w);
        else if (req.path == "/invocations")
          serve_invocation(ctx_, req, *w);
        else if (req.path == "/reset_prefix_cache" || req.path == "/flush_cache")
          serve_reset_prefix_cache(engine_, *w);
      } catch (...) {
        reply_error(*w, handler_failure(req));
      }
    });
    if (!accepted) reply_error(*w, draining_ ? unavailable("the server is shutting down") : too_many());
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
  if (!pool_.wait_idle(std::chrono::steady_clock::now() + grace)) {
    spdlog::warn("shutdown: {} request(s) still in progress after {} ms; cancelling them", pool_.busy(), grace.count());
    cancel_all();
    pool_.wait_idle();
  }
  pool_.stop();
  // Let the last bytes go out before the connections close.
  for (int i = 0; i < 200 && http_->active_responses() > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  http_->stop();
}

}  // namespace ds::server
