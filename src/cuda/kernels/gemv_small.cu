// The GEMV for one row of x against many short weight rows (K <= 1024; the MLA absorb / unabsorb
// projections over 32 heads, KDA f_b / g_b): a warp takes a run of rows of one group and requests all of
// them at once, a row split over L lanes (K / 8 chunks of 8, CPL per lane), so every load of the kernel
// is in flight in one round and no lane idles on a short row (the row-pair kernels put a whole warp on
// two rows: half the lanes idle at K = 128, and their rings hold 512-byte items). See gemv_common.cuh.
#include <algorithm>

#include "cuda/kernels/gemv_common.cuh"

namespace ds::gpu::gemv_detail {
namespace {

constexpr int kSmallWarps = 4;
// 8-element chunks per lane in flight: 16 x 16 bytes (bf16), 8 x 32 bytes (fp32)
template <typename T> constexpr int small_chunks() { return sizeof(T) == 2 ? 16 : 8; }
template <typename T, int L, int CPL> constexpr int small_rows_per_warp() { return (32 / L) * (small_chunks<T>() / CPL); }

template <typename T, typename OutT, GemvEpilogue Epi, int L, int CPL>
__global__ void __launch_bounds__(kSmallWarps * 32) gemv_small_k_kernel(GemvParams p) {
  constexpr int RPI = 32 / L, RPW = small_rows_per_warp<T, L, CPL>(), NR = RPW / RPI;
  const int lane = threadIdx.x & 31, sub = lane / L, li = lane % L;
  const int gw = blockIdx.x * kSmallWarps + (threadIdx.x >> 5);
  const int wps = (p.N + RPW - 1) / RPW;  // warps per group
  const int group = gw / wps, r0 = (gw - group * wps) * RPW;
  const bool active = group < p.num_groups;
  Chunk8<T> w[NR][CPL];
  const T* W = nullptr;
  auto load = [&] {
#pragma unroll
    for (int i = 0; i < NR; ++i) {
      const int r = r0 + sub + RPI * i;
      if (r < p.N) {
#pragma unroll
        for (int c = 0; c < CPL; ++c) w[i][c].load_global(W + int64_t(r) * p.K + (li + L * c) * 8);
      }
    }
  };
  pdl_trigger();
  if (active && !p.group_weight) {  // dense weights are immutable: request them before the wait
    W = static_cast<const T*>(p.w) + int64_t(group) * p.w_matrix_stride;
    load();
  }
  pdl_wait();
  if (!active || (p.num_active && group >= *p.num_active)) return;
  if (p.group_weight) {
    W = static_cast<const T*>(p.w) + int64_t(p.group_weight[group]) * p.w_matrix_stride;
    load();
  }
  const T* X = static_cast<const T*>(p.x) + int64_t(group) * p.x_group_stride;
  float fx[CPL][8];
#pragma unroll
  for (int c = 0; c < CPL; ++c) {
    Chunk8<T> xv;
    xv.load_global(X + (li + L * c) * 8);
    xv.to_float(fx[c]);
  }
  OutT* Y = static_cast<OutT*>(p.y) + int64_t(group) * p.y_group_stride;
#pragma unroll
  for (int i = 0; i < NR; ++i) {
    const int r = r0 + sub + RPI * i;
    float acc = 0.f;
    if (r < p.N) {
#pragma unroll
      for (int c = 0; c < CPL; ++c) {
        float fw[8];
        w[i][c].to_float(fw);
#pragma unroll
        for (int e = 0; e < 8; ++e) acc = fmaf(fw[e], fx[c][e], acc);
      }
    }
#pragma unroll
    for (int o = L / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);  // within the L lanes
    if (li == 0 && r < p.N) {
      if constexpr (Epi == GemvEpilogue::Accumulate) Y[r] = from_f32<OutT>(to_f32(Y[r]) + acc);
      else Y[r] = from_f32<OutT>(acc);
    }
  }
}

// Applies to one row per group (no row ranges, gather or fused norm), Store / Accumulate, K of 128, 256,
// 512, 768 or 1024, and a small matrix (larger ones stream through the cp.async ring).
bool small_k_applies(const GemvParams& p) {
  const double bytes = double(p.N) * p.K * 2 * std::max(1, p.num_groups);
  return p.pipelined && p.M == 1 && !p.group_start && !p.x_rows && !p.norm_weight && !p.gate && !p.stream_hint &&
         p.epi != GemvEpilogue::SiluMul &&
         (p.K == 128 || p.K == 256 || p.K == 512 || p.K == 768 || p.K == 1024) && bytes <= 32e6;
}

template <typename T, typename OutT, GemvEpilogue Epi, int L, int CPL>
void launch_small(const GemvParams& p, const DeviceContext& ctx) {
  constexpr int RPW = small_rows_per_warp<T, L, CPL>();
  const int64_t warps = int64_t(p.num_groups) * ((p.N + RPW - 1) / RPW);
  launch_pdl(gemv_small_k_kernel<T, OutT, Epi, L, CPL>, dim3(ceil_div(warps, kSmallWarps)), kSmallWarps * 32, 0, ctx, p);
}

// K / 8 chunks per row: 16 (K 128) over 16 lanes, else over 32 lanes with K / 256 chunks each.
template <typename T, typename OutT, GemvEpilogue Epi>
void launch_small_k(const GemvParams& p, const DeviceContext& ctx) {
  switch (p.K) {
    case 128: launch_small<T, OutT, Epi, 16, 1>(p, ctx); break;
    case 256: launch_small<T, OutT, Epi, 32, 1>(p, ctx); break;
    case 512: launch_small<T, OutT, Epi, 32, 2>(p, ctx); break;
    case 768: launch_small<T, OutT, Epi, 32, 3>(p, ctx); break;
    default: launch_small<T, OutT, Epi, 32, 4>(p, ctx); break;  // 1024
  }
}

}  // namespace

bool run_gemv_small_k(const GemvParams& p, DType act, const DeviceContext& ctx) {
  if (!small_k_applies(p)) return false;
  DS_GPU_REQUIRE(reinterpret_cast<uintptr_t>(p.x) % 16 == 0 && p.x_group_stride * int64_t(dtype_size(act)) % 16 == 0 &&
                     reinterpret_cast<uintptr_t>(p.w) % 16 == 0 && p.w_matrix_stride * int64_t(dtype_size(act)) % 16 == 0,
                 "run_gemv: x and weight rows must be 16-byte aligned");
  dispatch_act(act, [&]<typename T>() {
    if (p.epi == GemvEpilogue::Accumulate) launch_small_k<T, T, GemvEpilogue::Accumulate>(p, ctx);
    else if (p.y_f32) launch_small_k<T, float, GemvEpilogue::Store>(p, ctx);
    else launch_small_k<T, T, GemvEpilogue::Store>(p, ctx);
  });
  DS_CUDA_CHECK_LAUNCH();
  return true;
}

}  // namespace ds::gpu::gemv_detail
