// Benchmark workloads for prefix caching (docs/PREFIX_CACHE.md, docs/BENCH.md):
//  - shared-prefix: `groups` groups of `prompts_per_group` requests; the requests of a group share a
//    random prefix of `prefix_len` tokens and each adds its own random suffix of `suffix_len` (SGLang's
//    generated-shared-prefix workload); the requests are shuffled with the seed.
//  - multi-turn: `conversations` conversations of `turns` turns; turn t sends the whole conversation so
//    far: every earlier question and a stand-in answer of `answer_len` random tokens (the length asked
//    of the model), then a new question of `question_len` tokens (the first one `first_len`). Sent turn by turn (every first turn,
//    then every second...), so turn t usually finds turn t - 1's prompt computed.
// Completions prompts are id arrays (exact lengths); chat prompts are words standing for the ids (a
// messages array for multi-turn), sharing prefixes the same way.
#pragma once
#include <cstdint>
#include <vector>

#include "bench/dataset.h"

namespace ds::bench {

struct SharedPrefixOptions {
  int64_t groups = 16;
  int64_t prompts_per_group = 32;
  int64_t prefix_len = 4000;
  int64_t suffix_len = 200;
  int64_t output_len = 200;
  int64_t vocab_size = 2048;
};
std::vector<BenchPrompt> make_shared_prefix_dataset(const SharedPrefixOptions& o, EndpointType type, uint64_t seed);

struct MultiTurnOptions {
  int64_t conversations = 16;
  int64_t turns = 6;
  int64_t question_len = 200;
  int64_t first_len = 0;     // the first question's length (0: question_len), e.g. a long document
  int64_t answer_len = 200;  // max_tokens of every turn, and the stand-in answer's length
  int64_t vocab_size = 2048;
};
std::vector<BenchPrompt> make_multi_turn_dataset(const MultiTurnOptions& o, EndpointType type, uint64_t seed);

}  // namespace ds::bench
