// The ranks of a group that this process holds, with their host communicators (dist/communicator.h): all of
// them for ranks as threads of one process (InProcessGroup, dist/in_process.h), a node's consecutive ranks
// when the group spans processes or nodes (TcpGroup, dist/tcp_group.h). The rank-thread protocol
// (dist/rank_threads.h) runs on either.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "dist/communicator.h"

namespace ds {

class HostGroup {
 public:
  virtual ~HostGroup() = default;
  virtual int size() const = 0;                       // ranks in the group
  virtual int first_local() const { return 0; }       // this process holds ranks [first_local, first_local + local_size)
  virtual int local_size() const { return size(); }
  bool is_local(int rank) const { return rank >= first_local() && rank < first_local() + local_size(); }
  virtual Communicator& comm(int rank) = 0;            // a local rank's (one thread at a time uses it)
  // Every rank waiting in a collective, and every later collective, throws ds::Error with `why` (in every
  // process of the group); the group stays unusable.
  virtual void abort(const std::string& why) = 0;
  virtual bool aborted() const = 0;
  // Groups over processes (TcpGroup): watch the connections between collectives, calling on_failure(why) once
  // when a peer process goes away or aborts (empty: stop watching); expect_close(): the group is being stopped,
  // peers closing is no failure. Threads of one process share their failures directly: no-ops.
  virtual void watch(std::function<void(const std::string&)> on_failure) {}
  virtual void expect_close() {}
};

// Rank 0's bytes to every local rank of this process, each local rank taking part in the broadcast on a thread
// of its own (over processes, every rank must); `bytes` is read where rank 0 is local and replaced elsewhere.
// Start-up only (e.g. rank 0's cache geometry). A failure aborts the group and is rethrown.
void broadcast_on_local_ranks(HostGroup& g, std::vector<uint8_t>& bytes);

}  // namespace ds
