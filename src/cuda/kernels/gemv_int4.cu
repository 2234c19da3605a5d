// The GEMV kernels for INT4 W4A16 weights (GemvParams::w_int4): packed nibbles with group scales and
// zero points, activations in bf16 or fp32, fp32 accumulation; every case run_gemv takes (dense and
// grouped, all epilogues, the fused RMSNorm and KDA output-norm prologues, any number of rows), and the
// MoE down projection + combine at batch 1. A warp streams pairs of weight rows as 16-byte loads (32
// weights per lane: one group of 32, or a quarter of a group of 128), U loads per row in flight,
// against up to MT rows of x in shared memory; each 32-weight chunk's partial dot product of
// (nibble - zero) and x is scaled once. Nibbles become floats without conversion instructions: a byte
// permute puts the nibble under the exponent of 2^23 (0x4B00000n = 2^23 + n), and subtracting 2^23 +
// zero leaves nibble - zero exactly (int4_codec.cuh). CPU twin: the GEMM on model/quant_int4.h's dequantized weights.
#include <algorithm>

#include "cuda/kernels/gemv_common.cuh"
#include "cuda/kernels/int4_codec.cuh"

namespace ds::gpu::gemv_detail {
namespace {

constexpr int kChunk = 32;             // weights per 16-byte load
constexpr int kWarpStep = 32 * kChunk;  // weights per warp-wide load round

// acc += scale * (32 weights . 32 x values) for the tile's rows, at tile column c.
template <typename T, int MT>
__device__ __forceinline__ void fma32(const uint4& a, const uint4& b, float sa, float sb, float za, float zb,
                                      const T* xs, int kt_max, int c, int mt, float* acc0, float* acc1) {
  float fa[kChunk], fb[kChunk];
  int4x32_to_f32(a, za, fa);
  int4x32_to_f32(b, zb, fb);
#pragma unroll
  for (int m = 0; m < MT; ++m) {
    if (m < mt) {
      float s0 = 0.f, s1 = 0.f;
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        Chunk8<T> xv;
        xv.load_shared(xs + m * kt_max + c + 8 * q);
        float fx[8];
        xv.to_float(fx);
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          s0 = fmaf(fa[8 * q + e], fx[e], s0);
          s1 = fmaf(fb[8 * q + e], fx[e], s1);
        }
      }
      acc0[m] = fmaf(s0, sa, acc0[m]);
      acc1[m] = fmaf(s1, sb, acc1[m]);
    }
  }
}

