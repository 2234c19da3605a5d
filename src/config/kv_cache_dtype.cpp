#include "config/kv_cache_dtype.h"

#include <algorithm>
#include <cmath>

#include "core/dtype.h"
#include "core/error.h"

namespace ds {

KvCacheDtype parse_kv_cache_dtype(const std::string& s) {
  if (s == "auto") return KvCacheDtype::Auto;
  if (s == "fp8" || s == "fp8_e4m3") return KvCacheDtype::Fp8;
  if (s == "fp8_e5m2")
    fail("kv cache dtype 'fp8_e5m2' is not supported: the FP8 MLA cache stores e4m3 with a scale per token "
         "(use fp8 or fp8_e4m3)");
  fail("unknown kv cache dtype '{}' (expected auto, fp8 or fp8_e4m3)", s);
}

const char* kv_cache_dtype_name(KvCacheDtype d) { return d == KvCacheDtype::Fp8 ? "fp8" : "auto"; }

float fp8_latent_round_trip(float* row, int64_t n) {
  float amax = 0.f;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(row[i]));
  const float s = amax > 0.f ? amax / 448.f : 1.f;
  for (int64_t i = 0; i < n; ++i) row[i] = fp8_e4m3_to_f32(f32_to_fp8_e4m3(row[i] / s)) * s;
  return s;
}

}  // namespace ds
