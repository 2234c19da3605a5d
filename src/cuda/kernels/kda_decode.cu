// KDA decode kernel (see kda_decode.h). CTA = 4 groups of 128 threads, group i over the 128 x 32 slice
// of columns [32 i, 32 i + 32) of one head's state: thread (rg = t / 8, cg = t % 8) of a group holds
// rows d = rg + 16·r (r < 8) of columns 4·cg .. 4·cg + 3.
#include <algorithm>
#include <string>

#include "cuda/cuda_check.h"
#include "cuda/kernels/common.cuh"
#include "cuda/kernels/kda_decode.h"
#include "cuda/kernels/kda_mma.cuh"

namespace ds::gpu {
namespace {

using attn::bf16;
using attn::to_float;

constexpr int kDim = 128, kSlice = 32, kGroups = kDim / kSlice, kThreads = 128 * kGroups;

template <typename IO> __device__ __forceinline__ void store4(IO* dst, const float (&v)[4]);
template <> __device__ __forceinline__ void store4<float>(float* dst, const float (&v)[4]) {
  *reinterpret_cast<float4*>(dst) = make_float4(v[0], v[1], v[2], v[3]);
}
template <> __device__ __forceinline__ void store4<bf16>(bf16* dst, const float (&v)[4]) {
  *reinterpret_cast<uint2*>(dst) = make_uint2(attn::pack_bf16(v[0], v[1]), attn::pack_bf16(v[2], v[3]));
}

// Sums of x[c] (c < 4: this thread's columns 4·cg + c) over the 16 threads of a 128-thread group with the same
// cg (lanes xor 8, 16; then the group's 4 warps through red): all four columns behind one barrier.
__device__ __forceinline__ void col_sum4(float (&x)[4], float (*red)[kSlice], int warp, int cg) {
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    x[c] += __shfl_xor_sync(0xffffffffu, x[c], 8);
    x[c] += __shfl_xor_sync(0xffffffffu, x[c], 16);
  }
  if ((threadIdx.x & 31) < 8)
#pragma unroll
    for (int c = 0; c < 4; ++c) red[warp][4 * cg + c] = x[c];
  __syncthreads();
#pragma unroll
  for (int c = 0; c < 4; ++c) x[c] = red[0][4 * cg + c] + red[1][4 * cg + c] + red[2][4 * cg + c] + red[3][4 * cg + c];
}

// One output of the decode short convolution of channel c (conv_decode_one's math, rounded to IO as
// the unfused path stores it); the tail is shifted only when `update` (one writer per channel).
template <typename IO>
__device__ __forceinline__ float conv_one(const Conv1dParams& c, int n, int ch, bool update) {
  constexpr int kMaxTail = 7;  // kernel <= 8 (run_kda_decode checks)
  const IO* w = static_cast<const IO*>(c.weight) + int64_t(ch) * c.kernel;
  IO* st = static_cast<IO*>(c.state) + int64_t(c.slots[n]) * (c.kernel - 1) * c.channels;
  const int tail = c.kernel - 1;
  // every load first (independent, in flight together), then the sum, then the shifted tail: the stores
  // into the state would otherwise order each later load of it behind them
  const IO xin = static_cast<const IO*>(c.x)[int64_t(n) * c.ldx + ch];
  const float wl = to_f32(w[tail]);
  IO v[kMaxTail];
  float wj[kMaxTail];
#pragma unroll
  for (int j = 0; j < kMaxTail; ++j)
    if (j < tail) {
      v[j] = st[int64_t(j) * c.channels + ch];
      wj[j] = to_f32(w[j]);
    }
  float acc = wl * to_f32(xin);
#pragma unroll
  for (int j = 0; j < kMaxTail; ++j)
    if (j < tail) acc += wj[j] * to_f32(v[j]);
  if (update && tail > 0) {
#pragma unroll
    for (int j = 1; j < kMaxTail; ++j)
      if (j < tail) st[int64_t(j - 1) * c.channels + ch] = v[j];
    st[int64_t(tail - 1) * c.channels + ch] = xin;
  }
  return to_f32(from_f32<IO>(siluf_(acc)));
}

// The shared memory of one (sequence, head) step: q, k, v, the decay, the column sums, the norms, beta.
struct KdaDecodeSmem {
  float k[kDim], q[kDim], v[kDim], a[kDim], red[kGroups][2][4][kSlice], norm[2][4];
  float beta;
};

// Prologue of one (sequence n, head h) step: group 0 q, group 1 k, group 2 v (channel gt of the head), group 3
// the decay exp(g); the convolution and gate fused when the params say so. Ends with a CTA barrier.
template <typename IO>
__device__ __forceinline__ void kda_decode_prologue(const KdaDecodeParams& p, KdaDecodeSmem& sm, int n, int h) {
  const int tid = threadIdx.x, lane = tid & 31, grp = tid >> 7, gt = tid & 127, gw = gt >> 5;
  const int H = p.num_heads, HK = H * kDim;
  const int64_t cix = int64_t(h) * kDim + gt;
  if (grp < 3) {
    float x;
    if (p.fuse_conv) {
      x = conv_one<IO>(p.conv, n, int(grp * HK + cix), true);
    } else {
      const IO* src = static_cast<const IO*>(grp == 0 ? p.q : grp == 1 ? p.k : p.v);
      const int64_t ld = grp == 0 ? p.ldq : grp == 1 ? p.ldk : p.ldv;
      x = to_float(src[n * ld + cix]);
    }
    (grp == 0 ? sm.q : grp == 1 ? sm.k : sm.v)[gt] = x;
    if (grp < 2) {  // sum of squares for the L2 norm
      float sq = x * x;
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o);
      if (lane == 0) sm.norm[grp][gw] = sq;
    }
  } else {
    float g;
    if (p.fuse_gate) {
      const KdaGateParams& q = p.gate;
      const float u = to_f32(static_cast<const IO*>(q.f)[n * q.ldf + cix]) + q.dt_bias[cix];
      const float sp = u > 20.f ? u : log1pf(expf(u));
      g = -expf(q.A_log[h]) * sp;
      if (gt == 0) sm.beta = 1.f / (1.f + expf(-to_f32(static_cast<const IO*>(q.b)[n * q.ldb + h])));
    } else {
      g = p.g[(int64_t(n) * H + h) * kDim + gt];
      if (gt == 0) sm.beta = p.beta[int64_t(n) * H + h];
    }
    sm.a[gt] = expf(g);
  }
  __syncthreads();
}

