// KDA chunked prefill, kernel 1 of 2: the intra-chunk part (one CTA of 256 threads per chunk and head).
//
// For one chunk of up to 64 tokens (rows past the sequence end are zero: g = 0, k = q = v = 0) it writes
// to the workspace, in the activation type IO:
//   Qg  [64][128]  q̂_i ⊙ 2^Γ_i                    (Γ: in-chunk inclusive cumsum of g, in log2 units)
//   KdT [128][64]  k̂_j ⊙ 2^(Γ_63 − Γ_j), transposed (the decay from token j to the chunk end)
//   W   [64][128]  T·diag(β)·(2^Γ ⊙ K̂)             with T = (I + A)^-1
//   U   [64][128]  T·diag(β)·V
//   M   [64][64]   M[i][j] = Σ_d q̂_i k̂_j 2^(Γ_i − Γ_j) for j <= i, else 0
// and gamma_last[128] = 2^Γ_63 in fp32. A[i][j] = β_i Σ_d k̂_i k̂_j 2^(Γ_i − Γ_j) for j < i.
// The 64x64 products are done in 16x16 tiles (I, J), J <= I, on the tensor cores, with the decay factored
// through the first row n = 16·I of the tile's block-row: 2^(Γ_i − Γ_j) = 2^(Γ_i − Γ_n)·2^(Γ_n − Γ_j).
// Off the diagonal j < n <= i, so both factors are <= 1. On the diagonal the right factor is >= 1 and
// bounded by the decay inside the 16-token block; where that exceeds 2^96 the tile is computed element by
// element instead (exponentials of differences only), so nothing overflows however strong the gate.
// The exp-scaled operands are formed once in shared memory (vectorised passes) and read with ldmatrix.
#pragma once
#include "cuda/kernels/kda_mma.cuh"
#include "cuda/kernels/kda_prefill.h"

namespace ds::gpu::kda {

using namespace attn;

constexpr int kChunk = 64;
constexpr int kDim = 128;
constexpr int kIntraThreads = 256;
constexpr float kMaxDiagSpan = 96.f;  // log2 decay span inside a diagonal tile still factored safely

// Per (chunk, head) block of the workspace, in elements of the activation type.
struct Work {
  static constexpr int64_t kQg = 0, kKdT = 64 * 128, kW = 2 * 64 * 128, kU = 3 * 64 * 128,
                           kM = 4 * 64 * 128, kElems = 4 * 64 * 128 + 64 * 64;
  void* blocks = nullptr;        // [max_chunks, H, kElems] IO
  float* gamma_last = nullptr;   // [max_chunks, H, 128] fp32
};

// Warp-cooperative: the sequence holding global chunk b and the chunk's index inside it (seq = -1
// past the last chunk). Chunks are numbered sequence after sequence, ceil(len / 64) per sequence.
__device__ inline void locate_chunk(const int32_t* cu, int n, int b, int lane, int& seq, int& c) {
  int base = 0;
  for (int s0 = 0; s0 < n; s0 += 32) {
    const int s = s0 + lane;
    const int nc = s < n ? (cu[s + 1] - cu[s] + kChunk - 1) / kChunk : 0;
    int incl = nc;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int y = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += y;
    }
    const int excl = base + incl - nc;
    const unsigned m = __ballot_sync(0xffffffffu, nc > 0 && b >= excl && b < excl + nc);
    if (m) {
      const int src = __ffs(m) - 1;
      seq = s0 + src;
      c = b - __shfl_sync(0xffffffffu, excl, src);
      return;
    }
    base += __shfl_sync(0xffffffffu, incl, 31);
  }
  seq = -1;
  c = 0;
}

// Warp-cooperative: number of chunks of the sequences before `seq`.
__device__ inline int chunks_before(const int32_t* cu, int seq, int lane) {
  int base = 0;
  for (int s0 = 0; s0 < seq; s0 += 32) {
    const int s = s0 + lane;
    int nc = s < seq ? (cu[s + 1] - cu[s] + kChunk - 1) / kChunk : 0;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) nc += __shfl_xor_sync(0xffffffffu, nc, o);
    base += nc;
  }
  return base;
}

