// Shared helpers of the model tests: golden tensors from the fixtures and the tiny checkpoint on a CPU
// backend (error metrics and random inputs come from the kernel tests' helpers).
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "../kernels/kernel_test_util.h"  // rel_l2, golden_f32, random vectors
#include "model/cpu_backend.h"
#include "model/safetensors.h"

namespace ds::test {

inline std::string fixtures() { return DS_FIXTURES_DIR; }
inline std::string tiny_model_dir() { return fixtures() + "/tiny/model"; }

// float32 / int32 tensors of a safetensors file by name.
class Golden {
 public:
  explicit Golden(const std::string& path) : file_(path) {}
  const TensorInfo& info(const std::string& name) const {
    const TensorInfo* t = file_.find(name);
    if (!t) throw std::runtime_error("golden file has no tensor " + name);
    return *t;
  }
  std::vector<float> f32(const std::string& name) const { return golden_f32(file_, name); }
  std::vector<int32_t> i32(const std::string& name) const {
    const auto& t = info(name);
    std::vector<int32_t> v(size_t(t.numel()));
    std::memcpy(v.data(), t.data, v.size() * sizeof(int32_t));
    return v;
  }

 private:
  SafetensorsFile file_;
};

inline const Golden& reference() {
  static Golden g(fixtures() + "/tiny/reference.safetensors");
  return g;
}

inline BackendOptions tiny_options(int max_seqs = 8) {
  BackendOptions o;
  o.model_dir = tiny_model_dir();
  o.max_num_seqs = max_seqs;
  o.block_size = 16;
  o.num_blocks = 256;  // 4096 cached positions
  return o;
}

inline std::unique_ptr<CpuBackend> tiny_backend(int max_seqs = 8) {
  return std::make_unique<CpuBackend>(tiny_options(max_seqs));
}

// Block table of `n` consecutive pages starting at `first` (enough for n·16 positions).
inline std::vector<int32_t> pages(int first, int n) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) t[size_t(i)] = first + i;
  return t;
}

inline int argmax(const float* row, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (row[i] > row[best]) best = i;
  return best;
}

}  // namespace ds::test
