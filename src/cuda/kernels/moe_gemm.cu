#include <cuda_fp8.h>

#include "cuda/kernels/common.cuh"
#include "cuda/kernels/moe_gemm.h"
#include "cuda/kernels/moe_gemm_fp8_wgmma.h"
#include "cuda/kernels/moe_gemm_frag.h"
#include "cuda/kernels/moe_gemm_wgmma.h"

namespace ds::gpu {
namespace {

constexpr int kBM = 128, kStages = 3, kThreads = 256, kPad = 8;

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldmatrix_x4(unsigned* r, const void* p) {
  unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
}
__device__ __forceinline__ void ldmatrix_x2(unsigned* r, const void* p) {
  unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(s));
}
__device__ __forceinline__ void mma_bf16(float* d, const unsigned* a, const unsigned* b) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Warp grid over the 128 x BN tile: BN 64 -> 4 x 2 warps of 32 x 32; BN 16 -> 8 x 1 warps of 16 x 16.
template <int BN, int BK> struct Layout {
  static constexpr int kLd = BK + kPad;  // shared-memory row stride (elements): 16-byte rows, ldmatrix
                                         // rows land in different bank groups
  static constexpr int CA = kBM * (BK / 8) / kThreads;               // A chunks per thread
  static constexpr int CB = (BN * (BK / 8) + kThreads - 1) / kThreads;  // B chunks per thread
  static constexpr int WN = BN == 64 ? 2 : 1;
  static constexpr int WM = 8 / WN;
  static constexpr int TM = kBM / WM, TN = BN / WN;  // warp tile
  static constexpr int MI = TM / 16, NI = TN / 8;
  static constexpr size_t kPipe = size_t(kStages) * (kBM + BN) * kLd * 2;
  static constexpr size_t kEpi = size_t(kBM) * (BN + 4) * 4;
  static constexpr size_t kSmem = kPipe > kEpi ? kPipe : kEpi;
};

// 8 e4m3 weights (8 bytes) times their scale as 8 bf16 (one 16-byte shared-memory chunk).
__device__ __forceinline__ uint4 fp8x8_to_bf16x8(uint2 v, float s) {
  const uint32_t w[2] = {v.x, v.y};
  uint32_t out[4];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const __half2_raw lo = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(w[i] & 0xffffu), __NV_E4M3);
    const __half2_raw hi = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(w[i] >> 16), __NV_E4M3);
    const float2 a = __half22float2(__half2(lo)), b = __half22float2(__half2(hi));
    const __nv_bfloat162 p0 = __floats2bfloat162_rn(a.x * s, a.y * s), p1 = __floats2bfloat162_rn(b.x * s, b.y * s);
    out[2 * i] = *reinterpret_cast<const uint32_t*>(&p0);
    out[2 * i + 1] = *reinterpret_cast<const uint32_t*>(&p1);
  }
  return make_uint4(out[0], out[1], out[2], out[3]);
}

// This block's token tile: its first row r0 (of the permuted order), rows in it and weight matrix.
// Grouped: found from the active experts' row ranges (tiles of BN rows); dense: tile blockIdx.y of
// rows 0..dense_rows-1 of matrix 0. False when the block has no tile (the grid is sized by a bound).
struct TokenTile {
  int r0, rows, expert;
};
template <int BN>
__device__ __forceinline__ bool find_token_tile(const MoeGemmParams& p, int* scan_tmp, TokenTile& t) {
  if (p.dense_rows > 0) {
    t.r0 = int(blockIdx.y) * BN;
    t.rows = min(BN, p.dense_rows - t.r0);
    t.expert = 0;
    return t.rows > 0;
  }
  __shared__ int tile_active, tile_index;
  const int tid = threadIdx.x;
  const int na = *p.num_active;
  if (tid == 0) tile_active = -1;
  int base = 0;
  for (int s0 = 0; s0 < na; s0 += kThreads) {
    int s = s0 + tid;
    int tiles = s < na ? (p.active_start[s + 1] - p.active_start[s] + BN - 1) / BN : 0;
    int total = 0;
    int ex = block_exclusive_scan(tiles, scan_tmp, &total);
    int y = int(blockIdx.y);
    if (s < na && y >= base + ex && y < base + ex + tiles) {
      tile_active = s;
      tile_index = y - base - ex;
    }
    base += total;
  }
  __syncthreads();
  const int active = tile_active;
  if (active < 0) return false;
  t.r0 = p.active_start[active] + tile_index * BN;
  t.rows = min(BN, p.active_start[active + 1] - t.r0);
  t.expert = p.active_expert[active];
  return true;
}