template <typename T, typename OutT, GemvEpilogue Epi, int MT, int U>
__global__ void __launch_bounds__(kWarps * 32) gemv_int4_kernel(GemvParams p, int kt_max, int pairs) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* xs = reinterpret_cast<T*>(smem_raw);  // [MT][kt_max]
  pdl_trigger();
  NormPre<T> pre;
  pre.load(p);
  constexpr bool kPair = Epi == GemvEpilogue::SiluMul;
  constexpr int kCols = kPair ? 1 : 2;  // output columns per row pair
  constexpr int kStep = kWarpStep * U;  // row weights per warp iteration
  const int group = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const bool one_tile = kt_max >= p.K;
  const int64_t row_bytes = p.K / 2;
  const uint8_t* W = nullptr;
  const float* S = nullptr;
  const float* Z = nullptr;
  uint4 a[U], b[U];
  auto set_matrix = [&](int64_t m) {
    W = static_cast<const uint8_t*>(p.w) + m * (p.w_matrix_stride / 2);
    S = p.w_scale + m * p.scale_matrix_stride;
    Z = p.w_zero ? p.w_zero + m * p.scale_matrix_stride : nullptr;
  };
  auto pair_rows = [&](int g, int& c0, int& r0, int& r1) {
    c0 = ((blockIdx.x * pairs + g) * kWarps + warp) * kCols;
    if (c0 >= p.N) return false;
    r0 = c0;
    r1 = kPair ? p.N + c0 : min(c0 + 1, p.N - 1);
    return true;
  };
  auto load = [&](int r0, int r1, int k, int kend) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = k + u * kWarpStep + lane * kChunk;
      if (c < kend) {
        a[u] = __ldg(reinterpret_cast<const uint4*>(W + int64_t(r0) * row_bytes + c / 2));
        b[u] = __ldg(reinterpret_cast<const uint4*>(W + int64_t(r1) * row_bytes + c / 2));
      }
    }
  };
  bool preloaded = false;
  auto request_first = [&] {
    int c0, r0, r1;
    if (one_tile && pair_rows(0, c0, r0, r1)) {
      load(r0, r1, 0, p.K);
      preloaded = true;
    }
  };
  if (!p.group_weight) {  // immutable weights: requested before waiting on the previous kernel
    set_matrix(group);
    request_first();
  }
  pdl_wait();
  int row0 = 0, rows = 0;
  if (!group_rows(p, group, row0, rows)) return;
  if (p.group_weight) {
    set_matrix(p.group_weight[group]);
    request_first();
  }
  const T* X = static_cast<const T*>(p.x) + int64_t(group) * p.x_group_stride;
  OutT* Y = static_cast<OutT*>(p.y) + int64_t(group) * p.y_group_stride;
  const int rs = p.scale_row_shift, ks = p.scale_k_shift;
  for (int m0 = 0; m0 < rows; m0 += MT) {
    const int mt = min(MT, rows - m0);
    for (int g = 0; g < pairs; ++g) {
      int c0 = 0, r0 = 0, r1 = 0;
      const bool v = pair_rows(g, c0, r0, r1);
      const int64_t o0 = int64_t(r0 >> rs) * p.scale_ld, o1 = int64_t(r1 >> rs) * p.scale_ld;
      float acc0[MT], acc1[MT];
#pragma unroll
      for (int m = 0; m < MT; ++m) acc0[m] = acc1[m] = 0.f;
      for (int k0 = 0; k0 < p.K; k0 += kt_max) {
        const int kt = min(kt_max, p.K - k0);
        if (g == 0 || !one_tile) load_x_tile(p, xs, kt_max, X, row0 + m0, mt, k0, kt, pre);  // once if all K fits
        if (!v) continue;
        for (int kb = 0; kb < kt; kb += kStep) {
          if (!preloaded) load(r0, r1, k0 + kb, k0 + kt);
          preloaded = false;
#pragma unroll
          for (int u = 0; u < U; ++u) {
            const int c = kb + u * kWarpStep + lane * kChunk;  // tile column
            if (c < kt) {
              const int kc = (k0 + c) >> ks;
              fma32<T, MT>(a[u], b[u], S[o0 + kc], S[o1 + kc], int4_zero_at(Z, o0 + kc), int4_zero_at(Z, o1 + kc), xs,
                           kt_max, c, mt, acc0, acc1);
            }
          }
        }
      }
      if (v) store_cols<OutT, Epi, MT>(p, Y, row0 + m0, mt, c0, kPair || c0 + 1 < p.N, acc0, acc1, lane);
    }
  }
}

// U (16-byte loads per row per lane in flight): the whole row in one round at 1-2 rows where it fits
// (K 1024: 1, K 2304: 3 of which lanes 8..31 use 2), 4 for wider rows; 2 at 4-8 rows.
template <typename T, typename OutT, GemvEpilogue Epi, int MT, int U>
void launch_int4(const GemvParams& p, int pairs, const DeviceContext& ctx) {
  int kt_max = std::min<int>(p.K, kMaxSmem / (MT * int(sizeof(T))));
  if (kt_max < p.K) kt_max = kt_max / kWarpStep * kWarpStep;
  DS_GPU_REQUIRE(!p.norm_weight || kt_max >= p.K, "run_gemv (int4): a fused norm needs the whole row in shared memory");
  const int lpj = p.gate_head_dim / 8;
  DS_GPU_REQUIRE(!p.gate || (p.norm_weight && p.gate_head_dim % 8 == 0 && lpj >= 1 && lpj <= 32 &&
                             (lpj & (lpj - 1)) == 0 && p.K % p.gate_head_dim == 0 && !p.x_rows),
                 "run_gemv (int4): bad gated-norm prologue (head_dim must be 8 x a power of two <= 256)");
  const int cols_per_block = (Epi == GemvEpilogue::SiluMul ? 1 : 2) * kWarps * pairs;
  const dim3 grid(ceil_div(p.N, cols_per_block), unsigned(p.num_groups));
  const size_t smem = size_t(MT) * kt_max * sizeof(T);
  launch_pdl(gemv_int4_kernel<T, OutT, Epi, MT, U>, grid, kWarps * 32, smem, ctx, p, kt_max, pairs);
}

