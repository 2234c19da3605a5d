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

// A one-shot all-reduce through peer memory for the small messages of decode (cuda/peer_comm.h): every rank
// launches it on its own stream with the same n; each block copies its slice of this rank's data into this
// rank's staging half (the call's parity), tells every peer (a flag in the peer's memory, the call's number),
// waits for theirs and sums the slice over every rank's staging in rank order 0..ranks-1 in fp32 from 0.0f,
// rounded once (the bits of run_rank_sum and of InProcessGroup), back into its data. No host synchronisation:
// it may be captured in a CUDA graph (the call numbers live in device memory, per block; every call runs all
// kPeerBlocks blocks, so they stay equal). A peer that never
// comes traps the kernel after timeout_s (the context is then lost: the group has failed anyway), unless the
// group is aborted first (*abort, read once a wait has lasted 1 ms): the kernel then returns, its sums unfinished.
constexpr int kPeerBlocks = 32;
struct PeerAllReduceParams {
  void* data = nullptr;                               // this rank's [n] elements, summed in place
  int64_t n = 0;
  DType dtype = DType::F32;                           // F32 or BF16
  int rank = 0, ranks = 0;
  void* staging[kMaxCollectiveRanks] = {};            // every rank's staging: two halves of half_bytes each
  int64_t half_bytes = 0;                             // >= n * dtype size
  uint32_t* flags[kMaxCollectiveRanks] = {};          // every rank's flags [kMaxCollectiveRanks][kPeerBlocks]
  uint32_t* calls = nullptr;                          // this rank's calls so far, per block [kPeerBlocks]
  const uint32_t* abort = nullptr;                    // host-mapped: non-zero ends the waits (the group failed)
  double timeout_s = 60;
};
void run_peer_all_reduce(const PeerAllReduceParams& p, const DeviceContext& ctx);
// Loads every form of the peer all-reduce kernel on the current device. With CUDA's lazy loading, a form's first
// launch may wait for the whole context to go idle, which never happens while another rank's form already spins
// waiting for this one (a rank with misaligned data launches another form than its peers): call this once for
// each device before the first all-reduce.
void preload_peer_all_reduce();

}  // namespace ds::gpu
