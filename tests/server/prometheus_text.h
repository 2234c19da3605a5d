// Reading one sample of a Prometheus text exposition in tests.
#pragma once
#include <string>

namespace ds::test {

// The value of the sample line `series value`; -1 when absent.
inline double prometheus_sample(const std::string& body, const std::string& series) {
  size_t pos = 0;
  while ((pos = body.find(series + " ", pos)) != std::string::npos) {
    if (pos == 0 || body[pos - 1] == '\n') return std::stod(body.substr(pos + series.size() + 1));
    pos += series.size();
  }
  return -1;
}

}  // namespace ds::test
