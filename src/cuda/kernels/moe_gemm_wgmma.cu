// Grouped expert GEMM on Hopper tensor cores (see moe_gemm_wgmma.h; contract in moe_gemm.h). A CTA
// computes 128 token rows of one active expert against 256 weight rows (SiluMul: 128 gate rows and the
// matching 128 up rows, giving 128 output features; Store: 256 output features), K in steps of 64.
// 384 threads in three warpgroups:
//  - warpgroup 0, the producer: cp.async copies (the token rows gathered through x_rows) into a
//    four-stage ring in the 128-byte swizzled layout (wgmma.cuh), each stage completing on its `full`
//    mbarrier;
//  - warpgroups 1 and 2, the consumers, 64 token rows each: per stage 8 wgmma m64n128k16 (x rows as A,
//    the two 128-row weight halves as B, both K-major) into two fp32 accumulators, one wgmma group kept
//    in flight, then the stage released on its `empty` mbarrier. The epilogue applies SiLU(gate)·up in
//    registers (the gate and up values of one output sit at the same place of the two accumulators) and
//    writes bf16 pairs.
// Token tiles are found on the device from the active experts' row ranges, as in moe_gemm.cu.
// TMA (DeviceContext::switches.moe_tma, where whole 128/256-row weight tiles divide N): the weight tile of a
// stage is one or two tensor-map copies (64 x 128 or 64 x 256 boxes, swizzled by the copy engine) issued by
// one producer thread; the gathered token rows stay cp.async, both completing on the stage's `full` barrier
// (the copies' bytes announced with expect_tx).
#include "cuda/cuda_check.h"
#include "cuda/kernels/common.cuh"
#include "cuda/kernels/moe_gemm_wgmma.h"
#include "cuda/kernels/tma.h"
#include "cuda/kernels/wgmma.cuh"

namespace ds::gpu {
namespace {

using namespace wg;

constexpr int kTok = 128, kRows = 256, kBK = 64, kStages = 4, kThreads = 384;
constexpr uint32_t kABytes = kTok * 128, kBBytes = kRows * 128, kStageBytes = kABytes + kBBytes;
constexpr uint32_t kOffBar = kStages * kStageBytes;
constexpr size_t kSmem = kOffBar + 2 * kStages * 8 + 1024;  // barriers, and slack to align to 1024 bytes

// The weights as one 2D tensor (K columns, every matrix's rows one after another), read in 64 x 128 boxes
// (SiLU: the gate and the up halves) or 64 x 256 boxes.
struct WeightMap {
  CUtensorMap m;
};
template <bool SILU, bool TMA>
__global__ void __launch_bounds__(kThreads, 1)
    moe_gemm_wgmma_kernel(const __grid_constant__ MoeGemmParams p, const __grid_constant__ WeightMap wmap) {
  pdl_trigger();
  pdl_wait();
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = align_1024(smem_raw);
  const uint32_t sbase = smem_u32(smem);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + kOffBar);
  uint64_t* empty = full + kStages;
  __shared__ int scan_tmp[32];
  __shared__ int tile_active, tile_index;
  const int tid = threadIdx.x;

