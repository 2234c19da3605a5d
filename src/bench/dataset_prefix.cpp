#include "bench/dataset_prefix.h"

#include <algorithm>
#include <random>

#include "core/error.h"

namespace ds::bench {

using nlohmann::json;

namespace {

std::vector<int64_t> random_ids(std::mt19937_64& rng, int64_t n, int64_t vocab) {
  std::uniform_int_distribution<int64_t> token(0, vocab - 1);
  std::vector<int64_t> ids(static_cast<size_t>(n));
  for (auto& id : ids) id = token(rng);
  return ids;
}

void append(std::vector<int64_t>* a, const std::vector<int64_t>& b) { a->insert(a->end(), b.begin(), b.end()); }

}  // namespace

std::vector<BenchPrompt> make_shared_prefix_dataset(const SharedPrefixOptions& o, EndpointType type, uint64_t seed) {
  DS_CHECK(o.groups > 0 && o.prompts_per_group > 0, "--shared-prefix-groups and --shared-prefix-prompts must be positive");
  DS_CHECK(o.prefix_len >= 0 && o.suffix_len > 0 && o.output_len > 0 && o.vocab_size > 0,
           "shared-prefix lengths: prefix >= 0, suffix and output > 0");
  std::mt19937_64 rng(seed);
  std::vector<BenchPrompt> out;
  for (int64_t g = 0; g < o.groups; ++g) {
    const std::vector<int64_t> prefix = random_ids(rng, o.prefix_len, o.vocab_size);
    for (int64_t i = 0; i < o.prompts_per_group; ++i) {
      std::vector<int64_t> ids = prefix;
      append(&ids, random_ids(rng, o.suffix_len, o.vocab_size));
      BenchPrompt p;
      p.max_tokens = o.output_len;
      if (type == EndpointType::Completions) {
        p.prompt_len = int64_t(ids.size());
        p.prompt = std::move(ids);
      } else {
        p.prompt = user_messages(words_text(ids));
      }
      out.push_back(std::move(p));
    }
  }
  std::shuffle(out.begin(), out.end(), rng);
  return out;
}

std::vector<BenchPrompt> make_multi_turn_dataset(const MultiTurnOptions& o, EndpointType type, uint64_t seed) {
  DS_CHECK(o.conversations > 0 && o.turns > 0, "--multi-turn-conversations and --multi-turn-turns must be positive");
  DS_CHECK(o.question_len > 0 && o.answer_len > 0 && o.vocab_size > 0, "multi-turn lengths must be positive");
  std::mt19937_64 rng(seed);
  std::vector<std::vector<int64_t>> ids(static_cast<size_t>(o.conversations));
  std::vector<json> messages(static_cast<size_t>(o.conversations), json::array());
  std::vector<BenchPrompt> out;
  for (int64_t t = 0; t < o.turns; ++t) {
    for (size_t c = 0; c < ids.size(); ++c) {
      if (t > 0) {  // the previous turn's stand-in answer
        const auto answer = random_ids(rng, o.answer_len, o.vocab_size);
        append(&ids[c], answer);
        messages[c].push_back(json{{"role", "assistant"}, {"content", words_text(answer)}});
      }
      const auto question = random_ids(rng, t == 0 && o.first_len > 0 ? o.first_len : o.question_len, o.vocab_size);
      append(&ids[c], question);
      messages[c].push_back(json{{"role", "user"}, {"content", words_text(question)}});
      BenchPrompt p;
      p.max_tokens = o.answer_len;
      if (type == EndpointType::Completions) {
        p.prompt = ids[c];
        p.prompt_len = int64_t(ids[c].size());
      } else {
        p.prompt = messages[c];
      }
      out.push_back(std::move(p));
    }
  }
  return out;
}

}  // namespace ds::bench
