#include "cuda/cuda_backend.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>

#include "config/runtime_env.h"
#include "core/error.h"
#include "cuda/cuda_check.h"
#include "cuda/cuda_model.h"
#include "cuda/kernels/sampling.h"
#include "cuda/sampling_rows.h"
#include "model/shard_weights.h"
#include "sampling/penalties.h"

namespace ds {
namespace {

DType parse_act_dtype(const std::string& s) {
  if (s == "auto" || s == "bfloat16" || s == "bf16") return DType::BF16;
  if (s == "float32" || s == "fp32" || s == "float") return DType::F32;
  fail("CUDA backend: unsupported dtype '{}' (auto, bfloat16 or float32)", s);
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const BackendOptions& o, const CudaRankSetup* rank = nullptr) {
    auto t0 = std::chrono::steady_clock::now();
    DS_CHECK(gpu::device_count() > 0, "CUDA backend: no CUDA device is visible");
    if (rank) {
      DS_CHECK(rank->device >= 0 && rank->device < gpu::device_count(), "CUDA backend: rank {} asks for GPU {} of {}",
               rank->shard.rank, rank->device, gpu::device_count());
      DS_CUDA_CHECK(cudaSetDevice(rank->device));
    }
    info_ = gpu::device_info();
    spdlog::info("CUDA device: {}", info_.summary());
    cfg_ = ModelConfig::from_file(o.model_dir + "/config.json");
    cfg_.quant = resolve_quantization(cfg_.quant, o.quantization, o.load_format == "dummy");
    DType act = parse_act_dtype(o.dtype);
    DS_CHECK(o.load_format == "auto" || o.load_format == "safetensors" || o.load_format == "dummy",
             "CUDA backend: unknown load format '{}' (auto, safetensors or dummy)", o.load_format);
    gpu::WeightLoadOptions wl;
    wl.model_dir = o.model_dir;
    wl.dummy = o.load_format == "dummy";
    wl.seed = o.dummy_seed;
    // a rank: its shard of the model (tied as the checkpoint's: an untied lm_head by vocabulary rows, a tied
    // one the whole embedding), cut at load
    ModelConfig model_cfg = cfg_;
    if (rank) {
      model_cfg = shard_config(cfg_, rank->shard);
      model_cfg.tie_word_embeddings = cfg_.tie_word_embeddings;
      wl.full = &cfg_;
      wl.shard = rank->shard;
    }
    gpu::CudaModelOptions mo;
    mo.act = act;
    mo.max_num_seqs = o.max_num_seqs;
    mo.num_snapshots = o.num_snapshots;
    mo.snapshot_memory_gib = o.snapshot_memory_gib;
    mo.block_size = o.block_size;
    mo.kv_cache_dtype = o.kv_cache_dtype;
    mo.num_blocks = o.num_blocks;
    if (mo.num_blocks == 0 && o.kv_cache_tokens > 0)
      mo.num_blocks = int((o.kv_cache_tokens + o.block_size - 1) / o.block_size);
    mo.gpu_memory_utilization = o.gpu_memory_utilization;
    mo.biased_moe_weights = o.biased_moe_weights;
    mo.max_graph_batch = std::max(o.max_num_seqs, 1);
    mo.max_model_len = o.max_model_len;  // the step metadata's block-table width (0: the config's)
    mo.mla_expand_keys = o.mla_context_piece;  // 0: from the memory budget
    // developer switches (config/runtime_env.h): reference attention kernels, eager decode steps.
    // Parsed per backend, so a test may switch them between backends.
    const CudaEnv env = CudaEnv::parse();
    mo.switches = env;
    mo.comm = rank ? rank->comm : nullptr;
    if (env.reference_attention) spdlog::info("CUDA backend: reference attention kernels");
    {
      gpu::Stream load_stream;
      auto w = gpu::load_device_weights(model_cfg, act, wl, gpu::make_device_context(load_stream, env));
      model_ = std::make_unique<gpu::CudaModel>(model_cfg, std::move(w), mo);
    }
    penalties_ = std::make_unique<PenaltyTracker>(cfg_.vocab_size);
    warm_up_sampler();
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    spdlog::info("CUDA backend ready in {:.1f} s: {} state slots, {} cache pages of {} tokens ({} tokens)", secs,
                 model_->num_slots(), model_->num_blocks(), model_->block_size(),
                 int64_t(model_->num_blocks()) * model_->block_size());
  }

