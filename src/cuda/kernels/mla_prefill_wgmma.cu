// MLA prefill attention on Hopper tensor cores (see mla_prefill_wgmma.h and mla_prefill.h for the
// contract). CTA = 128 queries of one (sequence, head), 384 threads in three warpgroups:
//  - warpgroup 0, the producer: cp.async copies of the query tile (once) and of key/value tiles of 128
//    positions into a two-stage ring, in the 128-byte swizzled layout (wgmma.cuh); each copy set
//    completes on the stage's `full` mbarrier;
//  - warpgroups 1 and 2, the consumers, 64 query rows each: per key tile S = Q·Kᵀ (12 wgmma m64n128k16,
//    Q and K from shared memory, K-major), the causal mask and the fp32 online softmax in registers,
//    O += P·V (8 wgmma with P as bf16 A fragments in registers, V MN-major from shared memory). Keys and
//    values of a stage complete and are released on separate mbarriers (the keys are free once S is done).
//    Two schedules (DELTASERVE_CUDA_WGMMA=1 / 2): each warpgroup on its own, or "ping-pong": the two
//    warpgroups take turns issuing GEMMs (named barriers), so one's softmax overlaps the other's GEMM.
//    (Issuing S(t) with P·V(t − 1) inside one warpgroup would need ~180 registers per thread; ptxas
//    keeps these consumers at the 168 of the launch bound even after setmaxnreg, and spilled.)
// TMA (DELTASERVE_CUDA_WGMMA=3 / 4, the same two schedules): one producer thread issues each whole key/value
//    tile as tensor-map copies (64 x 128 boxes, swizzled by the copy engine) that complete on the stage's
//    `full` mbarrier by transaction bytes, the producer's other threads only arriving; the window's last,
//    partial tile still goes by cp.async, which zero-fills the rows past the window.
// Query tiles are issued longest first (causal work grows with the tile index).
#include <cmath>

#include "cuda/cuda_check.h"
#include "cuda/kernels/kda_mma.cuh"
#include "cuda/kernels/mla_prefill_wgmma.h"
#include "cuda/kernels/tma.h"
#include "cuda/kernels/wgmma.cuh"

