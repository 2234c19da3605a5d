// Dense GEMMs through cuBLASLt: y[M, N] = x[M, K] . w[N, K]^T (+ beta * y), bf16 or fp32 inputs (x and w of one dtype today),
// fp32 accumulation (no TF32: fp32 inputs are computed in full fp32), output in the input dtype or
// fp32. Strided batches for per-head products. Plans (descriptors + the heuristic's algorithm) are
// cached per shape, so a shape's first call may be slow and later ones (and graph capture) are not.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "core/dtype.h"
#include "cuda/device_buffer.h"

namespace ds::gpu {

struct GemmArgs {
  const void* x = nullptr;  // [M, ldx] (row-major, K contiguous)
  int64_t ldx = 0;
  const void* w = nullptr;  // [N, ldw] (row-major, K contiguous); with w_kn: [K, ldw] (N contiguous)
  int64_t ldw = 0;
  bool w_kn = false;        // w stored [K, N]: y = x . w
  void* y = nullptr;        // [M, ldy]
  int64_t ldy = 0;
  DType x_dtype = DType::BF16;  // dtype of x
  DType w_dtype = DType::BF16;  // dtype of w (today: x_dtype; quantized weights will differ)
  DType y_dtype = DType::BF16;  // dtype of y (x_dtype, or F32)
  int M = 0, N = 0, K = 0;
  float beta = 0.f;         // 1: accumulate into y
  int batch = 1;            // strided batch
  int64_t stride_x = 0, stride_w = 0, stride_y = 0;  // elements between batch entries
};

class Gemm {
 public:
  explicit Gemm(size_t workspace_bytes = size_t(32) << 20);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;
  void run(const GemmArgs& a, cudaStream_t s);

 private:
  struct Plan;
  using Key = std::tuple<int, int, int, int64_t, int64_t, int64_t, int, int, bool, int, int64_t, int64_t, int64_t, bool>;
  Plan& plan_for(const GemmArgs& a);
  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer workspace_;
  std::map<Key, std::unique_ptr<Plan>> plans_;
};

}  // namespace ds::gpu
