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
#include "sampling/penalties.h"

namespace ds {
namespace {

using gpu::DeviceBuffer;
using gpu::PinnedBuffer;

DType parse_act_dtype(const std::string& s) {
  if (s == "auto" || s == "bfloat16" || s == "bf16") return DType::BF16;
  if (s == "float32" || s == "fp32" || s == "float") return DType::F32;
  fail("CUDA backend: unsupported dtype '{}' (auto, bfloat16 or float32)", s);
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const BackendOptions& o) {
    auto t0 = std::chrono::steady_clock::now();
    DS_CHECK(gpu::device_count() > 0, "CUDA backend: no CUDA device is visible");
    info_ = gpu::device_info();
    spdlog::info("CUDA device: {}", info_.summary());
    cfg_ = ModelConfig::from_file(o.model_dir + "/config.json");
    DType act = parse_act_dtype(o.dtype);
    DS_CHECK(o.load_format == "auto" || o.load_format == "safetensors" || o.load_format == "dummy",
             "CUDA backend: unknown load format '{}' (auto, safetensors or dummy)", o.load_format);
    gpu::WeightLoadOptions wl;
    wl.model_dir = o.model_dir;
    wl.dummy = o.load_format == "dummy";
    wl.seed = o.dummy_seed;
    gpu::CudaModelOptions mo;
    mo.act = act;
    mo.max_num_seqs = o.max_num_seqs;
    mo.block_size = o.block_size;
    mo.num_blocks = o.num_blocks;
    if (mo.num_blocks == 0 && o.kv_cache_tokens > 0)
      mo.num_blocks = int((o.kv_cache_tokens + o.block_size - 1) / o.block_size);
    mo.gpu_memory_utilization = o.gpu_memory_utilization;
    mo.biased_moe_weights = o.biased_moe_weights;
    mo.max_graph_batch = std::max(o.max_num_seqs, 1);
    mo.max_model_len = o.max_model_len;  // the step metadata's block-table width (0: the config's)
    // developer switches (config/runtime_env.h): reference attention kernels, eager decode steps.
    // Parsed per backend, so a test may switch them between backends.
    const CudaEnv env = CudaEnv::parse();
    mo.reference_attention = env.reference_attention;
    mo.use_graphs = env.graphs;
    mo.pdl = env.pdl;
    if (mo.reference_attention) spdlog::info("CUDA backend: reference attention kernels");
    {
      gpu::Stream load_stream;
      auto w = gpu::load_device_weights(cfg_, act, wl, gpu::make_device_context(load_stream, env));
      model_ = std::make_unique<gpu::CudaModel>(cfg_, std::move(w), mo);
    }
    penalties_ = std::make_unique<PenaltyTracker>(cfg_.vocab_size);
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
    if (model_->config().num_mla_layers() > 0) l.max_context = model_->workspace().expansion().key_rows;
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
      res.samples = sample(params_of(plan.sampling), penalties_->prepare(plan.sampling));
      penalties_->record(plan.sampling, res.samples);
    }
    if (plan.return_logits) get_logits(&res.logits);
    return res;
  }

  double last_forward_ms() const { return model_->last_forward_ms(); }
  gpu::CudaModel& model() { return *model_; }

 private:
  std::vector<SampleResult> sample(const std::vector<SampleParams>& params,
                                   const std::vector<const SeqPenalties*>& penalties);
  void get_logits(std::vector<float>* out) {
    size_t n = size_t(model_->num_logit_rows()) * cfg_.vocab_size;
    out->resize(n);
    if (n == 0) return;
    DS_CUDA_CHECK(cudaMemcpyAsync(out->data(), model_->logits(), n * sizeof(float), cudaMemcpyDeviceToHost,
                                  model_->stream()));
    DS_CUDA_CHECK(cudaStreamSynchronize(model_->stream()));
  }
  void ensure(DeviceBuffer& b, size_t bytes, const char* what) {
    if (b.bytes() < bytes) b = DeviceBuffer(std::max(bytes, b.bytes() * 2), what);
  }

  ModelConfig cfg_;
  gpu::DeviceInfo info_;
  std::unique_ptr<gpu::CudaModel> model_;
  std::unique_ptr<PenaltyTracker> penalties_;
  DeviceBuffer work_, io_;
  PinnedBuffer io_host_;
};