template <typename IO> __device__ __forceinline__ void store_vec16(IO* dst, const float* v);
template <> __device__ __forceinline__ void store_vec16<float>(float* dst, const float* v) {
  *reinterpret_cast<float4*>(dst) = make_float4(v[0], v[1], v[2], v[3]);
}
template <> __device__ __forceinline__ void store_vec16<bf16>(bf16* dst, const float* v) {
  *reinterpret_cast<uint4*>(dst) =
      make_uint4(pack_bf16(v[0], v[1]), pack_bf16(v[2], v[3]), pack_bf16(v[4], v[5]), pack_bf16(v[6], v[7]));
}
// Two consecutive elements.
template <typename IO> __device__ __forceinline__ void store_pair(IO* dst, float a, float b);
template <> __device__ __forceinline__ void store_pair<float>(float* dst, float a, float b) {
  *reinterpret_cast<float2*>(dst) = make_float2(a, b);
}
template <> __device__ __forceinline__ void store_pair<bf16>(bf16* dst, float a, float b) {
  *reinterpret_cast<uint32_t*>(dst) = pack_bf16(a, b);
}


template <typename IO> struct IntraSmem {
  static constexpr int kLdX = padded_ld<IO>(kDim);
  static constexpr int kLdT = padded_ld<IO>(kChunk);
  IO q[kChunk][kLdX];      // raw q, then Lq = q̂_i ⊙ 2^(Γ_i − Γ_n(i))          (n(i) = 16·(i / 16))
  IO k[kChunk][kLdX];      // raw k
  IO x[kChunk][kLdX];      // Lk = k̂_i ⊙ 2^(Γ_i − Γ_n(i)), then Xw = k̂_i ⊙ 2^Γ_i
  IO r[kChunk][kLdX];      // right operands of one round of tiles k̂_j ⊙ 2^(Γ_n − Γ_j); then raw v
  float gam[kChunk][132];  // Γ (log2 units), inclusive cumsum; then T, its workspace and T·diag(β)
  // Strictly lower A (β_i k̂_i·k̂_j 2^(Γ_i − Γ_j)); the upper part is unused. Stored in the activation
  // type: in bf16 that keeps the CTA under 113 KB of shared memory, i.e. two CTAs per SM (the bf16 path
  // rounds its MMA operands to bf16 anyway); fp32 keeps fp32.
  IO A[kChunk][kLdT];
  float rq[kChunk];        // scale / ||q_i||
  float rk[kChunk];        // 1 / ||k_i||
  float beta[kChunk];
  int unsafe[4];           // diagonal block I decays by more than 2^kMaxDiagSpan
};

// Views into the Γ storage once Γ is no longer needed.
template <typename IO> struct TViews {
  float (*T)[68];          // dense fp32 T = (I + A)^-1
  float (*ybuf)[16][17];   // block products during the inversion
  IO (*tb)[IntraSmem<IO>::kLdT];  // T·diag(β) in IO, the MMA operand (aliases T for fp32)
  __device__ explicit TViews(IntraSmem<IO>& sm) {
    float* base = &sm.gam[0][0];
    T = reinterpret_cast<float(*)[68]>(base);
    ybuf = reinterpret_cast<float(*)[16][17]>(base + 64 * 68);
    if constexpr (sizeof(IO) == 4) tb = reinterpret_cast<IO(*)[IntraSmem<IO>::kLdT]>(base);
    else tb = reinterpret_cast<IO(*)[IntraSmem<IO>::kLdT]>(base + 64 * 68 + 3 * 16 * 17);
  }
};
static_assert(64 * 68 + 3 * 16 * 17 + 64 * 72 / 2 <= 64 * 132, "T views must fit the Γ storage");

// The tiles come in three rounds so that their right operands fit the 64-row buffer sm.r:
//   round 0: block-row 3 (64 right rows); round 1: block-rows 2 (48, at row 0) and 0 (16, at row 48);
//   round 2: block-row 1 (32). Block-row I of a round, or -1.
__device__ __forceinline__ int round_block_row(int round, int which) {
  if (round == 0) return which == 0 ? 3 : -1;
  if (round == 1) return which == 0 ? 2 : 0;
  return which == 0 ? 1 : -1;
}
__device__ __forceinline__ int round_offset(int round, int which) { return round == 1 && which == 1 ? 48 : 0; }
// Work item w (one per warp) of a round: tile (I, J), n8 half nt, right-operand row offset; false if none.
__device__ __forceinline__ bool round_item(int round, int w, int& I, int& J, int& nt, int& roff) {
  nt = w & 1;
  const int t = w >> 1;
  roff = 0;
  if (round == 0) {
    I = 3;
    J = t;
    return true;
  }
  if (round == 1) {
    if (t < 3) {
      I = 2;
      J = t;
    } else {
      I = J = 0;
      roff = 48;
    }
    return true;
  }
  I = 1;
  J = t;
  return t < 2;
}

