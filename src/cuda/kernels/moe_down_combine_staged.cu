// One token's MoE down projection + combine with bf16, FP8 or INT4 experts in one wave of staged blocks
// (run_moe_down_combine's form with DeviceContext::switches.down_combine_staged):
//   residual[c] += sum_j weights[j] * (W[ids[j]] row c) . act[pair_pos[j]]
// The per-pair kernels (gemv_block.cu, gemv_fp8.cu, gemv_int4.cu) give a block two output columns and a warp each
// pair: 1,152 blocks in ~3 waves, and with 9 pairs on 8 warps one warp walks two pairs, one DRAM round trip after
// the other (session 31's trace of the batch-1 step: ~23 us against 6.3 us of FP8 bytes, ~22 against 3.3 for
// INT4, H100). Here a block owns C = ceil(D / SMs) columns (one wave: 18 at D 2,304), in rounds of R columns
// (R x k rows fill at most a third of the 200-KB budget: at k 9 and I 1,024, FP8 7, INT4 14, bf16 3), two rounds in flight: the k
// activation rows and each round's rows of all pairs are copied into shared memory with cp.async (a warp a row, no
// registers held), the block's 16 warps take a round's (column, pair) dot products as soon as it lands while the
// round after it is in flight, and each column sums its pairs in pair order (deterministic). CPU twin: the MoE
// experts op (src/kernels/moe) on the dequantized weights.
#include <algorithm>

#include "cuda/kernels/staged_rows.cuh"

