// Paged latent cache write (see mla_cache.h): one thread per 16-byte vector of a token's 576 values.
#include "cuda/cuda_check.h"
#include "cuda/kernels/kda_mma.cuh"
#include "cuda/kernels/mla_cache.h"

namespace ds::gpu {
namespace {

using attn::bf16;

constexpr int kLat = 512, kRope = 64, kQk = 576;

template <typename IO>
__global__ void mla_cache_write_kernel(MlaCacheWriteParams p) {
  constexpr int kPer = 16 / int(sizeof(IO)), kVecs = kQk / kPer;
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= int64_t(p.tokens) * kVecs) return;
  const int t = int(idx / kVecs), c = int(idx % kVecs) * kPer;
  const int32_t slot = p.slot_mapping[t];
  if (slot < 0) return;
  const IO* src = c < kLat ? static_cast<const IO*>(p.c) + t * p.ldc + c
                           : static_cast<const IO*>(p.k_pe) + t * p.ldpe + (c - kLat);
  *reinterpret_cast<uint4*>(static_cast<IO*>(p.cache) + int64_t(slot) * kQk + c) = *reinterpret_cast<const uint4*>(src);
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

}  // namespace

void run_mla_cache_write(const MlaCacheWriteParams& p0, DType act, cudaStream_t stream) {
  MlaCacheWriteParams p = p0;
  DS_GPU_REQUIRE(act == DType::BF16 || act == DType::F32, "mla cache write: activations must be bf16 or fp32");
  if (p.tokens <= 0) return;
  DS_GPU_REQUIRE(p.c && p.k_pe && p.slot_mapping && p.cache, "mla cache write: null pointer argument");
  if (p.ldc == 0) p.ldc = kLat;
  if (p.ldpe == 0) p.ldpe = kRope;
  DS_GPU_REQUIRE(p.ldc % 8 == 0 && p.ldpe % 8 == 0 && aligned16(p.c) && aligned16(p.k_pe) && aligned16(p.cache),
                 "mla cache write: tensors must be 16-byte aligned with strides a multiple of 8");
  const int per = act == DType::BF16 ? 8 : 4;
  const int64_t n = int64_t(p.tokens) * (kQk / per);
  const unsigned blocks = unsigned((n + 255) / 256);
  if (act == DType::BF16) mla_cache_write_kernel<bf16><<<blocks, 256, 0, stream>>>(p);
  else mla_cache_write_kernel<float><<<blocks, 256, 0, stream>>>(p);
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace ds::gpu
