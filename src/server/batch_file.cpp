#include "server/batch_file.h"

#include <spdlog/fmt/fmt.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <ostream>
#include <thread>
#include <unordered_map>

#include "server/api_error.h"
#include "server/openai_response.h"

namespace ds::server {
namespace {

using nlohmann::json;
using ojson = nlohmann::ordered_json;  // the output lines keep their fields' order (id, custom_id, response, error)
using Clock = std::chrono::steady_clock;

constexpr const char* kEndpoints[] = {"/v1/chat/completions", "/v1/completions", "/v1/responses"};

// A handler's answer, kept instead of sent (a batch line is never streamed: `stream` is refused before).
class CaptureWriter : public ResponseWriter {
 public:
  void send(HttpResponse res) override {
    status = res.status;
    body = std::move(res.body);
  }
  void begin_stream(int s, const std::string&, Headers) override { status = s; }
  void write(std::string data) override { body += data; }
  void end_stream() override {}
  bool client_gone() const override { return false; }
  void on_gone(std::function<void()>) override {}

  int status = 500;
  std::string body = error_body(500, "the endpoint gave no answer");
};

// The endpoint `url`'s answer to `body`, as the HTTP server's worker would have sent it.
HttpResponse call_endpoint(const ServingContext& ctx, const std::string& url, const std::string& body) {
  HttpRequest req;
  req.method = "POST";
  req.target = req.path = url;
  req.body = body;
  req.remote = "run-batch";
  req.received = Clock::now();
  CaptureWriter w;
  try {
    serve_generation(ctx, req, w);  // (url is one of kEndpoints: run_batch_line checked it)
  } catch (...) {
    const ApiError e = handler_failure(req);
    return {e.status, "application/json", error_body(e), {}};
  }
  return {w.status, "application/json", std::move(w.body), {}};
}

ojson line_error(ojson custom_id, const std::string& code, const std::string& message, int64_t line_no) {
  return {{"id", make_request_id("batch_req_")},
          {"custom_id", std::move(custom_id)},
          {"response", nullptr},
          {"error", {{"code", code}, {"message", message}, {"line", line_no}}}};
}

bool blank(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](unsigned char c) { return c == ' ' || c == '\t' || c == '\r'; });
}

// The custom_id of a line, when it is a JSON object with a string one.
std::optional<std::string> custom_id_of(const std::string& line) {
  const json j = json::parse(line, nullptr, false);
  if (j.is_object() && j.contains("custom_id") && j["custom_id"].is_string()) return j["custom_id"].get<std::string>();
  return std::nullopt;
}

// Outputs written in input order as they finish, with the tally.
class OrderedWriter {
 public:
  OrderedWriter(std::ostream& out, int64_t total) : out_(out) { tally_.total = total; }

  void add(int64_t index, const ojson& result) {
    std::string text = result.dump(-1, ' ', false, ojson::error_handler_t::replace);
    std::lock_guard<std::mutex> lk(mu_);
    const ojson* resp = result.contains("response") ? &result["response"] : nullptr;
    const bool ok = resp && resp->is_object() && resp->value("status_code", 0) == 200;
    if (ok && (*resp)["body"].is_object() && (*resp)["body"].contains("usage")) {
      const ojson& u = (*resp)["body"]["usage"];
      // chat / completions: prompt_tokens, completion_tokens; Responses: input_tokens, output_tokens
      tally_.prompt_tokens += u.value("prompt_tokens", u.value("input_tokens", int64_t(0)));
      tally_.completion_tokens += u.value("completion_tokens", u.value("output_tokens", int64_t(0)));
    }
    ++tally_.done;
    if (!ok) ++tally_.failed;
    pending_.emplace(index, std::move(text));
    for (auto it = pending_.begin(); it != pending_.end() && it->first == next_; it = pending_.erase(it), ++next_)
      out_ << it->second << '\n';
    out_.flush();
    cv_.notify_all();
  }
  // The tally after waiting up to `for_s` for the last line (at once when it is in).
  BatchProgress wait(double for_s) {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait_for(lk, std::chrono::duration<double>(for_s), [&] { return tally_.done == tally_.total; });
    return tally_;
  }

 private:
  std::ostream& out_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<int64_t, std::string> pending_;
  int64_t next_ = 0;
  BatchProgress tally_;
};

}  // namespace

