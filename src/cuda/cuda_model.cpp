#include "cuda/cuda_model.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "config/runtime_env.h"
#include "core/error.h"
#include "cuda/cuda_check.h"
#include "cuda/device_comm.h"
#include "cuda/kernels/elementwise.h"
#include "cuda/kernels/mla_decode.h"
#include "cuda/kernels/norm.h"
#include "cuda/layers/dense_mlp.h"
#include "cuda/layers/kda_layer.h"
#include "cuda/layers/layer_step.h"
#include "cuda/layers/mla_layer.h"
#include "cuda/layers/moe_layer.h"

namespace ds::gpu {
namespace {

constexpr size_t kMetaAlign = 256;
size_t align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

// The layout's index arrays in upload order (the zero-slot list last: every other offset depends
// only on (T, N, R, stride), so a graph's metadata has fixed addresses).
struct MetaPart {
  const void* data;
  size_t bytes;
  const void** dst;
};

template <class V, class P>
MetaPart part(const V& v, P** dst) {
  return MetaPart{v.data(), v.size() * sizeof(v[0]), reinterpret_cast<const void**>(dst)};
}

std::vector<MetaPart> meta_parts(const BatchLayout& p, StepMeta& m) {
  return {part(p.tokens, &m.tokens),         part(p.token_seq, &m.token_seq),
          part(p.token_pos, &m.token_pos),   part(p.slot_mapping, &m.slot_mapping),
          part(p.cu_seqlens, &m.cu_seqlens), part(p.slots, &m.slots),
          part(p.seq_lens, &m.seq_lens),     part(p.logit_rows, &m.logit_rows),
          part(p.fresh, &m.fresh),           part(p.pre_cu_q, &m.pre_cu_q),
          part(p.pre_cu_k, &m.pre_cu_k),     part(p.block_tables, &m.block_tables),
          part(p.zero_slots, &m.zero_slots)};
}

size_t meta_bytes(const std::vector<MetaPart>& parts) {
  size_t total = 0;
  for (const auto& pt : parts) total += align_up(pt.bytes + 4, kMetaAlign);
  return total;
}

}  // namespace

CudaModel::CudaModel(const ModelConfig& c, DeviceWeights w, const CudaModelOptions& o)
    : cfg_(c), w_(std::move(w)), opt_(o), gemm_(size_t(32) << 20, o.switches.gemm_buckets) {
  DS_CHECK(o.act == DType::BF16 || o.act == DType::F32, "CUDA backend: activation dtype must be bf16 or fp32");
  DS_CHECK(c.kda.head_dim == 128 || c.num_kda_layers() == 0, "CUDA backend: KDA head_dim must be 128");
  DS_CHECK(o.max_num_seqs > 0 && o.block_size > 0 && o.max_tokens > 0 && o.num_snapshots >= -1,
           "CUDA backend: bad cache options");
  const bool group = o.comm && o.comm->size() > 1;
  if (group && opt_.switches.graphs && !o.comm->graph_capturable()) {
    spdlog::info("  CUDA graphs: off for tensor parallelism over the in-process group (rank {} of {})", o.comm->rank(),
                 o.comm->size());
    opt_.switches.graphs = false;
  }
  // A rank whose collectives graphs can hold takes its layout from the start (the captures record them); the
  // start-up's eager forwards never meet the other ranks (the ranks start one after another).
  ranked_ = group && o.comm->graph_capturable();
  // The Hopper MLA decode kernel, unless set: for the FP8 latent cache (the fastest form there at every
  // measured shape), not for the bf16 cache (PERF.md session 17). It runs on sm_90 with bf16 activations;
  // elsewhere run_mla_decode falls back to the mma.sync kernels (with the split counts of one CTA an SM).
  if (opt_.switches.mla_decode_wgmma < 0) opt_.switches.mla_decode_wgmma = o.kv_cache_dtype == KvCacheDtype::Fp8 ? 1 : 0;
  // MLA decode CTAs an SM, unless set: two for the FP8 latent cache without the Hopper kernel (its conversion
  // overlaps the other CTA's MMAs: 1M-context decode 0.580 -> 0.548 ms a layer), one for the bf16 cache (two
  // lose there), PERF.md session 13 (the Hopper kernel runs one CTA an SM: its split counts are those of one)
  if (opt_.switches.mla_decode_ctas == 0)
    opt_.switches.mla_decode_ctas =
        o.kv_cache_dtype == KvCacheDtype::Fp8 && o.act == DType::BF16 && !opt_.switches.mla_decode_wgmma ? 2 : 1;
  // the context configures the kernels for this device (kernels/configure.h)
  ctx_ = make_device_context(stream_.get(), opt_.switches);
  meta_ = std::make_unique<StepMeta>();
  build_layers();
  plan_memory();
  capture_graphs();
  warm_up_prefill();
  ranked_ = collectives_ = group;  // from here on, forwards meet the other ranks
  size_t free_b = 0, total_b = 0;
  DS_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  spdlog::info("  in use after start-up: {:.2f} GiB of {:.2f} GiB", double(total_b - free_b) / double(1 << 30),
               double(total_b) / double(1 << 30));
}

CudaModel::~CudaModel() = default;

// The layers, each checking its weights against the activation dtype (an error names the tensor).
void CudaModel::build_layers() {
  const DType act = opt_.act;
  w_.embed.require(act, "model.embed_tokens.weight");
  w_.final_norm.require(act, "model.norm.weight");
  w_.lm_head.require(act, "lm_head.weight");
  for (int l = 0; l < cfg_.num_layers; ++l) {
    const auto& L = w_.layers[size_t(l)];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    L.input_norm.require(act, p + "input_layernorm.weight");
    L.post_norm.require(act, p + "post_attention_layernorm.weight");
    if (cfg_.is_kda(l)) attn_.push_back(std::make_unique<KdaLayer>(cfg_, act, L.kda, l, cfg_.attn_index(l)));
    else attn_.push_back(std::make_unique<MlaLayer>(cfg_, act, L.mla, l, cfg_.attn_index(l)));
    if (cfg_.is_moe(l)) ffn_.push_back(std::make_unique<MoeLayer>(cfg_, act, L.ffn, l));
    else ffn_.push_back(std::make_unique<DenseMlp>(act, L.ffn, l));
  }
}

void CudaModel::force_routes(std::map<int, RouteIds> by_slot) {
  forced_ = std::move(by_slot);
  if (forced_.empty()) {
    forced_dev_ = DeviceBuffer();
    return;
  }
  // [layers][tokens][top_k] for the largest batch (upload_forced_routes fills it per forward)
  const size_t bytes = size_t(cfg_.num_layers) * size_t(opt_.max_tokens) * size_t(std::max(1, cfg_.moe.top_k)) * 4;
  if (forced_dev_.bytes() < bytes) forced_dev_ = DeviceBuffer(bytes, "forced routes");
}

float CudaModel::last_forward_ms() const {
  fwd_end_.sync();
  return fwd_end_.elapsed_ms_since(fwd_start_);
}

// A step that does not fit the workspace planned at start-up is refused before anything runs.
void CudaModel::check_fits(const BatchLayout& p) const {
  const WorkspaceLimits& lim = ws_->plan().lim;
  DS_CHECK(p.num_tokens <= lim.max_tokens, "CUDA model: a batch of {} tokens exceeds the workspace's {}",
           p.num_tokens, lim.max_tokens);
  StepMeta scratch;
  const size_t need = meta_bytes(meta_parts(p, scratch));
  DS_CHECK(need <= ws_->meta_bytes(),
           "CUDA model: step metadata of {} bytes exceeds the {} planned (block tables wider than max_model_len?)",
           need, ws_->meta_bytes());
}

LayoutLimits CudaModel::layout_limits() const {
  LayoutLimits lim;
  lim.vocab = cfg_.vocab_size;
  lim.num_slots = caches_->num_slots();
  lim.num_snapshots = caches_->shape().num_snapshots;
  lim.num_blocks = caches_->num_blocks();
  lim.block_size = caches_->block_size();
  lim.max_tokens = opt_.max_tokens;
  return lim;
}

void CudaModel::forward(const ForwardBatch& batch) {
  const auto issue_start = std::chrono::steady_clock::now();
  if (batch.seqs.empty()) {
    forward_saves_only(batch);
    return;
  }
  BatchLayout p = layout_batch(batch, layout_limits());
  begin_saves(batch);
  const int rows = batch.num_logit_rows();
  DS_CHECK(rows <= ws_->max_logit_rows(),
           "CUDA model: the batch asks for {} logits rows, the workspace holds {} (max_logit_rows)", rows,
           ws_->max_logit_rows());
  check_fits(p);
  rows_ = rows;
  fwd_start_.record(stream_);
  struct EndMark {  // recorded however forward() returns
    CudaModel* m;
    std::chrono::steady_clock::time_point t0;
    ~EndMark() {
      m->fwd_end_.record(m->stream_);
      m->issue_ms_ = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    }
  } end_mark{this, issue_start};
  if (opt_.switches.graphs && forced_.empty()) {
    bool identity_rows = p.num_rows() == p.num_seqs;
    for (int r = 0; identity_rows && r < p.num_rows(); ++r) identity_rows = p.logit_rows[size_t(r)] == r;
    if (p.num_decode == p.num_seqs && p.num_seqs <= opt_.max_graph_batch && identity_rows &&
        graph_bucket(p.num_seqs) <= opt_.max_tokens) {
      forward_graph(std::move(p));
      return;
    }
  }
  run_layout(p);
}

// Packs the layout's arrays into the pinned staging area and uploads them with one copy.
void CudaModel::upload_meta(const BatchLayout& p) {
  StepMeta& m = *meta_;
  m.T = p.num_tokens;
  m.N = p.num_seqs;
  m.R = p.num_rows();
  m.stride = p.bt_stride;
  m.F = int(p.zero_slots.size());
  m.row0 = 0;  // one layout per forward: its rows start the logits
  m.n_dec = p.num_decode;
  m.max_q_len = p.max_q_len;
  m.max_seq_len = p.max_seq_len;
  m.pure_decode = p.num_decode == p.num_seqs;
  m.mla_splits = m.n_dec > 0 ? choose_mla_decode_splits(m.n_dec, m.max_seq_len, ctx_.num_sms(), ctx_.switches.mla_decode_ctas) : 1;
  m.mla_pipe = choose_mla_decode_pipe(ctx_.switches.mla_decode_pipe, m.max_seq_len, m.mla_splits);
  // the prefill sequences in groups whose keys fit the MLA expansion together (usually one group), a
  // longer one alone, piece by piece
  m.prefill_groups = plan_mla_prefill(p.pre_cu_q, p.pre_cu_k, ws_->expansion().key_rows);
  const std::vector<MetaPart> parts = meta_parts(p, m);
  DS_CHECK(meta_bytes(parts) <= ws_->meta_bytes(), "CUDA model: step metadata exceeds the planned {} bytes",
           ws_->meta_bytes());
  meta_done_.sync();  // the previous step's copy has left the pinned buffer
  char* host = ws_->meta_host();
  char* dev = ws_->meta_device();
  size_t off = 0;
  for (const auto& pt : parts) {
    if (pt.bytes) std::memcpy(host + off, pt.data, pt.bytes);
    *pt.dst = dev + off;
    off += align_up(pt.bytes + 4, kMetaAlign);
  }
  DS_CUDA_CHECK(cudaMemcpyAsync(dev, host, off, cudaMemcpyHostToDevice, stream_));
  meta_done_.record(stream_);
}

// The state operations the layout lists, on the model's stream: before the layers zero (from the
// uploaded list), copy, restore, in this order; after them save.
void CudaModel::state_ops_before(const BatchLayout& p) {
  for (size_t i = 0; i + 1 < p.saves_before.size(); i += 2) save_checked(p.saves_before[i], p.saves_before[i + 1]);
  for (size_t i = 0; i + 2 < p.tail_copies.size(); i += 3)
    caches_->copy_page_rows(p.tail_copies[i], p.tail_copies[i + 1], p.tail_copies[i + 2], ctx_);
  caches_->zero_slots(meta_->zero_slots, meta_->F, ctx_);
  for (size_t i = 0; i + 1 < p.copy_slots.size(); i += 2) caches_->copy_slot(p.copy_slots[i], p.copy_slots[i + 1], ctx_);
  for (size_t i = 0; i + 1 < p.restore_slots.size(); i += 2)
    caches_->restore_snapshot(p.restore_slots[i], p.restore_slots[i + 1], ctx_);
}

void CudaModel::state_ops_after(const BatchLayout& p) {
  for (size_t i = 0; i + 1 < p.save_snapshots.size(); i += 2) save_checked(p.save_snapshots[i], p.save_snapshots[i + 1]);
}

void CudaModel::run_layout(const BatchLayout& p) {
  upload_meta(p);
  state_ops_before(p);
  if (!forced_.empty()) upload_forced_routes(p);
  compute(*meta_);
  state_ops_after(p);
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
  DS_CHECK(bytes <= forced_dev_.bytes(), "forced routes: {} B exceed the {} B allocated by force_routes", bytes,
           forced_dev_.bytes());
  DS_CUDA_CHECK(cudaMemcpyAsync(forced_dev_.data(), ids.data(), bytes, cudaMemcpyHostToDevice, stream_.get()));
  DS_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));  // `ids` is pageable and about to go away
}

