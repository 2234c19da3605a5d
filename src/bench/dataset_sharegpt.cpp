#include "bench/dataset_sharegpt.h"

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <fstream>
#include <nlohmann/json.hpp>

#include "bench/task_runner.h"
#include "core/error.h"
#include "core/log.h"
#include "tokenizer/tokenizer.h"

namespace ds::bench {

using nlohmann::json;

// ---- PyRandom: MT19937 seeded as CPython's random_seed (init_by_array over the 32-bit words of the seed).

namespace {
constexpr int kN = 624, kM = 397;
}  // namespace

void PyRandom::seed(uint64_t seed) {
  uint32_t key[2] = {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
  const int key_len = key[1] ? 2 : 1;  // Python: the seed's 32-bit words, at least one
  mt_[0] = 19650218U;
  for (int i = 1; i < kN; ++i) mt_[i] = 1812433253U * (mt_[i - 1] ^ (mt_[i - 1] >> 30)) + static_cast<uint32_t>(i);
  int i = 1, j = 0;
  for (int k = std::max(kN, key_len); k; --k) {
    mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1664525U)) + key[j] + static_cast<uint32_t>(j);
    if (++i >= kN) {
      mt_[0] = mt_[kN - 1];
      i = 1;
    }
    if (++j >= key_len) j = 0;
  }
  for (int k = kN - 1; k; --k) {
    mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1566083941U)) - static_cast<uint32_t>(i);
    if (++i >= kN) {
      mt_[0] = mt_[kN - 1];
      i = 1;
    }
  }
  mt_[0] = 0x80000000U;
  index_ = kN;
}

uint32_t PyRandom::genrand_uint32() {
  constexpr uint32_t kUpper = 0x80000000U, kLower = 0x7fffffffU, kMatrix = 0x9908b0dfU;
  if (index_ >= kN) {
    for (int k = 0; k < kN; ++k) {
      const uint32_t y = (mt_[k] & kUpper) | (mt_[(k + 1) % kN] & kLower);
      mt_[k] = mt_[(k + kM) % kN] ^ (y >> 1) ^ ((y & 1U) ? kMatrix : 0U);
    }
    index_ = 0;
  }
  uint32_t y = mt_[index_++];
  y ^= y >> 11;
  y ^= (y << 7) & 0x9d2c5680U;
  y ^= (y << 15) & 0xefc60000U;
  y ^= y >> 18;
  return y;
}

uint32_t PyRandom::getrandbits(int k) {
  DS_CHECK(k >= 1 && k <= 32, "getrandbits({}): k must be in [1, 32]", k);
  return genrand_uint32() >> (32 - k);
}

uint64_t PyRandom::randbelow(uint64_t n) {
  DS_CHECK(n >= 1 && n <= (uint64_t(1) << 32), "randbelow({}) is out of range", n);
  int k = 0;
  while (k < 64 && (n >> k)) ++k;  // n.bit_length()
  auto bits = [&] {
    if (k <= 32) return uint64_t(getrandbits(k));
    const uint64_t lo = genrand_uint32();  // Python fills the low word first
    return lo | (uint64_t(genrand_uint32() >> (64 - k)) << 32);
  };
  uint64_t r = bits();
  while (r >= n) r = bits();
  return r;
}

// ---- Loading: a SAX pass that keeps only the first two turns' text of each conversation.

namespace {

class ShareGptReader : public nlohmann::json_sax<json> {
 public:
  explicit ShareGptReader(const std::string& path) : path_(path) {}
  std::vector<ShareGptPair> pairs;
  int64_t entries = 0;

  bool null() override { return scalar(nullptr); }
  bool boolean(bool) override { return scalar(nullptr); }
  bool number_integer(number_integer_t) override { return scalar(nullptr); }
  bool number_unsigned(number_unsigned_t) override { return scalar(nullptr); }
  bool number_float(number_float_t, const string_t&) override { return scalar(nullptr); }
  bool string(string_t& s) override { return scalar(&s); }
  bool binary(binary_t&) override { return scalar(nullptr); }
  bool start_object(std::size_t) override { return open(Ctx::Turn); }
  bool start_array(std::size_t) override { return open(Ctx::Conversations); }
  bool key(string_t& k) override {
    key_ = k;
    return true;
  }
  bool end_object() override { return close(); }
  bool end_array() override { return close(); }
  bool parse_error(std::size_t pos, const std::string&, const nlohmann::detail::exception& e) override {
    fail("{}: not valid JSON (byte {}): {}", path_, pos, e.what());
  }

 private:
  // What the innermost open container is. Entry/Turn are objects; Entries/Conversations arrays.
  enum class Ctx { Entries, Entry, Conversations, Turn, Skip };

