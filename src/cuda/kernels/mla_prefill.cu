// MLA prefill flash attention (see mla_prefill.h). CTA = 64 queries of one (sequence, head), 4 warps of
// 16 query rows; key tiles of 64 staged with cp.async (two stages for bf16). Per tile each warp computes
// S = Q·Kᵀ (16 x 64, 192 dims) on the tensor cores, applies the causal mask and the online softmax in
// registers (a lane owns rows g and g + 8), and accumulates O += P·V (16 x 128) with P taken straight
// from the score accumulators.
#include <cmath>
#include <string>

#include "cuda/cuda_check.h"
#include "cuda/kernels/kda_mma.cuh"
#include "cuda/kernels/mla_prefill.h"
#include "cuda/kernels/mla_prefill_wgmma.h"

namespace ds::gpu {
namespace {

using namespace attn;

constexpr float kLn2 = 0.6931471805599453f;
constexpr int kQk = 192, kNope = 128, kRope = 64, kV = 128, kTileQ = 64, kTileK = 64, kThreads = 128;

template <typename IO> struct PrefillCfg {
  static constexpr int kStages = sizeof(IO) == 2 ? 2 : 1;
  static constexpr int kLdK = padded_ld<IO>(kQk);
  static constexpr int kLdV = padded_ld<IO>(kV);
};

template <typename IO> struct PrefillSmem {
  using C = PrefillCfg<IO>;
  IO q[kTileQ][C::kLdK];
  IO k[C::kStages][kTileK][C::kLdK];
  IO v[C::kStages][kTileK][C::kLdV];
};

template <typename IO>
__global__ void __launch_bounds__(kThreads) mla_prefill_kernel(MlaPrefillParams p) {
  using Mma = typename MmaFor<IO>::type;
  using C = PrefillCfg<IO>;
  constexpr int kLdK = C::kLdK, kLdV = C::kLdV;
  constexpr int kKSteps = kQk / Mma::kK;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  auto& sm = *reinterpret_cast<PrefillSmem<IO>*>(smem_raw);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int qt = blockIdx.x, seq = blockIdx.y, h = blockIdx.z;
  const int qbeg = p.cu_seqlens_q[seq], qlen = p.cu_seqlens_q[seq + 1] - qbeg;
  const int kbeg = p.cu_seqlens_k[seq], klen = p.cu_seqlens_k[seq + 1] - kbeg;
  const int q0 = qt * kTileQ;
  if (q0 >= qlen) return;
  const int offset = klen - qlen;                      // key index of query 0
  const int qend = min(qlen, q0 + kTileQ);
  // the key window (a context piece, or the whole range): keys [kw0, kw1), those the tile's last query
  // sees end at offset + qend
  const int kw0 = p.k_begin, kw1 = p.k_end > 0 ? min(p.k_end, klen) : klen;
  const int kvis = min(kw1, offset + qend);
  const int ntiles = kvis > kw0 ? (kvis - kw0 + kTileK - 1) / kTileK : 0;

  const IO* qg = static_cast<const IO*>(p.q) + int64_t(qbeg + q0) * p.ldq + h * p.hq;
  load_tile_async(&sm.q[0][0], kLdK, qg, p.ldq, kTileQ, kQk, qend - q0, tid, kThreads);
  cp_async_commit();
  auto issue = [&](int t) {
    if (t < ntiles) {
      const int j0 = kw0 + t * kTileK, valid = min(kTileK, kw1 - j0);
      const int64_t row0 = kbeg + j0;
      const int s = t % C::kStages;
      load_tile_async(&sm.k[s][0][0], kLdK, static_cast<const IO*>(p.k_nope) + row0 * p.ldkn + h * p.hkn, p.ldkn,
                      kTileK, kNope, valid, tid, kThreads);
      load_tile_async(&sm.k[s][0][kNope], kLdK, static_cast<const IO*>(p.k_pe) + row0 * p.ldkpe, p.ldkpe, kTileK,
                      kRope, valid, tid, kThreads);
      load_tile_async(&sm.v[s][0][0], kLdV, static_cast<const IO*>(p.v) + row0 * p.ldv + h * p.hv, p.ldv, kTileK,
                      kV, valid, tid, kThreads);
    }
    cp_async_commit();
  };
  if constexpr (C::kStages > 1) issue(0);
  cp_async_wait<C::kStages - 1>();
  __syncthreads();

  typename Mma::A qa[sizeof(IO) == 2 ? kKSteps : 1];
  if constexpr (sizeof(IO) == 2) {
#pragma unroll
    for (int ks = 0; ks < kKSteps; ++ks) qa[ks] = Mma::load_a(&sm.q[16 * warp][ks * Mma::kK], kLdK, lane);
  }

  const float scale_log2 = p.scale * kLog2e;
  const int qpos0 = offset + q0 + 16 * warp + (lane >> 2);  // position of row g; row g + 8 is +8
  float o[16][4] = {};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  for (int t = 0; t < ntiles; ++t) {
    if constexpr (C::kStages == 1) issue(t);
    cp_async_wait<0>();
    __syncthreads();
    if constexpr (C::kStages > 1) issue(t + 1);
    const int s = t % C::kStages;

    float sc[8][4] = {};
#pragma unroll
    for (int ks = 0; ks < kKSteps; ++ks) {
      typename Mma::A a;
      if constexpr (sizeof(IO) == 2) a = qa[ks];
      else a = Mma::load_a(&sm.q[16 * warp][ks * Mma::kK], kLdK, lane);
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) Mma::mma(sc[nt], a, Mma::load_b(&sm.k[s][8 * nt][ks * Mma::kK], kLdK, lane));
    }
    // mask + online softmax (rows g: e = 0, 1; g + 8: e = 2, 3)
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int kp = kw0 + t * kTileK + 8 * nt + c_col(e, lane);
        const float x = kp < kw1 && kp <= qpos0 + 8 * (e >> 1) ? sc[nt][e] * scale_log2 : -INFINITY;
        sc[nt][e] = x;
        mx[e >> 1] = fmaxf(mx[e >> 1], x);
      }
    // a row that has seen no key yet (a piece beyond it) keeps m = -inf: its probabilities use 0 as
    // the reference (they are all exp2(-inf) = 0), so no inf - inf appears
    float alpha[2], mref[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
      const float mn = fmaxf(m[i], mx[i]);
      mref[i] = mn == -INFINITY ? 0.f : mn;
      alpha[i] = fast_exp2(m[i] - mref[i]);
      m[i] = mn;
      l[i] *= alpha[i];
    }
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float pv = fast_exp2(sc[nt][e] - mref[e >> 1]);
        sc[nt][e] = pv;
        l[e >> 1] += pv;
      }
#pragma unroll
    for (int nt = 0; nt < 16; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[nt][e] *= alpha[e >> 1];
    // O += P·V (fp32 path: per-tile fresh accumulators added in IEEE fp32, see kda_mma.cuh)
    {
      constexpr bool kSplit = Mma::kSplitAccum;
      float tacc[kSplit ? 16 : 1][4] = {};
#pragma unroll
      for (int ks = 0; ks < kTileK / Mma::kK; ++ks) {
        const typename Mma::A a = Mma::a_from_c(sc[ks * Mma::kCTiles], sc[ks * Mma::kCTiles + Mma::kCTiles - 1]);
#pragma unroll
        for (int nt = 0; nt < 16; ++nt) {
          const typename Mma::B b = Mma::load_b_km_c(&sm.v[s][ks * Mma::kK][8 * nt], kLdV, lane);
          if constexpr (kSplit) Mma::mma(tacc[nt], a, b);
          else Mma::mma(o[nt], a, b);
        }
      }
      if constexpr (kSplit) {
#pragma unroll
        for (int nt = 0; nt < 16; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) o[nt][e] += tacc[nt][e];
      }
    }
    __syncthreads();
  }
  cp_async_wait<0>();

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
  }
  IO* og = static_cast<IO*>(p.o);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int row = q0 + 16 * warp + (lane >> 2) + 8 * i;
    if (row >= qlen) continue;
    const bool seen = l[i] > 0.f;  // false: no key of the window is visible to this row
    const float inv = seen ? 1.f / l[i] : 0.f;
    if (p.lse && (lane & 3) == 0)
      p.lse[int64_t(qbeg + row) * p.ld_lse + h] = seen ? (m[i] + log2f(l[i])) * kLn2 : -INFINITY;
    IO* dst = og + int64_t(qbeg + row) * p.ldo + h * kV;
