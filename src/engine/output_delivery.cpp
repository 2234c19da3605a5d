#include "engine/output_delivery.h"

namespace ds {

OutputDelivery::OutputDelivery(std::function<void(Batch&)> deliver, bool on_thread) : deliver_(std::move(deliver)) {
  if (on_thread) thread_ = std::thread([this] { run(); });
}

OutputDelivery::~OutputDelivery() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void OutputDelivery::post(Batch batch) {
  if (batch.empty()) return;
  if (!thread_.joinable()) {
    deliver_(batch);
    return;
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    queue_.push_back(std::move(batch));
    ++posted_;
  }
  cv_.notify_one();
}

void OutputDelivery::flush() {
  std::unique_lock<std::mutex> lk(mu_);
  const uint64_t target = posted_;
  done_cv_.wait(lk, [&] { return delivered_ >= target; });
}

void OutputDelivery::run() {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and everything delivered
    Batch b = std::move(queue_.front());
    queue_.pop_front();
    lk.unlock();
    deliver_(b);
    lk.lock();
    ++delivered_;
    done_cv_.notify_all();
  }
}

}  // namespace ds
