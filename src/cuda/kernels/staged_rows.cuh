// Weight rows staged in shared memory, as the batch-1 MoE kernels that stage them read them
// (moe_gate_up_staged.cu, moe_down_combine_staged.cu): the row formats, their sizes, and a lane's share of a row's
// dot product with a row of x in shared memory.
#pragma once
#include <cstdint>

#include "cuda/kernels/fp8_codec.cuh"
#include "cuda/kernels/gemv_common.cuh"
#include "cuda/kernels/int4_codec.cuh"

namespace ds::gpu::gemv_detail {

// bf16 (the activation dtype, no scales), FP8 e4m3 with scales, INT4 nibbles with group scales and zero points.
enum class RowFmt { Bf16, Fp8, Int4 };
template <RowFmt F> constexpr int row_chunk_weights() { return F == RowFmt::Int4 ? 32 : F == RowFmt::Fp8 ? 16 : 8; }
// Bytes of n weights (a row of K, or a matrix stride that counts weights).
__host__ __device__ constexpr int64_t row_fmt_bytes(RowFmt f, int64_t n) {
  return f == RowFmt::Int4 ? n / 2 : f == RowFmt::Fp8 ? n : n * 2;
}

// The staged kernels' (activation, row format) instances: f.template operator()<T, F>() for act and the weights'
// format (INT4, FP8 with scales, else weights in the activation dtype: bf16 only).
template <typename Fn> void dispatch_row_fmt(DType act, bool int4, bool scaled, Fn&& f) {
  dispatch_act(act, [&]<typename T>() {
    if (int4) f.template operator()<T, RowFmt::Int4>();
    else if (scaled) f.template operator()<T, RowFmt::Fp8>();
    else if constexpr (sizeof(T) == 2) f.template operator()<T, RowFmt::Bf16>();
  });
}
// Every instance dispatch_row_fmt reaches (each kernel's shared-memory limit is set for all of them).
template <typename Fn> void for_each_row_fmt(Fn&& f) {
  f.template operator()<bf16, RowFmt::Bf16>();
  f.template operator()<bf16, RowFmt::Fp8>();
  f.template operator()<bf16, RowFmt::Int4>();
  f.template operator()<float, RowFmt::Fp8>();
  f.template operator()<float, RowFmt::Int4>();
}

// Lane `lane`'s part of row . x over K weights (chunks lane, lane + 32, ...; the caller sums the warp): row in
// shared memory, x the activation row in shared memory (act dtype T); so the offset of the row's scales (and zero
// points) in w_scale / w_zero, ks the scales' k shift. Each 16-byte chunk lies in one scale group.
template <typename T, RowFmt F>
__device__ __forceinline__ float staged_row_dot(const unsigned char* row, const T* x, int K, const float* w_scale,
                                                const float* w_zero, int64_t so, int ks, int lane) {
  constexpr int kE = row_chunk_weights<F>();
  float d = 0.f;
  for (int ch = lane; ch < K / kE; ch += 32) {
    const int k0 = ch * kE;
    const uint4 raw = *reinterpret_cast<const uint4*>(row + int64_t(ch) * 16);
    float f[kE];
    if constexpr (F == RowFmt::Int4) int4x32_to_f32(raw, int4_zero_at(w_zero, so + (k0 >> ks)), f);
    else if constexpr (F == RowFmt::Fp8) from_e4m3x16(raw, f);
    else {
      Chunk8<bf16> wv;
      wv.r[0] = raw;
      wv.to_float(f);
    }
    float t = 0.f;
#pragma unroll
    for (int q = 0; q < kE / 8; ++q) {
      Chunk8<T> xv;
      xv.load_shared(x + k0 + 8 * q);
      float fx[8];
      xv.to_float(fx);
#pragma unroll
      for (int e = 0; e < 8; ++e) t = fmaf(f[8 * q + e], fx[e], t);
    }
    if constexpr (F == RowFmt::Bf16) d += t;
    else d = fmaf(t, w_scale[so + (k0 >> ks)], d);
  }
  return d;
}

}  // namespace ds::gpu::gemv_detail