#pragma unroll
    for (int nt = 0; nt < 16; ++nt) {
      const int f = 8 * nt + 2 * (lane & 3);
      const float x0 = o[nt][2 * i] * inv, x1 = o[nt][2 * i + 1] * inv;
      if constexpr (sizeof(IO) == 2) *reinterpret_cast<uint32_t*>(dst + f) = pack_bf16(x0, x1);
      else *reinterpret_cast<float2*>(dst + f) = make_float2(x0, x1);
    }
  }
}

template <typename IO> void launch(const MlaPrefillParams& p, const DeviceContext& ctx) {
  const size_t smem = sizeof(PrefillSmem<IO>);
  const dim3 grid((p.max_seqlen_q + kTileQ - 1) / kTileQ, p.num_seqs, p.num_heads);
  mla_prefill_kernel<IO><<<grid, kThreads, smem, ctx.stream>>>(p);
  DS_CUDA_CHECK_LAUNCH();
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

}  // namespace

void configure_mla_prefill(const DeviceContext& ctx) {
  set_max_dynamic_smem(mla_prefill_kernel<bf16>, sizeof(PrefillSmem<bf16>));
  set_max_dynamic_smem(mla_prefill_kernel<float>, sizeof(PrefillSmem<float>));
  configure_mla_prefill_wgmma(ctx);
}

