// The ShareGPT workload (vLLM's sampler): CPython's random for the shuffle, the file reader and its errors,
// vLLM's length rules and --sharegpt-output-len, oversampling, the chat and completions prompt forms,
// token counts with the tiny tokenizer and through a /tokenize endpoint, and run_bench with sharegpt,
// --save-result's file name and --percentile-metrics.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "bench/bench.h"
#include "bench/dataset_sharegpt.h"
#include "bench/report.h"
#include "core/error.h"
#include "mock_openai_server.h"
#include "temp_file.h"
#include "tokenizer/tokenizer.h"

using namespace ds::bench;
using ds::bench::testing::MockBehavior;
using ds::bench::testing::MockOpenAIServer;
using ds::bench::testing::write_temp;
using nlohmann::json;

namespace {

// n words "w0 w1 ...", prefixed with a tag so texts differ.
std::string words(const std::string& tag, int n) {
  std::string s = tag;
  for (int i = 1; i < n; ++i) s += " w" + std::to_string(i);
  return s;
}

json conv(const std::string& human, const std::string& gpt) {
  return {{"id", "x"},
          {"conversations", json::array({{{"from", "human"}, {"value", human}}, {{"from", "gpt"}, {"value", gpt}}})}};
}

// A token per whitespace-separated word, like the mock server's /tokenize.
std::vector<int64_t> count_words(const std::vector<std::string>& texts) {
  std::vector<int64_t> out;
  for (const auto& t : texts) {
    std::istringstream in(t);
    int64_t n = 0;
    for (std::string w; in >> w;) ++n;
    out.push_back(n);
  }
  return out;
}

std::vector<std::string> prompt_texts(const std::vector<BenchPrompt>& ps) {
  std::vector<std::string> out;
  for (const auto& p : ps)
    out.push_back(p.prompt.is_string() ? p.prompt.get<std::string>() : p.prompt[0]["content"].get<std::string>());
  return out;
}

void expect_error(const std::string& path, const std::string& needle) {
  try {
    load_sharegpt_pairs(path);
    ADD_FAILURE() << path << " was accepted";
  } catch (const ds::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
  }
}

}  // namespace

// Values printed by Python 3.11: random.seed(s); random.getrandbits(32) / shuffle / choice.
TEST(ShareGpt, PyRandomMatchesCPython) {
  const std::vector<std::pair<uint64_t, std::vector<uint32_t>>> bits = {
      {0, {3626764237u, 1654615998u, 3255389356u}},
      {42, {2746317213u, 478163327u, 107420369u}},
      {(uint64_t(1) << 40) + 7, {2635837658u, 3209733218u, 3500038837u}}};
  for (const auto& [seed, want] : bits) {
    PyRandom r(seed);
    for (uint32_t w : want) EXPECT_EQ(r.getrandbits(32), w) << "seed " << seed;
  }
  auto shuffled = [](uint64_t seed, int n) {
    std::vector<int> v(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) v[size_t(i)] = i;
    PyRandom(seed).shuffle(v);
    return v;
  };
  EXPECT_EQ(shuffled(0, 10), (std::vector<int>{7, 8, 1, 5, 3, 4, 2, 0, 9, 6}));
  EXPECT_EQ(shuffled(42, 10), (std::vector<int>{7, 3, 2, 8, 5, 6, 9, 4, 0, 1}));
  EXPECT_EQ(shuffled((uint64_t(1) << 40) + 7, 10), (std::vector<int>{0, 5, 2, 3, 6, 1, 8, 4, 7, 9}));
  const auto big = shuffled(0, 1000);
  EXPECT_EQ(std::vector<int>(big.begin(), big.begin() + 10),
            (std::vector<int>{439, 621, 160, 549, 237, 389, 658, 507, 124, 290}));
  PyRandom c(0);
  std::vector<uint64_t> choices;
  for (int i = 0; i < 8; ++i) choices.push_back(c.randbelow(7));
  EXPECT_EQ(choices, (std::vector<uint64_t>{6, 3, 6, 3, 0, 2, 4, 3}));
}

