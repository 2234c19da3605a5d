// The tiny model from a quantized fixture on the GPU against the CPU backend on the same checkpoint
// (test_fp8.cpp's FP8 models, test_int4_model.cpp's INT4 ones).
#pragma once
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "backend_with_env.h"
#include "cuda/cuda_backend.h"
#include "gpu_test_util.h"
#include "model/cpu_backend.h"

namespace ds::gpu::test {

inline const std::string kTinyModel = std::string(DS_FIXTURES_DIR) + "/tiny/model";

// The tiny model from `dir` (quantization option `q`) on the GPU against the CPU backend on the same
// checkpoint: a 65-token prefill (all rows), then 4 single-token decode steps (eager: pinned routing turns the
// graphs off), the GPU's routing pinned to the CPU's. fp32 activations: 1e-4; bf16 (the FP8 grouped GEMM and the dequantize
// + cuBLASLt path at 65 rows): test_model_tiny's pinned bf16 bound, 2e-2.
// fp8_cublas: DELTASERVE_CUDA_FP8_CUBLAS for the GPU backend (null: the default).
inline void expect_model_matches_cpu(const std::string& dir, const std::string& q, const char* what,
                              const std::string& dtype = "float32", int prompt = 65, double bound_prefill = 0,
                              const char* fp8_cublas = nullptr) {
  const double bound = dtype == "float32" ? 1e-4 : 2e-2;
  BackendOptions co;
  co.model_dir = dir;
  co.quantization = q;
  co.max_num_seqs = 2;
  co.block_size = 16;
  co.num_blocks = 64;
  CpuBackend cpu(co);
  ASSERT_TRUE(cpu.config().quant.quantized()) << what;
  SafetensorsFile ref(std::string(DS_FIXTURES_DIR) + "/tiny/reference.safetensors");
  const TensorInfo* ti = ref.find("len150.ids");
  ASSERT_NE(ti, nullptr);
  std::vector<int32_t> all(size_t(prompt) + 4);
  if (prompt + 4 <= 150) {
    std::memcpy(all.data(), ti->data, all.size() * 4);
  } else {  // longer than the reference prompts: ordinary ids
    for (size_t i = 0; i < all.size(); ++i) all[i] = int32_t((i * 7919 + 13) % 1790);
  }
  const int V = cpu.config().vocab_size, P = prompt;
  std::vector<int32_t> pages;
  for (int i = 0; i < (P + 4 + 15) / 16; ++i) pages.push_back((i * 7 + 3) % 64);
  std::vector<int32_t> cpu_pages;
  for (int i = 0; i < (P + 4 + 15) / 16; ++i) cpu_pages.push_back(i);
  ForwardTrace trace;
  cpu.set_trace(&trace);
  ForwardBatch fb;
  fb.add(0, 0, all, cpu_pages, true);
  const std::vector<float> want = forward_logits(cpu, fb);
  cpu.set_trace(nullptr);

  BackendOptions go = co;
  go.device = "cuda";
  go.dtype = dtype;
  go.num_blocks = 64;
  auto gpu = fp8_cublas ? make_cuda_backend_with(go, "DELTASERVE_CUDA_FP8_CUBLAS", fp8_cublas) : make_cuda_backend(go);
  cuda_force_routes(*gpu, {{0, trace.route_ids}});
  ForwardBatch pre;
  pre.add(0, 0, std::vector<int32_t>(all.begin(), all.begin() + P), pages, true);
  const auto got = forward_logits(*gpu, pre);
  const double e = rel_l2(got, std::vector<float>(want.begin(), want.begin() + int64_t(P) * V));
  std::printf("[%s %s] prefill of %d tokens: GPU vs CPU logits rel L2 %.3g\n", what, dtype.c_str(), P, e);
  EXPECT_LT(e, bound_prefill > 0 ? bound_prefill : bound) << what << " prefill";
  for (int i = P; i < int(all.size()); ++i) {
    ForwardBatch d;
    d.add(0, i, {all[size_t(i)]}, pages, false);
    const auto row = forward_logits(*gpu, d);
    const double ed = rel_l2(row, std::vector<float>(want.begin() + int64_t(i) * V, want.begin() + int64_t(i + 1) * V));
    std::printf("[%s %s] decode position %d: rel L2 %.3g\n", what, dtype.c_str(), i, ed);
    EXPECT_LT(ed, bound) << what << " decode position " << i;
  }
  cuda_force_routes(*gpu, {});
}

}  // namespace ds::gpu::test
