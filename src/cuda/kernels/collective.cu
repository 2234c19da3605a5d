#include "cuda/kernels/collective.h"

#include <algorithm>
#include <cstdio>
#include <type_traits>

#include "cuda/cuda_check.h"
#include "cuda/kernels/common.cuh"

namespace ds::gpu {
namespace {

template <typename T>
__global__ void rank_sum_kernel(RankSumParams p) {
  for (int64_t i = p.begin + int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < p.end;
       i += int64_t(gridDim.x) * blockDim.x) {
    float s = 0.f;
    for (int r = 0; r < p.ranks; ++r) s += to_f32(static_cast<const T*>(p.data[r])[i]);
    const T v = from_f32<T>(s);
    for (int r = 0; r < p.ranks; ++r) static_cast<T*>(p.data[r])[i] = v;
  }
}

__device__ __forceinline__ void store_release_sys(uint32_t* a, uint32_t v) {
  asm volatile("st.release.sys.global.u32 [%0], %1;" ::"l"(a), "r"(v) : "memory");
}
__device__ __forceinline__ uint32_t load_acquire_sys(const uint32_t* a) {
  uint32_t v;
  asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(a) : "memory");
  return v;
}
__device__ __forceinline__ uint64_t global_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// One 16-byte vector (kVec) or one element per unit; every rank has the same n, so the same units, grid and
// slices (the path depends on n alone); kAligned: this rank's data is 16-byte aligned (else its vectors are
// read and written element by element; the staging always is).
template <typename T, bool kVec, bool kAligned>
__global__ void __launch_bounds__(256) peer_all_reduce_kernel(PeerAllReduceParams p) {
  using U = std::conditional_t<kVec, uint4, std::conditional_t<sizeof(T) == 4, uint32_t, uint16_t>>;
  constexpr int kPer = int(sizeof(U) / sizeof(T));
  __shared__ uint32_t call;
  const int b = blockIdx.x, t = threadIdx.x;
  if (t == 0) call = p.calls[b] + 1;
  __syncthreads();
  const uint32_t c = call;
  const int64_t half = int64_t(c & 1u) * p.half_bytes;
  const int64_t units = p.n / kPer, per = (units + gridDim.x - 1) / gridDim.x;
  const int64_t lo = min(units, per * b), hi = min(units, lo + per);
  U* data = static_cast<U*>(p.data);
  T* elems = static_cast<T*>(p.data);
  U* mine = reinterpret_cast<U*>(static_cast<char*>(p.staging[p.rank]) + half);
  for (int64_t i = lo + t; i < hi; i += blockDim.x) {
    if constexpr (kAligned) {
      mine[i] = data[i];
    } else {
      U u;
      T* d = reinterpret_cast<T*>(&u);
#pragma unroll
      for (int k = 0; k < kPer; ++k) d[k] = elems[i * kPer + k];
      mine[i] = u;
    }
  }
  __syncthreads();
  if (t < p.ranks && t != p.rank) {  // thread t: tell peer t, then wait for it
    __threadfence_system();
    store_release_sys(p.flags[t] + p.rank * kPeerBlocks + b, c);
    const uint32_t* f = p.flags[p.rank] + t * kPeerBlocks + b;
    const uint64_t start = global_ns(), limit = uint64_t(p.timeout_s * 1e9);
    for (uint32_t spins = 1; int32_t(load_acquire_sys(f) - c) < 0; ++spins) {  // (call numbers wrap: serial order)
      const uint64_t waited = global_ns() - start;
      // the host-mapped abort flag: once a wait has lasted 1 ms, every 1,024th spin (not a PCIe read a spin)
      if (waited > 1000000 && (spins & 1023u) == 0 && p.abort && *reinterpret_cast<const volatile uint32_t*>(p.abort))
        break;
      if (waited > limit) {  // (the flag seen, and this rank's own flag at that peer: which side never arrived)
        printf("deltaserve: peer all-reduce: rank %d waited %.0f s for rank %d (block %d, call %u; its flag here %u, "
               "ours there %u)\n",
               p.rank, p.timeout_s, t, b, c, load_acquire_sys(f), load_acquire_sys(p.flags[t] + p.rank * kPeerBlocks + b));
        __trap();
      }
    }
  }
  __syncthreads();
  for (int64_t i = lo + t; i < hi; i += blockDim.x) {
    float s[kPer];
#pragma unroll
    for (int k = 0; k < kPer; ++k) s[k] = 0.f;
    for (int r = 0; r < p.ranks; ++r) {
      const U* src = reinterpret_cast<const U*>(static_cast<const char*>(p.staging[r]) + half);
      const U u = __ldcg(src + i);  // L2, never a stale L1 line
      const T* v = reinterpret_cast<const T*>(&u);
#pragma unroll
      for (int k = 0; k < kPer; ++k) s[k] += to_f32(v[k]);
    }
    U out;
    T* o = reinterpret_cast<T*>(&out);
#pragma unroll
    for (int k = 0; k < kPer; ++k) o[k] = from_f32<T>(s[k]);
    if constexpr (kAligned) {
      data[i] = out;
    } else {
#pragma unroll
      for (int k = 0; k < kPer; ++k) elems[i * kPer + k] = o[k];
    }
  }
  if (t == 0) p.calls[b] = c;
}

}  // namespace