TEST(ShareGpt, LoadKeepsConversationsWithTwoTurnsInFileOrder) {
  json data = json::array();
  data.push_back(conv("first question", "first answer"));
  data.push_back({{"id", "one turn"}, {"conversations", json::array({{{"from", "human"}, {"value", "alone"}}})}});
  data.push_back({{"id", "no conversations"}});
  data.push_back(
      {{"id", "gpt first, extra keys, a third turn of any shape"},
       {"meta", {{"conversations", 5}, {"list", {1, 2, {{"value", "no"}}}}}},
       {"conversations", json::array({{{"from", "gpt"}, {"value", "second prompt"}, {"extra", {{"value", 1}}}},
                                      {{"value", "second answer"}, {"from", "human"}},
                                      42})}});
  data.push_back({{"conversations", json::array({{{"from", "human"}}})}});  // one malformed turn: dropped, no error
  data.push_back(conv("third \"quoted\" \xc3\xa9", "third answer"));
  const auto pairs = load_sharegpt_pairs(write_temp("sharegpt_load.json", data.dump(2)));
  ASSERT_EQ(pairs.size(), 3u);
  EXPECT_EQ(pairs[0].prompt, "first question");
  EXPECT_EQ(pairs[0].completion, "first answer");
  EXPECT_EQ(pairs[1].prompt, "second prompt");
  EXPECT_EQ(pairs[1].completion, "second answer");
  EXPECT_EQ(pairs[2].prompt, "third \"quoted\" \xc3\xa9");
  EXPECT_TRUE(load_sharegpt_pairs(write_temp("sharegpt_empty.json", "[]")).empty());
}

TEST(ShareGpt, MalformedFilesAreErrorsNamingTheFileAndTheProblem) {
  expect_error(write_temp("sg_bad1.json", "[{\"conversations\": [}"), "not valid JSON");
  expect_error(write_temp("sg_bad2.json", ""), "not valid JSON");
  expect_error(write_temp("sg_bad3.json", "{\"conversations\": []}"), "expected a JSON array");
  expect_error(write_temp("sg_bad4.json", "\"text\""), "expected a JSON array");
  expect_error(write_temp("sg_bad5.json", "[1]"), "entry 0 is not an object");
  expect_error(write_temp("sg_bad6.json", "[{\"conversations\": [{\"value\": \"a\"}, {\"value\": \"b\"}]}, [2]]"),
               "entry 1 is not an object");
  expect_error(write_temp("sg_bad7.json", "[{\"conversations\": \"hi\"}]"), "\"conversations\" is not an array");
  expect_error(write_temp("sg_bad8.json", "[{\"conversations\": {\"value\": 1}}]"),
               "\"conversations\" is not an array");
  expect_error(write_temp("sg_bad9.json", "[{\"conversations\": [{\"value\": \"a\"}, {\"from\": \"gpt\"}]}]"),
               "entry 0: conversations[1] has no \"value\"");
  expect_error(write_temp("sg_bad10.json", "[{\"conversations\": [{\"value\": 7}, {\"value\": \"b\"}]}]"),
               "conversations[0].value is not a string");
  expect_error(write_temp("sg_bad11.json", "[{\"conversations\": [\"a\", {\"value\": \"b\"}]}]"),
               "conversations[0] is not an object");
  expect_error(write_temp("sg_bad12.json", "[{\"conversations\": [{\"value\": \"a\"}, {\"value\": \"b\"}]}] x"),
               "not valid JSON");
  EXPECT_THROW(load_sharegpt_pairs("/nonexistent/sharegpt.json"), ds::Error);
}

