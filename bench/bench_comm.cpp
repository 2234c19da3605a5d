// The tensor-parallel collectives at decode sizes (issue 18's figure: the all-reduce of one decode step,
// ~54 collectives of 2,304 values a token): one rank per visible GPU (all of them, or --ranks N), each on a
// thread of its own. For NCCL (cuda/nccl_comm.h) and, when every rank has a GPU of its own, the in-process
// group (cuda/device_comm.h) and the one-shot peer-memory all-reduce (cuda/peer_comm.h): the median time of one
// bf16 all-reduce of B x 2,304 values, eagerly (CUDA events around each call on rank 0) and inside a captured
// CUDA graph of 54 of them (per collective; not the in-process group's), for B = 1, 16, 100; and the lm_head's fp32 all-gather of B x vocab/ranks values. One rank (one GPU) measures
// the harness alone. Not a test: scripts/gpu-check.sh runs it where there are several GPUs.
//   bench_comm [--ranks N] [--reps R]
#include <cuda_runtime.h>

#include <algorithm>
#include <barrier>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "config/runtime_env.h"
#include "cuda/device_buffer.h"
#include "cuda/device_comm.h"
#include "cuda/nccl_comm.h"
#include "cuda/peer_comm.h"
#include "cuda/stream.h"
#include "gpu_bench_util.h"

namespace {

using namespace ds;
using namespace ds::gpu;

constexpr int kHidden = 2304, kVocab = 163840, kPerStep = 54;

struct Case {
  std::string what;
  int64_t n;  // elements
  DType t;
  bool gather;
};

// Median ms of one collective on rank 0: eager (`graph` false) or per collective of a graph of kPerStep.
double time_collective(const std::vector<DeviceComm*>& comms, const std::vector<int>& devices, const Case& c,
                       bool graph, int reps) {
  const int n = int(comms.size());
  std::barrier sync(n);
  double ms0 = 0;
  run_on_devices(devices, [&](int r) {
    Stream stream;
    const DeviceContext ctx = make_device_context(stream.get(), cuda_env());
    const size_t esize = dtype_size(c.t);
    DeviceBuffer in(size_t(c.n) * esize), out(size_t(c.n) * esize * (c.gather ? size_t(n) : 1));
    DS_CUDA_CHECK(cudaMemset(in.data(), 0, in.bytes()));
    auto once = [&] {
      if (c.gather) comms[size_t(r)]->all_gather(in.data(), out.data(), c.n, c.t, ctx);
      else comms[size_t(r)]->all_reduce_sum(in.data(), c.n, c.t, ctx);
    };
    Graph g;
    if (graph) {
      sync.arrive_and_wait();
      g.begin_capture(stream.get());
      for (int i = 0; i < kPerStep; ++i) once();
      g.end_capture(stream.get());
      g.upload(stream.get());
    }
    auto run = [&] {
      if (graph) g.launch(stream.get());
      else once();
    };
    for (int i = 0; i < 3; ++i) run();  // warm-up, every rank together
    stream.sync();
    std::vector<float> t;
    for (int i = 0; i < reps; ++i) {
      sync.arrive_and_wait();  // the ranks start each repetition together
      cudaEvent_t a, b;
      DS_CUDA_CHECK(cudaEventCreate(&a));
      DS_CUDA_CHECK(cudaEventCreate(&b));
      DS_CUDA_CHECK(cudaEventRecord(a, stream.get()));
      run();
      DS_CUDA_CHECK(cudaEventRecord(b, stream.get()));
      DS_CUDA_CHECK(cudaEventSynchronize(b));
      float ms = 0;
      DS_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
      cudaEventDestroy(a);
      cudaEventDestroy(b);
      t.push_back(ms / (graph ? kPerStep : 1));
    }
    std::sort(t.begin(), t.end());
    if (r == 0) ms0 = t[t.size() / 2];
  });
  return ms0;
}

}  // namespace

