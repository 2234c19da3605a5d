// The engine's host time per step, with a backend that costs nothing: the scheduler, the step plan, the
// outputs (detokenization with the real Kimi tokenizer when ../shared has it, else the tiny fixture's)
// and the streams, for N requests decoding together. On the GPU this time is spent between two forwards
// (the engine loop is synchronous: schedule, execute, update, outputs), so it adds to every TPOT; this
// measures it alone, one core for the engine thread. docs/PERF.md records the numbers.
//   bench_engine [--tokenizer DIR] [--concurrency N[,N...]] [--tokens T] [--prompt P] [--reps R]
//                [--prefix-caching 0|1]
// (a long --prompt, e.g. 1048000: the per-step cost that grows with the context; the server caches prefixes
// by default, the bench not unless asked)
// Each concurrency runs twice: outputs pushed on the step thread, and on their own thread (the default).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "engine/engine.h"
#include "model/backend.h"
#include "tokenizer/tokenizer.h"

namespace {

using Clock = std::chrono::steady_clock;

// Samples token 100 + (row * 7 + step) % span for every row (ordinary tokens of the tokenizer); no forward.
// The vocabulary and limits of the 48B model's serving configuration.
class NullBackend : public ds::Backend {
 public:
  NullBackend(int vocab, int span) : span_(span) {
    cfg_.vocab_size = vocab;
    cfg_.max_position_embeddings = 1 << 20;
  }
  const ds::ModelConfig& config() const override { return cfg_; }
  ds::BackendLimits limits() const override {
    ds::BackendLimits l;
    l.max_tokens_per_step = 8192;
    l.max_seqs_per_step = 256;
    l.max_logit_rows = 256;
    l.num_state_slots = 256;
    l.num_blocks = 65536;
    l.block_size = 16;
    return l;
  }
  std::string device_name() const override { return "null"; }
  ds::StepResult execute(const ds::StepPlan& plan) override {
    ds::check_sampling_rows(plan);
    ds::StepResult r;
    r.samples.resize(plan.sampling.size());
    for (size_t i = 0; i < r.samples.size(); ++i) r.samples[i].token = int32_t(100 + (i * 7 + steps_) % uint64_t(span_));
    ++steps_;
    return r;
  }

 private:
  ds::ModelConfig cfg_;
  int span_;
  uint64_t steps_ = 0;
};

// One wave: n requests of `tokens` tokens submitted together; the engine's steps per second while they run.
double wave_us_per_step(ds::Engine& e, int span, int n, int tokens, int prompt, int wave) {
  std::vector<std::shared_ptr<ds::RequestStream>> streams(static_cast<size_t>(n));
  const int64_t steps0 = e.stats().steps;
  for (int i = 0; i < n; ++i) {
    ds::GenerationRequest r;
    r.request_id = "w" + std::to_string(wave) + "r" + std::to_string(i);
    r.prompt_tokens.assign(size_t(prompt), 0);
    for (int j = 0; j < prompt; ++j) r.prompt_tokens[size_t(j)] = int32_t(100 + (i * 131 + j * 17) % span);
    r.max_tokens = tokens;
    r.ignore_eos = true;
    r.detokenize = true;
    r.sampling.temperature = 0.f;
    std::string why;
    if (e.submit(std::move(r), &streams[size_t(i)], &why) != ds::SubmitStatus::Ok) {
      std::fprintf(stderr, "submit failed: %s\n", why.c_str());
      std::exit(1);
    }
  }
  const auto t0 = Clock::now();
  std::vector<std::thread> readers;  // one per request, like the server's workers
  for (int i = 0; i < n; ++i)
    readers.emplace_back([s = streams[size_t(i)]] {
      for (;;) {
        auto o = s->next(std::chrono::milliseconds(60000));
        if (!o || o->finished()) return;
      }
    });
  for (auto& t : readers) t.join();
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  const int64_t steps = e.stats().steps - steps0;
  return steps > 0 ? secs * 1e6 / double(steps) : 0;
}

// Median host time per step over `reps` waves, after a short warm-up wave (the token-mask warm-up of a
// new engine runs in the background for its first seconds).
double engine_us_per_step(const std::shared_ptr<const ds::Tokenizer>& tok, int vocab, int n, int tokens, int prompt,
                          int reps, bool on_thread, bool prefix_caching) {
  const int span = std::min(20000, tok->vocab_size() - 400);
  ds::EngineOptions eo;
  eo.max_num_seqs = std::max(n, 1);
  eo.max_num_batched_tokens = 8192;
  eo.enable_prefix_caching = prefix_caching;
  eo.deliver_on_thread = on_thread;
  ds::Engine e(std::make_unique<NullBackend>(vocab, span), tok, eo);
  wave_us_per_step(e, span, n, 20, prompt, 0);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  std::vector<double> v;
  for (int r = 0; r < reps; ++r) v.push_back(wave_us_per_step(e, span, n, tokens, prompt, r + 1));
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = std::string(DS_SOURCE_DIR) + "/../shared/golden/kimi-tokenizer";
  if (!std::filesystem::exists(dir + "/tiktoken.model")) dir = std::string(DS_SOURCE_DIR) + "/tests/fixtures/tiny/tokenizer";
  std::vector<int> conc = {1, 16, 100};
  int tokens = 500, prompt = 64, reps = 3;
  bool prefix_caching = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--tokenizer") dir = v;
    else if (a == "--tokens") tokens = std::stoi(v);
    else if (a == "--prompt") prompt = std::stoi(v);
    else if (a == "--reps") reps = std::stoi(v);
    else if (a == "--prefix-caching") prefix_caching = v == "1";
    else if (a == "--concurrency") {
      conc.clear();
      for (size_t p = 0; p < v.size();) {
        const size_t q = v.find(',', p);
        conc.push_back(std::stoi(v.substr(p, q - p)));
        p = q == std::string::npos ? v.size() : q + 1;
      }
    } else {
      std::fprintf(stderr, "unknown flag %s\n", a.c_str());
      return 2;
    }
  }
  spdlog::set_level(spdlog::level::warn);
  std::shared_ptr<const ds::Tokenizer> tok = ds::Tokenizer::from_dir(dir);
  const int vocab = std::max(163840, tok->vocab_size());
  std::printf("engine host time per step (null backend, vocab %d, tokenizer %s, %d tokens out, prompt %d, prefix "
              "caching %s)\n",
              vocab, dir.c_str(), tokens, prompt, prefix_caching ? "on" : "off");
  std::printf("| concurrency | delivery | us per step (median of %d waves) | us per token |\n| --- | --- | --- | --- |\n",
              reps);
  for (int n : conc)
    for (bool on_thread : {false, true}) {
      const double med = engine_us_per_step(tok, vocab, n, tokens, prompt, reps, on_thread, prefix_caching);
      std::printf("| %d | %s | %.1f | %.2f |\n", n, on_thread ? "own thread" : "step thread", med, med / n);
      std::fflush(stdout);
    }
  return 0;
}
