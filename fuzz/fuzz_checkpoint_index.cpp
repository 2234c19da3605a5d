// model.safetensors.index.json text through the checkpoint loader's index parser. Property: it is
// accepted (a weight_map of names to file names) or refused with ds::Error.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/error.h"
#include "model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    ds::parse_checkpoint_index(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.index.json");
  } catch (const ds::Error&) {
  }
  return 0;
}
