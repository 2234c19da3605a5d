// Small memory-bound ops of the GPU model: embedding gather, SiLU*mul, the MoE combine (weighted sum
// of expert outputs into the residual), fills for dummy weights, dtype conversion and slot zeroing.
// CPU twins: src/kernels/embedding, src/kernels/silu_mul (run_*_cpu); the fills have none.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"
#include "cuda/device_context.h"

namespace ds::gpu {

// y[t, :] = table[ids[t], :]
struct EmbeddingParams {
  const int32_t* ids = nullptr;  // [tokens] device, each in [0, vocab)
  const void* table = nullptr;   // [vocab, dim] act dtype
  void* y = nullptr;             // [tokens, dim] act dtype
  int tokens = 0, dim = 0;       // dim a multiple of 8
};
void run_embedding(const EmbeddingParams& p, DType act, const DeviceContext& ctx);

// y[t, i] = silu(x[t, i]) * x[t, inter + i]  (x holds [gate | up] per row)
struct SiluMulParams {
  const void* x = nullptr;  // [tokens, ldx] act dtype
  int64_t ldx = 0;
  void* y = nullptr;        // [tokens, ldy] act dtype
  int64_t ldy = 0;
  int tokens = 0, inter = 0;
};
void run_silu_mul(const SiluMulParams& p, DType act, const DeviceContext& ctx);

// residual[t, :] += sum_j weights[t, j] * expert_out[pair_pos[t, j], :]  (fp32 sum, one rounding)
struct MoeCombineParams {
  const void* expert_out = nullptr;  // [pairs, dim] act dtype (rows in expert-sorted order)
  const int32_t* pair_pos = nullptr; // [tokens, k] row of expert_out holding pair (t, j); -1: skipped
  const float* weights = nullptr;    // [tokens, k] fp32 (a shared expert appended with weight 1)
  void* residual = nullptr;          // [tokens, dim] act dtype, updated in place
  int tokens = 0, k = 0, dim = 0;    // dim a multiple of 8
};
void run_moe_combine(const MoeCombineParams& p, DType act, const DeviceContext& ctx);

// Strided copy of `width` elements for every (row, head):
//   dst[r * ld_dst + h * hs_dst + c] = src[src_row(r) * ld_src + h * hs_src + c],
// src_row(r) = row_index ? row_index[r] : r. (Absorbed-query assembly, latent gathers.)
struct CopyStridedParams {
  const void* src = nullptr;
  int64_t ld_src = 0, hs_src = 0;
  const int32_t* row_index = nullptr;  // [rows] optional
  void* dst = nullptr;
  int64_t ld_dst = 0, hs_dst = 0;
  int rows = 0, heads = 1, width = 0;  // width, strides and offsets multiples of 8 elements
};
void run_copy_strided(const CopyStridedParams& p, DType act, const DeviceContext& ctx);

// Batched transpose: dst[b][c][r] = src[b][r][c] for r < rows, c < cols (weight preparation).
void run_transpose(const void* src, int64_t ld_src, int64_t batch_src, void* dst, int64_t ld_dst, int64_t batch_dst,
                   int rows, int cols, int batch, DType dtype, const DeviceContext& ctx);

// Deterministic pseudo-random fill: x[i] = lo + (hi - lo) * u(seed, i), u uniform in [0, 1).
// Element i of x takes the value element index(i) of a whole tensor filled with `seed` would have: index(i) = i,
// or, for a slice of that tensor (FillIndex: runs of `run` consecutive elements, `stride` apart in the whole,
// the first at `offset`), (i / run) * stride + offset + i % run. So a rank's part of a dummy tensor (tensor
// parallelism) holds exactly the whole tensor's values there.
struct FillIndex {
  int64_t run = 0, stride = 0, offset = 0;  // run 0: the identity
  // index(i): the whole tensor's index of element i (the kernel's and the host fills' one formula)
  __host__ __device__ int64_t whole(int64_t i) const { return run ? i / run * stride + offset + i % run : i; }
};
void run_fill_uniform(void* x, DType dtype, int64_t n, float lo, float hi, uint64_t seed, const DeviceContext& ctx,
                      FillIndex ix = {});
void run_fill_value(void* x, DType dtype, int64_t n, float value, const DeviceContext& ctx);
// y[i] += x[i] (fp32 sum, rounded once to the dtype): a rank's all-reduced layer output into the residual.
void run_add(void* y, const void* x, DType dtype, int64_t n, const DeviceContext& ctx);
// dst[i] = convert(src[i]) between F32 and BF16 (either direction, or a plain copy).
void run_convert(const void* src, DType src_t, void* dst, DType dst_t, int64_t n, const DeviceContext& ctx);

// Zeroes `bytes_per_slot` bytes at base + layer * layer_stride + slots[i] * slot_stride for every
// layer < layers and every i < num_slots (fresh KDA state / conv slots, all layers in one launch).
struct ZeroSlotsParams {
  void* base = nullptr;
  int64_t layer_stride = 0, slot_stride = 0, bytes_per_slot = 0;  // bytes; all multiples of 16
  const int32_t* slots = nullptr;  // [num_slots] device
  int num_slots = 0, layers = 0;
};
void run_zero_slots(const ZeroSlotsParams& p, const DeviceContext& ctx);

}  // namespace ds::gpu
