// Kimi-Linear on one GPU: weights, the KDA state slots and paged MLA latent cache in device memory,
// a fixed activation workspace, and forward() over a ForwardBatch (varlen prefill chunks and decodes
// in one batch). Pure-decode batches run as CUDA graphs captured per (batch-size bucket, block-table
// width) on first use; every buffer a graph touches has a fixed address.
//
//   h = embed(ids); per layer: h += Attn(rmsnorm_in(h)); h += FFN(rmsnorm_post(h))
//   logits (fp32) = lm_head(rmsnorm_final(h)) for the rows the slices ask for
#pragma once
#include <cuda_runtime.h>

#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "config/model_config.h"
#include "core/dtype.h"
#include "cuda/device_buffer.h"
#include "cuda/device_weights.h"
#include "cuda/gemm.h"
#include "cuda/stream.h"
#include "model/batch_layout.h"
#include "model/forward_batch.h"
#include "model/step_context.h"

namespace ds::gpu {

struct CudaModelOptions {
  DType act = DType::BF16;          // activation (and weight) dtype: BF16 or F32
  int max_num_seqs = 64;            // KDA state slots
  int block_size = 16;
  int num_blocks = 0;               // 0: as many as the memory budget allows
  double gpu_memory_utilization = 0.9;
  int max_tokens = 8192;            // tokens per forward (activation workspace size; more is an error)
  bool biased_moe_weights = false;
  bool use_graphs = true;
  bool reference_attention = false; // the simple attention kernels (attn_ref.h) instead of kda_*/mla_*
  int max_graph_batch = 256;        // largest decode batch replayed from a graph
};

// Where the time of a forward went (filled when timing is enabled; milliseconds).
struct ForwardStats {
  int sub_batches = 0;
  bool graph = false;
};


class CudaModel {
 public:
  CudaModel(const ModelConfig& c, DeviceWeights w, const CudaModelOptions& o);
  ~CudaModel();

  const ModelConfig& config() const { return cfg_; }
  DType act_dtype() const { return opt_.act; }
  int num_slots() const { return opt_.max_num_seqs; }
  int max_tokens() const { return opt_.max_tokens; }  // tokens per forward
  int num_blocks() const { return num_blocks_; }
  int block_size() const { return opt_.block_size; }
  cudaStream_t stream() const { return stream_.get(); }

  // Runs the batch on the model's stream (asynchronously); logits() then holds
  // [batch.num_logit_rows(), vocab] fp32 once the stream is synchronised.
  void forward(const ForwardBatch& batch);
  const float* logits() const { return logits_.as<float>(); }
  int num_logit_rows() const { return rows_; }
  const ForwardStats& last_stats() const { return stats_; }
  // Device time of the last forward (waits for it): CUDA events around its kernels.
  float last_forward_ms() const;
  size_t cache_bytes() const { return cache_bytes_; }
  size_t workspace_bytes() const { return ws_bytes_; }
  size_t weight_bytes() const { return w_.bytes; }
  // Numerical tests: pin the MoE routing of the sequences in these state slots (slot -> MoE layer ->
  // [positions, top_k] experts, by absolute position) so that near-tied choices cannot flip between
  // two implementations; forwards then run eagerly. An empty map turns it off.
  void force_routes(std::map<int, RouteIds> by_slot) { forced_ = std::move(by_slot); }

 private:
  struct Meta;       // device views of a plan's index arrays
  struct Workspace;  // activation buffers
  // A normalised layer input: x itself, or (small batches) h with the norm weight its GEMVs apply.
  struct Input {
    const void* x;
    const void* norm;
  };

  void run_plan(const BatchLayout& p, bool graph_layout);
  void forward_graph(BatchLayout p);
  void upload_meta(const BatchLayout& p);
  void zero_fresh(const BatchLayout& p);
  void upload_forced_routes(const BatchLayout& p);
  void compute(const Meta& m);  // every kernel of the forward, given the uploaded metadata
  void layer_kda(int l, const Meta& m, Input in);
  void layer_mla(int l, const Meta& m, Input in);
  void ffn_dense(int l, const Meta& m, Input in);
  void ffn_moe(int l, const Meta& m, Input in);
  void mlp(const void* gate_up, const void* down, int inter, int tokens, Input in);
  void absorb_queries(int l, int rows, void* y, int64_t ld_y, int64_t hs_y);
  void unabsorb_values(int l, int rows);
  void mla_reference(int l, const Meta& m, void* cache);
  void mla_decode_rows(int l, const Meta& m, void* cache);
  void mla_prefill_rows(int l, const Meta& m, void* cache);
  // y = x . w^T through the small-M kernel or cuBLASLt; accumulate adds into y (act dtype).
  void linear(const void* x, int64_t ldx, const void* w, int N, int K, void* y, int64_t ldy, int M, bool accumulate,
              bool out_f32 = false, const void* norm = nullptr, const int32_t* x_rows = nullptr);
  void ensure_logits(int rows);
  void ensure_meta(size_t bytes);
  void ensure_expand(int key_rows);  // MLA key expansion buffers for prefill chunks

  ModelConfig cfg_;
  DeviceWeights w_;
  CudaModelOptions opt_;
  Stream stream_;
  Gemm gemm_;
  int num_blocks_ = 0;
  // caches (one extra scratch slot / page for graph padding)
  DeviceBuffer kda_state_;   // [kda layers][slots + 1][H][K][V] fp32
  DeviceBuffer conv_state_;  // [kda layers][slots + 1][W - 1][3HK] act
  DeviceBuffer mla_cache_;   // [mla layers][(blocks + 1) * block_size][R + dr] act
  size_t cache_bytes_ = 0;
  // workspace
  std::unique_ptr<Workspace> ws_;
  Arena ws_arena_;
  size_t ws_bytes_ = 0;
  DeviceBuffer logits_;
  int logits_cap_ = 0, rows_ = 0;
  DeviceBuffer expand_lat_, expand_kv_;  // [keys, R + dr] gathered latents, [keys, Hm (dn + dv)]
  int expand_cap_ = 0;
  int num_sms_ = 132;
  DeviceBuffer meta_dev_;
  PinnedBuffer meta_host_;
  Event meta_done_{false};
  Event fwd_start_, fwd_end_;
  std::unique_ptr<Meta> meta_;
  // graphs by (bucket, block-table stride)
  std::map<std::pair<int, int>, Graph> graphs_;
  ForwardStats stats_;
  std::map<int, RouteIds> forced_;  // force_routes()
  DeviceBuffer forced_dev_;         // [layers][tokens][top_k] of the running sub-batch
};

}  // namespace ds::gpu
