#include "model/backend.h"

#include "core/error.h"

namespace ds {

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
