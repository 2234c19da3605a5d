#include "cuda/sampling_rows.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "sampling/rng.h"

namespace ds::gpu {

SamplingRows prepare_sampling_rows(const std::vector<SampleParams>& params,
                                   const std::vector<const SeqPenalties*>& penalties) {
  DS_CHECK(penalties.empty() || penalties.size() == params.size(), "sampler: {} penalty states for {} rows",
           penalties.size(), params.size());
  SamplingRows out;
  out.rows.resize(params.size());
  for (size_t r = 0; r < params.size(); ++r) {
    const SampleParams& p = params[r];
    SampleRow& q = out.rows[r];
    DS_CHECK(p.repetition_penalty > 0.f, "sampler: repetition_penalty {} must be > 0", p.repetition_penalty);
    q.temperature = p.temperature;
    q.top_k = p.top_k;
    q.top_p = p.top_p;
    q.min_p = p.min_p;
    q.presence_penalty = p.presence_penalty;
    q.frequency_penalty = p.frequency_penalty;
    q.repetition_penalty = std::max(p.repetition_penalty, kMinRepetitionPenalty);  // see sampling_params.h
    q.u = uniform01(p.seed, p.step);
    q.num_logprobs = p.num_logprobs;
    DS_CHECK(p.forced_token < 0 || (p.greedy() && !p.penalties() && !p.logit_bias),
             "sampler: a scoring row (token {}) must be greedy, without penalties or bias", p.forced_token);
    q.forced = p.forced_token;
    out.max_logprobs = std::max(out.max_logprobs, p.num_logprobs);
    q.pen_begin = int(out.pen_tokens.size());
    const SeqPenalties* pen = penalties.empty() ? nullptr : penalties[r];
    const bool rep = p.repetition_penalty != 1.f, freq = p.frequency_penalty != 0.f || p.presence_penalty != 0.f;
    if (pen && (rep || freq)) {
      for (size_t i = 0; i < pen->size(); ++i) {
        const int32_t c = pen->output_counts()[i];
        if (!rep && c == 0) continue;  // in the prompt only: no frequency/presence penalty
        out.pen_tokens.push_back(pen->tokens()[i]);
        out.pen_counts.push_back(freq ? c : 0);
      }
    }
    q.bias_begin = int(out.pen_tokens.size());
    if (p.logit_bias)
      for (const auto& [t, bias] : *p.logit_bias) {
        int32_t bits;
        std::memcpy(&bits, &bias, 4);
        out.pen_tokens.push_back(t);
        out.pen_counts.push_back(bits);
      }
    q.pen_end = int(out.pen_tokens.size());
  }
  return out;
}

std::vector<std::pair<int, int>> sampling_groups(const SamplingRows& rows, int entries) {
  std::vector<std::pair<int, int>> out;
  const int n = int(rows.rows.size());
  for (int r0 = 0; r0 < n;) {
    int r1 = r0 + 1;
    while (r1 < n && rows.rows[size_t(r1)].pen_end - rows.rows[size_t(r0)].pen_begin <= entries) ++r1;
    out.emplace_back(r0, r1);
    r0 = r1;
  }
  return out;
}

}  // namespace ds::gpu
