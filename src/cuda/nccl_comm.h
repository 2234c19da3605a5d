// NCCL as a DeviceComm (cuda/device_comm.h): one rank per GPU, the serving path of tensor and expert
// parallelism (issue 18, docs/PARALLEL.md). NCCL is loaded at run time (dlopen of libnccl.so.2, or of the
// file DELTASERVE_NCCL_LIBRARY names: config/runtime_env.h), as vLLM does, so deltaserve builds and runs
// without it and only a multi-GPU start needs it; the few declarations used are NCCL's stable C ABI
// (nccl.h: ncclUniqueId of 128 bytes, ncclFloat32 = 7, ncclBfloat16 = 9, ncclSum = 0).
// Collectives may be captured in CUDA graphs (NCCL supports stream capture).
#pragma once
#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "cuda/device_comm.h"

namespace ds::gpu {

class NcclApi;  // the loaded library (nccl_comm.cpp)

struct NcclId {
  std::array<char, 128> bytes{};
};

// NCCL's environment for deltaserve's ranks, set before the process's first NCCL call (NCCL reads each of its
// parameters once per process and keeps it): NVLink multicast off (NCCL_NVLS_ENABLE=0; on shared hosts it can
// take the GPUs out of service) and every connection made at communicator init (NCCL_RUNTIME_CONNECT=0), unless
// set already. A value that would hang the ranks is refused by name: NCCL_RUNTIME_CONNECT other than 0, and
// NCCL_LAUNCH_MODE other than PARALLEL (the ranks capture their graphs one after another, each alone: a
// connection made lazily at a first captured collective, or GROUP mode's wait for every rank of the process,
// would wait for a rank that is not there yet).
void nccl_prepare_environment();

// Whether the NCCL library loads (and its version as "2.28.9"), or why not; loads it on first use.
bool nccl_available(std::string* why_not = nullptr);
std::string nccl_version();
// A new group's id, on the rank that creates the group; the other ranks get it by any host means.
NcclId nccl_unique_id();

class NcclComm : public DeviceComm {
 public:
  // Rank `rank` of `size`; the calling thread's current device is the rank's GPU. Blocks until every rank
  // of the group has joined (call it from all ranks concurrently).
  NcclComm(const NcclId& id, int rank, int size);
  ~NcclComm() override;
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void all_reduce_sum(void* data, int64_t n, DType t, const DeviceContext& ctx) override;
  void all_gather(const void* in, void* out, int64_t n, DType t, const DeviceContext& ctx) override;
  bool graph_capturable() const override { return true; }
  // ncclCommAbort, on a thread of its own (joined by the destructor): NCCL's abort first stops the kernels
  // waiting on this communicator, then waits until every CUDA graph that captured it is destroyed, and those
  // graphs live until the backend that owns them goes, after its rank threads, one of which may be the caller.
  // Collectives enqueued after it throw; the communicator is then unusable.
  void abort() override;

 private:
  std::unique_ptr<NcclApi> api_;
  void* comm_ = nullptr;  // ncclComm_t
  int rank_ = 0, size_ = 1;
  std::atomic<bool> aborted_{false};
  std::mutex mu_;  // an enqueue against abort() from another thread
  std::thread aborter_;  // runs ncclCommAbort (see abort())
};

}  // namespace ds::gpu
