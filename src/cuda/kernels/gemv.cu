// The row-pair GEMV kernels and run_gemv's dispatch (gemv_async.cu and gemv_block.cu hold the
// specialised kernels it picks first when they apply).
#include <algorithm>

#include "cuda/kernels/gemv_common.cuh"

namespace ds::gpu {
namespace {

using namespace gemv_detail;

// The early-load path (whole K in the x tile, every row of the group in one tile): a warp walks its
// `pairs` row pairs as "items" of U chunks of 8 elements per lane, loading each item's chunks before
// using any. The first item is requested before the x tile and its norm are prepared, and for dense
// weights (immutable) before waiting on the previous kernel (PDL). (Measured: also requesting the
// next item's chunks as the current ones are used was slower: lm_head 0.224 vs 0.179 ms.)
template <typename T, typename OutT, GemvEpilogue Epi, int MT, int U>
__device__ __forceinline__ void gemv_pipelined(const GemvParams& p, T* xs, int kt_max, int pairs,
                                               const NormPre<T>& pre) {
  const int group = blockIdx.y, lane = threadIdx.x & 31;
  constexpr bool kPair = Epi == GemvEpilogue::SiluMul;
  constexpr int kStep = 256 * U;  // elements of a row per item
  const int iters = (p.K + kStep - 1) / kStep;
  const int items = pairs * iters;
  const T* W = nullptr;
  Chunk8<T> a[U], b[U];
  // item j: the warp's row pair and this lane's first column; false when the columns are past N
  auto item = [&](int j, const T*& w0, const T*& w1, int& cb, int& c0) {
    return row_pair_item<T, kPair, U>(p, W, pairs, iters, j, w0, w1, cb, c0);
  };
  auto request_first = [&] {
    const T *w0 = nullptr, *w1 = nullptr;
    int cb = 0, c0 = 0;
    if (!item(0, w0, w1, cb, c0)) return;
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (cb + u * 256 < p.K) {
        a[u].load_global(w0 + cb + u * 256);
        b[u].load_global(w1 + cb + u * 256);
      }
  };
  if (!p.group_weight) {
    W = static_cast<const T*>(p.w) + int64_t(group) * p.w_matrix_stride;
    request_first();
  }
  pdl_wait();
  int row0 = 0, rows = 0;
  if (!group_rows(p, group, row0, rows)) return;
  if (p.group_weight) {
    W = static_cast<const T*>(p.w) + int64_t(p.group_weight[group]) * p.w_matrix_stride;
    request_first();
  }
  const T* X = static_cast<const T*>(p.x) + int64_t(group) * p.x_group_stride;
  OutT* Y = static_cast<OutT*>(p.y) + int64_t(group) * p.y_group_stride;
  load_x_tile(p, xs, kt_max, X, row0, rows, 0, p.K, pre);
  float acc0[MT], acc1[MT];
#pragma unroll
  for (int m = 0; m < MT; ++m) acc0[m] = acc1[m] = 0.f;
  for (int j = 0; j < items; ++j) {
    const T *w0 = nullptr, *w1 = nullptr;
    int cb = 0, c0 = 0;
    const bool ok = item(j, w0, w1, cb, c0);
    if (ok && j > 0) {  // item 0 was requested up front
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (cb + u * 256 < p.K) {
          a[u].load_global(w0 + cb + u * 256);
          b[u].load_global(w1 + cb + u * 256);
        }
    }
    if (ok) {
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (cb + u * 256 < p.K) fma_chunk<T, MT>(a[u], b[u], xs, kt_max, cb + u * 256, rows, acc0, acc1);
    }
    if ((j + 1) % iters == 0) {  // the row pair is done
      if (ok) store_cols<OutT, Epi, MT>(p, Y, row0, rows, c0, kPair || c0 + 1 < p.N, acc0, acc1, lane);
#pragma unroll
      for (int m = 0; m < MT; ++m) acc0[m] = acc1[m] = 0.f;
    }
  }
}

// The general path: a warp streams `pairs` pairs of weight rows (Store/Accumulate: output columns c,
// c+1; SiluMul: gate row c and up row N + c of output column c) against up to MT rows of x held in
// shared memory, K in tiles of kt_max. U chunks of 8 elements per row per lane are loaded before any
// is used. `pipelined`: take gemv_pipelined instead (the host checks that it applies).
template <typename T, typename OutT, GemvEpilogue Epi, int MT, int U>
__global__ void __launch_bounds__(kWarps * 32) gemv_kernel(GemvParams p, int kt_max, int pairs, bool pipelined) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* xs = reinterpret_cast<T*>(smem_raw);  // [MT][kt_max]
  pdl_trigger();
  NormPre<T> pre;
  pre.load(p);
  if (pipelined) {
    gemv_pipelined<T, OutT, Epi, MT, U>(p, xs, kt_max, pairs, pre);
    return;
  }
  const int group = blockIdx.y;
  pdl_wait();
  int row0 = 0, rows = 0;
  if (!group_rows(p, group, row0, rows)) return;
  const int wg = p.group_weight ? p.group_weight[group] : group;
  const T* W = static_cast<const T*>(p.w) + int64_t(wg) * p.w_matrix_stride;
  const T* X = static_cast<const T*>(p.x) + int64_t(group) * p.x_group_stride;
  OutT* Y = static_cast<OutT*>(p.y) + int64_t(group) * p.y_group_stride;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  constexpr bool kPair = Epi == GemvEpilogue::SiluMul;
  constexpr int kCols = kPair ? 1 : 2;  // output columns per row pair