namespace ds::gpu {
namespace {

using namespace wg;
using attn::bf16;
using attn::fast_exp2;
using attn::kLog2e;
using attn::pack_bf16;

constexpr int kNope = 128, kV = 128;
constexpr int kBM = 128, kBN = 128, kStages = 2, kThreads = 384;
constexpr uint32_t kAtom = 128 * 128;  // 128 rows of 128 bytes
constexpr uint32_t kQBytes = 3 * kAtom, kKBytes = 3 * kAtom, kVBytes = 2 * kAtom;
constexpr uint32_t kOffK = kQBytes, kOffV = kOffK + kStages * kKBytes, kOffBar = kOffV + kStages * kVBytes;
constexpr size_t kSmem = kOffBar + 64 + 1024;  // barriers, and slack to align the base to 1024 bytes

struct Bars {  // per stage: keys and values complete (full) and are released (empty) separately
  uint64_t q, kfull[kStages], kempty[kStages], vfull[kStages], vempty[kStages];
};

// TMA (switches.wgmma 3 and 4): one tensor map per operand, 2D (columns, rows) over the buffer as the kernel
// sees it (base pointers shifted back for context pieces: the rows read are the same), a box of 64 columns
// (128 bytes) x 128 rows landing as one 128-byte-swizzled atom, which is the layout the wgmma descriptors read.
struct TmaMaps {
  CUtensorMap kn, kpe, v;
};
// The producer's share (thread tid of 128) of copying 128 rows x kChunks 16-byte chunks (8 bf16 each) of a
// bf16 matrix with row stride ld into swizzled atoms from dst (chunk c of a row into atom c / 8); rows
// from `valid` on are zero-filled and not read. Consecutive threads take consecutive chunks of a row.
template <int kChunks>
__device__ __forceinline__ void copy_rows(uint32_t dst, const bf16* src, int64_t ld, int valid, int tid) {
#pragma unroll 4
  for (int it = 0; it < kChunks; ++it) {
    const int i = tid + 128 * it, row = i / kChunks, c = i % kChunks;
    const bool ok = row < valid;
    cp16(dst + (c >> 3) * kAtom + swz(row, c & 7), src + (ok ? int64_t(row) * ld : 0) + c * 8, ok);
  }
}

template <bool kTma>
__device__ __forceinline__ void produce(const MlaPrefillParams& p, const TmaMaps& m, uint32_t sbase, Bars& bar, int tid,
                                        int h, int qbeg, int qlen, int q0, int kbeg, int kw0, int kw1, int ntiles) {
  const bf16* qg = static_cast<const bf16*>(p.q) + int64_t(qbeg + q0) * p.ldq + int64_t(h) * p.hq;
  copy_rows<16>(sbase, qg, p.ldq, qlen - q0, tid);                   // q_nope: atoms 0, 1
  copy_rows<8>(sbase + 2 * kAtom, qg + kNope, p.ldq, qlen - q0, tid);  // q_pe: atom 2
  mbar_arrive_cp_async(&bar.q);
  for (int t = 0; t < ntiles; ++t) {
    const int s = t % kStages;
    const uint32_t parity = uint32_t((t / kStages - 1) & 1);
    const int j0 = kw0 + t * kBN;  // rows j0 + row < kw1 are read; the rest of the tile is zero-filled
    const int64_t r0 = kbeg + j0;
    const uint32_t ka = sbase + kOffK + s * kKBytes, va = sbase + kOffV + s * kVBytes;
    // TMA for whole tiles; the window's last partial tile by cp.async, which zero-fills the rows past it
    // (a box would read whatever follows: the next piece's rows, or memory never written)
    const bool tma = kTma && kw1 - j0 >= kBN;
    if (t >= kStages) mbar_wait(&bar.kempty[s], parity);
    if (tma) {
      if (tid == 0) {
        mbar_arrive_expect_tx(&bar.kfull[s], kKBytes);
        tma_load_2d(ka, &m.kn, h * int(p.hkn), int(r0), &bar.kfull[s]);
        tma_load_2d(ka + kAtom, &m.kn, h * int(p.hkn) + 64, int(r0), &bar.kfull[s]);
        tma_load_2d(ka + 2 * kAtom, &m.kpe, 0, int(r0), &bar.kfull[s]);
      } else {
        mbar_arrive(&bar.kfull[s]);
      }
    } else {
      copy_rows<16>(ka, static_cast<const bf16*>(p.k_nope) + r0 * p.ldkn + int64_t(h) * p.hkn, p.ldkn, kw1 - j0, tid);
      copy_rows<8>(ka + 2 * kAtom, static_cast<const bf16*>(p.k_pe) + r0 * p.ldkpe, p.ldkpe, kw1 - j0, tid);
      mbar_arrive_cp_async(&bar.kfull[s]);
    }
    if (t >= kStages) mbar_wait(&bar.vempty[s], parity);
    if (tma) {
      if (tid == 0) {
        mbar_arrive_expect_tx(&bar.vfull[s], kVBytes);
        tma_load_2d(va, &m.v, h * int(p.hv), int(r0), &bar.vfull[s]);
        tma_load_2d(va + kAtom, &m.v, h * int(p.hv) + 64, int(r0), &bar.vfull[s]);
      } else {
        mbar_arrive(&bar.vfull[s]);
      }
    } else {
      copy_rows<16>(va, static_cast<const bf16*>(p.v) + r0 * p.ldv + int64_t(h) * p.hv, p.ldv, kw1 - j0, tid);
      mbar_arrive_cp_async(&bar.vfull[s]);
    }
  }
  cp_wait_all();
}

// S = Q·Kᵀ for the warpgroup's 64 rows and a 128-key tile: 12 wgmma (192 = 3 atoms of 64 columns), issued.
__device__ __forceinline__ void issue_qk(float (&sc)[64], uint32_t qa, uint32_t ka) {
#pragma unroll
  for (int ks = 0; ks < 12; ++ks) {
    const uint32_t off = (ks >> 2) * kAtom + (ks & 3) * 32;
    wgmma_m64n128k16_ss(sc, desc_k_sw128(qa + off), desc_k_sw128(ka + off), ks > 0);
  }
}
// O += P·V: 8 wgmma over the tile's 128 keys (16 each: 2048 bytes of V rows), V MN-major (2 atoms of 64 dims).
__device__ __forceinline__ void issue_pv(float (&o)[64], const uint32_t (&pa)[8][4], uint32_t va) {
#pragma unroll
  for (int kk = 0; kk < 8; ++kk) wgmma_m64n128k16_rs_mn(o, pa[kk], desc_mn_sw128(va + kk * 2048, kAtom));
}

// One thread's part of the online softmax over a tile: scores (row g: e = 0, 1; row g + 8: e = 2, 3 of each
// n8 block j) masked and scaled to log2 units, the running max m and sum l updated, sc turned into the
// probabilities; returns the factors the earlier output rows must be scaled by.
struct RowState {
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
};
__device__ __forceinline__ void softmax_tile(float (&sc)[64], RowState& st, float (&alpha)[2], int j0, int kw1,
                                             int qmin, int qpos0, int c4, float sl2) {
  if (j0 + kBN - 1 > qmin || j0 + kBN > kw1) {  // some key of the tile lies after some row's position or the window
#pragma unroll
    for (int j = 0; j < 16; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int kp = j0 + 8 * j + 2 * c4 + (e & 1);
        sc[4 * j + e] = kp < kw1 && kp <= qpos0 + 8 * (e >> 1) ? sc[4 * j + e] * sl2 : -INFINITY;
      }
  } else {
#pragma unroll
    for (int i = 0; i < 64; ++i) sc[i] *= sl2;
  }
  float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int j = 0; j < 16; ++j) {
    mx[0] = fmaxf(mx[0], fmaxf(sc[4 * j], sc[4 * j + 1]));
    mx[1] = fmaxf(mx[1], fmaxf(sc[4 * j + 2], sc[4 * j + 3]));
  }
  // a row that has seen no key yet (a window piece beyond its position) keeps m = -inf; its probabilities
  // take 0 as the reference (they are all 2^-inf = 0), so no inf - inf appears
  float mref[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
    mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
    const float mn = fmaxf(st.m[i], mx[i]);
    mref[i] = mn == -INFINITY ? 0.f : mn;
    alpha[i] = fast_exp2(st.m[i] - mref[i]);
    st.m[i] = mn;
    st.l[i] *= alpha[i];
  }
#pragma unroll
  for (int j = 0; j < 16; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      sc[4 * j + e] = fast_exp2(sc[4 * j + e] - mref[e >> 1]);
      st.l[e >> 1] += sc[4 * j + e];
    }
}
// The probabilities as bf16 A fragments: k16 block kk = n8 blocks 2kk (a0: row g, a1: row g + 8) and
// 2kk + 1 (a2, a3).
__device__ __forceinline__ void pack_p(const float (&sc)[64], uint32_t (&pa)[8][4]) {
#pragma unroll
  for (int j = 0; j < 16; ++j) {
    pa[j >> 1][2 * (j & 1)] = pack_bf16(sc[4 * j], sc[4 * j + 1]);
    pa[j >> 1][2 * (j & 1) + 1] = pack_bf16(sc[4 * j + 2], sc[4 * j + 3]);
  }
}
__device__ __forceinline__ void rescale(float (&o)[64], const float (&alpha)[2]) {
#pragma unroll
  for (int i = 0; i < 64; ++i) o[i] *= alpha[(i >> 1) & 1];
}

// The consumer warpgroups (tid 128..383): see the file comment.
template <bool kPingPong>
__device__ __forceinline__ void consume(const MlaPrefillParams& p, uint32_t sbase, Bars& bar, int tid, int h, int qbeg,
                                        int qlen, int q0, int offset, int kw0, int kw1, int ntiles) {
  const int wgi = tid / 128 - 1, warp = (tid & 127) >> 5, lane = tid & 31, g = lane >> 2, c4 = lane & 3;
  const int rbase = 64 * wgi;  // the warpgroup's first row in the tile
  const bool has_rows = q0 + rbase < qlen;
  const int qmin = offset + q0 + rbase;  // position of its first row
  const int qmax = offset + min(qlen - 1, q0 + rbase + 63);
  const int klast = min(kw1 - 1, qmax);  // the last key any of its rows sees
  const int nt = has_rows && klast >= kw0 ? min(ntiles, (klast - kw0) / kBN + 1) : 0;  // tiles it attends to;
                                                                                      // it only releases the rest
  const int qpos0 = qmin + 16 * warp + g;  // position of this thread's row g (row g + 8: + 8)
  const float sl2 = p.scale * kLog2e;
  const uint32_t qa = sbase + uint32_t(rbase) * 128;
  auto ka = [&](int t) { return sbase + kOffK + uint32_t(t % kStages) * kKBytes; };
  auto va = [&](int t) { return sbase + kOffV + uint32_t(t % kStages) * kVBytes; };
  auto par = [](int t) { return uint32_t((t / kStages) & 1); };

  float o[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) o[i] = 0.f;
  RowState st;
  float sc[64], alpha[2];
  uint32_t pa[8][4];
  mbar_wait(&bar.q, 0);
  int t = 0;
  if constexpr (!kPingPong) {
    for (; t < nt; ++t) {
      const int s = t % kStages;
      mbar_wait(&bar.kfull[s], par(t));
      fence_proxy_async();
      wgmma_fence();
      issue_qk(sc, qa, ka(t));
      wgmma_commit();
      wgmma_wait<0>();
      reg_fence(sc);
      mbar_arrive(&bar.kempty[s]);
      softmax_tile(sc, st, alpha, kw0 + t * kBN, kw1, qmin, qpos0, c4, sl2);
      rescale(o, alpha);
      pack_p(sc, pa);
      mbar_wait(&bar.vfull[s], par(t));
      fence_proxy_async();
      reg_fence(o);
      wgmma_fence();
      issue_pv(o, pa, va(t));
      wgmma_commit();
      wgmma_wait<0>();
      reg_fence(o);
      mbar_arrive(&bar.vempty[s]);
    }
  } else {
    // GEMM issue alternates between the two warpgroups (named barrier 1 + w is warpgroup w's turn): one
    // warpgroup's S or P·V runs on the tensor cores while the other does its softmax. Both pass the turn
    // twice per tile of the CTA, attending to the tile or not, so the handshakes always pair up.
    if (wgi == 1) named_arrive(1, 256);  // warpgroup 0 goes first
    for (; t < nt; ++t) {
      const int s = t % kStages;
      mbar_wait(&bar.kfull[s], par(t));
      named_sync(1 + wgi, 256);
      fence_proxy_async();
      wgmma_fence();
      issue_qk(sc, qa, ka(t));
      wgmma_commit();
      named_arrive(2 - wgi, 256);
      wgmma_wait<0>();
      reg_fence(sc);
      mbar_arrive(&bar.kempty[s]);
      softmax_tile(sc, st, alpha, kw0 + t * kBN, kw1, qmin, qpos0, c4, sl2);
      rescale(o, alpha);
      pack_p(sc, pa);
      mbar_wait(&bar.vfull[s], par(t));
      named_sync(1 + wgi, 256);
      fence_proxy_async();
      reg_fence(o);
      wgmma_fence();
      issue_pv(o, pa, va(t));
      wgmma_commit();
      named_arrive(2 - wgi, 256);
      wgmma_wait<0>();
      reg_fence(o);
      mbar_arrive(&bar.vempty[s]);
    }
    for (; t < ntiles; ++t) {  // tiles past this warpgroup's rows: pass the turn, release the stage
      const int s = t % kStages;
      mbar_wait(&bar.kfull[s], par(t));
      named_sync(1 + wgi, 256);
      named_arrive(2 - wgi, 256);
      mbar_arrive(&bar.kempty[s]);
      mbar_wait(&bar.vfull[s], par(t));
      named_sync(1 + wgi, 256);
      named_arrive(2 - wgi, 256);
      mbar_arrive(&bar.vempty[s]);
    }
    if (wgi == 0) named_sync(1, 256);  // warpgroup 1's last pass arrived on warpgroup 0's turn
  }
  for (; t < ntiles; ++t) {  // tiles past this warpgroup's rows: release them for the other one
    mbar_wait(&bar.kfull[t % kStages], par(t));
    mbar_arrive(&bar.kempty[t % kStages]);
    mbar_wait(&bar.vfull[t % kStages], par(t));
    mbar_arrive(&bar.vempty[t % kStages]);
  }
  if (!has_rows) return;

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    st.l[i] += __shfl_xor_sync(0xffffffffu, st.l[i], 1);
    st.l[i] += __shfl_xor_sync(0xffffffffu, st.l[i], 2);
  }
  bf16* og = static_cast<bf16*>(p.o);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int row = q0 + rbase + 16 * warp + g + 8 * i;
    if (row >= qlen) continue;
    const bool seen = st.l[i] > 0.f;  // false: no key of the window is visible to this row
    const float inv = seen ? 1.f / st.l[i] : 0.f;
    bf16* dst = og + int64_t(qbeg + row) * p.ldo + int64_t(h) * kV;
#pragma unroll
    for (int j = 0; j < 16; ++j)
      *reinterpret_cast<uint32_t*>(dst + 8 * j + 2 * c4) = pack_bf16(o[4 * j + 2 * i] * inv, o[4 * j + 2 * i + 1] * inv);
    if (p.lse && c4 == 0)
      p.lse[int64_t(qbeg + row) * p.ld_lse + h] = seen ? (st.m[i] + log2f(st.l[i])) * 0.6931471805599453f : -INFINITY;
  }
}