// The step itself on this thread's slice s (rows rg + 16 r, columns v0 .. v0 + 3) of state S: decay, the
// prediction Sᵀk̂, the update, the read; writes the slice back to S and the output.
template <typename IO>
__device__ __forceinline__ void kda_decode_update(const KdaDecodeParams& p, KdaDecodeSmem& sm, float4 (&s)[8], float* S,
                                                  int n, int h) {
  const int tid = threadIdx.x, grp = tid >> 7, gt = tid & 127, gw = gt >> 5;
  const int cg = gt & 7, rg = gt >> 3, v0 = grp * kSlice + 4 * cg;
  const float rk = 1.f / sqrtf(sm.norm[1][0] + sm.norm[1][1] + sm.norm[1][2] + sm.norm[1][3] + 1e-6f);
  const float rq = p.scale / sqrtf(sm.norm[0][0] + sm.norm[0][1] + sm.norm[0][2] + sm.norm[0][3] + 1e-6f);
  const float beta = sm.beta;

  // Decay and the prediction Sᵀk̂ of the decayed state.
  float pk[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int r = 0; r < 8; ++r) {
    const int d = rg + 16 * r;
    const float a = sm.a[d], kn = sm.k[d] * rk;
    s[r].x *= a; s[r].y *= a; s[r].z *= a; s[r].w *= a;
    pk[0] = fmaf(s[r].x, kn, pk[0]);
    pk[1] = fmaf(s[r].y, kn, pk[1]);
    pk[2] = fmaf(s[r].z, kn, pk[2]);
    pk[3] = fmaf(s[r].w, kn, pk[3]);
  }
  col_sum4(pk, sm.red[grp][0], gw, cg);
  float e[4];
#pragma unroll
  for (int c = 0; c < 4; ++c) e[c] = beta * (sm.v[v0 + c] - pk[c]);

  // Update and read.
  float po[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int r = 0; r < 8; ++r) {
    const int d = rg + 16 * r;
    const float kn = sm.k[d] * rk, qn = sm.q[d] * rq;
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
  col_sum4(po, sm.red[grp][1], gw, cg);  // (its own entries: no barrier needed after the first's reads)
  if (gt < 8) store4<IO>(static_cast<IO*>(p.o) + n * p.ldo + h * kDim + v0, po);
}

// Two CTAs an SM (64 registers: the slice's 32 state values and the prologue's loads; a 12-byte spill of the
// latter). Session 18: the convolution's loads issued together and one barrier per column sum (was one per
// column, 8 a step): batch-100 FP8 step 18.14 -> 17.77 ms (docs/PERF.md).
template <typename IO>
__global__ void __launch_bounds__(kThreads, 2) kda_decode_kernel(KdaDecodeParams p) {
  __shared__ KdaDecodeSmem sm;
  const int gt = threadIdx.x & 127, grp = threadIdx.x >> 7;
  const int n = blockIdx.x, h = blockIdx.y, H = p.num_heads;
  const int v0 = grp * kSlice + 4 * (gt & 7), rg = gt >> 3;
  const bool fresh = p.fresh != nullptr && p.fresh[n] != 0;
  float* S = p.state_pool + (int64_t(p.state_slots[n]) * H + h) * kDim * kDim;

  // (the state only after the wait: before it, earlier kernels of the stream, such as this layer's
  // previous decode step, are started but not necessarily finished)
  pdl_trigger();
  pdl_wait();
  if (p.skip_padding && p.fresh != nullptr && p.fresh[n] == 2) {  // a padding row: zeros out, no state traffic
    if (gt < 8) store4<IO>(static_cast<IO*>(p.o) + n * p.ldo + h * kDim + v0, {0.f, 0.f, 0.f, 0.f});
    return;
  }
  float4 s[8];
#pragma unroll
  for (int r = 0; r < 8; ++r)
    s[r] = fresh ? make_float4(0.f, 0.f, 0.f, 0.f) : *reinterpret_cast<const float4*>(S + (rg + 16 * r) * kDim + v0);
  kda_decode_prologue<IO>(p, sm, n, h);
  kda_decode_update<IO>(p, sm, s, S, n, h);
}

}  // namespace

