// Timings of the KDA and MLA attention kernels next to their memory floors (bf16 activations unless
// noted). CUDA events after warm-up, medians of repeated samples; inputs are rotated over several copies
// so that state / cache reads come from HBM rather than L2. Built by bench/kda_build.sh; the fla
// comparison is bench/kda_fla_bench.py. Prints one line per case and a table at the end.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "config/runtime_env.h"
#include "cuda/cuda_check.h"
#include "cuda/device_buffer.h"
#include "cuda/device_context.h"
#include "cuda/kernels/kda_decode.h"
#include "cuda/kernels/kda_prefill.h"
#include "cuda/kernels/kda_state.cuh"
#include "cuda/kernels/mla_decode.h"
#include "cuda/kernels/mla_prefill.h"

using namespace ds;
using namespace ds::gpu;

namespace {

// The default stream of the current device, kernels configured once (make_device_context).
const DeviceContext& bench_ctx() {
  static const DeviceContext ctx = make_device_context(nullptr, cuda_env());
  return ctx;
}

__device__ uint32_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return uint32_t(x);
}
// Uniform values in [lo, hi).
template <typename T> __global__ void fill_kernel(T* p, size_t n, uint64_t seed, float lo, float hi) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float u = (mix(seed * 0x9e3779b97f4a7c15ull + i) >> 8) * (1.0f / 16777216.0f);
    const float x = lo + (hi - lo) * u;
    if constexpr (sizeof(T) == 2) p[i] = __float2bfloat16_rn(x);
    else p[i] = x;
  }
}
template <typename T> void fill(void* p, size_t n, uint64_t seed, float lo, float hi) {
  fill_kernel<T><<<1024, 256>>>(static_cast<T*>(p), n, seed, lo, hi);
  DS_CUDA_CHECK_LAUNCH();
}

double median_ms(const std::function<void(int)>& f, int warmup, int samples, int batch) {
  cudaEvent_t a, b;
  DS_CUDA_CHECK(cudaEventCreate(&a));
  DS_CUDA_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < warmup; ++i) f(i);
  DS_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<double> t;
  int call = 0;
  for (int s = 0; s < samples; ++s) {
    DS_CUDA_CHECK(cudaEventRecord(a));
    for (int j = 0; j < batch; ++j) f(call++);
    DS_CUDA_CHECK(cudaEventRecord(b));
    DS_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0.f;
    DS_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(double(ms) / batch);
  }
  DS_CUDA_CHECK(cudaGetLastError());
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct Row {
  std::string name, shape;
  double ms, floor_ms;
  std::string note;
};
std::vector<Row> g_rows;
double g_bw = 4.3e12;  // bytes/s, replaced by the measured copy bandwidth

void report(const std::string& name, const std::string& shape, double ms, double floor_ms, const std::string& note) {
  std::printf("%-22s %-28s %9.4f ms  floor %8.4f ms  (%5.1f%%)  %s\n", name.c_str(), shape.c_str(), ms, floor_ms,
              100.0 * floor_ms / ms, note.c_str());
  std::fflush(stdout);
  g_rows.push_back({name, shape, ms, floor_ms, note});
}

void bench_copy() {
  const size_t bytes = size_t(2) << 30;
  DeviceBuffer a(bytes), b(bytes);
  fill<float>(a.data(), bytes / 4, 1, -1.f, 1.f);
  const double ms = median_ms([&](int) { DS_CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice)); },
                              3, 10, 1);
  g_bw = 2.0 * bytes / (ms * 1e-3);
  report("d2d copy", "2 GiB", ms, ms, "bandwidth " + std::to_string(int(g_bw / 1e9)) + " GB/s (read+write)");
}