TEST(ShareGpt, LengthRulesAreVllms) {
  EXPECT_TRUE(sharegpt_pair_valid(4, 4, false));
  EXPECT_FALSE(sharegpt_pair_valid(3, 100, false));      // prompt under 4
  EXPECT_FALSE(sharegpt_pair_valid(100, 3, false));      // output under 4
  EXPECT_TRUE(sharegpt_pair_valid(100, 3, true));        // ... unless --sharegpt-output-len fixes it
  EXPECT_FALSE(sharegpt_pair_valid(3, 100, true));       // the prompt minimum stays
  EXPECT_TRUE(sharegpt_pair_valid(1024, 1024, false));   // 2048 in all is allowed
  EXPECT_FALSE(sharegpt_pair_valid(1025, 10, false));    // prompt over 1024
  EXPECT_FALSE(sharegpt_pair_valid(1000, 1049, false));  // over 2048 in all
  EXPECT_FALSE(sharegpt_pair_valid(1000, 1049, true));   // also with a fixed output length

  const std::vector<ShareGptPair> pairs = {
      {words("a", 3), words("o", 50)},       // prompt too short
      {words("b", 10), words("o", 3)},       // output too short (from the data)
      {words("c", 1025), words("o", 5)},     // prompt too long
      {words("d", 1000), words("o", 1049)},  // 2049 in all
      {words("e", 1000), words("o", 1048)},  // 2048: kept
      {words("f", 4), words("o", 4)},        // the minimum: kept
  };
  ShareGptOptions o;
  o.shuffle = false;
  o.oversample = false;
  auto ps = sample_sharegpt(pairs, o, 100, EndpointType::Completions, 0, count_words, "test");
  ASSERT_EQ(ps.size(), 2u);
  EXPECT_EQ(ps[0].prompt, words("e", 1000));
  EXPECT_EQ(ps[0].prompt_len, 1000);
  EXPECT_EQ(ps[0].max_tokens, 1048);
  EXPECT_EQ(ps[1].prompt, words("f", 4));
  EXPECT_EQ(ps[1].max_tokens, 4);

  // --sharegpt-output-len 2: short outputs no longer matter, totals use the fixed length.
  o.output_len = 2;
  ps = sample_sharegpt(pairs, o, 100, EndpointType::Completions, 0, count_words, "test");
  EXPECT_EQ(prompt_texts(ps),
            (std::vector<std::string>{words("b", 10), words("d", 1000), words("e", 1000), words("f", 4)}));
  for (const auto& p : ps) EXPECT_EQ(p.max_tokens, 2);
  o.output_len = 1100;  // 1000 + 1100 > 2048
  ps = sample_sharegpt(pairs, o, 100, EndpointType::Completions, 0, count_words, "test");
  EXPECT_EQ(prompt_texts(ps), (std::vector<std::string>{words("b", 10), words("f", 4)}));

  // Nothing valid: an error naming the source.
  const std::vector<ShareGptPair> bad = {{"hi", words("o", 9)}, {words("x", 9), "ok"}};
  try {
    sample_sharegpt(bad, ShareGptOptions{}, 10, EndpointType::Completions, 0, count_words, "data/sg.json");
    ADD_FAILURE() << "no valid pair was accepted";
  } catch (const ds::Error& e) {
    EXPECT_NE(std::string(e.what()).find("data/sg.json: no valid prompt/output pair"), std::string::npos) << e.what();
  }
  EXPECT_THROW(sample_sharegpt({}, ShareGptOptions{}, 10, EndpointType::Completions, 0, count_words, "f"), ds::Error);
}

TEST(ShareGpt, SeedShufflesAsVllmAndIsReproducible) {
  std::vector<ShareGptPair> pairs;
  for (int i = 0; i < 20; ++i) pairs.push_back({words("p" + std::to_string(i), 5), words("o", 6)});
  ShareGptOptions o;
  auto order = [&](uint64_t seed, int64_t n) {
    return prompt_texts(sample_sharegpt(pairs, o, n, EndpointType::Completions, seed, count_words, "t"));
  };
  // Python: random.seed(0); x = list(range(20)); random.shuffle(x)
  const std::vector<int> py = {10, 18, 16, 14, 0, 17, 11, 2, 3, 9, 5, 7, 4, 19, 6, 15, 8, 1, 13, 12};
  const auto got = order(0, 20);
  ASSERT_EQ(got.size(), 20u);
  for (size_t i = 0; i < 20; ++i) EXPECT_EQ(got[i], pairs[size_t(py[i])].prompt) << i;
  EXPECT_EQ(order(0, 20), got);
  EXPECT_EQ(order(0, 5), std::vector<std::string>(got.begin(), got.begin() + 5)) << "a prefix of the same order";
  EXPECT_NE(order(1, 20), got);
  o.shuffle = false;  // --disable-shuffle: file order
  const auto file_order = order(0, 3);
  EXPECT_EQ(file_order, (std::vector<std::string>{pairs[0].prompt, pairs[1].prompt, pairs[2].prompt}));
}

