#include "model/backend.h"

#include "core/error.h"

namespace ds {

void Backend::run_worker_node() { fail("{}: not a worker node of a multi-node group (--node-rank above 0)", device_name()); }

// (Not --gpu-memory-utilization: each node's GPUs are its own; every rank takes rank 0's cache geometry, and a
// node whose GPUs cannot hold it fails at start-up, out of memory.)
std::string group_fingerprint(const BackendOptions& o, const ModelConfig& c) {
  const ParallelConfig& p = o.parallel;
  return fmt::format("{} | {} | load {} seed {} dtype {} quantization '{}' kv {} | seqs {} len {} block {} blocks {} "
                     "kv-tokens {} snapshots {} ({} GiB) piece {} biased {} | {}",
                     o.device, c.summary(), o.load_format, o.dummy_seed, o.dtype, o.quantization,
                     kv_cache_dtype_name(o.kv_cache_dtype), o.max_num_seqs, o.max_model_len, o.block_size,
                     o.num_blocks, o.kv_cache_tokens, o.num_snapshots, o.snapshot_memory_gib,
                     o.mla_context_piece, o.biased_moe_weights, p.describe());
}

void check_sampling_rows(const StepPlan& plan) {
  const int rows = plan.batch.num_logit_rows();
  DS_CHECK(int(plan.sampling.size()) == rows || (plan.sampling.empty() && (plan.return_logits || plan.forward_only)),
           "step: {} sampling rows for {} logits rows", plan.sampling.size(), rows);
}

std::vector<float> forward_logits(Backend& b, const ForwardBatch& batch) {
  StepPlan plan;
  plan.batch = batch;
  plan.return_logits = true;
  return b.execute(plan).logits;
}

std::vector<SampleResult> forward_sample(Backend& b, const ForwardBatch& batch, const std::vector<SampleParams>& params) {
  StepPlan plan;
  plan.batch = batch;
  for (size_t r = 0; r < params.size(); ++r) {
    SeqSampling row;
    row.seq_id = r;
    row.params = params[r];
    plan.sampling.push_back(std::move(row));
  }
  return b.execute(plan).samples;
}

}  // namespace ds