int main(int argc, char** argv) {
  int ranks = device_count(), reps = 50;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--ranks") ranks = std::atoi(argv[i + 1]);
    else if (a == "--reps") reps = std::atoi(argv[i + 1]);
  }
  if (device_count() < 1 || ranks < 1 || ranks > device_count()) {
    std::fprintf(stderr, "bench_comm: %d rank(s) asked, %d GPU(s) visible\n", ranks, device_count());
    return 2;
  }
  std::vector<int> devices(static_cast<size_t>(ranks));
  for (int r = 0; r < ranks; ++r) devices[size_t(r)] = r;
  std::vector<Case> cases;
  for (int b : {1, 16, 100})
    cases.push_back({"all-reduce bf16 " + std::to_string(b) + " x 2304", int64_t(b) * kHidden, DType::BF16, false});
  for (int b : {1, 16})
    cases.push_back({"all-gather fp32 " + std::to_string(b) + " x vocab/" + std::to_string(ranks),
                     int64_t(b) * (kVocab / ranks), DType::F32, true});

  std::vector<bench::Row> rows;
  std::string why;
  nccl_prepare_environment();  // before the first NCCL call (as the serving ranks: no NVLink multicast, connections
                               // made at init)
  if (nccl_available(&why)) {
    const NcclId id = nccl_unique_id();
    std::vector<std::unique_ptr<NcclComm>> nccl(static_cast<size_t>(ranks));
    run_on_devices(devices, [&](int r) { nccl[size_t(r)] = std::make_unique<NcclComm>(id, r, ranks); });
    std::vector<DeviceComm*> comms;
    for (auto& c : nccl) comms.push_back(c.get());
    for (const Case& c : cases)
      for (bool graph : {false, true}) {
        const double ms = time_collective(comms, devices, c, graph, reps);
        const double bytes = double(c.n) * double(dtype_size(c.t)) * (c.gather ? ranks : 1);
        rows.push_back({"NCCL " + nccl_version() + ", " + c.what + (graph ? ", in a graph" : ", eager"), ms,
                        bytes / bench::kBandwidth * 1e3, std::to_string(ranks) + " rank(s), one per GPU"});
      }
  } else {
    std::printf("NCCL not available: %s\n", why.c_str());
  }
  {
    InProcessDeviceGroup group(devices);
    std::vector<DeviceComm*> comms;
    for (int r = 0; r < ranks; ++r) comms.push_back(&group.comm(r));
    for (const Case& c : cases) {
      const double ms = time_collective(comms, devices, c, false, reps);
      const double bytes = double(c.n) * double(dtype_size(c.t)) * (c.gather ? ranks : 1);
      rows.push_back({"in-process group, " + c.what + ", eager", ms, bytes / bench::kBandwidth * 1e3,
                      std::to_string(ranks) + " rank(s), host barriers"});
    }
    // The one-shot all-reduce over peer memory (cuda/peer_comm.h; the all-gathers would go to the inner group),
    // eager and in a graph of 54 (its kernels need no host barrier).
    PeerAllReduceGroup peer(devices);
    std::vector<std::unique_ptr<DeviceComm>> wrapped;
    std::vector<DeviceComm*> pcomms;
    for (int r = 0; r < ranks; ++r) {
      wrapped.push_back(peer.wrap(r, group.comm(r)));
      pcomms.push_back(wrapped.back().get());
    }
    for (const Case& c : cases) {
      if (c.gather) continue;
      for (bool graph : {false, true}) {
        const double ms = time_collective(pcomms, devices, c, graph, reps);
        rows.push_back({"peer one-shot, " + c.what + (graph ? ", in a graph" : ", eager"), ms,
                        double(c.n) * double(dtype_size(c.t)) / bench::kBandwidth * 1e3,
                        std::to_string(ranks) + " rank(s), peer memory"});
      }
    }
  }
  bench::print_table("Collectives at decode sizes (per collective; floor: the bytes at the HBM copy rate)", rows);
  return 0;
}
