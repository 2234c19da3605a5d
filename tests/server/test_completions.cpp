// /v1/completions over the fake engine: prompt forms, echo, n, batches, logprobs, streaming.
#include <gtest/gtest.h>

#include "server/openai_response.h"
#include "server_fixture.h"

namespace ds::test {
namespace {

std::string decode_all(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += tok.decode({id});
  return s;
}

TEST(Completions, TextPromptNonStreaming) {
  ServerFixture f;
  auto r = f.post("/v1/completions", {{"model", "tiny"}, {"prompt", "hello world"}, {"max_tokens", 5}, {"seed", 3}});
  ASSERT_EQ(r.status, 200) << r.body;
  json j = json::parse(r.body);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["model"], "tiny");
  EXPECT_EQ(j["id"].get<std::string>().rfind("cmpl-", 0), 0u);
  auto sub = f.engine.submitted_copy();
  ASSERT_EQ(sub.size(), 1u);
  EXPECT_EQ(sub[0].prompt_tokens, f.tok->encode("hello world"));
  EXPECT_EQ(sub[0].max_tokens, 5);
  EXPECT_EQ(sub[0].sampling.seed, 3u);
  EXPECT_TRUE(sub[0].skip_special_tokens);
  ASSERT_EQ(j["choices"].size(), 1u);
  EXPECT_EQ(j["choices"][0]["text"], decode_all(*f.tok, f.engine.expected_tokens(sub[0])));
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(j["choices"][0]["logprobs"].is_null());
  int p = int(sub[0].prompt_tokens.size());
  EXPECT_EQ(j["usage"], json({{"prompt_tokens", p},
                              {"completion_tokens", 5},
                              {"total_tokens", p + 5},
                              {"prompt_tokens_details", {{"cached_tokens", 0}}}}));
}

TEST(Completions, DefaultsAndSamplingFieldsReachTheEngine) {
  ServerFixture f;
  auto r = f.post("/v1/completions", {{"prompt", "x"},
                                      {"temperature", 0.5},
                                      {"top_p", 0.9},
                                      {"top_k", 7},
                                      {"min_p", 0.05},
                                      {"presence_penalty", 0.5},
                                      {"frequency_penalty", -0.5},
                                      {"repetition_penalty", 1.1},
                                      {"stop", "abc"},
                                      {"stop_token_ids", {5, 6}},
                                      {"ignore_eos", true},
                                      {"include_stop_str_in_output", true},
                                      {"user", "u1"}});
  ASSERT_EQ(r.status, 200) << r.body;
  auto s = f.engine.submitted_copy().at(0);
  EXPECT_EQ(s.max_tokens, 16);  // OpenAI's default for completions
  EXPECT_FLOAT_EQ(s.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(s.sampling.top_p, 0.9f);
  EXPECT_EQ(s.sampling.top_k, 7);
  EXPECT_FLOAT_EQ(s.sampling.min_p, 0.05f);
  EXPECT_FLOAT_EQ(s.sampling.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(s.sampling.frequency_penalty, -0.5f);
  EXPECT_FLOAT_EQ(s.sampling.repetition_penalty, 1.1f);
  EXPECT_EQ(s.stop, std::vector<std::string>{"abc"});
  EXPECT_EQ(s.stop_token_ids, (std::vector<int32_t>{5, 6}));
  EXPECT_TRUE(s.ignore_eos);
  EXPECT_TRUE(s.include_stop_str_in_output);
  EXPECT_EQ(s.sampling.num_logprobs, -1);
}

TEST(Completions, TokenIdPromptsBatchAndN) {
  ServerFixture f;
  json body = {{"prompt", {{1, 2, 3}, {4, 5}}}, {"n", 2}, {"max_tokens", 3}, {"seed", 100}};
  auto r = f.post("/v1/completions", body);
  ASSERT_EQ(r.status, 200) << r.body;
  json j = json::parse(r.body);
  auto sub = f.engine.submitted_copy();
  ASSERT_EQ(sub.size(), 4u);
  ASSERT_EQ(j["choices"].size(), 4u);
  // Prompt-major: choices 0,1 for the first prompt with seeds 100, 101; 2,3 for the second.
  EXPECT_EQ(sub[0].prompt_tokens, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(sub[1].prompt_tokens, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(sub[2].prompt_tokens, (std::vector<int32_t>{4, 5}));
  EXPECT_EQ(sub[0].sampling.seed, 100u);
  EXPECT_EQ(sub[1].sampling.seed, 101u);
  EXPECT_EQ(sub[2].sampling.seed, 100u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(j["choices"][i]["index"], i);
    // Choices are matched to their own engine request.
    auto it = std::find_if(sub.begin(), sub.end(), [&](const GenerationRequest& g) {
      return g.request_id == sub[0].request_id.substr(0, sub[0].request_id.rfind('-')) + "-" + std::to_string(i);
    });
    ASSERT_NE(it, sub.end());
    EXPECT_EQ(j["choices"][i]["text"], decode_all(*f.tok, f.engine.expected_tokens(*it)));
  }
  EXPECT_NE(j["choices"][0]["text"], j["choices"][1]["text"]);  // different seeds
  // Prompt tokens count once per prompt, completion tokens per choice.
  EXPECT_EQ(j["usage"]["prompt_tokens"], 5);
  EXPECT_EQ(j["usage"]["completion_tokens"], 12);
}

TEST(Completions, EchoPrependsThePrompt) {
  ServerFixture f;
  auto r = f.post("/v1/completions", {{"prompt", "say hi"}, {"echo", true}, {"max_tokens", 2}});
  ASSERT_EQ(r.status, 200) << r.body;
  std::string text = json::parse(r.body)["choices"][0]["text"];
  EXPECT_EQ(text.rfind("say hi", 0), 0u);
  EXPECT_GT(text.size(), 6u);
  // Token-id prompts echo their decoded text.
  auto ids = f.tok->encode("abc def");
  r = f.post("/v1/completions", {{"prompt", ids}, {"echo", true}, {"max_tokens", 1}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["choices"][0]["text"].get<std::string>().rfind("abc def", 0), 0u);
}

TEST(Completions, LegacyLogprobsFormat) {
  ServerFixture f;
  auto r = f.post("/v1/completions", {{"prompt", "hi"}, {"logprobs", 2}, {"max_tokens", 4}});
  ASSERT_EQ(r.status, 200) << r.body;
  json lp = json::parse(r.body)["choices"][0]["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), 4u);
  ASSERT_EQ(lp["token_logprobs"].size(), 4u);
  ASSERT_EQ(lp["top_logprobs"].size(), 4u);
  ASSERT_EQ(lp["text_offset"].size(), 4u);
  EXPECT_EQ(f.engine.submitted_copy()[0].sampling.num_logprobs, 2);
  size_t offset = 0;
  for (int i = 0; i < 4; ++i) {
    EXPECT_DOUBLE_EQ(lp["token_logprobs"][i].get<double>(), -0.25);
    EXPECT_EQ(lp["text_offset"][i], offset);
    offset += lp["tokens"][i].get<std::string>().size();  // ASCII tokens: characters = bytes
    // Top 2 (the first of which is the sampled token in the fake), the sampled one included.
    EXPECT_EQ(lp["top_logprobs"][i].size(), 2u);
    EXPECT_TRUE(lp["top_logprobs"][i].contains(lp["tokens"][i].get<std::string>()));
  }
}

// echo with logprobs (lm-eval's loglikelihood request): the prompt's tokens lead the logprobs, the first with
// nulls, the others with the engine's prompt scores (the fake's values), offsets from 0 across prompt and
// output; vLLM's prompt_logprobs on the choice: null, then dicts keyed by token id with logprob, rank and the
// decoded token. The engine is asked to score the prompt with the logprobs' number of alternatives.
TEST(Completions, EchoWithLogprobsScoresThePrompt) {
  ServerFixture f;
  auto r = f.post("/v1/completions", {{"prompt", "ab cd ef"}, {"echo", true}, {"logprobs", 1}, {"max_tokens", 2}});
  ASSERT_EQ(r.status, 200) << r.body;
  const auto sub = f.engine.submitted_copy();
  ASSERT_EQ(sub.size(), 1u);
  EXPECT_EQ(sub[0].prompt_logprobs, 1);
  const auto& ids = sub[0].prompt_tokens;
  const size_t np = ids.size();
  ASSERT_GE(np, 2u);
  json choice = json::parse(r.body)["choices"][0];
  EXPECT_TRUE(choice["text"].get<std::string>().rfind("ab cd ef", 0) == 0);
  EXPECT_FALSE(choice.contains("prompt_logprobs")) << "not asked for";
  const json& lp = choice["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), np + 2);
  EXPECT_TRUE(lp["token_logprobs"][0].is_null());
  EXPECT_TRUE(lp["top_logprobs"][0].is_null());
  size_t offset = 0;
  for (size_t i = 0; i < np + 2; ++i) {
    EXPECT_EQ(lp["text_offset"][i], offset) << i;
    offset += lp["tokens"][i].get<std::string>().size();
    if (i == 0) continue;
    const double want = i < np ? -0.5 - double(i - 1) / 100 : -0.25;
    EXPECT_NEAR(lp["token_logprobs"][i].get<double>(), want, 1e-6) << i;
    if (i < np) {
      EXPECT_EQ(lp["tokens"][i], f.tok->decode({ids[i]}));
      EXPECT_EQ(lp["top_logprobs"][i].size(), 2u);  // the top 1 and the prompt token
    }
  }
  EXPECT_EQ(offset, choice["text"].get<std::string>().size());

  // prompt_logprobs (vLLM): without echo, on the choice; the stream carries them in the first chunk
  for (const bool stream : {false, true}) {
    json body = {{"prompt", "ab cd ef"}, {"prompt_logprobs", 2}, {"max_tokens", 2}, {"stream", stream}};
    r = f.post("/v1/completions", body);
    ASSERT_EQ(r.status, 200) << r.body;
    json pl;
    if (!stream) {
      pl = json::parse(r.body)["choices"][0]["prompt_logprobs"];
    } else {
      for (const json& e : sse_events(r.body))
        if (e.is_object() && !e["choices"].empty() && e["choices"][0].contains("prompt_logprobs")) {
          EXPECT_TRUE(pl.is_null()) << "prompt_logprobs twice";
          pl = e["choices"][0]["prompt_logprobs"];
        }
    }
    ASSERT_EQ(pl.size(), np) << pl.dump();
    EXPECT_TRUE(pl[0].is_null());
    for (size_t i = 1; i < np; ++i) {
      const json& d = pl[i];
      ASSERT_TRUE(d.contains(std::to_string(ids[i]))) << d.dump();
      EXPECT_NEAR(d[std::to_string(ids[i])]["logprob"].get<double>(), -0.5 - double(i - 1) / 100, 1e-6);
      EXPECT_EQ(d[std::to_string(ids[i])]["decoded_token"], f.tok->decode({ids[i]}));
      EXPECT_EQ(d[std::to_string(ids[i])]["rank"], 100 + i) << "the engine's rank, outside the top list too";
      EXPECT_GE(d.size(), 2u);
      for (const auto& [k, v] : d.items()) {
        if (k != std::to_string(ids[i])) {
          EXPECT_GE(v["rank"].get<int>(), 1);
        }
      }
    }
  }
}

// echo with max_tokens 0 (vLLM's echo without generation, the usual scoring call): the prompt alone, its tokens'
// logprobs, no completion tokens; streamed too.
TEST(Completions, EchoOnlyReturnsThePromptScored) {
  ServerFixture f;
  for (const bool stream : {false, true}) {
    json body = {{"prompt", "ab cd"}, {"echo", true}, {"logprobs", 0}, {"max_tokens", 0}, {"stream", stream}};
    if (stream) body["stream_options"] = {{"include_usage", true}};
    auto r = f.post("/v1/completions", body);
    ASSERT_EQ(r.status, 200) << r.body;
    const auto sub = f.engine.submitted_copy();
    EXPECT_EQ(sub.back().max_tokens, 1);
    const size_t np = sub.back().prompt_tokens.size();
    std::string text;
    json tokens = json::array(), usage;
    if (!stream) {
      json j = json::parse(r.body);
      text = j["choices"][0]["text"];
      tokens = j["choices"][0]["logprobs"]["tokens"];
      usage = j["usage"];
    } else {
      for (const json& e : sse_events(r.body)) {
        if (!e.is_object()) continue;
        if (e.contains("usage") && !e["usage"].is_null()) usage = e["usage"];
        if (e["choices"].empty()) continue;
        text += e["choices"][0]["text"].get<std::string>();
        if (!e["choices"][0]["logprobs"].is_null())
          for (const auto& t : e["choices"][0]["logprobs"]["tokens"]) tokens.push_back(t);
      }
    }
    EXPECT_EQ(text, "ab cd") << "stream " << stream;
    EXPECT_EQ(tokens.size(), np) << "stream " << stream;
    EXPECT_EQ(usage["completion_tokens"], 0);
    EXPECT_EQ(usage["total_tokens"], usage["prompt_tokens"]);
  }
  auto r = f.post("/v1/completions", {{"prompt", "ab"}, {"max_tokens", 0}});  // without echo: still a 400
  EXPECT_EQ(r.status, 400);
}

TEST(Completions, StreamingMatchesNonStreaming) {
  ServerFixture f;
  json body = {{"prompt", "stream me"}, {"max_tokens", 6}, {"seed", 9}, {"n", 2}};
  auto plain = json::parse(f.post("/v1/completions", body).body);
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  auto r = f.post("/v1/completions", body);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "text/event-stream");
  EXPECT_TRUE(r.chunked);
  auto events = sse_events(r.body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  json usage = events[events.size() - 2];
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"], plain["usage"]);
  std::vector<std::string> texts(2);
  std::vector<std::string> finish(2);
  for (size_t e = 0; e + 2 < events.size(); ++e) {
    const json& c = events[e];
    EXPECT_EQ(c["object"], "text_completion");
    EXPECT_TRUE(c["usage"].is_null());
    ASSERT_EQ(c["choices"].size(), 1u);
    int i = c["choices"][0]["index"];
    EXPECT_TRUE(finish[i].empty()) << "chunk after the finish";
    texts[i] += c["choices"][0]["text"].get<std::string>();
    if (!c["choices"][0]["finish_reason"].is_null()) finish[i] = c["choices"][0]["finish_reason"];
  }
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(texts[i], plain["choices"][i]["text"]);
    EXPECT_EQ(finish[i], "length");
  }
}

TEST(Completions, StreamWithoutUsageEndsWithDone) {
  ServerFixture f;
  auto r = f.post("/v1/completions", {{"prompt", "x"}, {"max_tokens", 2}, {"stream", true}});
  auto events = sse_events(r.body);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_FALSE(events[0].contains("usage"));
  EXPECT_EQ(events[1]["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(events[2], "[DONE]");
}

TEST(Completions, StreamingEchoAndLogprobs) {
  ServerFixture f;
  auto r = f.post("/v1/completions", {{"prompt", "abc"}, {"max_tokens", 2}, {"stream", true}, {"echo", true}});
  auto events = sse_events(r.body);
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events[0]["choices"][0]["text"], "abc");
  r = f.post("/v1/completions", {{"prompt", "abc"}, {"max_tokens", 3}, {"stream", true}, {"logprobs", 1}});
  events = sse_events(r.body);
  size_t offset = 0;
  int n = 0;
  for (const auto& e : events) {
    if (e == "[DONE]") continue;
    const json& lp = e["choices"][0]["logprobs"];
    ASSERT_EQ(lp["tokens"].size(), 1u);
    EXPECT_EQ(lp["text_offset"][0], offset);  // offsets continue across chunks
    offset += lp["tokens"][0].get<std::string>().size();
    ++n;
  }
  EXPECT_EQ(n, 3);
}

TEST(Completions, StopReasonReportsStopTokenOrString) {
  ServerFixture f;
  // The scripted engine ends with FinishReason::Stop and stop_reason from the script below.
  f.engine.script = [](const GenerationRequest&) { return std::vector<std::string>{"a", "b"}; };
  auto r = f.post("/v1/completions", {{"prompt", "x"}, {"stop", {"zz"}}});
  json c = json::parse(r.body)["choices"][0];
  EXPECT_EQ(c["text"], "ab");
  EXPECT_EQ(c["finish_reason"], "stop");
  EXPECT_TRUE(c["stop_reason"].is_null());
}

}  // namespace
}  // namespace ds::test

namespace ds::test {
namespace {

TEST(Completions, TextOffsetsCountCharacters) {
  auto tok = tiny_tokenizer();
  // "é" is two bytes but one character; an echoed prompt shifts the offsets by its characters.
  server::CompletionLogprobs lp(*tok, false, "\xc3\xa9!");
  std::vector<int32_t> ids = {tok->encode("a").at(0), tok->encode("b").at(0)};
  std::vector<SampleResult> rs;
  for (int32_t id : ids) rs.push_back({id, -1.0f, {}});
  json piece = lp.add(rs);
  EXPECT_EQ(piece["text_offset"][0], 2);
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(piece["text_offset"][1], 3);
}

}  // namespace
}  // namespace ds::test