// ---- KDA prefill ---------------------------------------------------------------------------------
void bench_kda_prefill(int N, int len, int H, DType act) {
  const int T = N * len;
  const size_t esz = act == DType::BF16 ? 2 : 4;
  const size_t nq = size_t(T) * H * 128;
  DeviceBuffer q(nq * esz), k(nq * esz), v(nq * esz), o(nq * esz), g(nq * 4), beta(size_t(T) * H * 4);
  auto fill_act = [&](void* p, uint64_t s, float lo, float hi) {
    if (act == DType::BF16) fill<__nv_bfloat16>(p, nq, s, lo, hi);
    else fill<float>(p, nq, s, lo, hi);
  };
  fill_act(q.data(), 2, -1.f, 1.f);
  fill_act(k.data(), 3, -1.f, 1.f);
  fill_act(v.data(), 4, -1.f, 1.f);
  fill<float>(g.data(), nq, 5, -1.0f, -0.01f);
  fill<float>(beta.data(), size_t(T) * H, 6, 0.05f, 0.95f);
  DeviceBuffer pool(size_t(N) * H * 128 * 128 * 4);
  fill<float>(pool.data(), pool.bytes() / 4, 7, -0.1f, 0.1f);
  std::vector<int32_t> cu(N + 1), slots(N);
  for (int i = 0; i <= N; ++i) cu[i] = i * len;
  for (int i = 0; i < N; ++i) slots[i] = i;
  DeviceBuffer d_cu(cu.size() * 4), d_slots(slots.size() * 4);
  DS_CUDA_CHECK(cudaMemcpy(d_cu.data(), cu.data(), cu.size() * 4, cudaMemcpyHostToDevice));
  DS_CUDA_CHECK(cudaMemcpy(d_slots.data(), slots.data(), slots.size() * 4, cudaMemcpyHostToDevice));
  DeviceBuffer ws(kda_prefill_workspace_bytes(T, N, H, act));
  KdaPrefillParams p;
  p.q = q.data();
  p.k = k.data();
  p.v = v.data();
  p.g = g.as<float>();
  p.beta = beta.as<float>();
  p.o = o.data();
  p.state_pool = pool.as<float>();
  p.cu_seqlens = d_cu.as<int32_t>();
  p.state_slots = d_slots.as<int32_t>();
  p.workspace = ws.data();
  p.total_tokens = T;
  p.num_seqs = N;
  p.num_heads = H;
  const double ms = median_ms([&](int) { run_kda_prefill(p, act, bench_ctx()); }, 3, 15, 1);

  // Kernel 1 alone (same launch as run_kda_prefill).
  double ms1 = 0.0;
  int occ1 = 0;
  if (act == DType::BF16) {
    using IO = __nv_bfloat16;
    KdaPrefillParams p1 = p;
    p1.ldq = p1.ldk = p1.ldv = p1.ldo = int64_t(H) * 128;
    p1.scale = 0.08838834764831845f;
    const int chunks = T / 64 + N;
    kda::Work w;
    w.blocks = ws.data();
    const size_t blk = (size_t(chunks) * H * kda::Work::kElems * sizeof(IO) + 255) / 256 * 256;
    w.gamma_last = reinterpret_cast<float*>(static_cast<char*>(ws.data()) + blk);
    const size_t smem = sizeof(kda::IntraSmem<IO>);
    DS_CUDA_CHECK(cudaFuncSetAttribute(kda::kda_intra_kernel<IO>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    ms1 = median_ms([&](int) { kda::kda_intra_kernel<IO><<<dim3(chunks, H), kda::kIntraThreads, smem>>>(p1, w); }, 3,
                    15, 1);
    DS_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ1, kda::kda_intra_kernel<IO>, kda::kIntraThreads, smem));
  }
  const double bytes = double(nq) * esz * 4 + double(nq) * 4 + double(T) * H * 4 + double(N) * H * 65536.0 * 2;
  char shape[64], note[128];
  std::snprintf(shape, sizeof shape, "%s N=%d x T=%d H=%d", act == DType::BF16 ? "bf16" : "f32", N, len, H);
  std::snprintf(note, sizeof note, "intra kernel %.3f ms (%d CTA/SM), state pass %.3f ms", ms1, occ1, ms - ms1);
  report("kda prefill", shape, ms, bytes / g_bw * 1e3, act == DType::BF16 ? note : "");
}

