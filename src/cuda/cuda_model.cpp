#include "cuda/cuda_model.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/elementwise.h"
#include "cuda/kernels/kda_prefill.h"
#include "cuda/kernels/mla_decode.h"
#include "cuda/model_internal.h"

namespace ds::gpu {
namespace {

constexpr size_t kGiB = size_t(1) << 30;
constexpr size_t kReserve = size_t(768) << 20;  // left free for cuBLAS, graphs and the runtime

size_t align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

int next_bucket(int n) {
  static constexpr int kBuckets[] = {1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256,
                                     320, 384, 448, 512};
  for (int b : kBuckets)
    if (b >= n) return b;
  return (n + 63) / 64 * 64;
}

int next_pow2(int n) {
  int p = 16;
  while (p < n) p *= 2;
  return p;
}

}  // namespace

int64_t max_proj_width(const ModelConfig& c) {
  int64_t w = kda_in_proj_rows(c);
  const auto& m = c.mla;
  w = std::max<int64_t>(w, int64_t(m.num_heads) * m.qk_head_dim() + m.latent_dim());
  w = std::max<int64_t>(w, 2 * int64_t(c.intermediate_size));
  w = std::max<int64_t>(w, 2 * int64_t(c.moe.intermediate_size) * std::max(1, c.moe.num_shared_experts));
  return w;
}

void CudaModel::Workspace::carve(Arena& a, const ModelConfig& c, DType act, int T, int rows, int max_seqs,
                                 int num_sms) {
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
  int dec_rows = std::max(std::min(T, max_seqs), num_sms);  // rows * splits <= max(rows, SMs)
  mla_ws_bytes = c.num_mla_layers() ? mla_decode_workspace_bytes(1, Hm, std::max(2, dec_rows)) : 0;
  mla_ws = a.alloc_bytes(mla_ws_bytes);
  int64_t act_w = std::max<int64_t>({int64_t(kp) * c.moe.intermediate_size, c.intermediate_size,
                                     int64_t(c.moe.intermediate_size) * std::max(1, c.moe.num_shared_experts)});
  this->act = A(T * act_w);
  moe_out = A(int64_t(pairs) * hid);
  rows_x = A(int64_t(rows) * hid);
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
}

CudaModel::CudaModel(const ModelConfig& c, DeviceWeights w, const CudaModelOptions& o)
    : cfg_(c), w_(std::move(w)), opt_(o), gemm_(size_t(32) << 20) {
  DS_CHECK(o.act == DType::BF16 || o.act == DType::F32, "CUDA backend: activation dtype must be bf16 or fp32");
  DS_CHECK(o.act == w_.dtype, "CUDA backend: weights and activations must share a dtype");
  DS_CHECK(c.kda.head_dim == 128 || c.num_kda_layers() == 0, "CUDA backend: KDA head_dim must be 128");
  DS_CHECK(o.max_num_seqs > 0 && o.block_size > 0 && o.max_tokens > 0, "CUDA backend: bad cache options");
  meta_ = std::make_unique<Meta>();
  ws_ = std::make_unique<Workspace>();
  num_sms_ = device_info().num_sms;

  // activation workspace (fixed size: forwards larger than max_tokens are split)
  int rows_cap = std::max(o.max_num_seqs, o.max_graph_batch);
  {
    Arena measure = Arena::measuring();
    Workspace tmp;
    int seqs = std::max(o.max_num_seqs, o.max_graph_batch);
    tmp.carve(measure, c, o.act, o.max_tokens, std::max(rows_cap, o.max_tokens), seqs, num_sms_);
    ws_arena_ = Arena(measure.used(), "activation workspace");
    ws_->carve(ws_arena_, c, o.act, o.max_tokens, std::max(rows_cap, o.max_tokens), seqs, num_sms_);
    ws_bytes_ = ws_arena_.capacity();
  }
  ensure_logits(rows_cap);
  ensure_meta(size_t(4) << 20);

  // caches
  const size_t es = dtype_size(o.act);
  const int L_kda = c.num_kda_layers(), L_mla = c.num_mla_layers();
  const int64_t H = c.kda.num_heads, K = c.kda.head_dim, HK = H * K, W = c.kda.conv_kernel;
  const size_t state_slot = size_t(H * K * K) * 4, conv_slot = align_up(size_t((W - 1) * 3 * HK) * es, 16);
  const size_t per_slot = L_kda * (state_slot + conv_slot);
  const size_t per_block = size_t(L_mla) * o.block_size * c.mla.latent_dim() * es;
  size_t free_b = 0, total_b = 0;
  DS_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  double budget = o.gpu_memory_utilization * double(total_b) - double(total_b - free_b) - double(kReserve);
  size_t slots_bytes = (o.max_num_seqs + 1) * per_slot;
  DS_CHECK(budget > double(slots_bytes + 2 * per_block),
           "CUDA backend: not enough device memory for {} KDA state slots ({:.2f} GiB) and the MLA cache: {:.2f} GiB "
           "available under gpu_memory_utilization {} (weights {:.2f} GiB)",
           o.max_num_seqs, slots_bytes / double(kGiB), std::max(0.0, budget) / kGiB, o.gpu_memory_utilization,
           w_.bytes / double(kGiB));
  if (o.num_blocks > 0) {
    num_blocks_ = o.num_blocks;
  } else {
    int64_t fit = per_block ? int64_t((budget - double(slots_bytes)) / double(per_block)) - 1 : (int64_t(1) << 20);
    num_blocks_ = int(std::min<int64_t>(fit, int64_t(1) << 30 >> 4));
  }
  DS_CHECK(num_blocks_ > 0, "CUDA backend: no room for the MLA cache");
  kda_state_ = DeviceBuffer(std::max<size_t>(1, L_kda * (o.max_num_seqs + 1) * state_slot), "KDA state slots");
  conv_state_ = DeviceBuffer(std::max<size_t>(1, L_kda * (o.max_num_seqs + 1) * conv_slot), "KDA conv state");
  mla_cache_ = DeviceBuffer(std::max<size_t>(1, size_t(num_blocks_ + 1) * per_block), "MLA latent cache");
  DS_CUDA_CHECK(cudaMemsetAsync(kda_state_.data(), 0, kda_state_.bytes(), stream_));
  DS_CUDA_CHECK(cudaMemsetAsync(conv_state_.data(), 0, conv_state_.bytes(), stream_));
  DS_CUDA_CHECK(cudaMemsetAsync(mla_cache_.data(), 0, mla_cache_.bytes(), stream_));
  DS_CUDA_CHECK(cudaMemsetAsync(ws_arena_.data(), 0, ws_arena_.capacity(), stream_));
  cache_bytes_ = kda_state_.bytes() + conv_state_.bytes() + mla_cache_.bytes();
  stream_.sync();
  DS_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  spdlog::info(
      "CUDA memory: weights {:.2f} GiB, KDA state {} slots x {:.1f} MiB = {:.2f} GiB, MLA cache {} pages x {} "
      "tokens = {} tokens ({:.2f} GiB), workspace {:.2f} GiB ({} tokens), {:.2f} GiB of {:.2f} GiB in use",
      w_.bytes / double(kGiB), o.max_num_seqs, per_slot / 1048576.0,
      (kda_state_.bytes() + conv_state_.bytes()) / double(kGiB), num_blocks_, o.block_size,
      int64_t(num_blocks_) * o.block_size, mla_cache_.bytes() / double(kGiB), ws_bytes_ / double(kGiB),
      o.max_tokens, (total_b - free_b) / double(kGiB), total_b / double(kGiB));
}

CudaModel::~CudaModel() = default;

float CudaModel::last_forward_ms() const {
  fwd_end_.sync();
  return fwd_end_.elapsed_ms_since(fwd_start_);
}

void CudaModel::ensure_logits(int rows) {
  if (rows <= logits_cap_) return;
  int cap = std::max(rows, logits_cap_ * 2);
  logits_ = DeviceBuffer(size_t(cap) * cfg_.vocab_size * sizeof(float), "logits");
  logits_cap_ = cap;
  graphs_.clear();  // captured graphs wrote to the old buffer
}

void CudaModel::ensure_meta(size_t bytes) {
  if (bytes <= meta_dev_.bytes()) return;
  if (meta_dev_.bytes()) meta_done_.sync();
  size_t cap = std::max(bytes, meta_dev_.bytes() * 2);
  meta_dev_ = DeviceBuffer(cap, "step metadata");
  meta_host_ = PinnedBuffer(cap);
  graphs_.clear();
}

// Packs the plan's arrays into one pinned buffer and uploads them with one copy. The layout depends
// only on (T, N, R, stride), with the fresh-slot list last, so a graph's metadata has fixed addresses.
void CudaModel::upload_meta(const BatchLayout& p) {
  struct Part {
    const void* data;
    size_t bytes;
    const void** dst;
  };
  Meta& m = *meta_;
  m.T = p.num_tokens;
  m.N = p.num_seqs;
  m.R = p.num_rows();
  m.stride = p.bt_stride;
  m.F = int(p.zero_slots.size());
  m.row0 = 0;  // one layout per forward: its rows start the logits
  m.n_dec = p.num_decode;
  m.Tk = int(p.key_rows.size());
  m.max_q_len = p.max_q_len;
  m.max_seq_len = p.max_seq_len;
  m.pure_decode = p.num_decode == p.num_seqs;
  m.mla_splits = m.n_dec > 0 ? choose_mla_decode_splits(m.n_dec, m.max_seq_len, num_sms_) : 1;
  auto part = [](const auto& v, auto** dst) {
    return Part{v.data(), v.size() * sizeof(v[0]), reinterpret_cast<const void**>(dst)};
  };
  // the fresh-slot list last: every other offset depends only on (T, N, R, stride, keys)
  const Part parts[] = {part(p.tokens, &m.tokens),         part(p.token_seq, &m.token_seq),
                        part(p.token_pos, &m.token_pos),   part(p.slot_mapping, &m.slot_mapping),
                        part(p.cu_seqlens, &m.cu_seqlens), part(p.slots, &m.slots),
                        part(p.seq_lens, &m.seq_lens),     part(p.logit_rows, &m.logit_rows),
                        part(p.fresh, &m.fresh),           part(p.pre_cu_q, &m.pre_cu_q),
                        part(p.pre_cu_k, &m.pre_cu_k),     part(p.key_rows, &m.key_rows),
                        part(p.block_tables, &m.block_tables), part(p.zero_slots, &m.zero_slots)};
  size_t total = 0;
  for (const auto& pt : parts) total += align_up(pt.bytes + 4, 256);
  ensure_meta(total);
  meta_done_.sync();  // the previous step's copy has left the pinned buffer
  char* host = meta_host_.as<char>();
  char* dev = meta_dev_.as<char>();
  size_t off = 0;
  for (const auto& pt : parts) {
    if (pt.bytes) std::memcpy(host + off, pt.data, pt.bytes);
    *pt.dst = dev + off;
    off += align_up(pt.bytes + 4, 256);
  }
  DS_CUDA_CHECK(cudaMemcpyAsync(dev, host, off, cudaMemcpyHostToDevice, stream_));
  meta_done_.record(stream_);
}

void CudaModel::zero_fresh(const BatchLayout& p) {
  if (p.zero_slots.empty() || cfg_.num_kda_layers() == 0) return;
  const int64_t H = cfg_.kda.num_heads, K = cfg_.kda.head_dim, HK = H * K, W = cfg_.kda.conv_kernel;
  const size_t state_slot = size_t(H * K * K) * 4;
  const size_t conv_slot = align_up(size_t((W - 1) * 3 * HK) * dtype_size(opt_.act), 16);
  ZeroSlotsParams z;
  z.slots = meta_->zero_slots;
  z.num_slots = int(p.zero_slots.size());
  z.layers = cfg_.num_kda_layers();
  z.base = kda_state_.data();
  z.slot_stride = int64_t(state_slot);
  z.layer_stride = int64_t(state_slot) * (opt_.max_num_seqs + 1);
  z.bytes_per_slot = int64_t(state_slot);
  run_zero_slots(z, stream_);
  z.base = conv_state_.data();
  z.slot_stride = int64_t(conv_slot);
  z.layer_stride = int64_t(conv_slot) * (opt_.max_num_seqs + 1);
  z.bytes_per_slot = int64_t(conv_slot);
  run_zero_slots(z, stream_);
}

void CudaModel::forward(const ForwardBatch& batch) {
  LayoutLimits lim;
  lim.vocab = cfg_.vocab_size;
  lim.num_slots = opt_.max_num_seqs;
  lim.num_blocks = num_blocks_;
  lim.block_size = opt_.block_size;
  lim.max_tokens = opt_.max_tokens;
  BatchLayout p = layout_batch(batch, lim);
  DS_CHECK(p.copy_slots.empty() && p.restore_slots.empty() && p.save_snapshots.empty(),
           "CUDA backend: copying, restoring or saving KDA states is not supported yet");
  rows_ = batch.num_logit_rows();
  ensure_logits(std::max(rows_, 1));
  stats_ = ForwardStats{};
  stats_.sub_batches = 1;
  fwd_start_.record(stream_);
  struct EndMark {  // recorded however forward() returns
    CudaModel* m;
    ~EndMark() { m->fwd_end_.record(m->stream_); }
  } end_mark{this};
  if (opt_.use_graphs && forced_.empty()) {
    bool identity_rows = p.num_rows() == p.num_seqs;
    for (int r = 0; identity_rows && r < p.num_rows(); ++r) identity_rows = p.logit_rows[size_t(r)] == r;
    if (p.num_decode == p.num_seqs && p.num_seqs <= opt_.max_graph_batch && identity_rows &&
        next_bucket(p.num_seqs) <= opt_.max_tokens) {
      forward_graph(std::move(p));
      return;
    }
  }
  run_plan(p, false);
}

void CudaModel::ensure_expand(int keys) {
  if (keys <= expand_cap_) return;
  const auto& m = cfg_.mla;
  int cap = std::max(keys, expand_cap_ * 2);
  const size_t es = dtype_size(opt_.act);
  expand_lat_ = DeviceBuffer(size_t(cap) * m.latent_dim() * es, "MLA key latents");
  expand_kv_ = DeviceBuffer(size_t(cap) * m.num_heads * (m.qk_nope_head_dim + m.v_head_dim) * es, "MLA keys/values");
  expand_cap_ = cap;
}

void CudaModel::run_plan(const BatchLayout& p, bool) {
  if (!opt_.reference_attention && cfg_.num_mla_layers() > 0) ensure_expand(int(p.key_rows.size()));
  upload_meta(p);
  zero_fresh(p);
  if (!forced_.empty()) upload_forced_routes(p);
  compute(*meta_);
}

void CudaModel::upload_forced_routes(const BatchLayout& p) {
  const int k = cfg_.moe.top_k, T = p.num_tokens;
  std::vector<int32_t> ids(size_t(cfg_.num_layers) * T * k, 0);
  for (int l = 0; l < cfg_.num_layers; ++l) {
    if (!cfg_.is_moe(l)) continue;
    for (int i = 0; i < T; ++i) {
      const int slot = p.slots[size_t(p.token_seq[size_t(i)])], pos = p.token_pos[size_t(i)];
      auto s = forced_.find(slot);
      DS_CHECK(s != forced_.end(), "forced routes: none for state slot {}", slot);
      auto r = s->second.find(l);
      DS_CHECK(r != s->second.end() && int64_t(r->second.size()) >= (int64_t(pos) + 1) * k,
               "forced routes: state slot {} has none for layer {} position {}", slot, l, pos);
      for (int j = 0; j < k; ++j) {
        const int32_t e = r->second[size_t(int64_t(pos) * k + j)];
        DS_CHECK(e >= 0 && e < cfg_.moe.num_experts, "forced routes: expert {} out of range", e);
        ids[(size_t(l) * T + size_t(i)) * k + size_t(j)] = e;
      }
    }
  }
  const size_t bytes = ids.size() * sizeof(int32_t);
  if (forced_dev_.bytes() < bytes) forced_dev_ = DeviceBuffer(bytes, "forced routes");
  DS_CUDA_CHECK(cudaMemcpyAsync(forced_dev_.data(), ids.data(), bytes, cudaMemcpyHostToDevice, stream_.get()));
  DS_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));  // `ids` is pageable and about to go away
}

