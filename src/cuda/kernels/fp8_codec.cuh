// e4m3fn encode/decode on the device (the GPU side of core/dtype.h's codec): encoding rounds to nearest
// even and saturates to +-448 (cvt.rn.satfinite), decoding is exact. Shared by the FP8 weight kernels
// (fp8.cu) and the FP8 MLA latent cache (latent_cache.cu, mla_decode.cu).
#pragma once
#include <cuda_fp8.h>

#include <cstdint>

namespace ds::gpu {

__device__ __forceinline__ uint8_t to_e4m3(float v) {
  return uint8_t(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
}
__device__ __forceinline__ float from_e4m3(uint8_t v) {
  const __half_raw h = __nv_cvt_fp8_to_halfraw(__nv_fp8_storage_t(v), __NV_E4M3);
  return __half2float(__half(h));
}
// Two e4m3 values (the low byte first) to floats, exactly.
__device__ __forceinline__ float2 from_e4m3x2(uint16_t v) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(v), __NV_E4M3);
  return __half22float2(__half2(h));
}
// e4m3 decoding on the integer pipe. The cvt path (e4m3x2 -> f16x2 -> 2 x f32) issues at a quarter of the
// integer rate and bounded the FP8 GEMVs and tile conversions (~2 cvt per weight: ~2.1 TB/s of FP8 on the
// H200). Here a byte held in bits 31..24 of a word, shifted right arithmetically by 4 and masked, leaves
// its sign in bit 31 and its exponent and mantissa in bits 26..20: that float is the value times 2^-120,
// exactly, subnormals included (e4m3fn's NaN codes 0x7f/0xff read as +-480; weights and cache entries
// are encoded with saturation and never hold them). Times 2^120 (exact) restores the value.
constexpr float kE4m3Unbias = 0x1p120f;
__device__ __forceinline__ float e4m3_top_byte_biased(uint32_t t) {
  return __uint_as_float(uint32_t(int32_t(t) >> 4) & 0x87f00000u);
}
// 4 e4m3 values (one 32-bit word, the low byte first) to floats times 2^-120.
__device__ __forceinline__ void from_e4m3x4_biased(uint32_t w, float* out) {
  out[0] = e4m3_top_byte_biased(w << 24);
  out[1] = e4m3_top_byte_biased(w << 16);
  out[2] = e4m3_top_byte_biased(w << 8);
  out[3] = e4m3_top_byte_biased(w);
}
// 16 e4m3 values (one 16-byte load) to floats, exactly.
__device__ __forceinline__ void from_e4m3x16(const uint4& raw, float* out) {
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    from_e4m3x4_biased(w[i], out + 4 * i);
#pragma unroll
    for (int j = 0; j < 4; ++j) out[4 * i + j] *= kE4m3Unbias;
  }
}

}  // namespace ds::gpu
