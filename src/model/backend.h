// What the engine drives: a model with its caches on some device. The CPU backend (src/model)
// and the CUDA backend (src/cuda) implement it; everything above sees only this interface.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "config/model_config.h"
#include "model/forward_batch.h"
#include "sampling/sampling_params.h"

namespace ds {

struct CacheGeometry {
  int num_state_slots = 0;   // KDA state slots (one per running sequence)
  int num_blocks = 0;        // MLA latent-cache pages
  int block_size = 0;        // tokens per page
};

struct BackendOptions {
  std::string device = "cpu";        // cpu | cuda
  std::string model_dir;             // checkpoint directory (config.json + safetensors)
  std::string load_format = "auto";  // auto | safetensors | dummy
  std::string dtype = "auto";        // activation dtype on the GPU: auto | bfloat16 | float32
  int max_num_seqs = 64;             // state slots to allocate
  int64_t max_model_len = 0;         // 0: from the config
  int block_size = 16;
  int num_blocks = 0;                // 0: derived (CPU: enough for max_num_seqs * max_model_len, capped)
  double gpu_memory_utilization = 0.9;
  int64_t kv_cache_tokens = 0;       // CPU: total MLA cache tokens (0: default)
  bool biased_moe_weights = false;   // the remote code's routing quirk, for parity tests
  uint64_t dummy_seed = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const ModelConfig& config() const = 0;
  virtual CacheGeometry cache_geometry() const = 0;
  virtual std::string device_name() const = 0;
  // Runs the model on the batch and keeps the logits rows (ForwardBatch::num_logit_rows()).
  virtual void forward(const ForwardBatch& batch) = 0;
  // Logits of the last forward as float32 [rows, vocab].
  virtual void get_logits(std::vector<float>* out) = 0;
  // Samples one token for each logits row of the last forward (params.size() == rows).
  virtual std::vector<SampleResult> sample(const std::vector<SampleParams>& params) = 0;
};

}  // namespace ds
