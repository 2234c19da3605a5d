// A library for tests/core/test_shared_library.cpp: a thread of its own runs its code after the handle that
// loaded it is closed, as NCCL's bootstrap and proxy threads do.
#include <atomic>
#include <chrono>
#include <thread>

namespace {
std::atomic<int> g_state{0};  // 0 idle, 1 running, 2 finished
}

extern "C" {

// Starts a detached thread that runs this library's code for `ms` milliseconds, then sets the state to 2.
void ds_test_dso_start(int ms) {
  g_state.store(1);
  std::thread([ms] {
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    g_state.store(2);
  }).detach();
}

int ds_test_dso_state() { return g_state.load(); }

}  // extern "C"
