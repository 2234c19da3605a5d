// The standard process_* metrics of Prometheus client libraries (what node and vLLM dashboards
// read), from /proc/self: CPU seconds, resident and virtual memory, open and maximum file
// descriptors, start time. Linux only; on a read failure the metric is left out.
#pragma once
#include <string>

namespace ds::server {

// Appends the process_* families (HELP, TYPE, one sample each) to `out`.
void render_process_metrics(std::string* out);

}  // namespace ds::server
