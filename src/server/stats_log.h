// The periodic stats line at info level (as vLLM's "Avg prompt throughput ..." line): prompt and
// generation throughput over the last interval, running and waiting requests, KV-cache and
// KDA-state usage, preemptions, and the progress of the longest prefill in progress when its prompt is
// long. Quiet while the engine is idle and nothing changed.
#pragma once
#include <chrono>
#include <optional>
#include <string>

#include "engine/engine.h"

namespace ds::server {

class StatsLogger {
 public:
  using Clock = std::chrono::steady_clock;
  // Prompts at least this long get a progress note (done/total, time left) while they prefill.
  static constexpr int64_t kProgressMinTokens = 32768;
  StatsLogger(std::chrono::duration<double> interval, Clock::time_point start);
  // The line to log when `interval` has passed since the last one and there was activity (tokens
  // computed, requests running or waiting); nullopt otherwise.
  std::optional<std::string> tick(const EngineStats& s, Clock::time_point now);

 private:
  std::chrono::duration<double> interval_;
  Clock::time_point last_;
  EngineStats prev_{};
};

}  // namespace ds::server
