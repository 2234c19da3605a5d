// Workload construction and arrival times.
#include <gtest/gtest.h>

#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <numeric>
#include <set>

#include "bench/dataset.h"
#include "bench/dataset_prefix.h"
#include "bench/progress.h"
#include "bench/request.h"
#include "bench/task_runner.h"
#include "core/error.h"
#include "temp_file.h"

using namespace ds::bench;
using nlohmann::json;

using ds::bench::testing::write_temp;

TEST(BenchDataset, RandomTokenPromptsHaveExactLengthsAndIdsInRange) {
  RandomDatasetOptions o;
  o.input_len = 100;
  o.output_len = 20;
  o.range_ratio = 0.5;
  o.vocab_size = 300;
  const auto ps = make_random_dataset(o, 200, EndpointType::Completions, 42);
  ASSERT_EQ(ps.size(), 200u);
  std::set<int64_t> in_lens, out_lens;
  for (const auto& p : ps) {
    ASSERT_TRUE(p.prompt.is_array());
    EXPECT_EQ(p.prompt_len, static_cast<int64_t>(p.prompt.size()));
    EXPECT_GE(p.prompt_len, 50);
    EXPECT_LE(p.prompt_len, 150);
    EXPECT_GE(p.max_tokens, 10);
    EXPECT_LE(p.max_tokens, 30);
    for (const auto& id : p.prompt) {
      EXPECT_GE(id.get<int64_t>(), 0);
      EXPECT_LT(id.get<int64_t>(), 300);
    }
    in_lens.insert(p.prompt_len);
    out_lens.insert(p.max_tokens);
  }
  EXPECT_GT(in_lens.size(), 30u);  // lengths do vary over [50, 150]
  EXPECT_GT(out_lens.size(), 10u);
  // Same seed, same workload; another seed, another.
  EXPECT_EQ(make_random_dataset(o, 200, EndpointType::Completions, 42)[7].prompt, ps[7].prompt);
  EXPECT_NE(make_random_dataset(o, 200, EndpointType::Completions, 43)[7].prompt, ps[7].prompt);
}

TEST(BenchDataset, RandomRatioZeroIsFixedLength) {
  RandomDatasetOptions o;
  o.input_len = 64;
  o.output_len = 8;
  for (const auto& p : make_random_dataset(o, 20, EndpointType::Completions, 1)) {
    EXPECT_EQ(p.prompt_len, 64);
    EXPECT_EQ(p.max_tokens, 8);
  }
  o.range_ratio = 1.0;
  EXPECT_THROW(make_random_dataset(o, 1, EndpointType::Completions, 1), ds::Error);
}

TEST(BenchDataset, RandomChatPromptsAreWords) {
  RandomDatasetOptions o;
  o.input_len = 40;
  const auto ps = make_random_dataset(o, 3, EndpointType::Chat, 5);
  for (const auto& p : ps) {
    ASSERT_TRUE(p.prompt.is_array());
    EXPECT_EQ(p.prompt[0]["role"], "user");
    const std::string text = p.prompt[0]["content"];
    EXPECT_EQ(std::count(text.begin(), text.end(), ' '), 39);
    EXPECT_EQ(p.prompt_len, 0);  // only the server's usage knows the token count
  }
}

TEST(BenchDataset, JsonlPromptsMessagesAndOverrides) {
  const std::string path = write_temp("bench_prompts.jsonl",
                                      "{\"prompt\": \"hello there\"}\n"
                                      "\n"
                                      "{\"prompt\": [1, 2, 3], \"max_tokens\": 7}\n");
  auto ps = load_jsonl_dataset(path, 0, EndpointType::Completions, 32);
  ASSERT_EQ(ps.size(), 2u);
  EXPECT_EQ(ps[0].prompt, "hello there");
  EXPECT_EQ(ps[0].max_tokens, 32);
  EXPECT_EQ(ps[1].prompt_len, 3);
  EXPECT_EQ(ps[1].max_tokens, 7);
  auto cycled = load_jsonl_dataset(path, 5, EndpointType::Completions, 32);
  ASSERT_EQ(cycled.size(), 5u);
  EXPECT_EQ(cycled[4].prompt, "hello there");
  // Token ids cannot go to the chat endpoint.
  EXPECT_THROW(load_jsonl_dataset(path, 0, EndpointType::Chat, 32), ds::Error);

  const std::string chat = write_temp("bench_chat.jsonl",
                                      "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"output_len\": 4}\n"
                                      "{\"prompt\": \"as text\"}\n");
  auto cs = load_jsonl_dataset(chat, 0, EndpointType::Chat, 16);
  EXPECT_EQ(cs[0].prompt[0]["content"], "hi");
  EXPECT_EQ(cs[0].max_tokens, 4);
  EXPECT_EQ(cs[1].prompt[0]["content"], "as text");
  EXPECT_THROW(load_jsonl_dataset(chat, 0, EndpointType::Completions, 16), ds::Error);  // messages need chat
  EXPECT_THROW(load_jsonl_dataset(write_temp("bench_bad.jsonl", "{\"text\": 1}\n"), 0, EndpointType::Chat, 1),
               ds::Error);
  EXPECT_THROW(load_jsonl_dataset("/nonexistent/x.jsonl", 0, EndpointType::Chat, 1), ds::Error);
}

