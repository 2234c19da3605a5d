// e4m3fn encode/decode on the device (the GPU side of core/dtype.h's codec): encoding rounds to nearest
// even and saturates to +-448 (cvt.rn.satfinite), decoding is exact. Shared by the FP8 weight kernels
// (fp8.cu) and the FP8 MLA latent cache (latent_cache.cu, mla_decode.cu, mla_decode_wgmma.cu).
#pragma once
#include <cuda_fp8.h>

#include <cstdint>

#include "cuda/kernels/moe_gemm_fp8_wgmma.h"

namespace ds::gpu {

__device__ __forceinline__ uint8_t to_e4m3(float v) {
  return uint8_t(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
}
__device__ __forceinline__ float from_e4m3(uint8_t v) {
  const __half_raw h = __nv_cvt_fp8_to_halfraw(__nv_fp8_storage_t(v), __NV_E4M3);
  return __half2float(__half(h));
}
// Two floats to e4m3 (a in the low byte), as to_e4m3 each: one conversion for the pair.
__device__ __forceinline__ uint16_t to_e4m3x2(float a, float b) {
  return uint16_t(__nv_cvt_float2_to_fp8x2(make_float2(a, b), __NV_SATFINITE, __NV_E4M3));
}
// Two e4m3 values (the low byte first) to floats, exactly.
__device__ __forceinline__ float2 from_e4m3x2(uint16_t v) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(v), __NV_E4M3);
  return __half22float2(__half2(h));
}
// 16 e4m3 values (one 16-byte load) to floats.
__device__ __forceinline__ void from_e4m3x16(const uint4& raw, float* out) {
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 a = from_e4m3x2(uint16_t(w[i] & 0xffffu)), b = from_e4m3x2(uint16_t(w[i] >> 16));
    out[4 * i] = a.x;
    out[4 * i + 1] = a.y;
    out[4 * i + 2] = b.x;
    out[4 * i + 3] = b.y;
  }
}

// The x split of 8 values of one 128-column block whose |max| is amax (XSplitParams, moe_gemm_fp8_wgmma.h):
// s the least power of two with amax / s <= 448 (1 for zero), hi = e4m3(v / s), lo = e4m3(v / s - hi), the
// 8 bytes of each in order. Shared by the split kernel and the FP8 tensor-core GEMV (gemv_fp8_mma.cu).
// sum (optional): the 8 values' hi + lo as e4m3 decodes them, summed in fp32 in order.
__device__ __forceinline__ float x_split8(const float (&v)[8], float amax, uint2& hi, uint2& lo,
                                          float* sum = nullptr) {
  const float need = amax / 448.f;
  const float s =
      need > 0.f ? __uint_as_float((__float_as_uint(fmaxf(need, 0x1p-126f)) + 0x007fffffu) & 0xff800000u) : 1.f;
  const float inv = 1.f / s;  // exact: a power of two
  uint32_t hw[2] = {0, 0}, lw[2] = {0, 0};
  float acc = 0.f;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const float y = v[j] * inv;
    const uint8_t h = to_e4m3(y);
    const float hv = from_e4m3(h);
    const uint8_t l = to_e4m3(y - hv);
    if (sum) acc += hv + from_e4m3(l);
    hw[j / 4] |= uint32_t(h) << (8 * (j % 4));
    lw[j / 4] |= uint32_t(l) << (8 * (j % 4));
  }
  hi = make_uint2(hw[0], hw[1]);
  lo = make_uint2(lw[0], lw[1]);
  if (sum) *sum = acc;
  return s;
}

// Chunk c (8 values v, zeros where not `ok`: outside the rows) of row r of the x split of rows x K values into `out`
// (XSplitParams' layout: hi plane, lo plane, the rows' K / 128 scales, then from x_split_sums_offset the rows'
// K / 32 sums): the chunk's 128-column block spans 16 consecutive lanes, whose amax meets by shuffles (every lane
// of the warp calls, `ok` or not; c % 4 is the lane's % 4); then x_split8, the block's first chunk writes the
// scale and each 32 columns' first chunk the sum of their hi + lo ((c0 + c1) + (c2 + c3) over its four chunks).
// The split kernel and the RMSNorm's fused split.
__device__ __forceinline__ void x_split_chunk_store(const float (&v)[8], bool ok, uint8_t* out, int64_t rows, int K,
                                                    int64_t r, int c) {
  float amax = 0.f;
#pragma unroll
  for (int j = 0; j < 8; ++j) amax = fmaxf(amax, fabsf(v[j]));
#pragma unroll
  for (int o = 1; o < 16; o <<= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  uint2 h, l;
  float sum;
  const float s = x_split8(v, amax, h, l, &sum);  // (zeros where not ok: every lane takes part in the sums)
  sum += __shfl_xor_sync(0xffffffffu, sum, 1);
  sum += __shfl_xor_sync(0xffffffffu, sum, 2);
  if (!ok) return;
  const int64_t plane = rows * K, at = r * K + int64_t(c) * 8;
  *reinterpret_cast<uint2*>(out + at) = h;
  *reinterpret_cast<uint2*>(out + plane + at) = l;
  if (c % 16 == 0) reinterpret_cast<float*>(out + 2 * plane)[r * (K / 128) + c / 16] = s;
  if (c % 4 == 0) reinterpret_cast<float*>(out + x_split_sums_offset(rows, K))[r * (K / 32) + c / 4] = sum;
}

// 16 e4m3 values (one 16-byte load) to 16 f16, exactly (one conversion a pair), as two 16-byte words.
__device__ __forceinline__ void e4m3x16_to_f16(const uint4& raw, uint4& lo, uint4& hi) {
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
  uint32_t b[8];
#pragma unroll
  for (int h = 0; h < 4; ++h) {
    const __half2_raw a = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(w[h] & 0xffffu), __NV_E4M3);
    const __half2_raw c = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(w[h] >> 16), __NV_E4M3);
    b[2 * h] = uint32_t(a.x) | (uint32_t(a.y) << 16);
    b[2 * h + 1] = uint32_t(c.x) | (uint32_t(c.y) << 16);
  }
  lo = make_uint4(b[0], b[1], b[2], b[3]);
  hi = make_uint4(b[4], b[5], b[6], b[7]);
}

}  // namespace ds::gpu