// The 16-byte chunks of the tile's x rows (B operand) this thread copies each k step (fixed over K).
template <class L, int BN, int BK> struct XRowChunks {
  static constexpr int KC = BK / 8;
  const bf16* src[L::CB];
  bool act[L::CB], ok[L::CB];
  int dst[L::CB];
  __device__ __forceinline__ XRowChunks(const MoeGemmParams& p, int tid, int r0, int rows) {
#pragma unroll
    for (int i = 0; i < L::CB; ++i) {
      int c = tid + i * kThreads, row = c / KC, kc = (c % KC) * 8;
      act[i] = c < BN * KC;
      ok[i] = act[i] && row < rows;
      int64_t xr = 0;
      if (ok[i]) xr = p.x_rows ? p.x_rows[r0 + row] : r0 + row;
      src[i] = static_cast<const bf16*>(p.x) + xr * p.ldx + kc;
      dst[i] = row * L::kLd + kc;
    }
  }
  __device__ __forceinline__ void issue(bf16* b, int k) const {
#pragma unroll
    for (int i = 0; i < L::CB; ++i)
      if (act[i]) cp_async16(b + dst[i], src[i] + k, ok[i]);
  }
};

// One BK-wide k step of the warp's MI x NI m16n8k16 tiles: A (weights) and B (x rows) in shared memory.
template <class L, int BK>
__device__ __forceinline__ void mma_k_step(float (&acc)[L::MI][L::NI][4], const bf16* a, const bf16* b, int wm,
                                           int wn, int lane) {
  constexpr int kLd = L::kLd;
#pragma unroll
  for (int kk = 0; kk < BK; kk += 16) {
    unsigned af[L::MI][4], bfr[L::NI][2];
#pragma unroll
    for (int i = 0; i < L::MI; ++i) {
      int row = wm * L::TM + i * 16 + (lane & 15);
      ldmatrix_x4(af[i], a + row * kLd + kk + (lane >> 4) * 8);
    }
#pragma unroll
    for (int j = 0; j < L::NI; ++j) {
      int row = wn * L::TN + j * 8 + (lane & 7);
      ldmatrix_x2(bfr[j], b + row * kLd + kk + ((lane >> 3) & 1) * 8);
    }
#pragma unroll
    for (int i = 0; i < L::MI; ++i)
#pragma unroll
      for (int j = 0; j < L::NI; ++j) mma_bf16(acc[i][j], af[i], bfr[j]);
  }
}

// Epilogue through shared memory (C[weight row][token], fp32; smem free): SiLU·mul or store, bf16 out.
template <class L, int BN, bool SILU>
__device__ __forceinline__ void store_tile(const MoeGemmParams& p, const float (&acc)[L::MI][L::NI][4],
                                           unsigned char* smem, int wm, int wn, int lane, int r0, int rows,
                                           int f0) {
  float* C = reinterpret_cast<float*>(smem);
  constexpr int ldc = BN + 4;
#pragma unroll
  for (int i = 0; i < L::MI; ++i)
#pragma unroll
    for (int j = 0; j < L::NI; ++j) {
      int row = wm * L::TM + i * 16 + (lane >> 2);
      int col = wn * L::TN + j * 8 + (lane & 3) * 2;
      C[row * ldc + col] = acc[i][j][0];
      C[row * ldc + col + 1] = acc[i][j][1];
      C[(row + 8) * ldc + col] = acc[i][j][2];
      C[(row + 8) * ldc + col + 1] = acc[i][j][3];
    }
  __syncthreads();
  bf16* Y = static_cast<bf16*>(p.y);
  constexpr int kOut = SILU ? kBM / 2 : kBM;
  for (int idx = threadIdx.x; idx < kOut * rows; idx += kThreads) {
    int f = idx % kOut, j = idx / kOut;
    if (f0 + f >= p.N) continue;
    float v;
    bf16& y = Y[int64_t(r0 + j) * p.ldy + f0 + f];
    if (SILU) v = siluf_(C[f * ldc + j]) * C[(f + 64) * ldc + j];
    else v = C[f * ldc + j] + (p.accumulate ? __bfloat162float(y) : 0.f);
    y = __float2bfloat16_rn(v);
  }
}

