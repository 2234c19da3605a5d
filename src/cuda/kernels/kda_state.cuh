// KDA chunked prefill, kernel 2 of 2: the chunk-to-chunk recurrence (one CTA of 256 threads per
// sequence, head and slice of 32 value columns; value columns never interact in the delta rule).
//
// The CTA keeps its slice of the state transposed, Sᵀ [32 v][128 d], in fp32 registers (warp w owns
// d columns 16w..16w+15) and per chunk, with the workspace blocks of kernel 1 staged in shared memory:
//   (a) P = W·S and Q = Qg·S                 (warps 0-3: P, warps 4-7: Q; 16 token rows each)
//   (b) u = U − P, stored transposed (uT [32][64]) in shared memory
//   (c) O = Q + M·u                          (causal: only k-steps j < 16·(rows+1))
//   (d) Sᵀ ← Sᵀ·diag(2^Γ_63) + uᵀ·Kd         (Kd from KdT)
// The bf16 path double-buffers the chunk blocks with cp.async; the fp32 path (3xTF32) has one stage.
#pragma once
#include "cuda/kernels/kda_intra.cuh"

namespace ds::gpu::kda {

constexpr int kStateThreads = 256;
constexpr int kVSlice = 32;

template <typename IO, int kStages> struct StateSmem {
  static constexpr int kLd128 = padded_ld<IO>(128), kLd64 = padded_ld<IO>(64), kLd32 = padded_ld<IO>(32);
  struct Stage {
    IO W[kChunk][kLd128];
    IO Qg[kChunk][kLd128];
    IO KdT[kDim][kLd64];
    IO M[kChunk][kLd64];
    IO U[kChunk][kLd32];
    float glast[kDim];
  };
  Stage st[kStages];
  IO ST[kVSlice][kLd128];   // Sᵀ slice as an MMA operand
  IO uT[kVSlice][kLd64];
};

template <typename IO, int kStages>
__device__ __forceinline__ void load_stage(typename StateSmem<IO, kStages>::Stage& s, const IO* blk,
                                           const float* glast, int vs, int tid) {
  using S = StateSmem<IO, kStages>;
  load_tile_async(&s.W[0][0], S::kLd128, blk + Work::kW, kDim, kChunk, kDim, kChunk, tid, kStateThreads);
  load_tile_async(&s.Qg[0][0], S::kLd128, blk + Work::kQg, kDim, kChunk, kDim, kChunk, tid, kStateThreads);
  load_tile_async(&s.KdT[0][0], S::kLd64, blk + Work::kKdT, kChunk, kDim, kChunk, kDim, tid, kStateThreads);
  load_tile_async(&s.M[0][0], S::kLd64, blk + Work::kM, kChunk, kChunk, kChunk, kChunk, tid, kStateThreads);
  load_tile_async(&s.U[0][0], S::kLd32, blk + Work::kU + vs * kVSlice, kDim, kChunk, kVSlice, kChunk, tid,
                  kStateThreads);
  load_tile_async(&s.glast[0], kDim, glast, kDim, 1, kDim, 1, tid, kStateThreads);
}

template <typename IO, int kStages>
__global__ void __launch_bounds__(kStateThreads, 1) kda_state_kernel(KdaPrefillParams p, Work w) {
  using Mma = typename MmaFor<IO>::type;
  using Sm = StateSmem<IO, kStages>;
  constexpr int kLd128 = Sm::kLd128, kLd64 = Sm::kLd64;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  auto& sm = *reinterpret_cast<Sm*>(smem_raw);
  __shared__ int s_base;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int seq = blockIdx.x, h = blockIdx.y, vs = blockIdx.z, H = p.num_heads;
  const int tbeg = p.cu_seqlens[seq], len = p.cu_seqlens[seq + 1] - tbeg;
  const int nchunks = (len + kChunk - 1) / kChunk;
  if (warp == 0) {
    const int base = chunks_before(p.cu_seqlens, seq, lane);
    if (lane == 0) s_base = base;
  }
  const bool fresh = p.fresh != nullptr && p.fresh[seq] != 0;
  float* S = p.state_pool + (int64_t(p.state_slots[seq]) * H + h) * kDim * kDim;

  // Sᵀ fragment of this warp: rows v = 16·mt + c_row, columns d = 16·warp + 8·nt + c_col.
  float st[2][2][4];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int v = 16 * mt + c_row(e, lane), d = 16 * warp + 8 * nt + c_col(e, lane);
        st[mt][nt][e] = fresh ? 0.f : S[d * kDim + vs * kVSlice + v];
      }
  auto store_st = [&]() {
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int e = 0; e < 4; e += 2) {
          const int v = 16 * mt + c_row(e, lane), d = 16 * warp + 8 * nt + c_col(e, lane);
          store_pair<IO>(&sm.ST[v][d], st[mt][nt][e], st[mt][nt][e + 1]);
        }
  };
  store_st();
  __syncthreads();  // s_base, ST
  const int cbase = s_base;
  auto issue = [&](int c) {
    if (c < nchunks) {
      const int64_t b = cbase + c;
      load_stage<IO, kStages>(sm.st[c % kStages], static_cast<const IO*>(w.blocks) + (b * H + h) * Work::kElems,
                              w.gamma_last + (b * H + h) * kDim, vs, tid);
    }
    cp_async_commit();
  };
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) issue(s);

  IO* out = static_cast<IO*>(p.o);
  const int part = warp >> 2, mt = warp & 3;  // (a)-(c): part 0 = W·S, part 1 = Qg·S; token rows 16·mt..
  for (int c = 0; c < nchunks; ++c) {
    issue(c + kStages - 1);
    cp_async_wait<kStages - 1>();
    __syncthreads();
    auto& sg = sm.st[c % kStages];

    // (a) [16 x 32] = (W or Qg)[16 x 128] · S[128 x 32]
    float acc[4][4] = {};
    const IO* src = part == 0 ? &sg.W[16 * mt][0] : &sg.Qg[16 * mt][0];
#pragma unroll
    for (int d0 = 0; d0 < kDim; d0 += Mma::kK) {
      const typename Mma::A a = Mma::load_a(src + d0, kLd128, lane);
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) Mma::mma(acc[nt], a, Mma::load_b(&sm.ST[8 * nt][d0], kLd128, lane));
    }
    // (b) u = U − W·S, transposed into uT
    if (part == 0) {
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int i = 16 * mt + c_row(e, lane), v = 8 * nt + c_col(e, lane);
          sm.uT[v][i] = from_float<IO>(to_float(sg.U[i][v]) - acc[nt][e]);
        }
    }
    __syncthreads();
    // (c) O = Qg·S + M·u
    if (part == 1) {
      for (int j0 = 0; j0 < 16 * (mt + 1); j0 += Mma::kK) {
        const typename Mma::A a = Mma::load_a(&sg.M[16 * mt][j0], kLd64, lane);
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) Mma::mma(acc[nt], a, Mma::load_b(&sm.uT[8 * nt][j0], kLd64, lane));
      }
      const int t0 = tbeg + c * kChunk;
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 4; e += 2) {
          const int i = 16 * mt + c_row(e, lane), v = vs * kVSlice + 8 * nt + c_col(e, lane);
          if (c * kChunk + i < len) store_pair<IO>(out + int64_t(t0 + i) * p.ldo + h * kDim + v, acc[nt][e], acc[nt][e + 1]);
        }
    }
    // (d) Sᵀ ← Sᵀ·diag(γ_last) + uᵀ·Kd (fp32 path: the chunk's sum in fresh accumulators, see kda_mma.cuh)
    {
      constexpr bool kSplit = Mma::kSplitAccum;
      float tacc[2][2][4] = {};
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float gl = sg.glast[16 * warp + 8 * nt + c_col(e, lane)];
          st[0][nt][e] *= gl;
          st[1][nt][e] *= gl;
        }
