// Kimi-Linear on one GPU: the thin model that runs a step. It owns the weights, the device context,
// the caches (DeviceCaches: KDA state slots, conv tails, snapshots, paged MLA latents), the step
// workspace (planned once at start-up from the memory budget: nothing grows while serving), the layers
// (cuda/layers/: KdaLayer, MlaLayer, MoeLayer, DenseMlp), and the CUDA graphs. forward() runs a
// ForwardBatch (varlen prefill chunks and decodes in one batch, laid out by model/batch_layout.h and
// never split: the scheduler chunks within the backend's limits):
//
//   h = embed(ids); per layer: h += Attn(rmsnorm_in(h)); h += FFN(rmsnorm_post(h))
//   logits (fp32) = lm_head(rmsnorm_final(h)) for the rows the slices ask for
//
// Pure-decode batches run as CUDA graphs, one per (batch-size bucket, block-table width), all captured
// at start-up on the scratch slot and page (nothing is captured, and so nothing allocated, while
// serving); every buffer a graph touches has a fixed address. A decode step whose key was not captured
// (contexts beyond graph_max_context) runs eagerly.
#pragma once
#include <cuda_runtime.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "config/model_config.h"
#include "core/dtype.h"
#include "cuda/device_buffer.h"
#include "cuda/device_caches.h"
#include "cuda/device_context.h"
#include "cuda/device_weights.h"
#include "cuda/gemm.h"
#include "cuda/stream.h"
#include "cuda/workspace.h"
#include "model/batch_layout.h"
#include "model/forward_batch.h"
#include "model/step_context.h"

namespace ds::gpu {

struct StepMeta;
class LayerPart;
class DeviceComm;

struct CudaModelOptions {
  DType act = DType::BF16;          // activation dtype: BF16 or F32 (each weight's dtype is its WeightView's)
  int max_num_seqs = 64;            // KDA state slots
  int block_size = 16;
  KvCacheDtype kv_cache_dtype = KvCacheDtype::Auto;  // MLA latent cache: act dtype, or FP8 rows (--kv-cache-dtype)
  int num_blocks = 0;               // 0: as many as the memory budget allows
  int num_snapshots = 0;            // KDA state snapshots (prefix caching); -1: from the memory plan
  double snapshot_memory_gib = 0;   // with -1: their budget (0: kSnapshotShare of the cache budget)
  double gpu_memory_utilization = 0.9;
  int max_tokens = 8192;            // tokens per forward (activation workspace size; more is an error)
  int64_t max_model_len = 0;        // longest sequence (0: the config's max_position_embeddings)
  int max_logit_rows = 0;           // 0: WorkspaceLimits' default
  int mla_expand_keys = 0;          // key rows of the MLA prefill expansion, the context piece (0: from the
                                    // memory budget, at most min(max_model_len, 32768))
  bool biased_moe_weights = false;
  int max_graph_batch = 256;        // largest decode batch replayed from a graph
  // The developer switches (config/runtime_env.h), all of them: graphs, reference attention, PDL, the wgmma
  // and FP8 kernel choices, graph_max_context (block tables of up to this many tokens get graphs; 0:
  // max_model_len; longer decode steps run eagerly). The device context carries them to every launch.
  CudaEnv switches;
  // Tensor parallelism: this rank's device collectives (cuda/device_comm.h; null or one rank: a single
  // model). The weights and config are then the rank's (WeightLoadOptions::full); each layer part adds its
  // output into a zeroed buffer that is all-reduced over the ranks and added into the residual. The
  // start-up warm-up runs without it (the ranks are built one after another); decode steps run eagerly
  // (the in-process group's host barriers cannot be captured in a graph).
  DeviceComm* comm = nullptr;
};

class CudaModel {
 public:
  CudaModel(const ModelConfig& c, DeviceWeights w, const CudaModelOptions& o);
  ~CudaModel();

  const ModelConfig& config() const { return cfg_; }
  DType act_dtype() const { return opt_.act; }
  int num_slots() const { return caches_->num_slots(); }
  int max_tokens() const { return opt_.max_tokens; }  // tokens per forward
  int num_blocks() const { return caches_->num_blocks(); }
  int num_snapshots() const { return caches_->shape().num_snapshots; }
  int block_size() const { return caches_->block_size(); }
  const DeviceContext& context() const { return ctx_; }
  cudaStream_t stream() const { return ctx_.stream; }

