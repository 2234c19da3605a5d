// Launchers of the KDA chunked prefill (kda_intra.cuh, kda_state.cuh).
#include <string>

#include "cuda/cuda_check.h"
#include "cuda/kernels/kda_prefill.h"
#include "cuda/kernels/kda_state.cuh"

namespace ds::gpu {
namespace {

using kda::Work;

int max_chunks(int total_tokens, int num_seqs) { return total_tokens / kda::kChunk + num_seqs; }

size_t align256(size_t x) { return (x + 255) / 256 * 256; }

size_t block_bytes(int chunks, int heads, size_t elem) { return align256(size_t(chunks) * heads * Work::kElems * elem); }

template <typename IO> constexpr int state_stages() { return sizeof(IO) == 2 ? 2 : 1; }

template <typename IO> void launch(const KdaPrefillParams& p, const DeviceContext& ctx) {
  const int chunks = max_chunks(p.total_tokens, p.num_seqs);
  Work w;
  w.blocks = p.workspace;
  w.gamma_last = reinterpret_cast<float*>(static_cast<char*>(p.workspace) + block_bytes(chunks, p.num_heads, sizeof(IO)));

  const size_t smem1 = sizeof(kda::IntraSmem<IO>);
  constexpr int kStages = state_stages<IO>();
  const size_t smem2 = sizeof(kda::StateSmem<IO, kStages>);
  if (chunks > 0 && p.total_tokens > 0) {
    kda::kda_intra_kernel<IO><<<dim3(chunks, p.num_heads), kda::kIntraThreads, smem1, ctx.stream>>>(p, w);
    DS_CUDA_CHECK_LAUNCH();
  }
  kda::kda_state_kernel<IO, kStages>
      <<<dim3(p.num_seqs, p.num_heads, kda::kDim / kda::kVSlice), kda::kStateThreads, smem2, ctx.stream>>>(p, w);
  DS_CUDA_CHECK_LAUNCH();
}

template <typename IO> void configure() {
  set_max_dynamic_smem(kda::kda_intra_kernel<IO>, sizeof(kda::IntraSmem<IO>));
  constexpr int kStages = state_stages<IO>();
  set_max_dynamic_smem(kda::kda_state_kernel<IO, kStages>, sizeof(kda::StateSmem<IO, kStages>));
}

}  // namespace

void configure_kda_prefill(const DeviceContext&) {
  configure<attn::bf16>();
  configure<float>();
}

size_t kda_prefill_workspace_bytes(int total_tokens, int num_seqs, int num_heads, DType act) {
  const int chunks = max_chunks(total_tokens, num_seqs);
  const size_t elem = act == DType::BF16 ? 2 : 4;
  return block_bytes(chunks, num_heads, elem) + align256(size_t(chunks) * num_heads * kda::kDim * sizeof(float));
}

void run_kda_prefill(const KdaPrefillParams& p0, DType act, const DeviceContext& ctx) {
  KdaPrefillParams p = p0;
  DS_GPU_REQUIRE(act == DType::BF16 || act == DType::F32, "kda prefill: activations must be bf16 or fp32");
  DS_GPU_REQUIRE(p.head_dim == kda::kDim, "kda prefill: head_dim must be 128, got " + std::to_string(p.head_dim));
  DS_GPU_REQUIRE(p.num_heads > 0 && p.num_seqs >= 0 && p.total_tokens >= 0, "kda prefill: bad sizes");
  if (p.num_seqs == 0) return;
  DS_GPU_REQUIRE(p.q && p.k && p.v && p.g && p.beta && p.o && p.state_pool && p.cu_seqlens && p.state_slots &&
                     p.workspace,
                 "kda prefill: null pointer argument");
  const int64_t row = int64_t(p.num_heads) * kda::kDim;
  if (p.ldq == 0) p.ldq = row;
  if (p.ldk == 0) p.ldk = row;
  if (p.ldv == 0) p.ldv = row;
  if (p.ldo == 0) p.ldo = row;
  DS_GPU_REQUIRE(p.ldq % 8 == 0 && p.ldk % 8 == 0 && p.ldv % 8 == 0 && p.ldo % 8 == 0,
                 "kda prefill: token strides must be multiples of 8 elements");
  const void* ptrs[] = {p.q, p.k, p.v, p.g, p.o, p.workspace};
  for (const void* ptr : ptrs)
    DS_GPU_REQUIRE(reinterpret_cast<uintptr_t>(ptr) % 16 == 0, "kda prefill: tensors must be 16-byte aligned");
  if (p.scale == 0.f) p.scale = 0.08838834764831845f;  // 128^-0.5
  if (act == DType::BF16) launch<attn::bf16>(p, ctx);
  else launch<float>(p, ctx);
}

}  // namespace ds::gpu