namespace ds::gpu::gemv_detail {
namespace {

constexpr int kStagedThreads = 512;
constexpr int kStagedMaxPairs = 64;
constexpr size_t kStagedMaxSmem = 200 * 1024;

// dynamic shared memory: two round buffers [2][k][R][row_bytes], x [k][I] (act dtype), dots [k][C] fp32
struct StagedLayout {
  int64_t buf_bytes, x_bytes, dots_bytes;
  __host__ __device__ StagedLayout(int C, int R, int k, int I, int64_t row_bytes, int act_bytes)
      : buf_bytes(int64_t(k) * R * row_bytes), x_bytes(int64_t(k) * I * act_bytes), dots_bytes(int64_t(k) * C * 4) {}
  __host__ __device__ int64_t total() const { return 2 * buf_bytes + x_bytes + dots_bytes; }
};

template <typename T, RowFmt F>
__global__ void __launch_bounds__(kStagedThreads) moe_down_combine_staged_kernel(MoeDownCombineParams p, int C, int R) {
  constexpr int kWarpsS = kStagedThreads / 32;
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ int s_e[kStagedMaxPairs], s_pos[kStagedMaxPairs];
  const int row_bytes = int(row_fmt_bytes(F, p.I));
  const StagedLayout L(C, R, p.k, p.I, row_bytes, int(sizeof(T)));
  T* sx = reinterpret_cast<T*>(smem + 2 * L.buf_bytes);
  float* dots = reinterpret_cast<float*>(smem + 2 * L.buf_bytes + L.x_bytes);
  const int tid = int(threadIdx.x), warp = tid >> 5, lane = tid & 31;
  const int c0 = int(blockIdx.x) * C, cols = min(C, p.D - c0), rounds = (cols + R - 1) / R;
  pdl_trigger();
  pdl_wait();
  if (tid < p.k) {
    s_e[tid] = p.ids[tid];
    s_pos[tid] = p.pair_pos[tid];
  }
  __syncthreads();
  const int wchunks = row_bytes / 16, xchunks = p.I * int(sizeof(T)) / 16;
  const unsigned char* W = static_cast<const unsigned char*>(p.w);
  for (int j = warp; j < p.k; j += kWarpsS) {  // the activation rows (in the first round's group)
    const unsigned char* src = reinterpret_cast<const unsigned char*>(static_cast<const T*>(p.act) + int64_t(s_pos[j]) * p.I);
    unsigned char* dst = reinterpret_cast<unsigned char*>(sx) + int64_t(j) * xchunks * 16;
    for (int ch = lane; ch < xchunks; ch += 32) cp_async16(dst + ch * 16, src + int64_t(ch) * 16);
  }
  // round r: columns r R .. of every pair into buffer r % 2 (row (j, column - r R)); always one commit group
  auto issue = [&](int r) {
    const int cl0 = r * R, n = max(0, min(R, cols - cl0));
    unsigned char* buf = smem + (r & 1) * L.buf_bytes;
    for (int i = warp; i < p.k * n; i += kWarpsS) {
      const int j = i / n, cl = i - j * n;
      const unsigned char* src = W + (int64_t(s_e[j]) * p.D + c0 + cl0 + cl) * row_bytes;
      unsigned char* dst = buf + (int64_t(j) * R + cl) * row_bytes;
      for (int ch = lane; ch < wchunks; ch += 32) cp_async16(dst + ch * 16, src + int64_t(ch) * 16);
    }
    cp_async_commit();
  };
  issue(0);
  issue(1);
  for (int r = 0; r < rounds; ++r) {
    cp_async_wait<1>();
    __syncthreads();  // round r's rows (and the activation rows), every thread's copies
    const int cl0 = r * R, n = min(R, cols - cl0);
    const unsigned char* buf = smem + (r & 1) * L.buf_bytes;
    for (int it = warp; it < n * p.k; it += kWarpsS) {  // (column, pair): a warp an item, a lane its chunks
      const int j = it / n, cl = it - j * n, c = c0 + cl0 + cl;
      const int64_t so = int64_t(s_e[j]) * p.scale_matrix_stride + int64_t(c >> p.scale_row_shift) * p.scale_ld;
      const unsigned char* wr = buf + (int64_t(j) * R + cl) * row_bytes;
      const T* xr = sx + int64_t(j) * p.I;
      float d = staged_row_dot<T, F>(wr, xr, p.I, p.w_scale, p.w_zero, so, p.scale_k_shift, lane);
      d = warp_sum(d);
      if (lane == 0) dots[j * C + cl0 + cl] = d;
    }
    __syncthreads();  // round r's buffer is read
    issue(r + 2);     // (an empty group past the last round)
  }
  cp_async_wait<0>();
  if (tid < cols) {  // pairs in order: the same sum on every run (the last round's barrier published the dots)
    float s = 0.f;
    for (int j = 0; j < p.k; ++j) s = fmaf(p.weights[j], dots[j * C + tid], s);
    T* y = static_cast<T*>(p.residual) + c0 + tid;
    *y = from_f32<T>(to_f32(*y) + s);
  }
}

// The columns a block (C) and a round (R) for p, or false where they do not fit the block's shared memory.
template <typename T, RowFmt F>
bool staged_shape(const MoeDownCombineParams& p, const DeviceContext& ctx, int& C, int& R) {
  C = int(std::max<int64_t>(1, (int64_t(p.D) + ctx.num_sms() - 1) / ctx.num_sms()));
  const int64_t rb = row_fmt_bytes(F, p.I);
  const size_t cap = std::min(kStagedMaxSmem, ctx.info.smem_per_block_optin);
  // R: the most columns whose rows of all pairs fill a third of the budget (two such buffers, x and the dots)
  R = int(std::min<int64_t>(C, std::max<int64_t>(1, int64_t(cap / 3) / (int64_t(p.k) * rb))));
  const StagedLayout L(C, R, p.k, p.I, rb, int(sizeof(T)));
  return size_t(L.total()) <= cap && C <= kStagedThreads;
}

}  // namespace

void configure_moe_down_combine_staged(const DeviceContext& ctx) {
  const size_t bytes = std::min(kStagedMaxSmem, ctx.info.smem_per_block_optin);
  for_each_row_fmt([&]<typename T, RowFmt F>() { set_max_dynamic_smem(moe_down_combine_staged_kernel<T, F>, bytes); });
}

bool run_moe_down_combine_staged(const MoeDownCombineParams& p, DType act, const DeviceContext& ctx) {
  if (!moe_down_combine_staged_applies(p, act, ctx)) return false;
  dispatch_row_fmt(act, p.w_int4, p.w_scale != nullptr, [&]<typename T, RowFmt F>() {
    int C = 0, R = 0;
    staged_shape<T, F>(p, ctx, C, R);
    const StagedLayout L(C, R, p.k, p.I, row_fmt_bytes(F, p.I), int(sizeof(T)));
    launch_pdl(moe_down_combine_staged_kernel<T, F>, dim3(unsigned((p.D + C - 1) / C)), kStagedThreads,
               size_t(L.total()), ctx, p, C, R);
  });
  DS_CUDA_CHECK_LAUNCH();
  return true;
}

}  // namespace ds::gpu::gemv_detail

namespace ds::gpu {

bool moe_down_combine_staged_applies(const MoeDownCombineParams& p, DType act, const DeviceContext& ctx) {
  using namespace gemv_detail;
  if (!ctx.switches.down_combine_staged || p.k < 1 || p.k > kStagedMaxPairs) return false;
  const bool bf16_w = !p.w_int4 && !p.w_scale;  // weights in the activation dtype: bf16 activations only
  if (bf16_w ? (act != DType::BF16 || p.I % 8 != 0)
             : p.w_int4 ? (!p.w_scale || p.I % 32 != 0 || p.scale_k_shift < 5 || p.scale_k_shift >= 31)
                        : (p.I % 16 != 0 || p.scale_k_shift < 4))
    return false;  // (the per-pair kernels' requirements: each chunk in one scale group)
  bool fits = false;
  dispatch_row_fmt(act, p.w_int4, p.w_scale != nullptr, [&]<typename T, RowFmt F>() {
    int C = 0, R = 0;
    fits = staged_shape<T, F>(p, ctx, C, R);
  });
  return fits;
}

}  // namespace ds::gpu