// A pure-decode step replayed from the graph captured at start-up for its key; a key beyond the
// captured set (contexts beyond graph_max_context) runs eagerly, which allocates nothing.
void CudaModel::forward_graph(BatchLayout p) {
  const int bucket = graph_bucket(p.num_seqs);
  const int stride = graph_stride(p.bt_stride);
  auto it = graphs_.find(std::make_pair(bucket, stride));
  if (it == graphs_.end()) {
    run_layout(p);
    return;
  }
  prepare_graph_step(p, bucket, stride);
  state_ops_before(p);
  it->second.launch(stream_);
  state_ops_after(p);
}

// Pads the layout to the graph's key, uploads its metadata and fixes the MLA split count: it depends
// only on the key (its context bound), never on this step's lengths.
void CudaModel::prepare_graph_step(BatchLayout& p, int bucket, int stride) {
  pad_decode_layout(p, bucket, stride, caches_->pad_slot(), caches_->pad_block(), caches_->block_size());
  p.logit_rows.resize(size_t(bucket));
  for (int r = 0; r < bucket; ++r) p.logit_rows[size_t(r)] = r;
  check_fits(p);
  upload_meta(p);
  meta_->mla_splits =
      choose_mla_decode_splits(bucket, stride * caches_->block_size(), ctx_.num_sms(), ctx_.switches.mla_decode_ctas);
  meta_->mla_pipe =
      choose_mla_decode_pipe(ctx_.switches.mla_decode_pipe, stride * caches_->block_size(), meta_->mla_splits);
}