template <typename T, typename OutT, GemvEpilogue Epi, int MT>
void launch_u4(const GemvParams& p, int pairs, const DeviceContext& ctx) {
  if constexpr (MT <= 2) {
    const int chunks = (p.K + kWarpStep - 1) / kWarpStep;  // 16-byte loads per lane over a row
    if (chunks <= 1) launch_int4<T, OutT, Epi, MT, 1>(p, pairs, ctx);
    else if (chunks <= 3) launch_int4<T, OutT, Epi, MT, 3>(p, pairs, ctx);
    else launch_int4<T, OutT, Epi, MT, 4>(p, pairs, ctx);
  } else {
    launch_int4<T, OutT, Epi, MT, 2>(p, pairs, ctx);
  }
}

template <typename T, typename OutT, GemvEpilogue Epi>
void launch_rows4(const GemvParams& p, int pairs, const DeviceContext& ctx) {
  const int mr = std::max(1, std::min(p.group_start ? p.max_rows : p.M, 8));
  if (mr <= 1) launch_u4<T, OutT, Epi, 1>(p, pairs, ctx);
  else if (mr <= 2) launch_u4<T, OutT, Epi, 2>(p, pairs, ctx);
  else if (mr <= 4) launch_u4<T, OutT, Epi, 4>(p, pairs, ctx);
  else launch_u4<T, OutT, Epi, 8>(p, pairs, ctx);
}

template <typename T, typename OutT, GemvEpilogue Epi> void configure_epi_int4() {
  auto small = [&]<int MT>() {
    set_max_dynamic_smem(gemv_int4_kernel<T, OutT, Epi, MT, 1>, kMaxSmem);
    set_max_dynamic_smem(gemv_int4_kernel<T, OutT, Epi, MT, 3>, kMaxSmem);
    set_max_dynamic_smem(gemv_int4_kernel<T, OutT, Epi, MT, 4>, kMaxSmem);
  };
  small.template operator()<1>();
  small.template operator()<2>();
  set_max_dynamic_smem(gemv_int4_kernel<T, OutT, Epi, 4, 2>, kMaxSmem);
  set_max_dynamic_smem(gemv_int4_kernel<T, OutT, Epi, 8, 2>, kMaxSmem);
}

template <typename T> void configure_act_int4() {
  configure_epi_int4<T, float, GemvEpilogue::Store>();
  configure_epi_int4<T, T, GemvEpilogue::Store>();
  configure_epi_int4<T, T, GemvEpilogue::SiluMul>();
  configure_epi_int4<T, T, GemvEpilogue::Accumulate>();
}

