#include "dist/in_process.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace ds {

class InProcessComm : public Communicator {
 public:
  InProcessComm(InProcessGroup& g, int rank) : g_(g), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return g_.size_; }

  void all_reduce_sum(std::span<float> data) override {
    publish(data.data(), data.size(), data.data(), data.size());
    g_.wait();
    g_.check_sizes("all_reduce_sum", 1);
    // Reduce-scatter: this rank's share of the elements, summed in rank order.
    const size_t n = data.size(), N = size_t(g_.size_), lo = n * size_t(rank_) / N, hi = n * size_t(rank_ + 1) / N;
    sum_.assign(hi - lo, 0.0f);
    for (size_t r = 0; r < N; ++r) {
      const float* src = static_cast<const float*>(g_.slots_[r].in) + lo;
      for (size_t i = 0; i < hi - lo; ++i) sum_[i] += src[i];
    }
    g_.wait();  // every rank has read every input: the buffers may be overwritten
    for (size_t r = 0; r < N; ++r)
      if (hi > lo) std::memcpy(static_cast<float*>(g_.slots_[r].out) + lo, sum_.data(), (hi - lo) * sizeof(float));
    g_.wait();  // every share is in place everywhere
  }

  void all_gather(std::span<const float> in, std::span<float> out) override {
    publish(in.data(), in.size(), out.data(), out.size());
    g_.wait();
    g_.check_sizes("all_gather", size_t(g_.size_));
    for (int r = 0; r < g_.size_; ++r)
      if (!in.empty())
        std::memcpy(out.data() + size_t(r) * in.size(), g_.slots_[size_t(r)].in, in.size() * sizeof(float));
    g_.wait();  // the inputs stay alive until every rank has copied them
  }

  void broadcast(std::span<std::byte> data, int root) override {
    DS_CHECK(root >= 0 && root < g_.size_, "broadcast: root {} is outside 0..{}", root, g_.size_ - 1);
    publish(data.data(), data.size(), data.data(), data.size());
    g_.wait();
    g_.check_sizes("broadcast", 1);
    if (rank_ != root && !data.empty()) std::memcpy(data.data(), g_.slots_[size_t(root)].in, data.size());
    g_.wait();
  }

  void barrier() override { g_.wait(); }

 private:
  void publish(const void* in, size_t in_size, void* out, size_t out_size) {
    g_.slots_[size_t(rank_)] = {in, out, in_size, out_size};  // read by the others after the next wait()
  }

  InProcessGroup& g_;
  int rank_;
  std::vector<float> sum_;
};

InProcessGroup::InProcessGroup(int size) : size_(size) {
  DS_CHECK(size >= 1, "in-process group: size {} must be at least 1", size);
  slots_.resize(size_t(size));
  for (int r = 0; r < size; ++r) comms_.push_back(std::make_unique<InProcessComm>(*this, r));
}

InProcessGroup::~InProcessGroup() = default;

Communicator& InProcessGroup::comm(int rank) {
  DS_CHECK(rank >= 0 && rank < size_, "in-process group: rank {} is outside 0..{}", rank, size_ - 1);
  return *comms_[size_t(rank)];
}

void InProcessGroup::abort(const std::string& why) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (aborted_) return;
    aborted_ = true;
    why_ = why;
  }
  cv_.notify_all();
}

bool InProcessGroup::aborted() const {
  std::lock_guard<std::mutex> lk(mu_);
  return aborted_;
}

void InProcessGroup::wait() {
  std::unique_lock<std::mutex> lk(mu_);
  if (aborted_) fail("communicator aborted: {}", why_);
  const uint64_t gen = generation_;
  if (++arrived_ == size_) {
    arrived_ = 0;
    ++generation_;
    lk.unlock();
    cv_.notify_all();
    return;
  }
  cv_.wait(lk, [&] { return generation_ != gen || aborted_; });
  if (generation_ == gen) fail("communicator aborted: {}", why_);
}

void InProcessGroup::check_sizes(const char* what, size_t out_per_in) const {
  const Slot& s0 = slots_[0];
  for (int r = 1; r < size_; ++r) {
    const Slot& s = slots_[size_t(r)];
    DS_CHECK(s.in_size == s0.in_size, "{}: rank {} gave {} elements, rank 0 {}", what, r, s.in_size, s0.in_size);
  }
  for (int r = 0; r < size_; ++r) {
    const Slot& s = slots_[size_t(r)];
    const size_t want = s0.in_size * out_per_in;
    DS_CHECK(s.out_size == want, "{}: rank {} has room for {} elements, {} are needed", what, r, s.out_size, want);
  }
}

}  // namespace ds
