// A deterministic stand-in for the engine in the server's unit tests: each request produces
// tokens from a fixed function of (prompt, seed, position) drawn from tokens whose text is plain
// ASCII, or a scripted list of text pieces; optional per-token delay; a bound on live requests
// (for 429); records what was submitted and aborted.
#pragma once
#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "server/engine_client.h"
#include "tokenizer/tokenizer.h"

namespace ds::test {

class FakeEngine : public server::EngineClient {
 public:
  using Clock = std::chrono::steady_clock;
  // Text pieces to emit for a request instead of the default tokens (empty optional: default).
  using Script = std::function<std::optional<std::vector<std::string>>(const GenerationRequest&)>;

  FakeEngine(std::shared_ptr<const Tokenizer> tok, int64_t max_model_len)
      : tok_(std::move(tok)), max_len_(max_model_len) {
    for (int id = 0; id < tok_->num_base_tokens(); ++id) {
      const std::string& b = tok_->token_bytes(id);
      bool ok = !b.empty();
      for (unsigned char c : b) ok &= (c >= 'a' && c <= 'z') || c == ' ';
      if (ok) safe_.push_back(id);
    }
  }

  // The tokens request `r` gets (what the default generator emits), up to max_tokens.
  std::vector<int32_t> expected_tokens(const GenerationRequest& r) const {
    uint64_t h = 1469598103934665603ull;
    for (int32_t t : r.prompt_tokens) h = (h ^ uint64_t(t)) * 1099511628211ull;
    std::vector<int32_t> out;
    for (int k = 0; k < r.max_tokens; ++k)
      out.push_back(safe_[(h + r.sampling.seed * 7919 + uint64_t(k) * 31) % safe_.size()]);
    return out;
  }

  SubmitStatus submit(GenerationRequest req, std::shared_ptr<server::OutputStream>* stream, std::string* why) override {
    std::lock_guard<std::mutex> lk(mu_);
    if (max_live > 0 && live_.load() >= max_live) {
      *why = "queue is full";
      return SubmitStatus::Overloaded;
    }
    submitted.push_back(req);
    auto s = std::make_shared<Stream>(this);
    s->id = req.request_id;
    auto pieces = script ? script(req) : std::nullopt;
    int np = pieces ? int(pieces->size()) : req.max_tokens;
    auto toks = expected_tokens(req);
    Clock::time_point t = Clock::now();
    for (int k = 0; k < np; ++k) {
      GenerationOutput o;
      int32_t id = pieces ? safe_[size_t(k) % safe_.size()] : toks[size_t(k)];
      o.token_ids = {id};
      o.text = pieces ? (*pieces)[size_t(k)] : tok_->decode({id});
      if (req.sampling.num_logprobs >= 0) {
        SampleResult r{id, -0.25f, {}};
        for (int j = 0; j < req.sampling.num_logprobs; ++j)
          r.top_logprobs.push_back({j == 0 ? id : safe_[size_t(j)], -0.25f - float(j)});
        o.logprobs = {r};
      }
      o.prompt_tokens = int(req.prompt_tokens.size());
      o.completion_tokens = k + 1;
      if (k + 1 == np) o.finish = pieces ? FinishReason::Stop : FinishReason::Length;
      t += delay;
      s->outs.push_back({t, std::move(o)});
    }
    live_++;
    streams_.push_back(s);
    *stream = s;
    return SubmitStatus::Ok;
  }

  void abort(const std::string& id) override {
    std::lock_guard<std::mutex> lk(mu_);
    aborted.push_back(id);
    for (auto& s : streams_)
      if (s->id == id) s->aborted = true;
  }
  EngineStats stats() const override {
    EngineStats s;
    s.running = live_.load();
    s.kv_usage = 0.25;
    s.state_usage = 0.5;
    return s;
  }
  int64_t max_model_len() const override { return max_len_; }
  int model_vocab_size() const override { return 2048; }

  std::vector<GenerationRequest> submitted_copy() {
    std::lock_guard<std::mutex> lk(mu_);
    return submitted;
  }
  std::vector<std::string> aborted_copy() {
    std::lock_guard<std::mutex> lk(mu_);
    return aborted;
  }
  int live() const { return live_.load(); }

  Script script;
  std::chrono::milliseconds delay{0};
  int max_live = 0;  // 0: unbounded
  std::vector<GenerationRequest> submitted;
  std::vector<std::string> aborted;

 private:
  struct Stream : server::OutputStream {
    explicit Stream(FakeEngine* e) : e(e) {}
    std::optional<GenerationOutput> next(std::chrono::milliseconds timeout) override {
      if (done) return std::nullopt;
      if (aborted.load()) {
        finish();
        GenerationOutput o;
        o.finish = FinishReason::Abort;
        return o;
      }
      auto& [ready, out] = outs[pos];
      auto now = Clock::now();
      if (ready > now) {
        if (ready - now > timeout) {
          std::this_thread::sleep_for(timeout);
          return std::nullopt;
        }
        std::this_thread::sleep_until(ready);
      }
      ++pos;
      if (pos == outs.size()) finish();
      return out;
    }
    void finish() {
      done = true;
      e->live_--;
    }
    FakeEngine* e;
    std::string id;
    std::vector<std::pair<Clock::time_point, GenerationOutput>> outs;
    size_t pos = 0;
    bool done = false;
    std::atomic<bool> aborted{false};
  };

  std::shared_ptr<const Tokenizer> tok_;
  int64_t max_len_;
  std::vector<int32_t> safe_;
  std::mutex mu_;
  std::atomic<int> live_{0};
  std::vector<std::shared_ptr<Stream>> streams_;
};

}  // namespace ds::test