  // A container opens: `as` is what it is in a place that wants one of our containers (Turn for objects,
  // Conversations for arrays); the place decides.
  bool open(Ctx as) {
    const bool object = as == Ctx::Turn;
    if (stack_.empty()) {
      if (object) fail("{}: not a ShareGPT file: expected a JSON array of conversations, found an object", path_);
      stack_.push_back(Ctx::Entries);
      return true;
    }
    switch (stack_.back()) {
      case Ctx::Entries:
        if (!object)
          fail("{}: entry {} is not an object (ShareGPT entries are {{\"conversations\": [...]}})", path_, entries);
        stack_.push_back(Ctx::Entry);
        turns_ = 0;
        problem_.clear();
        current_ = {};
        return true;
      case Ctx::Entry:
        if (key_ == "conversations") {
          if (object) fail("{}: entry {}: \"conversations\" is not an array", path_, entries);
          stack_.push_back(Ctx::Conversations);
          return true;
        }
        break;
      case Ctx::Conversations: {
        const int64_t t = turns_++;
        if (t < 2) {
          if (!object && problem_.empty()) problem_ = fmt::format("conversations[{}] is not an object", t);
          stack_.push_back(object ? Ctx::Turn : Ctx::Skip);
          value_seen_ = false;
          return true;
        }
        break;
      }
      default: break;
    }
    stack_.push_back(Ctx::Skip);
    return true;
  }

  bool scalar(string_t* s) {
    if (stack_.empty()) fail("{}: not a ShareGPT file: expected a JSON array of conversations", path_);
    switch (stack_.back()) {
      case Ctx::Entries:
        fail("{}: entry {} is not an object (ShareGPT entries are {{\"conversations\": [...]}})", path_, entries);
      case Ctx::Entry:
        if (key_ == "conversations") fail("{}: entry {}: \"conversations\" is not an array", path_, entries);
        break;
      case Ctx::Conversations: {
        const int64_t t = turns_++;
        if (t < 2 && problem_.empty()) problem_ = fmt::format("conversations[{}] is not an object", t);
        break;
      }
      case Ctx::Turn:
        if (key_ == "value") {
          value_seen_ = true;
          if (!s) {
            if (problem_.empty()) problem_ = fmt::format("conversations[{}].value is not a string", turns_ - 1);
          } else {
            (turns_ == 1 ? current_.prompt : current_.completion) = std::move(*s);
          }
        }
        break;
      case Ctx::Skip: break;
    }
    return true;
  }

  bool close() {
    const Ctx c = stack_.back();
    stack_.pop_back();
    if (c == Ctx::Turn && !value_seen_ && problem_.empty())
      problem_ = fmt::format("conversations[{}] has no \"value\"", turns_ - 1);
    if (c == Ctx::Entry) {
      if (turns_ >= 2) {  // vLLM keeps entries with 2+ turns; only those must be well formed
        if (!problem_.empty()) fail("{}: entry {}: {}", path_, entries, problem_);
        pairs.push_back(std::move(current_));
      }
      ++entries;
    }
    return true;
  }

  const std::string& path_;
  std::vector<Ctx> stack_;
  std::string key_, problem_;
  ShareGptPair current_;
  int64_t turns_ = 0;
  bool value_seen_ = false;
};

}  // namespace

std::vector<ShareGptPair> load_sharegpt_pairs(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  DS_CHECK(in.good(), "cannot open --dataset-path {}", path);
  ShareGptReader reader(path);
  json::sax_parse(in, &reader);
  spdlog::info("{}: {} conversations, {} with at least 2 turns", path, reader.entries, reader.pairs.size());
  return std::move(reader.pairs);
}

// ---- Sampling

bool sharegpt_pair_valid(int64_t prompt_len, int64_t output_len, bool fixed_output) {
  constexpr int64_t kMinLen = 4, kMaxPrompt = 1024, kMaxTotal = 2048;
  if (prompt_len < kMinLen || (!fixed_output && output_len < kMinLen)) return false;
  return prompt_len <= kMaxPrompt && prompt_len + output_len <= kMaxTotal;
}

