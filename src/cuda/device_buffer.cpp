#include "cuda/device_buffer.h"

#include "core/error.h"
#include "cuda/cuda_check.h"

namespace ds::gpu {

DeviceBuffer::DeviceBuffer(size_t bytes, const std::string& what) : bytes_(bytes) {
  if (bytes == 0) return;
  cudaError_t e = cudaMalloc(&ptr_, bytes);
  if (e != cudaSuccess) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    ptr_ = nullptr;
    bytes_ = 0;
    fail("cudaMalloc of {:.3f} GiB for {} failed: {} ({:.3f} GiB free of {:.3f} GiB)", bytes / 1073741824.0, what,
         cudaGetErrorString(e), free_b / 1073741824.0, total_b / 1073741824.0);
  }
}

DeviceBuffer::~DeviceBuffer() { reset(); }

void DeviceBuffer::reset() {
  if (ptr_) cudaFree(ptr_);
  ptr_ = nullptr;
  bytes_ = 0;
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    reset();
    ptr_ = std::exchange(o.ptr_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

PinnedBuffer::PinnedBuffer(size_t bytes) : bytes_(bytes) {
  if (bytes) DS_CUDA_CHECK(cudaMallocHost(&ptr_, bytes));
}

PinnedBuffer::~PinnedBuffer() {
  if (ptr_) cudaFreeHost(ptr_);
}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& o) noexcept {
  if (this != &o) {
    if (ptr_) cudaFreeHost(ptr_);
    ptr_ = std::exchange(o.ptr_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

void* Arena::alloc_bytes(size_t bytes) {
  size_t off = (used_ + kAlign - 1) / kAlign * kAlign;
  size_t end = off + (bytes + kAlign - 1) / kAlign * kAlign;
  if (measure_) {
    used_ = end;
    return nullptr;
  }
  DS_CHECK(end <= buf_.bytes(), "device arena exhausted: need {} bytes, capacity {}", end, buf_.bytes());
  used_ = end;
  return static_cast<char*>(buf_.data()) + off;
}

}  // namespace ds::gpu
