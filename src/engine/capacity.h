// Admission and memory truth: the longest request the engine accepts (max_model_len) and what the
// backend's caches hold, in the numbers a user needs (start-up log, 400 messages).
#pragma once
#include <cstdint>
#include <string>

#include "model/step.h"

namespace ds {

// max_model_len as resolved from the flag (0: the model config's max position, 1,048,576 for Kimi Linear),
// lowered to what the backend can serve: the MLA page pool's tokens, then BackendLimits::max_context (the
// longest context one step can attend over, where the backend has such a limit). A flag value above what the
// MLA pages hold is not lowered: resolve_max_model_len throws ds::Error with the numbers and what to change
// (vLLM refuses to start too).
struct MaxModelLen {
  int64_t len = 0;
  int64_t asked = 0;             // the flag, or the model's when the flag is 0
  bool from_flag = false;        // asked by --max-model-len (else the model's default)
  int64_t cache_tokens = 0;      // MLA pages × block size (0: no paged cache)
  int64_t max_context = 0;       // BackendLimits::max_context (0: none)
  enum class Limit { None, Cache, Context } limited_by = Limit::None;
  // Why len < asked, in words (empty when it is not lowered).
  std::string why_lowered() const;
};
MaxModelLen resolve_max_model_len(int64_t flag, int64_t model_max_len, const BackendLimits& lim);
// For "too long" messages: why_lowered() when max_model_len was lowered, else how many tokens the MLA
// cache holds (empty without a paged cache).
std::string context_limit_note(const MaxModelLen& m);

// How many sequences of the full max_model_len fit at once: in the MLA pages, in the KDA state slots,
// and together (the smaller).
struct CacheCapacity {
  int64_t cache_tokens = 0;      // MLA pages × block size (0: no paged cache, no limit from it)
  int64_t block_size = 0;
  int64_t state_slots = 0;
  int64_t max_model_len = 0;
  int64_t full_len_in_pages = 0; // cache_tokens / pages per full sequence (-1: no paged cache)
  int64_t full_len_seqs = 0;     // min of the pages' and the slots' count
  std::string describe() const;  // one log line
};
CacheCapacity cache_capacity(const BackendLimits& lim, int64_t max_model_len);

}  // namespace ds