TEST(ShareGpt, OversamplesAsVllmUnlessDisabled) {
  const std::vector<ShareGptPair> pairs = {
      {words("a", 5), words("o", 5)}, {words("b", 5), words("o", 6)}, {"no", "skip"}, {words("c", 5), words("o", 7)}};
  ShareGptOptions o;
  o.shuffle = false;
  const auto ps = sample_sharegpt(pairs, o, 7, EndpointType::Completions, 7, count_words, "t");
  ASSERT_EQ(ps.size(), 7u);
  // Python: random.seed(7); [random.choice(range(3)) for _ in range(4)] == [1, 0, 1, 2]
  const std::vector<std::string> want = {words("a", 5), words("b", 5), words("c", 5), words("b", 5),
                                         words("a", 5), words("b", 5), words("c", 5)};
  EXPECT_EQ(prompt_texts(ps), want);
  EXPECT_EQ(ps[3].max_tokens, 6);
  o.oversample = false;
  EXPECT_EQ(sample_sharegpt(pairs, o, 7, EndpointType::Completions, 7, count_words, "t").size(), 3u);
}

TEST(ShareGpt, ChatAndCompletionsPromptForms) {
  const std::vector<ShareGptPair> pairs = {{"tell me about the river", "it flows to the sea"}};
  ShareGptOptions o;
  const auto c = sample_sharegpt(pairs, o, 1, EndpointType::Completions, 0, count_words, "t");
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].prompt, "tell me about the river");
  EXPECT_EQ(c[0].prompt_len, 5);
  EXPECT_EQ(c[0].max_tokens, 5);
  const auto m = sample_sharegpt(pairs, o, 1, EndpointType::Chat, 0, count_words, "t");
  EXPECT_EQ(m[0].prompt, json::array({{{"role", "user"}, {"content", "tell me about the river"}}}));
  EXPECT_EQ(m[0].prompt_len, 0) << "the chat template's tokens are the server's to count";
  EXPECT_EQ(m[0].max_tokens, 5);
}

TEST(ShareGpt, CountsWithTheTinyTokenizer) {
  const std::string dir = std::string(DS_FIXTURES_DIR) + "/tiny/tokenizer";
  const CountTokens count = tokenizer_counter(dir);
  const auto tok = ds::Tokenizer::from_dir(dir);
  const std::vector<std::string> texts = {"Hello, world!", "The quick brown fox jumps over the lazy dog.", "",
                                          "<|im_end|> special"};
  const auto n = count(texts);
  ASSERT_EQ(n.size(), texts.size());
  for (size_t i = 0; i < texts.size(); ++i) EXPECT_EQ(n[i], int64_t(tok->encode(texts[i]).size())) << texts[i];
  EXPECT_GT(n[1], n[0]);
  EXPECT_EQ(n[2], 0);
  EXPECT_THROW(tokenizer_counter("/nonexistent/tokenizer"), ds::Error);

  // A whole sample through the tokenizer: lengths are the tokenizer's.
  json data = json::array();
  for (int i = 0; i < 6; ++i)
    data.push_back(
        conv("Question " + std::to_string(i) + ": what is the capital of country number " + std::to_string(i) + "?",
             "The capital is a city with a long history and many bridges."));
  const std::string path = write_temp("sharegpt_tiny.json", data.dump());
  const auto ps = sample_sharegpt(load_sharegpt_pairs(path), {}, 4, EndpointType::Completions, 0, count, path);
  ASSERT_EQ(ps.size(), 4u);
  const int64_t out_len = int64_t(tok->encode("The capital is a city with a long history and many bridges.").size());
  for (const auto& p : ps) {
    EXPECT_EQ(p.prompt_len, int64_t(tok->encode(p.prompt.get<std::string>()).size()));
    EXPECT_EQ(p.max_tokens, out_len);
  }
}

