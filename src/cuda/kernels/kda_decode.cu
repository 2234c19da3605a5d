// KDA decode kernel (see kda_decode.h). CTA = 128 threads over a 128 x 32 slice of one head's state:
// thread (rg = tid / 8, cg = tid % 8) holds rows d = rg + 16·r (r < 8) of columns 4·cg .. 4·cg + 3.
#include <string>

#include "cuda/cuda_check.h"
#include "cuda/kernels/kda_decode.h"
#include "cuda/kernels/kda_mma.cuh"

namespace ds::gpu {
namespace {

using attn::bf16;
using attn::to_float;

constexpr int kDim = 128, kSlice = 32, kThreads = 128;

template <typename IO> __device__ __forceinline__ void store4(IO* dst, const float (&v)[4]);
template <> __device__ __forceinline__ void store4<float>(float* dst, const float (&v)[4]) {
  *reinterpret_cast<float4*>(dst) = make_float4(v[0], v[1], v[2], v[3]);
}
template <> __device__ __forceinline__ void store4<bf16>(bf16* dst, const float (&v)[4]) {
  *reinterpret_cast<uint2*>(dst) = make_uint2(attn::pack_bf16(v[0], v[1]), attn::pack_bf16(v[2], v[3]));
}

// Sum of x over the 16 threads with the same cg (lanes xor 8, 16; then the 4 warps through red).
__device__ __forceinline__ float col_sum(float x, float (*red)[kSlice], int warp, int col) {
  x += __shfl_xor_sync(0xffffffffu, x, 8);
  x += __shfl_xor_sync(0xffffffffu, x, 16);
  if ((threadIdx.x & 31) < 8) red[warp][col] = x;
  __syncthreads();
  return red[0][col] + red[1][col] + red[2][col] + red[3][col];
}

template <typename IO>
__global__ void __launch_bounds__(kThreads) kda_decode_kernel(KdaDecodeParams p) {
  __shared__ float s_k[kDim], s_q[kDim], s_a[kDim], s_red[2][4][kSlice], s_norm[2][4];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int n = blockIdx.x, h = blockIdx.y, vs = blockIdx.z, H = p.num_heads;
  const int cg = tid & 7, rg = tid >> 3, v0 = vs * kSlice + 4 * cg;
  const bool fresh = p.fresh != nullptr && p.fresh[n] != 0;
  float* S = p.state_pool + (int64_t(p.state_slots[n]) * H + h) * kDim * kDim;

  float4 s[8];
#pragma unroll
  for (int r = 0; r < 8; ++r)
    s[r] = fresh ? make_float4(0.f, 0.f, 0.f, 0.f) : *reinterpret_cast<const float4*>(S + (rg + 16 * r) * kDim + v0);

  const float kd = to_float(static_cast<const IO*>(p.k)[n * p.ldk + h * kDim + tid]);
  const float qd = to_float(static_cast<const IO*>(p.q)[n * p.ldq + h * kDim + tid]);
  s_a[tid] = expf(p.g[(int64_t(n) * H + h) * kDim + tid]);
  float sk = kd * kd, sq = qd * qd;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    sk += __shfl_xor_sync(0xffffffffu, sk, o);
    sq += __shfl_xor_sync(0xffffffffu, sq, o);
  }
  if (lane == 0) {
    s_norm[0][warp] = sk;
    s_norm[1][warp] = sq;
  }
  __syncthreads();
  const float rk = 1.f / sqrtf(s_norm[0][0] + s_norm[0][1] + s_norm[0][2] + s_norm[0][3] + 1e-6f);
  const float rq = p.scale / sqrtf(s_norm[1][0] + s_norm[1][1] + s_norm[1][2] + s_norm[1][3] + 1e-6f);
  s_k[tid] = kd * rk;
  s_q[tid] = qd * rq;
  __syncthreads();

