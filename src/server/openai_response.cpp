#include "server/openai_response.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <random>

#include "tokenizer/tokenizer.h"

namespace ds::server {

using nlohmann::json;

namespace {
std::mt19937_64& rng() {
  thread_local std::mt19937_64 gen{std::random_device{}() ^ (uint64_t(std::random_device{}()) << 32)};
  return gen;
}

// Characters (code points) of valid UTF-8 text: OpenAI's text_offset counts characters.
size_t num_chars(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// -inf logprobs are not valid JSON numbers; OpenAI clients expect a very negative value.
double finite(float lp) { return std::isfinite(lp) ? double(lp) : -9999.0; }

json bytes_of(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(int(c));
  return b;
}
}  // namespace

std::string make_request_id(const char* prefix) {
  return fmt::format("{}{:016x}{:08x}", prefix, rng()(), uint32_t(rng()()));
}

int64_t unix_time() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

uint64_t random_seed() { return rng()() >> 1; }

void seed_request_ids(uint64_t seed) { rng().seed(seed); }

json usage_json(int64_t prompt_tokens, int64_t completion_tokens, int64_t cached_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", cached_tokens}}}};
}

std::string sse_event(const json& j) {
  return "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

std::string token_text(const Tokenizer& tok, int32_t id, bool as_ids) {
  if (as_ids || !tok.is_valid(id)) return fmt::format("token_id:{}", id);
  return tok.decode({id});
}

CompletionLogprobs::CompletionLogprobs(const Tokenizer& tok, bool as_ids, const std::string& prefix)
    : tok_(tok), as_ids_(as_ids), offset_(num_chars(prefix)) {}

json CompletionLogprobs::add(const std::vector<SampleResult>& results) {
  json piece = {{"tokens", json::array()},
                {"token_logprobs", json::array()},
                {"top_logprobs", json::array()},
                {"text_offset", json::array()}};
  for (const auto& r : results) {
    std::string text = token_text(tok_, r.token, as_ids_);
    json top = json::object();
    for (const auto& [id, lp] : r.top_logprobs) top[token_text(tok_, id, as_ids_)] = finite(lp);
    top[text] = finite(r.logprob);  // the sampled token is always listed
    piece["tokens"].push_back(text);
    piece["token_logprobs"].push_back(finite(r.logprob));
    piece["top_logprobs"].push_back(std::move(top));
    piece["text_offset"].push_back(offset_);
    offset_ += num_chars(text);
  }
  for (const char* k : {"tokens", "token_logprobs", "top_logprobs", "text_offset"})
    for (const auto& v : piece[k]) all_[k].push_back(v);
  return piece;
}

json CompletionLogprobs::add_prompt(int32_t first_token, const std::vector<SampleResult>& scores, int top_k) {
  const std::string first = token_text(tok_, first_token, as_ids_);
  json piece = {{"tokens", json::array({first})},
                {"token_logprobs", json::array({nullptr})},
                {"top_logprobs", json::array({nullptr})},
                {"text_offset", json::array({offset_})}};
  offset_ += num_chars(first);
  for (const char* k : {"tokens", "token_logprobs", "top_logprobs", "text_offset"}) all_[k].push_back(piece[k][0]);
  std::vector<SampleResult> kept = scores;
  for (auto& r : kept)
    if (int(r.top_logprobs.size()) > top_k) r.top_logprobs.resize(size_t(std::max(0, top_k)));
  const json rest = add(kept);  // (appends to all_ too)
  for (const char* k : {"tokens", "token_logprobs", "top_logprobs", "text_offset"})
    for (const auto& v : rest[k]) piece[k].push_back(v);
  return piece;
}

json prompt_logprobs_json(const Tokenizer& tok, const std::vector<SampleResult>& scores, int top_k, bool as_ids) {
  json out = json::array({nullptr});  // the first prompt token: nothing precedes it
  for (const auto& r : scores) {
    json d = json::object();
    const int k = std::min<int>(top_k, int(r.top_logprobs.size()));
    json rank = r.rank > 0 ? json(r.rank) : json(nullptr);  // the engine's (every vocabulary entry counted)
    for (int j = 0; j < k; ++j) {
      const auto& [id, lp] = r.top_logprobs[size_t(j)];
      d[std::to_string(id)] = {{"logprob", finite(lp)}, {"rank", j + 1}, {"decoded_token", token_text(tok, id, as_ids)}};
      if (id == r.token && r.rank <= 0) rank = j + 1;
    }
    d[std::to_string(r.token)] = {{"logprob", finite(r.logprob)}, {"rank", rank},
                                  {"decoded_token", token_text(tok, r.token, as_ids)}};
    out.push_back(std::move(d));
  }
  return out;
}

json chat_logprobs_content(const Tokenizer& tok, const std::vector<SampleResult>& results, bool as_ids) {
  json content = json::array();
  for (const auto& r : results) {
    json top = json::array();
    for (const auto& [id, lp] : r.top_logprobs) {
      top.push_back({{"token", token_text(tok, id, as_ids)},
                     {"logprob", finite(lp)},
                     {"bytes", tok.is_valid(id) ? bytes_of(tok.token_bytes(id)) : json::array()}});
    }
    content.push_back({{"token", token_text(tok, r.token, as_ids)},
                       {"logprob", finite(r.logprob)},
                       {"bytes", tok.is_valid(r.token) ? bytes_of(tok.token_bytes(r.token)) : json::array()},
                       {"top_logprobs", std::move(top)}});
  }
  return content;
}

}  // namespace ds::server
