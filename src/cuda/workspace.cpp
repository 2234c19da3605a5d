#include "cuda/workspace.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/kda_prefill.h"
#include "cuda/kernels/mla_decode.h"
#include "cuda/kernels/moe_gemm.h"
#include "cuda/kernels/moe_gemm_fp8_wgmma.h"
#include "cuda/kernels/moe_route.h"
#include "cuda/kernels/sampling.h"
#include "cuda/device_weights.h"

namespace ds::gpu {
namespace {

constexpr int64_t kDefaultExpandKeys = 32768;             // the context piece (longer contexts: piece by piece)
constexpr size_t kDefaultLogitBytes = size_t(256) << 20;  // logits rows beyond the decode batch

size_t align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

// Decode batch sizes replayed from graphs (beyond 512: multiples of 64).
constexpr int kBuckets[] = {1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512};

std::string mib(size_t b) { return fmt::format("{:.1f} MiB", double(b) / 1048576.0); }

}  // namespace

int mla_piece_keys(const ModelConfig& c, DType act, int64_t max_context, double budget_bytes) {
  int64_t keys = std::max<int64_t>(1, std::min<int64_t>(max_context, kDefaultExpandKeys));
  const double row = double(MlaExpansion::bytes_per_row(c, act));
  while (keys > 1024 && double(keys) * row > budget_bytes / 16.0) keys /= 2;
  return int(keys);
}

int mla_expand_gemm_rows(int rows, int key_rows) {
  int64_t p = 2;
  while (p < rows && 3 * p / 2 < rows) p *= 2;
  const int64_t r = p >= rows ? p : 3 * p / 2;
  return int(std::min<int64_t>(r, key_rows));
}

int graph_bucket(int n) {
  for (int b : kBuckets)
    if (b >= n) return b;
  return (n + 63) / 64 * 64;
}

int graph_stride(int64_t blocks) {
  int64_t p = 16;
  while (p < blocks) p *= 2;
  return int(p);
}

int64_t max_proj_width(const ModelConfig& c) {
  int64_t w = kda_in_proj_rows(c);
  const auto& m = c.mla;
  w = std::max<int64_t>(w, int64_t(m.num_heads) * m.qk_head_dim() + m.latent_dim());
  w = std::max<int64_t>(w, 2 * int64_t(c.intermediate_size));
  w = std::max<int64_t>(w, 2 * int64_t(c.moe.intermediate_size) * std::max(1, c.moe.num_shared_experts));
  return w;
}

void Activations::carve(Arena& a, const ModelConfig& c, DType act, const WorkspaceLimits& lim, int num_sms) {
  const int T = lim.max_tokens, max_seqs = std::max(lim.max_seqs, lim.max_graph_batch);
  const int rows = std::max({lim.max_seqs, lim.max_graph_batch, lim.max_tokens});
  const int moe_split_tokens = lim.moe_split_tokens;
  const bool rank_partials = lim.rank_partials;
  const size_t es = dtype_size(act);
  const int64_t hid = c.hidden_size, HK = int64_t(c.kda.num_heads) * c.kda.head_dim;
  const auto& m = c.mla;
  const int64_t Hm = m.num_heads, R = m.kv_lora_rank;
  const int kp = c.moe.top_k + 1;
  tokens = T;
  pairs = T * kp;
  auto A = [&](int64_t elems) { return a.alloc_bytes(size_t(elems) * es); };
  h = A(T * hid);
  x = A(T * hid);
  proj = A(T * max_proj_width(c));
  qkv = A(T * 3 * HK);
  fg = A(2 * T * HK);  // [2][T][HK]: f_b output, then g_b output
  gg = static_cast<char*>(fg) + size_t(T) * HK * es;
  attn_o = A(T * std::max<int64_t>(HK, Hm * m.v_head_dim));
  gated = A(T * HK);
  q_abs = A(T * Hm * m.latent_dim());
  o_lat = A(T * Hm * R);
  kda_ws_bytes = c.num_kda_layers() ? kda_prefill_workspace_bytes(T, std::min(T, max_seqs), c.kda.num_heads, act) : 0;
  kda_ws = a.alloc_bytes(kda_ws_bytes);
  // rows * splits <= max(rows, kMlaDecodeMaxCtasPerSm x SMs) (choose_mla_decode_splits)
  int dec_rows = std::max(std::min(T, max_seqs), kMlaDecodeMaxCtasPerSm * num_sms);
  mla_ws_bytes = c.num_mla_layers() ? mla_decode_workspace_bytes(1, Hm, std::max(2, dec_rows)) : 0;
  mla_ws = a.alloc_bytes(mla_ws_bytes);
  int64_t act_w = std::max<int64_t>({int64_t(kp) * c.moe.intermediate_size, c.intermediate_size,
                                     int64_t(c.moe.intermediate_size) * std::max(1, c.moe.num_shared_experts)});
  this->act = A(T * act_w);
  moe_out = A(int64_t(pairs) * hid);
  rows_x = A(int64_t(rows) * hid);
  rank_out = rank_partials ? A(T * hid) : nullptr;
  // the widest K of a dense projection
  const int64_t dense_k = std::max<int64_t>({hid, HK, Hm * m.v_head_dim, c.intermediate_size,
                                             int64_t(c.moe.intermediate_size) * std::max(1, c.moe.num_shared_experts)});
  {  // the FP8 tile launches' x split: MoE gate/up (tokens x hidden) and down (pairs x expert width) of up
    // to moe_split_tokens tokens, dense projections up to kFp8TileMaxRows rows (their widest K)
    const int64_t moe_t = std::min(T, std::max(1, moe_split_tokens)), dense_t = std::min(T, kFp8TileMaxRows);
    x_split_capacity = std::max({x_split_bytes(moe_t, hid), x_split_bytes(moe_t * kp, c.moe.intermediate_size),
                              x_split_bytes(dense_t, dense_k)});
    x_split = a.alloc_bytes(x_split_capacity);
    x_split_in_rows = int(dense_t);
    x_split_in = a.alloc_bytes(x_split_bytes(dense_t, hid));
  }
  if (lim.fp8_act_rows > 0) {  // cuBLASLt's FP8 dense projections: hi, lo and scales of their quantized x
    fp8_act_rows = std::min(T, lim.fp8_act_rows);
    fp8_act_lo_rows = std::min(fp8_act_rows, lim.fp8_act_lo_rows);
    fp8_act_k = (dense_k + 127) / 128 * 128;
    fp8_act_hi = static_cast<uint8_t*>(a.alloc_bytes(size_t(fp8_act_rows) * size_t(fp8_act_k)));
    fp8_act_lo = fp8_act_lo_rows ? static_cast<uint8_t*>(a.alloc_bytes(size_t(fp8_act_lo_rows) * size_t(fp8_act_k)))
                                 : nullptr;
    fp8_act_scale = a.alloc<float>(size_t(fp8_act_rows) * size_t(fp8_act_k / 128));
  }
  splitk_items = num_sms;  // split launches have fewer 64-row blocks than SMs
  splitk_capacity = int64_t(2) * num_sms * 32 * 128;  // and at most 2 x SMs CTAs of 32 x 128 floats (64-token tiles)
  splitk_partials = a.alloc<float>(size_t(splitk_capacity));
  splitk_counters = a.alloc<int>(size_t(splitk_items));
  g32 = a.alloc<float>(size_t(T) * HK);
  beta = a.alloc<float>(size_t(T) * c.kda.num_heads);
  router = a.alloc<float>(size_t(T) * std::max(1, c.moe.num_experts));
  topk_w = a.alloc<float>(size_t(pairs));
  topk_ids = a.alloc<int32_t>(size_t(pairs));
  pair_pos = a.alloc<int32_t>(size_t(pairs));
  sorted_token = a.alloc<int32_t>(size_t(pairs));
  slot_expert = a.alloc<int32_t>(size_t(c.moe.num_experts + 2));
  slot_start = a.alloc<int32_t>(size_t(c.moe.num_experts + 3));
  num_active = a.alloc<int32_t>(1);
  align_blocks_capacity = (int64_t(pairs) + kMoeAlignChunk - 1) / kMoeAlignChunk * (c.moe.num_experts + 1);
  align_blocks = a.alloc<int32_t>(size_t(align_blocks_capacity));
}

SamplingIoLayout SamplingIoLayout::of(int rows, size_t pen_entries, int max_logprobs, int mask_words) {
  SamplingIoLayout l;
  l.off_tok = align_up(size_t(rows) * sizeof(SampleRow), 256);
  l.off_cnt = l.off_tok + align_up(pen_entries * 4, 256);
  l.off_mask = l.off_cnt + align_up(pen_entries * 4, 256);
  l.off_out = l.off_mask + align_up(size_t(rows) * size_t(mask_words) * 4, 256);
  l.total = l.off_out + size_t(rows) * (12 + size_t(max_logprobs) * 8);  // token, logprob, rank, top lists
  return l;
}

size_t MlaExpansion::bytes_per_query_row(const ModelConfig& c) {
  return size_t(c.mla.num_heads) * (size_t(c.mla.v_head_dim) + 2) * sizeof(float);
}

size_t MlaExpansion::bytes_per_row(const ModelConfig& c, DType act) {
  const auto& m = c.mla;
  return (size_t(m.latent_dim()) + size_t(m.num_heads) * (m.qk_nope_head_dim + m.v_head_dim)) * dtype_size(act);
}

WorkspacePlan WorkspacePlan::make(const ModelConfig& c, DType act, WorkspaceLimits lim, int num_sms) {
  DS_CHECK(lim.max_tokens > 0 && lim.max_seqs > 0 && lim.block_size > 0, "workspace: bad limits");
  if (lim.max_context <= 0) lim.max_context = c.max_position_embeddings;
  const int bucket = graph_bucket(std::max(1, lim.max_graph_batch));
  const size_t row_bytes = size_t(c.vocab_size) * sizeof(float);
  if (lim.max_logit_rows <= 0)
    lim.max_logit_rows = int(std::min<int64_t>(lim.max_tokens, int64_t(kDefaultLogitBytes / row_bytes)));
  // a decode step (padded to its graph bucket) always fits
  lim.max_logit_rows = std::max({lim.max_logit_rows, lim.max_seqs, bucket});
  if (lim.mla_expand_keys <= 0) lim.mla_expand_keys = int(std::min<int64_t>(lim.max_context, kDefaultExpandKeys));
  if (lim.sampling_penalty_entries <= 0)
    lim.sampling_penalty_entries = int(std::min<int64_t>(int64_t(lim.max_logit_rows) * std::min(4096, c.vocab_size),
                                                         int64_t(1) << 30));
  // one row's list (its distinct tokens) always fits: the sampler splits only between rows
  lim.sampling_penalty_entries = std::max(lim.sampling_penalty_entries, c.vocab_size);
  WorkspacePlan p;
  p.lim = lim;
  {  // activations (the same carve as the real arena, counting only)
    Arena measure = Arena::measuring();
    Activations tmp;
    tmp.carve(measure, c, act, lim, num_sms);
    p.activations = measure.used();
  }
  p.logits = align_up(size_t(lim.max_logit_rows) * row_bytes, Arena::kAlign);
  if (lim.vocab_split > 1) p.logits_gather = p.logits;
  {  // step metadata: 13 arrays, each padded to 256 bytes (CudaModel::upload_meta)
    const int64_t T = std::max(lim.max_tokens, bucket), N = std::max(lim.max_seqs, bucket);
    const int64_t S = graph_stride((lim.max_context + lim.block_size - 1) / lim.block_size);
    const int64_t words = 4 * T + 6 * (N + 1) + lim.max_logit_rows + N * S + N;
    p.meta = align_up(size_t(words) * 4 + size_t(N) + 13 * 260, Arena::kAlign);
  }
  p.sampling_work = align_up(sampling_workspace_floats(lim.max_logit_rows, c.vocab_size) * sizeof(float), Arena::kAlign);
  p.sampling_io = align_up(
      SamplingIoLayout::of(lim.max_logit_rows, size_t(lim.sampling_penalty_entries), lim.max_logprobs,
                           (c.vocab_size + 31) / 32).total,
      Arena::kAlign);
  p.expansion = c.num_mla_layers() ? 5 * Arena::kAlign + size_t(lim.mla_expand_keys) * MlaExpansion::bytes_per_row(c, act) +
                                         size_t(lim.max_tokens) * MlaExpansion::bytes_per_query_row(c)
                                   : 0;
  return p;
}

std::vector<std::string> WorkspacePlan::describe(const ModelConfig& c, DType act) const {
  std::vector<std::string> out;
  out.push_back(fmt::format("activations {} ({} tokens per step)", mib(activations), lim.max_tokens));
  out.push_back(fmt::format("logits {} ({} rows x {} fp32)", mib(logits), lim.max_logit_rows, c.vocab_size));
  if (logits_gather)
    out.push_back(fmt::format("logits gather {} (the lm_head split by vocabulary over {} ranks)", mib(logits_gather),
                              lim.vocab_split));
  out.push_back(fmt::format("step metadata {} (device) + {} (pinned host)", mib(meta), mib(meta)));
  out.push_back(fmt::format("sampling {} scratch + {} staging ({} rows, {} penalty entries, {} logprobs, token masks)",
                            mib(sampling_work), mib(sampling_io), lim.max_logit_rows, lim.sampling_penalty_entries,
                            lim.max_logprobs));
  if (c.num_mla_layers())
    out.push_back(fmt::format("MLA prefill context piece {} ({} key rows x {} B expanded at a time, any context "
                              "attended piece by piece; + {} query rows x {} B of log-sum-exp merge)",
                              mib(expansion), lim.mla_expand_keys, MlaExpansion::bytes_per_row(c, act),
                              lim.max_tokens, MlaExpansion::bytes_per_query_row(c)));
  out.push_back(fmt::format("workspace total {}", mib(total())));
  return out;
}

Workspace::Workspace(const ModelConfig& c, DType act, const WorkspacePlan& plan, int num_sms)
    : plan_(plan), arena_(plan.total(), "step workspace") {
  const auto& lim = plan.lim;
  act_.carve(arena_, c, act, lim, num_sms);
  if (act_.splitk_counters) DS_CUDA_CHECK(cudaMemset(act_.splitk_counters, 0, size_t(act_.splitk_items) * sizeof(int)));
  logits_ = static_cast<float*>(arena_.alloc_bytes(plan.logits));
  if (plan.logits_gather) logits_gather_ = static_cast<float*>(arena_.alloc_bytes(plan.logits_gather));
  meta_dev_ = static_cast<char*>(arena_.alloc_bytes(plan.meta));
  meta_host_ = PinnedBuffer(plan.meta);
  sampling_.max_rows = lim.max_logit_rows;
  sampling_.penalty_entries = lim.sampling_penalty_entries;
  sampling_.max_logprobs = lim.max_logprobs;
  sampling_.work_floats = plan.sampling_work / sizeof(float);
  sampling_.work = static_cast<float*>(arena_.alloc_bytes(plan.sampling_work));
  if (plan.expansion) {
    const auto& m = c.mla;
    expand_.key_rows = lim.mla_expand_keys;
    expand_.lat = arena_.alloc_bytes(size_t(expand_.key_rows) * m.latent_dim() * dtype_size(act));
    expand_.kv = arena_.alloc_bytes(size_t(expand_.key_rows) * m.num_heads * (m.qk_nope_head_dim + m.v_head_dim) *
                                    dtype_size(act));
    expand_.query_rows = lim.max_tokens;
    const size_t qh = size_t(lim.max_tokens) * m.num_heads;
    expand_.acc_o = arena_.alloc<float>(qh * m.v_head_dim);
    expand_.acc_lse = arena_.alloc<float>(qh);
    expand_.piece_lse = arena_.alloc<float>(qh);
  }
  sampling_.io = arena_.alloc_bytes(plan.sampling_io);
  sampling_host_ = PinnedBuffer(plan.sampling_io);
  sampling_.io_host = sampling_host_.data();
  sampling_.io_bytes = plan.sampling_io;
}

}  // namespace ds::gpu