// One token's MoE down projection + combine with INT4 experts: a block owns output columns c0, c0 + 1;
// its warps take the k pairs in turn, 32 weights per lane-load.
constexpr int kDcWarpsInt4 = 8;
template <typename T>
__global__ void __launch_bounds__(kDcWarpsInt4 * 32) moe_down_combine_int4_kernel(MoeDownCombineParams p) {
  constexpr int kU = 2;
  __shared__ float part[kDcWarpsInt4][2];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nwarps = blockDim.x >> 5;
  const int c0 = blockIdx.x * 2;
  const bool v1 = c0 + 1 < p.D;
  const int r1 = v1 ? c0 + 1 : c0;
  const int64_t row_bytes = p.I / 2;
  pdl_trigger();
  pdl_wait();
  float acc0 = 0.f, acc1 = 0.f;
  for (int j = warp; j < p.k; j += nwarps) {
    const int e = p.ids[j];
    const uint8_t* W = static_cast<const uint8_t*>(p.w) + int64_t(e) * p.D * row_bytes;
    const int64_t so = int64_t(e) * p.scale_matrix_stride;
    const uint8_t* w0 = W + int64_t(c0) * row_bytes;
    const uint8_t* w1 = W + int64_t(r1) * row_bytes;
    const int64_t o0 = so + int64_t(c0 >> p.scale_row_shift) * p.scale_ld;
    const int64_t o1 = so + int64_t(r1 >> p.scale_row_shift) * p.scale_ld;
    const T* x = static_cast<const T*>(p.act) + int64_t(p.pair_pos[j]) * p.I;
    float t0 = 0.f, t1 = 0.f;
    for (int cb = lane * kChunk; cb < p.I; cb += kWarpStep * kU) {
      uint4 a[kU], b[kU];
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int c = cb + u * kWarpStep;
        if (c < p.I) {
          a[u] = __ldg(reinterpret_cast<const uint4*>(w0 + c / 2));
          b[u] = __ldg(reinterpret_cast<const uint4*>(w1 + c / 2));
        }
      }
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int c = cb + u * kWarpStep;
        if (c < p.I) {
          const int kc = c >> p.scale_k_shift;
          float fa[kChunk], fb[kChunk];
          int4x32_to_f32(a[u], int4_zero_at(p.w_zero, o0 + kc), fa);
          int4x32_to_f32(b[u], int4_zero_at(p.w_zero, o1 + kc), fb);
          float d0 = 0.f, d1 = 0.f;
#pragma unroll
          for (int q = 0; q < 4; ++q) {
            Chunk8<T> xv;
            xv.load_global(x + c + 8 * q);
            float fx[8];
            xv.to_float(fx);
#pragma unroll
            for (int i = 0; i < 8; ++i) {
              d0 = fmaf(fa[8 * q + i], fx[i], d0);
              d1 = fmaf(fb[8 * q + i], fx[i], d1);
            }
          }
          t0 = fmaf(d0, p.w_scale[o0 + kc], t0);
          t1 = fmaf(d1, p.w_scale[o1 + kc], t1);
        }
      }
    }
    const float wj = p.weights[j];
    acc0 = fmaf(wj, t0, acc0);
    acc1 = fmaf(wj, t1, acc1);
  }
  block_sum2(acc0, acc1, part);
  if (threadIdx.x == 0) {
    T* y = static_cast<T*>(p.residual);
    y[c0] = from_f32<T>(to_f32(y[c0]) + acc0);
    if (v1) y[c0 + 1] = from_f32<T>(to_f32(y[c0 + 1]) + acc1);
  }
}

}  // namespace

void run_moe_down_combine_int4(const MoeDownCombineParams& p, DType act, const DeviceContext& ctx) {
  DS_GPU_REQUIRE(p.I % kChunk == 0 && p.w_scale && p.scale_k_shift >= 5 && p.scale_k_shift < 31,
                 "run_moe_down_combine (int4): I a multiple of 32, group scales at least 32 wide");
  dispatch_act(act, [&]<typename T>() {
    launch_pdl(moe_down_combine_int4_kernel<T>, dim3(ceil_div(p.D, 2)), kDcWarpsInt4 * 32, 0, ctx, p);
  });
  DS_CUDA_CHECK_LAUNCH();
}

void configure_gemv_int4() {
  configure_act_int4<float>();
  configure_act_int4<bf16>();
}

void run_gemv_int4(const GemvParams& p, DType act, const DeviceContext& ctx) {
  DS_GPU_REQUIRE(p.K % kChunk == 0, "run_gemv (int4): K must be a multiple of 32");
  DS_GPU_REQUIRE(p.w_scale && p.scale_k_shift >= 5 && p.scale_k_shift < 31 && p.scale_row_shift >= 0 &&
                     p.scale_row_shift < 31 && p.w_matrix_stride % 2 == 0,
                 "run_gemv (int4): group scales at least 32 columns wide, an even matrix stride");
  const int pairs = p.row_pairs > 0 ? p.row_pairs
                                    : choose_gemv_row_pairs(p.N, p.num_groups, ctx.num_sms(), p.epi == GemvEpilogue::SiluMul);
  dispatch_act(act, [&]<typename T>() {
    switch (p.epi) {
      case GemvEpilogue::Store:
        if (p.y_f32) launch_rows4<T, float, GemvEpilogue::Store>(p, pairs, ctx);
        else launch_rows4<T, T, GemvEpilogue::Store>(p, pairs, ctx);
        break;
      case GemvEpilogue::SiluMul: launch_rows4<T, T, GemvEpilogue::SiluMul>(p, pairs, ctx); break;
      case GemvEpilogue::Accumulate: launch_rows4<T, T, GemvEpilogue::Accumulate>(p, pairs, ctx); break;
    }
  });
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace ds::gpu::gemv_detail
