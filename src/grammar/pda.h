// The pushdown core shared by the matcher and the mask precomputation: configurations (node, stack),
// interned call frames, closure (follow calls, returns and rule ends) and one-byte / one-special steps.
#pragma once
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "grammar/grammar.h"

namespace ds {

struct PdaConfig {
  int32_t node;
  int32_t stack;  // interned frame id, -1: empty
  bool operator==(const PdaConfig& o) const { return node == o.node && stack == o.stack; }
};

class Pda {
 public:
  explicit Pda(const Grammar& g) : g_(g) {}
  const Grammar& grammar() const { return g_; }

  // Expands `work` (consumed) into the scanning configurations it reaches, appended to `out`
  // (deduplicated); *ends is set when one reaches the end of a rule with an empty stack.
  void closure(std::vector<PdaConfig>& work, std::vector<PdaConfig>& out, bool* ends);
  // The configurations after consuming byte c / special token `special` (grammar index) from `in`.
  void step_byte(const std::vector<PdaConfig>& in, uint8_t c, std::vector<PdaConfig>& out, bool* ends);
  void step_special(const std::vector<PdaConfig>& in, int special, std::vector<PdaConfig>& out, bool* ends);
  // The configurations after the rule of a configuration with stack `s` (>= 0) returns.
  void pop(int32_t s, std::vector<PdaConfig>& out, bool* ends);
  // Frames created after a mark can be dropped (mask computations leave the state unchanged).
  size_t mark() const { return frames_.size(); }
  void truncate(size_t mark);
  void clear() { frames_.clear(); ids_.clear(); }

 private:
  struct Frame {
    int32_t ret, parent;
  };
  int32_t push(int32_t ret, int32_t parent);
  static uint64_t key(int32_t ret, int32_t parent) { return (uint64_t(uint32_t(ret)) << 32) | uint32_t(parent + 1); }

  const Grammar& g_;
  std::vector<Frame> frames_;
  std::unordered_map<uint64_t, int32_t> ids_;
  std::vector<PdaConfig> seen_, work_;
};

}  // namespace ds