ojson run_batch_line(const ServingContext& ctx, const std::string& line, int64_t line_no, int64_t repeats) {
  json j;
  try {
    j = parse_json_body(line);
  } catch (const ApiError& e) {
    return line_error(nullptr, "invalid_json", fmt::format("line {}: {}", line_no, e.what()), line_no);
  }
  if (!j.is_object()) return line_error(nullptr, "invalid_request", fmt::format("line {}: not a JSON object", line_no), line_no);
  if (!j.contains("custom_id") || !j["custom_id"].is_string())
    return line_error(nullptr, "invalid_custom_id", fmt::format("line {}: `custom_id` (a string) is required", line_no),
                      line_no);
  const std::string id = j["custom_id"].get<std::string>();
  if (repeats > 0)
    return line_error(id, "duplicate_custom_id",
                      fmt::format("line {}: custom_id '{}' is also line {}'s (each must be unique)", line_no, id, repeats),
                      line_no);
  if (!j.contains("method") || j["method"] != "POST")
    return line_error(id, "invalid_method", fmt::format("line {}: `method` must be \"POST\"", line_no), line_no);
  const std::string url = j.contains("url") && j["url"].is_string() ? j["url"].get<std::string>() : "";
  if (std::find(std::begin(kEndpoints), std::end(kEndpoints), url) == std::end(kEndpoints))
    return line_error(id, "invalid_url",
                      fmt::format("line {}: `url` {} is not one of /v1/chat/completions, /v1/completions, /v1/responses",
                                  line_no, j.contains("url") ? j["url"].dump() : "(missing)"),
                      line_no);
  if (!j.contains("body") || !j["body"].is_object())
    return line_error(id, "invalid_body", fmt::format("line {}: `body` (the request, an object) is required", line_no),
                      line_no);
  HttpResponse r;
  if (j["body"].contains("stream") && j["body"]["stream"] == true) {
    r = {400, "application/json", error_body(bad_request("a batch request cannot be streamed (`stream` true)", "stream")), {}};
  } else {
    const std::string body = j["body"].dump(-1, ' ', false, json::error_handler_t::replace);
    // a full engine queue is waited out: the batch runs every line, however long the queue
    for (auto wait = std::chrono::milliseconds(10); (r = call_endpoint(ctx, url, body)).status == 429;
         wait = std::min(wait * 2, std::chrono::milliseconds(500)))
      std::this_thread::sleep_for(wait);
  }
  ojson out_body = ojson::parse(r.body, nullptr, false);
  if (out_body.is_discarded()) out_body = r.body;
  std::string request_id = out_body.is_object() && out_body.contains("id") && out_body["id"].is_string()
                               ? out_body["id"].get<std::string>()
                               : make_request_id("req_");
  return {{"id", make_request_id("batch_req_")},
          {"custom_id", id},
          {"response", {{"status_code", r.status}, {"request_id", std::move(request_id)}, {"body", std::move(out_body)}}},
          {"error", nullptr}};
}

int64_t batch_request_count(const std::vector<std::string>& lines) {
  return std::count_if(lines.begin(), lines.end(), [](const std::string& l) { return !blank(l); });
}

BatchProgress run_batch(const ServingContext& ctx, const std::vector<std::string>& lines, std::ostream& out,
                        const BatchOptions& o) {
  const auto t0 = Clock::now();
  // the request lines (1-based line numbers) and, for each, the earlier line with its custom_id
  std::vector<int64_t> line_no, repeats;
  std::unordered_map<std::string, int64_t> first;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (blank(lines[i])) continue;
    line_no.push_back(int64_t(i) + 1);
    int64_t rep = 0;
    if (auto id = custom_id_of(lines[i])) {
      auto [it, fresh] = first.emplace(*id, int64_t(i) + 1);
      if (!fresh) rep = it->second;
    }
    repeats.push_back(rep);
  }
  const int64_t total = int64_t(line_no.size());
  OrderedWriter writer(out, total);
  std::atomic<int64_t> next{0};
  std::vector<std::thread> workers;
  const int64_t n = std::min<int64_t>(std::max(1, o.concurrency), total);
  for (int64_t w = 0; w < n; ++w)
    workers.emplace_back([&] {
      for (int64_t k; (k = next++) < total;) {
        const std::string& line = lines[size_t(line_no[size_t(k)] - 1)];
        writer.add(k, run_batch_line(ctx, line, line_no[size_t(k)], repeats[size_t(k)]));
      }
    });
  BatchProgress p;
  for (;;) {
    p = writer.wait(std::max(0.05, o.progress_interval_s));
    p.elapsed_s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (p.done == total) break;
    if (o.on_progress) o.on_progress(p);
  }
  for (auto& t : workers) t.join();
  if (o.on_progress) o.on_progress(p);
  return p;
}

}  // namespace ds::server
