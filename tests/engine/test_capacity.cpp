// Admission and memory truth: max_model_len resolved from the flag or the model's 1,048,576, lowered by the
// cache (the model's only: a flag beyond it is refused) and by the backend's context limit with the reason in
// words; full-length sequences that fit.
#include <gtest/gtest.h>

#include "core/error.h"
#include "engine/capacity.h"

namespace ds {
namespace {

BackendLimits limits(int blocks, int block_size, int slots, int64_t max_context = 0) {
  BackendLimits l;
  l.num_blocks = blocks;
  l.block_size = block_size;
  l.num_state_slots = slots;
  l.max_context = max_context;
  return l;
}

TEST(Capacity, MaxModelLenDefaultsToTheModelsAndIsLoweredWithAReason) {
  // Room for 1M tokens: the model's 1,048,576 stands.
  auto m = resolve_max_model_len(0, 1048576, limits(65536, 16, 4));
  EXPECT_EQ(m.len, 1048576);
  EXPECT_FALSE(m.from_flag);
  EXPECT_EQ(m.limited_by, MaxModelLen::Limit::None);
  EXPECT_EQ(m.why_lowered(), "");
  EXPECT_EQ(context_limit_note(m), "the MLA cache holds 1048576 tokens in all");
  // The flag wins when it fits.
  m = resolve_max_model_len(4096, 1048576, limits(65536, 16, 4));
  EXPECT_EQ(m.len, 4096);
  EXPECT_TRUE(m.from_flag);
  // Lowered by the cache (8192 pages x 16 = 131,072 tokens).
  m = resolve_max_model_len(0, 1048576, limits(8192, 16, 4));
  EXPECT_EQ(m.len, 131072);
  EXPECT_EQ(m.limited_by, MaxModelLen::Limit::Cache);
  EXPECT_EQ(m.why_lowered(), "max_model_len 1048576 lowered to 131072: the MLA cache holds 131072 tokens in all");
  EXPECT_EQ(context_limit_note(m), m.why_lowered());
  // Lowered by the backend's context limit (the GPU's MLA prefill workspace), after the cache.
  m = resolve_max_model_len(1048576, 1048576, limits(65536, 16, 4, 139264));
  EXPECT_EQ(m.len, 139264);
  EXPECT_EQ(m.limited_by, MaxModelLen::Limit::Context);
  EXPECT_NE(m.why_lowered().find("max_model_len 1048576 lowered to 139264"), std::string::npos) << m.why_lowered();
  EXPECT_NE(m.why_lowered().find("at most 139264 tokens of context"), std::string::npos) << m.why_lowered();
  // No paged cache: no limit from it, no note.
  m = resolve_max_model_len(0, 5000, limits(0, 16, 4));
  EXPECT_EQ(m.len, 5000);
  EXPECT_EQ(context_limit_note(m), "");
  EXPECT_THROW(resolve_max_model_len(-1, 5000, limits(0, 16, 4)), Error);
}

// As vLLM: a --max-model-len the cache cannot hold is a start-up error with the numbers and what to change,
// never silently lowered; the model's own length (no flag) is still lowered to fit, as above.
TEST(Capacity, AnExplicitMaxModelLenBeyondTheCacheIsRefused) {
  try {
    resolve_max_model_len(200000, 1048576, limits(8192, 16, 4));
    ADD_FAILURE() << "lowered instead of refused";
  } catch (const Error& e) {
    const std::string m = e.what();
    for (const char* part : {"--max-model-len 200000", "131072 tokens", "8192 pages x 16", "--gpu-memory-utilization",
                             "--kv-cache-dtype fp8", "--kv-cache-tokens", "lower --max-model-len to 131072"})
      EXPECT_NE(m.find(part), std::string::npos) << part << " in: " << m;
  }
  // Exactly what the cache holds is fine; so is the default.
  EXPECT_EQ(resolve_max_model_len(131072, 1048576, limits(8192, 16, 4)).len, 131072);
  EXPECT_EQ(resolve_max_model_len(0, 1048576, limits(8192, 16, 4)).len, 131072);
}

TEST(Capacity, FullLengthSequencesInPagesAndSlots) {
  // 1M tokens each: 65,536 pages of 16 hold exactly one; 64 slots do not matter.
  auto c = cache_capacity(limits(65536, 16, 64), 1048576);
  EXPECT_EQ(c.cache_tokens, 1048576);
  EXPECT_EQ(c.full_len_in_pages, 1);
  EXPECT_EQ(c.full_len_seqs, 1);
  EXPECT_NE(c.describe().find("hold 1, the KDA state slots 64: 1 full-length sequence at once"), std::string::npos)
      << c.describe();
  // Whole pages per sequence: 1,000 tokens take 63 pages of 16, so 630 pages hold 10, not 10.08.
  c = cache_capacity(limits(635, 16, 64), 1000);
  EXPECT_EQ(c.full_len_in_pages, 10);
  EXPECT_EQ(c.full_len_seqs, 10);
  // The slots bound it.
  c = cache_capacity(limits(65536, 16, 3), 4096);
  EXPECT_EQ(c.full_len_in_pages, 256);
  EXPECT_EQ(c.full_len_seqs, 3);
  EXPECT_NE(c.describe().find("3 full-length sequences at once"), std::string::npos) << c.describe();
  // No paged cache: the slots alone.
  c = cache_capacity(limits(0, 16, 5), 4096);
  EXPECT_EQ(c.full_len_in_pages, -1);
  EXPECT_EQ(c.full_len_seqs, 5);
}

}  // namespace
}  // namespace ds