  for (int m0 = 0; m0 < rows; m0 += MT) {
    const int mt = min(MT, rows - m0);
    for (int g = 0; g < pairs; ++g) {
      const int c0 = ((blockIdx.x * pairs + g) * kWarps + warp) * kCols;  // first output column
      const bool v0 = c0 < p.N, v1 = kPair ? v0 : c0 + 1 < p.N;
      const T* w0 = W + int64_t(v0 ? c0 : 0) * p.K;
      const T* w1 = W + int64_t(kPair ? (v0 ? p.N + c0 : 0) : (v1 ? c0 + 1 : 0)) * p.K;
      float acc0[MT], acc1[MT];
#pragma unroll
      for (int m = 0; m < MT; ++m) acc0[m] = acc1[m] = 0.f;
      for (int k0 = 0; k0 < p.K; k0 += kt_max) {
        const int kt = min(kt_max, p.K - k0);
        if (g == 0 || kt_max < p.K) load_x_tile(p, xs, kt_max, X, row0 + m0, mt, k0, kt, pre);  // once if all K fits
        if (!v0) continue;
        for (int cb = lane * 8; cb < kt; cb += 256 * U) {
          Chunk8<T> a[U], b[U];
#pragma unroll
          for (int u = 0; u < U; ++u) {
            const int c = cb + u * 256;
            if (c < kt) {
              if (p.stream_hint) {
                a[u].load_stream(w0 + k0 + c);
                b[u].load_stream(w1 + k0 + c);
              } else {
                a[u].load_global(w0 + k0 + c);
                b[u].load_global(w1 + k0 + c);
              }
            }
          }
#pragma unroll
          for (int u = 0; u < U; ++u) {
            const int c = cb + u * 256;
            if (c < kt) fma_chunk<T, MT>(a[u], b[u], xs, kt_max, c, mt, acc0, acc1);
          }
        }
      }
      if (v0) store_cols<OutT, Epi, MT>(p, Y, row0 + m0, mt, c0, v1, acc0, acc1, lane);
    }
  }
}


template <typename T, typename OutT, GemvEpilogue Epi, int MT, int U>
void launch_mtu(const GemvParams& p, int pairs, const DeviceContext& ctx) {
  int kt_max = std::min<int>(p.K, kMaxSmem / (MT * int(sizeof(T))));
  DS_GPU_REQUIRE(!p.norm_weight || kt_max >= p.K, "run_gemv: a fused norm needs the whole row in shared memory");
  const int lpj = p.gate_head_dim / 8;  // lanes per head in the gated-norm prologue: a power of two <= 32
  DS_GPU_REQUIRE(!p.gate || (p.norm_weight && p.gate_head_dim % 8 == 0 && lpj >= 1 && lpj <= 32 &&
                             (lpj & (lpj - 1)) == 0 && p.K % p.gate_head_dim == 0 && !p.x_rows),
                 "run_gemv: bad gated-norm prologue (head_dim must be 8 x a power of two <= 256)");
  kt_max = kt_max / 8 * 8;
  const int cols_per_warp = Epi == GemvEpilogue::SiluMul ? 1 : 2;
  const int cols_per_block = cols_per_warp * kWarps * pairs;
  dim3 grid(ceil_div(p.N, cols_per_block), unsigned(p.num_groups));
  size_t smem = size_t(MT) * kt_max * sizeof(T);
  auto kern = gemv_kernel<T, OutT, Epi, MT, U>;
  // the pipelined path needs all of K in the tile and every row of a group in one pass
  const int row_bound = p.group_start ? p.max_rows : p.M;
  const bool pipelined = p.pipelined && !p.stream_hint && kt_max >= p.K && row_bound <= MT;
  launch_pdl(kern, grid, kWarps * 32, smem, ctx, p, kt_max, pairs, pipelined);
}

// U: 8-element chunks per row per lane in flight; small batches load a whole 2304-wide row at once.
template <typename T, typename OutT, GemvEpilogue Epi, int MT>
void launch_mt(const GemvParams& p, int pairs, const DeviceContext& ctx) {
  if constexpr (MT <= 2) {
    const int chunks = (p.K + 255) / 256;
    if (chunks == 9) launch_mtu<T, OutT, Epi, MT, 9>(p, pairs, ctx);
    else if (chunks <= 4) launch_mtu<T, OutT, Epi, MT, 4>(p, pairs, ctx);  // fewer registers, more warps
    else launch_mtu<T, OutT, Epi, MT, 8>(p, pairs, ctx);
  } else {
    launch_mtu<T, OutT, Epi, MT, 4>(p, pairs, ctx);
  }
}

template <typename T, typename OutT, GemvEpilogue Epi>
void launch(const GemvParams& p, int pairs, const DeviceContext& ctx) {
  int mr = std::max(1, std::min(p.group_start ? p.max_rows : p.M, 8));
  if (mr <= 1) launch_mt<T, OutT, Epi, 1>(p, pairs, ctx);
  else if (mr <= 2) launch_mt<T, OutT, Epi, 2>(p, pairs, ctx);
  else if (mr <= 4) launch_mt<T, OutT, Epi, 4>(p, pairs, ctx);
  else launch_mt<T, OutT, Epi, 8>(p, pairs, ctx);
}

// Every instance launch() can pick for one (T, OutT, Epi): the x-tile heights and their unroll factors.
template <typename T, typename OutT, GemvEpilogue Epi> void configure_epi() {
  auto mt = [&]<int MT>() {
    if constexpr (MT <= 2) {
      set_max_dynamic_smem(gemv_kernel<T, OutT, Epi, MT, 9>, kMaxSmem);
      set_max_dynamic_smem(gemv_kernel<T, OutT, Epi, MT, 4>, kMaxSmem);
      set_max_dynamic_smem(gemv_kernel<T, OutT, Epi, MT, 8>, kMaxSmem);
    } else {
      set_max_dynamic_smem(gemv_kernel<T, OutT, Epi, MT, 4>, kMaxSmem);
    }
  };
  mt.template operator()<1>();
  mt.template operator()<2>();
  mt.template operator()<4>();
  mt.template operator()<8>();
}

template <typename T> void configure_act() {
  configure_epi<T, float, GemvEpilogue::Store>();
  configure_epi<T, T, GemvEpilogue::Store>();
  configure_epi<T, T, GemvEpilogue::SiluMul>();
  configure_epi<T, T, GemvEpilogue::Accumulate>();
}

}  // namespace

