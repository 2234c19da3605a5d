// Helpers for the MLA prefill kernel tests: keys and values in the model's buffer layouts (kv_b_proj output
// [T, H, k_nope 128 ; v 128], kv_a output [T, 576] with k_pe in columns [512, 576)), as the CPU twin's
// expanded keys [T, H, 192] and values [T, H, 128], and the GPU params reading them through their strides.
#pragma once
#include <algorithm>
#include <vector>

#include "cuda/kernels/mla_prefill.h"
#include "test_kda_util.h"

namespace ds::attn_test {

// Key rows [k0, k0 + n) of kv / kva as the CPU twin's k [n, H, 192] and v [n, H, 128].
inline void expanded_keys(const std::vector<float>& kv, const std::vector<float>& kva, int k0, int n, int H,
                          std::vector<float>& k, std::vector<float>& v) {
  k.assign(size_t(n) * H * 192, 0.f);
  v.assign(size_t(n) * H * 128, 0.f);
  for (int j = 0; j < n; ++j)
    for (int h = 0; h < H; ++h) {
      const float* src = kv.data() + (size_t(k0 + j) * H + h) * 256;
      float* kd = k.data() + (size_t(j) * H + h) * 192;
      std::copy_n(src, 128, kd);
      std::copy_n(kva.data() + size_t(k0 + j) * 576 + 512, 64, kd + 128);
      std::copy_n(src + 128, 128, v.data() + (size_t(j) * H + h) * 128);
    }
}

// The GPU params over the device copies of q [Tq, H, 192], kv and kva (the rest is the caller's).
inline gpu::MlaPrefillParams expanded_params(const Act& q, const Act& kv, const Act& kva, int H, DType act) {
  const size_t esz = act_size(act);
  gpu::MlaPrefillParams p;
  p.q = q.dev.data();
  p.k_nope = kv.dev.data();
  p.ldkn = int64_t(H) * 256;
  p.hkn = 256;
  p.v = static_cast<const char*>(kv.dev.data()) + 128 * esz;
  p.ldv = int64_t(H) * 256;
  p.hv = 256;
  p.k_pe = static_cast<const char*>(kva.dev.data()) + 512 * esz;
  p.ldkpe = 576;
  p.num_heads = H;
  return p;
}

}  // namespace ds::attn_test
