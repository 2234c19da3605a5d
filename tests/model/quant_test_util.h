// Accuracy of a quantized CPU backend (FP8 and INT4 tests): logits with the MoE routing pinned to the
// bf16 model's, against the float64 reference, and the greedy continuation of the golden len150 prompt.
#pragma once
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/safetensors.h"
#include "model_test_util.h"

namespace ds::test {

// Rewrites the checkpoint in `dir` after `edit` changed its tensors and/or config, then constructs a CPU
// backend on it: the ds::Error's text ("no error" when it loads).
inline std::string edited_load_error(
    const std::filesystem::path& dir,
    const std::function<void(std::vector<TensorToWrite>&, nlohmann::json&)>& edit) {
  std::vector<TensorToWrite> ts;
  {
    Checkpoint ck = Checkpoint::open(dir.string());
    std::vector<std::vector<uint8_t>> keep;
    for (const auto& n : ck.names()) {
      const auto& t = ck.get(n);
      keep.emplace_back(static_cast<const uint8_t*>(t.data), static_cast<const uint8_t*>(t.data) + t.nbytes);
    }
    nlohmann::json cfg = nlohmann::json::parse(std::ifstream(dir / "config.json"));
    size_t i = 0;
    for (const auto& n : ck.names()) {
      const auto& t = ck.get(n);
      ts.push_back({t.name, t.dtype, t.shape, keep[i++].data()});
    }
    edit(ts, cfg);
    std::filesystem::remove(dir / "model.safetensors");
    write_safetensors((dir / "model.safetensors").string(), ts);
    std::ofstream(dir / "config.json") << cfg.dump();
  }
  try {
    BackendOptions o = tiny_options();
    o.model_dir = dir.string();
    CpuBackend b(o);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

// Logits of `ids` on `b` with the routing pinned to `routes` (all positions).
inline std::vector<float> pinned_logits(CpuBackend& b, const std::vector<int32_t>& ids, const RouteIds* routes,
                                 RouteIds* out_routes = nullptr) {
  ForwardOptions fo;
  fo.forced_routes = routes;
  b.set_forward_options(fo);
  ForwardTrace trace;
  b.set_trace(&trace);
  ForwardBatch batch;
  batch.add(0, 0, ids, pages(0, int(ids.size() + 15) / 16), /*logits_all=*/true);
  std::vector<float> logits = forward_logits(b, batch);
  b.set_trace(nullptr);
  b.set_forward_options(ForwardOptions{});
  if (out_routes) *out_routes = trace.route_ids;
  return logits;
}

inline std::vector<int32_t> greedy16(CpuBackend& b, const std::vector<int32_t>& prompt) {
  std::vector<int32_t> out;
  const auto table = pages(0, 32);
  std::vector<SampleParams> sp(1);
  sp[0].temperature = 0.f;
  ForwardBatch first;
  first.add(0, 0, prompt, table);
  int32_t tok = forward_sample(b, first, sp)[0].token;
  int64_t ctx = int64_t(prompt.size());
  for (int i = 0; i < 16; ++i) {
    out.push_back(tok);
    if (i == 15) break;
    ForwardBatch step;
    step.add(0, ctx++, {tok}, table);
    tok = forward_sample(b, step, sp)[0].token;
  }
  return out;
}

// The format's logits against the float64 reference (routing pinned to the bf16 model's), and its
// greedy continuation of len150 against the reference's (reported).
inline void expect_accuracy(const std::string& name, CpuBackend& qb, double bound) {
  auto bf = tiny_backend();
  for (int L : {5, 65, 150}) {
    const std::string key = "len" + std::to_string(L);
    const auto ids = reference().i32(key + ".ids");
    RouteIds routes;
    pinned_logits(*bf, ids, nullptr, &routes);
    const auto logits = pinned_logits(qb, ids, &routes);
    const double err = rel_l2(logits, reference().f32(key + ".logits"));
    std::printf("  %s %s logits rel L2 vs float64 reference (routing pinned): %.4g\n", name.c_str(), key.c_str(), err);
    ::testing::Test::RecordProperty(name + "_" + key + "_rel_l2", std::to_string(err));
    EXPECT_LT(err, bound) << key;
    EXPECT_GT(err, 1e-5) << key << ": the weights were not quantized";
  }
  const auto ref = reference().i32("len150.greedy");
  const auto got = greedy16(qb, reference().i32("len150.ids"));
  int agree = 0;
  while (agree < 16 && got[size_t(agree)] == ref[size_t(agree)]) ++agree;
  std::printf("  %s len150 greedy: first %d of 16 tokens equal the reference's\n", name.c_str(), agree);
  ::testing::Test::RecordProperty(name + "_len150_greedy_prefix", std::to_string(agree));
}

}  // namespace ds::test
