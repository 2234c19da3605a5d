// The absorbed MLA decode over the FP8 latent cache on Hopper's FP8 tensor cores (MlaDecodeParams::f8_mma, with
// fp8_cache and wgmma; sm_90, bf16 activations). The cache's e4m3 bytes are the MMA operands as they are (no
// conversion); the query and the softmax weights are each split into e4m3 hi + lo (~bf16's precision) and the
// pair takes two of the instruction's 64 rows, so the 32 heads fill M = 64 with nothing padded.
// mla_decode_f8.cu says how. The split partials and log-sum-exps are written as the other forms write them;
// run_mla_decode launches the combine after it. Internal to run_mla_decode.
#pragma once
#include "cuda/device_context.h"
#include "cuda/kernels/mla_decode.h"

namespace ds::gpu {

// Whether the device runs it (sm_90 with the shared memory it needs).
bool mla_decode_f8_supported(const DeviceContext& ctx);
// Whether it runs p here: supported, the driver's TMA encoder found, and pages of 8, 16, 32 or 64 rows or a
// multiple of 64 (its copies are TMA boxes of a page's rows of a 64-position tile). run_mla_decode falls back
// to mla_decode_wgmma.cu's form otherwise.
bool mla_decode_f8_usable(const MlaDecodeParams& p, const DeviceContext& ctx);
// The attention kernel only (one CTA per (split, row)); p is validated and defaulted by run_mla_decode.
void launch_mla_decode_f8(const MlaDecodeParams& p, const DeviceContext& ctx);
// Its shared-memory limit (called by configure_mla_decode).
void configure_mla_decode_f8(const DeviceContext& ctx);

}  // namespace ds::gpu