void run_mla_prefill(const MlaPrefillParams& p0, DType act, const DeviceContext& ctx) {
  MlaPrefillParams p = p0;
  DS_GPU_REQUIRE(act == DType::BF16 || act == DType::F32, "mla prefill: activations must be bf16 or fp32");
  DS_GPU_REQUIRE(p.num_heads > 0 && p.num_seqs >= 0 && p.max_seqlen_q >= 0, "mla prefill: bad sizes");
  if (p.num_seqs == 0 || p.max_seqlen_q == 0) return;
  DS_GPU_REQUIRE(p.q && p.k_nope && p.k_pe && p.v && p.o && p.cu_seqlens_q && p.cu_seqlens_k,
                 "mla prefill: null pointer argument");
  const int64_t H = p.num_heads;
  if (p.ldq == 0) p.ldq = H * kQk;
  if (p.hq == 0) p.hq = kQk;
  if (p.ldkn == 0) p.ldkn = H * kNope;
  if (p.hkn == 0) p.hkn = kNope;
  if (p.ldkpe == 0) p.ldkpe = kRope;
  if (p.ldv == 0) p.ldv = H * kV;
  if (p.hv == 0) p.hv = kV;
  if (p.ldo == 0) p.ldo = H * kV;
  for (int64_t s : {p.ldq, p.hq, p.ldkn, p.hkn, p.ldkpe, p.ldv, p.hv, p.ldo})
    DS_GPU_REQUIRE(s % 8 == 0, "mla prefill: strides must be multiples of 8 elements");
  const void* ptrs[] = {p.q, p.k_nope, p.k_pe, p.v, p.o};
  for (const void* ptr : ptrs) DS_GPU_REQUIRE(aligned16(ptr), "mla prefill: tensors must be 16-byte aligned");
  if (p.scale == 0.f) p.scale = float(1.0 / std::sqrt(192.0));
  if (p.ld_lse == 0) p.ld_lse = H;
  DS_GPU_REQUIRE(p.k_begin >= 0 && p.k_end >= 0 && (p.k_end == 0 || p.k_end > p.k_begin),
                 "mla prefill: bad key window [" + std::to_string(p.k_begin) + ", " + std::to_string(p.k_end) + ")");
  if (act == DType::BF16 && ctx.switches.wgmma && mla_prefill_wgmma_supported(ctx)) launch_mla_prefill_wgmma(p, ctx);
  else if (act == DType::BF16) launch<bf16>(p, ctx);
  else launch<float>(p, ctx);
}

}  // namespace ds::gpu
