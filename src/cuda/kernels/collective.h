// The device side of the in-process collectives (cuda/device_comm.h): the ranks' buffers of one
// all-reduce, in device memory the launching device can address (one GPU, or peers with access), summed
// element by element over ranks 0..ranks-1 in that order in fp32 and rounded once to the buffers' dtype,
// the result written back into every rank's buffer. Each rank launches it for its own slice of the
// elements (a reduce-scatter and an all-gather in one pass), so every rank ends with the same bits.
// CPU twin: InProcessGroup's all_reduce_sum (dist/in_process.cpp), the same order on fp32.
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "cuda/device_context.h"

namespace ds::gpu {

constexpr int kMaxCollectiveRanks = 8;

struct RankSumParams {
  void* data[kMaxCollectiveRanks] = {};  // the ranks' buffers, rank order
  int ranks = 0;
  int64_t begin = 0, end = 0;            // elements [begin, end) of every buffer
  DType dtype = DType::F32;              // F32 or BF16
};
void run_rank_sum(const RankSumParams& p, const DeviceContext& ctx);

}  // namespace ds::gpu
