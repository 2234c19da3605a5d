#include "bench/request.h"

#include "bench/sse.h"
#include "core/error.h"

namespace ds::bench {

using nlohmann::json;

namespace {
double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
}  // namespace

std::string resolve_model(const ServerAddress& addr, const std::string& model, const std::string& api_key,
                          double timeout_s) {
  HttpResult r = http_request_blocking(addr, HttpRequest{"GET", "/v1/models", "", api_key}, timeout_s);
  if (!r.transport_error.empty()) fail("cannot reach the server at {}: {}", addr.url(), r.transport_error);
  if (r.status == 401 || r.status == 403)
    fail("the server refused GET /v1/models ({}); check --api-key", http_error_message(r.status, r.body));
  if (!model.empty()) return model;
  DS_CHECK(r.ok(), "GET /v1/models failed ({}); pass --model", http_error_message(r.status, r.body));
  return first_model_id(r.body);
}

json make_request_body(const BenchPrompt& p, const RequestOptions& o, bool stream) {
  json body = {{"model", o.model}, {"max_tokens", p.max_tokens}, {"temperature", o.temperature}};
  body[o.type == EndpointType::Chat ? "messages" : "prompt"] = p.prompt;
  if (o.ignore_eos) body["ignore_eos"] = true;
  body["stream"] = stream;
  if (stream) body["stream_options"] = {{"include_usage", true}};
  if (o.extra_body.is_object()) body.merge_patch(o.extra_body);
  return body;
}

boost::asio::awaitable<RequestRecord> run_streaming_request(HttpClient& client, const RequestOptions& o,
                                                            const BenchPrompt& p, Clock::time_point t0) {
  RequestRecord rec;
  const std::string body = make_request_body(p, o, /*stream=*/true).dump();
  HttpRequest req{"POST", o.path, body, o.api_key};
  SseParser sse;
  std::optional<Usage> usage;
  std::string stream_error;
  bool done = false;
  int64_t chunks = 0;
  Clock::time_point last;
  const Clock::time_point start = Clock::now();
  auto on_event = [&](const SseEvent& ev) {
    const Clock::time_point now = Clock::now();
    if (done || !stream_error.empty()) return;
    StreamChunk c = parse_stream_chunk(ev.data, o.type);
    if (c.error.empty() && ev.event == "error") c.error = ev.data;
    if (!c.error.empty()) {
      stream_error = c.error;
      return;
    }
    if (c.done) {
      done = true;
      return;
    }
    if (c.usage) usage = c.usage;
    if (!c.has_content) return;
    if (chunks == 0)
      rec.ttft_s = seconds(now - start);
    else
      rec.itl_s.push_back(seconds(now - last));
    last = now;
    ++chunks;
    rec.generated_text += c.text;
  };
  BodySink sink = [&](std::string_view bytes) { sse.feed(bytes, on_event); };
  HttpResult res = co_await client.request(std::move(req), std::move(sink));
  sse.finish(on_event);
  rec.start_s = seconds(start - t0);
  rec.latency_s = seconds(Clock::now() - start);
  rec.prompt_len = usage && usage->prompt_tokens >= 0 ? usage->prompt_tokens : p.prompt_len;
  rec.output_len = usage && usage->completion_tokens >= 0 ? usage->completion_tokens : chunks;
  if (!res.transport_error.empty())
    rec.error = res.transport_error;
  else if (!res.ok())
    rec.error = http_error_message(res.status, res.body);
  else if (!stream_error.empty())
    rec.error = "error in the stream: " + stream_error;
  else if (chunks == 0)
    rec.error = "the response carried no generated tokens (is this an SSE stream?)";
  rec.success = rec.error.empty();
  co_return rec;
}

}  // namespace ds::bench
