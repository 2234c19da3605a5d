#include "server/engine_client.h"

namespace ds::server {
namespace {

class EngineStream : public OutputStream {
 public:
  explicit EngineStream(std::shared_ptr<RequestStream> s) : s_(std::move(s)) {}
  std::optional<GenerationOutput> try_next() override { return s_->try_next(); }
  void set_notifier(std::shared_ptr<Notifier> n) override { s_->set_notifier(std::move(n)); }

 private:
  std::shared_ptr<RequestStream> s_;
};

class EngineAdapter : public EngineClient {
 public:
  explicit EngineAdapter(Engine& e) : e_(e) {}
  SubmitStatus submit(GenerationRequest req, std::shared_ptr<OutputStream>* stream, std::string* why) override {
    std::shared_ptr<RequestStream> rs;
    SubmitStatus st = e_.submit(std::move(req), &rs, why);
    if (st == SubmitStatus::Ok) *stream = std::make_shared<EngineStream>(std::move(rs));
    return st;
  }
  void abort(const std::string& request_id) override { e_.abort(request_id); }
  EngineStats stats() const override { return e_.stats(); }
  int64_t max_model_len() const override { return e_.max_model_len(); }
  std::string context_limit_note() const override { return ds::context_limit_note(e_.max_model_len_info()); }
  int model_vocab_size() const override { return e_.model_config().vocab_size; }
  std::string failure() const override { return e_.backend_failure(); }
  PrefixCacheResetResult reset_prefix_cache(std::chrono::milliseconds timeout) override {
    return e_.reset_prefix_cache(timeout);
  }

 private:
  Engine& e_;
};

}  // namespace

std::unique_ptr<EngineClient> make_engine_client(Engine& engine) { return std::make_unique<EngineAdapter>(engine); }

}  // namespace ds::server
