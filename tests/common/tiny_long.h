// The tiny_long golden check (tests/fixtures/tiny_long/reference_long.safetensors, GOLDEN_README.md): one
// 16,384-token prompt on the tiny model, prefilled in chunks through any Backend, then greedy decode steps.
// Shared by the CPU test (tests/long) and the GPU test (tests/gpu): the backend, the chunk size and the
// tolerances are the caller's.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/backend.h"
#include "model/safetensors.h"

namespace ds::test {

struct TinyLongReference {
  std::vector<int32_t> ids;            // [16384] the prompt
  std::vector<float> tail_logits;      // [64, vocab] positions ids.size()-64 .. ids.size()-1
  std::vector<int32_t> probe_pos;      // [6]
  std::vector<float> probe_logits;     // [6, vocab]
  std::vector<int32_t> greedy;         // [4] greedy continuation
  std::vector<float> greedy_margin;    // [4] top-1 minus top-2 logit of each greedy step
  int64_t vocab = 0;
  int64_t tail_rows() const { return int64_t(tail_logits.size()) / vocab; }

  static TinyLongReference load(const std::string& path) {
    SafetensorsFile f(path);
    auto tensor = [&](const std::string& name) -> const TensorInfo& {
      const TensorInfo* t = f.find(name);
      DS_CHECK(t, "{}: no tensor {}", path, name);
      return *t;
    };
    auto f32 = [&](const std::string& name) {
      const auto& t = tensor(name);
      std::vector<float> v(size_t(t.numel()));
      convert_to_f32(t.dtype, t.data, v.data(), v.size());
      return v;
    };
    auto i32 = [&](const std::string& name) {
      const auto& t = tensor(name);
      DS_CHECK(t.dtype == DType::I32, "{}: {} is not int32", path, name);
      std::vector<int32_t> v(size_t(t.numel()));
      std::memcpy(v.data(), t.data, v.size() * sizeof(int32_t));
      return v;
    };
    TinyLongReference r{i32("ids"), f32("tail_logits"), i32("probe_pos"), f32("probe_logits"), i32("greedy"),
                        f32("greedy_margin"), 0};
    r.vocab = tensor("tail_logits").shape.back();
    return r;
  }
};

struct TinyLongResult {
  std::vector<float> tail_logits;   // as TinyLongReference
  std::vector<float> probe_logits;
  std::vector<int32_t> greedy;      // argmax of the last prompt position, then of each decode step
  std::vector<float> greedy_margin;
};

// Prefills ref.ids in chunks of `chunk` tokens (a chunk holding probe or tail positions asks for all its
// logits rows, or is split at them where the backend's max_logit_rows is smaller), then decodes the
// reference's greedy tokens one step at a time (so each step's choice is compared on the same history).
// Uses state slot `slot` and pages first_page, first_page + 1, ... (ids.size() + greedy.size() positions).
inline TinyLongResult run_tiny_long(Backend& b, const TinyLongReference& ref, int chunk, int slot = 0,
                                    int32_t first_page = 0) {
  DS_CHECK(chunk > 0, "tiny_long: chunk must be positive");
  const BackendLimits lim = b.limits();
  const int64_t n = int64_t(ref.ids.size()), V = ref.vocab, total = n + int64_t(ref.greedy.size());
  const int64_t tail0 = n - ref.tail_rows();
  std::vector<int32_t> table(size_t((total + lim.block_size - 1) / lim.block_size));
  for (size_t i = 0; i < table.size(); ++i) table[i] = first_page + int32_t(i);
  DS_CHECK(first_page + int64_t(table.size()) <= lim.num_blocks, "tiny_long: needs {} pages from {}, backend has {}",
           table.size(), first_page, lim.num_blocks);
  const std::set<int64_t> probes(ref.probe_pos.begin(), ref.probe_pos.end());
  auto wanted = [&](int64_t p) { return p >= tail0 || probes.count(p) > 0; };

  TinyLongResult r;
  r.tail_logits.resize(size_t(ref.tail_rows() * V));
  r.probe_logits.resize(size_t(int64_t(ref.probe_pos.size()) * V));
  auto keep = [&](int64_t pos, const float* row) {
    if (pos >= tail0) std::copy_n(row, V, r.tail_logits.data() + (pos - tail0) * V);
    for (size_t i = 0; i < ref.probe_pos.size(); ++i)
      if (ref.probe_pos[i] == pos) std::copy_n(row, V, r.probe_logits.data() + int64_t(i) * V);
  };
  // One slice [s, e): logits for every row (all), only the last (last), or none.
  auto run = [&](int64_t s, int64_t e, bool all, bool last) {
    ForwardBatch batch;
    auto& sl = batch.add(slot, s, std::vector<int32_t>(ref.ids.begin() + s, ref.ids.begin() + e), table, all);
    sl.need_logits = all || last;
    const std::vector<float> logits = forward_logits(b, batch);
    if (all)
      for (int64_t p = s; p < e; ++p) keep(p, logits.data() + (p - s) * V);
    else if (last)
      keep(e - 1, logits.data());
  };
  for (int64_t s = 0; s < n; s += chunk) {
    const int64_t e = std::min(n, s + chunk);
    bool any = false;
    for (int64_t p = s; p < e && !any; ++p) any = wanted(p);
    if (!any) {
      run(s, e, false, false);
    } else if (lim.max_logit_rows == 0 || e - s <= lim.max_logit_rows) {
      run(s, e, true, false);
    } else {  // split so that every wanted position ends a slice
      int64_t a = s;
      for (int64_t p = s; p < e; ++p)
        if (wanted(p)) {
          run(a, p + 1, false, true);
          a = p + 1;
        }
      if (a < e) run(a, e, false, false);
    }
  }
  auto pick = [&](const float* row) {
    const int64_t best = std::max_element(row, row + V) - row;
    float second = -INFINITY;
    for (int64_t i = 0; i < V; ++i)
      if (i != best) second = std::max(second, row[i]);
    r.greedy.push_back(int32_t(best));
    r.greedy_margin.push_back(row[best] - second);
  };
  pick(r.tail_logits.data() + (ref.tail_rows() - 1) * V);
  for (size_t i = 0; i + 1 < ref.greedy.size(); ++i) {
    ForwardBatch batch;
    batch.add(slot, n + int64_t(i), {ref.greedy[i]}, table);
    pick(forward_logits(b, batch).data());
  }
  return r;
}

}  // namespace ds::test