using gemv_detail::kWarps;

void configure_gemv(const DeviceContext& ctx) {
  configure_act<float>();
  configure_act<bf16>();
  gemv_detail::configure_gemv_async();
  gemv_detail::configure_gemv_fp8();
  gemv_detail::configure_gemv_fp8_mma();
  gemv_detail::configure_gemv_int4();
  gemv_detail::configure_moe_down_combine_staged(ctx);
  gemv_detail::configure_moe_gate_up_staged(ctx);
}

int choose_gemv_row_pairs(int out_cols, int num_groups, int num_sms, bool silu_mul) {
  // aim for >= 6 blocks per SM; fewer, longer-lived warps amortise the x-tile prologue (bench sweep:
  // the batch-1 expert gate/up GEMV is best at 2 pairs, the KDA input projection at 1-4; one wave of
  // longer-lived blocks with the next row pairs prefetched into L2 was slower: lm_head 0.235 ms)
  const int cols_per_pair = (silu_mul ? 1 : 2) * kWarps;
  const int64_t blocks_at_1 = int64_t((out_cols + cols_per_pair - 1) / cols_per_pair) * std::max(1, num_groups);
  int g = 1;
  while (g < 8 && blocks_at_1 / (2 * g) >= int64_t(6) * num_sms) g *= 2;
  return g;
}


