// A process-wide worker pool and parallel_for over an index range (CPU backend, tokenizer).
#pragma once
#include <cstddef>
#include <functional>

namespace ds {

// Number of worker threads (DS_NUM_THREADS is read by config; default: hardware concurrency).
int num_threads();
void set_num_threads(int n);

// Calls fn(begin, end) on disjoint sub-ranges of [0, n) covering it, in parallel; blocks until done.
// grain: the smallest sub-range worth a task. Nested calls run serially.
void parallel_for(size_t n, const std::function<void(size_t, size_t)>& fn, size_t grain = 1);

}  // namespace ds