  // Decay and the prediction Sᵀk̂ of the decayed state.
  float pk[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int r = 0; r < 8; ++r) {
    const int d = rg + 16 * r;
    const float a = s_a[d], kn = s_k[d];
    s[r].x *= a; s[r].y *= a; s[r].z *= a; s[r].w *= a;
    pk[0] = fmaf(s[r].x, kn, pk[0]);
    pk[1] = fmaf(s[r].y, kn, pk[1]);
    pk[2] = fmaf(s[r].z, kn, pk[2]);
    pk[3] = fmaf(s[r].w, kn, pk[3]);
  }
  const float beta = p.beta[int64_t(n) * H + h];
  const IO* vrow = static_cast<const IO*>(p.v) + n * p.ldv + h * kDim + v0;
  float e[4];
#pragma unroll
  for (int c = 0; c < 4; ++c) e[c] = beta * (to_float(vrow[c]) - col_sum(pk[c], s_red[0], warp, 4 * cg + c));
  // (col_sum's barrier also orders the reads of s_red[0] of one column before the next column's write:
  // each column uses its own entries, so no second barrier is needed.)

  // Update and read.
  float po[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int r = 0; r < 8; ++r) {
    const int d = rg + 16 * r;
    const float kn = s_k[d], qn = s_q[d];
    s[r].x = fmaf(kn, e[0], s[r].x);
    s[r].y = fmaf(kn, e[1], s[r].y);
    s[r].z = fmaf(kn, e[2], s[r].z);
    s[r].w = fmaf(kn, e[3], s[r].w);
    po[0] = fmaf(s[r].x, qn, po[0]);
    po[1] = fmaf(s[r].y, qn, po[1]);
    po[2] = fmaf(s[r].z, qn, po[2]);
    po[3] = fmaf(s[r].w, qn, po[3]);
    *reinterpret_cast<float4*>(S + d * kDim + v0) = s[r];
  }
  float out[4];
#pragma unroll
  for (int c = 0; c < 4; ++c) out[c] = col_sum(po[c], s_red[1], warp, 4 * cg + c);
  if (tid < 8) store4<IO>(static_cast<IO*>(p.o) + n * p.ldo + h * kDim + v0, out);
}

}  // namespace

void run_kda_decode(const KdaDecodeParams& p0, DType act, cudaStream_t stream) {
  KdaDecodeParams p = p0;
  DS_GPU_REQUIRE(act == DType::BF16 || act == DType::F32, "kda decode: activations must be bf16 or fp32");
  DS_GPU_REQUIRE(p.head_dim == kDim, "kda decode: head_dim must be 128, got " + std::to_string(p.head_dim));
  DS_GPU_REQUIRE(p.num_heads > 0 && p.num_seqs >= 0, "kda decode: bad sizes");
  if (p.num_seqs == 0) return;
  DS_GPU_REQUIRE(p.q && p.k && p.v && p.g && p.beta && p.o && p.state_pool && p.state_slots,
                 "kda decode: null pointer argument");
  const int64_t row = int64_t(p.num_heads) * kDim;
  if (p.ldq == 0) p.ldq = row;
  if (p.ldk == 0) p.ldk = row;
  if (p.ldv == 0) p.ldv = row;
  if (p.ldo == 0) p.ldo = row;
  DS_GPU_REQUIRE(p.ldo % 4 == 0 && reinterpret_cast<uintptr_t>(p.o) % 16 == 0 &&
                     reinterpret_cast<uintptr_t>(p.state_pool) % 16 == 0,
                 "kda decode: o and the state pool must be 16-byte aligned, ldo a multiple of 4");
  if (p.scale == 0.f) p.scale = 0.08838834764831845f;
  const dim3 grid(p.num_seqs, p.num_heads, kDim / kSlice);
  if (act == DType::BF16) kda_decode_kernel<bf16><<<grid, kThreads, 0, stream>>>(p);
  else kda_decode_kernel<float><<<grid, kThreads, 0, stream>>>(p);
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace ds::gpu
