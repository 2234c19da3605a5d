// FP8 weights on the host: finding and validating a quantized checkpoint's tensors against the name
// table (model/weights.h), dequantizing them to fp32 (the CPU backend and the GPU's high-precision
// tensors), and the block quantizer that `--quantization fp8` applies to a bf16 checkpoint (the GPU
// loader runs the same arithmetic on the device; the CPU backend quantizes and dequantizes with it, so
// both compute from the same weights). The format facts are listed in config/quant_config.h.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "config/model_config.h"
#include "model/weights.h"

namespace ds {

struct TensorInfo;
class Checkpoint;

constexpr float kFp8Max = 448.f;  // largest finite e4m3fn value

// A table weight stored in FP8 in the checkpoint.
struct QuantizedTensor {
  const TensorInfo* weight = nullptr;  // F8_E4M3 [N, K]
  const TensorInfo* scale = nullptr;   // F32 / BF16 / F16: weight_scale or weight_scale_inv
  int64_t rows = 0, cols = 0;
};

// Whether table entry `s` may be stored in FP8 (a Linear weight: 2-D, not the embedding, not a norm).
bool fp8_storable(const TensorSpec& s);

// Every FP8 weight of c's table in ck, validated: with no quantization_config, an F8_E4M3 tensor is an
// error; otherwise each FP8 weight needs its scale tensor (weight_scale, or weight_scale_inv for the
// block release format) of the shape its scheme gives, no scale may sit beside a high-precision weight,
// and no module in the ignore list may be quantized. All problems are listed in one ds::Error.
std::map<std::string, QuantizedTensor> find_quantized(const ModelConfig& c, const Checkpoint& ck);

// The scale tensor's values as fp32 in the device layout: channel [N] (one per row; a per-tensor scale
// repeated), block [ceil(N/bn), ceil(K/bk)] row-major.
std::vector<float> fp8_scales_f32(const QuantConfig& q, const QuantizedTensor& t);
// Rows of `row_len` scales (fp8_scales_f32's block layout) laid out `ld` apart (ld >= row_len), the padding zeros:
// the GPU's block scales padded to cuBLASLt's layout (cuda/gemm.h fp8_block_scale_ld). ld == row_len: s as it is.
std::vector<float> pad_scale_rows(std::vector<float> s, int64_t row_len, int64_t ld);
// w[r, k] = fp8(q[r, k]) * scale(r, k) into out[N * K] (fp32 products, as the GPU computes them).
void dequantize_fp8(const QuantConfig& q, const QuantizedTensor& t, float* out);

// Online quantization's rule (--quantization fp8 on a bf16 checkpoint): FP8 for the Linear weights of
// the KDA q/k/v/f_a/g_a/o projections, MLA q_proj and o_proj, the dense MLP, the routed and shared
// experts, when both dimensions are multiples of the 128 block; everything else stays in the checkpoint's
// precision: embedding, lm_head, norms, routers, correction bias, A_log, dt_bias, conv taps, b_proj
// (num_heads rows), f_b/g_b (read as one batched pair), kv_a_proj_with_mqa (576 rows) and kv_b_proj
// (its W_UK half is transposed at load for the absorbed decode).
bool online_fp8_candidate(const ModelConfig& c, const TensorSpec& s);
// Whether the GPU keeps `s` (stored FP8 in a checkpoint) in FP8: the same projections as above, any shape.
bool fp8_on_device(const TensorSpec& s);

// Per block of bn x bk (the last ones partial): scale = amax / 448 (1 when the block is zero),
// q = e4m3(w / scale) rounded to nearest even. q [N * K], scale [ceil(N/bn) * ceil(K/bk)].
void quantize_fp8_blocks(const float* w, int64_t N, int64_t K, int bn, int bk, uint8_t* q, float* scale);
// quantize_fp8_blocks then dequantize, in place: the weights an online-quantized model computes with.
void fake_quantize_fp8_blocks(float* w, int64_t N, int64_t K, int bn, int bk);

}  // namespace ds
