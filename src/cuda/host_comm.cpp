#include "cuda/host_comm.h"

#include <cuda_runtime.h>

#include "core/dtype.h"
#include "core/error.h"
#include "cuda/cuda_check.h"

namespace ds::gpu {

void HostStagedComm::to_host(const void* src, int64_t n, DType t, const DeviceContext& ctx, std::vector<float>& dst) {
  DS_CHECK(t == DType::F32 || t == DType::BF16, "host-staged collectives: fp32 or bf16 only");
  dst.resize(size_t(n));
  if (n == 0) return;
  if (t == DType::F32) {
    DS_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src, size_t(n) * 4, cudaMemcpyDeviceToHost, ctx.stream));
    DS_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
    return;
  }
  bits_.resize(size_t(n));
  DS_CUDA_CHECK(cudaMemcpyAsync(bits_.data(), src, size_t(n) * 2, cudaMemcpyDeviceToHost, ctx.stream));
  DS_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  for (size_t i = 0; i < size_t(n); ++i) dst[i] = bf16_to_f32(bits_[i]);
}

void HostStagedComm::to_device(const std::vector<float>& src, DType t, const DeviceContext& ctx, void* dst) {
  if (src.empty()) return;
  if (t == DType::F32) {
    DS_CUDA_CHECK(cudaMemcpyAsync(dst, src.data(), src.size() * 4, cudaMemcpyHostToDevice, ctx.stream));
  } else {
    bits_.resize(src.size());
    for (size_t i = 0; i < src.size(); ++i) bits_[i] = f32_to_bf16(src[i]);
    DS_CUDA_CHECK(cudaMemcpyAsync(dst, bits_.data(), bits_.size() * 2, cudaMemcpyHostToDevice, ctx.stream));
  }
  DS_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));  // the host buffer is reused by the next call
}

void HostStagedComm::all_reduce_sum(void* data, int64_t n, DType t, const DeviceContext& ctx) {
  to_host(data, n, t, ctx, a_);
  host_.all_reduce_sum(a_);  // rank order from 0.0f in fp32; rounded once below
  to_device(a_, t, ctx, data);
}

void HostStagedComm::all_gather(const void* in, void* out, int64_t n, DType t, const DeviceContext& ctx) {
  to_host(in, n, t, ctx, a_);
  b_.resize(size_t(n) * size_t(size()));
  host_.all_gather(a_, b_);
  to_device(b_, t, ctx, out);
}

}  // namespace ds::gpu
