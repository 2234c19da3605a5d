// The warp-specialised form of the absorbed MLA decode attention (MlaDecodeParams::warp_specialised, bf16
// activations, bf16 or FP8 cache): two groups of 8 warps in one CTA an SM, handing tiles of 32 cached
// positions to each other through named barriers, so the scores of one tile overlap the P·C product of the
// one before (mla_decode_ws.cu says how). The split partials and log-sum-exps are written as the other
// forms write them; run_mla_decode launches the combine after it. Internal to run_mla_decode.
#pragma once
#include "cuda/device_context.h"
#include "cuda/kernels/mla_decode.h"

namespace ds::gpu {

// The attention kernel only (one CTA per (split, row)); p is validated and defaulted by run_mla_decode.
void launch_mla_decode_ws(const MlaDecodeParams& p, const DeviceContext& ctx);
// Its shared-memory limit (called by configure_mla_decode).
void configure_mla_decode_ws();

}  // namespace ds::gpu
