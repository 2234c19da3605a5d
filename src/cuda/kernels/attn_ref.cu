#include "cuda/kernels/attn_ref.h"
#include "cuda/kernels/common.cuh"

namespace ds::gpu {
namespace {

constexpr int kD = 128;  // KDA head_dim

// Thread v owns column v of the head's state (128 fp32 registers).
template <typename T>
__global__ void __launch_bounds__(kD) kda_ref_kernel(KdaRefParams p) {
  __shared__ float qs[kD], ks[kD], eg[kD], red[32];
  int seq = blockIdx.x / p.heads, h = blockIdx.x % p.heads, v = threadIdx.x;
  int t0 = p.cu_seqlens[seq], t1 = p.cu_seqlens[seq + 1];
  float* S = p.state + (int64_t(p.slots[seq]) * p.heads + h) * kD * kD;
  float s[kD];
#pragma unroll
  for (int d = 0; d < kD; ++d) s[d] = S[int64_t(d) * kD + v];
  float scale = p.scale > 0.f ? p.scale : rsqrtf(float(kD));
  for (int t = t0; t < t1; ++t) {
    float qv = to_f32(static_cast<const T*>(p.q)[int64_t(t) * p.ldq + h * kD + v]);
    float kv = to_f32(static_cast<const T*>(p.k)[int64_t(t) * p.ldk + h * kD + v]);
    float vv = to_f32(static_cast<const T*>(p.v)[int64_t(t) * p.ldv + h * kD + v]);
    float qn = block_sum(qv * qv, red);
    float kn = block_sum(kv * kv, red);
    __syncthreads();
    qs[v] = qv * rsqrtf(qn + 1e-6f) * scale;
    ks[v] = kv * rsqrtf(kn + 1e-6f);
    eg[v] = expf(p.g[int64_t(t) * p.heads * kD + h * kD + v]);
    __syncthreads();
    float b = p.beta[int64_t(t) * p.heads + h];
    float pred = 0.f;
#pragma unroll
    for (int d = 0; d < kD; ++d) {
      s[d] *= eg[d];
      pred = fmaf(s[d], ks[d], pred);
    }
    float e = b * (vv - pred);
    float o = 0.f;
#pragma unroll
    for (int d = 0; d < kD; ++d) {
      s[d] = fmaf(ks[d], e, s[d]);
      o = fmaf(s[d], qs[d], o);
    }
    static_cast<T*>(p.o)[int64_t(t) * p.heads * kD + h * kD + v] = from_f32<T>(o);
  }
#pragma unroll
  for (int d = 0; d < kD; ++d) S[int64_t(d) * kD + v] = s[d];
}

constexpr int kMlaWarps = 4;

// Each warp runs an online softmax over a strided subset of positions; lanes split the Dl outputs.
template <typename T>
__global__ void __launch_bounds__(kMlaWarps * 32) mla_ref_kernel(MlaRefParams p) {
  extern __shared__ float sm[];
  const int D = p.Dl + p.Dr;
  float* q = sm;                        // [D]
  float* acc_all = q + D;               // [warps][Dl]
  float* ml = acc_all + kMlaWarps * p.Dl;  // [warps][2]
  int t = blockIdx.x / p.heads, h = blockIdx.x % p.heads;
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const T* ql = static_cast<const T*>(p.q_lat) + int64_t(t) * p.ld_lat + int64_t(h) * p.head_stride_lat;
  const T* qp = static_cast<const T*>(p.q_pe) + int64_t(t) * p.ld_pe + int64_t(h) * p.head_stride_pe;
  for (int i = threadIdx.x; i < D; i += blockDim.x) q[i] = to_f32(i < p.Dl ? ql[i] : qp[i - p.Dl]) * p.scale;
  __syncthreads();
  int seq = p.token_seq[t], pos = p.token_pos[t];
  const int32_t* bt = p.block_tables + int64_t(seq) * p.max_blocks;
  const T* cache = static_cast<const T*>(p.cache);
  float* acc = acc_all + warp * p.Dl;
  for (int i = lane; i < p.Dl; i += 32) acc[i] = 0.f;
  float m = -INFINITY, l = 0.f;
  for (int j = warp; j <= pos; j += kMlaWarps) {
    const T* c = cache + (int64_t(bt[j / p.block_size]) * p.block_size + j % p.block_size) * D;
    float dot = 0.f;
    for (int i = lane; i < D; i += 32) dot = fmaf(q[i], to_f32(c[i]), dot);
    dot = warp_sum(dot);
    float mn = fmaxf(m, dot);
    float a = expf(m - mn), b = expf(dot - mn);
    l = l * a + b;
    for (int i = lane; i < p.Dl; i += 32) acc[i] = acc[i] * a + b * to_f32(c[i]);
    m = mn;
  }
  if (lane == 0) {
    ml[2 * warp] = m;
    ml[2 * warp + 1] = l;
  }
  __syncthreads();
  float M = -INFINITY;
  for (int w = 0; w < kMlaWarps; ++w) M = fmaxf(M, ml[2 * w]);
  float L = 0.f;
  for (int w = 0; w < kMlaWarps; ++w)
    if (ml[2 * w + 1] > 0.f) L += ml[2 * w + 1] * expf(ml[2 * w] - M);
  T* out = static_cast<T*>(p.o) + int64_t(t) * p.ldo + int64_t(h) * p.Dl;
  for (int i = threadIdx.x; i < p.Dl; i += blockDim.x) {
    float s = 0.f;
    for (int w = 0; w < kMlaWarps; ++w)
      if (ml[2 * w + 1] > 0.f) s += acc_all[w * p.Dl + i] * expf(ml[2 * w] - M);
    out[i] = from_f32<T>(s / L);
  }
}

}  // namespace

void run_kda_ref(const KdaRefParams& p, DType act, const DeviceContext& ctx) {
  if (p.num_seqs == 0) return;
  DS_GPU_REQUIRE(p.head_dim == kD, "run_kda_ref: head_dim must be 128");
  dispatch_act(act, [&]<typename T>() { kda_ref_kernel<T><<<p.num_seqs * p.heads, kD, 0, ctx.stream>>>(p); });
  DS_CUDA_CHECK_LAUNCH();
}

void run_mla_ref(const MlaRefParams& p, DType act, const DeviceContext& ctx) {
  if (p.tokens == 0) return;
  size_t smem = sizeof(float) * (size_t(p.Dl + p.Dr) + size_t(kMlaWarps) * p.Dl + 2 * kMlaWarps);
  DS_GPU_REQUIRE(smem <= 48 * 1024, "run_mla_ref: latent too wide");
  dispatch_act(act, [&]<typename T>() {
    mla_ref_kernel<T><<<unsigned(int64_t(p.tokens) * p.heads), kMlaWarps * 32, smem, ctx.stream>>>(p);
  });
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace ds::gpu