  const ModelConfig& config() const override { return cfg_; }
  BackendLimits limits() const override {
    BackendLimits l;
    l.max_tokens_per_step = model_->max_tokens();  // the activation workspace; a larger batch is an error
    l.max_seqs_per_step = model_->num_slots();
    l.max_logit_rows = model_->workspace().max_logit_rows();  // the logits planned at start-up
    l.num_state_slots = model_->num_slots();
    l.num_blocks = model_->num_blocks();
    l.block_size = model_->block_size();
    l.num_snapshots = model_->num_snapshots();  // the KDA snapshot pool (prefix caching)
    // the block-table width the step metadata was planned for (max_model_len): any context up to it runs
    // (the MLA prefill attends to a long one piece by piece in its fixed expansion)
    l.max_context = model_->workspace().plan().lim.max_context;
    l.graph_buckets = model_->graph_buckets();
    return l;
  }
  std::string device_name() const override { return "cuda:" + std::to_string(info_.device) + " (" + info_.name + ")"; }

  // layout + forward + sampling, one call
  StepResult execute(const StepPlan& plan) override {
    check_sampling_rows(plan);
    penalties_->release(plan.released);
    model_->forward(plan.batch);
    StepResult res;
    if (!plan.sampling.empty()) {
      // The engine computed the token masks while the forward ran (it is queued on the stream).
      if (plan.masks) plan.masks->wait();
      res.samples = sample(params_of(plan.sampling), penalties_->prepare(plan.sampling), plan.masks.get());
      penalties_->record(plan.sampling, res.samples);
    }
    if (plan.return_logits) get_logits(&res.logits);
    res.nonfinite_snapshots = model_->take_nonfinite_snapshots();
    return res;
  }

  double last_forward_ms() const { return model_->last_forward_ms(); }
  double last_issue_ms() const { return model_->last_issue_ms(); }
  gpu::CudaModel& model() { return *model_; }

 private:
  std::vector<SampleResult> sample(const std::vector<SampleParams>& params,
                                   const std::vector<const SeqPenalties*>& penalties, const StepMasks* masks = nullptr);
  // One sampling launch at start-up on a zeroed logits row, so the sampler's kernels are loaded
  // before serving (lazy module loading takes device memory).
  void warm_up_sampler() {
    DS_CUDA_CHECK(cudaMemsetAsync(const_cast<float*>(model_->logits()), 0, size_t(cfg_.vocab_size) * sizeof(float),
                                  model_->stream()));
    std::vector<SampleParams> params(1);
    params[0].num_logprobs = 1;
    std::vector<SampleResult> out(1);
    sample_rows(gpu::prepare_sampling_rows(params, {}), params, 0, 1, out, nullptr);
  }
  void sample_rows(const gpu::SamplingRows& prep, const std::vector<SampleParams>& params, int r0, int r1,
                   std::vector<SampleResult>& out, const StepMasks* masks);
  void get_logits(std::vector<float>* out) {
    size_t n = size_t(model_->num_logit_rows()) * cfg_.vocab_size;
    out->resize(n);
    if (n == 0) return;
    DS_CUDA_CHECK(cudaMemcpyAsync(out->data(), model_->logits(), n * sizeof(float), cudaMemcpyDeviceToHost,
                                  model_->stream()));
    DS_CUDA_CHECK(cudaStreamSynchronize(model_->stream()));
  }