// kPingPong: the two consumer warpgroups take turns issuing their GEMMs (see consume); otherwise each
// runs its tiles' S, softmax, P·V in turn on its own.
template <bool kPingPong, bool kTma>
__global__ void __launch_bounds__(kThreads, 1)
    mla_prefill_wgmma_kernel(const __grid_constant__ MlaPrefillParams p, const __grid_constant__ TmaMaps maps) {
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = align_1024(smem_raw);
  const uint32_t sbase = smem_u32(smem);
  Bars& bar = *reinterpret_cast<Bars*>(smem + kOffBar);
  const int tid = threadIdx.x;
  const int h = blockIdx.x, seq = blockIdx.z;
  const int qt = int(gridDim.y) - 1 - int(blockIdx.y);  // longest tiles first
  const int qbeg = p.cu_seqlens_q[seq], qlen = p.cu_seqlens_q[seq + 1] - qbeg;
  const int kbeg = p.cu_seqlens_k[seq], klen = p.cu_seqlens_k[seq + 1] - kbeg;
  const int q0 = qt * kBM;
  if (q0 >= qlen) return;  // the whole CTA, before any barrier
  const int offset = klen - qlen;  // key index of query 0
  const int qend = min(qlen, q0 + kBM);
  // the key window (a context piece, or the whole range): keys [kw0, kw1); the tile's last query sees
  // keys up to offset + qend - 1
  const int kw0 = p.k_begin, kw1 = p.k_end > 0 ? min(p.k_end, klen) : klen;
  const int kvis = min(kw1, offset + qend);
  const int ntiles = kvis > kw0 ? (kvis - kw0 + kBN - 1) / kBN : 0;
  if (tid == 0) {
    mbar_init(&bar.q, 128);
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&bar.kfull[s], 128);
      mbar_init(&bar.vfull[s], 128);
      mbar_init(&bar.kempty[s], 256);
      mbar_init(&bar.vempty[s], 256);
    }
  }
  __syncthreads();

  if (tid < 128) {
    setmaxnreg_dec<56>();
    produce<kTma>(p, maps, sbase, bar, tid, h, qbeg, qlen, q0, kbeg, kw0, kw1, ntiles);
  } else {
    setmaxnreg_inc<224>();
    consume<kPingPong>(p, sbase, bar, tid, h, qbeg, qlen, q0, offset, kw0, kw1, ntiles);
  }
}

}  // namespace

