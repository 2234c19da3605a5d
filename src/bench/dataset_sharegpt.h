// The ShareGPT workload, sampled as vLLM's `bench serve --dataset-name sharegpt` samples it.
//  - The file is a JSON array of objects; an object's "conversations" is an array of turns
//    {"from": "human" | "gpt" | ..., "value": text}. Objects with fewer than 2 turns (or none) are dropped.
//  - The rest are shuffled with --seed exactly as Python's random.seed(seed); random.shuffle(data) does
//    (PyRandom below is CPython's Mersenne Twister), so a seed picks the same conversations as vLLM.
//  - In that order, turn 0 is the prompt and turn 1's token count the output length (or a fixed
//    --sharegpt-output-len). A pair is skipped when the prompt has < 4 tokens, the output (counted from the
//    data) < 4, the prompt > 1024 or prompt + output > 2048 (vLLM's is_valid_sequence).
//  - Fewer valid pairs than --num-prompts: vLLM's oversampling (random.seed(seed); random.choice) fills up.
// Token counts come from a CountTokens function: deltaserve's tokenizer (--tokenizer DIR) or the server's
// POST /tokenize; both are called before the run, never during it.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "bench/dataset.h"
#include "bench/http_client.h"
#include "bench/openai_api.h"

namespace ds::bench {

// CPython's `random` module for the calls the samplers make: seed(int), getrandbits(k <= 32), _randbelow,
// shuffle, choice. Same seed, same sequence as Python 3.
class PyRandom {
 public:
  explicit PyRandom(uint64_t seed) { this->seed(seed); }
  void seed(uint64_t seed);  // random.seed(seed) for a non-negative int
  uint32_t genrand_uint32();
  uint32_t getrandbits(int k);                          // 1 <= k <= 32
  uint64_t randbelow(uint64_t n);                       // uniform in [0, n), n in [1, 2^32]
  template <class T> void shuffle(std::vector<T>& v) {  // random.shuffle
    for (size_t i = v.size(); i-- > 1;) std::swap(v[i], v[static_cast<size_t>(randbelow(i + 1))]);
  }

 private:
  uint32_t mt_[624];
  int index_ = 624;
};

// One conversation's first two turns.
struct ShareGptPair {
  std::string prompt, completion;
};

// Reads a ShareGPT file (streamed: the 670 MB ShareGPT_V3 file is never held as a JSON tree) and returns
// the conversations with at least 2 turns, in file order. Throws ds::Error naming the file when it is not
// such an array (not JSON, not an array, an entry not an object, "conversations" not an array, one of the
// first two turns without a string "value").
std::vector<ShareGptPair> load_sharegpt_pairs(const std::string& path);

// Token counts of texts, in order; called with batches, so a server counter can have several in flight.
using CountTokens = std::function<std::vector<int64_t>(const std::vector<std::string>& texts)>;

struct ShareGptOptions {
  int64_t output_len = 0;  // > 0: every request's max_tokens (--sharegpt-output-len); 0: turn 1's length
  bool shuffle = true;     // false: file order (vLLM's --disable-shuffle)
  bool oversample = true;  // false: fewer requests than asked when valid pairs run out (--no-oversample)
};

// vLLM's is_valid_sequence with its defaults (4, 1024, 2048); fixed_output skips the output minimum.
bool sharegpt_pair_valid(int64_t prompt_len, int64_t output_len, bool fixed_output);

// Shuffles `pairs` with `seed`, counts tokens in that order and keeps valid pairs until num_prompts are
// found, then oversamples. Completions get the text as "prompt" (and prompt_len = its count); chat gets it
// as one user message. `source` names the file in errors. Throws ds::Error when no valid pair remains.
std::vector<BenchPrompt> sample_sharegpt(std::vector<ShareGptPair> pairs, const ShareGptOptions& o, int64_t num_prompts,
                                         EndpointType type, uint64_t seed, const CountTokens& count,
                                         const std::string& source);

// Counts with deltaserve's tokenizer loaded from `dir` (tiktoken.model + tokenizer_config.json), as the
// server counts a completions prompt.
CountTokens tokenizer_counter(const std::string& dir);

// Counts with POST /tokenize {"model", "prompt"} -> {"count", "tokens"} (vLLM's and deltaserve's shape),
// up to `parallel` requests in flight. Throws ds::Error when the server does not answer one.
CountTokens server_counter(const ServerAddress& addr, const std::string& model, const std::string& api_key,
                           double timeout_s, int64_t parallel = 16);

}  // namespace ds::bench