// ---- KDA decode ----------------------------------------------------------------------------------
void bench_kda_decode(int N, int H) {
  const int rot = std::max(1, 256 / N);  // >= 256 MiB of state in rotation
  const size_t nq = size_t(N) * H * 128;
  DeviceBuffer q(nq * 2), k(nq * 2), v(nq * 2), o(nq * 2), g(nq * 4), beta(size_t(N) * H * 4);
  fill<__nv_bfloat16>(q.data(), nq, 8, -1.f, 1.f);
  fill<__nv_bfloat16>(k.data(), nq, 9, -1.f, 1.f);
  fill<__nv_bfloat16>(v.data(), nq, 10, -1.f, 1.f);
  fill<float>(g.data(), nq, 11, -1.f, -0.01f);
  fill<float>(beta.data(), size_t(N) * H, 12, 0.05f, 0.95f);
  DeviceBuffer pool(size_t(N) * rot * H * 128 * 128 * 4);
  fill<float>(pool.data(), pool.bytes() / 4, 13, -0.1f, 0.1f);
  std::vector<int32_t> slots(size_t(N) * rot);
  for (size_t i = 0; i < slots.size(); ++i) slots[i] = int32_t(i);
  DeviceBuffer d_slots(slots.size() * 4);
  DS_CUDA_CHECK(cudaMemcpy(d_slots.data(), slots.data(), slots.size() * 4, cudaMemcpyHostToDevice));
  KdaDecodeParams p;
  p.q = q.data();
  p.k = k.data();
  p.v = v.data();
  p.g = g.as<float>();
  p.beta = beta.as<float>();
  p.o = o.data();
  p.state_pool = pool.as<float>();
  p.num_seqs = N;
  p.num_heads = H;
  const double ms = median_ms(
      [&](int i) {
        p.state_slots = d_slots.as<int32_t>() + size_t(i % rot) * N;
        run_kda_decode(p, DType::BF16, bench_ctx());
      },
      10, 25, 20);
  const double bytes = double(N) * H * 65536.0 * 2 + double(nq) * (3 * 2 + 4 + 2);
  char shape[64];
  std::snprintf(shape, sizeof shape, "bf16 N=%d H=%d", N, H);
  report("kda decode", shape, ms, bytes / g_bw * 1e3,
         "state " + std::to_string(int(double(N) * H * 65536.0 * 2 / (ms * 1e-3) / 1e9)) + " GB/s");
}

// ---- MLA decode ----------------------------------------------------------------------------------
void bench_mla_decode(int rows, int ctx, int H) {
  constexpr int bs = 64;
  const int nb = (ctx + bs - 1) / bs;
  const double row_bytes = double(ctx) * 576 * 2;
  const int rot = std::max(1, int(256e6 / (row_bytes * rows)));
  const size_t blocks = size_t(rot) * rows * nb;
  DeviceBuffer cache(blocks * bs * 576 * 2), q(size_t(rows) * H * 576 * 2), o(size_t(rows) * H * 512 * 2);
  fill<__nv_bfloat16>(cache.data(), blocks * bs * 576, 14, -1.f, 1.f);
  fill<__nv_bfloat16>(q.data(), size_t(rows) * H * 576, 15, -1.f, 1.f);
  std::vector<int32_t> tables(blocks), lens(rows, ctx);
  for (size_t i = 0; i < blocks; ++i) tables[i] = int32_t((i * 7919) % blocks);  // scattered pages
  DeviceBuffer d_tables(tables.size() * 4), d_lens(lens.size() * 4);
  DS_CUDA_CHECK(cudaMemcpy(d_tables.data(), tables.data(), tables.size() * 4, cudaMemcpyHostToDevice));
  DS_CUDA_CHECK(cudaMemcpy(d_lens.data(), lens.data(), lens.size() * 4, cudaMemcpyHostToDevice));
  int sms = 0;
  DS_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const int splits = choose_mla_decode_splits(rows, ctx, sms);
  DeviceBuffer ws(std::max<size_t>(16, mla_decode_workspace_bytes(rows, H, splits)));
  MlaDecodeParams p;
  p.q = q.data();
  p.cache = cache.data();
  p.context_lens = d_lens.as<int32_t>();
  p.o = o.data();
  p.workspace = ws.data();
  p.rows = rows;
  p.num_heads = H;
  p.block_size = bs;
  p.max_blocks = nb;
  p.num_splits = splits;
  const double ms = median_ms(
      [&](int i) {
        p.block_tables = d_tables.as<int32_t>() + size_t(i % rot) * rows * nb;
        run_mla_decode(p, DType::BF16, bench_ctx());
      },
      10, 25, 10);
  char shape[64];
  std::snprintf(shape, sizeof shape, "bf16 rows=%d ctx=%d H=%d", rows, ctx, H);
  report("mla decode", shape, ms, row_bytes * rows / g_bw * 1e3,
         "splits " + std::to_string(splits) + ", cache " + std::to_string(int(row_bytes * rows / (ms * 1e-3) / 1e9)) +
             " GB/s");
}