// FP8: the weight chunks of stage kt + kStages - 1 are loaded into registers before the stage's MMAs
// and converted into shared memory after them (the buffer they go to was read in the previous iteration).
template <int BN, int BK, bool SILU, bool FP8>
__global__ void __launch_bounds__(kThreads) moe_gemm_kernel(MoeGemmParams p) {
  pdl_trigger();
  pdl_wait();
  using L = Layout<BN, BK>;
  constexpr int kLd = L::kLd;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* sA = reinterpret_cast<bf16*>(smem);             // [stages][128][kLd]
  bf16* sB = sA + size_t(kStages) * kBM * kLd;           // [stages][BN][kLd]
  __shared__ int scan_tmp[32];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  TokenTile tt;
  if (!find_token_tile<BN>(p, scan_tmp, tt)) return;
  const int r0 = tt.r0, rows = tt.rows, expert = tt.expert;
  const bf16* W = static_cast<const bf16*>(p.w) + int64_t(expert) * p.w_matrix_stride;
  const uint8_t* Wq = static_cast<const uint8_t*>(p.w) + int64_t(expert) * p.w_matrix_stride;
  const int f0 = blockIdx.x * (SILU ? kBM / 2 : kBM);  // first output column of the tile

  // ---- per-thread load assignments (fixed over K): 16-byte chunks of A (weights) and B (x rows) -----
  constexpr int KC = BK / 8;  // chunks per row per stage
  const bf16* a_src[L::CA];
  const uint8_t* a_q[L::CA];  // FP8: the chunk's bytes and its row of scales
  const float* a_s[L::CA];
  int a_kc[L::CA];
  bool a_ok[L::CA];
  int a_dst[L::CA];
#pragma unroll
  for (int i = 0; i < L::CA; ++i) {
    int c = tid + i * kThreads, row = c / KC, kc = (c % KC) * 8;
    int wrow, feat;
    if (SILU) {
      feat = f0 + (row & 63);
      wrow = row < 64 ? feat : p.N + feat;
    } else {
      feat = f0 + row;
      wrow = feat;
    }
    a_ok[i] = feat < p.N;
    a_src[i] = W + int64_t(a_ok[i] ? wrow : 0) * p.K + kc;
    if constexpr (FP8) {
      a_q[i] = Wq + int64_t(a_ok[i] ? wrow : 0) * p.K + kc;
      a_s[i] = p.w_scale + int64_t(expert) * p.scale_matrix_stride + int64_t((a_ok[i] ? wrow : 0) >> p.scale_row_shift) * p.scale_ld;
      a_kc[i] = kc;
    }
    a_dst[i] = row * kLd + kc;
  }
  XRowChunks<L, BN, BK> xb(p, tid, r0, rows);

  uint2 a_reg[L::CA];
  auto load_a_regs = [&](int kt) {
#pragma unroll
    for (int i = 0; i < L::CA; ++i)
      a_reg[i] = a_ok[i] ? __ldg(reinterpret_cast<const uint2*>(a_q[i] + kt * BK)) : make_uint2(0u, 0u);
  };
  auto store_a_regs = [&](int stage, int kt) {
    bf16* a = sA + size_t(stage) * kBM * kLd;
#pragma unroll
    for (int i = 0; i < L::CA; ++i) {
      const float s = a_ok[i] ? a_s[i][(kt * BK + a_kc[i]) >> p.scale_k_shift] : 0.f;
      *reinterpret_cast<uint4*>(a + a_dst[i]) = fp8x8_to_bf16x8(a_reg[i], s);
    }
  };
  auto load_stage = [&](int stage, int kt) {
    bf16* a = sA + size_t(stage) * kBM * kLd;
    bf16* b = sB + size_t(stage) * BN * kLd;
    const int k = kt * BK;
    (void)a;
    if constexpr (!FP8) {
#pragma unroll
      for (int i = 0; i < L::CA; ++i) cp_async16(a + a_dst[i], a_src[i] + k, a_ok[i]);
    }
    xb.issue(b, k);
  };

  float acc[L::MI][L::NI][4];
#pragma unroll
  for (int i = 0; i < L::MI; ++i)
#pragma unroll
    for (int j = 0; j < L::NI; ++j)
#pragma unroll
      for (int q = 0; q < 4; ++q) acc[i][j][q] = 0.f;

  const int KT = p.K / BK;
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < KT) {
      load_stage(s, s);
      if constexpr (FP8) {
        load_a_regs(s);
        store_a_regs(s, s);
      }
    }
    cp_async_commit();
  }
  const int wm = warp / L::WN, wn = warp % L::WN;
  for (int kt = 0; kt < KT; ++kt) {
    cp_async_wait<kStages - 2>();
    __syncthreads();
    const bool more = kt + kStages - 1 < KT;
    if (more) {
      load_stage((kt + kStages - 1) % kStages, kt + kStages - 1);
      if constexpr (FP8) load_a_regs(kt + kStages - 1);
    }
    cp_async_commit();
    mma_k_step<L, BK>(acc, sA + size_t(kt % kStages) * kBM * kLd, sB + size_t(kt % kStages) * BN * kLd, wm, wn,
                      lane);
    if constexpr (FP8) {
      if (more) store_a_regs((kt + kStages - 1) % kStages, kt + kStages - 1);
    }
  }
  cp_async_wait<0>();
  __syncthreads();

  store_tile<L, BN, SILU>(p, acc, smem, wm, wn, lane, r0, rows, f0);
}

