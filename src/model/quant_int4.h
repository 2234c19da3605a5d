// INT4 weights on the host (compressed-tensors "pack-quantized", the AWQ / GPTQ W4A16 checkpoints):
// finding and validating a checkpoint's packed tensors against the name table (model/weights.h), and
// dequantizing them to fp32 (the CPU backend computes from the dequantized weights; the GPU loader
// uploads the packed nibbles and group scales). docs/QUANTIZATION.md lists the format facts:
//   X.weight_packed  I32 [N, ceil(K/8)]: weight k of row r is bits 4 (k % 8) .. 4 (k % 8) + 3 of word
//                    [r][k / 8] (least significant nibble first), stored unsigned as q + 8 (q in [-8, 7]);
//   X.weight_scale   BF16 / F16 / F32 [N, ceil(K/g)];
//   X.weight_zero_point (asymmetric only) I32 [ceil(N/8), ceil(K/g)]: the zero point of row r, group j is
//                    bits 4 (r % 8) .. of word [r / 8][j], stored as z + 8;
//   X.weight_shape   I32 / I64 [2] = [N, K].
// Value: w = (q - z) * scale = (stored_q - stored_z) * scale, with stored_z = 8 when symmetric.
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

// The tensors of one INT4 Linear weight X.weight (the table name; X.weight itself is absent).
struct Int4Tensor {
  const TensorInfo* packed = nullptr;  // I32 [N, ceil(K/8)]
  const TensorInfo* scale = nullptr;   // BF16 / F16 / F32 [N, ceil(K/g)]
  const TensorInfo* zero = nullptr;    // I32 [ceil(N/8), ceil(K/g)] (asymmetric), else null
  const TensorInfo* shape = nullptr;   // I32 / I64 [2]
  int64_t rows = 0, cols = 0, group = 0;
};

// The companion tensor names of an INT4 weight "X.weight": X.weight_packed, X.weight_scale,
// X.weight_zero_point, X.weight_shape, X.weight_g_idx (act order; refused).
std::vector<std::string> int4_tensor_names(const std::string& weight);

// Every INT4 weight of c's table in ck (c.quant.int4()), validated: a table weight is INT4 when
// X.weight_packed exists. Each needs its scale (dtype, shape [N, ceil(K/g)]), its shape tensor ([N, K]
// as the table says), a packed tensor of I32 [N, ceil(K/8)], a zero point of I32 [ceil(N/8),
// ceil(K/g)] exactly when the scheme is asymmetric, no g_idx; it must be a Linear weight and not in the
// ignore list; a weight present both packed and unpacked is an error. All problems are listed, with
// the tensor names, in one ds::Error.
std::map<std::string, Int4Tensor> find_int4(const ModelConfig& c, const Checkpoint& ck);

// The names find_int4 accounts for (the companions of every INT4 weight), for check_checkpoint.
bool is_int4_companion(const ModelConfig& c, const Checkpoint& ck, const std::string& name);

// w[r, k] = (q - z) * scale into out[N * K] (fp32; the scale as the checkpoint stores it, widened).
void dequantize_int4(const Int4Tensor& t, float* out);

// The GPU's device layout: nibbles [N, K/2] bytes (the checkpoint's words are little-endian, so the
// bytes of row r are the words' bytes in order: weight k is the low nibble of byte k/2 when k is even),
// scales fp32 [N, ceil(K/g)], zero points fp32 [N, ceil(K/g)] (stored_z; 8 when symmetric).
std::vector<float> int4_scales_f32(const Int4Tensor& t);
std::vector<float> int4_zeros_f32(const Int4Tensor& t);

// Which weights dummy INT4 weights (--load-format dummy --quantization int4) quantize: the Linear
// weights of the routed and shared experts and the dense MLPs (the bulk of the bytes; what AWQ / GPTQ
// checkpoints of MoE models quantize at least).
bool int4_dummy_candidate(const TensorSpec& s);

// The quantizer (test fixtures; the format's arithmetic, not a calibration): per row and group of g
// along K (the last one partial), symmetric: scale = amax / 7.5 (1 for an all-zero group), q =
// clamp(round(w / scale), -8, 7); asymmetric: scale = (max - min) / 15 over a range that includes 0,
// z = clamp(round(-min / scale) - 8, -8, 7), q = clamp(round(w / scale) + z, -8, 7). The scale is rounded
// to `scale_dtype` (BF16 / F16 / F32) before q is computed, so (q - z) * scale is the stored weight.
struct Int4Quantized {
  std::vector<int32_t> packed;  // [N, ceil(K/8)]
  std::vector<uint16_t> scale16; // [N, ceil(K/g)] as BF16 / F16 bits (scale_dtype BF16 / F16)
  std::vector<float> scale32;   // [N, ceil(K/g)] (always filled: the values)
  std::vector<int32_t> zero;    // [ceil(N/8), ceil(K/g)] (asymmetric only)
  std::vector<float> dequantized;  // [N, K]
};
Int4Quantized quantize_int4(const float* w, int64_t N, int64_t K, int group, bool symmetric, DType scale_dtype);

}  // namespace ds
