// OpenAI request bodies through the server's endpoint handlers (the functions the HTTP router
// calls, without HTTP): /v1/chat/completions, /v1/completions, /v1/responses, /tokenize and
// /detokenize. The engine is a stub that refuses every submission (429), so a body goes through
// everything before generation: JSON parsing, field validation, the output constraint's grammar
// compilation, the chat template, tokenization and the length check.
// Property: a handler either answers or throws ApiError with a 4xx status; anything else (a 500
// with a library's text, a crash, a sanitizer report) is a finding.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz/fuzz_common.h"
#include "server/api_error.h"
#include "server/metrics.h"
#include "server/openai_response.h"
#include "server/serving.h"

namespace {

using namespace ds;
using namespace ds::server;

class RefusingEngine : public EngineClient {
 public:
  explicit RefusingEngine(int vocab) : vocab_(vocab) {}
  SubmitStatus submit(GenerationRequest, std::shared_ptr<OutputStream>*, std::string* why) override {
    *why = "fuzzing";
    return SubmitStatus::Overloaded;
  }
  void abort(const std::string&) override {}
  EngineStats stats() const override { return {}; }
  int64_t max_model_len() const override { return 4096; }
  int model_vocab_size() const override { return vocab_; }

 private:
  int vocab_;
};

class NullWriter : public ResponseWriter {
 public:
  void send(HttpResponse) override {}
  void begin_stream(int, const std::string&, Headers) override {}
  void write(std::string) override {}
  void end_stream() override {}
  bool client_gone() const override { return false; }
  void on_gone(std::function<void()>) override {}  // never gone
};

using Handler = void (*)(const ServingContext&, const HttpRequest&, ResponseWriter&);

void call(const char* endpoint, Handler handler, const ServingContext& ctx, const HttpRequest& req) {
  NullWriter w;
  try {
    handler(ctx, req, w);
  } catch (const ApiError& e) {
    if (e.status < 400 || e.status >= 500)
      fuzz::finding(std::string(endpoint) + " answered " + std::to_string(e.status) + ": " + e.what());
  } catch (const std::exception& e) {
    fuzz::finding(std::string(endpoint) + " answered 500 (an exception other than ApiError): " + e.what());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ds::server::seed_request_ids(size);  // the same input takes the same path on every run
  static auto tok = fuzz::tiny_tokenizer();
  static RefusingEngine engine(tok->vocab_size());
  static ServerMetrics metrics;
  static const ServingContext ctx = [] {
    ServingContext c;
    c.engine = &engine;
    c.tokenizer = tok;
    c.metrics = &metrics;
    c.model_names = {"tiny"};
    c.model_root = "tiny";
    return c;
  }();
  HttpRequest req;
  req.method = "POST";
  req.body.assign(reinterpret_cast<const char*>(data), size);
  req.received = std::chrono::steady_clock::now();
  call("/v1/chat/completions", serve_chat_completions, ctx, req);
  call("/v1/completions", serve_completions, ctx, req);
  call("/v1/responses", serve_responses, ctx, req);
  call("/tokenize", serve_tokenize, ctx, req);
  call("/detokenize", serve_detokenize, ctx, req);
  return 0;
}
