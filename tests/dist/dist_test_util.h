// Helpers of the parallelism tests: the tiny checkpoint's config (as JSON, to make variants), a model
// directory holding a variant config, and one scenario (two sequences in one batch, prefill in chunks,
// then decode steps) whose logits every rank layout must reproduce.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "model/backend.h"

namespace ds::test {

// A parallel layout: TP size, EP on/off, an expert-only group's size (0: the TP size).
inline ParallelConfig layout(int tp, bool ep = false, int ep_size = 0) {
  ParallelConfig p;
  p.tensor_parallel_size = tp;
  p.enable_expert_parallel = ep;
  p.expert_parallel_size = ep_size;
  return p;
}

inline std::string tiny_dir() { return std::string(DS_FIXTURES_DIR) + "/tiny/model"; }

inline nlohmann::json tiny_config_json() {
  std::ifstream f(tiny_dir() + "/config.json");
  return nlohmann::json::parse(f);
}

// The tiny config with 4 KDA and 4 MLA heads (so that TP 4 divides it), for dummy weights.
inline nlohmann::json four_head_config_json() {
  nlohmann::json j = tiny_config_json();
  j["num_attention_heads"] = 4;
  j["num_key_value_heads"] = 4;
  j["linear_attn_config"]["num_heads"] = 4;
  return j;
}

// A temporary model directory holding only config.json (load_format dummy); removed with the object.
class TempModelDir {
 public:
  explicit TempModelDir(const nlohmann::json& config) {
    path_ = std::filesystem::temp_directory_path() /
            ("ds-dist-" + std::to_string(::getpid()) + "-" + std::to_string(counter()++));
    std::filesystem::create_directories(path_);
    std::ofstream(path_ / "config.json") << config.dump(2);
  }
  ~TempModelDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string path() const { return path_.string(); }

 private:
  static int& counter() {
    static int n = 0;
    return n;
  }
  std::filesystem::path path_;
};

inline double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1.0));
}

// Two sequences in one batch: prompts of 37 and 22 tokens in chunks of 16 (every position's logits),
// then `decodes` decode steps of both; returns each step's logits rows one after the other.
inline std::vector<std::vector<float>> two_sequence_run(Backend& b, int decodes = 4) {
  std::vector<int32_t> a(37), c(22);
  for (size_t i = 0; i < a.size(); ++i) a[i] = int32_t((i * 97 + 5) % 2000);
  for (size_t i = 0; i < c.size(); ++i) c[i] = int32_t((i * 61 + 11) % 2000);
  const std::vector<int32_t> ta = {0, 1, 2, 3}, tc = {8, 9, 10, 11};  // 64 positions each
  std::vector<std::vector<float>> steps;
  int64_t ca = 0, cc = 0;
  while (ca < int64_t(a.size()) || cc < int64_t(c.size())) {
    ForwardBatch batch;
    for (auto [ids, ctx, table, slot] : {std::tuple{&a, &ca, &ta, 1}, std::tuple{&c, &cc, &tc, 4}}) {
      if (*ctx >= int64_t(ids->size())) continue;
      const int64_t n = std::min<int64_t>(16, int64_t(ids->size()) - *ctx);
      batch.add(slot, *ctx, std::vector<int32_t>(ids->begin() + *ctx, ids->begin() + *ctx + n), *table, true);
      *ctx += n;
    }
    steps.push_back(forward_logits(b, batch));
  }
  for (int d = 0; d < decodes; ++d) {
    ForwardBatch batch;
    batch.add(1, ca++, {int32_t(100 + 17 * d)}, ta);
    batch.add(4, cc++, {int32_t(900 + 31 * d)}, tc);
    steps.push_back(forward_logits(b, batch));
  }
  return steps;
}

// Every step's logits within `tol` (relative L2) of the reference's, and the same argmax in every row.
inline void expect_same_logits(const std::vector<std::vector<float>>& got,
                               const std::vector<std::vector<float>>& ref, int vocab, double tol,
                               const std::string& what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  for (size_t s = 0; s < ref.size(); ++s) {
    ASSERT_EQ(got[s].size(), ref[s].size()) << what << " step " << s;
    const double err = rel_l2(got[s], ref[s]);
    EXPECT_LT(err, tol) << what << " step " << s;
    if (s + 1 == ref.size()) std::printf("  %s: last step's logits within %.2g (relative L2) of TP 1\n", what.c_str(), err);
    for (size_t r = 0; r * size_t(vocab) < ref[s].size(); ++r) {
      auto row = [&](const std::vector<float>& v) { return v.begin() + long(r) * vocab; };
      EXPECT_EQ(std::max_element(row(got[s]), row(got[s]) + vocab) - row(got[s]),
                std::max_element(row(ref[s]), row(ref[s]) + vocab) - row(ref[s]))
          << what << " step " << s << " row " << r;
    }
  }
}

}  // namespace ds::test