// ---- MLA prefill ---------------------------------------------------------------------------------
void bench_mla_prefill(int N, int len, int H) {
  const int T = N * len;
  DeviceBuffer q(size_t(T) * H * 192 * 2), kv(size_t(T) * H * 256 * 2), kva(size_t(T) * 576 * 2),
      o(size_t(T) * H * 128 * 2);
  fill<__nv_bfloat16>(q.data(), q.bytes() / 2, 16, -1.f, 1.f);
  fill<__nv_bfloat16>(kv.data(), kv.bytes() / 2, 17, -1.f, 1.f);
  fill<__nv_bfloat16>(kva.data(), kva.bytes() / 2, 18, -1.f, 1.f);
  std::vector<int32_t> cu(N + 1);
  for (int i = 0; i <= N; ++i) cu[i] = i * len;
  DeviceBuffer d_cu(cu.size() * 4);
  DS_CUDA_CHECK(cudaMemcpy(d_cu.data(), cu.data(), cu.size() * 4, cudaMemcpyHostToDevice));
  MlaPrefillParams p;
  p.q = q.data();
  p.k_nope = kv.data();
  p.ldkn = int64_t(H) * 256;
  p.hkn = 256;
  p.v = static_cast<char*>(kv.data()) + 256;
  p.ldv = int64_t(H) * 256;
  p.hv = 256;
  p.k_pe = static_cast<char*>(kva.data()) + 1024;
  p.ldkpe = 576;
  p.o = o.data();
  p.cu_seqlens_q = d_cu.as<int32_t>();
  p.cu_seqlens_k = d_cu.as<int32_t>();
  p.num_seqs = N;
  p.num_heads = H;
  p.max_seqlen_q = len;
  const double ms = median_ms([&](int) { run_mla_prefill(p, DType::BF16, bench_ctx()); }, 3, 15, 1);
  const double flops = double(N) * H * (double(len) * len / 2) * (192 + 128) * 2;
  char shape[64], note[64];
  std::snprintf(shape, sizeof shape, "bf16 N=%d x T=%d H=%d", N, len, H);
  std::snprintf(note, sizeof note, "%.0f TFLOP/s (causal)", flops / (ms * 1e-3) / 1e12);
  report("mla prefill", shape, ms, flops / 790e12 * 1e3, note);
}

}  // namespace

int main(int argc, char** argv) {
  cudaDeviceProp prop{};
  DS_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, %.0f MB L2\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize / 1e6);
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  bench_copy();
  bench_kda_prefill(1, 8192, 32, DType::BF16);
  bench_kda_prefill(4, 2048, 32, DType::BF16);
  if (!quick) {
    bench_kda_prefill(8, 1024, 32, DType::BF16);
    bench_kda_prefill(1, 32768, 32, DType::BF16);
    bench_kda_prefill(1, 8192, 32, DType::F32);
  }
  for (int n : {1, 16, 64, 256}) bench_kda_decode(n, 32);
  bench_mla_decode(1, 4096, 32);
  bench_mla_decode(1, 32768, 32);
  bench_mla_decode(1, 131072, 32);
  bench_mla_decode(64, 4096, 32);
  bench_mla_decode(128, 2048, 32);
  bench_mla_prefill(1, 8192, 32);
  bench_mla_prefill(4, 2048, 32);

  std::printf("\n| kernel | shape | median ms | floor ms | floor/time | note |\n|---|---|---:|---:|---:|---|\n");
  for (const auto& r : g_rows)
    std::printf("| %s | %s | %.4f | %.4f | %.0f%% | %s |\n", r.name.c_str(), r.shape.c_str(), r.ms, r.floor_ms,
                100.0 * r.floor_ms / r.ms, r.note.c_str());
  return 0;
}
