#include "engine/token_controls.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "grammar/constraint.h"
#include "tokenizer/tokenizer.h"

namespace ds {
namespace {
void set_bit(uint32_t* row, int32_t t) { row[t >> 5] |= 1u << (t & 31); }
void clear_bit(uint32_t* row, int32_t t) { row[t >> 5] &= ~(1u << (t & 31)); }
}  // namespace

std::shared_ptr<const TokenIndex> make_token_index(const Tokenizer& tok, int model_vocab) {
  std::vector<std::string> bytes(static_cast<size_t>(model_vocab));
  std::vector<bool> special(static_cast<size_t>(model_vocab), false);
  for (int32_t id = 0; id < std::min(model_vocab, tok.vocab_size()); ++id) {
    bytes[size_t(id)] = tok.token_bytes(id);
    special[size_t(id)] = id >= tok.num_base_tokens();
  }
  return std::make_shared<const TokenIndex>(std::move(bytes), std::move(special));
}

void warm_token_masks(const TokenIndex& index) {
  ConstraintSpec s;
  s.kind = ConstraintSpec::Kind::JsonSchema;
  s.schema = nlohmann::ordered_json::parse(R"({"type":"object","properties":{"a":{"type":"string"},"b":{"type":"integer"},
      "c":{"type":"number"},"d":{},"e":{"type":"integer","minimum":0},"f":{"type":"number","minimum":0}}})");
  const auto g = compile_constraint(s);
  for (int n = 0; n < g->num_nodes(); ++n)
    if (g->node(n).scans) index.node_masks(*g, n);
}

std::unique_ptr<TokenControls> TokenControls::make(const GenerationRequest& req, std::vector<int32_t> stop_ids, int vocab,
                                                   std::shared_ptr<const TokenIndex> index) {
  if (!req.grammar && req.allowed_token_ids.empty() && req.bad_words.empty() && req.min_tokens <= 0) return nullptr;
  auto c = std::unique_ptr<TokenControls>(new TokenControls());
  c->vocab_ = vocab;
  c->words_ = (vocab + 31) / 32;
  if (req.grammar) {
    DS_CHECK(index && index->vocab_size() == vocab, "a grammar needs the tokenizer's vocabulary");
    c->matcher_ = std::make_unique<GrammarMatcher>(req.grammar, std::move(index));
  }
  if (!req.allowed_token_ids.empty()) {
    c->allowed_.assign(size_t(c->words_), 0u);
    for (int32_t t : req.allowed_token_ids) {
      DS_CHECK(t >= 0 && t < vocab, "allowed token id {} is outside the vocabulary", t);
      set_bit(c->allowed_.data(), t);
    }
  }
  c->bad_words_ = req.bad_words;
  c->min_tokens_ = req.min_tokens;
  stop_ids.erase(std::remove_if(stop_ids.begin(), stop_ids.end(), [&](int32_t t) { return t < 0 || t >= vocab; }),
                 stop_ids.end());
  c->stop_ids_ = std::move(stop_ids);
  return c;
}

void TokenControls::fill(uint32_t* row) {
  if (matcher_) {
    matcher_->fill_mask(row);
    if (matcher_->can_end())
      for (int32_t t : stop_ids_) set_bit(row, t);
  } else {
    std::memset(row, 0xff, size_t(words_) * 4);
    if (vocab_ % 32) row[words_ - 1] = (1u << (vocab_ % 32)) - 1;
  }
  if (!allowed_.empty()) {
    for (int w = 0; w < words_; ++w) row[w] &= allowed_[size_t(w)];
    if (matcher_ && matcher_->can_end())
      for (int32_t t : stop_ids_) set_bit(row, t);
  }
  for (const std::vector<int32_t>& bw : bad_words_) {
    if (bw.empty()) continue;
    const size_t n = bw.size() - 1;
    if (output_.size() >= n && std::equal(bw.begin(), bw.end() - 1, output_.end() - ptrdiff_t(n))) clear_bit(row, bw.back());
  }
  if (generated_ < min_tokens_)
    for (int32_t t : stop_ids_) clear_bit(row, t);
  bool any = false;
  for (int w = 0; w < words_ && !any; ++w) any = row[w] != 0;
  if (!any)
    for (int32_t t : stop_ids_) set_bit(row, t);  // nothing may follow: stop
}

bool TokenControls::on_token(int32_t token) {
  ++generated_;
  if (!bad_words_.empty()) output_.push_back(token);
  if (!matcher_) return false;
  if (!matcher_->accept_token(token)) return false;  // a stop token (not part of the grammar)
  return matcher_->terminated();
}

MaskWorker::MaskWorker() : thread_([this] { loop(); }) {}

MaskWorker::~MaskWorker() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void MaskWorker::run(std::function<void()> job) {
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait(lk, [&] { return !busy_; });
  job_ = std::move(job);
  busy_ = true;
  cv_.notify_all();
}

void MaskWorker::wait() {
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait(lk, [&] { return !busy_; });
}

void MaskWorker::loop() {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return stop_ || busy_; });
    if (busy_) {
      std::function<void()> job = std::move(job_);
      lk.unlock();
      job();  // reports its own errors (StepMasks::publish)
      lk.lock();
      busy_ = false;
      cv_.notify_all();
    } else if (stop_) {
      return;
    }
  }
}

}  // namespace ds