// FP8 weights, staged: the raw e4m3 bytes of kStagesF k steps are in flight (cp.async), so the weight
// stream does not wait on the MMAs; each step converts its raw stage into one bf16 tile (times the
// scales) between two barriers, then runs the same MMAs. Shared memory: the bf16 tile, kStagesF stages
// of x rows and kStagesF stages of raw bytes.
constexpr int kStagesF = 5;
template <int BN, int BK> struct LayoutF8 {
  using L = Layout<BN, BK>;
  static constexpr int kQ = kBM * BK;                    // raw weight bytes per stage
  static constexpr int QC = BK / 16;                     // 16-byte raw chunks per weight row
  static constexpr int CQ = kBM * QC / kThreads;         // raw chunks per thread per stage
  static constexpr size_t kPipe = size_t(kBM) * L::kLd * 2 + size_t(kStagesF) * (BN * L::kLd * 2 + kQ);
  static constexpr size_t kSmem = kPipe > L::kEpi ? kPipe : L::kEpi;
  static_assert(CQ >= 1 && kBM * QC % kThreads == 0, "raw chunks must divide over the threads");
};

template <int BN, int BK, bool SILU>
__global__ void __launch_bounds__(kThreads) moe_gemm_fp8_staged_kernel(MoeGemmParams p) {
  pdl_trigger();
  pdl_wait();
  using L = Layout<BN, BK>;
  using F = LayoutF8<BN, BK>;
  constexpr int kLd = L::kLd;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* sA = reinterpret_cast<bf16*>(smem);                                      // [128][kLd]
  bf16* sB = sA + size_t(kBM) * kLd;                                              // [stages][BN][kLd]
  uint8_t* sQ = reinterpret_cast<uint8_t*>(sB + size_t(kStagesF) * BN * kLd);    // [stages][128][BK]
  __shared__ int scan_tmp[32];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  TokenTile tt;
  if (!find_token_tile<BN>(p, scan_tmp, tt)) return;
  const int r0 = tt.r0, rows = tt.rows, expert = tt.expert;
  const uint8_t* Wq = static_cast<const uint8_t*>(p.w) + int64_t(expert) * p.w_matrix_stride;
  const int f0 = blockIdx.x * (SILU ? kBM / 2 : kBM);

  const uint8_t* q_src[F::CQ];
  const float* q_scale[F::CQ];
  bool q_ok[F::CQ];
  int q_row[F::CQ], q_k[F::CQ];
#pragma unroll
  for (int i = 0; i < F::CQ; ++i) {
    const int c = tid + i * kThreads, row = c / F::QC, kq = (c % F::QC) * 16;
    const int feat = SILU ? f0 + (row & 63) : f0 + row;
    const int wrow = SILU && row >= 64 ? p.N + feat : feat;
    q_ok[i] = feat < p.N;
    const int r = q_ok[i] ? wrow : 0;
    q_src[i] = Wq + int64_t(r) * p.K + kq;
    q_scale[i] = p.w_scale + int64_t(expert) * p.scale_matrix_stride + int64_t(r >> p.scale_row_shift) * p.scale_ld;
    q_row[i] = row;
    q_k[i] = kq;
  }
  XRowChunks<L, BN, BK> xb(p, tid, r0, rows);
  auto load_stage = [&](int stage, int kt) {
    uint8_t* q = sQ + size_t(stage) * F::kQ;
#pragma unroll
    for (int i = 0; i < F::CQ; ++i) cp_async16(q + q_row[i] * BK + q_k[i], q_src[i] + kt * BK, q_ok[i]);
    xb.issue(sB + size_t(stage) * BN * kLd, kt * BK);
  };
  auto convert_stage = [&](int stage, int kt) {
    const uint8_t* q = sQ + size_t(stage) * F::kQ;
#pragma unroll
    for (int i = 0; i < F::CQ; ++i) {
      const uint4 raw = *reinterpret_cast<const uint4*>(q + q_row[i] * BK + q_k[i]);
      const float sc = q_ok[i] ? q_scale[i][(kt * BK + q_k[i]) >> p.scale_k_shift] : 0.f;
      bf16* a = sA + q_row[i] * kLd + q_k[i];
      *reinterpret_cast<uint4*>(a) = fp8x8_to_bf16x8(make_uint2(raw.x, raw.y), sc);
      *reinterpret_cast<uint4*>(a + 8) = fp8x8_to_bf16x8(make_uint2(raw.z, raw.w), sc);
    }
  };

  float acc[L::MI][L::NI][4];
#pragma unroll
  for (int i = 0; i < L::MI; ++i)
#pragma unroll
    for (int j = 0; j < L::NI; ++j)
#pragma unroll
      for (int q = 0; q < 4; ++q) acc[i][j][q] = 0.f;

  const int KT = p.K / BK;
#pragma unroll
  for (int s = 0; s < kStagesF - 1; ++s) {
    if (s < KT) load_stage(s, s);
    cp_async_commit();
  }
  const int wm = warp / L::WN, wn = warp % L::WN;
  for (int kt = 0; kt < KT; ++kt) {
    cp_async_wait<kStagesF - 2>();
    __syncthreads();  // stage kt landed; every warp is done with step kt - 1 (the tile and that stage)
    if (kt + kStagesF - 1 < KT) load_stage((kt + kStagesF - 1) % kStagesF, kt + kStagesF - 1);
    cp_async_commit();
    convert_stage(kt % kStagesF, kt);
    __syncthreads();
    mma_k_step<L, BK>(acc, sA, sB + size_t(kt % kStagesF) * BN * kLd, wm, wn, lane);
  }
  cp_async_wait<0>();
  __syncthreads();
  store_tile<L, BN, SILU>(p, acc, smem, wm, wn, lane, r0, rows, f0);
}