void CudaModel::forward_graph(BatchLayout p) {
  int bucket = next_bucket(p.num_seqs);
  int stride = next_pow2(p.bt_stride);
  pad_decode_layout(p, bucket, stride, opt_.max_num_seqs, num_blocks_, opt_.block_size);
  p.logit_rows.resize(size_t(bucket));
  for (int r = 0; r < bucket; ++r) p.logit_rows[size_t(r)] = r;
  ensure_logits(bucket);
  upload_meta(p);  // may clear graphs_ when a buffer grows
  // the split count depends only on the graph's key (its context bound), never on this step's lengths
  meta_->mla_splits = choose_mla_decode_splits(bucket, stride * opt_.block_size, num_sms_);
  zero_fresh(p);
  stats_.graph = true;
  auto key = std::make_pair(bucket, stride);
  auto it = graphs_.find(key);
  if (it == graphs_.end()) {
    compute(*meta_);  // warm-up outside capture: cuBLASLt plans, lazy module loading
    Graph g;
    g.begin_capture(stream_);
    try {
      compute(*meta_);
    } catch (...) {
      cudaGraph_t dummy = nullptr;
      cudaStreamEndCapture(stream_, &dummy);
      if (dummy) cudaGraphDestroy(dummy);
      throw;
    }
    g.end_capture(stream_);
    spdlog::debug("CUDA graph captured for decode batch {} (block-table width {}): {} nodes", bucket, stride,
                  g.num_nodes());
    it = graphs_.emplace(key, std::move(g)).first;
    return;  // the warm-up run already produced this step's results
  }
  it->second.launch(stream_);
}

}  // namespace ds::gpu
