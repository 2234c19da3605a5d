// The GPU model's state layout and state operations (DeviceCaches), the start-up workspace plan, and
// the steps the plan refuses (CudaModel): on the tiny config.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "config/model_config.h"
#include "config/runtime_env.h"
#include "core/error.h"
#include "cuda/cuda_model.h"
#include "cuda/device_caches.h"
#include "cuda/workspace.h"
#include "gpu_test_util.h"

namespace ds::gpu::test {
namespace {

const std::string kTiny = std::string(DS_FIXTURES_DIR) + "/tiny";

// Every float of slot `s` of KDA layer `l` (state, then conv tail) as the host sees it.
std::vector<float> read_slot(const DeviceCaches& c, int l, int s) {
  const auto& u = c.unit();
  std::vector<float> v((u.state_slot + u.conv_slot) / 4);
  DS_CUDA_CHECK(cudaMemcpy(v.data(), c.kda_state(l, s), u.state_slot, cudaMemcpyDeviceToHost));
  DS_CUDA_CHECK(cudaMemcpy(v.data() + u.state_slot / 4, c.conv_state(l, s), u.conv_slot, cudaMemcpyDeviceToHost));
  return v;
}

void fill_slot(const DeviceCaches& c, int l, int s, float value) {
  const auto& u = c.unit();
  std::vector<float> v((u.state_slot + u.conv_slot) / 4);
  for (size_t i = 0; i < v.size(); ++i) v[i] = value + float(i % 7);
  DS_CUDA_CHECK(cudaMemcpy(c.kda_state(l, s), v.data(), u.state_slot, cudaMemcpyHostToDevice));
  DS_CUDA_CHECK(cudaMemcpy(c.conv_state(l, s), v.data() + u.state_slot / 4, u.conv_slot, cudaMemcpyHostToDevice));
}

bool slot_is(const DeviceCaches& c, int l, int s, float value) {
  auto v = read_slot(c, l, s);
  for (size_t i = 0; i < v.size(); ++i)
    if (v[i] != value + float(i % 7)) return false;
  return true;
}

bool slot_is_zero(const DeviceCaches& c, int l, int s) {
  for (float x : read_slot(c, l, s))
    if (x != 0.f) return false;
  return true;
}

TEST(DeviceCaches, LayoutAndStateOps) {
  DS_REQUIRE_GPU();
  const auto cfg = ModelConfig::from_file(kTiny + "/model/config.json");
  ASSERT_GT(cfg.num_kda_layers(), 1);
  Stream stream;
  const DeviceContext ctx = make_device_context(stream.get(), CudaEnv{});
  CacheShape shape;
  shape.num_slots = 3;
  shape.num_blocks = 4;
  shape.block_size = 16;
  shape.num_snapshots = 2;
  DeviceCaches c(cfg, DType::F32, shape, ctx);
  stream.sync();
  const auto& u = c.unit();
  EXPECT_EQ(c.pad_slot(), 3);
  EXPECT_EQ(c.pad_block(), 4);
  // [kda layers][slots + 1][...]: one place computes it
  const auto* base = reinterpret_cast<const char*>(c.kda_state(0, 0));
  EXPECT_EQ(reinterpret_cast<const char*>(c.kda_state(1, 2)) - base, ptrdiff_t((1 * 4 + 2) * u.state_slot));
  const auto* cbase = static_cast<const char*>(c.conv_state(0, 0));
  EXPECT_EQ(static_cast<const char*>(c.conv_state(1, 3)) - cbase, ptrdiff_t((1 * 4 + 3) * u.conv_slot));
  EXPECT_EQ(u.per_slot, size_t(cfg.num_kda_layers()) * (u.state_slot + u.conv_slot));
  for (int l = 0; l < cfg.num_kda_layers(); ++l)
    for (int s = 0; s < 4; ++s) EXPECT_TRUE(slot_is_zero(c, l, s)) << "fresh caches are zeroed";

  const int L = cfg.num_kda_layers();
  for (int l = 0; l < L; ++l)
    for (int s = 0; s < 3; ++s) fill_slot(c, l, s, float(100 * l + 10 * s + 1));
  c.copy_slot(0, 2, ctx);
  stream.sync();
  for (int l = 0; l < L; ++l) {
    EXPECT_TRUE(slot_is(c, l, 2, float(100 * l + 1))) << "copy_slot 0 -> 2, layer " << l;
    EXPECT_TRUE(slot_is(c, l, 1, float(100 * l + 11))) << "slot 1 untouched, layer " << l;
  }
  c.save_snapshot(1, 1, ctx);
  auto slots = to_device_raw(std::vector<int32_t>{1});
  c.zero_slots(slots.as<int32_t>(), 1, ctx);
  stream.sync();
  for (int l = 0; l < L; ++l) {
    EXPECT_TRUE(slot_is_zero(c, l, 1)) << "zero_slots, layer " << l;
    EXPECT_TRUE(slot_is(c, l, 0, float(100 * l + 1))) << "zero_slots left slot 0, layer " << l;
  }
  c.restore_snapshot(1, 1, ctx);
  stream.sync();
  for (int l = 0; l < L; ++l) EXPECT_TRUE(slot_is(c, l, 1, float(100 * l + 11))) << "restore, layer " << l;
  EXPECT_THROW(c.copy_slot(0, 3, ctx), Error);  // the scratch slot is not a sequence's
  EXPECT_THROW(c.save_snapshot(0, 2, ctx), Error);
}

TEST(WorkspacePlan, SizesFromTheLimits) {
  DS_REQUIRE_GPU();
  const auto cfg = ModelConfig::from_file(kTiny + "/model/config.json");
  WorkspaceLimits lim;
  lim.max_tokens = 64;
  lim.max_seqs = 4;
  lim.max_graph_batch = 4;
  lim.max_context = 1000;
  const auto p = WorkspacePlan::make(cfg, DType::F32, lim, 132);
  EXPECT_EQ(p.lim.mla_expand_keys, 1000);  // min(max_context, 32768)
  EXPECT_GE(p.lim.max_logit_rows, 4);
  EXPECT_LE(p.lim.max_logit_rows, 64);
  EXPECT_EQ(p.logits, (size_t(p.lim.max_logit_rows) * cfg.vocab_size * 4 + 255) / 256 * 256);
  EXPECT_GE(p.expansion, size_t(1000) * MlaExpansion::bytes_per_row(cfg, DType::F32));
  Workspace ws(cfg, DType::F32, p, 132);
  EXPECT_EQ(ws.device_bytes(), p.total());
  EXPECT_EQ(ws.expansion().key_rows, 1000);
  EXPECT_NE(ws.sampling().io_host, nullptr);
}

// Small fp32 model options on the tiny config (dummy weights via tiny_model()).
CudaModelOptions small_options() {
  CudaModelOptions o;
  o.act = DType::F32;
  o.max_num_seqs = 4;
  o.max_tokens = 64;
  o.max_graph_batch = 4;
  return o;
}

std::unique_ptr<CudaModel> tiny_model(const ModelConfig& cfg, const CudaModelOptions& o) {
  Stream load;
  WeightLoadOptions wl;
  wl.dummy = true;
  return std::make_unique<CudaModel>(
      cfg, load_device_weights(cfg, DType::F32, wl, make_device_context(load.get(), CudaEnv{})), o);
}

// A step the start-up plan cannot hold is refused before anything runs; a smaller one still works.
TEST(CudaModelPlan, RefusesWhatTheWorkspaceCannotHold) {
  DS_REQUIRE_GPU();
  const auto cfg = ModelConfig::from_file(kTiny + "/model/config.json");
  ASSERT_GT(cfg.num_mla_layers(), 0);
  CudaModelOptions o = small_options();
  o.num_blocks = 16;
  o.max_model_len = 256;
  o.max_logit_rows = 16;
  o.mla_expand_keys = 32;
  auto model = tiny_model(cfg, o);
  CudaModel& m = *model;
  auto pages = [](int n) {
    std::vector<int32_t> v;
    for (int i = 0; i < n; ++i) v.push_back(i);
    return v;
  };
  ForwardBatch long_ctx;  // 40 keys > 32: attended piece by piece (test_model_long checks the values)
  long_ctx.add(0, 0, std::vector<int32_t>(40, 1), pages(3));
  EXPECT_NO_THROW(m.forward(long_ctx));
  ForwardBatch too_many;  // 65 tokens > max_tokens 64
  too_many.add(0, 0, std::vector<int32_t>(65, 1), pages(5));
  try {
    m.forward(too_many);
    ADD_FAILURE() << "a batch over max_tokens ran";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("a batch of 65 tokens exceeds"), std::string::npos)
        << e.what();
  }
  ForwardBatch many_rows;  // 20 logits rows > 16
  many_rows.add(0, 0, std::vector<int32_t>(20, 1), pages(2), /*logits_all=*/true);
  try {
    m.forward(many_rows);
    ADD_FAILURE() << "a batch over max_logit_rows ran";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("20 logits rows, the workspace holds 16"), std::string::npos) << e.what();
  }
  ForwardBatch fits;
  fits.add(0, 0, std::vector<int32_t>(30, 1), pages(2));
  EXPECT_NO_THROW(m.forward(fits));
  DS_CUDA_CHECK(cudaStreamSynchronize(m.stream()));
  EXPECT_EQ(m.num_logit_rows(), 1);

