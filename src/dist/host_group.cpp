#include "dist/host_group.h"

#include <exception>
#include <thread>

namespace ds {

void broadcast_on_local_ranks(HostGroup& g, std::vector<uint8_t>& bytes) {
  const int first = g.first_local(), n = g.local_size();
  std::vector<std::vector<uint8_t>> got(static_cast<size_t>(n));
  std::vector<std::exception_ptr> errors(static_cast<size_t>(n));
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i)
    threads.emplace_back([&, i] {
      try {
        if (first + i == 0) got[size_t(i)] = bytes;
        broadcast_bytes(g.comm(first + i), got[size_t(i)], 0);
      } catch (const std::exception& e) {
        g.abort(e.what());
        errors[size_t(i)] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
  bytes = std::move(got.front());
}

}  // namespace ds
