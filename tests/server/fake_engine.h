// A deterministic stand-in for the engine in the server's unit tests: each request produces
// tokens from a fixed function of (prompt, seed, position) drawn from tokens whose text is plain
// ASCII, or a scripted list of text pieces; optional per-token delay (a delivery thread pushes each
// output when due and notifies the stream's Notifier, as the real engine's step thread does); a
// bound on live requests (for 429); records what was submitted and aborted.
#pragma once
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
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
    deliverer_ = std::thread([this] { deliver_loop(); });
    for (int id = 0; id < tok_->num_base_tokens(); ++id) {
      const std::string& b = tok_->token_bytes(id);
      bool ok = !b.empty();
      for (unsigned char c : b) ok &= (c >= 'a' && c <= 'z') || c == ' ';
      if (ok) safe_.push_back(id);
    }
  }

  // The backend's failure (Engine::backend_failure()): "" while it can run steps.
  std::string failure() const override {
    std::lock_guard<std::mutex> lk(mu_);
    return failure_;
  }
  void set_failure(std::string why) {
    std::lock_guard<std::mutex> lk(mu_);
    failure_ = std::move(why);
  }

  ~FakeEngine() override {
    {
      std::lock_guard<std::mutex> lk(sched_mu_);
      stopping_ = true;
    }
    sched_cv_.notify_all();
    deliverer_.join();
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

  // The prompt scores request `r` gets (prompt_logprobs): prompt token i + 1 at logprob -0.5 - i / 100, its top
  // alternatives safe tokens 0, 1, ... at -0.1 - j, its rank 100 + i.
  std::vector<SampleResult> prompt_scores(const GenerationRequest& r) const {
    std::vector<SampleResult> out;
    for (size_t i = 1; i < r.prompt_tokens.size(); ++i) {
      SampleResult s{r.prompt_tokens[i], -0.5f - float(i - 1) / 100.f, {}, int32_t(100 + i)};
      for (int j = 0; j < r.prompt_logprobs; ++j) s.top_logprobs.push_back({safe_[size_t(j)], -0.1f - float(j)});
      out.push_back(s);
    }
    return out;
  }

  SubmitStatus submit(GenerationRequest req, std::shared_ptr<server::OutputStream>* stream, std::string* why) override {
    std::lock_guard<std::mutex> lk(mu_);
    if (!failure_.empty()) {  // as the engine does once its backend has failed
      *why = "the model can run no more steps: " + failure_;
      return SubmitStatus::Unavailable;
    }
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
      if (k == 0 && req.prompt_logprobs >= 0) o.prompt_logprobs = prompt_scores(req);
      o.prompt_tokens = int(req.prompt_tokens.size());
      o.cached_tokens = std::min(cached_tokens, o.prompt_tokens);
      o.completion_tokens = k + 1;
      if (k + 1 == np) o.finish = pieces ? FinishReason::Stop : FinishReason::Length;
      t += delay;
      schedule(s, t, std::move(o));
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
      if (s->id == id) s->push(std::nullopt);
  }
  EngineStats stats() const override {
    EngineStats s;
    s.running = live_.load();
    s.kv_usage = 0.25;
    s.state_usage = 0.5;
    s.prefix_cache_queries = 100;
    s.prefix_cache_hits = 40;
    s.snapshots_used = 3;
    s.snapshots_capacity = 12;
    s.snapshot_evictions = 7;
    return s;
  }
  // As the engine's: refused while requests are live (counted as running), Disabled when prefix_caching is off.
  PrefixCacheResetResult reset_prefix_cache(std::chrono::milliseconds) override {
    PrefixCacheResetResult r;
    if (!prefix_caching) {
      r.status = PrefixCacheResetResult::Status::Disabled;
      r.message = "prefix caching is off: there is nothing to flush";
    } else if (int n = live_.load(); n > 0) {
      r.status = PrefixCacheResetResult::Status::Busy;
      r.running = n;
      r.message = "cannot reset the prefix cache while " + std::to_string(n) + " request(s) are in progress";
    } else {
      r.status = PrefixCacheResetResult::Status::Done;
      r.message = "prefix cache reset";
      resets++;
    }
    return r;
  }
  int64_t max_model_len() const override { return max_len_; }
  std::string context_limit_note() const override { return limit_note; }
  int model_vocab_size() const override { return 2048; }

  std::string limit_note;  // what context_limit_note() says (set before requests)

  std::vector<GenerationRequest> submitted_copy() {
    std::lock_guard<std::mutex> lk(mu_);
    return submitted;
  }
  std::vector<std::string> aborted_copy() {
    std::lock_guard<std::mutex> lk(mu_);
    return aborted;
  }
  int live() const { return live_.load(); }
  // Outputs pushed to streams so far (each one notifies its stream's Notifier once).
  int deliveries() const { return deliveries_.load(); }
  // The Notifier each submitted stream reports to (null until the reader sets one).
  std::vector<std::shared_ptr<Notifier>> notifiers() {
    std::lock_guard<std::mutex> lk(mu_);
    std::vector<std::shared_ptr<Notifier>> out;
    for (auto& s : streams_) {
      std::lock_guard<std::mutex> slk(s->mu);
      out.push_back(s->notifier);
    }
    return out;
  }

  Script script;
  std::chrono::milliseconds delay{0};
  int max_live = 0;       // 0: unbounded
  int cached_tokens = 0;  // reported as prompt tokens served from a prefix cache
  std::atomic<bool> prefix_caching{true};  // reset_prefix_cache answers Disabled when false
  std::atomic<int> resets{0};  // prefix cache resets done
  std::vector<GenerationRequest> submitted;
  std::vector<std::string> aborted;

 private:
  struct Stream : server::OutputStream {
    explicit Stream(FakeEngine* e) : e(e) {}
    std::optional<GenerationOutput> try_next() override {
      std::lock_guard<std::mutex> lk(mu);
      if (done) return std::nullopt;
      if (aborted) {
        finish();
        GenerationOutput o;
        o.finish = FinishReason::Abort;
        return o;
      }
      if (q.empty()) return std::nullopt;
      GenerationOutput out = std::move(q.front());
      q.pop_front();
      if (out.finished()) finish();
      return out;
    }
    void set_notifier(std::shared_ptr<Notifier> n) override {
      bool news = false;
      {
        std::lock_guard<std::mutex> lk(mu);
        notifier = n;
        news = !q.empty() || aborted;
      }
      if (news && n) n->notify();
    }
    // The engine side: queue an output (or the abort) and wake the reader.
    void push(std::optional<GenerationOutput> out) {
      std::shared_ptr<Notifier> n;
      {
        std::lock_guard<std::mutex> lk(mu);
        if (out)
          q.push_back(std::move(*out));
        else
          aborted = true;
        n = notifier;
      }
      if (out) e->deliveries_++;
      if (n) n->notify();
    }
    void finish() {
      done = true;
      e->live_--;
    }
    FakeEngine* e;
    std::string id;
    std::mutex mu;
    std::deque<GenerationOutput> q;
    std::shared_ptr<Notifier> notifier;
    bool done = false, aborted = false;
  };

  // Outputs due now are pushed at once; later ones by the delivery thread when due.
  void schedule(const std::shared_ptr<Stream>& s, Clock::time_point t, GenerationOutput o) {
    if (t <= Clock::now()) return s->push(std::move(o));
    {
      std::lock_guard<std::mutex> lk(sched_mu_);
      due_.emplace(t, std::make_pair(s, std::move(o)));
    }
    sched_cv_.notify_all();
  }
  void deliver_loop() {
    std::unique_lock<std::mutex> lk(sched_mu_);
    while (!stopping_) {
      if (due_.empty()) {
        sched_cv_.wait(lk);
        continue;
      }
      auto it = due_.begin();
      if (it->first > Clock::now()) {
        sched_cv_.wait_until(lk, it->first);
        continue;
      }
      auto [stream, out] = std::move(it->second);
      due_.erase(it);
      lk.unlock();
      stream->push(std::move(out));
      lk.lock();
    }
  }

  std::shared_ptr<const Tokenizer> tok_;
  int64_t max_len_;
  std::vector<int32_t> safe_;
  mutable std::mutex mu_;
  std::string failure_;  // guarded by mu_
  std::atomic<int> live_{0};
  std::vector<std::shared_ptr<Stream>> streams_;
  std::atomic<int> deliveries_{0};
  std::mutex sched_mu_;
  std::condition_variable sched_cv_;
  std::multimap<Clock::time_point, std::pair<std::shared_ptr<Stream>, GenerationOutput>> due_;
  bool stopping_ = false;
  std::thread deliverer_;  // last: started after the rest exists
};

}  // namespace ds::test
