// Timing helpers for the GPU benchmarks: CUDA-event timing of a callable after warm-up (median of
// repetitions), the measured H200 ceilings the results are compared with, and a result table.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "cuda/cuda_check.h"

namespace ds::bench {

constexpr double kBandwidth = 4.3e12;  // bytes/s: measured device-to-device copy on the H200 (perf.md)
constexpr double kBf16Flops = 790e12;  // FLOP/s: measured dense bf16 GEMM on the H200

// Median milliseconds of fn() on `s` (events around each call), after `warmup` calls.
inline double time_ms(cudaStream_t s, const std::function<void()>& fn, int reps = 20, int warmup = 3) {
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t a, b;
  DS_CUDA_CHECK(cudaEventCreate(&a));
  DS_CUDA_CHECK(cudaEventCreate(&b));
  std::vector<float> t;
  for (int i = 0; i < reps; ++i) {
    DS_CUDA_CHECK(cudaEventRecord(a, s));
    fn();
    DS_CUDA_CHECK(cudaEventRecord(b, s));
    DS_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    DS_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct Row {
  std::string name;
  double ms;
  double floor_ms;  // roofline for the same shape
  std::string note;
};

inline void print_table(const char* title, const std::vector<Row>& rows) {
  std::printf("\n%s\n", title);
  std::printf("| %-44s | %10s | %10s | %6s | %s\n", "what", "median ms", "floor ms", "floor%", "note");
  for (const auto& r : rows)
    std::printf("| %-44s | %10.4f | %10.4f | %5.0f%% | %s\n", r.name.c_str(), r.ms, r.floor_ms,
                r.ms > 0 ? 100.0 * r.floor_ms / r.ms : 0.0, r.note.c_str());
  std::fflush(stdout);
}

}  // namespace ds::bench
