// Owning handles for device and pinned host memory (move-only RAII), and a bump arena that carves
// fixed sub-buffers out of one allocation. Addresses handed out by the arena stay valid until the
// arena is destroyed, which is what CUDA-graph replay needs.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

namespace ds::gpu {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes, const std::string& what = "buffer");
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return ptr_; }
  template <typename T> T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }
  bool empty() const { return ptr_ == nullptr; }
  void reset();

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(size_t bytes);
  ~PinnedBuffer();
  PinnedBuffer(PinnedBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  void* data() const { return ptr_; }
  template <typename T> T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Bump allocator over one device allocation. alloc() throws ds::Error when the arena is full.
// Either size it up front (capacity known) or measure first with a null arena (measure_only).
class Arena {
 public:
  static constexpr size_t kAlign = 256;
  Arena() = default;
  Arena(Arena&&) = default;
  Arena& operator=(Arena&&) = default;
  explicit Arena(size_t bytes, const std::string& what = "arena") : buf_(bytes, what) {}
  // An arena that hands out no memory and only counts bytes (to size a real one).
  static Arena measuring() { Arena a; a.measure_ = true; return a; }

  void* alloc_bytes(size_t bytes);
  template <typename T> T* alloc(size_t n) { return static_cast<T*>(alloc_bytes(n * sizeof(T))); }
  size_t used() const { return used_; }
  void* data() const { return buf_.data(); }
  size_t capacity() const { return buf_.bytes(); }
  void reset() { used_ = 0; }

 private:
  DeviceBuffer buf_;
  size_t used_ = 0;
  bool measure_ = false;
};

}  // namespace ds::gpu
