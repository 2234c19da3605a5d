// The GEMV kernels for FP8 (e4m3fn) weights with scales (GemvParams::w_scale): one kernel family for
// every case run_gemv takes (dense and grouped, all epilogues, the fused RMSNorm and KDA output-norm
// prologues, any number of rows). A warp streams pairs of weight rows as 16-byte loads (16 weights per
// lane), U loads per row in flight, against up to MT rows of x in shared memory; each 16-weight chunk
// lies in one scale block, so its partial dot product is scaled once. The first chunks of a dense
// weight are requested before PDL's wait and before the x tile is loaded (when all of K fits the tile).
#include <algorithm>

#include "cuda/kernels/gemv_common.cuh"

namespace ds::gpu::gemv_detail {
namespace {

template <typename T, typename OutT, GemvEpilogue Epi, int MT, int U>
__global__ void __launch_bounds__(kWarps * 32) gemv_fp8_kernel(GemvParams p, int kt_max, int pairs) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* xs = reinterpret_cast<T*>(smem_raw);  // [MT][kt_max]
  pdl_trigger();
  NormPre<T> pre;
  pre.load(p);
  constexpr bool kPair = Epi == GemvEpilogue::SiluMul;
  constexpr int kCols = kPair ? 1 : 2;  // output columns per row pair
  constexpr int kStep = 512 * U;        // row elements per warp iteration
  const int group = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const bool one_tile = kt_max >= p.K;
  const uint8_t* W = nullptr;
  const float* S = nullptr;
  uint4 a[U], b[U];
  auto set_matrix = [&](int64_t m) {
    W = static_cast<const uint8_t*>(p.w) + m * p.w_matrix_stride;
    S = p.w_scale + m * p.scale_matrix_stride;
  };
  // pair g of this warp: first output column and its two weight rows; false past N
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
      const int c = k + u * 512 + lane * 16;
      if (c < kend) {
        a[u] = __ldg(reinterpret_cast<const uint4*>(W + int64_t(r0) * p.K + c));
        b[u] = __ldg(reinterpret_cast<const uint4*>(W + int64_t(r1) * p.K + c));
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
      const float* s0 = S + int64_t(r0 >> rs) * p.scale_ld;
      const float* s1 = S + int64_t(r1 >> rs) * p.scale_ld;
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
            const int c = kb + u * 512 + lane * 16;  // tile column
            if (c < kt) {
              const int kc = (k0 + c) >> ks;
              fma_fp8_chunk<T, MT>(a[u], b[u], s0[kc], s1[kc], xs, kt_max, c, mt, acc0, acc1);
            }
          }
        }
      }
      if (v) store_cols<OutT, Epi, MT>(p, Y, row0 + m0, mt, c0, kPair || c0 + 1 < p.N, acc0, acc1, lane);
    }
  }
}

// U (16-byte loads per row per lane in flight): one round over the row where it fits at 1-2 rows
// (K 1024: 2, K 2304: 5 of which lanes 16..31 use 4), 8 for wider rows; 4 at 4-8 rows.
template <typename T, typename OutT, GemvEpilogue Epi, int MT, int U>
void launch_fp8(const GemvParams& p, int pairs, const DeviceContext& ctx) {
  int kt_max = std::min<int>(p.K, kMaxSmem / (MT * int(sizeof(T))));
  if (kt_max < p.K) kt_max = kt_max / 512 * 512;
  DS_GPU_REQUIRE(!p.norm_weight || kt_max >= p.K, "run_gemv (fp8): a fused norm needs the whole row in shared memory");
  const int lpj = p.gate_head_dim / 8;
  DS_GPU_REQUIRE(!p.gate || (p.norm_weight && p.gate_head_dim % 8 == 0 && lpj >= 1 && lpj <= 32 &&
                             (lpj & (lpj - 1)) == 0 && p.K % p.gate_head_dim == 0 && !p.x_rows),
                 "run_gemv (fp8): bad gated-norm prologue (head_dim must be 8 x a power of two <= 256)");
  const int cols_per_block = (Epi == GemvEpilogue::SiluMul ? 1 : 2) * kWarps * pairs;
  const dim3 grid(ceil_div(p.N, cols_per_block), unsigned(p.num_groups));
  const size_t smem = size_t(MT) * kt_max * sizeof(T);
  launch_pdl(gemv_fp8_kernel<T, OutT, Epi, MT, U>, grid, kWarps * 32, smem, ctx, p, kt_max, pairs);
}

