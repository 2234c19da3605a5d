// cp.async weight streaming for the GEMV at one row per slot (bf16 or FP8 weights, bf16 activations); see
// gemv_common.cuh.
#include <algorithm>
#include <type_traits>

#include "cuda/kernels/gemv_common.cuh"

namespace ds::gpu::gemv_detail {
namespace {

// ---- asynchronous weight streaming (batch 1, bf16 or FP8 weights) -------------------------------------
// Each lane copies its own 16-byte chunks of the warp's row pairs into a per-warp ring of kAsyncStages
// shared-memory stages with cp.async (no registers held while in flight) and reads back only what it
// copied itself, so a thread-local cp.async.wait_group is all the synchronisation needed. The grid is
// about two blocks per SM and every warp walks several row pairs, so the memory system sees a steady
// stream instead of waves of one-round-trip blocks with gaps between them. FP8 weights (kF8: e4m3 bytes
// with GemvParams' scales, 16 to a chunk) stream the same way; each chunk lies in one scale block.
// stages per warp: ~18 KB in flight per warp whatever the item size (2 rows x U chunks of 16 bytes x 32 lanes)
template <int U> constexpr int async_stages() { return U >= 8 ? 2 : 4; }

// bytes of dynamic shared memory: the x row, then per warp kAsyncStages stages of 2 rows x U chunks x 32 lanes
template <int U> constexpr size_t async_ring_bytes() { return size_t(kWarps) * async_stages<U>() * 2 * U * 32 * 16; }

template <typename OutT, GemvEpilogue Epi, int U, bool kF8>
__global__ void __launch_bounds__(kWarps * 32) gemv_async_kernel(GemvParams p, int pairs) {
  using T = bf16;
  using WT = std::conditional_t<kF8, uint8_t, bf16>;
  constexpr int kE = kF8 ? 16 : 8;  // weights per 16-byte chunk
  constexpr int kAsyncStages = async_stages<U>();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int K8 = (p.K + 7) / 8 * 8;
  uint4* ring = reinterpret_cast<uint4*>(smem_raw);  // [warp][stage][row][u][lane]
  T* xs = reinterpret_cast<T*>(smem_raw + async_ring_bytes<U>());
  const int group = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  constexpr bool kPair = Epi == GemvEpilogue::SiluMul;
  constexpr int kStep = 32 * kE * U;
  const int iters = (p.K + kStep - 1) / kStep, items = pairs * iters;
  uint4* my = ring + size_t(warp) * kAsyncStages * 2 * U * 32;
  const WT* W = nullptr;
  const float* S = nullptr;  // FP8: the matrix's scales
  auto item = [&](int j, const WT*& w0, const WT*& w1, int& cb, int& c0) {
    return row_pair_item<WT, kPair, U, kE>(p, W, pairs, iters, j, w0, w1, cb, c0);
  };
  auto set_matrix = [&](int64_t m) {
    W = static_cast<const WT*>(p.w) + m * p.w_matrix_stride;
    if constexpr (kF8) S = p.w_scale + m * p.scale_matrix_stride;
  };
  auto issue = [&](int j) {  // item j into stage j % kAsyncStages; always one commit group
    const WT *w0 = nullptr, *w1 = nullptr;
    int cb = 0, c0 = 0;
    if (item(j, w0, w1, cb, c0)) {
      uint4* st = my + size_t(j % kAsyncStages) * 2 * U * 32;
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (cb + u * 32 * kE < p.K) {
          cp_async16(st + (0 * U + u) * 32 + lane, w0 + cb + u * 32 * kE);
          cp_async16(st + (1 * U + u) * 32 + lane, w1 + cb + u * 32 * kE);
        }
    }
    cp_async_commit();
  };
  pdl_trigger();
  NormPre<T> pre;
  pre.load(p);
  int row0 = 0, rows = 0;
  if (!start_group_stream<kAsyncStages>(p, group, row0, rows, set_matrix, issue)) return;
  const T* X = static_cast<const T*>(p.x) + int64_t(group) * p.x_group_stride;
  OutT* Y = static_cast<OutT*>(p.y) + int64_t(group) * p.y_group_stride;
  load_x_tile(p, xs, K8, X, row0, 1, 0, p.K, pre);
  float acc0[1] = {0.f}, acc1[1] = {0.f};
  for (int j = 0; j < items; ++j) {
    const WT *w0 = nullptr, *w1 = nullptr;
    int cb = 0, c0 = 0;
    const bool ok = item(j, w0, w1, cb, c0);
    cp_async_wait<kAsyncStages - 1>();  // this thread's copies of item j have landed
    if (ok) {
      const uint4* st = my + size_t(j % kAsyncStages) * 2 * U * 32;
      if constexpr (kF8) {
        const int r1 = kPair ? p.N + c0 : min(c0 + 1, p.N - 1);
        const float* s0 = S + int64_t(c0 >> p.scale_row_shift) * p.scale_ld;
        const float* s1 = S + int64_t(r1 >> p.scale_row_shift) * p.scale_ld;
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const int c = cb + u * 32 * kE;
          if (c < p.K)
            fma_fp8_chunk<T, 1>(st[(0 * U + u) * 32 + lane], st[(1 * U + u) * 32 + lane], s0[c >> p.scale_k_shift],
                                s1[c >> p.scale_k_shift], xs, K8, c, 1, acc0, acc1);
        }
      } else {
#pragma unroll
        for (int u = 0; u < U; ++u)
          if (cb + u * 256 < p.K) {
            Chunk8<T> a, b;
            a.r[0] = st[(0 * U + u) * 32 + lane];
            b.r[0] = st[(1 * U + u) * 32 + lane];
            fma_chunk<T, 1>(a, b, xs, K8, cb + u * 256, 1, acc0, acc1);
          }
      }
    }
    issue(j + kAsyncStages);  // into the stage just read (this lane's own entries)
    if ((j + 1) % iters == 0) {
      if (ok) store_cols<OutT, Epi, 1>(p, Y, row0, 1, c0, kPair || c0 + 1 < p.N, acc0, acc1, lane);
      acc0[0] = acc1[0] = 0.f;
    }
  }
  cp_async_wait<0>();
}

// Row pairs for the asynchronous kernel: about two blocks per SM.
int async_pairs(const GemvParams& p, int num_sms) {
  const int cols_per_pair = (p.epi == GemvEpilogue::SiluMul ? 1 : 2) * kWarps;
  const int64_t blocks_at_1 = int64_t((p.N + cols_per_pair - 1) / cols_per_pair) * std::max(1, p.num_groups);
  return int(std::max<int64_t>(1, (blocks_at_1 + 2 * num_sms - 1) / (2 * num_sms)));
}

template <typename OutT, GemvEpilogue Epi, int U, bool kF8>
void launch_async(const GemvParams& p, int num_sms, const DeviceContext& ctx) {
  const int pairs = p.row_pairs > 0 ? p.row_pairs : async_pairs(p, num_sms);
  const int cols_per_block = (Epi == GemvEpilogue::SiluMul ? 1 : 2) * kWarps * pairs;
  const dim3 grid(ceil_div(p.N, cols_per_block), unsigned(p.num_groups));
  const size_t smem = async_ring_bytes<U>() + size_t((p.K + 7) / 8 * 8) * sizeof(bf16);
  auto kern = gemv_async_kernel<OutT, Epi, U, kF8>;
  launch_pdl(kern, grid, kWarps * 32, smem, ctx, p, pairs);
}

// The asynchronous kernel applies: bf16 activations, one row per group, the whole x row in shared memory,
// and not a huge matrix (lm_head, 755 MB, streams at 97% with register loads, 93% through the ring); FP8
// weights with scale blocks at least 16 columns wide and rows of at most 2,560 (one item of 5 chunks per
// lane: measured on the H200, the MoE gate/up and KDA in_proj at K 2304 took 24.7 / 17.9 us against 27.4 /
// 20.1 us in the FP8 row-pair kernel, the o_proj at K 4096 14.8 against 13.3 us; split-K has no FP8 form).
bool use_async(const GemvParams& p, DType act) {
  const int row_bound = p.group_start ? p.max_rows : p.M;
  const double bytes = double(p.N) * p.K * (p.w_scale ? 1 : 2) * std::max(1, p.num_groups);
  const bool fp8_ok = !p.w_scale || (p.K % 16 == 0 && p.scale_k_shift >= 4 && p.K <= 5 * 512);
  return p.async_stream && p.pipelined && !p.stream_hint && act == DType::BF16 && row_bound == 1 && fp8_ok &&
         bytes <= 256e6 && async_ring_bytes<9>() + size_t(p.K) * 2 + 16 <= size_t(kMaxSmem);
}

// U: 16-byte chunks per lane and row in one item (one item per row where it fits: bf16 K 2304 -> 9,
// FP8 K 2304 -> 5).
template <typename OutT, GemvEpilogue Epi, bool kF8>
void launch_async_u(const GemvParams& p, int num_sms, const DeviceContext& ctx) {
  const int chunks = (p.K + 32 * (kF8 ? 16 : 8) - 1) / (32 * (kF8 ? 16 : 8));
  if (chunks == 9) launch_async<OutT, Epi, 9, kF8>(p, num_sms, ctx);
  else if (chunks == 5) launch_async<OutT, Epi, 5, kF8>(p, num_sms, ctx);
  else if (chunks <= 4) launch_async<OutT, Epi, 4, kF8>(p, num_sms, ctx);
  else launch_async<OutT, Epi, 8, kF8>(p, num_sms, ctx);
}

template <bool kF8> void launch_epi(const GemvParams& p, int num_sms, const DeviceContext& ctx) {
  switch (p.epi) {
    case GemvEpilogue::Store:
      if (p.y_f32) launch_async_u<float, GemvEpilogue::Store, kF8>(p, num_sms, ctx);
      else launch_async_u<bf16, GemvEpilogue::Store, kF8>(p, num_sms, ctx);
      break;
    case GemvEpilogue::SiluMul: launch_async_u<bf16, GemvEpilogue::SiluMul, kF8>(p, num_sms, ctx); break;
    case GemvEpilogue::Accumulate: launch_async_u<bf16, GemvEpilogue::Accumulate, kF8>(p, num_sms, ctx); break;
  }
}

template <typename OutT, GemvEpilogue Epi> void configure_epi() {
  auto each_u = [&]<bool kF8>() {
    set_max_dynamic_smem(gemv_async_kernel<OutT, Epi, 9, kF8>, kMaxSmem);
    set_max_dynamic_smem(gemv_async_kernel<OutT, Epi, 5, kF8>, kMaxSmem);
    set_max_dynamic_smem(gemv_async_kernel<OutT, Epi, 4, kF8>, kMaxSmem);
    set_max_dynamic_smem(gemv_async_kernel<OutT, Epi, 8, kF8>, kMaxSmem);
  };
  each_u.template operator()<false>();
  each_u.template operator()<true>();
}

}  // namespace

void configure_gemv_async() {
  configure_epi<float, GemvEpilogue::Store>();
  configure_epi<bf16, GemvEpilogue::Store>();
  configure_epi<bf16, GemvEpilogue::SiluMul>();
  configure_epi<bf16, GemvEpilogue::Accumulate>();
}

bool run_gemv_async(const GemvParams& p, DType act, int num_sms, const DeviceContext& ctx) {
  if (!use_async(p, act)) return false;
  if (p.w_scale) {
    launch_epi<true>(p, num_sms, ctx);
  } else {
    if (splitk_applies(p, num_sms)) return false;
    launch_epi<false>(p, num_sms, ctx);
  }
  DS_CUDA_CHECK_LAUNCH();
  return true;
}

}  // namespace ds::gpu::gemv_detail
