// Every buffer a step of the GPU model needs, sized once at start-up (WorkspacePlan) and carved from
// one device arena (Workspace): the activations for max_tokens tokens, the logits for max_logit_rows
// rows, the step metadata, the sampler's buffers and the MLA prefill key expansion for a fixed number
// of key rows (one context piece: longer contexts are attended piece by piece). Nothing grows while serving: a step that does not fit is a ds::Error naming the limit.
// Addresses are fixed for the model's lifetime (CUDA graphs replay them).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "config/model_config.h"
#include "core/dtype.h"
#include "cuda/device_buffer.h"

namespace ds::gpu {

// Activation buffers for up to `tokens` tokens.
struct WorkspaceLimits;

struct Activations {
  int tokens = 0, pairs = 0;
  void *h = nullptr, *x = nullptr, *proj = nullptr, *qkv = nullptr, *fg = nullptr, *gg = nullptr;
  void *attn_o = nullptr, *gated = nullptr, *q_abs = nullptr, *o_lat = nullptr, *act = nullptr;
  void* kda_ws = nullptr;  // KDA prefill kernel workspace
  void* mla_ws = nullptr;  // MLA decode split-K workspace
  size_t kda_ws_bytes = 0, mla_ws_bytes = 0;
  void *moe_out = nullptr, *rows_x = nullptr;
  void* rank_out = nullptr;  // [tokens, hidden] a rank's partial layer outputs (tensor parallelism), or null
  void* x_split = nullptr;  // FP8 tile launches' x split (MoeGemmParams::x_split), x_split_capacity bytes
  size_t x_split_capacity = 0;
  // The split of the layer input ws.x written by its RMSNorm (LayerInput::split) for up to x_split_in_rows
  // tokens (kFp8TileMaxRows: the FP8 tile launches that read it), x_split_bytes(rows, hidden) bytes
  void* x_split_in = nullptr;
  int x_split_in_rows = 0;
  float* splitk_partials = nullptr;  // FP8 split-K (MoeGemmParams::splitk_*): 2 x SMs CTAs' partials
  int64_t splitk_capacity = 0;       // floats
  int* splitk_counters = nullptr;    // one per SM, zeroed by Workspace
  int splitk_items = 0;
  // cuBLASLt's FP8 dense projections (CudaEnv::fp8_cublas, LayerStep::linear): x quantized per row and 128 columns
  // (run_quantize_act_fp8) for up to fp8_act_rows rows (hi, scales) and fp8_act_lo_rows rows (lo) of up to
  // fp8_act_k columns; null when off
  uint8_t *fp8_act_hi = nullptr, *fp8_act_lo = nullptr;
  float* fp8_act_scale = nullptr;
  int fp8_act_rows = 0, fp8_act_lo_rows = 0;
  int64_t fp8_act_k = 0;
  float *g32 = nullptr, *beta = nullptr, *router = nullptr, *topk_w = nullptr;
  int32_t *topk_ids = nullptr, *pair_pos = nullptr, *sorted_token = nullptr;
  int32_t *slot_expert = nullptr, *slot_start = nullptr, *num_active = nullptr;
  int32_t* align_blocks = nullptr;  // the multi-CTA MoE sort's scratch (MoeAlignParams::block_offsets)
  int64_t align_blocks_capacity = 0;  // ints
  // Carves the buffers for `lim` (resolved: WorkspacePlan::lim) from `a` (a measuring arena first, to size
  // the real one).
  void carve(Arena& a, const ModelConfig& c, DType act, const WorkspaceLimits& lim, int num_sms);
};

// MLA prefill: the latents of one context piece (key_rows positions, gathered from the paged cache)
// and their keys/values expanded through kv_b_proj; and, for a chunk attended piece by piece, the
// running log-sum-exp merge of its partial outputs (fp32) for up to max_tokens query rows.
struct MlaExpansion {
  int key_rows = 0;           // capacity: the context piece
  int query_rows = 0;         // rows of the merge buffers (the step's max_tokens)
  void* lat = nullptr;        // [key_rows, R + dr]
  void* kv = nullptr;         // [key_rows, Hm (dn + dv)]
  float* acc_o = nullptr;     // [query_rows, Hm, dv] running merged output
  float* acc_lse = nullptr;   // [query_rows, Hm] its log-sum-exp
  float* piece_lse = nullptr; // [query_rows, Hm] the current piece's log-sum-exp
  static size_t bytes_per_row(const ModelConfig& c, DType act);        // per key row
  static size_t bytes_per_query_row(const ModelConfig& c);             // per query row (merge buffers)
};

// Where one sampling launch of `rows` rows keeps its parts in the staging area: the per-row
// parameters at 0, the penalty tokens and counts (pen_entries each), the token masks (mask_words per
// row; 0 when no row is masked), then the results (token and logprob per row, then max_logprobs top ids
// and logprobs per row). Uploaded: [0, off_out); downloaded: [off_out, total).
struct SamplingIoLayout {
  size_t off_tok = 0, off_cnt = 0, off_mask = 0, off_out = 0, total = 0;
  static SamplingIoLayout of(int rows, size_t pen_entries, int max_logprobs, int mask_words = 0);
};

// The sampler's buffers (used by CudaBackend's sampling): fp32 scratch for max_rows rows, and one
// device + pinned host staging area for the per-row parameters, penalty lists and results.
// A launch holds at most max_rows rows, penalty_entries penalty list entries (a row's list holds
// distinct token ids, so at most the vocabulary, which penalty_entries always covers; rows whose
// lists together exceed it are sampled in groups) and max_logprobs top logprobs per row.
struct SamplingBuffers {
  int max_rows = 0;
  int penalty_entries = 0;
  int max_logprobs = 0;
  float* work = nullptr;        // sampling_workspace_floats(max_rows, vocab) floats
  size_t work_floats = 0;
  void* io = nullptr;           // device staging, io_bytes
  void* io_host = nullptr;      // pinned host staging, io_bytes
  size_t io_bytes = 0;
};

struct WorkspaceLimits {
  int max_tokens = 8192;        // tokens per step (activations)
  int max_seqs = 64;            // sequences per step (state slots)
  int max_graph_batch = 256;    // largest decode batch replayed from a graph (padded to its bucket)
  int max_logit_rows = 0;       // 0: min(max_tokens, 256 MiB of logits); at least max_seqs and the graph bucket
  int64_t max_context = 0;      // longest sequence (max_model_len): block-table width
  int block_size = 16;
  bool rank_partials = false;   // a rank of a tensor-parallel group: Activations::rank_out
  int vocab_split = 1;          // the lm_head split by vocabulary over this many ranks: the ranks' logits
                                // gathered into logits_gather() before they are laid out in logits()
  int moe_split_tokens = 511;   // tokens of a step whose MoE activations the FP8 wgmma kernel's x split holds
                                // (MoE launches on it; max_tokens when quantized experts prefill on it too)
  int fp8_act_rows = 0;         // rows of a step's FP8 dense projections quantized for cuBLASLt (Activations::
  int fp8_act_lo_rows = 0;      // fp8_act_*): their hi part and scales, their lo part (0: none)
  int mla_expand_keys = 0;      // key rows of the MLA prefill expansion (the context piece); 0:
                                // min(max_context, 32768) (CudaModel lowers it under a small memory budget)
  int max_logprobs = 20;        // top logprobs per row the sampler returns
  int sampling_penalty_entries = 0;  // 0: max_logit_rows * min(vocab, 4096) (token, count) pairs;
                                     // at least the vocabulary (one row's longest list)
};

// Sizes of every workspace buffer, decided once.
struct WorkspacePlan {
  WorkspaceLimits lim;          // with the defaults resolved
  size_t activations = 0, logits = 0, meta = 0, sampling_work = 0, sampling_io = 0, expansion = 0;
  size_t logits_gather = 0;     // vocab_split > 1: the gathered [ranks][rows][vocab / ranks] logits
  size_t total() const {
    return activations + logits + meta + sampling_work + sampling_io + expansion + logits_gather;
  }
  static WorkspacePlan make(const ModelConfig& c, DType act, WorkspaceLimits lim, int num_sms);
  // "name: bytes (what)" lines for the start-up log.
  std::vector<std::string> describe(const ModelConfig& c, DType act) const;
};

class Workspace {
 public:
  Workspace(const ModelConfig& c, DType act, const WorkspacePlan& plan, int num_sms);
  const WorkspacePlan& plan() const { return plan_; }
  Activations& activations() { return act_; }
  const MlaExpansion& expansion() const { return expand_; }
  float* logits() const { return logits_; }
  float* logits_gather() const { return logits_gather_; }  // null unless vocab_split > 1
  int max_logit_rows() const { return plan_.lim.max_logit_rows; }
  // Step metadata: device and pinned host areas of meta_bytes() each.
  char* meta_device() const { return meta_dev_; }
  char* meta_host() const { return meta_host_.as<char>(); }
  size_t meta_bytes() const { return plan_.meta; }
  const SamplingBuffers& sampling() const { return sampling_; }
  size_t device_bytes() const { return arena_.capacity(); }
  void* arena_data() const { return arena_.data(); }