// Every kernel of one forward: embedding, the layers, final norm and lm_head. Called eagerly or under
// graph capture, so nothing here allocates, synchronises or reads device memory on the host.
void CudaModel::compute(const StepMeta& m) {
  const DType act = opt_.act;
  const int hid = cfg_.hidden_size;
  Activations& ws = ws_->activations();
  const LayerStep step{ctx_,        cfg_,          act,
                       m,           ws,            ws_->expansion(),
                       *caches_,    gemm_,         opt_.switches.reference_attention,
                       opt_.biased_moe_weights,    forced_.empty() ? nullptr : forced_dev_.as<int32_t>(),
                       w_.dequant_scratch,         ranked_ ? ws.rank_out : ws.h};
  // a part's output: into h, or (ranks) into rank_out, summed over the ranks and then added into h
  auto part = [&](const LayerPart& p, LayerInput in) {
    const int64_t n = int64_t(m.T) * hid;
    if (ranked_) DS_CUDA_CHECK(cudaMemsetAsync(ws.rank_out, 0, size_t(n) * dtype_size(act), ctx_.stream));
    p.forward(step, in);
    if (!ranked_) return;
    if (collectives_) opt_.comm->all_reduce_sum(ws.rank_out, n, act, ctx_);
    run_add(ws.h, ws.rank_out, act, n, ctx_);
  };
  EmbeddingParams e;
  e.ids = m.tokens;
  e.table = w_.embed.ptr;
  e.y = ws.h;
  e.tokens = m.T;
  e.dim = hid;
  run_embedding(e, act, ctx_);
  // Small batches: every consumer of a norm's output is a GEMV that normalises h itself as it loads
  // it (GemvParams::norm_weight), so no norm kernel runs. Larger ones normalise h into ws.x first.
  const bool fused = m.T <= kGemvMaxRows;
  // Quantized weights at FP8-tile batch sizes: the norm also writes ws.x's split for the FP8 tensor cores, which
  // every FP8 tile launch reading ws.x takes (KDA / MLA in_proj, MoE and shared gate/up) instead of a split
  // launch of its own (switches.norm_split)
  void* split = nullptr;
  if (!fused && ctx_.switches.norm_split && ctx_.switches.fp8_xsplit && act == DType::BF16 &&
      w_.fp8_matrices + w_.int4_matrices > 0 && ctx_.info.sm_major == 9 && m.T <= ws.x_split_in_rows &&
      rmsnorm_split_fits(hid))
    split = ws.x_split_in;
  auto norm = [&](const WeightView& weight) -> LayerInput {
    if (fused) return LayerInput{ws.h, weight.ptr};
    return LayerInput{step.norm_into_x(ws.h, hid, weight.ptr, m.T, hid, split), nullptr, split};
  };
  for (int l = 0; l < cfg_.num_layers; ++l) {
    const auto& L = w_.layers[size_t(l)];
    part(*attn_[size_t(l)], norm(L.input_norm));
    part(*ffn_[size_t(l)], norm(L.post_norm));
  }
  if (m.R == 0) return;
  const int V = cfg_.vocab_size, Vr = int(w_.lm_head_rows);  // Vr < V: this rank's vocabulary rows
  float* out = ws_->logits() + int64_t(m.row0) * V;
  if (m.R <= kGemvMaxRows) {  // final norm fused into the lm_head GEMV, rows gathered by it
    step.linear(ws.h, hid, w_.lm_head, Vr, hid, out, Vr, m.R, false, true, w_.final_norm.ptr, m.logit_rows);
  } else {
    RmsNormParams n;
    n.x = ws.h;
    n.ldx = hid;
    n.row_index = m.logit_rows;
    n.weight = w_.final_norm.ptr;
    n.y = ws.rows_x;
    n.ldy = hid;
    n.rows = m.R;
    n.dim = hid;
    n.eps = cfg_.rms_norm_eps;
    run_rmsnorm(n, act, ctx_);
    step.linear(ws.rows_x, hid, w_.lm_head, Vr, hid, out, Vr, m.R, false, true);
  }
  if (Vr == V || !collectives_) return;  // (the start-up's eager forwards run without the group)
  // the lm_head split by vocabulary: [R, Vr] on every rank -> gathered [ranks][R][Vr] -> [R, V] in rank order
  const int ranks = V / Vr;
  float* g = ws_->logits_gather();
  opt_.comm->all_gather(out, g, int64_t(m.R) * Vr, DType::F32, ctx_);
  for (int r = 0; r < ranks; ++r) {
    CopyStridedParams cp;
    cp.src = g + int64_t(r) * m.R * Vr;
    cp.ld_src = Vr;
    cp.dst = out + int64_t(r) * Vr;
    cp.ld_dst = V;
    cp.rows = m.R;
    cp.width = Vr;
    run_copy_strided(cp, DType::F32, ctx_);
  }
}

}  // namespace ds::gpu
