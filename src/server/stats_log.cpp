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
  const int64_t steps = s.steps - prev_.steps;
  const double sched_ms = (s.schedule_seconds - prev_.schedule_seconds) * 1e3,
               exec_ms = (s.execute_seconds - prev_.execute_seconds) * 1e3,
               update_ms = (s.update_seconds - prev_.update_seconds) * 1e3;
  const bool active = prompt > 0 || gen > 0 || s.running > 0 || s.waiting > 0 || preempt > 0;
  last_ = now;
  prev_ = s;
  if (!active) return std::nullopt;
  std::string line = fmt::format(
      "stats: prompt throughput {:.1f} tokens/s, generation throughput {:.1f} tokens/s, running {} reqs, "
      "waiting {} reqs, KV cache usage {:.1f}%, KDA state usage {:.1f}%, preemptions {}",
      double(prompt) / dt, double(gen) / dt, s.running, s.waiting, 100.0 * s.kv_usage, 100.0 * s.state_usage, preempt);
  // Where a step's wall time went (the device idles while the step thread plans and takes outputs).
  if (steps > 0)
    line += fmt::format(", steps {} (mean ms: schedule {:.3f}, execute {:.3f}, outputs {:.3f})", steps,
                        sched_ms / double(steps), exec_ms / double(steps), update_ms / double(steps));
  // A long prompt's progress (a 1M-token prefill takes minutes): how far, and how long left at the
  // interval's prompt throughput.
  if (s.prefill_total >= kProgressMinTokens && s.prefill_done < s.prefill_total) {
    line += fmt::format(", longest prefill {}/{} tokens ({:.1f}%)", s.prefill_done, s.prefill_total,
                        100.0 * double(s.prefill_done) / double(s.prefill_total));
    if (prompt > 0) line += fmt::format(", ~{:.0f} s left", double(s.prefill_total - s.prefill_done) * dt / double(prompt));
  }
  return line;
}

}  // namespace ds::server
