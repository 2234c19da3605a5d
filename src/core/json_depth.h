// Nesting limit for JSON read from outside (request bodies, checkpoint headers): a linear pre-scan
// of the bytes, run before the JSON library parses them, so that no parser, copy, dump() or
// conversion after it can recurse deeper than the limit. Pure function of the bytes.
#pragma once
#include <cstddef>
#include <string_view>

namespace ds {

// The depth documented for request bodies and checkpoint headers (docs/SERVER.md "Limits").
constexpr size_t kMaxJsonDepth = 100;

// Deepest nesting of arrays/objects in `text` (0 for a scalar), counting brackets outside strings.
// Stops counting once `limit` is exceeded and returns limit + 1. Malformed JSON is not diagnosed
// here (the parser does that); the count is still bounded by the brackets seen.
size_t json_nesting_depth(std::string_view text, size_t limit = kMaxJsonDepth);

}  // namespace ds