TEST(BenchDataset, FixedPrompt) {
  auto ps = make_fixed_dataset("Tell me a story", 3, EndpointType::Completions, 9);
  ASSERT_EQ(ps.size(), 3u);
  EXPECT_EQ(ps[2].prompt, "Tell me a story");
  EXPECT_EQ(ps[2].max_tokens, 9);
  EXPECT_EQ(make_fixed_dataset("x", 1, EndpointType::Chat, 9)[0].prompt[0]["content"], "x");
  EXPECT_THROW(make_fixed_dataset("", 1, EndpointType::Chat, 9), ds::Error);
}

namespace {
std::vector<int64_t> ids_of(const BenchPrompt& p) { return p.prompt.get<std::vector<int64_t>>(); }
size_t common_prefix(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}
}  // namespace

TEST(BenchDataset, SharedPrefixGroupsShareExactlyTheirPrefix) {
  SharedPrefixOptions o;
  o.groups = 4;
  o.prompts_per_group = 5;
  o.prefix_len = 300;
  o.suffix_len = 20;
  o.output_len = 7;
  const auto d = make_shared_prefix_dataset(o, EndpointType::Completions, 3);
  ASSERT_EQ(d.size(), 20u);
  std::map<std::vector<int64_t>, int> groups;  // prefix -> requests
  for (const auto& p : d) {
    const auto ids = ids_of(p);
    ASSERT_EQ(ids.size(), 320u);
    EXPECT_EQ(p.prompt_len, 320);
    EXPECT_EQ(p.max_tokens, 7);
    groups[std::vector<int64_t>(ids.begin(), ids.begin() + 300)]++;
  }
  ASSERT_EQ(groups.size(), 4u);
  for (const auto& [prefix, n] : groups) EXPECT_EQ(n, 5);
  // shuffled: the first five are not one group
  std::set<std::vector<int64_t>> first;
  for (int i = 0; i < 5; ++i) {
    const auto ids = ids_of(d[size_t(i)]);
    first.insert(std::vector<int64_t>(ids.begin(), ids.begin() + 300));
  }
  EXPECT_GT(first.size(), 1u);
  // chat prompts share their text prefix the same way
  const auto c = make_shared_prefix_dataset(o, EndpointType::Chat, 3);
  ASSERT_EQ(c.size(), 20u);
  EXPECT_TRUE(c[0].prompt.is_array());
}

TEST(BenchDataset, MultiTurnTurnsExtendThePreviousPrompt) {
  MultiTurnOptions o;
  o.conversations = 3;
  o.turns = 4;
  o.question_len = 10;
  o.answer_len = 6;
  const auto d = make_multi_turn_dataset(o, EndpointType::Completions, 5);
  ASSERT_EQ(d.size(), 12u);
  for (int t = 0; t < 4; ++t)
    for (int c = 0; c < 3; ++c) {
      const auto& p = d[size_t(t * 3 + c)];  // turn-major order
      EXPECT_EQ(p.prompt_len, 10 + t * 16);
      EXPECT_EQ(p.max_tokens, 6);
      if (t > 0) {
        const auto prev = ids_of(d[size_t((t - 1) * 3 + c)]);
        EXPECT_EQ(common_prefix(prev, ids_of(p)), prev.size()) << "turn " << t << " extends turn " << t - 1;
      }
      if (c > 0) {
        EXPECT_LT(common_prefix(ids_of(d[size_t(t * 3)]), ids_of(p)), 10u) << "conversations differ";
      }
    }
  o.first_len = 50;
  EXPECT_EQ(make_multi_turn_dataset(o, EndpointType::Completions, 5)[4].prompt_len, 50 + 16) << "a long first turn";
  const auto chat = make_multi_turn_dataset(o, EndpointType::Chat, 5);
  ASSERT_EQ(chat[11].prompt.size(), 7u);  // u a u a u a u
  EXPECT_EQ(chat[11].prompt[1]["role"], "assistant");
}

TEST(BenchRequest, BodyFields) {
  BenchPrompt p{json::array({5, 6}), 2, 11};
  RequestOptions o;
  o.model = "m";
  o.ignore_eos = true;
  o.extra_body = {{"top_k", 1}, {"temperature", 0.5}};
  json b = make_request_body(p, o, true);
  EXPECT_EQ(b["prompt"], json::array({5, 6}));
  EXPECT_EQ(b["max_tokens"], 11);
  EXPECT_EQ(b["ignore_eos"], true);
  EXPECT_EQ(b["stream"], true);
  EXPECT_EQ(b["stream_options"]["include_usage"], true);
  EXPECT_EQ(b["top_k"], 1);
  EXPECT_EQ(b["temperature"], 0.5);  // --extra-body wins
  o.type = EndpointType::Chat;
  o.ignore_eos = false;
  b = make_request_body(p, o, false);
  EXPECT_TRUE(b.contains("messages"));
  EXPECT_FALSE(b.contains("ignore_eos"));
  EXPECT_FALSE(b.contains("stream_options"));
}