  // two prefills whose keys together (24 + 20) exceed the expansion run in groups: the same logits
  // as each alone
  const int V = cfg.vocab_size;
  auto logits = [&](int rows) {
    std::vector<float> h(size_t(rows) * V);
    DS_CUDA_CHECK(cudaStreamSynchronize(m.stream()));  // the model's stream does not block the default one
    DS_CUDA_CHECK(cudaMemcpy(h.data(), m.logits(), h.size() * 4, cudaMemcpyDeviceToHost));
    return h;
  };
  std::vector<int32_t> a(24), b(20);
  for (size_t i = 0; i < a.size(); ++i) a[i] = int32_t(3 + 7 * i) % V;
  for (size_t i = 0; i < b.size(); ++i) b[i] = int32_t(5 + 11 * i) % V;
  ForwardBatch both;
  both.add(0, 0, a, {0, 1});
  both.add(1, 0, b, {2, 3});
  m.forward(both);
  const auto together = logits(2);
  ForwardBatch alone_a, alone_b;
  alone_a.add(0, 0, a, {0, 1});
  alone_b.add(1, 0, b, {2, 3});
  m.forward(alone_a);
  const auto la = logits(1);
  m.forward(alone_b);
  const auto lb = logits(1);
  std::vector<float> expect(la);
  expect.insert(expect.end(), lb.begin(), lb.end());
  EXPECT_LT(rel_l2(together, expect), 1e-4);
}


