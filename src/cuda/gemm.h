// Dense GEMMs through cuBLASLt: y[M, N] = x[M, K] . w[N, K]^T (+ beta * y), bf16 or fp32 inputs (x and w of one dtype today),
// fp32 accumulation (no TF32: fp32 inputs are computed in full fp32), output in the input dtype or
// fp32. Strided batches for per-head products. Plans (descriptors + the heuristic's algorithm) are
// cached per shape, so a shape's first call may be slow and later ones (and graph capture) are not.
// Bucketed algorithms (bucket_algorithms; CudaModel: DELTASERVE_CUDA_GEMM_BUCKETS, on by default): a single
// GEMM of M rows runs the algorithm the heuristic picks for M's bucket, gemm_bucket_rows(M) (the next 2^k or
// 3·2^k: the row counts the start-up warm-up runs), when that algorithm supports M (cublasLtMatmulAlgoCheck),
// else M's own. So a step of any row count runs kernels the warm-up already launched: CUDA loads kernel
// modules lazily, and a cuBLASLt kernel first launched while serving takes device memory (docs/PERF.md
// session 15: +2 MiB at what was likely the first step of an odd row count).
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <set>
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
  // FP8 block-scaled (x_dtype = w_dtype = F8_E4M3, y bf16; Hopper, single GEMMs, w [N, K]): w's scales one per
  // 128 x 128 block, [ceil(N / 128)][fp8_block_scale_ld(K)] (cuBLASLt's BLK128x128 layout), x's one per row and 128
  // columns, [K / 128][M] (its VEC128 layout: run_quantize_act_fp8 writes it). K a multiple of 128.
  const float* w_scale = nullptr;
  const float* x_scale = nullptr;
};

// The row length of a weight's 128 x 128 block scales as cuBLASLt reads them: ceil(K / 128) rounded up to 4.
inline int64_t fp8_block_scale_ld(int64_t K) { return ((K + 127) / 128 + 3) / 4 * 4; }

// The bucket of a row count: the smallest 2^k or 3·2^k >= M (1, 2, 3, 4, 6, 8, 12, 16, 24, ...).
int gemm_bucket_rows(int M);

class Gemm {
 public:
  explicit Gemm(size_t workspace_bytes = size_t(32) << 20, bool bucket_algorithms = false);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;
  void run(const GemmArgs& a, cudaStream_t s);
  // Whether cuBLASLt has an algorithm for a's problem (its plan is made now and kept; a problem without one is
  // remembered too, so asking again costs a lookup). run() on an unsupported problem throws.
  bool supports(const GemmArgs& a);

 private:
  struct Plan;
  using Key = std::tuple<int, int, int, int64_t, int64_t, int64_t, int, int, bool, int, int64_t, int64_t, int64_t, bool>;
  Plan& plan_for(const GemmArgs& a);
  void describe(const GemmArgs& g, int M, Plan& p) const;
  bool heuristic(const Plan& p, cublasLtMatmulAlgo_t& algo);
  cublasLtHandle_t handle_ = nullptr;
  bool bucket_algorithms_ = false;
  DeviceBuffer workspace_;
  std::map<Key, std::unique_ptr<Plan>> plans_;
  std::set<Key> unsupported_;
  static Key key_of(const GemmArgs& g);
};

}  // namespace ds::gpu
