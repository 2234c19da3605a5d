// Per-row token masks of one step: a bitset over the vocabulary per logits row (bit t % 32 of word t / 32
// set: token t may be sampled), built by the engine from the request's grammar, allowed_token_ids,
// bad_words and min_tokens. The engine may fill them on a worker thread while the backend runs the
// forward: the backend calls wait() just before sampling (it returns at once when they are ready), so
// a step never waits on the grammar unless the masks are late. A row without a mask (has(r) false)
// samples from the whole vocabulary.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <vector>

namespace ds {

class StepMasks {
 public:
  StepMasks(int rows, int vocab)
      : rows_(rows), vocab_(vocab), words_((vocab + 31) / 32), bits_(size_t(rows) * size_t(words_), 0u),
        has_(size_t(rows), 0) {}
  int rows() const { return rows_; }
  int vocab() const { return vocab_; }
  int words() const { return words_; }  // uint32 words per row
  uint32_t* row(int r) { return bits_.data() + size_t(r) * size_t(words_); }
  const uint32_t* row(int r) const { return bits_.data() + size_t(r) * size_t(words_); }
  const uint32_t* data() const { return bits_.data(); }  // [rows, words]
  bool has(int r) const { return has_[size_t(r)] != 0; }
  void set_has(int r, bool v) { has_[size_t(r)] = v ? 1 : 0; }
  bool any() const {
    for (uint8_t h : has_)
      if (h) return true;
    return false;
  }
  static bool allowed(const uint32_t* row, int32_t t) { return (row[t >> 5] >> (t & 31)) & 1u; }

  // Producer: all rows written (or failed with `e`: wait() rethrows it).
  void publish(std::exception_ptr e = nullptr) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      ready_ = true;
      error_ = e;
    }
    cv_.notify_all();
  }
  // Consumer (the backend, before sampling).
  void wait() const {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return ready_; });
    if (error_) std::rethrow_exception(error_);
  }

 private:
  int rows_, vocab_, words_;
  std::vector<uint32_t> bits_;
  std::vector<uint8_t> has_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  bool ready_ = false;
  std::exception_ptr error_;
};

}  // namespace ds
