// A small-message all-reduce for decode (issue 18: 2,304 values a token, ~54 collectives a step, where
// NCCL's latency is the budget to beat), for the ranks of one process, one GPU each or several sharing a GPU:
// every rank's staging area, flags and call counters are allocated once (peers get access to each other's
// memory) and each small all-reduce is one kernel a rank (kernels/collective.h run_peer_all_reduce: copy into
// its staging, flag the peers, wait for theirs, sum every rank's staging in rank order). No host
// synchronisation, so CUDA graphs hold it. The same bits as the in-process group and InProcessGroup.
// Larger all-reduces and the all-gather go to the inner communicator (NCCL, or the in-process group).
// DELTASERVE_CUDA_TP_ALLREDUCE=peer turns it on for ParallelCudaBackend (one node only); off until measured on
// two GPUs against NCCL (bench_comm).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "cuda/device_buffer.h"
#include "cuda/device_comm.h"

namespace ds::gpu {

class PeerAllReduceGroup {
 public:
  static constexpr int64_t kDefaultCapacity = int64_t(4) << 20;  // bytes of one all-reduce (256 tokens x 2,304 bf16: 1.2 MB)

  // Rank r on devices[r] (1..8 ranks); capacity: the largest all-reduce, in bytes, it takes.
  explicit PeerAllReduceGroup(std::vector<int> devices, int64_t capacity = kDefaultCapacity);
  ~PeerAllReduceGroup();
  PeerAllReduceGroup(const PeerAllReduceGroup&) = delete;
  PeerAllReduceGroup& operator=(const PeerAllReduceGroup&) = delete;

  int size() const { return int(devices_.size()); }
  int64_t capacity() const { return capacity_; }
  // Rank r's communicator: fp32/bf16 all-reduces of up to capacity() bytes through peer memory, everything
  // else through `inner` (rank r's NCCL or in-process communicator, which must outlive it).
  std::unique_ptr<DeviceComm> wrap(int rank, DeviceComm& inner);

 private:
  friend class PeerComm;
  std::vector<int> devices_;
  int64_t capacity_;
  std::vector<DeviceBuffer> staging_, flags_, calls_;  // per rank, on its device
  uint32_t* abort_ = nullptr;                           // pinned, mapped: set by a rank's abort()
};

}  // namespace ds::gpu
