#include "cuda/parallel_cuda_backend.h"

#include <cuda_runtime.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include <unistd.h>  // environ

#include "core/error.h"
#include "cuda/cuda_backend.h"
#include "config/runtime_env.h"
#include "cuda/cuda_check.h"
#include "cuda/host_comm.h"
#include "cuda/nccl_comm.h"
#include "cuda/peer_comm.h"
#include "cuda/stream.h"
#include "dist/in_process.h"
#include "dist/tcp_group.h"

namespace ds {

namespace {

// Rank 0's cache geometry, as the other ranks take it (little-endian int64s).
std::vector<uint8_t> encode_geometry(const BackendLimits& l) {
  std::vector<uint8_t> b;
  for (int64_t v : {int64_t(l.num_blocks), int64_t(l.num_snapshots)})
    for (int i = 0; i < 8; ++i) b.push_back(uint8_t(uint64_t(v) >> (8 * i)));
  return b;
}
std::pair<int, int> decode_geometry(const std::vector<uint8_t>& b) {
  DS_CHECK(b.size() == 16, "cuda parallel: rank 0's cache geometry is {} bytes, 16 expected", b.size());
  int64_t v[2] = {0, 0};
  for (int k = 0; k < 2; ++k)
    for (int i = 0; i < 8; ++i) v[k] |= int64_t(uint64_t(b[size_t(8 * k + i)]) << (8 * i));
  return {int(v[0]), int(v[1])};
}

// Every DELTASERVE_CUDA_* switch of this process, sorted: the nodes of a group must run the same ones, since some
// change the collectives a step issues (a graph replay's all-reduces cover its bucket's padded rows, an eager
// step's only its sequences: DELTASERVE_CUDA_GRAPHS, _GRAPH_MAX_CONTEXT), and NCCL would pair unequal ones.
std::string cuda_switches() {
  std::vector<std::string> v;
  for (char** e = environ; e && *e; ++e)
    if (std::strncmp(*e, "DELTASERVE_CUDA_", 16) == 0) v.emplace_back(*e);
  std::sort(v.begin(), v.end());
  std::string out;
  for (const std::string& s : v) out += (out.empty() ? "" : " ") + s;
  return out.empty() ? "defaults" : out;
}

}  // namespace

ParallelCudaBackend::ParallelCudaBackend(const BackendOptions& opts) : par_(opts.parallel) {
  par_.validate();
  const int n = par_.world_size(), gpus = gpu::device_count();
  const int first = par_.first_local_rank(), local = par_.ranks_per_node();
  const bool multi_node = par_.nnodes > 1;
  DS_CHECK(gpus > 0, "CUDA backend: no CUDA device is visible");
  DS_CHECK(!multi_node || gpus >= local,
           "cuda parallel: node {} holds {} ranks of {} and they need a GPU each; {} visible (--nnodes {})",
           par_.node_rank, local, par_.describe(), gpus, par_.nnodes);
  const bool shared = gpus < local;
  for (int i = 0; i < local; ++i) devices_.push_back(shared ? 0 : i);
  if (shared)
    spdlog::warn("cuda parallel: {} ranks on {} GPU(s): every rank shares GPU 0 (a check of the sharding, not "
                 "faster; each rank takes 1/{} of --gpu-memory-utilization)", n, gpus, n);
  // the layers' collectives: NCCL with a GPU per rank (unless asked otherwise or not loadable; always over
  // several nodes), each rank's communicator made on a thread of its own (ncclCommInitRank waits for every rank)
  // (DELTASERVE_CUDA_TP_COMM=host: through the host group instead, cuda/host_comm.h, e.g. two processes on one GPU)
  std::string why_not;
  const bool host_comm = cuda_env().tp_comm == "host";
  const bool want_nccl = !host_comm && (multi_node || (!shared && cuda_env().tp_comm != "inprocess"));
  if (want_nccl) gpu::nccl_prepare_environment();  // before the first NCCL call: NCCL reads it once per process
  const bool nccl = want_nccl && gpu::nccl_available(&why_not);
  DS_CHECK(nccl || !want_nccl || !multi_node, "cuda parallel over {} nodes needs NCCL: {}", par_.nnodes, why_not);
  if (want_nccl && !nccl)
    spdlog::warn("cuda parallel: NCCL is not available ({}); the ranks meet through the in-process group (no CUDA "
                 "graphs)", why_not);
  gpu::NcclId id;
  if (nccl && first == 0) id = gpu::nccl_unique_id();
  // the host group: the plan broadcast and the end-of-step gather (over nodes also NCCL's id and rank 0's geometry)
  if (multi_node) {
    const ModelConfig cfg = ModelConfig::from_file(opts.model_dir + "/config.json");
    auto tcp = join_nodes(par_,
                          group_fingerprint(opts, cfg) + " | tp-comm " + cuda_env().tp_comm + " all-reduce " +
                              cuda_env().tp_allreduce + " | switches " + cuda_switches(),
                          std::vector<uint8_t>(id.bytes.begin(), id.bytes.end()), "cuda parallel");
    DS_CHECK(tcp->payload().size() == id.bytes.size(), "cuda parallel: node 0 sent {} bytes of NCCL id, {} expected",
             tcp->payload().size(), id.bytes.size());
    std::copy(tcp->payload().begin(), tcp->payload().end(), id.bytes.begin());
    host_ = std::move(tcp);
  } else {
    host_ = std::make_unique<InProcessGroup>(n);
  }
  if (nccl) {
    // (the environment set above: every connection made while the ranks init together, none lazily at a first
    // collective, since the ranks start one after another and capture their graphs alone)
    nccl_.resize(size_t(local));
    gpu::run_on_devices(devices_, [&](int i) { nccl_[size_t(i)] = std::make_unique<gpu::NcclComm>(id, first + i, n); });
    spdlog::info("cuda parallel: NCCL {} between {} GPUs{}", gpu::nccl_version(), n,
                 multi_node ? fmt::format(" ({} on this node)", local) : "");
  } else if (host_comm) {
    for (int i = 0; i < local; ++i) host_comms_.push_back(std::make_unique<gpu::HostStagedComm>(host_->comm(first + i)));
    spdlog::warn("cuda parallel: the layers' collectives go through the host (DELTASERVE_CUDA_TP_COMM=host): a "
                 "check of the wiring, slow, no CUDA graphs");
  } else {
    group_ = std::make_unique<gpu::InProcessDeviceGroup>(devices_);
  }
  // The ranks' communicators; with DELTASERVE_CUDA_TP_ALLREDUCE=peer (one node) small all-reduces go through
  // peer memory (cuda/peer_comm.h), the rest through NCCL or the in-process group.
  std::vector<gpu::DeviceComm*> comms;
  for (int i = 0; i < local; ++i)
    comms.push_back(nccl ? nccl_[size_t(i)].get() : host_comm ? host_comms_[size_t(i)].get() : &group_->comm(i));
  if (cuda_env().tp_allreduce == "peer") {
    DS_CHECK(!multi_node, "DELTASERVE_CUDA_TP_ALLREDUCE=peer: the ranks of one process only (not with --nnodes {})",
             par_.nnodes);
    // Each rank's kernel waits for the others' in a spin: with ranks sharing a GPU, nothing promises that their
    // kernels (launched on different streams, replayed from different graphs) run at once, and one GPU's test of
    // it hung at times (docs/PERF.md session 30): a GPU a rank, or the default.
    DS_CHECK(!shared,
             "DELTASERVE_CUDA_TP_ALLREDUCE=peer needs a GPU per rank ({} ranks here share {} GPU(s)): ranks on one "
             "GPU would spin on each other's kernels, which CUDA need not run at once; unset it",
             local, gpus);
    peer_ = std::make_unique<gpu::PeerAllReduceGroup>(devices_);
    for (int i = 0; i < local; ++i) {
      peer_comms_.push_back(peer_->wrap(i, *comms[size_t(i)]));
      comms[size_t(i)] = peer_comms_.back().get();
    }
    spdlog::info("cuda parallel: all-reduces up to {} KiB through peer memory (one kernel a rank)",
                 peer_->capacity() >> 10);
  }
  // One rank after another (their start-up warm-ups run without the group): rank 0 sizes the caches, the
  // others take its geometry (over nodes, broadcast), so every rank has the same pages, slots and snapshots.
  auto make_rank = [&](int r, const BackendLimits* geometry) {
    const int i = r - first;
    BackendOptions o = opts;
    if (shared) {  // the GPU's budgets split between its ranks
      o.gpu_memory_utilization = opts.gpu_memory_utilization * double(r + 1) / double(n);
      o.snapshot_memory_gib = opts.snapshot_memory_gib / double(n);  // (0: the default share of the cache budget)
    }
    if (geometry) {
      o.num_blocks = geometry->num_blocks;
      o.num_snapshots = geometry->num_snapshots;
      o.kv_cache_tokens = 0;
    }
    CudaRankSetup s;
    s.shard = par_.shard(r);
    s.comm = comms[size_t(i)];
    s.device = devices_[size_t(i)];
    ranks_.push_back(make_cuda_backend(o, s));
  };
  std::vector<uint8_t> geometry;
  if (first == 0) {
    make_rank(0, nullptr);
    geometry = encode_geometry(ranks_.front()->limits());
  }
  broadcast_on_local_ranks(*host_, geometry);
  BackendLimits g0;
  std::tie(g0.num_blocks, g0.num_snapshots) = decode_geometry(geometry);
  for (int r = std::max(first, 1); r < first + local; ++r) make_rank(r, &g0);
  DS_CUDA_CHECK(cudaSetDevice(devices_.front()));
  par_.validate(config());
  threads_ = std::make_unique<RankThreads>(
      *host_, "cuda parallel backend",
      [this, first](int r, const ForwardBatch& b) {
        StepPlan p;
        p.batch = b;
        p.forward_only = true;  // nothing sampled on a rank: rank 0 samples
        return ranks_[size_t(r - first)]->execute(p).nonfinite_snapshots;
      },
      [this, first](int r) { DS_CUDA_CHECK(cudaSetDevice(devices_[size_t(r - first)])); },
      [this](const std::string& why) {
        if (group_) group_->abort(why);
        for (auto& c : peer_comms_) c->abort();  // (the peer kernels' waits end; then NCCL's abort)
        for (auto& c : nccl_) c->abort();
      });
  spdlog::info("cuda parallel: {} over {} rank threads ({})", par_.describe(), local,
               nccl        ? "NCCL, CUDA graphs with the collectives"
               : host_comm ? "host-staged collectives"
                           : "in-process device collectives");
}

void ParallelCudaBackend::run_worker_node() {
  spdlog::info("cuda parallel: node {} runs ranks {}..{} until node 0 stops them", par_.node_rank,
               par_.first_local_rank(), par_.first_local_rank() + par_.ranks_per_node() - 1);
  threads_->wait();
}

ParallelCudaBackend::~ParallelCudaBackend() { threads_->stop(); }  // before the ranks go

std::string ParallelCudaBackend::device_name() const {
  return fmt::format("{} ({}, {} ranks on GPU{} {})", ranks_.front()->device_name(), par_.describe(), int(ranks_.size()),
                     devices_.back() == devices_.front() ? "" : "s",
                     devices_.back() == devices_.front() ? std::to_string(devices_.front())
                                                         : fmt::format("0..{}", devices_.back()));
}

StepResult ParallelCudaBackend::execute(const StepPlan& plan) {
  DS_CHECK(par_.node_rank == 0, "cuda parallel backend: node {} runs no engine (node 0 does)", par_.node_rank);
  threads_->check();
  check_sampling_rows(plan);
  DS_CUDA_CHECK(cudaSetDevice(devices_.front()));
  StepResult res;
  std::vector<int32_t> nonfinite = threads_->step(plan.batch, [&] {
    res = ranks_.front()->execute(plan);  // rank 0 samples on its GPU (its penalty history is the group's)
    return res.nonfinite_snapshots;
  });
  res.nonfinite_snapshots = std::move(nonfinite);
  return res;
}

}  // namespace ds