template <int BN, int BK, bool SILU>
void launch(const MoeGemmParams& p, const DeviceContext& ctx) {
  using L = Layout<BN, BK>;
  const int cols = SILU ? kBM / 2 : kBM;
  const int64_t tiles = (int64_t(p.max_rows) + BN - 1) / BN + p.max_active;  // bound on sum of ceil(rows/BN)
  dim3 grid(ceil_div(p.N, cols), unsigned(tiles));
  if (p.w_scale && p.fp8_staged) {
    launch_pdl(moe_gemm_fp8_staged_kernel<BN, BK, SILU>, grid, kThreads, LayoutF8<BN, BK>::kSmem, ctx, p);
    return;
  }
  auto kern = p.w_scale ? moe_gemm_kernel<BN, BK, SILU, true> : moe_gemm_kernel<BN, BK, SILU, false>;
  launch_pdl(kern, grid, kThreads, L::kSmem, ctx, p);
}

template <int BN, int BK> void configure_tile() {
  set_max_dynamic_smem(moe_gemm_kernel<BN, BK, true, false>, Layout<BN, BK>::kSmem);
  set_max_dynamic_smem(moe_gemm_kernel<BN, BK, false, false>, Layout<BN, BK>::kSmem);
  set_max_dynamic_smem(moe_gemm_kernel<BN, BK, true, true>, Layout<BN, BK>::kSmem);
  set_max_dynamic_smem(moe_gemm_kernel<BN, BK, false, true>, Layout<BN, BK>::kSmem);
  set_max_dynamic_smem(moe_gemm_fp8_staged_kernel<BN, BK, true>, LayoutF8<BN, BK>::kSmem);
  set_max_dynamic_smem(moe_gemm_fp8_staged_kernel<BN, BK, false>, LayoutF8<BN, BK>::kSmem);
}

}  // namespace

