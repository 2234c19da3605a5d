// What the engine drives: a model with its caches on some device. The CPU backend (src/model)
// and the CUDA backend (src/cuda) implement it; everything above sees only this interface.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "config/kv_cache_dtype.h"
#include "config/model_config.h"
#include "dist/parallel_config.h"
#include "model/forward_batch.h"
#include "model/step.h"
#include "sampling/sampling_params.h"

namespace ds {

struct BackendOptions {
  std::string device = "cpu";        // cpu | cuda
  std::string model_dir;             // checkpoint directory (config.json + safetensors)
  std::string load_format = "auto";  // auto | safetensors | dummy
  std::string dtype = "auto";        // activation dtype on the GPU: auto | bfloat16 | float32
  std::string quantization;          // "" / none: as the checkpoint is; fp8: quantize a bf16 checkpoint at load;
                                     // int4: an INT4 checkpoint (or dummy INT4); compressed-tensors: as it is
  KvCacheDtype kv_cache_dtype = KvCacheDtype::Auto;  // MLA latent cache storage (--kv-cache-dtype)
  int max_num_seqs = 64;             // state slots to allocate
  int num_snapshots = 0;             // KDA state snapshots to allocate (prefix caching; 0: none; -1: as
                                     // many as snapshot_memory_gib holds)
  double snapshot_memory_gib = 0;    // with num_snapshots -1: the snapshot pool's budget (0: the backend's
                                     // default: CPU 1 GiB, GPU 20% of the cache budget)
  int64_t max_model_len = 0;         // 0: from the config
  int block_size = 16;
  int num_blocks = 0;                // 0: derived (CPU: enough for max_num_seqs * max_model_len, capped)
  double gpu_memory_utilization = 0.9;
  int64_t kv_cache_tokens = 0;       // CPU: total MLA cache tokens (0: default)
  bool biased_moe_weights = false;   // the remote code's routing quirk, for parity tests
  uint64_t dummy_seed = 0;
  ParallelConfig parallel;           // --tensor-parallel-size, --enable-expert-parallel (CPU: rank threads)
  int mla_context_piece = 0;         // GPU: key rows of the MLA prefill expansion, the context piece a long
                                     // context is attended in (0: from the memory budget, docs/GPU_MODEL.md)
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const ModelConfig& config() const = 0;
  // What one step may hold and the caches' sizes; fixed once the backend is made.
  virtual BackendLimits limits() const = 0;
  virtual std::string device_name() const = 0;
  // One step: drops the released sequences' sampling state, runs the model on plan.batch (state
  // slots initialised as each slice says), samples one token per plan.sampling row (penalty history
  // kept per sequence: given once in a row with `history`, extended with each sampled token) and,
  // with plan.return_logits, returns the logits rows. plan.sampling is empty or has one row per
  // logits row (empty only with return_logits or forward_only). Throws ds::Error for an inconsistent plan or a batch
  // beyond limits().
  virtual StepResult execute(const StepPlan& plan) = 0;
  // A process of a multi-node group that does not hold rank 0 (--node-rank above 0, docs/PARALLEL.md): runs
  // its ranks' parts of the steps node 0 sends until node 0 stops them (returns) or the group fails (throws,
  // naming the rank); execute() is node 0's. Every other backend: an error.
  virtual void run_worker_node();
  // Why the backend can run no more steps (a rank of a multi-rank group failed, or a node went away: every
  // later execute() throws); empty while it can. Any thread may ask.
  virtual std::string failure() const { return {}; }
};

// What every process of a multi-node group must run alike (the group refuses a process that differs): the
// model's shape, the weights' format (and the dummy seed), the options that size the caches, the parallel layout.
std::string group_fingerprint(const BackendOptions& o, const ModelConfig& c);

// For implementations: throws unless plan.sampling has one row per logits row of plan.batch (or none,
// with return_logits or forward_only).
void check_sampling_rows(const StepPlan& plan);

// Tests and tools: runs `batch` alone and returns its logits rows [rows, vocab] (nothing sampled).
std::vector<float> forward_logits(Backend& b, const ForwardBatch& batch);
// Tests and tools: runs `batch` alone and samples its rows with `params` (one per row; no penalties:
// the rows carry no history). Row r is sequence id r.
std::vector<SampleResult> forward_sample(Backend& b, const ForwardBatch& batch, const std::vector<SampleParams>& params);

}  // namespace ds
