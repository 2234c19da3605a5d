#include <algorithm>

#include "cuda/kernels/common.cuh"
#include "cuda/kernels/elementwise.h"

namespace ds::gpu {
namespace {

template <typename T>
__global__ void embedding_kernel(EmbeddingParams p) {
  pdl_trigger();
  pdl_wait();
  constexpr int N = Vec16<T>::N;
  int vecs = p.dim / N;
  int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t(p.tokens) * vecs) return;
  int64_t t = i / vecs, c = (i % vecs) * N;
  Vec16<T> v;
  v.load(static_cast<const T*>(p.table) + int64_t(p.ids[t]) * p.dim + c);
  v.store(static_cast<T*>(p.y) + t * p.dim + c);
}

template <typename T>
__global__ void silu_mul_kernel(SiluMulParams p) {
  pdl_trigger();
  pdl_wait();
  int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t(p.tokens) * p.inter) return;
  int64_t t = i / p.inter, c = i % p.inter;
  const T* x = static_cast<const T*>(p.x) + t * p.ldx;
  float g = to_f32(x[c]), u = to_f32(x[p.inter + c]);
  static_cast<T*>(p.y)[t * p.ldy + c] = from_f32<T>(siluf_(g) * u);
}

// 16 bytes a thread of gate, up and output (inter, ldx, ldy multiples of 16 / sizeof(T), aligned), 32-bit
// indices; the scalar form above read 2 bytes a thread (8,192 x 1,024: 42 us, 3.5x the bytes' time).
template <typename T>
__global__ void silu_mul_vec_kernel(SiluMulParams p) {
  pdl_trigger();
  pdl_wait();
  constexpr int N = Vec16<T>::N;
  const int vecs = p.inter / N;
  const int i = int(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.tokens * vecs) return;
  const int t = i / vecs, c = (i % vecs) * N;
  const T* x = static_cast<const T*>(p.x) + int64_t(t) * p.ldx;
  Vec16<T> gv, uv;
  gv.load(x + c);
  uv.load(x + p.inter + c);
  float g[N], u[N];
  gv.to_float(g);
  uv.to_float(u);
#pragma unroll
  for (int e = 0; e < N; ++e) g[e] = siluf_(g[e]) * u[e];
  gv.from_float(g);
  gv.store(static_cast<T*>(p.y) + int64_t(t) * p.ldy + c);
}

template <typename T>
__global__ void moe_combine_kernel(MoeCombineParams p) {
  pdl_trigger();
  pdl_wait();
  constexpr int N = Vec16<T>::N;
  int vecs = p.dim / N;
  int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t(p.tokens) * vecs) return;
  int64_t t = i / vecs, c = (i % vecs) * N;
  float acc[N];
#pragma unroll
  for (int e = 0; e < N; ++e) acc[e] = 0.f;
  for (int j = 0; j < p.k; ++j) {
    const int32_t pos = p.pair_pos[t * p.k + j];
    if (pos < 0) continue;  // another rank's expert (expert parallelism)
    float w = p.weights[t * p.k + j];
    Vec16<T> v;
    v.load(static_cast<const T*>(p.expert_out) + int64_t(pos) * p.dim + c);
    float f[N];
    v.to_float(f);
#pragma unroll
    for (int e = 0; e < N; ++e) acc[e] += w * f[e];
  }
  T* r = static_cast<T*>(p.residual) + t * p.dim + c;
  Vec16<T> rv;
  rv.load(r);
  float f[N];
  rv.to_float(f);
#pragma unroll
  for (int e = 0; e < N; ++e) f[e] += acc[e];
  rv.from_float(f);
  rv.store(r);
}

template <typename T>
__global__ void copy_strided_kernel(CopyStridedParams p) {
  pdl_trigger();
  pdl_wait();
  constexpr int N = Vec16<T>::N;
  int vecs = p.width / N;
  int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t(p.rows) * p.heads * vecs) return;
  int64_t r = i / (int64_t(p.heads) * vecs);
  int h = int((i / vecs) % p.heads), c = int(i % vecs) * N;
  int64_t sr = p.row_index ? p.row_index[r] : r;
  Vec16<T> v;
  v.load(static_cast<const T*>(p.src) + sr * p.ld_src + h * p.hs_src + c);
  v.store(static_cast<T*>(p.dst) + r * p.ld_dst + h * p.hs_dst + c);
}