bool mla_prefill_wgmma_supported(const DeviceContext& ctx) {
  return ctx.info.sm_major == 9 && ctx.info.smem_per_block_optin >= kSmem;
}

void configure_mla_prefill_wgmma(const DeviceContext& ctx) {
  if (!mla_prefill_wgmma_supported(ctx)) return;
  set_max_dynamic_smem(mla_prefill_wgmma_kernel<false, false>, kSmem);
  set_max_dynamic_smem(mla_prefill_wgmma_kernel<true, false>, kSmem);
  set_max_dynamic_smem(mla_prefill_wgmma_kernel<false, true>, kSmem);
  set_max_dynamic_smem(mla_prefill_wgmma_kernel<true, true>, kSmem);
}

void launch_mla_prefill_wgmma(const MlaPrefillParams& p, const DeviceContext& ctx) {
  const dim3 grid(unsigned(p.num_heads), unsigned((p.max_seqlen_q + kBM - 1) / kBM), unsigned(p.num_seqs));
  DS_GPU_REQUIRE(grid.y <= 65535 && grid.z <= 65535, "mla prefill (wgmma): too many query tiles or sequences");
  TmaMaps maps{};
  int level = ctx.switches.wgmma;
  if (level >= 3 && !ctx.tensor_map_encoder) level -= 2;  // no TMA in this driver: the cp.async forms
  if (level >= 3) {  // TMA: 3 each warpgroup on its own, 4 ping-pong
    const int64_t H = p.num_heads;
    void* enc = ctx.tensor_map_encoder;
    maps.kn = rows_tensor_map(enc, {.base = p.k_nope, .cols = (H - 1) * p.hkn + kNope, .ld = p.ldkn, .what = "MLA k_nope"});
    maps.kpe = rows_tensor_map(enc, {.base = p.k_pe, .cols = 64, .ld = p.ldkpe, .what = "MLA k_pe"});
    maps.v = rows_tensor_map(enc, {.base = p.v, .cols = (H - 1) * p.hv + kV, .ld = p.ldv, .what = "MLA v"});
  }
  if (level == 4) mla_prefill_wgmma_kernel<true, true><<<grid, kThreads, kSmem, ctx.stream>>>(p, maps);
  else if (level == 3) mla_prefill_wgmma_kernel<false, true><<<grid, kThreads, kSmem, ctx.stream>>>(p, maps);
  else if (level == 2) mla_prefill_wgmma_kernel<true, false><<<grid, kThreads, kSmem, ctx.stream>>>(p, maps);
  else mla_prefill_wgmma_kernel<false, false><<<grid, kThreads, kSmem, ctx.stream>>>(p, maps);
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace ds::gpu
