// The engine's plain output plumbing (engine/engine.h): finish reason names, the Notifier a consumer
// sleeps on, and a request's output stream.
#include "engine/engine.h"

namespace ds {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::None: return "";
    case FinishReason::Stop: return "stop";
    case FinishReason::Length: return "length";
    case FinishReason::Abort: return "abort";
    case FinishReason::Error: return "error";
  }
  return "";
}

void Notifier::notify() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    ++count_;
  }
  cv_.notify_all();
}

uint64_t Notifier::wait(uint64_t seen) {
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait(lk, [&] { return count_ != seen; });
  return count_;
}

uint64_t Notifier::count() const {
  std::lock_guard<std::mutex> lk(mu_);
  return count_;
}

std::optional<GenerationOutput> RequestStream::next(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lk(mu_);
  if (!cv_.wait_for(lk, timeout, [&] { return !q_.empty(); })) return std::nullopt;
  GenerationOutput out = std::move(q_.front());
  q_.pop_front();
  return out;
}

std::optional<GenerationOutput> RequestStream::try_next() {
  std::lock_guard<std::mutex> lk(mu_);
  if (q_.empty()) return std::nullopt;
  GenerationOutput out = std::move(q_.front());
  q_.pop_front();
  return out;
}

void RequestStream::set_notifier(std::shared_ptr<Notifier> n) {
  bool queued = false;
  {
    std::lock_guard<std::mutex> lk(mu_);
    notifier_ = n;
    queued = !q_.empty();
  }
  if (queued && n) n->notify();
}

void RequestStream::push(GenerationOutput out) {
  std::shared_ptr<Notifier> n;
  {
    std::lock_guard<std::mutex> lk(mu_);
    q_.push_back(std::move(out));
    n = notifier_;
  }
  cv_.notify_all();
  if (n) n->notify();
}

}  // namespace ds