template <typename T, typename OutT, GemvEpilogue Epi, int MT>
void launch_u(const GemvParams& p, int pairs, const DeviceContext& ctx) {
  if constexpr (MT <= 2) {
    const int chunks = (p.K + 511) / 512;  // 16-byte loads per lane over a row
    if (chunks <= 2) launch_fp8<T, OutT, Epi, MT, 2>(p, pairs, ctx);
    else if (chunks <= 5) launch_fp8<T, OutT, Epi, MT, 5>(p, pairs, ctx);
    else launch_fp8<T, OutT, Epi, MT, 8>(p, pairs, ctx);
  } else {
    launch_fp8<T, OutT, Epi, MT, 4>(p, pairs, ctx);
  }
}

template <typename T, typename OutT, GemvEpilogue Epi>
void launch_rows(const GemvParams& p, int pairs, const DeviceContext& ctx) {
  const int mr = std::max(1, std::min(p.group_start ? p.max_rows : p.M, 8));
  if (mr <= 1) launch_u<T, OutT, Epi, 1>(p, pairs, ctx);
  else if (mr <= 2) launch_u<T, OutT, Epi, 2>(p, pairs, ctx);
  else if (mr <= 4) launch_u<T, OutT, Epi, 4>(p, pairs, ctx);
  else launch_u<T, OutT, Epi, 8>(p, pairs, ctx);
}

template <typename T, typename OutT, GemvEpilogue Epi> void configure_epi_fp8() {
  auto small = [&]<int MT>() {
    set_max_dynamic_smem(gemv_fp8_kernel<T, OutT, Epi, MT, 2>, kMaxSmem);
    set_max_dynamic_smem(gemv_fp8_kernel<T, OutT, Epi, MT, 5>, kMaxSmem);
    set_max_dynamic_smem(gemv_fp8_kernel<T, OutT, Epi, MT, 8>, kMaxSmem);
  };
  small.template operator()<1>();
  small.template operator()<2>();
  set_max_dynamic_smem(gemv_fp8_kernel<T, OutT, Epi, 4, 4>, kMaxSmem);
  set_max_dynamic_smem(gemv_fp8_kernel<T, OutT, Epi, 8, 4>, kMaxSmem);
}

template <typename T> void configure_act_fp8() {
  configure_epi_fp8<T, float, GemvEpilogue::Store>();
  configure_epi_fp8<T, T, GemvEpilogue::Store>();
  configure_epi_fp8<T, T, GemvEpilogue::SiluMul>();
  configure_epi_fp8<T, T, GemvEpilogue::Accumulate>();
}

