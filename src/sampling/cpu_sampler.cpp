#include "sampling/cpu_sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "core/parallel.h"
#include "sampling/rng.h"

namespace ds {
namespace {

// Each distinct token of the history once: repetition penalty on all of them, then frequency and
// presence penalties on those the output holds.
void apply_penalties(std::vector<float>& x, const SampleParams& p, const SeqPenalties& pen) {
  DS_CHECK(p.repetition_penalty > 0.0f, "sampler: repetition_penalty {} must be > 0", p.repetition_penalty);
  const int vocab = int(x.size());
  const float penalty = std::max(p.repetition_penalty, kMinRepetitionPenalty);  // see sampling_params.h
  for (size_t i = 0; i < pen.size(); ++i) {
    const int32_t t = pen.tokens()[i];
    if (t < 0 || t >= vocab) continue;
    float& v = x[size_t(t)];
    if (p.repetition_penalty != 1.0f) v = v > 0.0f ? v / penalty : v * penalty;
    const int32_t c = pen.output_counts()[i];
    if (c > 0) v -= p.frequency_penalty * float(c) + p.presence_penalty;
  }
}

// Most likely first; equal values: lowest id first.
struct Desc {
  const float* v;
  bool operator()(int32_t a, int32_t b) const { return v[a] > v[b] || (v[a] == v[b] && a < b); }
};

int32_t argmax(const std::vector<float>& x) {
  return int32_t(std::max_element(x.begin(), x.end()) - x.begin());  // first of equal maxima
}

int32_t draw(const std::vector<float>& x, const SampleParams& p) {
  const int vocab = int(x.size());
  const float mx = *std::max_element(x.begin(), x.end());
  const double inv_t = 1.0 / double(p.temperature);
  // Unnormalised probabilities relative to the most likely token (which gets 1).
  std::vector<float> e(x.size());
  for (int i = 0; i < vocab; ++i) e[size_t(i)] = float(std::exp(double(x[size_t(i)] - mx) * inv_t));
  const float min_rel = std::max(p.min_p, 0.0f);
  std::vector<int32_t> cand;
  cand.reserve(x.size());
  for (int i = 0; i < vocab; ++i)
    if (e[size_t(i)] > 0.0f && e[size_t(i)] >= min_rel) cand.push_back(i);
  DS_CHECK(!cand.empty(), "sampler: no candidate token");
  Desc desc{e.data()};
  if (p.top_k > 0 && size_t(p.top_k) < cand.size()) {
    std::nth_element(cand.begin(), cand.begin() + p.top_k, cand.end(), desc);
    cand.resize(size_t(p.top_k));
  }
  std::sort(cand.begin(), cand.end(), desc);
  double total = 0.0;
  for (int32_t c : cand) total += e[size_t(c)];
  if (p.top_p < 1.0f) {
    const double target = double(std::max(p.top_p, 0.0f)) * total;
    double cum = 0.0;
    size_t keep = 0;
    while (keep < cand.size()) {
      cum += e[size_t(cand[keep++])];
      if (cum >= target) break;
    }
    cand.resize(keep);
    total = cum;
  }
  const double u = uniform01(p.seed, p.step) * total;
  double cum = 0.0;
  for (int32_t c : cand) {
    cum += e[size_t(c)];
    if (u < cum) return c;
  }
  return cand.back();
}

}  // namespace

SampleResult sample_row_cpu(const float* logits, int vocab, const SampleParams& p, const SeqPenalties* pen,
                            const uint32_t* mask) {
  DS_CHECK(vocab > 0, "sampler: vocab {} <= 0", vocab);
  float mx = -INFINITY;
  for (int i = 0; i < vocab; ++i) {
    DS_CHECK(!std::isnan(logits[i]), "sampler: NaN logit at token {}", i);
    mx = std::max(mx, logits[i]);
  }
  DS_CHECK(std::isfinite(mx), "sampler: no finite logit (max {})", mx);

  SampleResult r;
  if (p.forced_token >= 0) {  // a scoring row: the given token, no draw
    DS_CHECK(p.forced_token < vocab, "sampler: scored token {} outside the vocabulary of {}", p.forced_token, vocab);
    r.token = p.forced_token;
  } else {
    std::vector<float> x(logits, logits + vocab);
    if (pen && p.penalties()) apply_penalties(x, p, *pen);
    if (p.logit_bias)
      for (const auto& [t, bias] : *p.logit_bias)
        if (t >= 0 && t < vocab) x[size_t(t)] += bias;
    if (mask) {
      bool any = false;
      for (int i = 0; i < vocab; ++i) {
        if (!StepMasks::allowed(mask, i)) x[size_t(i)] = -INFINITY;
        else any = true;
      }
      DS_CHECK(any, "sampler: the token mask allows no token");
    }
    r.token = p.greedy() ? argmax(x) : draw(x, p);
  }

  // Logprobs of the raw logits.
  double sum = 0.0;
  for (int i = 0; i < vocab; ++i) sum += std::exp(double(logits[i]) - double(mx));
  const double lse = double(mx) + std::log(sum);
  r.logprob = float(double(logits[r.token]) - lse);
  if (p.num_logprobs >= 0) {
    const float t = logits[r.token];
    r.rank = int32_t(std::count_if(logits, logits + vocab, [t](float v) { return v >= t; }));
  }
  if (p.num_logprobs > 0) {
    const int k = std::min(p.num_logprobs, vocab);
    std::vector<int32_t> idx(static_cast<size_t>(vocab));
    std::iota(idx.begin(), idx.end(), 0);
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), Desc{logits});
    r.top_logprobs.reserve(size_t(k));
    for (int i = 0; i < k; ++i)
      r.top_logprobs.emplace_back(idx[size_t(i)], float(double(logits[idx[size_t(i)]]) - lse));
  }
  return r;
}

std::vector<SampleResult> sample_rows_cpu(const float* logits, int vocab, const std::vector<SeqSampling>& rows,
                                          PenaltyTracker& tracker, const StepMasks* masks) {
  const auto penalties = tracker.prepare(rows);
  auto out = sample_cpu(logits, int(rows.size()), vocab, params_of(rows), penalties, masks);
  tracker.record(rows, out);
  return out;
}

std::vector<SampleResult> sample_cpu(const float* logits, int rows, int vocab, const std::vector<SampleParams>& params,
                                     const std::vector<const SeqPenalties*>& penalties, const StepMasks* masks) {
  DS_CHECK(int(params.size()) == rows, "sampler: {} parameter sets for {} rows", params.size(), rows);
  DS_CHECK(penalties.empty() || penalties.size() == params.size(), "sampler: {} penalty states for {} rows",
           penalties.size(), rows);
  DS_CHECK(!masks || (masks->rows() == rows && masks->vocab() == vocab), "sampler: masks of {} x {} for {} x {} logits",
           masks ? masks->rows() : 0, masks ? masks->vocab() : 0, rows, vocab);
  std::vector<SampleResult> out(static_cast<size_t>(rows));
  parallel_for(size_t(rows), [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i)
      out[i] = sample_row_cpu(logits + i * size_t(vocab), vocab, params[i], penalties.empty() ? nullptr : penalties[i],
                              masks && masks->has(int(i)) ? masks->row(int(i)) : nullptr);
  });
  return out;
}

}  // namespace ds
