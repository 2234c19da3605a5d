// The layers' collectives through the ranks' host communicator (DELTASERVE_CUDA_TP_COMM=host): each call copies
// the rank's device data to the host, runs the host collective (dist/communicator.h: the in-process group, or
// the TCP group of a multi-node run) and copies the result back, on the rank's stream (synchronised: no CUDA
// graphs). bf16 is widened to fp32 on the host and rounded once after the rank-order sum, so the results are the
// in-process device group's bits. Slow (every collective waits on the host): it exists so that the multi-node
// GPU path (processes, worker nodes, the geometry broadcast) runs where NCCL cannot, i.e. two processes on one
// GPU, which NCCL refuses (a check of the wiring on the single-GPU machine, not a serving path).
#pragma once
#include <vector>

#include "cuda/device_comm.h"
#include "dist/communicator.h"

namespace ds::gpu {

class HostStagedComm : public DeviceComm {
 public:
  explicit HostStagedComm(Communicator& host) : host_(host) {}
  int rank() const override { return host_.rank(); }
  int size() const override { return host_.size(); }
  void all_reduce_sum(void* data, int64_t n, DType t, const DeviceContext& ctx) override;
  void all_gather(const void* in, void* out, int64_t n, DType t, const DeviceContext& ctx) override;

 private:
  void to_host(const void* src, int64_t n, DType t, const DeviceContext& ctx, std::vector<float>& dst);
  void to_device(const std::vector<float>& src, DType t, const DeviceContext& ctx, void* dst);

  Communicator& host_;
  std::vector<float> a_, b_;
  std::vector<uint16_t> bits_;
};

}  // namespace ds::gpu
