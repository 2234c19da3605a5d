// The start-up exchange of a group that spans several processes or nodes (docs/PARALLEL.md, "Several
// processes and nodes"): node 0 listens at master_addr:master_port; every other node connects, says hello with
// its node rank and a fingerprint of what it is about to run (model, dtype, parallel layout), and receives node
// 0's payload (the NCCL unique ids) once every node has said hello with node 0's fingerprint. One TCP
// exchange at start-up, with POSIX sockets; everything after it goes through NCCL. A failure is a ds::Error
// that names it: a timeout (with the nodes still missing), a node nobody listens for, a fingerprint or node
// count that differs (both sides say what differs), a node rank given twice.
//
// A building block: `serve` does not use it yet (multi-node serving is refused above one node).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace ds {

struct RendezvousConfig {
  std::string master_addr = "127.0.0.1";  // host name or address of node 0
  int master_port = 29500;                // node 0 listens here (0 on node 0: any free port, see on_listening)
  int nnodes = 1;
  int node_rank = 0;
  double timeout_s = 300;                 // for every node to arrive (node 0) / to reach node 0 and hear back
};

// Node 0: waits for nodes 1..nnodes-1 and sends each `payload`. on_listening(port) runs once the socket
// listens (the port actually bound). Returns when every node has its payload.
void rendezvous_serve(const RendezvousConfig& c, const std::string& fingerprint, const std::vector<uint8_t>& payload,
                      const std::function<void(int port)>& on_listening = {});

// Node c.node_rank > 0: connects to node 0 (retrying while nobody listens yet, until the timeout), says
// hello, returns node 0's payload.
std::vector<uint8_t> rendezvous_join(const RendezvousConfig& c, const std::string& fingerprint);

}  // namespace ds
