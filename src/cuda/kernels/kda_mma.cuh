// Warp-level tensor-core helpers shared by the KDA and MLA attention kernels (kda_*, mla_*).
//
// Two math policies with one interface, so each kernel body is written once:
//   MmaBf16   mma.sync m16n8k16, bf16 operands, fp32 accumulate (the bf16 activation path);
//   MmaTf32x3 mma.sync m16n8k8 on tf32, each product split as hi·hi + hi·lo + lo·hi, which keeps
//             ~fp32 accuracy (relative ~1e-6) for the fp32 activation path used in exactness tests.
// Operands come from shared memory (A as [m][k], B as [n][k] or as [k][n]) or from fp32 values computed
// in registers (make_a/make_b with the fragment coordinates a_coord/b_coord). C fragments follow the
// PTX layout: element e of an m16n8 tile sits at row g + 8·(e>>1), column 2t + (e&1), with g = lane/4
// and t = lane%4. Shared arrays read by ldmatrix need 16-byte aligned rows; padding each row by 16 bytes
// (8 bf16 / 4 floats) keeps the 8 rows of one 8x8 matrix on distinct banks.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace ds::gpu::attn {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(bf16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_float<bf16>(float x) { return __float2bfloat16_rn(x); }

// 2^x with the SFU (relative error ~2^-22; flushes denormals, 2^-inf = 0).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (low half) = lo
  return *reinterpret_cast<uint32_t*>(&v);
}
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// ---------------------------------------------------------------------------------------------
// cp.async (16 bytes, L2 only); `valid == false` writes zeros and reads nothing.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Copies a rows x cols tile of T (cols·sizeof(T) a multiple of 16) from global (row stride lds
// elements) to shared (row stride ldd) with all threads of the block; rows >= valid_rows become zeros.
template <typename T>
__device__ __forceinline__ void load_tile_async(T* dst, int ldd, const T* src, int64_t lds, int rows,
                                                int cols, int valid_rows, int tid, int nthreads) {
  constexpr int kPer = 16 / sizeof(T);
  const int vecs = cols / kPer;
  for (int idx = tid; idx < rows * vecs; idx += nthreads) {
    const int r = idx / vecs, c = (idx % vecs) * kPer;
    const bool ok = r < valid_rows;
    cp_async16(dst + r * ldd + c, ok ? src + r * lds + c : src, ok);
  }
}

// ---------------------------------------------------------------------------------------------
// ldmatrix wrappers (bf16 tiles).
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x2(uint32_t (&r)[2], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x2_trans(uint32_t (&r)[2], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_addr(p)));
}

// ---------------------------------------------------------------------------------------------
struct MmaBf16 {
  using T = bf16;
  static constexpr int kK = 16;        // k per mma
  static constexpr int kAE = 8;        // A elements per lane
  static constexpr int kBE = 4;        // B elements per lane
  static constexpr int kCTiles = 2;    // n8 C tiles that form one A fragment (a_from_c)
  // Long accumulations (thousands of terms) go through fresh accumulators added in IEEE fp32: the
  // tensor cores' fp32 accumulation truncates, a bias of ~2^-23 per step that the fp32 path would see.
  static constexpr bool kSplitAccum = false;
  struct A { uint32_t r[4]; };
  struct B { uint32_t r[2]; };

  __device__ static int a_row(int e, int lane) { return (lane >> 2) + 8 * ((e >> 1) & 1); }
  __device__ static int a_k(int e, int lane) { return 2 * (lane & 3) + (e & 1) + 8 * (e >> 2); }
  __device__ static int b_n(int e, int lane) { return lane >> 2; }
  __device__ static int b_k(int e, int lane) { return 2 * (lane & 3) + (e & 1) + 8 * (e >> 1); }

  __device__ static A pack_a(const float (&v)[kAE]) {
    A a;
#pragma unroll
    for (int i = 0; i < 4; ++i) a.r[i] = pack_bf16(v[2 * i], v[2 * i + 1]);
    return a;
  }
  __device__ static B pack_b(const float (&v)[kBE]) {
    B b;
    b.r[0] = pack_bf16(v[0], v[1]);
    b.r[1] = pack_bf16(v[2], v[3]);
    return b;
  }
  // A tile at p ([m][k], row stride ld elements), rows 0..15, k 0..15.
  __device__ static A load_a(const T* p, int ld, int lane) {
    A a;
    ldsm_x4(a.r, p + (lane & 15) * ld + (lane >> 4) * 8);
    return a;
  }
  // B stored [n][k]: n 0..7, k 0..15.
  __device__ static B load_b(const T* p, int ld, int lane) {
    B b;
    ldsm_x2(b.r, p + (lane & 7) * ld + ((lane >> 3) & 1) * 8);
    return b;
  }
  // B stored [k][n]: k 0..15, n 0..7.
  __device__ static B load_b_km(const T* p, int ld, int lane) {
    B b;
    ldsm_x2_trans(b.r, p + (lane & 15) * ld);
    return b;
  }
  // Same k order as a_from_c (identical to load_b_km for bf16).
  __device__ static B load_b_km_c(const T* p, int ld, int lane) { return load_b_km(p, ld, lane); }
  // A fragment (16 x 16) from the accumulators of two adjacent n8 C tiles (k = their 16 columns).
  __device__ static A a_from_c(const float* c0, const float* c1) {
    A a;
    a.r[0] = pack_bf16(c0[0], c0[1]);
    a.r[1] = pack_bf16(c0[2], c0[3]);
    a.r[2] = pack_bf16(c1[0], c1[1]);
    a.r[3] = pack_bf16(c1[2], c1[3]);
    return a;
  }
  __device__ static void mma(float (&c)[4], const A& a, const B& b) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a.r[0]), "r"(a.r[1]), "r"(a.r[2]), "r"(a.r[3]), "r"(b.r[0]), "r"(b.r[1]));
  }
};