std::vector<BenchPrompt> sample_sharegpt(std::vector<ShareGptPair> pairs, const ShareGptOptions& o, int64_t num_prompts,
                                         EndpointType type, uint64_t seed, const CountTokens& count,
                                         const std::string& source) {
  DS_CHECK(num_prompts > 0, "--num-prompts must be positive for ShareGPT");
  DS_CHECK(o.output_len >= 0, "--sharegpt-output-len must be positive");
  DS_CHECK(!pairs.empty(), "{}: no conversation with at least 2 turns", source);
  if (o.shuffle) PyRandom(seed).shuffle(pairs);
  const bool fixed = o.output_len > 0;
  const size_t want = static_cast<size_t>(num_prompts);
  std::vector<BenchPrompt> out;
  size_t next = 0, skipped = 0;
  while (out.size() < want && next < pairs.size()) {
    // Count a batch a little larger than what is still missing (some pairs are skipped).
    const size_t missing = want - out.size();
    const size_t batch = std::min({pairs.size() - next, missing + missing / 2 + 8, size_t(1024)});
    std::vector<std::string> texts;
    for (size_t i = next; i < next + batch; ++i) {
      texts.push_back(pairs[i].prompt);
      if (!fixed) texts.push_back(pairs[i].completion);
    }
    const std::vector<int64_t> counts = count(texts);
    DS_CHECK(counts.size() == texts.size(), "token counter returned {} counts for {} texts", counts.size(),
             texts.size());
    const size_t per = fixed ? 1 : 2;
    for (size_t b = 0; b < batch && out.size() < want; ++b) {
      const int64_t prompt_len = counts[b * per];
      const int64_t output_len = fixed ? o.output_len : counts[b * per + 1];
      if (!sharegpt_pair_valid(prompt_len, output_len, fixed)) {
        ++skipped;
        continue;
      }
      std::string& text = pairs[next + b].prompt;
      BenchPrompt p;
      p.max_tokens = output_len;
      if (type == EndpointType::Chat) {
        p.prompt = user_messages(std::move(text));
      } else {
        p.prompt = std::move(text);
        p.prompt_len = prompt_len;
      }
      out.push_back(std::move(p));
    }
    next += batch;
  }
  DS_CHECK(!out.empty(),
           "{}: no valid prompt/output pair among {} conversations: every one has a prompt under 4 or over 1024 "
           "tokens, an output under 4 tokens, or more than 2048 tokens in all",
           source, pairs.size());
  const size_t found = out.size();
  if (found < want && o.oversample) {
    PyRandom rng(seed);  // vLLM reseeds, then random.choice over the valid pairs
    for (size_t i = found; i < want; ++i) out.push_back(out[static_cast<size_t>(rng.randbelow(found))]);
  }
  spdlog::info(
      "sharegpt: {} valid pairs from {} counted ({} skipped by vLLM's length rules){}", found, found + skipped, skipped,
      found < want
          ? (o.oversample ? fmt::format(", oversampled to {}", want) : fmt::format(", fewer than the {} asked", want))
          : std::string());
  return out;
}

// ---- Token counters

CountTokens tokenizer_counter(const std::string& dir) {
  std::shared_ptr<const Tokenizer> tok = Tokenizer::from_dir(dir);
  return [tok](const std::vector<std::string>& texts) {
    std::vector<int64_t> counts;
    counts.reserve(texts.size());
    for (const auto& t : texts) counts.push_back(static_cast<int64_t>(tok->encode(t).size()));
    return counts;
  };
}

CountTokens server_counter(const ServerAddress& addr, const std::string& model, const std::string& api_key,
                           double timeout_s, int64_t parallel) {
  return [=](const std::vector<std::string>& texts) {
    std::vector<int64_t> counts(texts.size(), -1);
    std::string error;
    boost::asio::io_context io;
    HttpClient client(io.get_executor(), addr, timeout_s);
    run_tasks(io, std::vector<double>(texts.size(), 0.0), parallel, [&](size_t i) -> boost::asio::awaitable<void> {
      if (!error.empty()) co_return;
      const json body = {{"model", model}, {"prompt", texts[i]}};
      // A named request: GCC mishandles an aggregate temporary inside a co_await expression (double free).
      HttpRequest req{"POST", "/tokenize", body.dump(-1, ' ', false, json::error_handler_t::replace), api_key};
      HttpResult r = co_await client.request(std::move(req));
      if (!r.transport_error.empty()) {
        if (error.empty()) error = r.transport_error;
        co_return;
      }
      if (!r.ok()) {
        if (error.empty()) error = http_error_message(r.status, r.body);
        co_return;
      }
      const json j = json::parse(r.body, nullptr, false);
      if (j.is_object() && j.contains("count") && j["count"].is_number_integer()) counts[i] = j["count"].get<int64_t>();
      else if (j.is_object() && j.contains("tokens") && j["tokens"].is_array())
        counts[i] = static_cast<int64_t>(j["tokens"].size());
      else if (error.empty()) error = "the reply has neither \"count\" nor \"tokens\": " + r.body.substr(0, 200);
    });
    if (!error.empty())
      fail("counting ShareGPT tokens with POST {}/tokenize failed: {} (pass --tokenizer DIR to count them locally)",
           addr.url(), error);
    return counts;
  };
}

}  // namespace ds::bench
