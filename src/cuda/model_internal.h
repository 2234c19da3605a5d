// Private parts of CudaModel shared by its .cpp files: the per-forward metadata views and the
// activation workspace layout.
#pragma once
#include <cstdint>

#include "config/model_config.h"
#include "core/dtype.h"
#include "cuda/cuda_model.h"
#include "cuda/device_buffer.h"

namespace ds::gpu {

// Device views of a BatchLayout's index arrays (see model/batch_layout.h for their meaning).
struct CudaModel::Meta {
  int T = 0, N = 0, R = 0, stride = 1, F = 0, row0 = 0;
  int n_dec = 0;          // the first n_dec sequences/tokens are single-token decodes
  int Tk = 0;             // key positions of the prefill sequences (expanded MLA attention)
  int max_q_len = 0, max_seq_len = 0;
  int mla_splits = 1;     // split-K of the MLA decode kernel
  bool pure_decode = false;
  const int32_t *tokens = nullptr, *token_seq = nullptr, *token_pos = nullptr, *slot_mapping = nullptr;
  const int32_t *cu_seqlens = nullptr, *slots = nullptr, *seq_lens = nullptr, *block_tables = nullptr;
  const int32_t *logit_rows = nullptr, *zero_slots = nullptr;
  const uint8_t* fresh = nullptr;  // [N]
  const int32_t *pre_cu_q = nullptr, *pre_cu_k = nullptr, *key_rows = nullptr;
};

// Activation buffers for up to `tokens` tokens (fixed addresses for the model's lifetime).
struct CudaModel::Workspace {
  int tokens = 0, pairs = 0;
  void *h = nullptr, *x = nullptr, *proj = nullptr, *qkv = nullptr, *fg = nullptr, *gg = nullptr;
  void *attn_o = nullptr, *gated = nullptr, *q_abs = nullptr, *o_lat = nullptr, *act = nullptr;
  void* kda_ws = nullptr;  // KDA prefill kernel workspace
  void* mla_ws = nullptr;  // MLA decode split-K workspace
  size_t kda_ws_bytes = 0, mla_ws_bytes = 0;
  void *moe_out = nullptr, *rows_x = nullptr;
  float *g32 = nullptr, *beta = nullptr, *router = nullptr, *topk_w = nullptr;
  int32_t *topk_ids = nullptr, *pair_pos = nullptr, *sorted_token = nullptr;
  int32_t *slot_expert = nullptr, *slot_start = nullptr, *num_active = nullptr;
  // Carves the buffers from `a` (a measuring arena first, to size the real one).
  void carve(Arena& a, const ModelConfig& c, DType act, int tokens, int rows, int max_seqs, int num_sms);
};

constexpr int kGemvMaxRows = 8;  // up to this many rows a projection streams its weights once (GEMV)

// `elems` elements of dtype t past p.
inline char* off(void* p, int64_t elems, DType t) { return static_cast<char*>(p) + elems * int64_t(dtype_size(t)); }
inline const char* off(const void* p, int64_t elems, DType t) {
  return static_cast<const char*>(p) + elems * int64_t(dtype_size(t));
}

// Largest width of any projection output held in Workspace::proj.
int64_t max_proj_width(const ModelConfig& c);

}  // namespace ds::gpu
