// One token's MoE gate/up projection with SiLU-mul, bf16, FP8 or INT4 experts, streamed through a shared-memory ring
// by one block an SM (run_gemv's form with DeviceContext::switches.gate_up_staged):
//   y[row of group g][i] = silu(W_g[i] . xn) * (W_g[N + i] . xn),  xn = the token's row through the fused RMSNorm
// The per-row-pair GEMVs (gemv_async.cu, gemv_int4.cu) launch ~1,150 small blocks of a few row pairs each, in
// ~2 waves, every block one DRAM round trip after its start: session 31's trace of the batch-1 step had the FP8
// launch at ~25 us against 12.7 us of bytes and INT4 at ~27 against 6.7 (H100, docs/PERF.md). Here the (group,
// row) units are split evenly over one block an SM; a block normalises x once into shared memory, then keeps
// kRing buffers of kUnits units' gate and up rows in flight (cp.async, a warp a row), computes a buffer's 2 x
// kUnits row dots (a warp a row) as soon as it lands and refills it with the block's next units. CPU twin: the
// MoE experts op (src/kernels/moe) on the dequantized weights.
#include <algorithm>

#include "cuda/kernels/staged_rows.cuh"

namespace ds::gpu::gemv_detail {
namespace {

constexpr int kGuThreads = 512, kGuWarps = kGuThreads / 32, kRing = 4;
constexpr size_t kGuMaxSmem = 200 * 1024;

template <RowFmt F> constexpr int gu_units() { return F == RowFmt::Int4 ? 16 : F == RowFmt::Fp8 ? 8 : 4; }  // a buffer
// dynamic shared memory: the ring [kRing][2 * units][row_bytes] (~147 KB each format), then the normalised x row
template <RowFmt F> __host__ __device__ constexpr int64_t gu_ring_bytes(int K) {
  return int64_t(kRing) * 2 * gu_units<F>() * row_fmt_bytes(F, K);
}

template <typename T, RowFmt F>
__global__ void __launch_bounds__(kGuThreads) moe_gate_up_staged_kernel(GemvParams p, int per_block) {
  constexpr int kU = gu_units<F>();
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ float dots[2 * kU];
  const int K = p.K, N = p.N, row_bytes = int(row_fmt_bytes(F, K));
  unsigned char* ring = smem;
  T* xs = reinterpret_cast<T*>(smem + gu_ring_bytes<F>(K));
  const int tid = int(threadIdx.x), warp = tid >> 5, lane = tid & 31;
  const int total = p.num_groups * N;
  const int u0 = min(total, int(blockIdx.x) * per_block), u1 = min(total, u0 + per_block);
  NormPre<T> pre;
  pre.load(p);
  pdl_trigger();
  pdl_wait();
  const int active = p.num_active ? *p.num_active : p.num_groups;
  if (u0 >= u1 || u0 / N >= active) return;  // (units run group by group: none of this block's is active)
  // unit u: group u / N (matrix group_weight[g], output row group_start[g]; inactive: nothing), row u % N
  auto unit_group = [&](int u, int& mat, int& yrow) {
    const int g = u / N;
    if (g >= active) return false;
    int r0 = 0, rows = p.M;
    if (p.group_start) {
      r0 = p.group_start[g];
      rows = p.group_start[g + 1] - r0;
    }
    if (rows <= 0) return false;
    mat = p.group_weight ? p.group_weight[g] : g;
    yrow = r0;
    return true;
  };
  const unsigned char* W = static_cast<const unsigned char*>(p.w);
  const int64_t mat_bytes = row_fmt_bytes(F, p.w_matrix_stride);  // (the stride counts weights)
  const int wchunks = row_bytes / 16;
  // buffer b (units u0 + b kU ..): row 2t (gate) and 2t + 1 (up) of unit t, a warp a row; always one commit group
  auto issue = [&](int b) {
    const int ub = u0 + b * kU;
    unsigned char* buf = ring + int64_t(b % kRing) * 2 * kU * row_bytes;
    for (int r = warp; r < 2 * kU; r += kGuWarps) {
      const int u = ub + r / 2;
      int mat = 0, yrow = 0;
      if (u < u1 && unit_group(u, mat, yrow)) {
        const int i = u % N;
        const unsigned char* src = W + int64_t(mat) * mat_bytes + int64_t((r & 1) ? N + i : i) * row_bytes;
        for (int ch = lane; ch < wchunks; ch += 32) cp_async16(buf + int64_t(r) * row_bytes + ch * 16, src + int64_t(ch) * 16);
      }
    }
    cp_async_commit();
  };
  const int nbuf = (u1 - u0 + kU - 1) / kU;
#pragma unroll 1
  for (int b = 0; b < kRing; ++b) issue(b);  // (empty groups past nbuf)
  // the token's row, normalised (every group reads the same row: x_row_shared, checked on the host)
  load_x_tile(p, xs, K, static_cast<const T*>(p.x), 0, 1, 0, K, pre);
#pragma unroll 1
  for (int b = 0; b < nbuf; ++b) {
    cp_async_wait<kRing - 1>();
    __syncthreads();  // buffer b landed (every thread's copies); the last buffer's dots were read
    const unsigned char* buf = ring + int64_t(b % kRing) * 2 * kU * row_bytes;
    for (int r = warp; r < 2 * kU; r += kGuWarps) {
      const int u = u0 + b * kU + r / 2;
      int mat = 0, yrow = 0;
      float d = 0.f;
      if (u < u1 && unit_group(u, mat, yrow)) {
        const int i = u % N, wr = (r & 1) ? N + i : i;
        const int64_t so = int64_t(mat) * p.scale_matrix_stride + int64_t(wr >> p.scale_row_shift) * p.scale_ld;
        d = staged_row_dot<T, F>(buf + int64_t(r) * row_bytes, xs, K, p.w_scale, p.w_zero, so, p.scale_k_shift, lane);
      }
      d = warp_sum(d);
      if (lane == 0) dots[r] = d;
    }
    __syncthreads();  // the dots; buffer b's rows are read
    if (tid < kU) {
      const int u = u0 + b * kU + tid;
      int mat = 0, yrow = 0;
      if (u < u1 && unit_group(u, mat, yrow))
        static_cast<T*>(p.y)[int64_t(yrow) * p.ldy + u % N] = from_f32<T>(siluf_(dots[2 * tid]) * dots[2 * tid + 1]);
    }
    issue(b + kRing);  // the freed buffer's next units (an empty group past the block's)
  }
  cp_async_wait<0>();
}

}  // namespace
}  // namespace ds::gpu::gemv_detail