void run_gemv(const GemvParams& p, DType act, const DeviceContext& ctx) {
  if (p.num_groups == 0 || p.N == 0) return;
  DS_GPU_REQUIRE(p.K % 8 == 0 && p.K > 0, "run_gemv: K must be a positive multiple of 8");
  DS_GPU_REQUIRE(p.num_groups <= 65535, "run_gemv: too many groups");
  DS_GPU_REQUIRE(!(p.y_f32 && p.epi != GemvEpilogue::Store), "run_gemv: fp32 output only with Store");
  if (gemv_detail::run_moe_gate_up_staged(p, act, ctx)) return;  // (one token's quantized experts, the switch)
  if (p.w_int4) {
    gemv_detail::run_gemv_int4(p, act, ctx);
    return;
  }
  if (p.w_scale) {  // FP8: one row per group on the tensor cores (switch) or through the cp.async ring, the
                    // rest the FP8 kernels
    if (gemv_detail::run_gemv_fp8_mma(p, act, ctx)) return;
    if (!gemv_detail::run_gemv_async(p, act, ctx.num_sms(), ctx)) gemv_detail::run_gemv_fp8(p, act, ctx);
    return;
  }
  const int num_sms = ctx.num_sms();
  const int pairs = p.row_pairs > 0 ? p.row_pairs
                                    : choose_gemv_row_pairs(p.N, p.num_groups, num_sms, p.epi == GemvEpilogue::SiluMul);
  if (gemv_detail::run_gemv_small_k(p, act, ctx) || gemv_detail::run_gemv_async(p, act, num_sms, ctx) ||
      gemv_detail::run_gemv_splitk(p, act, num_sms, ctx))
    return;
  dispatch_act(act, [&]<typename T>() {
    switch (p.epi) {
      case GemvEpilogue::Store:
        if (p.y_f32) launch<T, float, GemvEpilogue::Store>(p, pairs, ctx);
        else launch<T, T, GemvEpilogue::Store>(p, pairs, ctx);
        break;
      case GemvEpilogue::SiluMul: launch<T, T, GemvEpilogue::SiluMul>(p, pairs, ctx); break;
      case GemvEpilogue::Accumulate: launch<T, T, GemvEpilogue::Accumulate>(p, pairs, ctx); break;
    }
  });
  DS_CUDA_CHECK_LAUNCH();
}


}  // namespace ds::gpu