// Half tile (I, J, n8 half nt) of A (to shared) and M (to global) on the tensor cores.
template <typename IO, typename Mma>
__device__ void intra_tile_mma(IntraSmem<IO>& sm, int I, int J, int nt, int roff, IO* Mg, int lane) {
  constexpr int kLdX = IntraSmem<IO>::kLdX;
  float accA[4] = {}, accM[4] = {};
#pragma unroll
  for (int d0 = 0; d0 < kDim; d0 += Mma::kK) {
    const typename Mma::A ak = Mma::load_a(&sm.x[16 * I][d0], kLdX, lane);
    const typename Mma::A aq = Mma::load_a(&sm.q[16 * I][d0], kLdX, lane);
    const typename Mma::B b = Mma::load_b(&sm.r[roff + 16 * J + 8 * nt][d0], kLdX, lane);
    Mma::mma(accA, ak, b);
    Mma::mma(accM, aq, b);
  }
#pragma unroll
  for (int e = 0; e < 4; e += 2) {
    const int i = 16 * I + c_row(e, lane), j = 16 * J + 8 * nt + c_col(e, lane);
    const float bi = sm.beta[i];
    store_pair<IO>(&sm.A[i][j], j < i ? accA[e] * bi : 0.f, j + 1 < i ? accA[e + 1] * bi : 0.f);
    store_pair<IO>(Mg + i * kChunk + j, j <= i ? accM[e] : 0.f, j + 1 <= i ? accM[e + 1] : 0.f);
  }
}

// Half of diagonal tile I element by element (exponentials of differences Γ_i − Γ_j, i >= j only).
// q is re-read from global memory: sm.q already holds Lq.
template <typename IO>
__device__ void intra_tile_exact(IntraSmem<IO>& sm, int I, int nt, const IO* qg, int64_t ldq, int L, IO* Mg,
                                 int lane) {
  for (int idx = lane; idx < 128; idx += 32) {
    const int r = idx >> 3, c = 8 * nt + (idx & 7), i = 16 * I + r, j = 16 * I + c;
    float sa = 0.f, smq = 0.f;
    if (c <= r && i < L) {
      for (int d = 0; d < kDim; ++d) {
        const float kj = to_float(sm.k[j][d]) * fast_exp2(sm.gam[i][d] - sm.gam[j][d]);
        sa = fmaf(to_float(sm.k[i][d]), kj, sa);
        smq = fmaf(to_float(qg[i * ldq + d]), kj, smq);
      }
    }
    sm.A[i][j] = from_float<IO>(c < r ? sa * sm.beta[i] * sm.rk[i] * sm.rk[j] : 0.f);
    Mg[i * kChunk + j] = from_float<IO>(c <= r ? smq * sm.rq[i] * sm.rk[j] : 0.f);
  }
}

