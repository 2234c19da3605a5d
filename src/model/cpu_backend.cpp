#include "model/cpu_backend.h"

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "core/error.h"
#include "core/log.h"
#include "core/parallel.h"
#include "model/safetensors.h"
#include "sampling/cpu_sampler.h"

namespace ds {
namespace {

constexpr int64_t kDefaultCacheTokensCap = 131072;
constexpr int kMaxSnapshots = 4096;

size_t weight_bytes(HostWeights& w, const ModelConfig& c) {
  size_t n = 0;
  for_each_weight(c, w, [&](const TensorSpec&, HostTensor& t) { n += t.data.size() * sizeof(float); });
  return n;
}

}  // namespace

int CpuBackend::snapshots_in_budget(const BackendOptions& opts) const {
  const double gib = opts.snapshot_memory_gib > 0 ? opts.snapshot_memory_gib : kCpuSnapshotGiBDefault;
  const size_t per = KdaStateStore(cfg_, 1, 0).bytes();
  const double n = per ? gib * double(size_t(1) << 30) / double(per) : double(kMaxSnapshots);
  return int(std::min<double>(n, kMaxSnapshots));
}

CpuModelFiles load_cpu_model(const BackendOptions& opts) {
  DS_CHECK(!opts.model_dir.empty(), "cpu backend: no model directory given");
  const auto t0 = std::chrono::steady_clock::now();
  CpuModelFiles m;
  ModelConfig& c = m.config;
  c = ModelConfig::from_file((std::filesystem::path(opts.model_dir) / "config.json").string());
  c.moe.biased_weights = c.moe.biased_weights || opts.biased_moe_weights;
  c.quant = resolve_quantization(c.quant, opts.quantization, opts.load_format == "dummy");
  SPDLOG_INFO("{}", c.summary());
  if (c.quant.quantized()) SPDLOG_INFO("weights: {} (computed from the dequantized values in fp32)", c.quant.describe());
  if (opts.load_format == "dummy") {
    SPDLOG_INFO("generating dummy weights (seed {})", opts.dummy_seed);
    m.weights = dummy_host_weights(c, opts.dummy_seed);
  } else if (opts.load_format == "auto" || opts.load_format == "safetensors") {
    m.weights = load_host_weights(c, Checkpoint::open(opts.model_dir));
  } else {
    fail("unknown load format '{}' (expected auto, safetensors or dummy)", opts.load_format);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  SPDLOG_INFO("weights ready: {:.1f} MB fp32 in {:.2f} s", weight_bytes(m.weights, c) / 1e6, secs);
  return m;
}

CpuBackend::CpuBackend(const BackendOptions& opts) {
  CpuModelFiles m = load_cpu_model(opts);
  cfg_ = std::move(m.config);
  weights_ = std::move(m.weights);
  init(opts);
}

CpuBackend::CpuBackend(const ModelConfig& c, HostWeights weights, const BackendOptions& opts, ModelShard shard)
    : cfg_(c), weights_(std::move(weights)) {
  cfg_.moe.biased_weights = cfg_.moe.biased_weights || opts.biased_moe_weights;
  init(opts, shard);
}

void CpuBackend::init(const BackendOptions& opts, ModelShard shard) {
  if (opts.dtype != "auto" && opts.dtype != "float32")
    SPDLOG_WARN("the cpu backend computes in float32; dtype '{}' is ignored", opts.dtype);
  DS_CHECK(opts.max_num_seqs > 0, "max_num_seqs must be positive, got {}", opts.max_num_seqs);
  DS_CHECK(opts.block_size > 0, "block_size must be positive, got {}", opts.block_size);
  const int64_t max_len = opts.max_model_len > 0 ? opts.max_model_len : cfg_.max_position_embeddings;
  int64_t blocks = opts.num_blocks;
  if (blocks <= 0) {
    int64_t tokens = opts.kv_cache_tokens;
    if (tokens <= 0) tokens = std::min<int64_t>(int64_t(opts.max_num_seqs) * max_len, kDefaultCacheTokensCap);
    blocks = (tokens + opts.block_size - 1) / opts.block_size;
  }
  DS_CHECK(opts.num_snapshots >= -1, "num_snapshots must be >= -1, got {}", opts.num_snapshots);
  DS_CHECK(opts.snapshot_memory_gib >= 0, "snapshot memory must be >= 0 GiB, got {}", opts.snapshot_memory_gib);
  limits_.num_state_slots = opts.max_num_seqs;
  limits_.num_snapshots = opts.num_snapshots >= 0 ? opts.num_snapshots : snapshots_in_budget(opts);
  limits_.num_blocks = int(blocks);
  limits_.block_size = opts.block_size;
  model_ = std::make_unique<KimiModel>(cfg_, weights_, shard);
  kda_ = std::make_unique<KdaStateStore>(cfg_, limits_.num_state_slots, limits_.num_snapshots);
  mla_ = std::make_unique<MlaLatentCache>(cfg_, limits_.num_blocks, limits_.block_size, opts.kv_cache_dtype);
  penalties_ = std::make_unique<PenaltyTracker>(cfg_.vocab_size);
  SPDLOG_INFO("cpu cache: {} KDA state slots ({:.1f} MB), {} snapshots ({:.1f} MB), {} MLA pages x {} tokens "
              "({:.1f} MB{}), {} threads", limits_.num_state_slots, kda_->bytes() / 1e6, limits_.num_snapshots,
              kda_->snapshot_bytes() / 1e6, limits_.num_blocks, limits_.block_size, mla_->bytes() / 1e6,
              opts.kv_cache_dtype == KvCacheDtype::Fp8 ? "; fp32 rows holding FP8-rounded latents" : "",
              num_threads());
}

std::string CpuBackend::device_name() const { return fmt::format("cpu ({} threads, fp32)", num_threads()); }

StepResult CpuBackend::execute(const StepPlan& plan) {
  check_sampling_rows(plan);
  penalties_->release(plan.released);
  StepResult res;
  model_->forward(plan.batch, *kda_, *mla_, &res.logits, opts_, trace_);
  res.nonfinite_snapshots = kda_->take_nonfinite();
  if (!plan.sampling.empty()) {
    if (plan.masks) plan.masks->wait();  // computed by the engine while the forward ran
    res.samples = sample_rows_cpu(res.logits.data(), cfg_.vocab_size, plan.sampling, *penalties_, plan.masks.get());
  }
  if (!plan.return_logits) res.logits.clear();
  return res;
}

std::unique_ptr<Backend> make_cpu_backend(const BackendOptions& opts) {
  return std::make_unique<CpuBackend>(opts);
}

}  // namespace ds
