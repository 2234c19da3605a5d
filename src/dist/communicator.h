// The collectives a group of ranks (one shard of the model each) needs to run one model together
// (docs/PARALLEL.md). One interface, two implementations: InProcessGroup (dist/in_process.h: ranks as
// threads of one process sharing memory; CPU tensor/expert parallelism and the tests) and, later, NCCL
// (src/cuda: one rank per GPU, the spans then being device memory on the rank's stream).
//
// Every rank calls the same collectives in the same order with the same sizes (the calls are the
// synchronisation points); a collective returns when this rank's result is complete. Results are
// deterministic: the reduction order of all_reduce_sum is fixed (ranks 0, 1, ..., size-1 for every
// element), so they do not depend on thread or network timing, and every rank gets the same bits.
// A failure (mismatched sizes, a rank that gave up) is a ds::Error on every rank that is waiting.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace ds {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In place: data becomes the element-wise sum over the ranks' data (same length on every rank).
  virtual void all_reduce_sum(std::span<float> data) = 0;
  // out[r * in.size() + i] = in of rank r, element i: the ranks' equal-length pieces in rank order
  // (out.size() == size() * in.size()). The vocabulary-split logits are gathered with it.
  virtual void all_gather(std::span<const float> in, std::span<float> out) = 0;
  // Root's bytes copied into every rank's data (the same length on every rank).
  virtual void broadcast(std::span<std::byte> data, int root) = 0;
  // Returns once every rank has called it.
  virtual void barrier() = 0;
};

// A broadcast of a length the other ranks do not know yet: the size first, then the bytes (the step
// plan from rank 0). `bytes` is read on root and replaced on the others.
void broadcast_bytes(Communicator& c, std::vector<uint8_t>& bytes, int root);

}  // namespace ds