// The layout's state operations through CudaModel: a continuation from a copied slot or a restored
// snapshot gives the logits of continuing in the original slot.
// A tiny fp32 model with snapshots and 8 pages, run eagerly; logits() reads its first logits row.
struct SnapshotRig {
  ModelConfig cfg = ModelConfig::from_file(kTiny + "/model/config.json");
  std::unique_ptr<CudaModel> model;
  explicit SnapshotRig(int snapshots) {
    CudaModelOptions o = small_options();
    o.num_blocks = 8;
    o.num_snapshots = snapshots;
    o.max_model_len = 128;
    o.switches.graphs = false;
    model = tiny_model(cfg, o);
  }
  std::vector<float> logits() const {
    std::vector<float> h(static_cast<size_t>(cfg.vocab_size));
    DS_CUDA_CHECK(cudaStreamSynchronize(model->stream()));  // the model's stream does not block the default one
    DS_CUDA_CHECK(cudaMemcpy(h.data(), model->logits(), h.size() * 4, cudaMemcpyDeviceToHost));
    return h;
  }
};

TEST(CudaModelPlan, StateInitCopyAndSnapshot) {
  DS_REQUIRE_GPU();
  SnapshotRig rig(2);
  CudaModel& m = *rig.model;
  const int V = rig.cfg.vocab_size;
  auto logits = [&] { return rig.logits(); };
  std::vector<int32_t> prompt(16), more(5);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = int32_t(7 + 13 * i) % V;
  for (size_t i = 0; i < more.size(); ++i) more[i] = int32_t(2 + 5 * i) % V;
  ForwardBatch first;  // the prompt in slot 0 (one full page, page 0), saved into snapshot 1
  first.add(0, 0, prompt, {0}).save_snapshot = 1;
  m.forward(first);
  ForwardBatch copied;  // slot 1 starts as a copy of slot 0 after the prompt
  SeqSlice& c = copied.add(1, 16, more, {0, 2});
  c.state_init = StateInit::CopySlot;
  c.state_src = 0;
  m.forward(copied);
  const auto from_copy = logits();
  ForwardBatch restored;  // slot 2 starts from snapshot 1
  SeqSlice& r = restored.add(2, 16, more, {0, 3});
  r.state_init = StateInit::RestoreSnapshot;
  r.state_src = 1;
  m.forward(restored);
  const auto from_snapshot = logits();
  ForwardBatch kept;  // slot 0 continues
  kept.add(0, 16, more, {0, 1});
  m.forward(kept);
  const auto from_slot = logits();
  EXPECT_LT(rel_l2(from_copy, from_slot), 1e-6);
  EXPECT_LT(rel_l2(from_snapshot, from_slot), 1e-6);
  ForwardBatch fresh;  // the same tokens from a zero state differ (the check can fail)
  fresh.add(3, 0, more, {4});
  m.forward(fresh);
  EXPECT_GT(rel_l2(logits(), from_slot), 1e-3);
}

