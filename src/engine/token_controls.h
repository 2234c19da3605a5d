// The engine's per-request token masks (docs/STRUCTURED_OUTPUT.md): the request's grammar matcher,
// allowed_token_ids, bad_words and min_tokens folded into one allowed-token bitset per step, and the
// worker thread that fills a step's masks while the backend runs the forward. Step thread only,
// except fill(), which the worker runs between MaskWorker::run and MaskWorker::wait (the step thread
// does not touch the request meanwhile).
#pragma once
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/engine.h"
#include "grammar/matcher.h"
#include "grammar/token_index.h"

namespace ds {

class Tokenizer;

// The matcher's view of a tokenizer: ordinary ids by their bytes, the special range by name; ids of
// the model's vocabulary beyond the tokenizer's are never allowed.
std::shared_ptr<const TokenIndex> make_token_index(const Tokenizer& tok, int model_vocab);
// Computes the node masks every JSON schema shares (strings, numbers, any value) into the index's
// cache, so that the first structured request does not pay for them (the engine runs it in the
// background at start).
void warm_token_masks(const TokenIndex& index);

class TokenControls {
 public:
  // Null when the request needs no mask. stop_ids: the ids that end the request (its stop_token_ids
  // and, unless ignore_eos, the EOS ids). index: needed when the request has a grammar.
  static std::unique_ptr<TokenControls> make(const GenerationRequest& req, std::vector<int32_t> stop_ids, int vocab,
                                             std::shared_ptr<const TokenIndex> index);

  // The allowed-token bitset for the request's next token ((vocab + 31) / 32 words). Never empty: when
  // nothing else is allowed the stop ids are (the request then stops).
  void fill(uint32_t* row);
  // Records a sampled token; true when the grammar is complete and nothing may follow (the request
  // is done).
  bool on_token(int32_t token);
  bool has_grammar() const { return matcher_ != nullptr; }

 private:
  int vocab_ = 0, words_ = 0;
  std::unique_ptr<GrammarMatcher> matcher_;
  std::vector<uint32_t> allowed_;  // empty: no allowed_token_ids
  std::vector<std::vector<int32_t>> bad_words_;
  std::vector<int32_t> stop_ids_;
  int min_tokens_ = 0;
  int64_t generated_ = 0;
  std::vector<int32_t> output_;    // kept only for bad_words
};

// One background thread running one job at a time: the step thread starts a step's mask job before
// Backend::execute and waits for it before it touches the requests again.
class MaskWorker {
 public:
  MaskWorker();
  ~MaskWorker();
  void run(std::function<void()> job);
  void wait();  // returns at once when no job is pending

 private:
  void loop();
  std::mutex mu_;
  std::condition_variable cv_;
  std::function<void()> job_;
  bool busy_ = false, stop_ = false;
  std::thread thread_;
};

}  // namespace ds
