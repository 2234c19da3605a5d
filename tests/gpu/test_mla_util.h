// Helpers for the MLA prefill kernel tests: keys and values in the model's buffer layouts (kv_b_proj output
// [T, H, k_nope 128 ; v 128], kv_a output [T, 576] with k_pe in columns [512, 576)), as the CPU twin's
// expanded keys [T, H, 192] and values [T, H, 128], and the GPU params reading them through their strides;
// and the FP8 latent cache's rows built on the host by the CPU rule (config/kv_cache_dtype.h).
#pragma once
#include <algorithm>
#include <cstring>
#include <vector>

#include "config/kv_cache_dtype.h"

#include "cuda/kernels/mla_prefill.h"
#include "test_kda_util.h"

namespace ds::attn_test {

// FP8 cache rows of the latents v [n, D] (fp8_latent_row_bytes(D) bytes each: e4m3 values, then the
// scale), by the CPU rule; *deq receives the values they stand for (the CPU twin's cache).
inline std::vector<uint8_t> fp8_latent_rows(const std::vector<float>& v, int64_t n, int D, std::vector<float>* deq) {
  const int64_t rb = fp8_latent_row_bytes(D);
  std::vector<uint8_t> out(size_t(n * rb), 0);
  deq->assign(v.begin(), v.end());
  for (int64_t r = 0; r < n; ++r) {
    const float s = fp8_latent_round_trip(deq->data() + r * D, D);
    for (int i = 0; i < D; ++i) out[size_t(r * rb + i)] = f32_to_fp8_e4m3(v[size_t(r * D + i)] / s);
    std::memcpy(out.data() + r * rb + D, &s, 4);
  }
  return out;
}

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
