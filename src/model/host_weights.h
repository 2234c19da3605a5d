// fp32 host copies of the checkpoint's tensors for the CPU backend: loaded from safetensors (bf16/fp16/
// fp32 converted to fp32) or generated ("dummy" weights of the right shapes).
#pragma once
#include <cstdint>
#include <vector>

#include "model/weights.h"

namespace ds {

class Checkpoint;

struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;  // row-major, numel floats
  const float* ptr() const { return data.data(); }
  float* ptr() { return data.data(); }
  bool empty() const { return data.empty(); }
};

using HostWeights = ModelWeights<HostTensor>;

// Checks the checkpoint against the config (check_checkpoint) and converts every tensor to fp32
// (FP8 weights dequantized with their scales; with c.quant.source "online" the online rule's weights are
// quantized per block and dequantized, as the GPU computes with them), logging progress per shard and
// every 10% of the bytes.
HostWeights load_host_weights(const ModelConfig& c, const Checkpoint& ck);

// Random weights of the config's shapes, deterministic in `seed`, scaled so activations stay finite:
// matrices uniform with std 0.02, norm weights 1, A_log = log(U[1, 16]), dt_bias U[-4, -2],
// conv taps U[-0.5, 0.5], correction bias 0.
// With c.quant.source "online", the online rule's weights are quantized and dequantized afterwards;
// with c.quant INT4 "dummy" (--quantization int4), the experts and dense MLPs are quantized to INT4
// (symmetric, c.quant.group_size, bf16 scales) and dequantized.
HostWeights dummy_host_weights(const ModelConfig& c, uint64_t seed);

// Quantizes and dequantizes, in place, the weights online FP8 quantization applies to (nothing unless
// c.quant.source is "online").
void apply_online_fp8(const ModelConfig& c, HostWeights& w);
// The same for dummy INT4 weights (nothing unless c.quant is INT4 with source "dummy").
void apply_dummy_int4(const ModelConfig& c, HostWeights& w);

}  // namespace ds