// Prefix caching's device ops: the finiteness flag of a saved snapshot (fp32 state, fp32 and bf16 conv
// tails) and the copy of a cached partial page.
TEST(DeviceCaches, SnapshotFinitenessFlagAndPartialPageCopy) {
  DS_REQUIRE_GPU();
  const auto cfg = ModelConfig::from_file(kTiny + "/model/config.json");
  Stream stream;
  const DeviceContext ctx = make_device_context(stream.get(), CudaEnv{});
  for (DType act : {DType::F32, DType::BF16}) {
    CacheShape shape;
    shape.num_slots = 2;
    shape.num_blocks = 4;
    shape.block_size = 16;
    shape.num_snapshots = 3;
    DeviceCaches c(cfg, act, shape, ctx);
    const auto& u = c.unit();
    const int L = cfg.num_kda_layers();
    std::vector<float> ones(u.state_slot / 4, 0.5f);
    for (int l = 0; l < L; ++l)
      DS_CUDA_CHECK(cudaMemcpy(c.kda_state(l, 0), ones.data(), u.state_slot, cudaMemcpyHostToDevice));
    auto flags = to_device_raw(std::vector<int32_t>{0, 0, 0});
    c.save_snapshot(0, 0, ctx);
    c.flag_nonfinite_snapshot(0, flags.as<int32_t>(), ctx);
    // a NaN in the last layer's state
    const float nan = NAN;
    DS_CUDA_CHECK(cudaMemcpy(c.kda_state(L - 1, 0) + 77, &nan, 4, cudaMemcpyHostToDevice));
    c.save_snapshot(0, 1, ctx);
    c.flag_nonfinite_snapshot(1, flags.as<int32_t>() + 1, ctx);
    // an infinity in the first layer's conv tail (its activation dtype), the state finite again
    for (int l = 0; l < L; ++l)
      DS_CUDA_CHECK(cudaMemcpy(c.kda_state(l, 1), ones.data(), u.state_slot, cudaMemcpyHostToDevice));
    if (act == DType::F32) {
      const float inf = INFINITY;
      DS_CUDA_CHECK(cudaMemcpy(static_cast<char*>(c.conv_state(0, 1)) + 12, &inf, 4, cudaMemcpyHostToDevice));
    } else {
      const uint16_t inf = 0x7f80;  // bf16 +inf
      DS_CUDA_CHECK(cudaMemcpy(static_cast<char*>(c.conv_state(0, 1)) + 10, &inf, 2, cudaMemcpyHostToDevice));
    }
    c.save_snapshot(1, 2, ctx);
    c.flag_nonfinite_snapshot(2, flags.as<int32_t>() + 2, ctx);
    stream.sync();
    std::vector<int32_t> got(3);
    DS_CUDA_CHECK(cudaMemcpy(got.data(), flags.data(), 12, cudaMemcpyDeviceToHost));
    EXPECT_EQ(got, std::vector<int32_t>({0, 1, 1})) << dtype_name(act);

    // rows [0, 5) of page 1 into page 2, every MLA layer; row 5 of page 2 stays as it was (zero)
    const size_t row = size_t(cfg.mla.latent_dim()) * dtype_size(act), page = row * 16;
    std::vector<uint8_t> pattern(page);
    for (size_t i = 0; i < page; ++i) pattern[i] = uint8_t(1 + i % 251);
    for (int l = 0; l < cfg.num_mla_layers(); ++l)
      DS_CUDA_CHECK(cudaMemcpy(static_cast<char*>(c.mla_layer(l)) + page, pattern.data(), page, cudaMemcpyHostToDevice));
    c.copy_page_rows(1, 2, 5, ctx);
    stream.sync();
    for (int l = 0; l < cfg.num_mla_layers(); ++l) {
      std::vector<uint8_t> back(page);
      DS_CUDA_CHECK(cudaMemcpy(back.data(), static_cast<char*>(c.mla_layer(l)) + 2 * page, page, cudaMemcpyDeviceToHost));
      EXPECT_TRUE(std::equal(back.begin(), back.begin() + 5 * row, pattern.begin())) << "layer " << l;
      EXPECT_TRUE(std::all_of(back.begin() + 5 * row, back.end(), [](uint8_t b) { return b == 0; })) << "layer " << l;
    }
    EXPECT_THROW(c.copy_page_rows(1, 1, 3, ctx), Error);
    EXPECT_THROW(c.copy_page_rows(1, 2, 17, ctx), Error);
  }
}

