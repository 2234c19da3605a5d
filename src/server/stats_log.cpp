#include "server/stats_log.h"

#include <fmt/format.h>

namespace ds::server {

StatsLogger::StatsLogger(std::chrono::duration<double> interval, Clock::time_point start)
    : interval_(interval), last_(start) {}

std::optional<std::string> StatsLogger::tick(const EngineStats& s, Clock::time_point now) {
  const double dt = std::chrono::duration<double>(now - last_).count();
  if (dt < interval_.count()) return std::nullopt;
  const int64_t prompt = s.prompt_tokens_total - prev_.prompt_tokens_total;
  const int64_t gen = s.generation_tokens_total - prev_.generation_tokens_total;
  const int64_t preempt = s.num_preemptions - prev_.num_preemptions;
  const bool active = prompt > 0 || gen > 0 || s.running > 0 || s.waiting > 0 || preempt > 0;
  last_ = now;
  prev_ = s;
  if (!active) return std::nullopt;
  return fmt::format(
      "stats: prompt throughput {:.1f} tokens/s, generation throughput {:.1f} tokens/s, running {} reqs, "
      "waiting {} reqs, KV cache usage {:.1f}%, KDA state usage {:.1f}%, preemptions {}",
      double(prompt) / dt, double(gen) / dt, s.running, s.waiting, 100.0 * s.kv_usage, 100.0 * s.state_usage, preempt);
}

}  // namespace ds::server