TEST(ShareGpt, CountsThroughTheTokenizeEndpoint) {
  MockOpenAIServer server;
  std::vector<std::string> texts;
  for (int i = 0; i < 40; ++i) texts.push_back(words("t", 1 + i % 9));
  const CountTokens count = server_counter(parse_base_url(server.base_url()), "mock-model", "", 10.0, 4);
  EXPECT_EQ(count(texts), count_words(texts));
  const auto rec = server.received();
  ASSERT_EQ(rec.size(), 40u);
  for (const auto& r : rec) {
    EXPECT_EQ(r.method, "POST");
    EXPECT_EQ(r.target, "/tokenize");
    EXPECT_EQ(r.body["model"], "mock-model");
    EXPECT_TRUE(r.body["prompt"].is_string());
  }
  MockBehavior no_tokenize;
  no_tokenize.tokenize = false;
  MockOpenAIServer old(no_tokenize);
  try {
    server_counter(parse_base_url(old.base_url()), "mock-model", "", 10.0)(texts);
    ADD_FAILURE() << "a server without /tokenize was accepted";
  } catch (const ds::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("/tokenize"), std::string::npos) << msg;
    EXPECT_NE(msg.find("HTTP 404"), std::string::npos) << msg;
    EXPECT_NE(msg.find("--tokenizer"), std::string::npos) << msg;
  }
}

TEST(ShareGpt, RunBenchOverCompletionsAndChat) {
  json data = json::array();
  for (int i = 0; i < 12; ++i) data.push_back(conv(words("q" + std::to_string(i), 5 + i), words("a", 4 + i)));
  data.push_back(conv("too short", words("a", 10)));
  const std::string path = write_temp("sharegpt_run.json", data.dump());
  for (EndpointType type : {EndpointType::Completions, EndpointType::Chat}) {
    MockOpenAIServer server;
    BenchOptions o;
    o.base_url = server.base_url();
    o.type = type;
    o.dataset = "sharegpt";
    o.dataset_path = path;
    o.num_prompts = 8;
    o.warmup = 0;
    o.seed = 3;
    o.progress = false;
    const BenchResult res = run_bench(o);
    EXPECT_EQ(res.metrics.completed, 8);
    EXPECT_EQ(res.json["dataset_name"], "sharegpt");
    int tokenize = 0, generate = 0;
    for (const auto& r : server.received()) {
      if (r.target == "/tokenize") ++tokenize;
      if (r.target != endpoint_path(type)) continue;
      ++generate;
      const std::string text = type == EndpointType::Chat ? r.body["messages"][0]["content"].get<std::string>()
                                                          : r.body["prompt"].get<std::string>();
      const int64_t prompt_words = count_words({text})[0];
      EXPECT_EQ(r.body["max_tokens"].get<int64_t>(), prompt_words - 1) << "this file's answers are a word shorter";
      EXPECT_FALSE(r.body.contains("ignore_eos")) << "as vLLM: only random prompts ignore EOS by default";
    }
    EXPECT_EQ(generate, 8);
    EXPECT_GE(tokenize, 16) << "prompt and answer of each pair used";
    for (int64_t n : res.json["input_lens"]) EXPECT_GE(n, 5);
  }
  // --tokenizer: counts are local, the server gets no /tokenize.
  MockOpenAIServer server;
  BenchOptions o;
  o.base_url = server.base_url();
  o.dataset = "sharegpt";
  o.dataset_path = path;
  o.tokenizer = std::string(DS_FIXTURES_DIR) + "/tiny/tokenizer";
  o.sharegpt.output_len = 7;
  o.num_prompts = 4;
  o.warmup = 1;
  o.progress = false;
  EXPECT_EQ(run_bench(o).metrics.completed, 4);
  for (const auto& r : server.received()) {
    EXPECT_NE(r.target, "/tokenize");
    if (r.method == "POST") {
      EXPECT_EQ(r.body["max_tokens"], 7);
    }
  }
  // A file that is not ShareGPT fails before any request.
  o.dataset_path = write_temp("sharegpt_not.json", "{\"data\": []}");
  EXPECT_THROW(run_bench(o), ds::Error);
}