// T = (I + A)^-1 (unit lower triangular) for the strictly lower 64x64 A in sm.A, dense into tv.T:
// diagonal 16x16 blocks by forward substitution, then T_IJ = −T_II Σ_{K=J}^{I−1} A_IK T_KJ.
template <typename IO>
__device__ void invert_unit_lower(IntraSmem<IO>& sm, const TViews<IO>& tv, int tid) {
  float(*T)[68] = tv.T;
  if (tid < 64) {
    const int I = tid >> 4, c = tid & 15, base = 16 * I;
    float x[16];
#pragma unroll
    for (int r = 0; r < 16; ++r) {
      float s = 0.f;
#pragma unroll
      for (int l = 0; l < r; ++l) s = fmaf(to_float(sm.A[base + r][base + l]), x[l], s);
      x[r] = r < c ? 0.f : (r == c ? 1.f : -s);
    }
#pragma unroll
    for (int r = 0; r < 16; ++r) T[base + r][base + c] = x[r];
  } else {
    for (int idx = tid - 64; idx < 64 * 64; idx += kIntraThreads - 64) {  // zero the upper off-diagonal blocks
      const int i = idx >> 6, j = idx & 63;
      if ((j >> 4) > (i >> 4)) T[i][j] = 0.f;
    }
  }
  __syncthreads();
  for (int dist = 1; dist < 4; ++dist) {
    const int nblk = 4 - dist;
    for (int idx = tid; idx < nblk * 256; idx += kIntraThreads) {
      const int J = idx >> 8, I = J + dist, r = (idx >> 4) & 15, c = idx & 15;
      const int i = 16 * I + r, j = 16 * J + c;
      float s = 0.f;
      for (int K = J; K < I; ++K) {
#pragma unroll
        for (int m = 0; m < 16; ++m) s = fmaf(to_float(sm.A[i][16 * K + m]), T[16 * K + m][j], s);
      }
      tv.ybuf[J][r][c] = s;
    }
    __syncthreads();
    for (int idx = tid; idx < nblk * 256; idx += kIntraThreads) {
      const int J = idx >> 8, I = J + dist, r = (idx >> 4) & 15, c = idx & 15;
      float s = 0.f;
#pragma unroll
      for (int m = 0; m < 16; ++m) s = fmaf(T[16 * I + r][16 * I + m], tv.ybuf[J][m][c], s);
      T[16 * I + r][16 * J + c] = -s;
    }
    __syncthreads();
  }
}