void run_kda_decode(const KdaDecodeParams& p0, DType act, const DeviceContext& ctx) {
  KdaDecodeParams p = p0;
  DS_GPU_REQUIRE(act == DType::BF16 || act == DType::F32, "kda decode: activations must be bf16 or fp32");
  DS_GPU_REQUIRE(p.head_dim == kDim, "kda decode: head_dim must be 128, got " + std::to_string(p.head_dim));
  DS_GPU_REQUIRE(p.num_heads > 0 && p.num_seqs >= 0, "kda decode: bad sizes");
  if (p.num_seqs == 0) return;
  DS_GPU_REQUIRE((p.fuse_conv || (p.q && p.k && p.v)) && (p.fuse_gate || (p.g && p.beta)) && p.o && p.state_pool &&
                     p.state_slots,
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
  DS_GPU_REQUIRE(!p.fuse_conv || (p.conv.x && p.conv.weight && p.conv.state && p.conv.slots &&
                                  p.conv.channels == 3 * int(row) && p.conv.kernel >= 1 && p.conv.kernel <= 8),
                 "kda decode: bad fused convolution parameters");
  DS_GPU_REQUIRE(!p.fuse_gate || (p.gate.f && p.gate.b && p.gate.A_log && p.gate.dt_bias),
                 "kda decode: bad fused gate parameters");
  const dim3 grid(p.num_seqs, p.num_heads);
  if (act == DType::BF16) launch_pdl(kda_decode_kernel<bf16>, grid, kThreads, 0, ctx, p);
  else launch_pdl(kda_decode_kernel<float>, grid, kThreads, 0, ctx, p);
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace ds::gpu
