// splitmix64's finalizer over x + the golden-ratio increment: a counter-based 64-bit mixer (any element of a
// sequence can be drawn on its own, in parallel). Used for dummy weights, prefix-chain hashes, seeds and the sampler's draws (sampling/rng.h).
#pragma once
#include <cstdint>

namespace ds {

constexpr uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace ds
