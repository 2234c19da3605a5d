// Counter-based random numbers for sampling: the draw for a request's token `step` depends only on
// (seed, step), never on the batch it runs in or on how many draws other requests made. Pure
// functions of integers, so a GPU sampler can use the same formulas and draw the same numbers.
#pragma once
#include <cstdint>

#include "core/splitmix.h"

namespace ds {

// splitmix64 (core/splitmix.h): a bijective 64-bit mix with good avalanche.
constexpr uint64_t mix64(uint64_t x) { return splitmix64(x); }

// 64 random bits for draw `step` of the stream `seed`.
constexpr uint64_t random_bits(uint64_t seed, uint64_t step) {
  return mix64(mix64(seed) ^ mix64(step ^ 0x5851f42d4c957f2dull));
}

// Uniform double in [0, 1) with 53 random bits.
constexpr double uniform01(uint64_t seed, uint64_t step) {
  return double(random_bits(seed, step) >> 11) * (1.0 / 9007199254740992.0);
}

}  // namespace ds
