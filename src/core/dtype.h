// Element types of checkpoint tensors and conversions to float.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace ds {

// F8_E4M3: OCP float8 e4m3fn (1 sign, 4 exponent bits with bias 7, 3 mantissa bits; no infinities,
// S.1111.111 is NaN, largest finite 448), the safetensors "F8_E4M3" of FP8 checkpoints.
enum class DType : uint8_t { F32, F16, BF16, F64, I32, I64, U8, I8, BOOL, F8_E4M3 };

size_t dtype_size(DType t);
std::string_view dtype_name(DType t);            // safetensors spelling: "F32", "BF16", ...
bool parse_dtype(std::string_view s, DType* out);  // false when unknown

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round-to-nearest-even, NaN preserved.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

inline float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

float f16_to_f32(uint16_t h);
// e4m3fn <-> fp32: decoding is exact; encoding rounds to nearest even and saturates to +-448 (NaN -> NaN).
float fp8_e4m3_to_f32(uint8_t v);
uint8_t f32_to_fp8_e4m3(float f);
uint16_t f32_to_f16(float f);

// Convert n elements of type `t` at `src` to float.
void convert_to_f32(DType t, const void* src, float* dst, size_t n);

}  // namespace ds
