// INT4 nibbles to floats on the device, shared by the INT4 GEMVs (gemv_int4.cu) and the flat batch-1 MoE down
// projection + combine (moe_down_combine_staged.cu). Nibbles become floats without conversion instructions: a
// byte permute puts the nibble under the exponent of 2^23 (0x4B00000n = 2^23 + n), and subtracting 2^23 + zero
// leaves nibble - zero exactly.
#pragma once
#include <cstdint>

namespace ds::gpu {

constexpr float kInt4Magic = 8388608.f;  // 2^23

// 32 weights (16 bytes, weight i in nibble i % 8 of word i / 8, low nibble first) as nibble - zero;
// zm = 2^23 + zero.
__device__ __forceinline__ void int4x32_to_f32(const uint4& v, float zm, float* f) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint32_t lo = w[i] & 0x0F0F0F0Fu, hi = (w[i] >> 4) & 0x0F0F0F0Fu;  // even / odd nibbles, one per byte
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      f[8 * i + 2 * j] = __uint_as_float(__byte_perm(lo, 0x4B000000u, 0x7540u | unsigned(j))) - zm;
      f[8 * i + 2 * j + 1] = __uint_as_float(__byte_perm(hi, 0x4B000000u, 0x7540u | unsigned(j))) - zm;
    }
  }
}

// 2^23 + the zero point at index i of z (null: 8, the symmetric offset).
__device__ __forceinline__ float int4_zero_at(const float* z, int64_t i) { return kInt4Magic + (z ? z[i] : 8.f); }

}  // namespace ds::gpu