// One token's MoE down projection + combine with FP8 experts (run_moe_down_combine's FP8 form): a
// block owns output columns c0, c0 + 1; its warps take the k pairs in turn, 16 weights per lane-load.
constexpr int kDcWarpsFp8 = 8;
template <typename T>
__global__ void __launch_bounds__(kDcWarpsFp8 * 32) moe_down_combine_fp8_kernel(MoeDownCombineParams p) {
  constexpr int kU = 2;
  __shared__ float part[kDcWarpsFp8][2];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nwarps = blockDim.x >> 5;
  const int c0 = blockIdx.x * 2;
  const bool v1 = c0 + 1 < p.D;
  const int r1 = v1 ? c0 + 1 : c0;
  pdl_trigger();
  pdl_wait();
  float acc0 = 0.f, acc1 = 0.f;
  for (int j = warp; j < p.k; j += nwarps) {
    const int e = p.ids[j];
    const uint8_t* W = static_cast<const uint8_t*>(p.w) + int64_t(e) * p.D * p.I;
    const float* S = p.w_scale + int64_t(e) * p.scale_matrix_stride;
    const uint8_t* w0 = W + int64_t(c0) * p.I;
    const uint8_t* w1 = W + int64_t(r1) * p.I;
    const float* s0 = S + int64_t(c0 >> p.scale_row_shift) * p.scale_ld;
    const float* s1 = S + int64_t(r1 >> p.scale_row_shift) * p.scale_ld;
    const T* x = static_cast<const T*>(p.act) + int64_t(p.pair_pos[j]) * p.I;
    float t0 = 0.f, t1 = 0.f;
    for (int cb = lane * 16; cb < p.I; cb += 512 * kU) {
      uint4 a[kU], b[kU];
      Chunk8<T> xa[kU], xb[kU];
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int c = cb + u * 512;
        if (c < p.I) {
          a[u] = __ldg(reinterpret_cast<const uint4*>(w0 + c));
          b[u] = __ldg(reinterpret_cast<const uint4*>(w1 + c));
          xa[u].load_global(x + c);
          xb[u].load_global(x + c + 8);
        }
      }
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int c = cb + u * 512;
        if (c < p.I) {
          float fa[16], fb[16], fx[16];
          from_e4m3x16(a[u], fa);
          from_e4m3x16(b[u], fb);
          xa[u].to_float(fx);
          xb[u].to_float(fx + 8);
          float d0 = 0.f, d1 = 0.f;
#pragma unroll
          for (int q = 0; q < 16; ++q) {
            d0 = fmaf(fa[q], fx[q], d0);
            d1 = fmaf(fb[q], fx[q], d1);
          }
          t0 = fmaf(d0, s0[c >> p.scale_k_shift], t0);
          t1 = fmaf(d1, s1[c >> p.scale_k_shift], t1);
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

void run_moe_down_combine_fp8(const MoeDownCombineParams& p, DType act, const DeviceContext& ctx) {
  DS_GPU_REQUIRE(p.I % 16 == 0 && p.scale_k_shift >= 4, "run_moe_down_combine (fp8): I a multiple of 16, scale blocks >= 16 wide");
  dispatch_act(act, [&]<typename T>() {
    launch_pdl(moe_down_combine_fp8_kernel<T>, dim3(ceil_div(p.D, 2)), kDcWarpsFp8 * 32, 0, ctx, p);
  });
  DS_CUDA_CHECK_LAUNCH();
}

void configure_gemv_fp8() {
  configure_act_fp8<float>();
  configure_act_fp8<bf16>();
}

void run_gemv_fp8(const GemvParams& p, DType act, const DeviceContext& ctx) {
  DS_GPU_REQUIRE(p.K % 16 == 0, "run_gemv (fp8): K must be a multiple of 16");
  DS_GPU_REQUIRE(p.scale_k_shift >= 4 && p.scale_row_shift >= 0 && p.scale_row_shift < 31,
                 "run_gemv (fp8): scale blocks must be at least 16 columns wide");
  const int pairs = p.row_pairs > 0 ? p.row_pairs
                                    : choose_gemv_row_pairs(p.N, p.num_groups, ctx.num_sms(), p.epi == GemvEpilogue::SiluMul);
  dispatch_act(act, [&]<typename T>() {
    switch (p.epi) {
      case GemvEpilogue::Store:
        if (p.y_f32) launch_rows<T, float, GemvEpilogue::Store>(p, pairs, ctx);
        else launch_rows<T, T, GemvEpilogue::Store>(p, pairs, ctx);
        break;
      case GemvEpilogue::SiluMul: launch_rows<T, T, GemvEpilogue::SiluMul>(p, pairs, ctx); break;
      case GemvEpilogue::Accumulate: launch_rows<T, T, GemvEpilogue::Accumulate>(p, pairs, ctx); break;
    }
  });
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace ds::gpu::gemv_detail
