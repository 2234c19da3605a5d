// A zero-initialised float array from calloc: large ones come straight from the kernel's zero pages,
// so cache pools cost memory only where they are touched.
#pragma once
#include <cstdlib>
#include <memory>

#include "core/error.h"

namespace ds {

class HostBuffer {
 public:
  HostBuffer() = default;
  explicit HostBuffer(size_t n) : n_(n) {
    if (n == 0) return;
    p_.reset(static_cast<float*>(std::calloc(n, sizeof(float))));
    if (!p_) fail("cannot allocate {:.1f} MB of host memory", double(n) * sizeof(float) / 1e6);
  }
  float* data() const { return p_.get(); }
  size_t size() const { return n_; }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float, Free> p_;
  size_t n_ = 0;
};

}  // namespace ds
