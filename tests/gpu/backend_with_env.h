// A CUDA backend built with one developer switch (src/config/runtime_env.h) set in the environment. The
// switches are read once, when the backend's device context is made, so the variable is set around the
// construction only (and unset again, also when construction throws).
#pragma once
#include <cstdlib>
#include <memory>
#include <string>

#include "cuda/cuda_backend.h"
#include "model/backend.h"

namespace ds::gpu::test {

// A CUDA backend's options for a small test model: `dir`, activations `dtype`, `max_num_seqs` sequences, 64 pages of
// 16 tokens.
inline BackendOptions cuda_test_options(const std::string& dir, const std::string& dtype, int max_num_seqs) {
  BackendOptions o;
  o.model_dir = dir;
  o.device = "cuda";
  o.dtype = dtype;
  o.max_num_seqs = max_num_seqs;
  o.block_size = 16;
  o.num_blocks = 64;
  return o;
}

// A developer switch set for a scope (unset when it ends, also by an exception or a failed assertion).
struct ScopedEnv {
  const char* var;
  ScopedEnv(const char* v, const char* value) : var(v) { ::setenv(var, value, 1); }
  ~ScopedEnv() { ::unsetenv(var); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;
};

inline std::unique_ptr<Backend> make_cuda_backend_with(const BackendOptions& o, const char* var, const char* value) {
  const ScopedEnv env(var, value);
  return make_cuda_backend(o);
}

}  // namespace ds::gpu::test
