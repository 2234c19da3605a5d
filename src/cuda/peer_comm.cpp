#include "cuda/peer_comm.h"

#include "core/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/collective.h"

namespace ds::gpu {

class PeerComm : public DeviceComm {
 public:
  PeerComm(PeerAllReduceGroup& g, int rank, DeviceComm& inner) : g_(g), rank_(rank), inner_(inner) {}
  int rank() const override { return rank_; }
  int size() const override { return g_.size(); }

  void all_reduce_sum(void* data, int64_t n, DType t, const DeviceContext& ctx) override {
    if ((t != DType::F32 && t != DType::BF16) || n * int64_t(dtype_size(t)) > g_.capacity_)
      return inner_.all_reduce_sum(data, n, t, ctx);
    PeerAllReduceParams p;
    p.data = data;
    p.n = n;
    p.dtype = t;
    p.rank = rank_;
    p.ranks = g_.size();
    for (int r = 0; r < p.ranks; ++r) {
      p.staging[r] = g_.staging_[size_t(r)].data();
      p.flags[r] = g_.flags_[size_t(r)].as<uint32_t>();
    }
    p.half_bytes = g_.capacity_;
    p.calls = g_.calls_[size_t(rank_)].as<uint32_t>();
    p.abort = g_.abort_;
    run_peer_all_reduce(p, ctx);
  }
  void all_gather(const void* in, void* out, int64_t n, DType t, const DeviceContext& ctx) override {
    inner_.all_gather(in, out, n, t, ctx);
  }
  bool graph_capturable() const override { return inner_.graph_capturable(); }
  void abort() override {  // the peers' kernels waiting for this rank return
    *reinterpret_cast<volatile uint32_t*>(g_.abort_) = 1;
    inner_.abort();
  }

 private:
  PeerAllReduceGroup& g_;
  int rank_;
  DeviceComm& inner_;
};

PeerAllReduceGroup::PeerAllReduceGroup(std::vector<int> devices, int64_t capacity)
    : devices_(std::move(devices)), capacity_((capacity + 15) / 16 * 16) {
  const int N = int(devices_.size());
  DS_CHECK(N >= 1 && N <= kMaxCollectiveRanks, "peer all-reduce: 1..{} ranks, got {}", kMaxCollectiveRanks, N);
  DS_CHECK(capacity_ > 0, "peer all-reduce: capacity {} bytes", capacity);
  enable_peer_access(devices_, "peer all-reduce");
  int prev = 0;
  DS_CUDA_CHECK(cudaGetDevice(&prev));
  for (int r = 0; r < N; ++r) {
    DS_CUDA_CHECK(cudaSetDevice(devices_[size_t(r)]));
    preload_peer_all_reduce();  // before any rank's kernel spins (see collective.h)
    staging_.emplace_back(size_t(2 * capacity_), "peer all-reduce staging");
    flags_.emplace_back(sizeof(uint32_t) * kMaxCollectiveRanks * kPeerBlocks, "peer all-reduce flags");
    calls_.emplace_back(sizeof(uint32_t) * kPeerBlocks, "peer all-reduce calls");
    DS_CUDA_CHECK(cudaMemset(flags_.back().data(), 0, flags_.back().bytes()));
    DS_CUDA_CHECK(cudaMemset(calls_.back().data(), 0, calls_.back().bytes()));
    DS_CUDA_CHECK(cudaDeviceSynchronize());  // this device's zeros before any rank's stream (non-blocking) runs
  }
  DS_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&abort_), sizeof(uint32_t),
                              cudaHostAllocMapped | cudaHostAllocPortable));
  *abort_ = 0;  // (unified addressing: the host pointer is the devices' too)
  DS_CUDA_CHECK(cudaSetDevice(prev));
}

PeerAllReduceGroup::~PeerAllReduceGroup() {
  if (abort_) cudaFreeHost(abort_);
}

std::unique_ptr<DeviceComm> PeerAllReduceGroup::wrap(int rank, DeviceComm& inner) {
  DS_CHECK(rank >= 0 && rank < size() && inner.rank() == rank && inner.size() == size(),
           "peer all-reduce: rank {} of {} wraps a communicator of rank {} of {}", rank, size(), inner.rank(), inner.size());
  return std::make_unique<PeerComm>(*this, rank, inner);
}

}  // namespace ds::gpu
