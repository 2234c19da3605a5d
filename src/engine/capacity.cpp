#include "engine/capacity.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/error.h"

namespace ds {

std::string MaxModelLen::why_lowered() const {
  switch (limited_by) {
    case Limit::None: return {};
    case Limit::Cache:
      return fmt::format("max_model_len {} lowered to {}: the MLA cache holds {} tokens in all", asked, len,
                         cache_tokens);
    case Limit::Context:
      return fmt::format("max_model_len {} lowered to {}: one step of this backend attends over at most {} tokens "
                         "of context (its MLA prefill workspace, BackendLimits::max_context)",
                         asked, len, max_context);
  }
  return {};
}

std::string context_limit_note(const MaxModelLen& m) {
  if (m.limited_by != MaxModelLen::Limit::None) return m.why_lowered();
  if (m.cache_tokens > 0) return fmt::format("the MLA cache holds {} tokens in all", m.cache_tokens);
  return {};
}

MaxModelLen resolve_max_model_len(int64_t flag, int64_t model_max_len, const BackendLimits& lim) {
  DS_CHECK(flag >= 0, "max_model_len must be >= 0 (0: the model's), got {}", flag);
  DS_CHECK(model_max_len > 0, "the model's max position must be positive, got {}", model_max_len);
  MaxModelLen r;
  r.from_flag = flag > 0;
  r.asked = r.len = flag > 0 ? flag : model_max_len;
  if (lim.block_size > 0 && lim.num_blocks > 0) r.cache_tokens = int64_t(lim.num_blocks) * lim.block_size;
  r.max_context = lim.max_context;
  // As vLLM: a length asked for that the cache cannot hold is an error; the model's own is lowered to fit.
  if (r.from_flag && r.cache_tokens > 0 && r.len > r.cache_tokens)
    fail("--max-model-len {}: one sequence of that length does not fit the MLA cache, which holds {} tokens ({} pages "
         "x {}); give the cache more memory (a higher --gpu-memory-utilization, or --kv-cache-dtype fp8: half the "
         "bytes a token; --kv-cache-tokens on --device cpu), or lower --max-model-len to {} or less (without it, "
         "the longest that fits is used)",
         r.asked, r.cache_tokens, lim.num_blocks, lim.block_size, r.cache_tokens);
  if (r.cache_tokens > 0 && r.len > r.cache_tokens) {
    r.len = r.cache_tokens;
    r.limited_by = MaxModelLen::Limit::Cache;
  }
  if (r.max_context > 0 && r.len > r.max_context) {
    r.len = r.max_context;
    r.limited_by = MaxModelLen::Limit::Context;
  }
  return r;
}

std::string CacheCapacity::describe() const {
  const std::string pages =
      full_len_in_pages < 0 ? std::string("no paged MLA cache")
                            : fmt::format("the MLA pages ({} tokens) hold {}", cache_tokens, full_len_in_pages);
  return fmt::format("capacity at max_model_len {}: {}, the KDA state slots {}: {} full-length sequence{} at once",
                     max_model_len, pages, state_slots, full_len_seqs, full_len_seqs == 1 ? "" : "s");
}

CacheCapacity cache_capacity(const BackendLimits& lim, int64_t max_model_len) {
  DS_CHECK(max_model_len > 0, "max_model_len must be positive, got {}", max_model_len);
  CacheCapacity c;
  c.max_model_len = max_model_len;
  c.state_slots = lim.num_state_slots;
  c.block_size = lim.block_size;
  if (lim.block_size > 0 && lim.num_blocks > 0) {
    c.cache_tokens = int64_t(lim.num_blocks) * lim.block_size;
    const int64_t pages_per_seq = (max_model_len + lim.block_size - 1) / lim.block_size;  // whole pages each
    c.full_len_in_pages = lim.num_blocks / pages_per_seq;
    c.full_len_seqs = std::min(c.full_len_in_pages, c.state_slots);
  } else {
    c.full_len_in_pages = -1;
    c.full_len_seqs = c.state_slots;
  }
  return c;
}

}  // namespace ds
