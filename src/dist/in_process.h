// The in-process communicator: `size` ranks as threads of one process sharing memory. Each
// collective publishes the rank's buffer, meets the others at a reusable barrier and reads (or writes)
// the other ranks' buffers directly; all_reduce_sum is a reduce-scatter (rank r sums its 1/size of the
// elements over ranks 0..size-1, in that order) then an all-gather of the sums, so every rank ends with
// the same bits whatever the thread timing. abort() wakes the waiting ranks with a ds::Error, for a rank
// that cannot continue.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "dist/host_group.h"

namespace ds {

class InProcessGroup : public HostGroup {
 public:
  explicit InProcessGroup(int size);
  ~InProcessGroup() override;
  InProcessGroup(const InProcessGroup&) = delete;
  InProcessGroup& operator=(const InProcessGroup&) = delete;

  int size() const override { return size_; }
  // Rank r's communicator (owned by the group); one thread at a time uses it.
  Communicator& comm(int rank) override;
  // Every rank waiting in a collective, and every later collective, throws ds::Error with `why`.
  // The group stays unusable (a rank gave up in the middle of a step; the others cannot finish it).
  void abort(const std::string& why) override;
  bool aborted() const override;

 private:
  friend class InProcessComm;
  struct Slot {  // what a rank published for the current collective
    const void* in = nullptr;
    void* out = nullptr;
    size_t in_size = 0, out_size = 0;
  };
  void wait();  // the reusable barrier
  // Every rank gave the same input length and room for out_per_in times it (call between two waits).
  void check_sizes(const char* what, size_t out_per_in) const;

  int size_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
  bool aborted_ = false;
  std::string why_;
  std::vector<Slot> slots_;
  std::vector<std::unique_ptr<Communicator>> comms_;
};

}  // namespace ds
