// Exact merge of two partial MLA attentions of the same queries over DISJOINT key sets A and B (two
// context pieces of a long prefill, mla_prefill.h's key window), each given as its normalised output and
// log-sum-exp. The GPU twin of run_mla_merge_cpu (src/kernels/mla/op.h, the same contract): per (token t,
// head h), with m = max(lse_a, lse_b):
//   m = -inf (both empty):  lse = -inf, o = 0
//   otherwise:  w_a = exp(lse_a − m), w_b = exp(lse_b − m)      (an empty side has weight exactly 0)
//               lse = m + ln(w_a + w_b)
//               o   = (w_a · o_a + w_b · o_b) / (w_a + w_b)
// lse is the natural log of the sum of exp(scaled scores), -inf for an empty set.
//
// Dtypes (the GPU's piecewise prefill keeps a running fp32 accumulator): A is fp32 (the accumulator;
// o_a = nullptr: A is empty, the first piece); B is in the activation dtype (mla_prefill's output); the
// result is fp32 (the accumulator again) or, with out_act, the activation dtype (the last piece, written
// where the layer's o_proj reads it). o may alias o_a or o_b element for element and lse may alias lse_a
// or lse_b (a running accumulator). Weights and the result in fp32.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"
#include "cuda/device_context.h"

namespace ds::gpu {

struct MlaMergeParams {
  const float* o_a = nullptr;    // [T, H, Dv] fp32, token stride lda (0: H·Dv); nullptr: A is empty
  const float* lse_a = nullptr;  // [T, H] fp32, token stride ld_lse (0: H); ignored when o_a is null
  const void* o_b = nullptr;     // [T, H, Dv] act dtype, token stride ldb (0: H·Dv)
  const float* lse_b = nullptr;  // [T, H] fp32, token stride ld_lse
  void* o = nullptr;             // [T, H, Dv] fp32, or act dtype with out_act; token stride ldo (0: H·Dv)
  float* lse = nullptr;          // [T, H] fp32, token stride ld_lse; optional (nullptr: not written)
  bool out_act = false;
  int64_t T = 0, H = 0, Dv = 0;  // Dv a multiple of 4
  int64_t lda = 0, ldb = 0, ldo = 0, ld_lse = 0;  // elements; lda, ldb, ldo multiples of 4
};
void run_mla_merge(const MlaMergeParams& p, DType act, const DeviceContext& ctx);

}  // namespace ds::gpu
