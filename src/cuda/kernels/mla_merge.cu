// Log-sum-exp merge of two partial attentions (see mla_merge.h). One thread per 4 output elements of a
// (token, head) row; the row's two log-sum-exps are read by every thread of the row (cached).
#include <cmath>
#include <string>

#include "cuda/kernels/common.cuh"
#include "cuda/kernels/mla_merge.h"

namespace ds::gpu {
namespace {

constexpr int kVec = 4, kThreads = 256;

template <typename T> __device__ __forceinline__ void load4(const T* p, float (&f)[kVec]) {
#pragma unroll
  for (int i = 0; i < kVec; ++i) f[i] = to_f32(p[i]);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) mla_merge_kernel(MlaMergeParams p) {
  pdl_trigger();
  pdl_wait();
  const int64_t per_row = p.Dv / kVec;
  const int64_t idx = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  // no early return: the whole warp reaches the __syncwarp below
  const bool valid = idx < p.T * p.H * per_row;
  const int64_t c = (idx % per_row) * kVec, th = idx / per_row, h = th % p.H, t = th / p.H;
  const float lb = valid ? p.lse_b[t * p.ld_lse + h] : -INFINITY;
  const float la = valid && p.o_a ? p.lse_a[t * p.ld_lse + h] : -INFINITY;
  const float m = fmaxf(la, lb);
  float out[kVec] = {0.f, 0.f, 0.f, 0.f};
  float lse = -INFINITY;
  if (m != -INFINITY) {
    const float wa = expf(la - m), wb = expf(lb - m), inv = 1.f / (wa + wb);
    float ob[kVec];
    load4(static_cast<const T*>(p.o_b) + t * p.ldb + h * p.Dv + c, ob);
    if (p.o_a) {
      const float4 oa = *reinterpret_cast<const float4*>(p.o_a + t * p.lda + h * p.Dv + c);
      const float a[kVec] = {oa.x, oa.y, oa.z, oa.w};
#pragma unroll
      for (int i = 0; i < kVec; ++i) out[i] = (wa * a[i] + wb * ob[i]) * inv;
    } else {
#pragma unroll
      for (int i = 0; i < kVec; ++i) out[i] = ob[i];  // w_a = 0: B alone
    }
    lse = m + logf(wa + wb);
  }
  if (!valid) {
  } else if (p.out_act) {
    T* dst = static_cast<T*>(p.o) + t * p.ldo + h * p.Dv + c;
#pragma unroll
    for (int i = 0; i < kVec; ++i) dst[i] = from_f32<T>(out[i]);
  } else {
    *reinterpret_cast<float4*>(static_cast<float*>(p.o) + t * p.ldo + h * p.Dv + c) =
        make_float4(out[0], out[1], out[2], out[3]);
  }
  // lse may alias lse_a / lse_b, which every thread of the row read above: the row's threads share one
  // warp (Dv / 4 divides 32), so its first thread writes once they all have
  __syncwarp();
  if (valid && p.lse && c == 0) p.lse[t * p.ld_lse + h] = lse;
}

}  // namespace

void run_mla_merge(const MlaMergeParams& p0, DType act, const DeviceContext& ctx) {
  MlaMergeParams p = p0;
  DS_GPU_REQUIRE(p.T >= 0 && p.H > 0 && p.Dv > 0 && p.Dv % kVec == 0 && 32 % (p.Dv / kVec) == 0,
                 "mla merge: Dv must be 4, 8, 16, 32, 64 or 128");
  if (p.T == 0) return;
  DS_GPU_REQUIRE(p.o_b && p.lse_b && p.o && (!p.o_a || p.lse_a), "mla merge: null pointer argument");
  if (p.lda == 0) p.lda = p.H * p.Dv;
  if (p.ldb == 0) p.ldb = p.H * p.Dv;
  if (p.ldo == 0) p.ldo = p.H * p.Dv;
  if (p.ld_lse == 0) p.ld_lse = p.H;
  DS_GPU_REQUIRE(p.lda % kVec == 0 && p.ldb % kVec == 0 && p.ldo % kVec == 0,
                 "mla merge: token strides must be multiples of 4 elements");
  const int64_t threads = p.T * p.H * (p.Dv / kVec);
  dispatch_act(act, [&]<typename T>() {
    launch_pdl(mla_merge_kernel<T>, ceil_div(threads, kThreads), kThreads, 0, ctx, p);
  });
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace ds::gpu