#pragma unroll
      for (int j0 = 0; j0 < kChunk; j0 += Mma::kK) {
        typename Mma::B bk[2];
#pragma unroll
        for (int nt = 0; nt < 2; ++nt) bk[nt] = Mma::load_b(&sg.KdT[16 * warp + 8 * nt][j0], kLd64, lane);
#pragma unroll
        for (int m2 = 0; m2 < 2; ++m2) {
          const typename Mma::A a = Mma::load_a(&sm.uT[16 * m2][j0], kLd64, lane);
#pragma unroll
          for (int nt = 0; nt < 2; ++nt) Mma::mma(kSplit ? tacc[m2][nt] : st[m2][nt], a, bk[nt]);
        }
      }
      if constexpr (kSplit) {
#pragma unroll
        for (int m2 = 0; m2 < 2; ++m2)
#pragma unroll
          for (int nt = 0; nt < 2; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) st[m2][nt][e] += tacc[m2][nt][e];
      }
    }
    store_st();  // every warp finished (a) before the barrier above, so ST is free
    __syncthreads();
  }
  cp_async_wait<0>();

#pragma unroll
  for (int m2 = 0; m2 < 2; ++m2)
#pragma unroll
    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int v = 16 * m2 + c_row(e, lane), d = 16 * warp + 8 * nt + c_col(e, lane);
        S[d * kDim + vs * kVSlice + v] = st[m2][nt][e];
      }
}

}  // namespace ds::gpu::kda