// A prefix-cache hit through CudaModel: a sequence restored from a snapshot at 21 tokens, with rows
// [16, 21) of its partial page copied from the cached page, continues like the original (fp32); a
// batch of saves alone runs; a saved NaN state is reported by take_nonfinite_snapshots().
TEST(CudaModelPlan, PrefixHitWithAPartialPageAndTheNaNCheck) {
  DS_REQUIRE_GPU();
  SnapshotRig rig(3);
  CudaModel& m = *rig.model;
  const int V = rig.cfg.vocab_size;
  auto logits = [&] { return rig.logits(); };
  std::vector<int32_t> prompt(21), more(6);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = int32_t(11 + 17 * i) % V;
  for (size_t i = 0; i < more.size(); ++i) more[i] = int32_t(3 + 7 * i) % V;
  ForwardBatch first;  // slot 0, pages {0, 1}; snapshot 1 after 21 tokens
  first.add(0, 0, prompt, {0, 1}).save_snapshot = 1;
  m.forward(first);
  EXPECT_TRUE(m.take_nonfinite_snapshots().empty());
  ForwardBatch hit;  // slot 1: shares page 0, copies 5 rows of page 1 into its page 2
  SeqSlice& h = hit.add(1, 21, more, {0, 2});
  h.state_init = StateInit::RestoreSnapshot;
  h.state_src = 1;
  h.tail_src_block = 1;
  h.tail_rows = 5;
  m.forward(hit);
  const auto from_hit = logits();
  ForwardBatch kept;
  kept.add(0, 21, more, {0, 1});
  m.forward(kept);
  EXPECT_LT(rel_l2(from_hit, logits()), 1e-6);
  ForwardBatch no_copy;  // without the partial page the result differs (the check can fail)
  SeqSlice& n = no_copy.add(2, 21, more, {0, 3});
  n.state_init = StateInit::RestoreSnapshot;
  n.state_src = 1;
  m.forward(no_copy);
  EXPECT_GT(rel_l2(logits(), from_hit), 1e-4);
  // saves alone: a finite state, then slot 0 with a NaN planted in its first KDA layer
  ForwardBatch saves;
  saves.saves_before.push_back({0, 0});
  m.forward(saves);
  EXPECT_TRUE(m.take_nonfinite_snapshots().empty());
  float* state0 = nullptr;
  ASSERT_NO_THROW(state0 = m.debug_kda_state(0, 0));
  DS_CUDA_CHECK(cudaMemset(state0, 0xff, 16));  // 0xffffffff: a NaN
  ForwardBatch bad;
  bad.saves_before.push_back({0, 2});
  m.forward(bad);
  EXPECT_EQ(m.take_nonfinite_snapshots(), std::vector<int32_t>({2}));
}

}  // namespace
}  // namespace ds::gpu::test