TEST(ShareGpt, ResultFileNamesAreVllms) {
  EXPECT_EQ(
      default_result_filename("openai", INFINITY, 0, "moonshotai/Kimi-Linear-48B-A3B-Instruct", "20250102-030405"),
      "openai-infqps-Kimi-Linear-48B-A3B-Instruct-20250102-030405.json");
  EXPECT_EQ(default_result_filename("vllm", 4.0, 16, "tiny", "20250102-030405"),
            "vllm-4.0qps-concurrency16-tiny-20250102-030405.json");
  EXPECT_EQ(default_result_filename("run1", 0.5, 0, "a/b/c", "d"), "run1-0.5qps-c-d.json");
  EXPECT_EQ(date_string().size(), 15u);
  EXPECT_EQ(parse_percentile_metrics("ttft,tpot,itl"), (std::vector<std::string>{"ttft", "tpot", "itl"}));
  EXPECT_EQ(parse_percentile_metrics("e2el,ttft,e2el"), (std::vector<std::string>{"e2el", "ttft"}));
  EXPECT_THROW(parse_percentile_metrics("ttft,latency"), ds::Error);
  EXPECT_THROW(parse_percentile_metrics(""), ds::Error);
}

TEST(ShareGpt, SaveResultAndPercentileMetrics) {
  MockOpenAIServer server;
  const std::string dir = std::string(DS_BINARY_DIR) + "/bench_results_test";
  std::filesystem::remove_all(dir);
  BenchOptions o;
  o.base_url = server.base_url();
  o.dataset = "fixed";
  o.prompt = "hello there";
  o.output_len = 3;
  o.num_prompts = 3;
  o.max_concurrency = 2;
  o.progress = false;
  o.save_result = true;
  o.result_dir = dir + "/nested";
  BenchResult res = run_bench(o);
  const std::string want =
      dir + "/nested/openai-infqps-concurrency2-mock-model-" + res.json["date"].get<std::string>() + ".json";
  EXPECT_EQ(res.result_file, want);
  ASSERT_TRUE(std::filesystem::exists(want));
  EXPECT_EQ(json::parse(std::ifstream(want))["completed"], 3);
  // The default report keeps every section.
  for (const char* s : {"Time to First Token", "Time per Output Token", "Inter-token Latency", "End-to-end Latency"})
    EXPECT_NE(res.report.find(s), std::string::npos) << s;

  o.result_filename = "mine.json";
  o.label = "ignored-with-a-filename";
  o.percentile_metrics = {"ttft", "e2el"};
  res = run_bench(o);
  EXPECT_EQ(res.result_file, dir + "/nested/mine.json");
  EXPECT_TRUE(std::filesystem::exists(res.result_file));
  EXPECT_NE(res.report.find("P99 TTFT (ms):"), std::string::npos);
  EXPECT_NE(res.report.find("P95 E2EL (ms):"), std::string::npos);
  EXPECT_EQ(res.report.find("TPOT"), std::string::npos);
  EXPECT_EQ(res.report.find("ITL"), std::string::npos);
  EXPECT_TRUE(res.json.contains("p99_itl_ms")) << "the JSON keeps every metric";

  o.result_filename.clear();
  o.result_dir.clear();
  o.output_json = dir + "/explicit.json";  // --output-json wins over --save-result's name
  o.percentile_metrics = {"latency"};
  EXPECT_THROW(run_bench(o), ds::Error);
  o.percentile_metrics.clear();
  EXPECT_EQ(run_bench(o).result_file, dir + "/explicit.json");
  std::filesystem::remove_all(dir);
}
