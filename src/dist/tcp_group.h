// A group whose ranks live in several processes, on one host or several nodes (docs/PARALLEL.md, "Several
// processes and nodes"): node k's process holds ranks [k·L, (k+1)·L), L = world / nnodes. Rank 0 listens at
// master_addr:master_port; every other rank connects, says hello with its rank and a fingerprint of what its
// process is about to run (model, dtype, parallel layout) and, once every rank has said hello with rank 0's
// fingerprint, receives rank 0's payload (the NCCL unique ids on the GPU). A failure to form the group is a
// ds::Error that names it on both sides: a timeout (with the ranks and nodes still missing), a rank given
// twice, a fingerprint or group size that differs, nobody listening.
//
// The connections then stay open as the group's host communicator, a star with rank 0 at its centre: rank 0
// receives every rank's contribution, computes the result (sums in rank order 0, 1, ..., size-1 from 0.0f, as
// InProcessGroup does, so every rank gets the same bits and the two groups give the same bits) and sends it
// back. It carries the step messages, the end-of-step gathers and, on the CPU backend, the layers' collectives
// (on the GPU those go through NCCL). Collectives wait without a deadline (an idle server waits for its next
// step); a process that exits closes its connections, which every rank notices. A failed collective (sizes
// that differ, a closed connection) or abort() aborts the whole group: every rank, in every process, then
// throws a ds::Error with the reason. Byte order: the hosts' own (every node is the same architecture).
#pragma once
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dist/host_group.h"
#include "dist/parallel_config.h"

namespace ds {

struct TcpGroupConfig {
  std::string master_addr = "127.0.0.1";  // where rank 0 listens (--master-addr)
  int master_port = 29500;                // (--master-port; 0 on node 0: any free port, see on_listening)
  int world_size = 1;
  int nnodes = 1;                         // (--nnodes) dividing world_size
  int node_rank = 0;                      // (--node-rank) this process's node
  double timeout_s = 300;                 // for the whole group to form
  std::string fingerprint;                // what this process runs; every process must give the same
};

class TcpGroup : public HostGroup {
 public:
  // Forms the group (returns once every rank has joined). On node 0, `payload` goes to every other rank and
  // on_listening(port) runs once rank 0 listens (the port actually bound).
  explicit TcpGroup(const TcpGroupConfig& c, const std::vector<uint8_t>& payload = {},
                    const std::function<void(int port)>& on_listening = {});
  ~TcpGroup() override;
  TcpGroup(const TcpGroup&) = delete;
  TcpGroup& operator=(const TcpGroup&) = delete;

  const std::vector<uint8_t>& payload() const { return payload_; }  // node 0's payload (on node 0 too)
  int size() const override { return cfg_.world_size; }
  int first_local() const override { return first_; }
  int local_size() const override { return local_; }
  Communicator& comm(int rank) override;
  void abort(const std::string& why) override;
  bool aborted() const override;
  std::string why() const;
  // A thread that watches this process's connections between collectives: one that closes (unless
  // expect_close() was called) or brings an Abort aborts the group and calls on_failure(why) once; an empty
  // function stops it. (A rank blocked outside the host collectives, in an NCCL kernel or an idle engine, then
  // hears at once that a peer went away.)
  void watch(std::function<void(const std::string&)> on_failure) override;
  void expect_close() override;

  struct Link;  // one connection (dist/tcp_group.cpp)

 private:
  friend class TcpComm;
  std::string peer_name(int rank) const;  // "rank 3 (node 1)"
  void read_answer(Link& l, std::chrono::steady_clock::time_point deadline);  // node 0's answer on l (start-up)

  TcpGroupConfig cfg_;
  int first_ = 0, local_ = 1;
  std::vector<uint8_t> payload_;
  std::vector<std::unique_ptr<Link>> hub_;   // on node 0: rank 0's connection to each rank (index = rank; [0] none)
  std::vector<std::unique_ptr<Link>> up_;    // each local rank's connection to rank 0 (index = rank - first; none for rank 0)
  std::vector<std::unique_ptr<Communicator>> comms_;
  mutable std::mutex mu_;
  bool aborted_ = false;
  std::string why_;
  void watch_loop();
  std::thread watcher_;
  std::atomic<bool> stop_watch_{false}, closing_{false};
  std::function<void(const std::string&)> on_failure_;
};

// This process's node of p's group over nodes (p.nnodes > 1): logs what it does as `what` ("cpu parallel") and
// forms the TcpGroup from p's nodes, master address and port and join timeout.
std::unique_ptr<TcpGroup> join_nodes(const ParallelConfig& p, const std::string& fingerprint,
                                     const std::vector<uint8_t>& payload, const std::string& what);

}  // namespace ds