namespace ds::gpu {

bool moe_gate_up_staged_applies(const GemvParams& p, DType act, const DeviceContext& ctx) {
  using namespace gemv_detail;
  const bool bf16_w = !p.w_int4 && !p.w_scale;  // weights in the activation dtype: bf16 activations only
  if (!ctx.switches.gate_up_staged || p.epi != GemvEpilogue::SiluMul || (bf16_w && act != DType::BF16) ||
      !p.x_row_shared || p.max_rows != 1 || p.M > 1 || p.y_f32 || p.gate || p.x_group_stride != 0 || p.y_group_stride != 0 ||
      p.K % 32 != 0 || int64_t(p.num_groups) * p.N > (int64_t(1) << 30))
    return false;
  if (p.w_int4 ? (!p.w_scale || p.scale_k_shift < 5 || p.scale_k_shift >= 31 || p.w_matrix_stride % 2 != 0)
               : (p.w_scale && p.scale_k_shift < 4))
    return false;  // (each chunk in one scale group, as the per-row-pair kernels require)
  if (p.w_scale && (p.scale_row_shift < 0 || p.scale_row_shift >= 31))
    return false;  // (each chunk in one scale group, as the per-row-pair kernels require)
  if (p.norm_weight && p.K > 32 * 8 * NormPre<bf16>::kRegs * (kGuThreads / 32)) return false;
  const int64_t ring = p.w_int4 ? gu_ring_bytes<RowFmt::Int4>(p.K) : p.w_scale ? gu_ring_bytes<RowFmt::Fp8>(p.K)
                                                                               : gu_ring_bytes<RowFmt::Bf16>(p.K);
  return size_t(ring + int64_t(p.K) * dtype_size(act)) <= std::min(kGuMaxSmem, ctx.info.smem_per_block_optin);
}

}  // namespace ds::gpu

namespace ds::gpu::gemv_detail {

bool run_moe_gate_up_staged(const GemvParams& p, DType act, const DeviceContext& ctx) {
  if (!moe_gate_up_staged_applies(p, act, ctx)) return false;
  const int total = p.num_groups * p.N, blocks = std::min(total, ctx.num_sms());
  const int per_block = (total + blocks - 1) / blocks;
  auto go = [&]<typename T, RowFmt F>() {
    const size_t smem = size_t(gu_ring_bytes<F>(p.K) + int64_t(p.K) * int64_t(sizeof(T)));
    launch_pdl(moe_gate_up_staged_kernel<T, F>, dim3(unsigned(blocks)), kGuThreads, smem, ctx, p, per_block);
  };
  dispatch_row_fmt(act, p.w_int4, p.w_scale != nullptr, go);
  DS_CUDA_CHECK_LAUNCH();
  return true;
}

void configure_moe_gate_up_staged(const DeviceContext& ctx) {
  const size_t bytes = std::min(kGuMaxSmem, ctx.info.smem_per_block_optin);
  for_each_row_fmt([&]<typename T, RowFmt F>() { set_max_dynamic_smem(moe_gate_up_staged_kernel<T, F>, bytes); });
}

}  // namespace ds::gpu::gemv_detail
