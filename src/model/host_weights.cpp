#include "model/host_weights.h"

#include <cmath>
#include <map>

#include "core/dtype.h"
#include "core/error.h"
#include "core/log.h"
#include "core/parallel.h"
#include "core/splitmix.h"
#include "model/quant.h"
#include "model/quant_int4.h"
#include "model/safetensors.h"

namespace ds {
namespace {

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Uniform in [0, 1) from a counter key: any element can be drawn independently (parallel fill).
inline float uniform01(uint64_t key) { return float(splitmix64(key) >> 40) * (1.0f / 16777216.0f); }

}  // namespace

HostWeights load_host_weights(const ModelConfig& c, const Checkpoint& ck) {
  check_checkpoint(c, ck);
  const bool ck_quantized = c.quant.quantized() && c.quant.source != "online";
  const auto fp8 = ck_quantized && c.quant.fp8() ? find_quantized(c, ck) : std::map<std::string, QuantizedTensor>{};
  const auto int4 = ck_quantized && c.quant.int4() ? find_int4(c, ck) : std::map<std::string, Int4Tensor>{};
  HostWeights w;
  std::map<std::string, HostTensor*> slots;
  for_each_weight(c, w, [&](const TensorSpec& s, HostTensor& t) {
    t.shape = s.shape;
    slots[s.name] = &t;
  });
  const size_t total = ck.total_bytes();
  size_t done = 0;
  int next_pct = 10;
  const auto& files = ck.files();
  for (size_t f = 0; f < files.size(); ++f) {
    const auto& file = *files[f];
    SPDLOG_INFO("loading shard {}/{}: {} ({:.1f} MB)", f + 1, files.size(), file.path(), file.file_size() / 1e6);
    for (const auto& info : file.tensors()) {
      done += info.nbytes;
      auto slot = slots.find(info.name);
      if (slot == slots.end()) continue;  // a scale tensor (check_checkpoint allowed it)
      HostTensor& t = *slot->second;
      const int64_t n = info.numel();
      t.data.resize(size_t(n));
      if (auto q = fp8.find(info.name); q != fp8.end()) {
        dequantize_fp8(c.quant, q->second, t.ptr());
        continue;
      }
      constexpr int64_t kBlock = 1 << 20;
      const size_t esz = dtype_size(info.dtype);
      parallel_for(size_t((n + kBlock - 1) / kBlock), [&](size_t b, size_t e) {
        for (size_t i = b; i < e; ++i) {
          const int64_t o = int64_t(i) * kBlock, m = std::min(kBlock, n - o);
          convert_to_f32(info.dtype, static_cast<const uint8_t*>(info.data) + o * esz, t.ptr() + o, size_t(m));
        }
      });
      while (total > 0 && next_pct <= 100 && double(done) * 100.0 >= double(total) * next_pct) {
        SPDLOG_INFO("loaded {}% of the weights ({:.1f} / {:.1f} MB)", next_pct, done / 1e6, total / 1e6);
        next_pct += 10;
      }
    }
  }
  // INT4 weights (absent by their own name): dequantized from the packed nibbles, group scales and zero points
  for (const auto& [name, t4] : int4) {
    HostTensor& t = *slots.at(name);
    t.data.resize(size_t(t4.rows * t4.cols));
    dequantize_int4(t4, t.ptr());
  }
  if (!int4.empty())
    SPDLOG_INFO("INT4: {} weight matrices dequantized to fp32 ({})", int4.size(), c.quant.describe());
  apply_online_fp8(c, w);
  return w;
}

void apply_dummy_int4(const ModelConfig& c, HostWeights& w) {
  if (!c.quant.int4() || c.quant.source != "dummy") return;
  size_t n = 0;
  for_each_weight(c, w, [&](const TensorSpec& s, HostTensor& t) {
    if (!int4_dummy_candidate(s)) return;
    t.data = quantize_int4(t.ptr(), s.shape[0], s.shape[1], c.quant.group_size, true, DType::BF16).dequantized;
    ++n;
  });
  SPDLOG_INFO("dummy INT4: {} weight matrices quantized and dequantized per group of {}", n, c.quant.group_size);
}

void apply_online_fp8(const ModelConfig& c, HostWeights& w) {
  if (c.quant.source != "online") return;
  size_t n = 0;
  for_each_weight(c, w, [&](const TensorSpec& s, HostTensor& t) {
    if (!online_fp8_candidate(c, s)) return;
    fake_quantize_fp8_blocks(t.ptr(), s.shape[0], s.shape[1], c.quant.block_n, c.quant.block_k);
    ++n;
  });
  SPDLOG_INFO("online FP8: {} weight matrices quantized and dequantized per {}x{} block", n, c.quant.block_n,
              c.quant.block_k);
}

HostWeights dummy_host_weights(const ModelConfig& c, uint64_t seed) {
  HostWeights w;
  uint64_t index = 0;
  for_each_weight(c, w, [&](const TensorSpec& s, HostTensor& t) {
    t.shape = s.shape;
    const int64_t n = numel(s.shape);
    t.data.resize(size_t(n));
    const uint64_t base = splitmix64(seed ^ splitmix64(++index));
    const std::string& name = s.name;
    float lo = -0.02f * std::sqrt(3.0f), hi = -lo;
    bool log_space = false, constant = false;
    float value = 0.0f;
    if (ends_with(name, "norm.weight")) {  // every RMSNorm weight, kv_a_layernorm and o_norm included
      constant = true;
      value = 1.0f;
    } else if (ends_with(name, "e_score_correction_bias")) {
      constant = true;
    } else if (ends_with(name, "A_log")) {
      lo = 1.0f, hi = 16.0f, log_space = true;
    } else if (ends_with(name, "dt_bias")) {
      lo = -4.0f, hi = -2.0f;
    } else if (ends_with(name, "conv1d.weight")) {
      lo = -0.5f, hi = 0.5f;
    }
    float* d = t.ptr();
    parallel_for(size_t(n), [&](size_t b, size_t e) {
      for (size_t i = b; i < e; ++i) {
        if (constant) {
          d[i] = value;
          continue;
        }
        const float u = lo + (hi - lo) * uniform01(base + i);
        d[i] = log_space ? std::log(u) : u;
      }
    }, 1 << 16);
  });
  apply_online_fp8(c, w);
  apply_dummy_int4(c, w);
  return w;
}

}  // namespace ds
