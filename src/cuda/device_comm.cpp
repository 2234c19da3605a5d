#include "cuda/device_comm.h"

#include "core/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/collective.h"

namespace ds::gpu {

class InProcessDeviceComm : public DeviceComm {
 public:
  InProcessDeviceComm(InProcessDeviceGroup& g, int rank) : g_(g), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return g_.size(); }

  void all_reduce_sum(void* data, int64_t n, DType t, const DeviceContext& ctx) override {
    begin(data, data, n, t, ctx);
    g_.check_slots("all_reduce_sum");
    wait_all(g_.ready_, ctx);
    const int N = g_.size();
    RankSumParams p;
    p.ranks = N;
    p.dtype = t;
    p.begin = n * rank_ / N;
    p.end = n * (rank_ + 1) / N;
    for (int r = 0; r < N; ++r) p.data[r] = g_.slots_[size_t(r)].out;
    run_rank_sum(p, ctx);
    end(ctx);
  }

  void all_gather(const void* in, void* out, int64_t n, DType t, const DeviceContext& ctx) override {
    begin(in, out, n, t, ctx);
    g_.check_slots("all_gather");
    wait_all(g_.ready_, ctx);
    const size_t bytes = size_t(n) * dtype_size(t);
    // this rank's piece into every rank's output (peers: unified addressing)
    for (int r = 0; r < g_.size(); ++r)
      if (bytes)
        DS_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(g_.slots_[size_t(r)].out) + size_t(rank_) * bytes, in, bytes,
                                      cudaMemcpyDefault, ctx.stream));
    end(ctx);
  }

 private:
  // Publish, mark this rank's input ready on its stream, meet the others.
  void begin(const void* in, void* out, int64_t n, DType t, const DeviceContext& ctx) {
    DS_CHECK(n >= 0, "device collective: negative length");
    g_.slots_[size_t(rank_)] = {in, out, n, t};
    DS_CUDA_CHECK(cudaEventRecord(g_.ready_[size_t(rank_)], ctx.stream));
    g_.host_.comm(rank_).barrier();
  }
  // Mark this rank's writes done, meet the others (no slot is read after this), then order this stream
  // after every rank's writes.
  void end(const DeviceContext& ctx) {
    DS_CUDA_CHECK(cudaEventRecord(g_.done_[size_t(rank_)], ctx.stream));
    g_.host_.comm(rank_).barrier();
    wait_all(g_.done_, ctx);
  }
  void wait_all(const std::vector<cudaEvent_t>& ev, const DeviceContext& ctx) {
    for (int r = 0; r < g_.size(); ++r)
      if (r != rank_) DS_CUDA_CHECK(cudaStreamWaitEvent(ctx.stream, ev[size_t(r)], 0));
  }

  InProcessDeviceGroup& g_;
  int rank_;
};

void enable_peer_access(const std::vector<int>& devices, const char* what) {
  int prev = 0;
  DS_CUDA_CHECK(cudaGetDevice(&prev));
  for (int a : devices)
    for (int b : devices) {
      if (a == b) continue;
      int can = 0;
      DS_CUDA_CHECK(cudaDeviceCanAccessPeer(&can, a, b));
      DS_CHECK(can, "{}: GPU {} cannot access GPU {}'s memory (no peer access)", what, a, b);
      DS_CUDA_CHECK(cudaSetDevice(a));
      const cudaError_t e = cudaDeviceEnablePeerAccess(b, 0);
      if (e == cudaErrorPeerAccessAlreadyEnabled) (void)cudaGetLastError();
      else DS_CUDA_CHECK(e);
    }
  DS_CUDA_CHECK(cudaSetDevice(prev));
}

InProcessDeviceGroup::InProcessDeviceGroup(std::vector<int> devices)
    : devices_(std::move(devices)), host_(std::max<int>(1, int(devices_.size()))) {
  const int N = int(devices_.size());
  DS_CHECK(N >= 1 && N <= kMaxCollectiveRanks, "in-process device group: 1..{} ranks, got {}", kMaxCollectiveRanks, N);
  enable_peer_access(devices_, "in-process device group");
  int prev = 0;
  DS_CUDA_CHECK(cudaGetDevice(&prev));
  slots_.resize(size_t(N));
  ready_.resize(size_t(N));
  done_.resize(size_t(N));
  for (int r = 0; r < N; ++r) {
    DS_CUDA_CHECK(cudaSetDevice(devices_[size_t(r)]));
    DS_CUDA_CHECK(cudaEventCreateWithFlags(&ready_[size_t(r)], cudaEventDisableTiming));
    DS_CUDA_CHECK(cudaEventCreateWithFlags(&done_[size_t(r)], cudaEventDisableTiming));
    comms_.push_back(std::make_unique<InProcessDeviceComm>(*this, r));
  }
  DS_CUDA_CHECK(cudaSetDevice(prev));
}

InProcessDeviceGroup::~InProcessDeviceGroup() {
  for (cudaEvent_t e : ready_) cudaEventDestroy(e);
  for (cudaEvent_t e : done_) cudaEventDestroy(e);
}

DeviceComm& InProcessDeviceGroup::comm(int rank) {
  DS_CHECK(rank >= 0 && rank < size(), "in-process device group: rank {} is outside 0..{}", rank, size() - 1);
  return *comms_[size_t(rank)];
}

void InProcessDeviceGroup::check_slots(const char* what) const {
  const Slot& a = slots_.front();
  for (size_t r = 1; r < slots_.size(); ++r)
    DS_CHECK(slots_[r].n == a.n && slots_[r].dtype == a.dtype,
             "device {}: rank {} gave {} elements of {}, rank 0 gave {} of {}", what, r, slots_[r].n,
             dtype_name(slots_[r].dtype), a.n, dtype_name(a.dtype));
}

}  // namespace ds::gpu