template <typename T>
__global__ void transpose_kernel(const T* src, int64_t lds, int64_t bs, T* dst, int64_t ldd, int64_t bd, int rows,
                                 int cols) {
  int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t(rows) * cols) return;
  int r = int(i / cols), c = int(i % cols);
  dst[blockIdx.y * bd + int64_t(c) * ldd + r] = src[blockIdx.y * bs + int64_t(r) * lds + c];
}

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

template <typename T>
__global__ void fill_uniform_kernel(T* x, int64_t n, float lo, float hi, uint64_t seed, FillIndex ix) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    uint64_t h = mix64(seed * 0x9e3779b97f4a7c15ull + uint64_t(ix.whole(i)));
    float u = float(h >> 40) * (1.0f / 16777216.0f);
    x[i] = from_f32<T>(lo + (hi - lo) * u);
  }
}

template <typename T>
__global__ void add_kernel(T* y, const T* x, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = from_f32<T>(to_f32(y[i]) + to_f32(x[i]));
}

template <typename T>
__global__ void fill_value_kernel(T* x, int64_t n, float v) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] = from_f32<T>(v);
}

template <typename S, typename D>
__global__ void convert_kernel(const S* src, D* dst, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = from_f32<D>(to_f32(src[i]));
}

__global__ void zero_slots_kernel(ZeroSlotsParams p) {
  int64_t vec_per_slot = p.bytes_per_slot / 16;
  int job = blockIdx.y;  // layer * num_slots + i
  int layer = job / p.num_slots, i = job % p.num_slots;
  uint4* dst = reinterpret_cast<uint4*>(static_cast<char*>(p.base) + layer * p.layer_stride +
                                        int64_t(p.slots[i]) * p.slot_stride);
  for (int64_t v = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; v < vec_per_slot;
       v += int64_t(gridDim.x) * blockDim.x)
    dst[v] = make_uint4(0, 0, 0, 0);
}

unsigned grid_for(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  return unsigned(b < 65536 ? (b > 0 ? b : 1) : 65536);
}

}  // namespace

void run_embedding(const EmbeddingParams& p, DType act, const DeviceContext& ctx) {
  if (p.tokens == 0) return;
  DS_GPU_REQUIRE(p.dim % 8 == 0, "run_embedding: dim must be a multiple of 8");
  dispatch_act(act, [&]<typename T>() {
    int64_t n = int64_t(p.tokens) * (p.dim / Vec16<T>::N);
    launch_pdl(embedding_kernel<T>, ceil_div(n, 256), 256, 0, ctx, p);
  });
  DS_CUDA_CHECK_LAUNCH();
}

void run_silu_mul(const SiluMulParams& p, DType act, const DeviceContext& ctx) {
  if (p.tokens == 0) return;
  dispatch_act(act, [&]<typename T>() {
    constexpr int N = Vec16<T>::N;
    const bool vec = ctx.switches.prefill_vec && p.inter % N == 0 && p.ldx % N == 0 && p.ldy % N == 0 && reinterpret_cast<uintptr_t>(p.x) % 16 == 0 &&
                     reinterpret_cast<uintptr_t>(p.y) % 16 == 0 && int64_t(p.tokens) * (p.inter / N) < (int64_t(1) << 31) - 256;
    if (vec) launch_pdl(silu_mul_vec_kernel<T>, ceil_div(int64_t(p.tokens) * (p.inter / N), 256), 256, 0, ctx, p);
    else launch_pdl(silu_mul_kernel<T>, ceil_div(int64_t(p.tokens) * p.inter, 256), 256, 0, ctx, p);
  });
  DS_CUDA_CHECK_LAUNCH();
}

void run_moe_combine(const MoeCombineParams& p, DType act, const DeviceContext& ctx) {
  if (p.tokens == 0) return;
  DS_GPU_REQUIRE(p.dim % 8 == 0, "run_moe_combine: dim must be a multiple of 8");
  dispatch_act(act, [&]<typename T>() {
    int64_t n = int64_t(p.tokens) * (p.dim / Vec16<T>::N);
    launch_pdl(moe_combine_kernel<T>, ceil_div(n, 256), 256, 0, ctx, p);
  });
  DS_CUDA_CHECK_LAUNCH();
}

