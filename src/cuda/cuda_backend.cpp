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
#include "sampling/rng.h"

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
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    spdlog::info("CUDA backend ready in {:.1f} s: {} state slots, {} cache pages of {} tokens ({} tokens)", secs,
                 model_->num_slots(), model_->num_blocks(), model_->block_size(),
                 int64_t(model_->num_blocks()) * model_->block_size());
  }

  const ModelConfig& config() const override { return cfg_; }
  CacheGeometry cache_geometry() const override {
    return CacheGeometry{model_->num_slots(), model_->num_blocks(), model_->block_size()};
  }
  std::string device_name() const override { return "cuda:" + std::to_string(info_.device) + " (" + info_.name + ")"; }

  void forward(const ForwardBatch& batch) override { model_->forward(batch); }

  void get_logits(std::vector<float>* out) override {
    size_t n = size_t(model_->num_logit_rows()) * cfg_.vocab_size;
    out->resize(n);
    if (n == 0) return;
    DS_CUDA_CHECK(cudaMemcpyAsync(out->data(), model_->logits(), n * sizeof(float), cudaMemcpyDeviceToHost,
                                  model_->stream()));
    DS_CUDA_CHECK(cudaStreamSynchronize(model_->stream()));
  }

  std::vector<SampleResult> sample(const std::vector<SampleParams>& params) override;
  double last_forward_ms() const { return model_->last_forward_ms(); }
  gpu::CudaModel& model() { return *model_; }

 private:
  void ensure(DeviceBuffer& b, size_t bytes, const char* what) {
    if (b.bytes() < bytes) b = DeviceBuffer(std::max(bytes, b.bytes() * 2), what);
  }

  ModelConfig cfg_;
  gpu::DeviceInfo info_;
  std::unique_ptr<gpu::CudaModel> model_;
  DeviceBuffer work_, io_;
  PinnedBuffer io_host_;
};

std::vector<SampleResult> CudaBackend::sample(const std::vector<SampleParams>& params) {
  const int rows = model_->num_logit_rows(), V = cfg_.vocab_size;
  DS_CHECK(int(params.size()) == rows, "sample: {} parameter sets for {} logits rows", params.size(), rows);
  if (rows == 0) return {};
  // per-row parameters and the penalty lists
  std::vector<gpu::SampleRow> rp(static_cast<size_t>(rows));
  std::vector<int32_t> pen_tok, pen_cnt;
  int max_lp = 0;
  for (int r = 0; r < rows; ++r) {
    const SampleParams& p = params[size_t(r)];
    auto& q = rp[size_t(r)];
    q.temperature = p.temperature;
    q.top_k = p.top_k;
    q.top_p = p.top_p;
    q.min_p = p.min_p;
    q.presence_penalty = p.presence_penalty;
    q.frequency_penalty = p.frequency_penalty;
    q.repetition_penalty = p.repetition_penalty;
    DS_CHECK(p.repetition_penalty > 0.f, "sampler: repetition_penalty {} must be > 0", p.repetition_penalty);
    q.u = uniform01(p.seed, p.step);
    q.num_logprobs = p.num_logprobs;
    max_lp = std::max(max_lp, p.num_logprobs);
    q.pen_begin = int(pen_tok.size());
    bool rep = p.repetition_penalty != 1.f, freq = p.frequency_penalty != 0.f || p.presence_penalty != 0.f;
    if (rep || freq) {
      std::map<int32_t, int> counts;  // token -> output count (0: prompt only)
      if (rep && p.prompt_tokens)
        for (int32_t t : *p.prompt_tokens)
          if (t >= 0 && t < V) counts.emplace(t, 0);
      if (p.output_tokens)
        for (int32_t t : *p.output_tokens)
          if (t >= 0 && t < V) ++counts[t];
      for (const auto& [t, c] : counts) {
        pen_tok.push_back(t);
        pen_cnt.push_back(freq ? c : 0);  // prompt-only tokens (count 0) get no frequency/presence penalty
      }
    }
    q.pen_end = int(pen_tok.size());
  }
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
