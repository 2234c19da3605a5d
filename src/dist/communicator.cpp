#include "dist/communicator.h"

namespace ds {

void broadcast_bytes(Communicator& c, std::vector<uint8_t>& bytes, int root) {
  uint64_t n = bytes.size();
  c.broadcast(std::as_writable_bytes(std::span<uint64_t>(&n, 1)), root);
  if (c.rank() != root) bytes.resize(size_t(n));
  c.broadcast(std::as_writable_bytes(std::span<uint8_t>(bytes)), root);
}

}  // namespace ds
