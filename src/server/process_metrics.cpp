#include "server/process_metrics.h"

#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

namespace ds::server {

namespace {

void family(std::string* out, const char* name, const char* type, const char* help, double value) {
  *out += fmt::format("# HELP {} {}\n# TYPE {} {}\n{} {}\n", name, help, name, type, name, value);
}

// Fields of /proc/self/stat after the command name (field 3 onwards, 1-based numbering of proc(5)).
std::vector<std::string> stat_fields() {
  std::ifstream f("/proc/self/stat");
  std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto close = all.rfind(')');
  if (close == std::string::npos) return {};
  std::istringstream rest(all.substr(close + 2));
  std::vector<std::string> out;
  for (std::string t; rest >> t;) out.push_back(t);
  return out;  // out[0] is field 3 (state)
}

double boot_time() {
  std::ifstream f("/proc/stat");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("btime ", 0) == 0) return std::stod(line.substr(6));
  return -1;
}

}  // namespace

void render_process_metrics(std::string* out) {
  const double ticks = double(sysconf(_SC_CLK_TCK));
  const double page = double(sysconf(_SC_PAGESIZE));
  const std::vector<std::string> st = stat_fields();
  if (st.size() > 21 && ticks > 0) {
    const double utime = std::stod(st[11]), stime = std::stod(st[12]);  // fields 14, 15
    family(out, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.",
           (utime + stime) / ticks);
    family(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", std::stod(st[20]));
    family(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", std::stod(st[21]) * page);
    const double bt = boot_time();
    if (bt > 0)
      family(out, "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.",
             bt + std::stod(st[19]) / ticks);  // field 22: start time in ticks after boot
  }
  std::error_code ec;
  int64_t fds = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec); !ec && it != std::filesystem::directory_iterator();
       it.increment(ec))
    ++fds;
  if (!ec) family(out, "process_open_fds", "gauge", "Number of open file descriptors.", double(fds));
  const long max_fds = sysconf(_SC_OPEN_MAX);
  if (max_fds > 0) family(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.", double(max_fds));
}

}  // namespace ds::server
