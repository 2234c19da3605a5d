// The Hopper form of the absorbed MLA decode attention (MlaDecodeParams::wgmma; sm_90, bf16 activations,
// bf16 or FP8 cache): wgmma over the transposed products, so the 32 heads are the narrow N of the tensor-core
// instruction and the cached positions (scores) or latent dims (output) its M of 64. One producer warpgroup
// gathers (and, for FP8, converts to f16) tiles of 64 positions; two consumer warpgroups, 16 heads each, run
// every tile's scores, online softmax and output for their heads (mla_decode_wgmma.cu says how); in the
// pipelined form (MlaDecodeParams::wgmma_pipe, unmeasured) one consumer runs the scores of all 32 heads and the
// other their output a tile behind. The split
// partials and log-sum-exps are written as the other forms write them; run_mla_decode launches the combine
// after it. Internal to run_mla_decode.
#pragma once
#include "cuda/device_context.h"
#include "cuda/kernels/mla_decode.h"

namespace ds::gpu {

// Whether the device runs it (sm_90: wgmma, setmaxnreg).
bool mla_decode_wgmma_supported(const DeviceContext& ctx);
// The attention kernel only (one CTA per (split, row)); p is validated and defaulted by run_mla_decode.
void launch_mla_decode_wgmma(const MlaDecodeParams& p, const DeviceContext& ctx);
// Its shared-memory limit (called by configure_mla_decode).
void configure_mla_decode_wgmma(const DeviceContext& ctx);

}  // namespace ds::gpu