template <typename IO> __device__ __forceinline__ void load_vec16(const IO* src, float* v) {
  if constexpr (sizeof(IO) == 4) {
    const float4 f = *reinterpret_cast<const float4*>(src);
    v[0] = f.x;
    v[1] = f.y;
    v[2] = f.z;
    v[3] = f.w;
  } else {
    const uint4 u = *reinterpret_cast<const uint4*>(src);
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      v[2 * i] = __uint_as_float(w[i] << 16);
      v[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
  }
}

template <typename IO>
__global__ void __launch_bounds__(kIntraThreads, sizeof(IO) == 2 ? 2 : 1) kda_intra_kernel(KdaPrefillParams p, Work w) {
  using Mma = typename MmaFor<IO>::type;
  constexpr int kLdX = IntraSmem<IO>::kLdX, kLdT = IntraSmem<IO>::kLdT;
  constexpr int kVec = 16 / sizeof(IO);  // elements per 16-byte vector
  constexpr int kVpr = kDim / kVec;      // vectors per 128-wide row
  extern __shared__ __align__(16) unsigned char smem_raw[];
  auto& sm = *reinterpret_cast<IntraSmem<IO>*>(smem_raw);
  __shared__ int s_loc[2];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int b = blockIdx.x, h = blockIdx.y, H = p.num_heads;
  if (warp == 0) {
    int seq, c;
    locate_chunk(p.cu_seqlens, p.num_seqs, b, lane, seq, c);
    if (lane == 0) {
      s_loc[0] = seq;
      s_loc[1] = c;
    }
  }
  __syncthreads();
  const int seq = s_loc[0];
  if (seq < 0) return;
  const int t0 = p.cu_seqlens[seq] + kChunk * s_loc[1];
  const int L = min(kChunk, p.cu_seqlens[seq + 1] - t0);
  const IO* qg = static_cast<const IO*>(p.q) + t0 * p.ldq + h * kDim;

  // ---- load q, k, v, g (rows >= L are zero) and β
  load_tile_async(&sm.q[0][0], kLdX, qg, p.ldq, kChunk, kDim, L, tid, kIntraThreads);
  load_tile_async(&sm.k[0][0], kLdX, static_cast<const IO*>(p.k) + t0 * p.ldk + h * kDim, p.ldk, kChunk, kDim, L,
                  tid, kIntraThreads);
  load_tile_async(&sm.gam[0][0], 132, p.g + (int64_t(t0) * H + h) * kDim, int64_t(H) * kDim, kChunk, kDim, L, tid,
                  kIntraThreads);
  cp_async_commit();
  if (tid < kChunk) sm.beta[tid] = tid < L ? p.beta[int64_t(t0 + tid) * H + h] : 0.f;
  cp_async_wait<0>();
  __syncthreads();

  // ---- Γ: inclusive cumsum per channel, in registers: two halves of 32 rows, the second offset by the first
  {
    const int d = tid & 127, half = tid >> 7;
    float vals[32];
#pragma unroll
    for (int i = 0; i < 32; ++i) vals[i] = sm.gam[32 * half + i][d];
    float run = 0.f;
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      run += vals[i] * kLog2e;
      vals[i] = run;
    }
    if (half == 0) {
#pragma unroll
      for (int i = 0; i < 32; ++i) sm.gam[i][d] = vals[i];
    }
    __syncthreads();
    if (half == 1) {
      const float off = sm.gam[31][d];
#pragma unroll
      for (int i = 0; i < 32; ++i) sm.gam[32 + i][d] = vals[i] + off;
    }
  }
  // ---- inverse norms: warp w, rows 8w..8w+7, four lanes per row
  {
    const int i = 8 * warp + (lane >> 2), part = lane & 3;
    float sq = 0.f, sk = 0.f;
#pragma unroll
    for (int c = 0; c < 32; c += kVec) {
      float a[kVec], kk[kVec];
      load_vec16<IO>(&sm.q[i][32 * part + c], a);
      load_vec16<IO>(&sm.k[i][32 * part + c], kk);
#pragma unroll
      for (int e = 0; e < kVec; ++e) {
        sq = fmaf(a[e], a[e], sq);
        sk = fmaf(kk[e], kk[e], sk);
      }
    }
#pragma unroll
    for (int o = 1; o < 4; o <<= 1) {
      sq += __shfl_xor_sync(0xffffffffu, sq, o);
      sk += __shfl_xor_sync(0xffffffffu, sk, o);
    }
    if (part == 0) {
      sm.rq[i] = p.scale / sqrtf(sq + 1e-6f);
      sm.rk[i] = 1.f / sqrtf(sk + 1e-6f);
    }
  }
  __syncthreads();

  IO* blk = static_cast<IO*>(w.blocks) + (int64_t(b) * H + h) * Work::kElems;
  // ---- row pass: Qg (global), Lq (in place of q), Lk (x)
  for (int idx = tid; idx < kChunk * kVpr; idx += kIntraThreads) {
    const int i = idx / kVpr, d0 = (idx % kVpr) * kVec, n = i & ~15;
    float qv[kVec], kv[kVec], lq[kVec], lk[kVec], qo[kVec];
    load_vec16<IO>(&sm.q[i][d0], qv);
    load_vec16<IO>(&sm.k[i][d0], kv);
    const float rq = sm.rq[i], rk = sm.rk[i];
#pragma unroll
    for (int e = 0; e < kVec; ++e) {
      const float gi = sm.gam[i][d0 + e];
      const float er = fast_exp2(gi - sm.gam[n][d0 + e]);
      qo[e] = qv[e] * rq * fast_exp2(gi);
      lq[e] = qv[e] * rq * er;
      lk[e] = kv[e] * rk * er;
    }
    store_vec16<IO>(blk + Work::kQg + i * kDim + d0, qo);
    store_vec16<IO>(&sm.q[i][d0], lq);
    store_vec16<IO>(&sm.x[i][d0], lk);
  }
  // ---- KdT[d][j] = k̂_j[d]·2^(Γ_63 − Γ_j) (lanes along d: conflict-free shared reads)
  for (int idx = tid; idx < kDim * (kChunk / kVec); idx += kIntraThreads) {
    const int d = idx % kDim, j0 = (idx / kDim) * kVec;
    const float glast = sm.gam[kChunk - 1][d];
    float vals[kVec];
#pragma unroll
    for (int e = 0; e < kVec; ++e)
      vals[e] = to_float(sm.k[j0 + e][d]) * sm.rk[j0 + e] * fast_exp2(glast - sm.gam[j0 + e][d]);
    store_vec16<IO>(blk + Work::kKdT + d * kChunk + j0, vals);
  }
  if (tid < kDim) w.gamma_last[(int64_t(b) * H + h) * kDim + tid] = fast_exp2(sm.gam[kChunk - 1][tid]);
  if (warp < 4) {
    float span = 0.f;
    for (int d = lane; d < kDim; d += 32) span = fmaxf(span, sm.gam[16 * warp][d] - sm.gam[16 * warp + 15][d]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) span = fmaxf(span, __shfl_xor_sync(0xffffffffu, span, o));
    if (lane == 0) sm.unsafe[warp] = !(span <= kMaxDiagSpan);  // NaN counts as unsafe
  }
  IO* Mg = blk + Work::kM;
  for (int idx = tid; idx < kChunk * kChunk; idx += kIntraThreads) {
    const int i = idx >> 6, j = idx & 63;
    if ((j >> 4) > (i >> 4)) Mg[idx] = from_float<IO>(0.f);
  }
  __syncthreads();

  // ---- A and M, in three rounds of right operands
  for (int round = 0; round < 3; ++round) {
    for (int which = 0; which < 2; ++which) {
      const int I = round_block_row(round, which);
      if (I < 0) continue;
      const int roff = round_offset(round, which), n = 16 * I, rows = 16 * (I + 1);
      for (int idx = tid; idx < rows * kVpr; idx += kIntraThreads) {
        const int j = idx / kVpr, d0 = (idx % kVpr) * kVec;
        float kv[kVec];
        load_vec16<IO>(&sm.k[j][d0], kv);
        const float rk = sm.rk[j];
#pragma unroll
        for (int e = 0; e < kVec; ++e) kv[e] *= rk * fast_exp2(sm.gam[n][d0 + e] - sm.gam[j][d0 + e]);
        store_vec16<IO>(&sm.r[roff + j][d0], kv);
      }
    }
    __syncthreads();
    int I, J, nt, roff;
    if (round_item(round, warp, I, J, nt, roff)) {
      if (I == J && sm.unsafe[I]) intra_tile_exact<IO>(sm, I, nt, qg, p.ldq, L, Mg, lane);
      else intra_tile_mma<IO, Mma>(sm, I, J, nt, roff, Mg, lane);
    }
    __syncthreads();
  }

  // ---- raw v into the free right-operand buffer (lands while Xw and T are formed)
  load_tile_async(&sm.r[0][0], kLdX, static_cast<const IO*>(p.v) + t0 * p.ldv + h * kDim, p.ldv, kChunk, kDim, L,
                  tid, kIntraThreads);
  cp_async_commit();

  // ---- Xw = k̂ ⊙ 2^Γ (in place of Lk); β goes into T·diag(β)
  for (int idx = tid; idx < kChunk * kVpr; idx += kIntraThreads) {
    const int i = idx / kVpr, d0 = (idx % kVpr) * kVec;
    float kv[kVec];
    load_vec16<IO>(&sm.k[i][d0], kv);
    const float s = sm.rk[i];
#pragma unroll
    for (int e = 0; e < kVec; ++e) kv[e] *= s * fast_exp2(sm.gam[i][d0 + e]);
    store_vec16<IO>(&sm.x[i][d0], kv);
  }
  __syncthreads();  // Γ is dead from here on: its storage holds T

  // ---- T = (I + A)^-1, then T·diag(β) as the MMA operand (W = T·diag(β)·Xw, U = T·diag(β)·V)
  const TViews<IO> tv(sm);
  invert_unit_lower<IO>(sm, tv, tid);
  for (int idx = tid; idx < kChunk * kChunk; idx += kIntraThreads) {
    const int i = idx >> 6, l = idx & 63;
    tv.tb[i][l] = from_float<IO>(tv.T[i][l] * sm.beta[l]);  // in place for fp32 (same element)
  }
  cp_async_wait<0>();
  __syncthreads();
  IO(*tm)[kLdT] = tv.tb;

  // ---- W = T·Xw, U = T·Xu; warp: rows 16·I.., columns 64·nh..
  {
    const int I = warp & 3, nh = warp >> 2;
    float accW[8][4] = {}, accU[8][4] = {};
    for (int l0 = 0; l0 < 16 * (I + 1); l0 += Mma::kK) {
      const typename Mma::A a = Mma::load_a(&tm[16 * I][l0], kLdT, lane);
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        const int d = 64 * nh + 8 * nt;
        Mma::mma(accW[nt], a, Mma::load_b_km(&sm.x[l0][d], kLdX, lane));
        Mma::mma(accU[nt], a, Mma::load_b_km(&sm.r[l0][d], kLdX, lane));
      }
    }
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; e += 2) {
        const int i = 16 * I + c_row(e, lane), d = 64 * nh + 8 * nt + c_col(e, lane);
        store_pair<IO>(blk + Work::kW + i * kDim + d, accW[nt][e], accW[nt][e + 1]);
        store_pair<IO>(blk + Work::kU + i * kDim + d, accU[nt][e], accU[nt][e + 1]);
      }
    }
  }
}

}  // namespace ds::gpu::kda