  // ---- this CTA's (active expert, token tile) from the row ranges ---------------------------------
  const int na = *p.num_active;
  if (tid == 0) tile_active = -1;
  int base = 0;
  for (int s0 = 0; s0 < na; s0 += kThreads) {
    const int s = s0 + tid;
    const int tiles = s < na ? (p.active_start[s + 1] - p.active_start[s] + kTok - 1) / kTok : 0;
    int total = 0;
    const int ex = block_exclusive_scan(tiles, scan_tmp, &total);
    const int y = int(blockIdx.y);
    if (s < na && y >= base + ex && y < base + ex + tiles) {
      tile_active = s;
      tile_index = y - base - ex;
    }
    base += total;
  }
  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&full[s], 128);
      mbar_init(&empty[s], 256);
    }
  }
  __syncthreads();
  if (tile_active < 0) return;
  const int active = tile_active;
  const int r0 = p.active_start[active] + tile_index * kTok;
  const int rows = min(kTok, p.active_start[active + 1] - r0);
  const int f0 = blockIdx.x * (SILU ? kRows / 2 : kRows);  // first output column of the tile
  const int KT = p.K / kBK;

  if (tid < 128) {
    setmaxnreg_dec<56>();
    // producer: thread tid copies chunk (tid & 7) of rows (tid >> 3) + 16 i
    const int c = tid & 7, rsub = tid >> 3;
    const bf16* W = static_cast<const bf16*>(p.w) + int64_t(p.active_expert[active]) * p.w_matrix_stride + c * 8;
    const int wrow0 = int(int64_t(p.active_expert[active]) * (p.w_matrix_stride / p.K));  // TMA: the matrix's row 0
    const bf16* X = static_cast<const bf16*>(p.x) + c * 8;
    int xrow[kTok / 16];
#pragma unroll
    for (int i = 0; i < kTok / 16; ++i) {
      const int r = rsub + 16 * i;
      xrow[i] = r < rows ? (p.x_rows ? p.x_rows[r0 + r] : r0 + r) : -1;
    }
    for (int kt = 0; kt < KT; ++kt) {
      const int s = kt % kStages;
      if (kt >= kStages) mbar_wait(&empty[s], uint32_t((kt / kStages - 1) & 1));
      const uint32_t a = sbase + s * kStageBytes, b = a + kABytes;
      const int k = kt * kBK;
#pragma unroll
      for (int i = 0; i < kTok / 16; ++i) {
        const int r = rsub + 16 * i;
        cp16(a + swz(r, c), X + int64_t(max(xrow[i], 0)) * p.ldx + k, xrow[i] >= 0);
      }
      if constexpr (TMA) {
        if (tid == 0) {  // the weight tile by tensor-map copies (whole tiles: launch_moe_gemm_wgmma checks N)
          mbar_expect_tx(&full[s], kBBytes);
          if (SILU) {
            tma_load_2d(b, &wmap.m, k, wrow0 + f0, &full[s]);
            tma_load_2d(b + 128 * 128, &wmap.m, k, wrow0 + p.N + f0, &full[s]);
          } else {
            tma_load_2d(b, &wmap.m, k, wrow0 + f0, &full[s]);
          }
        }
      }
#pragma unroll
      for (int i = 0; i < (TMA ? 0 : kRows / 16); ++i) {
        const int r = rsub + 16 * i;  // weight row of the tile
        int feat, wrow;
        if (SILU) {
          feat = f0 + (r & 127);
          wrow = r < 128 ? feat : p.N + feat;
        } else {
          feat = f0 + r;
          wrow = feat;
        }
        const bool ok = feat < p.N;
        cp16(b + swz(r, c), W + int64_t(ok ? wrow : 0) * p.K + k, ok);
      }
      mbar_arrive_cp_async(&full[s]);
    }
    cp_wait_all();
    return;
  }

  setmaxnreg_inc<224>();
  const int wgi = tid / 128 - 1, warp = (tid & 127) >> 5, lane = tid & 31, g = lane >> 2, c4 = lane & 3;
  const bool has_rows = 64 * wgi < rows;
  float acc0[64], acc1[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc0[i] = acc1[i] = 0.f;
  for (int kt = 0; kt < KT; ++kt) {
    const int s = kt % kStages;
    mbar_wait(&full[s], uint32_t((kt / kStages) & 1));
    if (has_rows) {
      fence_proxy_async();
      const uint32_t a = sbase + s * kStageBytes + uint32_t(wgi) * 64 * 128, b = sbase + s * kStageBytes + kABytes;
      reg_fence(acc0);
      reg_fence(acc1);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kBK / 16; ++kk) {
        wgmma_m64n128k16_ss(acc0, desc_k_sw128(a + kk * 32), desc_k_sw128(b + kk * 32), 1);
        wgmma_m64n128k16_ss(acc1, desc_k_sw128(a + kk * 32), desc_k_sw128(b + 128 * 128 + kk * 32), 1);
      }
      wgmma_commit();
      wgmma_wait<1>();  // the previous stage's group is done: release it
      reg_fence(acc0);
      reg_fence(acc1);
    }
    if (kt > 0) mbar_arrive(&empty[(kt - 1) % kStages]);
  }
  wgmma_wait<0>();
  reg_fence(acc0);
  reg_fence(acc1);
  if (!has_rows) return;

  // ---- epilogue: accumulator element (row g / g + 8 of the warp, column 8j + 2c4 + {0,1}) --------------
  bf16* Y = static_cast<bf16*>(p.y);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = 64 * wgi + 16 * warp + g + 8 * i;
    if (r >= rows) continue;
    bf16* dst = Y + int64_t(r0 + r) * p.ldy;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const float x0 = acc0[4 * j + 2 * i], x1 = acc0[4 * j + 2 * i + 1];
      const float y0 = acc1[4 * j + 2 * i], y1 = acc1[4 * j + 2 * i + 1];
      const int f = 8 * j + 2 * c4;
      if (SILU) {
        if (f0 + f < p.N)
          *reinterpret_cast<__nv_bfloat162*>(dst + f0 + f) = __floats2bfloat162_rn(siluf_(x0) * y0, siluf_(x1) * y1);
      } else {
        if (f0 + f < p.N) *reinterpret_cast<__nv_bfloat162*>(dst + f0 + f) = __floats2bfloat162_rn(x0, x1);
        if (f0 + 128 + f < p.N)
          *reinterpret_cast<__nv_bfloat162*>(dst + f0 + 128 + f) = __floats2bfloat162_rn(y0, y1);
      }
    }
  }
}

}  // namespace