std::vector<SampleResult> CudaBackend::sample(const std::vector<SampleParams>& params,
                                              const std::vector<const SeqPenalties*>& penalties) {
  const int rows = model_->num_logit_rows(), V = cfg_.vocab_size;
  DS_CHECK(int(params.size()) == rows, "sample: {} parameter sets for {} logits rows", params.size(), rows);
  if (rows == 0) return {};
  // per-row parameters and the penalty lists
  const gpu::SamplingRows prep = gpu::prepare_sampling_rows(params, penalties);
  const std::vector<gpu::SampleRow>& rp = prep.rows;
  const std::vector<int32_t>& pen_tok = prep.pen_tokens;
  const std::vector<int32_t>& pen_cnt = prep.pen_counts;
  const int max_lp = prep.max_logprobs;
  // one upload: rows params, penalty lists; one download: tokens, logprobs, top lists
  const size_t b_rows = rows * sizeof(gpu::SampleRow);
  const size_t b_pen = pen_tok.size() * 4;
  const size_t off_tok = (b_rows + 255) / 256 * 256, off_cnt = off_tok + (b_pen + 255) / 256 * 256;
  const size_t off_out = off_cnt + (b_pen + 255) / 256 * 256;
  const size_t b_out = size_t(rows) * (4 + 4 + size_t(max_lp) * 8);
  const size_t total = off_out + b_out;
  ensure(io_, total, "sampling buffers");
  if (io_host_.bytes() < total) io_host_ = PinnedBuffer(std::max(total, io_host_.bytes() * 2));
  ensure(work_, gpu::sampling_workspace_floats(rows, V) * sizeof(float), "sampling workspace");
  char* h = io_host_.as<char>();
  char* d = io_.as<char>();
  std::memcpy(h, rp.data(), b_rows);
  std::memcpy(h + off_tok, pen_tok.data(), b_pen);
  std::memcpy(h + off_cnt, pen_cnt.data(), b_pen);
  cudaStream_t s = model_->stream();
  DS_CUDA_CHECK(cudaMemcpyAsync(d, h, off_out, cudaMemcpyHostToDevice, s));
  gpu::SamplingParams sp;
  sp.logits = model_->logits();
  sp.ld = V;
  sp.rows = rows;
  sp.vocab = V;
  sp.row_params = reinterpret_cast<const gpu::SampleRow*>(d);
  sp.pen_tokens = reinterpret_cast<const int32_t*>(d + off_tok);
  sp.pen_counts = reinterpret_cast<const int32_t*>(d + off_cnt);
  sp.work = work_.as<float>();
  sp.out_token = reinterpret_cast<int32_t*>(d + off_out);
  sp.out_logprob = reinterpret_cast<float*>(d + off_out + rows * 4);
  sp.out_top_ids = reinterpret_cast<int32_t*>(d + off_out + rows * 8);
  sp.out_top_logprobs = reinterpret_cast<float*>(d + off_out + rows * 8 + size_t(rows) * max_lp * 4);
  sp.max_logprobs = max_lp;
  gpu::run_sampling(sp, model_->context());
  DS_CUDA_CHECK(cudaMemcpyAsync(h + off_out, d + off_out, b_out, cudaMemcpyDeviceToHost, s));
  DS_CUDA_CHECK(cudaStreamSynchronize(s));
  const int32_t* tok = reinterpret_cast<const int32_t*>(h + off_out);
  const float* lp = reinterpret_cast<const float*>(h + off_out + rows * 4);
  const int32_t* tid = reinterpret_cast<const int32_t*>(h + off_out + rows * 8);
  const float* tlp = reinterpret_cast<const float*>(h + off_out + rows * 8 + size_t(rows) * max_lp * 4);
  std::vector<SampleResult> out(static_cast<size_t>(rows));
  for (int r = 0; r < rows; ++r) {
    auto& o = out[size_t(r)];
    o.token = tok[r];
    o.logprob = lp[r];
    DS_CHECK(o.logprob == o.logprob, "sampler: NaN logits in row {}", r);
    int n = std::min(params[size_t(r)].num_logprobs, max_lp);
    for (int i = 0; i < n; ++i)
      o.top_logprobs.emplace_back(tid[size_t(r) * max_lp + i], tlp[size_t(r) * max_lp + i]);
  }
  return out;
}

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(const BackendOptions& opts) { return std::make_unique<CudaBackend>(opts); }

double cuda_last_forward_ms(Backend& b) {
  auto* c = dynamic_cast<CudaBackend*>(&b);
  DS_CHECK(c != nullptr, "cuda_last_forward_ms: not a CUDA backend");
  return c->last_forward_ms();
}

void cuda_force_routes(Backend& b, std::map<int, std::map<int, std::vector<int32_t>>> by_slot) {
  auto* c = dynamic_cast<CudaBackend*>(&b);
  DS_CHECK(c != nullptr, "cuda_force_routes: not a CUDA backend");
  c->model().force_routes(std::move(by_slot));
}

}  // namespace ds
