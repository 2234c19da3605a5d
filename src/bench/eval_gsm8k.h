// `deltaserve eval gsm8k`: few-shot GSM8K against any OpenAI-compatible server. Greedy (temperature 0),
// non-streamed requests, stop at the next "Question:", `parallel` requests in flight; prints the summary
// and writes one JSON line per question when asked.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "bench/gsm8k.h"

namespace ds::bench {

struct Gsm8kOptions {
  std::string base_url = "http://127.0.0.1:8000";
  std::string model;  // "" = the server's first model
  std::string api_key;
  std::string data_dir = "data/gsm8k";
  int64_t num_shots = 5;      // from the train split, in file order
  int64_t num_questions = 0;  // from the test split, in file order; 0: all
  int64_t max_tokens = 256;
  int64_t parallel = 16;
  bool chat = false;   // /v1/chat/completions with the shots as turns
  std::string output;  // per-question JSONL
  double timeout_s = 600;
  bool progress = true;
};

struct Gsm8kResult {
  GsmSummary summary;
  std::vector<GsmQuestionResult> questions;
};

// Throws ds::Error when the data is missing, the server cannot be reached, or every request failed.
Gsm8kResult run_gsm8k(const Gsm8kOptions& o);

}  // namespace ds::bench