bool moe_gemm_wgmma_supported(const MoeGemmParams& p, const DeviceContext& ctx) {
  // bf16 grouped launches only: FP8 experts (w_scale set) stay on the mma.sync kernel, which converts them;
  // dense launches (dense_rows, accumulate) are FP8 projections.
  return !p.w_scale && p.dense_rows == 0 && !p.accumulate && ctx.info.sm_major == 9 && ctx.info.smem_per_block_optin >= kSmem && p.K % kBK == 0 &&
         p.N % 8 == 0 && p.ldx % 8 == 0 && p.ldy % 8 == 0;
}

void configure_moe_gemm_wgmma(const DeviceContext& ctx) {
  if (ctx.info.sm_major != 9 || ctx.info.smem_per_block_optin < kSmem) return;
  set_max_dynamic_smem(moe_gemm_wgmma_kernel<true, false>, kSmem);
  set_max_dynamic_smem(moe_gemm_wgmma_kernel<false, false>, kSmem);
  set_max_dynamic_smem(moe_gemm_wgmma_kernel<true, true>, kSmem);
  set_max_dynamic_smem(moe_gemm_wgmma_kernel<false, true>, kSmem);
}

namespace {

// The weight map, or false where TMA does not apply (switch off, or tiles that would run past N: a box
// cannot stop at N the way the per-row copies do; K a multiple of 64 and 16-byte alignment are checked by
// moe_gemm_wgmma_supported).
bool weight_map(const MoeGemmParams& p, const DeviceContext& ctx, WeightMap& out) {
  if (!ctx.switches.moe_tma || !ctx.tensor_map_encoder || p.N % (p.silu_mul ? kRows / 2 : kRows) != 0 ||
      p.w_matrix_stride % p.K != 0)
    return false;
  out.m = rows_tensor_map(ctx.tensor_map_encoder, {.base = p.w,
                                                   .cols = p.K,
                                                   .ld = p.K,
                                                   .box_rows = p.silu_mul ? 128u : 256u,
                                                   .what = "MoE expert weights (bf16)"});
  return true;
}

}  // namespace

void launch_moe_gemm_wgmma(const MoeGemmParams& p, const DeviceContext& ctx) {
  const int cols = p.silu_mul ? kRows / 2 : kRows;
  const int64_t tiles = (int64_t(p.max_rows) + kTok - 1) / kTok + p.max_active;  // bound on sum of ceil(rows/128)
  DS_GPU_REQUIRE(tiles <= 65535, "run_moe_gemm (wgmma): too many token tiles for one launch");
  const dim3 grid(ceil_div(p.N, cols), unsigned(tiles));
  WeightMap m{};
  const bool tma = weight_map(p, ctx, m);
  if (p.silu_mul && tma) launch_pdl(moe_gemm_wgmma_kernel<true, true>, grid, kThreads, kSmem, ctx, p, m);
  else if (p.silu_mul) launch_pdl(moe_gemm_wgmma_kernel<true, false>, grid, kThreads, kSmem, ctx, p, m);
  else if (tma) launch_pdl(moe_gemm_wgmma_kernel<false, true>, grid, kThreads, kSmem, ctx, p, m);
  else launch_pdl(moe_gemm_wgmma_kernel<false, false>, grid, kThreads, kSmem, ctx, p, m);
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace ds::gpu
