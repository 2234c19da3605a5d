// The step every rank runs, as bytes: rank 0 (where the scheduler runs) encodes the ForwardBatch and
// broadcasts it (broadcast_bytes); the other ranks decode it. Plain little-endian fields, checked on
// decode (a truncated or corrupt message is a ds::Error, never a read past the end).
#pragma once
#include <cstdint>
#include <vector>

#include "model/forward_batch.h"

namespace ds {

enum class RankCommand : uint8_t { Step = 1, Stop = 2 };

struct RankMessage {
  RankCommand command = RankCommand::Step;
  ForwardBatch batch;  // Step only
};

std::vector<uint8_t> encode_rank_message(const RankMessage& m);
RankMessage decode_rank_message(const std::vector<uint8_t>& bytes);

}  // namespace ds
