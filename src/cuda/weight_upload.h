// Internal to the weight loader (device_weights.cpp): the destination of one checkpoint tensor on the
// device, the staged host-to-device uploader (dtype conversion and online FP8 quantization on the GPU)
// and the packer that carves the packed views out of a few large allocations.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "core/dtype.h"
#include "cuda/device_buffer.h"
#include "cuda/device_context.h"
#include "cuda/device_weights.h"
#include "model/safetensors.h"

namespace ds::gpu {

// Where a checkpoint tensor goes: `ptr` in `dtype`; FP8 destinations also name their first scale
// (the component's rows inside its packed view) and the view's scale layout.
struct Dest {
  void* ptr = nullptr;
  DType dtype = DType::BF16;
  float* scale = nullptr;
  int64_t K = 0, ld = 1;
  int rs = 0, ks = 31;
  float* zero = nullptr;  // INT4 destinations (dtype U8): zero points, or null when symmetric
};

// The FP8 layout of one packed view (off: the activation dtype).
struct Fp8Plan {
  bool on = false;
  int rs = 0, ks = 31;  // scale block: 2^rs rows x 2^ks columns (per channel: 0, 31)
  bool pad4 = false;    // block scales: each row's ceil(K / 2^ks) scales padded to a multiple of 4 (cuBLASLt's
                        // block-scale layout, gemm.h fp8_block_scale_ld; CudaEnv::fp8_cublas)
};

// Copies host tensors to the device through two pinned staging buffers, converting dtypes on the GPU.
class Uploader {
 public:
  explicit Uploader(const DeviceContext& ctx);
  ~Uploader();
  Uploader(const Uploader&) = delete;
  Uploader& operator=(const Uploader&) = delete;
  // t's elements into d (BF16/F16/F32 into BF16/F32; F8_E4M3 bytes into F8_E4M3).
  void upload(const TensorInfo& t, const Dest& d);
  // t ([rows, d.K], BF16/F16/F32) quantized to FP8 per block of d's layout into d.ptr and d.scale.
  void upload_quantized(const TensorInfo& t, const Dest& d);
  // `v` (a temporary of the caller) into d; waits for the copy.
  void upload_host_f32(const std::vector<float>& v, const Dest& d);
  size_t bytes() const { return bytes_; }

 private:
  // Stages m elements of `src` (dtype st) into staging buffer b; returns b.
  int stage(const char* src, size_t bytes);
  static constexpr size_t kChunk = size_t(64) << 20;
  DeviceContext ctx_;
  cudaStream_t s_;
  PinnedBuffer pinned_[2];
  DeviceBuffer staging_[2];
  cudaEvent_t done_[2] = {nullptr, nullptr};
  int next_ = 0;
  size_t bytes_ = 0;
};

// Carves the packed tensors out of a few large allocations: take() hands out offsets, commit()
// allocates the group and turns them into pointers.
class Packer {
 public:
  Packer(DeviceWeights& w, DType dt) : w_(w), dt_(dt) {}
  void take(WeightView& v, int64_t elems);
  void take(float*& p, int64_t elems);
  // An FP8 view of `rows` x `cols` with its scales, plus `tail_rows` rows in the activation dtype.
  void take_fp8(WeightView& v, int64_t rows, int64_t cols, const Fp8Plan& f, int64_t tail_rows);
  // An INT4 view of `rows` x `cols` (cols a multiple of the group) with fp32 scales and, unless
  // symmetric, fp32 zero points, plus `tail_rows` rows in the activation dtype.
  void take_int4(WeightView& v, int64_t rows, int64_t cols, int group, bool symmetric, int64_t tail_rows = 0);
  void commit(const char* what);

 private:
  // A quantized view's rows [rows, rows + tail_rows) in the activation dtype (none when tail_rows is 0).
  void take_tail(WeightView& v, int64_t rows, int64_t cols, int64_t tail_rows);
  void* reserve(int64_t elems, DType t);
  void pend(const void** p) { pending_.push_back(p); }
  DeviceWeights& w_;
  DType dt_;
  size_t group_bytes_ = 0;
  std::vector<const void**> pending_;
};

}  // namespace ds::gpu
