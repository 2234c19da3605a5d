// A whole safetensors file from bytes (8-byte header length, JSON header, data region) through the
// parser the loader uses. Property: it is accepted or refused with ds::Error; an accepted header's
// tensors lie inside the data region, in order, without overlaps, with byte counts matching the shape.
#include <cstddef>
#include <cstdint>

#include "core/dtype.h"
#include "core/error.h"
#include "fuzz/fuzz_common.h"
#include "model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ds::SafetensorsHeader h;
  try {
    h = ds::parse_safetensors(data, size, "fuzz.safetensors");
  } catch (const ds::Error&) {
    return 0;
  }
  const uint8_t* end = data + size;
  const uint8_t* prev_end = nullptr;
  for (const auto& t : h.tensors) {
    const auto* b = static_cast<const uint8_t*>(t.data);
    if (b < data + 8 || b > end || t.nbytes > size_t(end - b)) ds::fuzz::finding("tensor " + t.name + " is outside the file");
    if (prev_end && b < prev_end) ds::fuzz::finding("tensor " + t.name + " overlaps the one before");
    prev_end = b + t.nbytes;
    if (uint64_t(t.numel()) * ds::dtype_size(t.dtype) != t.nbytes) ds::fuzz::finding("tensor " + t.name + " has a wrong size");
  }
  return 0;
}
