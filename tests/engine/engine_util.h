// Helpers for engine tests: run requests through an Engine and collect their streams.
#pragma once
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace ds::test {

struct Collected {
  std::vector<int32_t> tokens;
  std::string text;
  std::vector<std::string> deltas;
  std::vector<SampleResult> logprobs;
  std::vector<SampleResult> prompt_logprobs;  // GenerationRequest::prompt_logprobs (the first output's)
  FinishReason finish = FinishReason::None;
  std::string stop_reason, error;
  int prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;
  int outputs = 0;
};

inline Collected collect(RequestStream& s, int timeout_s = 120) {
  Collected c;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  while (std::chrono::steady_clock::now() < deadline) {
    auto o = s.next(std::chrono::milliseconds(100));
    if (!o) continue;
    ++c.outputs;
    c.tokens.insert(c.tokens.end(), o->token_ids.begin(), o->token_ids.end());
    c.text += o->text;
    c.deltas.push_back(o->text);
    c.logprobs.insert(c.logprobs.end(), o->logprobs.begin(), o->logprobs.end());
    if (!o->prompt_logprobs.empty()) {
      EXPECT_TRUE(c.prompt_logprobs.empty()) << "prompt logprobs in more than one output";
      c.prompt_logprobs = o->prompt_logprobs;
    }
    c.prompt_tokens = o->prompt_tokens;
    c.cached_tokens = o->cached_tokens;
    c.completion_tokens = o->completion_tokens;
    if (o->finished()) {
      c.finish = o->finish;
      c.stop_reason = o->stop_reason;
      c.error = o->error;
      return c;
    }
  }
  ADD_FAILURE() << "stream " << s.id << " did not finish in " << timeout_s << " s";
  return c;
}

inline std::shared_ptr<RequestStream> submit_ok(Engine& e, GenerationRequest r) {
  std::shared_ptr<RequestStream> s;
  std::string why;
  SubmitStatus st = e.submit(std::move(r), &s, &why);
  EXPECT_EQ(st, SubmitStatus::Ok) << why;
  return s;
}

inline Collected run_one(Engine& e, GenerationRequest r) {
  auto s = submit_ok(e, std::move(r));
  if (!s) return {};
  return collect(*s);
}

}  // namespace ds::test
