// Benchmark workloads: the list of prompts a run sends, built before any request goes out.
//  - random: prompts of random token ids (completions, sent as an id array so the length is exact) or of
//    random common English words (chat, where ids cannot be sent; the server's usage gives the length);
//    lengths uniform in [len * (1 - r), len * (1 + r)] as vLLM's --random-range-ratio.
//  - jsonl: one JSON object per line with "prompt" (string or id array) or "messages" (chat), and an
//    optional "max_tokens" / "output_len"; lines are used in order, cycling when more prompts are asked.
//  - fixed: the same text every time.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/openai_api.h"

namespace ds::bench {

struct BenchPrompt {
  nlohmann::json prompt;   // completions: string or id array; chat: a messages array
  int64_t prompt_len = 0;  // known input token count (id prompts), 0 when only the server can tell
  int64_t max_tokens = 0;  // output length asked for
};

struct RandomDatasetOptions {
  int64_t input_len = 1024;
  int64_t output_len = 128;
  double range_ratio = 0.0;   // in [0, 1)
  int64_t vocab_size = 2048;  // ids are drawn from [0, vocab_size)
};

std::vector<BenchPrompt> make_random_dataset(const RandomDatasetOptions& o, int64_t num_prompts, EndpointType type,
                                             uint64_t seed);

// default_output_len: max_tokens for lines that do not give one. num_prompts 0: every line once.
std::vector<BenchPrompt> load_jsonl_dataset(const std::string& path, int64_t num_prompts, EndpointType type,
                                            int64_t default_output_len);

// A chat prompt of one user message holding `text`.
nlohmann::json user_messages(std::string text);

// Text of common English words standing for ids (word ids[i] % the word count): chat prompts that share
// a prefix exactly where the id sequences do.
std::string words_text(const std::vector<int64_t>& ids);

std::vector<BenchPrompt> make_fixed_dataset(const std::string& text, int64_t num_prompts, EndpointType type,
                                            int64_t output_len);

}  // namespace ds::bench
