// Collectives over device memory for the ranks of one sharded CUDA model (issue 18, docs/PARALLEL.md):
// the GPU counterpart of dist/communicator.h. Each rank calls the same collectives in the same order with
// the same sizes; a call enqueues the collective on the rank's stream (ctx.stream) and returns, and work
// enqueued after it on that stream sees the result. Results are the same bits on every rank.
//
// InProcessDeviceGroup: the ranks are threads of one process, each on its own stream of its device
// (several ranks may share one GPU: the sharding is then checked on a single-GPU machine, which NCCL
// refuses to do). A collective meets the other ranks at a host barrier (dist/in_process.h's group, with its
// abort), orders the streams with events, and each rank sums its 1/size slice of the elements over the
// ranks' buffers in rank order (kernels/collective.h) and writes it back into all of them. Host barriers
// inside a step rule out CUDA graph capture: this group runs eager steps only (tests, checks); NCCL, one
// rank per GPU, is the serving path.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "cuda/device_context.h"
#include "dist/in_process.h"

namespace ds::gpu {

class DeviceComm {
 public:
  virtual ~DeviceComm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In place: data [n] (fp32 or bf16) becomes the element-wise sum over the ranks (fp32 accumulation in
  // rank order 0, 1, ..., size-1, rounded once).
  virtual void all_reduce_sum(void* data, int64_t n, DType t, const DeviceContext& ctx) = 0;
  // out [size * n] = the ranks' `in` [n], in rank order (elements of t).
  virtual void all_gather(const void* in, void* out, int64_t n, DType t, const DeviceContext& ctx) = 0;
  // Whether the collectives may be captured in a CUDA graph (they enqueue device work only: NCCL); the
  // in-process group meets the ranks on the host, so its ranks run eagerly.
  virtual bool graph_capturable() const { return false; }
  // Makes every pending and later collective of this rank fail or return (a failed rank's group); may be
  // called from another thread.
  virtual void abort() {}
};

// Peer access between every two distinct devices of the list (an error naming `what` and the pair when the
// hardware has none); already enabled is fine. Restores the current device.
void enable_peer_access(const std::vector<int>& devices, const char* what);

class InProcessDeviceGroup {
 public:
  // Rank r on device devices[r] (1..8 ranks); distinct devices get peer access to each other (an error
  // naming the pair when the hardware has none).
  explicit InProcessDeviceGroup(std::vector<int> devices);
  ~InProcessDeviceGroup();
  InProcessDeviceGroup(const InProcessDeviceGroup&) = delete;
  InProcessDeviceGroup& operator=(const InProcessDeviceGroup&) = delete;

  int size() const { return int(devices_.size()); }
  // Rank r's communicator (owned by the group); used by one thread at a time, whose current device is
  // devices[r].
  DeviceComm& comm(int rank);
  // Every rank waiting in a collective, and every later collective, throws ds::Error with `why`.
  void abort(const std::string& why) { host_.abort(why); }

 private:
  friend class InProcessDeviceComm;
  struct Slot {  // what a rank published for the current collective
    const void* in = nullptr;
    void* out = nullptr;
    int64_t n = 0;
    DType dtype = DType::F32;
  };
  void check_slots(const char* what) const;  // every rank gave the same n and dtype

  std::vector<int> devices_;
  InProcessGroup host_;
  std::vector<Slot> slots_;
  std::vector<cudaEvent_t> ready_, done_;  // per rank: its input is ready / its part is written
  std::vector<std::unique_ptr<DeviceComm>> comms_;
};

}  // namespace ds::gpu
