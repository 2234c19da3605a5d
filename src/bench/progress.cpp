#include "bench/progress.h"

#include <fmt/format.h>
#include <unistd.h>

namespace ds::bench {

Progress::Progress(std::string label, int64_t total, bool enabled, std::FILE* out)
    : label_(std::move(label)),
      total_(total),
      enabled_(enabled && total > 0),
      tty_(isatty(fileno(out)) != 0),
      out_(out),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {
  if (enabled_ && tty_) draw();
}

void Progress::advance(bool success) {
  ++done_;
  if (!success) ++failed_;
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (tty_) {
    if (now - last_draw_ >= std::chrono::milliseconds(100) || done_ == total_) draw();
  } else if (done_ * 10 >= next_decile_ * total_) {
    while (done_ * 10 >= next_decile_ * total_) ++next_decile_;
    draw();
  }
}

void Progress::finish() {
  if (!enabled_ || finished_) return;
  finished_ = true;
  if (tty_) {
    draw();
    std::fputc('\n', out_);
    std::fflush(out_);
  }
}

void Progress::draw() {
  last_draw_ = std::chrono::steady_clock::now();
  const double elapsed = std::chrono::duration<double>(last_draw_ - start_).count();
  const double rate = elapsed > 0 ? static_cast<double>(done_) / elapsed : 0.0;
  std::string failed = failed_ ? fmt::format(", {} failed", failed_) : std::string();
  if (tty_) {
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(kWidth * done_ / total_);
    fmt::print(out_, "\r{} [{}{}] {}/{} ({:.1f} s, {:.2f} req/s{})\x1b[K", label_, std::string(filled, '#'),
               std::string(kWidth - filled, '.'), done_, total_, elapsed, rate, failed);
  } else {
    fmt::print(out_, "{}: {}/{} requests done ({:.1f} s, {:.2f} req/s{})\n", label_, done_, total_, elapsed, rate,
               failed);
  }
  std::fflush(out_);
}

}  // namespace ds::bench