  // Runs the batch on the model's stream (asynchronously); logits() then holds
  // [batch.num_logit_rows(), vocab] fp32 once the stream is synchronised. A batch asking for more
  // logits rows or tokens than the workspace was planned for is a ds::Error (nothing runs); a prefill
  // chunk may attend to any context (the MLA prefill runs it piece by piece in the fixed expansion).
  void forward(const ForwardBatch& batch);
  const float* logits() const { return ws_->logits(); }
  int num_logit_rows() const { return rows_; }
  // Device time of the last forward (waits for it): CUDA events around its kernels.
  float last_forward_ms() const;
  // Host time the last forward took to queue its work (its layout, uploads and launches): beside
  // last_forward_ms it says whether the device waited on the host.
  double last_issue_ms() const { return issue_ms_; }
  size_t cache_bytes() const { return caches_->bytes(); }
  size_t workspace_bytes() const { return ws_->device_bytes(); }
  size_t weight_bytes() const { return w_.bytes; }
  const std::string& weight_format() const { return w_.format; }  // as start-up logs it
  const Workspace& workspace() const { return *ws_; }
  // The sampler's buffers, planned with the rest of the workspace (for CudaBackend's sampling).
  const SamplingBuffers& sampling_buffers() const { return ws_->sampling(); }
  DeviceCaches& caches() { return *caches_; }
  // Numerical tests: pin the MoE routing of the sequences in these state slots (slot -> MoE layer ->
  // [positions, top_k] experts, by absolute position) so that near-tied choices cannot flip between
  // two implementations; forwards then run eagerly. An empty map turns it off.
  // The device copy is allocated here (tests only), never while serving.
  void force_routes(std::map<int, RouteIds> by_slot);
  // Snapshots saved by the last forward that hold a NaN or an infinity (waits for the step).
  std::vector<int32_t> take_nonfinite_snapshots();
  // Tests: the device state of KDA layer `kda_layer` in `slot` (DeviceCaches::kda_state).
  float* debug_kda_state(int kda_layer, int slot) const;
  // The CUDA graphs captured at start-up (0 with graphs off).
  int num_graphs() const { return int(graphs_.size()); }
  std::vector<int> graph_buckets() const;  // the decode batch sizes they replay

 private:
  void build_layers();
  void plan_memory();
  void check_fits(const BatchLayout& p) const;
  void run_layout(const BatchLayout& p);
  void forward_graph(BatchLayout p);
  void capture_graphs();                            // at start-up: every (bucket, stride) key
  size_t capture_graph(int bucket, int stride);  // returns its node count
  void warm_up_prefill();                           // at start-up: load the prefill kernels
  LayoutLimits layout_limits() const;
  void prepare_graph_step(BatchLayout& p, int bucket, int stride);  // pad, upload, fix the split count
  void upload_meta(const BatchLayout& p);
  void state_ops_before(const BatchLayout& p);  // zero, copy, restore (the layout's lists, in order)
  void state_ops_after(const BatchLayout& p);   // save snapshots
  void upload_forced_routes(const BatchLayout& p);
  // prefix caching (cuda_model_snapshots.cpp): saves with their finiteness check
  int snapshots_in_budget(double cache_budget, size_t per_snapshot) const;  // num_snapshots -1
  void allocate_save_flags();  // at start-up, with the caches
  void begin_saves(const ForwardBatch& b);
  void save_checked(int slot, int snapshot);
  void forward_saves_only(const ForwardBatch& b);  // a batch of saves_before alone
  void compute(const StepMeta& m);  // every kernel of the forward, given the uploaded metadata

  ModelConfig cfg_;
  DeviceWeights w_;
  CudaModelOptions opt_;
  Stream stream_;
  DeviceContext ctx_;
  Gemm gemm_;
  std::unique_ptr<Workspace> ws_;
  std::unique_ptr<DeviceCaches> caches_;
  // layers: per model layer its attention and FFN halves and their input norms
  std::vector<std::unique_ptr<LayerPart>> attn_, ffn_;
  int rows_ = 0;
  Event meta_done_{false};
  Event fwd_start_, fwd_end_;
  double issue_ms_ = 0;
  std::unique_ptr<StepMeta> meta_;
  // graphs by (bucket, block-table stride), captured at start-up
  std::map<std::pair<int, int>, Graph> graphs_;
  std::map<int, RouteIds> forced_;  // force_routes()
  DeviceBuffer forced_dev_;         // [layers][max_tokens][top_k] (tests only: allocated by force_routes)
  bool ranked_ = false;             // a rank of a tensor-parallel group: parts add into rank_out (CudaModelOptions::comm)
  bool collectives_ = false;        // ... and meet the other ranks (past the start-up, or in a captured graph)
  DeviceBuffer save_flags_;         // [max saves per step] int32: 1 when that save is not finite
  PinnedBuffer save_flags_host_;
  std::vector<int32_t> saved_;      // the snapshot ids saved by the current step, in flag order
};

}  // namespace ds::gpu