__device__ __forceinline__ uint32_t to_tf32(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r;
}

struct MmaTf32x3 {
  using T = float;
  static constexpr int kK = 8;
  static constexpr int kAE = 4;
  static constexpr int kBE = 2;
  static constexpr int kCTiles = 1;
  static constexpr bool kSplitAccum = true;
  struct A { uint32_t hi[4], lo[4]; };
  struct B { uint32_t hi[2], lo[2]; };

  __device__ static int a_row(int e, int lane) { return (lane >> 2) + 8 * (e & 1); }
  __device__ static int a_k(int e, int lane) { return (lane & 3) + 4 * (e >> 1); }
  __device__ static int b_n(int e, int lane) { return lane >> 2; }
  __device__ static int b_k(int e, int lane) { return (lane & 3) + 4 * e; }

  __device__ static void split(float x, uint32_t& hi, uint32_t& lo) {
    hi = to_tf32(x);
    lo = to_tf32(x - __uint_as_float(hi));
  }
  __device__ static A pack_a(const float (&v)[kAE]) {
    A a;
#pragma unroll
    for (int i = 0; i < 4; ++i) split(v[i], a.hi[i], a.lo[i]);
    return a;
  }
  __device__ static B pack_b(const float (&v)[kBE]) {
    B b;
#pragma unroll
    for (int i = 0; i < 2; ++i) split(v[i], b.hi[i], b.lo[i]);
    return b;
  }
  __device__ static A load_a(const T* p, int ld, int lane) {
    float v[kAE];
#pragma unroll
    for (int e = 0; e < kAE; ++e) v[e] = p[a_row(e, lane) * ld + a_k(e, lane)];
    return pack_a(v);
  }
  __device__ static B load_b(const T* p, int ld, int lane) {
    float v[kBE];
#pragma unroll
    for (int e = 0; e < kBE; ++e) v[e] = p[b_n(e, lane) * ld + b_k(e, lane)];
    return pack_b(v);
  }
  __device__ static B load_b_km(const T* p, int ld, int lane) {
    float v[kBE];
#pragma unroll
    for (int e = 0; e < kBE; ++e) v[e] = p[b_k(e, lane) * ld + b_n(e, lane)];
    return pack_b(v);
  }
  // a_from_c puts C column 2t at k = t and 2t+1 at k = t+4; B rows are read in the same order.
  __device__ static B load_b_km_c(const T* p, int ld, int lane) {
    const int t = lane & 3, g = lane >> 2;
    float v[kBE] = {p[(2 * t) * ld + g], p[(2 * t + 1) * ld + g]};
    return pack_b(v);
  }
  __device__ static A a_from_c(const float* c0, const float* /*unused*/) {
    float v[kAE] = {c0[0], c0[2], c0[1], c0[3]};
    return pack_a(v);
  }
  __device__ static void mma1(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
  __device__ static void mma(float (&c)[4], const A& a, const B& b) {
    mma1(c, a.lo, b.hi);
    mma1(c, a.hi, b.lo);
    mma1(c, a.hi, b.hi);
  }
};

// The policy for an activation type: bf16 -> MmaBf16, float -> MmaTf32x3.
template <typename IO> struct MmaFor;
template <> struct MmaFor<bf16> { using type = MmaBf16; };
template <> struct MmaFor<float> { using type = MmaTf32x3; };

// C fragment coordinates (same for both policies).
__device__ __forceinline__ int c_row(int e, int lane) { return (lane >> 2) + 8 * (e >> 1); }
__device__ __forceinline__ int c_col(int e, int lane) { return 2 * (lane & 3) + (e & 1); }

// Padded shared-memory row stride (elements) for rows of n elements of T (16 extra bytes).
template <typename T> constexpr int padded_ld(int n) { return n + 16 / int(sizeof(T)); }

}  // namespace ds::gpu::attn
