// The MLA latent cache's storage format (`--kv-cache-dtype`, docs/QUANTIZATION.md "FP8 MLA cache").
//   Auto: the activation dtype (bf16 on the GPU, fp32 on the CPU), what the cache always was;
//   Fp8:  per cached token and MLA layer, the 576 latent values [ĉ (512) ; k_pe (64)] as e4m3fn with one
//         fp32 scale: scale = amax / 448 (1 for an all-zero row), q = e4m3(v / scale) rounded to nearest
//         even and saturating, read back as q · scale. On the GPU a row is 576 bytes of e4m3 then the scale
//         in the next 16 bytes (592 bytes, 16-byte aligned); the CPU twin keeps fp32 rows holding exactly
//         the dequantized values, so both compute from the same numbers.
// The format is global per server: every page of the pool (and so every prefix-cache hit) has it.
#pragma once
#include <cstdint>
#include <string>

namespace ds {

enum class KvCacheDtype : uint8_t { Auto, Fp8 };

// "auto" | "fp8" | "fp8_e4m3" (vLLM's names for the same); anything else, fp8_e5m2 included, is a ds::Error
// naming the accepted values.
KvCacheDtype parse_kv_cache_dtype(const std::string& s);
const char* kv_cache_dtype_name(KvCacheDtype d);  // "auto" | "fp8"

// GPU row of the FP8 cache: kFp8LatentRowBytes bytes per cached token and layer, the scale (fp32) at byte
// offset `latent_dim` (the e4m3 values first). latent_dim must be a multiple of 16.
inline constexpr int kFp8LatentScalePad = 16;
inline constexpr int64_t fp8_latent_row_bytes(int64_t latent_dim) { return latent_dim + kFp8LatentScalePad; }

// Quantizes one latent row in place to the values the FP8 cache returns (CPU twin of the GPU write):
// scale = amax / 448 (1 when the row is all zeros), v = e4m3(v / scale) · scale. Returns the scale.
float fp8_latent_round_trip(float* row, int64_t n);

}  // namespace ds