  ModelConfig cfg_;
  gpu::DeviceInfo info_;
  std::unique_ptr<gpu::CudaModel> model_;
  std::unique_ptr<PenaltyTracker> penalties_;
};

// Samples the logits rows of the last forward with the sampler's buffers planned at start-up
// (Workspace::sampling(): nothing is allocated here). The rows run in one launch unless their penalty
// lists together exceed the planned staging, then in consecutive groups of rows (a row's list holds
// distinct token ids, at most the vocabulary, which the plan always holds).
std::vector<SampleResult> CudaBackend::sample(const std::vector<SampleParams>& params,
                                              const std::vector<const SeqPenalties*>& penalties,
                                              const StepMasks* masks) {
  const int rows = model_->num_logit_rows();
  DS_CHECK(int(params.size()) == rows, "sample: {} parameter sets for {} logits rows", params.size(), rows);
  if (rows == 0) return {};
  const gpu::SamplingBuffers& sb = model_->sampling_buffers();
  const gpu::SamplingRows prep = gpu::prepare_sampling_rows(params, penalties);
  DS_CHECK(rows <= sb.max_rows, "sampler: {} rows exceed the {} planned at start-up", rows, sb.max_rows);
  DS_CHECK(prep.max_logprobs <= sb.max_logprobs, "sampler: {} top logprobs requested, the plan holds {}",
           prep.max_logprobs, sb.max_logprobs);
  std::vector<SampleResult> out(static_cast<size_t>(rows));
  DS_CHECK(!masks || (masks->rows() == rows && masks->vocab() == cfg_.vocab_size),
           "sampler: token masks of {} x {} for {} rows of {} tokens", masks ? masks->rows() : 0,
           masks ? masks->vocab() : 0, rows, cfg_.vocab_size);
  if (masks && !masks->any()) masks = nullptr;
  for (const auto& [r0, r1] : gpu::sampling_groups(prep, sb.penalty_entries))
    sample_rows(prep, params, r0, r1, out, masks);
  return out;
}

// Rows [r0, r1) in one launch: one upload (row parameters, penalty lists), one download (tokens,
// logprobs, top lists).
void CudaBackend::sample_rows(const gpu::SamplingRows& prep, const std::vector<SampleParams>& params, int r0, int r1,
                              std::vector<SampleResult>& out, const StepMasks* masks) {
  const gpu::SamplingBuffers& sb = model_->sampling_buffers();
  const int rows = r1 - r0, V = cfg_.vocab_size, max_lp = prep.max_logprobs;
  const int pen0 = prep.rows[size_t(r0)].pen_begin, pen1 = prep.rows[size_t(r1) - 1].pen_end;
  const size_t n_pen = size_t(pen1 - pen0);
  DS_CHECK(n_pen <= size_t(sb.penalty_entries),
           "sampler: row {} has {} penalty entries, the staging planned at start-up holds {}", r0, n_pen,
           sb.penalty_entries);
  const int mask_words = masks ? masks->words() : 0;
  const gpu::SamplingIoLayout io = gpu::SamplingIoLayout::of(rows, n_pen, max_lp, mask_words);
  DS_CHECK(io.total <= sb.io_bytes && gpu::sampling_workspace_floats(rows, V) <= sb.work_floats,
           "sampler: {} rows with {} penalty entries and {} logprobs need {} B of staging and {} floats of scratch, "
           "the plan holds {} B and {}",
           rows, n_pen, max_lp, io.total, gpu::sampling_workspace_floats(rows, V), sb.io_bytes, sb.work_floats);
  char* h = static_cast<char*>(sb.io_host);
  char* d = static_cast<char*>(sb.io);
  gpu::SampleRow* hrows = reinterpret_cast<gpu::SampleRow*>(h);
  for (int r = 0; r < rows; ++r) {  // the group's lists start at 0
    hrows[r] = prep.rows[size_t(r0 + r)];
    hrows[r].pen_begin -= pen0;
    hrows[r].bias_begin -= pen0;
    hrows[r].pen_end -= pen0;
    hrows[r].masked = masks && masks->has(r0 + r) ? 1 : 0;
    if (hrows[r].masked)
      std::memcpy(h + io.off_mask + size_t(r) * size_t(mask_words) * 4, masks->row(r0 + r), size_t(mask_words) * 4);
  }
  if (n_pen) {
    std::memcpy(h + io.off_tok, prep.pen_tokens.data() + pen0, n_pen * 4);
    std::memcpy(h + io.off_cnt, prep.pen_counts.data() + pen0, n_pen * 4);
  }
  cudaStream_t s = model_->stream();
  DS_CUDA_CHECK(cudaMemcpyAsync(d, h, io.off_out, cudaMemcpyHostToDevice, s));
  gpu::SamplingParams sp;
  sp.logits = model_->logits() + int64_t(r0) * V;
  sp.ld = V;
  sp.rows = rows;
  sp.vocab = V;
  sp.row_params = reinterpret_cast<const gpu::SampleRow*>(d);
  sp.pen_tokens = reinterpret_cast<const int32_t*>(d + io.off_tok);
  sp.pen_counts = reinterpret_cast<const int32_t*>(d + io.off_cnt);
  sp.mask = reinterpret_cast<const uint32_t*>(d + io.off_mask);
  sp.mask_words = mask_words;
  sp.work = sb.work;
  // The outputs, one after another from io.off_out (SamplingIoLayout::of sizes them): tokens, logprobs, ranks, then
  // the top ids and their logprobs, max_lp a row.
  const size_t o_tok = io.off_out, o_lp = o_tok + rows * 4, o_rank = o_lp + rows * 4, o_tid = o_rank + rows * 4,
               o_tlp = o_tid + size_t(rows) * max_lp * 4;
  sp.out_token = reinterpret_cast<int32_t*>(d + o_tok);
  sp.out_logprob = reinterpret_cast<float*>(d + o_lp);
  sp.out_rank = reinterpret_cast<int32_t*>(d + o_rank);
  sp.out_top_ids = reinterpret_cast<int32_t*>(d + o_tid);
  sp.out_top_logprobs = reinterpret_cast<float*>(d + o_tlp);
  sp.max_logprobs = max_lp;
  gpu::run_sampling(sp, model_->context());
  DS_CUDA_CHECK(cudaMemcpyAsync(h + io.off_out, d + io.off_out, io.total - io.off_out, cudaMemcpyDeviceToHost, s));
  DS_CUDA_CHECK(cudaStreamSynchronize(s));
  const int32_t* tok = reinterpret_cast<const int32_t*>(h + o_tok);
  const float* lp = reinterpret_cast<const float*>(h + o_lp);
  const int32_t* rank = reinterpret_cast<const int32_t*>(h + o_rank);
  const int32_t* tid = reinterpret_cast<const int32_t*>(h + o_tid);
  const float* tlp = reinterpret_cast<const float*>(h + o_tlp);
  for (int r = 0; r < rows; ++r) {
    auto& o = out[size_t(r0 + r)];
    o.token = tok[r];
    o.logprob = lp[r];
    DS_CHECK(o.logprob == o.logprob, "sampler: NaN logits in row {}", r0 + r);
    if (params[size_t(r0 + r)].num_logprobs >= 0) o.rank = rank[r];
    int n = std::min(params[size_t(r0 + r)].num_logprobs, max_lp);
    for (int i = 0; i < n; ++i)
      o.top_logprobs.emplace_back(tid[size_t(r) * max_lp + i], tlp[size_t(r) * max_lp + i]);
  }
}

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(const BackendOptions& opts) { return std::make_unique<CudaBackend>(opts); }

std::unique_ptr<Backend> make_cuda_backend(const BackendOptions& opts, const CudaRankSetup& rank) {
  return std::make_unique<CudaBackend>(opts, &rank);
}

namespace {
// `b` as the backend make_cuda_backend made; `who` names the caller when it is not one.
CudaBackend& as_cuda(Backend& b, const char* who) {
  auto* c = dynamic_cast<CudaBackend*>(&b);
  DS_CHECK(c != nullptr, "{}: not a CUDA backend", who);
  return *c;
}
}  // namespace

double cuda_last_forward_ms(Backend& b) { return as_cuda(b, "cuda_last_forward_ms").last_forward_ms(); }

double cuda_last_issue_ms(Backend& b) { return as_cuda(b, "cuda_last_issue_ms").last_issue_ms(); }

std::string cuda_weight_format(Backend& b) { return as_cuda(b, "cuda_weight_format").model().weight_format(); }

void cuda_force_routes(Backend& b, std::map<int, std::map<int, std::vector<int32_t>>> by_slot) {
  as_cuda(b, "cuda_force_routes").model().force_routes(std::move(by_slot));
}

}  // namespace ds