TEST(BenchArrivals, InfiniteRateSendsAllAtOnce) {
  for (double t : arrival_times(10, INFINITY, 1.0, 0)) EXPECT_EQ(t, 0.0);
}

TEST(BenchArrivals, PoissonGapsHaveTheRequestedMean) {
  const size_t n = 20000;
  const double rate = 50.0;
  const auto t = arrival_times(n, rate, 1.0, 3);
  EXPECT_EQ(t[0], 0.0);
  EXPECT_TRUE(std::is_sorted(t.begin(), t.end()));
  std::vector<double> gaps(n - 1);
  for (size_t i = 1; i < n; ++i) gaps[i - 1] = t[i] - t[i - 1];
  const double mean = std::accumulate(gaps.begin(), gaps.end(), 0.0) / static_cast<double>(gaps.size());
  double var = 0;
  for (double g : gaps) var += (g - mean) * (g - mean);
  var /= static_cast<double>(gaps.size());
  // Exponential gaps: mean 1/rate, std 1/rate; the sample mean's std is (1/rate)/sqrt(n): allow 5 of those.
  const double se = 1.0 / rate / std::sqrt(static_cast<double>(n));
  EXPECT_NEAR(mean, 1.0 / rate, 5 * se);
  EXPECT_NEAR(std::sqrt(var), 1.0 / rate, 0.05 / rate);
  // Burstiness 4: same mean, gamma shape 4, so std = mean / 2.
  const auto b = arrival_times(n, rate, 4.0, 3);
  double bvar = 0, bmean = b.back() / static_cast<double>(n - 1);
  for (size_t i = 1; i < n; ++i) bvar += (b[i] - b[i - 1] - bmean) * (b[i] - b[i - 1] - bmean);
  EXPECT_NEAR(bmean, 1.0 / rate, 5 * se);
  EXPECT_NEAR(std::sqrt(bvar / static_cast<double>(n - 1)), 0.5 / rate, 0.05 / rate);
}

TEST(BenchRunner, LimiterCapsConcurrencyAndRunsEveryTask) {
  boost::asio::io_context io;
  int running = 0, peak = 0, done = 0;
  std::vector<double> arrivals(50, 0.0);
  run_tasks(io, arrivals, 4, [&](size_t i) -> boost::asio::awaitable<void> {
    ++running;
    peak = std::max(peak, running);
    boost::asio::steady_timer t(io, std::chrono::milliseconds(1 + i % 3));
    co_await t.async_wait(boost::asio::use_awaitable);
    --running;
    ++done;
  });
  EXPECT_EQ(done, 50);
  EXPECT_EQ(peak, 4);
  EXPECT_EQ(running, 0);
}

TEST(BenchRunner, TaskExceptionsPropagate) {
  boost::asio::io_context io;
  EXPECT_THROW(run_tasks(io, {0.0, 0.0}, 0,
                         [&](size_t i) -> boost::asio::awaitable<void> {
                           if (i == 1) throw ds::Error("task failed");
                           co_return;
                         }),
               ds::Error);
}

TEST(BenchProgress, PlainLinesEveryTenPercentWhenNotATerminal) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  {
    Progress p("bench", 20, /*enabled=*/true, f);
    for (int i = 0; i < 20; ++i) p.advance(i != 3);
    p.finish();
  }
  std::rewind(f);
  std::vector<std::string> lines;
  char buf[256];
  while (std::fgets(buf, sizeof buf, f)) lines.emplace_back(buf);
  std::fclose(f);
  ASSERT_EQ(lines.size(), 10u);  // at 2, 4, ..., 20 of 20
  EXPECT_EQ(lines[0].rfind("bench: 2/20 requests done", 0), 0u) << lines[0];
  EXPECT_NE(lines[1].find("1 failed"), std::string::npos) << lines[1];
  EXPECT_EQ(lines[9].rfind("bench: 20/20 requests done", 0), 0u) << lines[9];
}

namespace {

// Issue 13's long prompt: one random 1,048,000-token prompt (Kimi's vocabulary), drawn and serialised fast.
TEST(BenchDataset, MillionTokenRandomPrompt) {
  RandomDatasetOptions o;
  o.input_len = 1048000;
  o.output_len = 32;
  o.range_ratio = 0.0;
  o.vocab_size = 163840;
  const auto t0 = std::chrono::steady_clock::now();
  const auto ps = make_random_dataset(o, 1, EndpointType::Completions, 9);
  const std::string body = ps[0].prompt.dump();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("  1,048,000-token random prompt: drawn and serialised (%.1f MB) in %.3f s\n", double(body.size()) / 1e6,
              secs);
  ASSERT_EQ(ps[0].prompt_len, 1048000);
  ASSERT_EQ(ps[0].prompt.size(), 1048000u);
  EXPECT_EQ(ps[0].max_tokens, 32);
  EXPECT_LT(body.size(), size_t(32) << 20);  // within the server's default body limit
}

}  // namespace