// Every (tile_tokens, k_tile, silu_mul) instance run_moe_gemm can launch.
void configure_moe_gemm(const DeviceContext& ctx) {
  configure_moe_gemm_wgmma(ctx);
  configure_moe_gemm_frag();
  configure_moe_gemm_fp8_wgmma(ctx);
  configure_tile<64, 64>();
  configure_tile<64, 32>();
  configure_tile<16, 64>();
  configure_tile<16, 32>();
}

void run_moe_gemm(const MoeGemmParams& p, const DeviceContext& ctx) {
  if (p.max_rows == 0 || (p.max_active == 0 && p.dense_rows == 0)) return;
  if (p.tile_tokens == 64 && ctx.switches.wgmma && moe_gemm_wgmma_supported(p, ctx)) {
    launch_moe_gemm_wgmma(p, ctx);  // prefill-sized launches on Hopper: the wgmma kernel
    return;
  }
  const int bk = p.k_tile > 0 ? p.k_tile : 64;
  DS_GPU_REQUIRE(bk == 32 || bk == 64, "run_moe_gemm: k_tile must be 32 or 64");
  DS_GPU_REQUIRE(p.K % bk == 0, "run_moe_gemm: K must be a multiple of the k tile");
  DS_GPU_REQUIRE(p.ldx % 8 == 0 && p.ldy % 8 == 0, "run_moe_gemm: row strides must be multiples of 8");
  DS_GPU_REQUIRE(p.tile_tokens == 16 || p.tile_tokens == 64, "run_moe_gemm: tile_tokens must be 16 or 64");
  DS_GPU_REQUIRE(!p.accumulate || !p.silu_mul, "run_moe_gemm: accumulate is for the plain product only");
  DS_GPU_REQUIRE(p.dense_rows == 0 || (!p.x_rows && p.max_rows >= p.dense_rows),
                 "run_moe_gemm: a dense launch reads x rows 0..dense_rows-1 (no gather) and sizes its grid by max_rows");
  DS_GPU_REQUIRE(!p.w_scale || p.scale_k_shift >= 4, "run_moe_gemm: FP8 scale blocks must be at least 16 columns wide");
  DS_GPU_REQUIRE(!p.w_int4 || moe_gemm_fp8_wgmma_applies(p, ctx),
                 "run_moe_gemm: INT4 weights need the FP8 wgmma kernel (sm_90, an x split, 16-token tiles or 64 for groups of 128)");
  if (moe_gemm_fp8_wgmma_applies(p, ctx)) {  // FP8 at decode-sized token tiles on Hopper: x split, FP8 wgmma
    DS_GPU_REQUIRE(p.max_active <= 65535 && (p.dense_rows + 15) / 16 <= 65535, "run_moe_gemm: too many token tiles for one launch");
    DS_GPU_REQUIRE(p.x_split_rows >= (p.x_rows ? 1 : std::max(p.dense_rows, p.max_rows)),
                   "run_moe_gemm: the x split must cover the rows the launch reads");
    launch_moe_gemm_fp8_wgmma(p, ctx);
    DS_CUDA_CHECK_LAUNCH();
    return;
  }
  if (moe_gemm_frag_applies(p, ctx)) {  // FP8 at decode-sized token tiles: the fragment kernel
    DS_GPU_REQUIRE(p.max_active <= 65535 && (p.dense_rows + 7) / 8 <= 65535, "run_moe_gemm: too many token tiles for one launch");
    launch_moe_gemm_frag(p, ctx);
    DS_CUDA_CHECK_LAUNCH();
    return;
  }
  int64_t tiles = (int64_t(p.max_rows) + p.tile_tokens - 1) / p.tile_tokens + p.max_active;
  DS_GPU_REQUIRE(tiles <= 65535, "run_moe_gemm: too many token tiles for one launch");
  auto go = [&]<int BN, int BK>() {
    if (p.silu_mul) launch<BN, BK, true>(p, ctx);
    else launch<BN, BK, false>(p, ctx);
  };
  if (p.tile_tokens == 64) {
    if (bk == 64) go.template operator()<64, 64>();
    else go.template operator()<64, 32>();
  } else {
    if (bk == 64) go.template operator()<16, 64>();
    else go.template operator()<16, 32>();
  }
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace ds::gpu