 private:
  WorkspacePlan plan_;
  Arena arena_;
  Activations act_;
  MlaExpansion expand_;
  float* logits_ = nullptr;
  float* logits_gather_ = nullptr;
  char* meta_dev_ = nullptr;
  PinnedBuffer meta_host_;
  SamplingBuffers sampling_;
  PinnedBuffer sampling_host_;
};

// The default MLA prefill context piece (key rows of the expansion): min(max_context, 32768), halved
// (not below 1024) while the expansion would take more than 1/16 of the memory budget left after the
// weights (budget_bytes; the caches get the rest).
int mla_piece_keys(const ModelConfig& c, DType act, int64_t max_context, double budget_bytes);

// Rows the MLA expansion GEMM runs for `rows` gathered key rows: the next of 2, 3, 4, 6, 8, 12, ... (2^k and
// 3 x 2^k) capped at key_rows, so it only ever takes the shapes the start-up warm-up loaded (cuBLASLt picks
// kernels by shape and CUDA loads them lazily, into device memory); rows past `rows` are never read.
int mla_expand_gemm_rows(int rows, int key_rows);

// The bucket (padded batch size) of a decode batch of n sequences replayed from a graph.
int graph_bucket(int n);
// The block-table width (stride) of a graph for block tables of `blocks` columns: the next power of
// two, at least 16.
int graph_stride(int64_t blocks);
// Largest width of any projection output held in Activations::proj.
int64_t max_proj_width(const ModelConfig& c);

}  // namespace ds::gpu