void run_copy_strided(const CopyStridedParams& p, DType act, const DeviceContext& ctx) {
  if (p.rows == 0 || p.heads == 0 || p.width == 0) return;
  DS_GPU_REQUIRE(p.width % 8 == 0, "run_copy_strided: width must be a multiple of 8");
  dispatch_act(act, [&]<typename T>() {
    int64_t n = int64_t(p.rows) * p.heads * (p.width / Vec16<T>::N);
    launch_pdl(copy_strided_kernel<T>, ceil_div(n, 256), 256, 0, ctx, p);
  });
  DS_CUDA_CHECK_LAUNCH();
}

void run_transpose(const void* src, int64_t ld_src, int64_t batch_src, void* dst, int64_t ld_dst, int64_t batch_dst,
                   int rows, int cols, int batch, DType dtype, const DeviceContext& ctx) {
  if (rows == 0 || cols == 0 || batch == 0) return;
  dispatch_act(dtype, [&]<typename T>() {
    dim3 grid(ceil_div(int64_t(rows) * cols, 256), unsigned(batch));
    transpose_kernel<T><<<grid, 256, 0, ctx.stream>>>(static_cast<const T*>(src), ld_src, batch_src, static_cast<T*>(dst), ld_dst,
                                              batch_dst, rows, cols);
  });
  DS_CUDA_CHECK_LAUNCH();
}

void run_fill_uniform(void* x, DType dtype, int64_t n, float lo, float hi, uint64_t seed, const DeviceContext& ctx,
                      FillIndex ix) {
  if (n == 0) return;
  DS_GPU_REQUIRE(ix.run >= 0 && (ix.run == 0 || ix.stride >= ix.run), "run_fill_uniform: a slice's runs overlap");
  dispatch_act(dtype, [&]<typename T>() {
    fill_uniform_kernel<T><<<grid_for(n, 256), 256, 0, ctx.stream>>>(static_cast<T*>(x), n, lo, hi, seed, ix);
  });
  DS_CUDA_CHECK_LAUNCH();
}

void run_fill_value(void* x, DType dtype, int64_t n, float value, const DeviceContext& ctx) {
  if (n == 0) return;
  dispatch_act(dtype, [&]<typename T>() {
    fill_value_kernel<T><<<grid_for(n, 256), 256, 0, ctx.stream>>>(static_cast<T*>(x), n, value);
  });
  DS_CUDA_CHECK_LAUNCH();
}

void run_add(void* y, const void* x, DType dtype, int64_t n, const DeviceContext& ctx) {
  if (n == 0) return;
  dispatch_act(dtype, [&]<typename T>() {
    add_kernel<T><<<grid_for(n, 256), 256, 0, ctx.stream>>>(static_cast<T*>(y), static_cast<const T*>(x), n);
  });
  DS_CUDA_CHECK_LAUNCH();
}

void run_convert(const void* src, DType src_t, void* dst, DType dst_t, int64_t n, const DeviceContext& ctx) {
  if (n == 0) return;
  dispatch_act(src_t, [&]<typename S>() {
    dispatch_act(dst_t, [&]<typename D>() {
      convert_kernel<S, D><<<grid_for(n, 256), 256, 0, ctx.stream>>>(static_cast<const S*>(src), static_cast<D*>(dst), n);
    });
  });
  DS_CUDA_CHECK_LAUNCH();
}

void run_zero_slots(const ZeroSlotsParams& p, const DeviceContext& ctx) {
  if (p.num_slots == 0 || p.layers == 0) return;
  DS_GPU_REQUIRE(p.bytes_per_slot % 16 == 0 && p.slot_stride % 16 == 0 && p.layer_stride % 16 == 0,
                 "run_zero_slots: sizes must be multiples of 16 bytes");
  int64_t vecs = p.bytes_per_slot / 16;
  unsigned gx = unsigned(std::min<int64_t>((vecs + 255) / 256, 256));
  dim3 grid(gx, unsigned(p.num_slots * p.layers));
  zero_slots_kernel<<<grid, 256, 0, ctx.stream>>>(p);
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace ds::gpu
