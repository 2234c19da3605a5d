#include "sampling/penalties.h"

#include "core/error.h"

namespace ds {

SeqPenalties::SeqPenalties(const std::vector<int32_t>& prompt, const std::vector<int32_t>& output, int vocab)
    : vocab_(vocab) {
  for (int32_t t : prompt) add_prompt(t);
  for (int32_t t : output) add_output(t);
}

int32_t SeqPenalties::entry(int32_t token) {
  if (token < 0 || token >= vocab_) return -1;
  auto [it, inserted] = index_.try_emplace(token, int32_t(tokens_.size()));
  if (inserted) {
    tokens_.push_back(token);
    counts_.push_back(0);
  }
  return it->second;
}

void SeqPenalties::add_prompt(int32_t token) { entry(token); }

void SeqPenalties::add_output(int32_t token) {
  const int32_t i = entry(token);
  if (i >= 0) ++counts_[size_t(i)];
}

std::vector<SampleParams> params_of(const std::vector<SeqSampling>& rows) {
  std::vector<SampleParams> out;
  out.reserve(rows.size());
  for (const SeqSampling& r : rows) out.push_back(r.params);
  return out;
}

void PenaltyTracker::release(const std::vector<uint64_t>& seq_ids) {
  for (uint64_t id : seq_ids) seqs_.erase(id);
}

const SeqPenalties* PenaltyTracker::find(uint64_t seq_id) const {
  auto it = seqs_.find(seq_id);
  return it == seqs_.end() ? nullptr : &it->second;
}

std::vector<const SeqPenalties*> PenaltyTracker::prepare(const std::vector<SeqSampling>& rows) {
  for (const SeqSampling& r : rows)
    if (r.history && r.params.penalties()) seqs_[r.seq_id] = SeqPenalties(r.prompt, r.output, vocab_);
  std::vector<const SeqPenalties*> out(rows.size(), nullptr);
  for (size_t i = 0; i < rows.size(); ++i) {
    if (!rows[i].params.penalties()) continue;
    out[i] = find(rows[i].seq_id);
    DS_CHECK(out[i] != nullptr, "sampler: sequence {} has penalties but no token history (row {})",
             rows[i].seq_id, i);
  }
  return out;
}

void PenaltyTracker::record(const std::vector<SeqSampling>& rows, const std::vector<SampleResult>& samples) {
  DS_CHECK(rows.size() == samples.size(), "sampler: {} samples for {} rows", samples.size(), rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i].params.forced_token >= 0) continue;  // a scoring row: its token is the prompt's, not an output
    auto it = seqs_.find(rows[i].seq_id);
    if (it != seqs_.end()) it->second.add_output(samples[i].token);
  }
}

}  // namespace ds
