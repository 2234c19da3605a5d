// Progress of a run on stderr: a redrawn bar when stderr is a terminal, else a plain line every 10%.
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace ds::bench {

class Progress {
 public:
  // enabled false: prints nothing. out: where to draw (stderr); the terminal check is isatty(out).
  Progress(std::string label, int64_t total, bool enabled, std::FILE* out = stderr);
  void advance(bool success);  // one request finished
  void finish();               // final redraw and newline

 private:
  void draw();

  std::string label_;
  int64_t total_, done_ = 0, failed_ = 0;
  bool enabled_, tty_;
  std::FILE* out_;
  std::chrono::steady_clock::time_point start_, last_draw_;
  int64_t next_decile_ = 1;
  bool finished_ = false;
};

}  // namespace ds::bench