void run_peer_all_reduce(const PeerAllReduceParams& p, const DeviceContext& ctx) {
  if (p.n <= 0) return;
  DS_GPU_REQUIRE(p.ranks >= 1 && p.ranks <= kMaxCollectiveRanks && p.rank >= 0 && p.rank < p.ranks,
                 "run_peer_all_reduce: rank and 1..8 ranks");
  DS_GPU_REQUIRE(p.dtype == DType::F32 || p.dtype == DType::BF16, "run_peer_all_reduce: fp32 or bf16 only");
  DS_GPU_REQUIRE(p.n * int64_t(dtype_size(p.dtype)) <= p.half_bytes, "run_peer_all_reduce: beyond the staging");
  for (int r = 0; r < p.ranks; ++r)
    DS_GPU_REQUIRE(p.staging[r] != nullptr && p.flags[r] != nullptr, "run_peer_all_reduce: a rank's staging");
  DS_GPU_REQUIRE(p.calls != nullptr && p.data != nullptr, "run_peer_all_reduce: null pointer");
  const int64_t bytes = p.n * int64_t(dtype_size(p.dtype));
  // The path, the units and the grid depend on n alone, so every rank takes the same ones (a rank whose data
  // is not 16-byte aligned moves its vectors element by element).
  DS_GPU_REQUIRE(p.half_bytes % 16 == 0, "run_peer_all_reduce: staging halves of whole 16-byte vectors");
  const bool vec = bytes % 16 == 0, aligned = reinterpret_cast<uintptr_t>(p.data) % 16 == 0;
  // Always kPeerBlocks blocks (those without elements still flag and wait): every block counts every call, so
  // the blocks agree on the call's parity whatever the sizes of earlier calls, and a rank can only rewrite a
  // staging half once each peer's previous kernel, which read it, has ended.
  dispatch_act(p.dtype, [&]<typename T>() {
    if (vec && aligned) peer_all_reduce_kernel<T, true, true><<<kPeerBlocks, 256, 0, ctx.stream>>>(p);
    else if (vec) peer_all_reduce_kernel<T, true, false><<<kPeerBlocks, 256, 0, ctx.stream>>>(p);
    else peer_all_reduce_kernel<T, false, true><<<kPeerBlocks, 256, 0, ctx.stream>>>(p);
  });
  DS_CUDA_CHECK_LAUNCH();
}

void preload_peer_all_reduce() {
  cudaFuncAttributes a{};
  for (DType t : {DType::F32, DType::BF16})
    dispatch_act(t, [&]<typename T>() {
      DS_CUDA_CHECK(cudaFuncGetAttributes(&a, peer_all_reduce_kernel<T, true, true>));
      DS_CUDA_CHECK(cudaFuncGetAttributes(&a, peer_all_reduce_kernel<T, true, false>));
      DS_CUDA_CHECK(cudaFuncGetAttributes(&a, peer_all_reduce_kernel<T, false, true>));
    });
}

void run_rank_sum(const RankSumParams& p, const DeviceContext& ctx) {
  if (p.end <= p.begin) return;
  DS_GPU_REQUIRE(p.ranks >= 1 && p.ranks <= kMaxCollectiveRanks, "run_rank_sum: 1..8 ranks");
  DS_GPU_REQUIRE(p.dtype == DType::F32 || p.dtype == DType::BF16, "run_rank_sum: fp32 or bf16 only");
  for (int r = 0; r < p.ranks; ++r) DS_GPU_REQUIRE(p.data[r] != nullptr, "run_rank_sum: null buffer");
  const int64_t n = p.end - p.begin;
  const unsigned grid = unsigned(std::min<int64_t>((n + 255) / 256, int64_t(ctx.num_sms()) * 8));
  dispatch_act(p.dtype, [&]<typename T>() { rank_sum_kernel<T><<<grid, 256, 0, ctx.stream>>>(p); });
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace ds::gpu
