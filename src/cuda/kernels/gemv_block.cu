// The block-reduced GEMV kernels (several warps share each output column pair and meet in shared
// memory): split-K for one row of x, and the MoE down projection + weighted combine for one token.
#include <algorithm>

#include "cuda/kernels/gemv_common.cuh"

namespace ds::gpu {
namespace gemv_detail {
namespace {

// MoeDownCombineParams: a block of one warp per expert (up to kDcWarps) owns two output columns; warp
// w takes experts j = w, w + nwarps, ... and loads, per lane, 4 chunks of 8 of both weight rows and of
// the activation row (no shared tile: one round of loads when k <= kDcWarps); the warps' weighted
// partial sums meet in shared memory. (Measured at 9 experts: 8 warps, one doing two rounds, 17.6 us;
// 9 warps, one round each, 20.2 us.) The pair whose expert the host knows (p.known_pair: the shared
// expert) has its weight rows copied into shared memory before the wait, so the warp that takes it
// (warp 0, after its routed expert) does not wait a second round trip.
constexpr int kDcWarps = 8;
template <typename T>
__global__ void __launch_bounds__(kDcWarps * 32) moe_down_combine_kernel(MoeDownCombineParams p) {
  constexpr int kU = 4;
  __shared__ float part[kDcWarps][2];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nwarps = blockDim.x >> 5;
  const int c0 = blockIdx.x * 2;
  const bool v1 = c0 + 1 < p.D;
  const int64_t ge = int64_t(p.D) * p.I;  // elements per expert
  constexpr int W = Chunk8<T>::W;
  __shared__ uint4 known_rows[2][kU][W][32];  // the known pair's two rows, each lane its own chunks
  const int kn = p.known_pair >= 0 && p.known_pair < p.k && p.I <= 256 * kU ? p.known_pair : -1;
  auto wrow = [&](int e, int r) {
    return static_cast<const T*>(p.w) + int64_t(e) * ge + int64_t(r == 0 || v1 ? c0 + r : c0) * p.I;
  };
  pdl_trigger();
  if (kn >= 0 && warp == kn % nwarps) {  // weights are immutable: the known expert's before the wait
    const T* w0 = wrow(p.known_expert, 0);
    const T* w1 = wrow(p.known_expert, 1);
#pragma unroll
    for (int u = 0; u < kU; ++u)
      if (lane * 8 + u * 256 < p.I) {
#pragma unroll
        for (int q = 0; q < W; ++q) {
          cp_async16(&known_rows[0][u][q][lane], reinterpret_cast<const uint4*>(w0 + lane * 8 + u * 256) + q);
          cp_async16(&known_rows[1][u][q][lane], reinterpret_cast<const uint4*>(w1 + lane * 8 + u * 256) + q);
        }
      }
    cp_async_commit();
  }
  pdl_wait();
  float acc0 = 0.f, acc1 = 0.f;
  for (int j = warp; j < p.k; j += nwarps) {
    const T* w0 = wrow(p.ids[j], 0);
    const T* w1 = wrow(p.ids[j], 1);
    const T* x = static_cast<const T*>(p.act) + int64_t(p.pair_pos[j]) * p.I;
    const float wj = p.weights[j];
    float s0 = 0.f, s1 = 0.f;
    for (int cb = lane * 8; cb < p.I; cb += 256 * kU) {
      Chunk8<T> a[kU], b[kU], xv[kU];
      if (j == kn) cp_async_wait<0>();  // (one round: cb is this lane's first chunk)
#pragma unroll
      for (int u = 0; u < kU; ++u)
        if (cb + u * 256 < p.I) {
          if (j == kn) {
#pragma unroll
            for (int q = 0; q < W; ++q) {
              a[u].r[q] = known_rows[0][u][q][lane];
              b[u].r[q] = known_rows[1][u][q][lane];
            }
          } else {
            a[u].load_global(w0 + cb + u * 256);
            b[u].load_global(w1 + cb + u * 256);
          }
          xv[u].load_global(x + cb + u * 256);
        }
#pragma unroll
      for (int u = 0; u < kU; ++u)
        if (cb + u * 256 < p.I) {
          float fa[8], fb[8], fx[8];
          a[u].to_float(fa);
          b[u].to_float(fb);
          xv[u].to_float(fx);
#pragma unroll
          for (int e = 0; e < 8; ++e) {
            s0 = fmaf(fa[e], fx[e], s0);
            s1 = fmaf(fb[e], fx[e], s1);
          }
        }
    }
    acc0 = fmaf(wj, s0, acc0);
    acc1 = fmaf(wj, s1, acc1);
  }
  block_sum2(acc0, acc1, part);
  if (threadIdx.x == 0) {
    T* y = static_cast<T*>(p.residual);
    y[c0] = from_f32<T>(to_f32(y[c0]) + acc0);
    if (v1) y[c0 + 1] = from_f32<T>(to_f32(y[c0 + 1]) + acc1);
  }
}


// One row of x (M = 1), K split over the block's 4 warps (a quarter each, whole 256-element chunks), two
// output columns per block: every warp issues all its loads in one round (x, gate and weight chunks),
// applies the KDA output norm (if any) to its quarter in registers, and the 4 partial sums meet in
// shared memory. For wide-K, small-N projections (o_proj: N 2304, K 4096), where the row-pair kernel
// has too few blocks and too long a prologue. The weights go to shared memory with cp.async (each lane
// reads back only its own copies), requested before the wait; few registers, so the whole grid
// (o_proj: 1152 blocks) is resident at once and, under PDL, requests its weights while the kernels
// before it (the KDA decode, the MLA chain) still run.
constexpr int kSkU = 4;  // chunks of 8 per lane per round
constexpr int kSkMinBlocks = 9;  // resident blocks per SM the registers must allow (1152 blocks on 132 SMs)
template <typename T> constexpr size_t splitk_smem(int warps) { return size_t(warps) * 2 * kSkU * (sizeof(T) / 2) * 32 * 16; }
// kNorm: 0 none, 1 RMSNorm of the row (p.norm_weight), 2 the KDA output norm (p.gate); each instance
// holds only the registers its prologue needs.
template <typename T, typename OutT, GemvEpilogue Epi, int kNorm>
__global__ void __launch_bounds__(kWarps * 32, kSkMinBlocks) gemv_splitk_kernel(GemvParams p) {
  __shared__ float part[kWarps][2], ss_part[kWarps];
  extern __shared__ __align__(16) unsigned char smem_raw[];
  constexpr int W = Chunk8<T>::W;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nwarps = blockDim.x >> 5;
  uint4* ring = reinterpret_cast<uint4*>(smem_raw) + size_t(warp) * 2 * kSkU * W * 32;  // [row][u][W][lane]
  const int c0 = blockIdx.x * 2;
  const bool v1 = c0 + 1 < p.N;
  const int Q = p.K / nwarps, k0 = warp * Q;
  constexpr bool rms = kNorm == 1, gated = kNorm == 2;  // rms: the whole row, Q <= 256 * kSkU (one round)
  const T* w0 = static_cast<const T*>(p.w) + int64_t(c0) * p.K;
  const T* w1 = static_cast<const T*>(p.w) + int64_t(v1 ? c0 + 1 : c0) * p.K;
  auto stage = [&](int cb) {  // this lane's weight chunks of the round at cb into its ring entries
#pragma unroll
    for (int u = 0; u < kSkU; ++u) {
      const int c = cb + u * 256;
      if (c < k0 + Q) {
#pragma unroll
        for (int q = 0; q < W; ++q) {
          cp_async16(ring + ((0 * kSkU + u) * W + q) * 32 + lane, reinterpret_cast<const uint4*>(w0 + c) + q);
          cp_async16(ring + ((1 * kSkU + u) * W + q) * 32 + lane, reinterpret_cast<const uint4*>(w1 + c) + q);
        }
      }
    }
    cp_async_commit();
  };
  pdl_trigger();
  stage(k0 + lane * 8);  // first round of weights: immutable, so before the wait
  Chunk8<T> nw, rw[kSkU];
  const int hd = p.gate_head_dim, lpj = hd / 8;
  if constexpr (gated) nw.load_global(static_cast<const T*>(p.norm_weight) + (lane % lpj) * 8);
  if constexpr (rms) {
#pragma unroll
    for (int u = 0; u < kSkU; ++u)
      if (k0 + lane * 8 + u * 256 < k0 + Q) rw[u].load_global(static_cast<const T*>(p.norm_weight) + k0 + lane * 8 + u * 256);
  }
  pdl_wait();
  const T* X = static_cast<const T*>(p.x);
  float acc0 = 0.f, acc1 = 0.f;
  for (int cb = k0 + lane * 8; cb < k0 + Q; cb += 256 * kSkU) {
    if (cb != k0 + lane * 8) stage(cb);  // later rounds reuse the ring (its reads are done)
    Chunk8<T> xv[kSkU], gv[kSkU];
#pragma unroll
    for (int u = 0; u < kSkU; ++u) {
      const int c = cb + u * 256;
      if (c < k0 + Q) {
        xv[u].load_global(X + c);
        if constexpr (gated) gv[u].load_global(static_cast<const T*>(p.gate) + c);
      }
    }
    float inv_rms = 1.f;
    if constexpr (rms) {  // sum of squares of the row: this warp's quarter, then all quarters through shared memory
      float ss = 0.f;
#pragma unroll
      for (int u = 0; u < kSkU; ++u)
        if (cb + u * 256 < k0 + Q) {
          float f[8];
          xv[u].to_float(f);
#pragma unroll
          for (int e = 0; e < 8; ++e) ss += f[e] * f[e];
        }
      ss = warp_sum(ss);
      if (lane == 0) ss_part[warp] = ss;
      __syncthreads();
      float tot = 0.f;
      for (int w = 0; w < nwarps; ++w) tot += ss_part[w];
      inv_rms = rsqrtf(tot / float(p.K) + p.norm_eps);
    }
    cp_async_wait<0>();  // this lane's weight copies of the round have landed
#pragma unroll
    for (int u = 0; u < kSkU; ++u) {
      const int c = cb + u * 256;
      if (c >= k0 + Q) break;  // uniform over the warp
      float fx[8], fa[8], fb[8];
      xv[u].to_float(fx);
      if constexpr (gated) {  // rmsnorm of the head (lpj lanes hold it) * weight * sigmoid(gate), rounded like the tile
        float ss = 0.f;
#pragma unroll
        for (int e = 0; e < 8; ++e) ss += fx[e] * fx[e];
        for (int o = lpj / 2; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
        const float inv = rsqrtf(ss / float(hd) + p.norm_eps);
        float fw[8], fg[8];
        nw.to_float(fw);
        gv[u].to_float(fg);
#pragma unroll
        for (int e = 0; e < 8; ++e) fx[e] = to_f32(from_f32<T>(fx[e] * inv * fw[e] * (1.f / (1.f + expf(-fg[e])))));
      } else if constexpr (rms) {  // x * rsqrt(mean(x^2) + eps) * w, rounded like the tile
        float fw[8];
        rw[u].to_float(fw);
#pragma unroll
        for (int e = 0; e < 8; ++e) fx[e] = to_f32(from_f32<T>(fx[e] * inv_rms * fw[e]));
      }
      Chunk8<T> a, b;
#pragma unroll
      for (int q = 0; q < W; ++q) {
        a.r[q] = ring[((0 * kSkU + u) * W + q) * 32 + lane];
        b.r[q] = ring[((1 * kSkU + u) * W + q) * 32 + lane];
      }
      a.to_float(fa);
      b.to_float(fb);
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        acc0 = fmaf(fa[e], fx[e], acc0);
        acc1 = fmaf(fb[e], fx[e], acc1);
      }
    }
  }
  block_sum2(acc0, acc1, part);
  if (threadIdx.x == 0) {
    const float s0 = acc0, s1 = acc1;
    OutT* y = static_cast<OutT*>(p.y);
    if constexpr (Epi == GemvEpilogue::Accumulate) {
      y[c0] = from_f32<OutT>(to_f32(y[c0]) + s0);
      if (v1) y[c0 + 1] = from_f32<OutT>(to_f32(y[c0 + 1]) + s1);
    } else {
      y[c0] = from_f32<OutT>(s0);
      if (v1) y[c0 + 1] = from_f32<OutT>(s1);
    }
  }
}

// Warps the split-K kernel splits K over: the most (<= 4) that divide its 256-element chunks evenly
// (K 4096: 4; K 2304: 3).
int splitk_warps(int K) {
  if (K % 256) return 0;
  for (int w = kWarps; w >= 2; --w)
    if ((K / 256) % w == 0) return w;
  return 0;
}

// The split-K kernel applies: one row, one group, no gather, no SiluMul, K made of whole 256-element
// chunks per warp (an RMSNorm prologue only when each warp's share is one round of loads), N small
// enough that the row-pair kernel would have under ~3 blocks per SM.
bool use_splitk_impl(const GemvParams& p, int num_sms) {
  const int w = splitk_warps(p.K);
  return p.pipelined && p.split_k && p.M == 1 && !p.group_start && p.num_groups == 1 && !p.x_rows && w > 0 &&
         p.epi != GemvEpilogue::SiluMul && (!p.gate || p.gate_head_dim <= 256) &&
         (!p.norm_weight || p.gate || p.K / w <= 256 * kSkU) && p.N <= 8 * 3 * num_sms;
}

template <typename T, typename OutT, GemvEpilogue Epi>
void launch_splitk(const GemvParams& p, const DeviceContext& ctx) {
  const int warps = splitk_warps(p.K);
  const dim3 grid(ceil_div(p.N, 2));
  const size_t smem = splitk_smem<T>(warps);
  if (p.gate) launch_pdl(gemv_splitk_kernel<T, OutT, Epi, 2>, grid, warps * 32, smem, ctx, p);
  else if (p.norm_weight) launch_pdl(gemv_splitk_kernel<T, OutT, Epi, 1>, grid, warps * 32, smem, ctx, p);
  else launch_pdl(gemv_splitk_kernel<T, OutT, Epi, 0>, grid, warps * 32, smem, ctx, p);
}


}  // namespace

bool splitk_applies(const GemvParams& p, int num_sms) { return use_splitk_impl(p, num_sms); }

bool run_gemv_splitk(const GemvParams& p, DType act, int num_sms, const DeviceContext& ctx) {
  if (!use_splitk_impl(p, num_sms)) return false;
  dispatch_act(act, [&]<typename T>() {
    if (p.epi == GemvEpilogue::Accumulate) launch_splitk<T, T, GemvEpilogue::Accumulate>(p, ctx);
    else if (p.y_f32) launch_splitk<T, float, GemvEpilogue::Store>(p, ctx);
    else launch_splitk<T, T, GemvEpilogue::Store>(p, ctx);
  });
  DS_CUDA_CHECK_LAUNCH();
  return true;
}

}  // namespace gemv_detail

using namespace gemv_detail;

void run_moe_down_combine(const MoeDownCombineParams& p, DType act, const DeviceContext& ctx) {
  if (p.k == 0 || p.D == 0) return;
  DS_GPU_REQUIRE(p.I > 0 && p.I % 8 == 0, "run_moe_down_combine: I must be a positive multiple of 8");
  if (run_moe_down_combine_staged(p, act, ctx)) return;  // (switches.down_combine_staged)
  if (p.w_int4) {
    run_moe_down_combine_int4(p, act, ctx);
    return;
  }
  if (p.w_scale) {
    if (!run_moe_down_combine_fp8_mma(p, act, ctx)) run_moe_down_combine_fp8(p, act, ctx);
    return;
  }
  dispatch_act(act, [&]<typename T>() {
    launch_pdl(moe_down_combine_kernel<T>, dim3(ceil_div(p.D, 2)), kDcWarps * 32, 0, ctx, p);
  });
  DS_CUDA_CHECK_LAUNCH();
}


}  // namespace ds::gpu
